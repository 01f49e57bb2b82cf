import Primitives
import OsloJSON
import AMQPModel
import CoreMetrics
import Logging
import ServiceLifecycle
import Synchronization

/// An oslo.messaging RPC server: takes requests from a transport, dispatches them to an endpoint
/// with bounded concurrency, replies to calls (with call-monitor heartbeats when asked), and
/// acknowledges each request only once its outcome is final — unlike oslo, which acknowledges
/// before dispatching and so loses the request if the process dies.
///
/// Each request is remembered by `_unique_id` in a ``RequestJournal``: a duplicate (a redelivery
/// after a crash or a lost connection, or the same message published twice) whose outcome is
/// known gets that outcome again without running; one still running is joined. A message that
/// reuses a `_unique_id` with another method or other arguments (``RPCRequest/fingerprint``) is
/// refused (`InvalidParameterValue`), never answered with the other request's outcome. The outcome is
/// recorded before its event is published, so a crash anywhere yields one outcome, never two
/// different ones; and the journal notes when the broker confirmed the event, so a redelivery
/// (flagged by the broker) repeats the reply but not the event. An outcome whose delivery was lost with its connection
/// is not published by the run that made it: the broker redelivers the request, here or to
/// another worker, and that delivery publishes it — once. A request started more than
/// ``Configuration/maximumAttempts`` times without finishing is given up on (error event,
/// dead-lettered when configured). Broadcasts (fanout) are not journaled: every process runs them.
///
/// Refusals follow oslo: a method the endpoint does not serve (or starting with `_`) gets
/// `NoSuchMethod`, a version it does not serve `UnsupportedVersion`; a message that is not a
/// valid request gets Ironic's `InvalidParameterValue`. Each refusal is replied to when the ids
/// could be read, reported to the endpoint, and acknowledged (or dead-lettered when configured).
///
/// On graceful shutdown it stops consuming, lets running requests finish within the grace period,
/// then cancels the rest (which stay unacknowledged, so the broker requeues them).
public final class RPCServer: Service {
    /// How the server behaves.
    public struct Configuration: Sendable {
        /// How many requests run at once.
        public var maximumConcurrentRequests: Int
        /// How long running requests may take to finish after a shutdown signal.
        public var gracefulShutdownTimeout: Duration
        /// How many runs of a request may die (counted by the journal; without a journal entry, by
        /// the broker's `x-delivery-count` or redelivered flag) before the server gives up on it.
        public var maximumAttempts: Int
        /// The work queue's `x-delivery-limit`, if it has one: the server gives up on the last
        /// delivery the queue will make (`x-delivery-count` equal to the limit), so that the
        /// caller hears of the failure before the broker drops the message. Without a limit, the
        /// broker's count is not the server's business: a prefetched request returned unstarted
        /// with its lost connection (a rolling restart returns it again and again) is not a run
        /// that failed.
        public var deliveryLimit: Int?
        /// Bounds on request JSON.
        public var parser: JSONParser
        /// The prefix of the server's metrics (see ``RPCServerMetrics``).
        public var metricsPrefix: String

        /// Creates a configuration.
        public init(maximumConcurrentRequests: Int = 20, gracefulShutdownTimeout: Duration = .seconds(60), maximumAttempts: Int = 5, deliveryLimit: Int? = nil,
                    parser: JSONParser = JSONParser(), metricsPrefix: String = "oslo_rpc_server") {
            self.maximumConcurrentRequests = max(1, maximumConcurrentRequests)
            self.gracefulShutdownTimeout = gracefulShutdownTimeout
            self.maximumAttempts = max(1, maximumAttempts)
            self.deliveryLimit = deliveryLimit.flatMap { $0 > 0 ? $0 : nil }
            self.parser = parser
            self.metricsPrefix = metricsPrefix
        }
    }

    private let transport: any OsloTransport
    private let endpoint: any RPCEndpoint
    private let journal: any RequestJournal
    private let configuration: Configuration
    private let metrics: RPCServerMetrics
    private let logger: Logger

