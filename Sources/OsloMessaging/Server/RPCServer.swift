import AMQP
import Logging
import ServiceLifecycle
import Synchronization

/// An oslo.messaging RPC server: takes requests from a transport, dispatches them to an endpoint
/// with bounded concurrency, replies to calls (with call-monitor heartbeats when asked), and
/// acknowledges each request only once its outcome is final — unlike oslo, which acknowledges
/// before dispatching and so loses the request if the process dies.
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
        /// Reject malformed requests without requeue (dead-lettering them when the queue has a
        /// dead-letter exchange) instead of acknowledging them.
        public var deadLetterMalformedRequests: Bool
        /// Bounds on request JSON.
        public var parser: JSONParser

        /// Creates a configuration.
        public init(maximumConcurrentRequests: Int = 20, gracefulShutdownTimeout: Duration = .seconds(60), deadLetterMalformedRequests: Bool = false, parser: JSONParser = JSONParser()) {
            self.maximumConcurrentRequests = max(1, maximumConcurrentRequests)
            self.gracefulShutdownTimeout = gracefulShutdownTimeout
            self.deadLetterMalformedRequests = deadLetterMalformedRequests
            self.parser = parser
        }
    }

    private let transport: any OsloTransport
    private let endpoint: any RPCEndpoint
    private let configuration: Configuration
    private let logger: Logger

    /// Creates a server.
    public init(transport: any OsloTransport, endpoint: any RPCEndpoint, configuration: Configuration, logger: Logger) {
        self.transport = transport
        self.endpoint = endpoint
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

    /// Handles one delivery from decoding to acknowledgement.
    func process(_ delivery: AMQPDelivery) async {
        let info = RequestDelivery(delivery)
        let request: RPCRequest
        do {
            request = try RPCRequest.decode(body: delivery.body, contentType: delivery.properties.contentType, parser: configuration.parser)
        } catch {
            let failure = RemoteFailure.ironic("InvalidParameterValue", message: "Invalid request: \(error.reason).", httpStatus: 400)
            let refusal = RPCRefusal(failure: failure, malformed: true, method: error.method, messageID: error.messageID, replyQueue: error.replyQueue,
                                     uniqueID: error.uniqueID, context: error.context, nodeUUID: error.nodeUUID)
            await refuse(refusal, delivery: delivery, info: info)
            return
        }
        if request.namespace != nil || !endpoint.version.serves(request.version) {
            await refuse(refusal(.unsupportedVersion(request.version.description, method: request.method), for: request), delivery: delivery, info: info)
            return
        }
        if request.method.hasPrefix("_") || !endpoint.methods.contains(request.method) {
            await refuse(refusal(.noSuchMethod(request.method), for: request), delivery: delivery, info: info)
            return
        }
        let outcome: Result<JSONValue, RemoteFailure>
        do {
            outcome = try await dispatchWithHeartbeats(request, info: info)
        } catch {
            logger.notice("request not finished; returning it to the queue", metadata: ["method": "\(request.method)", "reason": "\(error)"])
            await transport.reject(delivery, requeue: true)
            return
        }
        if let messageID = request.messageID, let replyQueue = request.replyQueue {
            let reply: RPCReply
            switch outcome {
            case .success(let result): reply = RPCReply(result: result, messageID: messageID)
            case .failure(let failure): reply = RPCReply(failure: failure, messageID: messageID)
            }
            guard await send(reply, to: replyQueue) else {
                await transport.reject(delivery, requeue: true)
                return
            }
        }
        await transport.acknowledge(delivery)
    }

    private func refusal(_ failure: RemoteFailure, for request: RPCRequest) -> RPCRefusal {
        RPCRefusal(failure: failure, malformed: false, method: request.method, messageID: request.messageID, replyQueue: request.replyQueue,
                   uniqueID: request.uniqueID, context: request.context, nodeUUID: request.args["node_uuid"]?.stringValue)
    }

    private func refuse(_ refusal: RPCRefusal, delivery: AMQPDelivery, info: RequestDelivery) async {
        logger.warning("refused a request", metadata: [
            "error": "\(refusal.failure.className)", "reason": "\(refusal.failure.message)",
            "method": "\(refusal.method ?? "-")", "request_id": "\(refusal.context.requestID ?? "-")",
        ])
        do {
            try await endpoint.refused(refusal, delivery: info)
        } catch {
            logger.notice("the refusal could not be reported; returning the request to the queue", metadata: ["reason": "\(error)"])
            await transport.reject(delivery, requeue: true)
            return
        }
        if let messageID = refusal.messageID, let replyQueue = refusal.replyQueue {
            guard await send(RPCReply(failure: refusal.failure, messageID: messageID), to: replyQueue) else {
                await transport.reject(delivery, requeue: true)
                return
            }
        }
        if refusal.malformed && configuration.deadLetterMalformedRequests {
            await transport.reject(delivery, requeue: false)
        } else {
            await transport.acknowledge(delivery)
        }
    }

    /// Sends a reply; `false` when it could not be sent (the request is then requeued).
    private func send(_ reply: RPCReply, to replyQueue: String) async -> Bool {
        do {
            _ = try await transport.sendReply(reply, to: replyQueue)
            return true
        } catch {
            logger.error("could not send a reply; the request will be redelivered", metadata: ["reply_queue": "\(replyQueue)", "error": "\(error)"])
            return false
        }
    }

    /// Runs the method; for a call with a call-monitor timeout, sends `ending: false` heartbeats
    /// every half of that timeout meanwhile (only then: an oslo caller without a monitor crashes
    /// on a heartbeat).
    private func dispatchWithHeartbeats(_ request: RPCRequest, info: RequestDelivery) async throws -> Result<JSONValue, RemoteFailure> {
        guard let timeout = request.callMonitorTimeout, let messageID = request.messageID, let replyQueue = request.replyQueue else {
            return try await endpoint.dispatch(request, delivery: info)
        }
        let interval = Duration.milliseconds(Int64(min(max(timeout / 2, 0.05), 43_200) * 1000))
        return try await withThrowingTaskGroup(of: Result<JSONValue, RemoteFailure>?.self) { group in
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