    /// Creates a server that remembers requests in `journal`.
    public init(transport: any OsloTransport, endpoint: any RPCEndpoint, journal: any RequestJournal = InMemoryRequestJournal(),
                configuration: Configuration, logger: Logger) {
        self.transport = transport
        self.endpoint = endpoint
        self.journal = journal
        metrics = RPCServerMetrics(prefix: configuration.metricsPrefix, methods: endpoint.methods)
        self.configuration = configuration
        self.logger = logger
    }

    /// Consumes until graceful shutdown (or cancellation), then drains: running requests get the
    /// grace period, counted from the shutdown signal; after it they are cancelled and, never
    /// acknowledged, go back to the broker.
    public func run() async throws {
        do {
            // A broker that is down at start must not hold up a shutdown.
            try await cancelWhenGracefulShutdown { try await self.transport.startConsuming() }
        } catch is CancellationError {
            logger.notice("stopped before the broker was reachable")
            return
        }
        let running = RunningRequests()
        await withTaskGroup(of: Void.self) { lifecycle in
            lifecycle.addTask { await self.processRequests(running) }
            lifecycle.addTask {
                do { try await gracefulShutdown() } catch { return }  // cancelled: the requests ended first
                await self.transport.stopConsuming()
                let grace = self.configuration.gracefulShutdownTimeout
                if running.count > 0 {
                    self.logger.info("waiting for running requests to finish", metadata: [
                        "running": "\(running.count)", "grace_seconds": "\(grace.components.seconds)",
                    ])
                }
                do { try await Task.sleep(for: grace) } catch { return }
                self.logger.warning("grace period over; cancelling the running requests, which the broker will redeliver",
                                    metadata: ["running": "\(running.count)"])
            }
            // Whichever ends first, the other is cancelled: the watcher when all requests finished,
            // the requests when the grace period ran out.
            await lifecycle.next()
            lifecycle.cancelAll()
        }
    }

    /// Takes requests while a slot is free, until graceful shutdown or the end of the stream.
    private func processRequests(_ running: RunningRequests) async {
        let limit = configuration.maximumConcurrentRequests
        await withTaskGroup(of: Void.self) { group in
            var unreaped = 0
            var requests = transport.requests.cancelOnGracefulShutdown().makeAsyncIterator()
            while true {
                // Free a slot first, so that no request is taken that cannot start at once.
                if unreaped >= limit, await group.next() != nil { unreaped -= 1 }
                guard let delivery = await requests.next() else { break }
                unreaped += 1
                running.started()
                group.addTask {
                    await self.process(delivery)
                    running.finished()
                }
            }
        }
    }

    /// Handles one delivery from decoding to acknowledgement, and counts it.
    func process(_ delivery: AMQPDelivery) async {
        let started = ContinuousClock.now
        metrics.inFlight.increment(by: 1)
        defer { metrics.inFlight.decrement(by: 1) }
        let settled = await handle(delivery)
        metrics.settled(method: settled.method, outcome: settled.outcome, code: settled.code, started: started)
    }

    /// How a delivery ended, for the metrics.
    private struct Settled {
        var method: String?
        var outcome: RPCServerMetrics.Outcome
        var code: String?

        /// `outcome`, unless the settlement failed and the request was requeued.
        init(method: String?, _ outcome: RPCServerMetrics.Outcome, code: String? = nil, acknowledged: Bool = true) {
            self.method = method
            self.outcome = acknowledged ? outcome : .requeued
            self.code = acknowledged ? code : nil
        }
    }

    private func handle(_ delivery: AMQPDelivery) async -> Settled {
        // Taken from the stream after its connection was lost (a prefetched request): the broker
        // has put it back and delivers it again, so running it now would only fetch it twice.
        guard transport.canSettle(delivery) else {
            return Settled(method: nil, .requeued)
        }
        var info = RequestDelivery(delivery)
        let request: RPCRequest
        do {
            request = try RPCRequest.decode(body: delivery.body, contentType: delivery.properties.contentType, parser: configuration.parser)
        } catch {
            let failure = RemoteFailure.ironic("InvalidParameterValue", message: "Invalid request: \(error.reason).", httpStatus: 400)
            let refusal = RPCRefusal(failure: failure, malformed: true, method: error.method, messageID: error.messageID, replyQueue: error.replyQueue,
                                     uniqueID: error.uniqueID, context: error.context, nodeUUID: error.nodeUUID)
            return await refuse(refusal, delivery: delivery, info: info)
        }
        if request.namespace != nil || !endpoint.version.serves(request.version) {
            return await refuse(refusal(.unsupportedVersion(request.version.description, method: request.method), for: request), delivery: delivery, info: info)
        }
        if request.method.hasPrefix("_") || !endpoint.methods.contains(request.method) {
            return await refuse(refusal(.noSuchMethod(request.method), for: request), delivery: delivery, info: info)
        }
        // A broadcast reaches every process under the same `_unique_id`: each must run it.
        let journaled = request.uniqueID.flatMap { delivery.exchange.hasSuffix("_fanout") ? nil : $0 }
        if let uniqueID = journaled {
            let decision: JournalDecision
            do {
                decision = try await journal.begin(uniqueID: uniqueID, fingerprint: request.fingerprint)
            } catch let full as RequestJournalFull {
                let failure = RemoteFailure.ironic("InsufficientDiskSpace", message: "The worker cannot record the request: \(full).", httpStatus: 500)
                return await refuse(refusal(failure, for: request), delivery: delivery, info: info)
            } catch {
                await transport.reject(delivery, requeue: true)
                return Settled(method: request.method, .requeued)
            }
            switch decision {
            case .finished(let outcome, let eventPublished):
                // A redelivery (the broker's flag: a delivery whose acknowledgement was lost with its
                // connection) of a request whose event the broker confirmed gets only its reply: the
                // event is out, and a listener would count it twice. A message published again by
                // a client is a duplicate, answered with the whole outcome, event included (§6).
                let publishEvent = !eventPublished || !delivery.redelivered
                logger.info(publishEvent ? "a duplicate of a finished request; sending its outcome again" :
                                "a redelivery of a finished request whose event was published; replying again", metadata: [
                    "method": "\(request.method)", "task_id": "\(uniqueID)", "request_id": "\(request.context.requestID ?? "-")",
                ])
                let acknowledged = await settle(delivery, request: request, outcome: outcome, held: eventPublished ? nil : uniqueID,
                                                publishEvent: publishEvent, deadLetter: nil)
                return Settled(method: request.method, .duplicate, code: outcome.failureClass, acknowledged: acknowledged)
            case .run(let attempt):
                info.journalAttempt = attempt
            case .conflict:
                let shown = uniqueID.count > 200 ? uniqueID.prefix(200) + "…" : uniqueID
                let failure = RemoteFailure.ironic("InvalidParameterValue", message: "'_unique_id' \(shown) already identifies a request with other content.", httpStatus: 400)
                // Its error event must not carry the other request's id as its task id: a conductor
                // following that task would see it fail.
                var conflicting = refusal(failure, for: request)
                conflicting.uniqueID = nil
                return await refuse(conflicting, delivery: delivery, info: info)
            }
        }
        // Runs started, counted by the journal (a run that died leaves its mark); a request the
        // journal does not follow has only the broker's count.
        let started = info.journalAttempt ?? info.attempt
        let lastDelivery = configuration.deliveryLimit.map { (info.previousDeliveries ?? 0) >= $0 } ?? false
        if started > configuration.maximumAttempts || lastDelivery {
            let attempts = max(started, (info.previousDeliveries ?? 0) + 1) - 1
            let outcome = endpoint.gaveUp(request, attempts: attempts, delivery: info)
            logger.error("a request was started too often without finishing; giving up on it", metadata: [
                "method": "\(request.method)", "attempts": "\(attempts)", "request_id": "\(request.context.requestID ?? "-")",
            ])
            let held = await record(outcome, of: journaled)
            let reason = DeadLetterReason(code: outcome.failureClass ?? "ImageDownloadFailed", message: "started \(attempts) times without finishing")
            let acknowledged = await settle(delivery, request: request, outcome: outcome, held: held, deadLetter: reason)
            return Settled(method: request.method, .gaveUp, code: outcome.failureClass, acknowledged: acknowledged)
        }
        let outcome: RPCOutcome
        do {
            outcome = try await dispatchWithHeartbeats(request, info: info)
        } catch {
            logger.notice("request not finished; returning it to the queue", metadata: ["method": "\(request.method)", "reason": "\(error)"])
            if let journaled { await journal.abandon(uniqueID: journaled) }
            await transport.reject(delivery, requeue: true)
            return Settled(method: request.method, .requeued)
        }
        let held = await record(outcome, of: journaled)
        let acknowledged = await settle(delivery, request: request, outcome: outcome, held: held, deadLetter: nil)
        return Settled(method: request.method, outcome.failureClass == nil ? .success : .failure, code: outcome.failureClass, acknowledged: acknowledged)
    }

    /// Records an outcome in the journal before anything else sees it, so that whatever happens
    /// next (a crash, a lost connection) a redelivery reproduces this outcome instead of another.
    /// Returns the `_unique_id` the journal now holds until the event is published, if any.
    private func record(_ outcome: RPCOutcome, of uniqueID: String?) async -> String? {
        guard let uniqueID else { return nil }
        do {
            try await journal.record(uniqueID: uniqueID, outcome: outcome)
            return uniqueID
        } catch {
            // Not fatal: the outcome still goes out; a duplicate would run the request again.
            logger.error("could not record a request's outcome in the journal", metadata: ["task_id": "\(uniqueID)", "error": "\(error)"])
            await journal.abandon(uniqueID: uniqueID)
            return nil
        }
    }

    /// Makes an outcome durable and final: publishes its notification (confirmed), replies to a
    /// call, then acknowledges the request (or dead-letters it). If any step fails the request is
    /// requeued; its redelivery finds the outcome in the journal and repeats the steps not known
    /// to be done. `held` is the journal's hold on the request, ended once the event is published
    /// (or not); `publishEvent` is false when the broker already confirmed the event.
    /// Returns whether the request was acknowledged (`false`: requeued).
    private func settle(_ delivery: AMQPDelivery, request: RPCRequest, outcome: RPCOutcome, held: String?, publishEvent: Bool = true,
                        deadLetter reason: DeadLetterReason?) async -> Bool {
        await settle(delivery, notification: publishEvent ? outcome.notification : nil, held: held, taskID: request.uniqueID, messageID: request.messageID,
                     replyQueue: request.replyQueue, reply: outcome.reply(to: request.messageID ?? ""), deadLetter: reason)
    }

    // A step that fails here is a broker condition (a connection lost, a queue whose node is
    // stopping: NOT_FOUND "process is stopped by supervisor") that the redelivery gets past:
    // nothing is lost, so it is logged as a warning, not an error.
    private func settle(_ delivery: AMQPDelivery, notification: OsloNotification?, held: String? = nil, taskID: String?, messageID: String?, replyQueue: String?,
                        reply: RPCReply, deadLetter reason: DeadLetterReason?) async -> Bool {
        if let notification {
            // The publisher reconnecting (its node stopped) would hold the publish for a while,
            // during which the request's own connection may go too: wait first, then decide.
            try? await transport.waitUntilReadyToPublish()
            guard transport.canSettle(delivery) else {
                // The connection that brought the request is gone, so the broker redelivers it (to
                // this worker or another): that delivery publishes the event. Publishing it here
                // too would publish it twice whenever the redelivery goes to another host.
                if let held { await journal.end(uniqueID: held, eventPublished: false) }
                logger.notice("the request's connection was lost before its outcome went out; its redelivery will publish it", metadata: [
                    "event_type": "\(notification.eventType)", "task_id": "\(taskID ?? "-")",
                ])
                return false
            }
            do {
                try await transport.sendNotification(notification)
            } catch {
                if let held { await journal.end(uniqueID: held, eventPublished: false) }
                logger.warning("could not publish an outcome event; the request will be redelivered", metadata: [
                    "event_type": "\(notification.eventType)", "task_id": "\(taskID ?? "-")", "error": "\(error)",
                ])
                await transport.reject(delivery, requeue: true)
                return false
            }
            if !transport.canSettle(delivery) {
                // The one window left open: the event is out, but the acknowledgement cannot be
                // sent. A redelivery here is answered from the journal; one on another host runs
                // the request again and publishes its own event.
                logger.warning("the request's connection was lost after its outcome event went out; a redelivery to another host would publish it again", metadata: [
                    "event_type": "\(notification.eventType)", "task_id": "\(taskID ?? "-")",
                ])
            }
        }
        if let held { await journal.end(uniqueID: held, eventPublished: notification != nil) }
        if messageID != nil, let replyQueue {
            guard await send(reply, to: replyQueue) else {
                await transport.reject(delivery, requeue: true)
                return false
            }
        }
        if let reason {
            do {
                _ = try await transport.deadLetter(delivery, reason: reason)
            } catch {
                logger.warning("could not dead-letter a request; it will be redelivered", metadata: ["error": "\(error)"])
                await transport.reject(delivery, requeue: true)
                return false
            }
        }
        await transport.acknowledge(delivery)
        return true
    }

    private func refusal(_ failure: RemoteFailure, for request: RPCRequest) -> RPCRefusal {
        RPCRefusal(failure: failure, malformed: false, method: request.method, messageID: request.messageID, replyQueue: request.replyQueue,
                   uniqueID: request.uniqueID, context: request.context, nodeUUID: request.args["node_uuid"]?.stringValue)
    }

    /// Reports a refused request (error event, failure reply) and acknowledges it; a malformed
    /// one is dead-lettered first when a dead-letter exchange is configured.
    private func refuse(_ refusal: RPCRefusal, delivery: AMQPDelivery, info: RequestDelivery) async -> Settled {
        logger.warning("refused a request", metadata: [
            "error": "\(refusal.failure.className)", "reason": "\(refusal.failure.message)",
            "method": "\(refusal.method.map { String($0.prefix(200)) } ?? "-")", "request_id": "\(refusal.context.requestID ?? "-")",
        ])
        let reason = refusal.malformed ? DeadLetterReason(code: refusal.failure.className, message: refusal.failure.message) : nil
        let acknowledged = await settle(delivery, notification: endpoint.refused(refusal, delivery: info), taskID: refusal.uniqueID, messageID: refusal.messageID,
                                        replyQueue: refusal.replyQueue, reply: RPCReply(failure: refusal.failure, messageID: refusal.messageID ?? ""),
                                        deadLetter: reason)
        return Settled(method: refusal.method, .refused, code: refusal.failure.className, acknowledged: acknowledged)
    }

    /// Sends a reply; `false` when it could not be sent (the request is then requeued).
    private func send(_ reply: RPCReply, to replyQueue: String) async -> Bool {
        do {
            _ = try await transport.sendReply(reply, to: replyQueue)
            return true
        } catch {
            logger.warning("could not send a reply; the request will be redelivered", metadata: ["reply_queue": "\(replyQueue)", "error": "\(error)"])
            return false
        }
    }

    /// Runs the method; for a call with a call-monitor timeout, sends `ending: false` heartbeats
    /// every half of that timeout meanwhile (only then: an oslo caller without a monitor crashes
    /// on a heartbeat).
    private func dispatchWithHeartbeats(_ request: RPCRequest, info: RequestDelivery) async throws -> RPCOutcome {
        guard let timeout = request.callMonitorTimeout, let messageID = request.messageID, let replyQueue = request.replyQueue else {
            return try await endpoint.dispatch(request, delivery: info)
        }
        let interval = Duration.milliseconds(Int64(min(max(timeout / 2, 0.05), 43_200) * 1000))
        return try await withThrowingTaskGroup(of: RPCOutcome?.self) { group in
            group.addTask { try await self.endpoint.dispatch(request, delivery: info) }
            group.addTask {
                while !Task.isCancelled {
                    do { try await Task.sleep(for: interval) } catch { return nil }
                    _ = try? await self.transport.sendReply(.heartbeat(messageID: messageID), to: replyQueue)
                }
                return nil
            }
            while let next = try await group.next() {
                if let next {
                    group.cancelAll()
                    return next
                }
            }
            throw CancellationError()
        }
    }
}

/// How many requests are being processed right now (finished ones excluded, unlike the task group).
private final class RunningRequests: Sendable {
    private let value = Atomic<Int>(0)

    func started() { value.add(1, ordering: .relaxed) }
    func finished() { value.subtract(1, ordering: .relaxed) }
    var count: Int { value.load(ordering: .relaxed) }
}
