internal import CRabbitMQ
import Logging
import Metrics
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A connection to RabbitMQ that stays connected: one librabbitmq connection at a time, living on
/// its own thread, reconnecting with back-off when it breaks and declaring its topology again.
///
/// librabbitmq is not thread safe and only services heartbeats inside its own calls, so the
/// connection runs on a dedicated thread that waits on the socket and on a wakeup event, reads
/// frames, sends heartbeats, and runs the commands async code queues for it. Async callers never
/// block a cooperative thread: each command resumes a continuation when the thread has run it.
///
/// - Declarations, bindings, prefetch and consumers are remembered and replayed, in order, after
///   every reconnect (non-durable queues vanish with a restarted broker).
/// - ``publish(_:)`` waits for a connection, then for the broker's confirm; a message whose
///   confirm was lost with the connection is published again on the next one (at least once).
/// - ``deliveries`` yields every message for every consumer, tagged with the connection
///   generation; settling a delivery from an earlier connection is a no-op because the broker
///   requeues what was unacknowledged when a connection drops.
public final class AMQPConnection: Sendable {
    /// Messages for this connection's consumers, across reconnections.
    public let deliveries: AsyncStream<AMQPDelivery>

    private let configuration: AMQPConfiguration
    private let logger: Logger
    private let label: String
    private let wakeup = WakeupEvent()
    private let shared = Mutex(SharedState())
    private let deliveryContinuation: AsyncStream<AMQPDelivery>.Continuation
    private let reconnects: Counter
    private let connectedGauge: Gauge

    /// Creates a connection; nothing happens until ``start()``.
    ///
    /// - Parameters:
    ///   - configuration: brokers, TLS, heartbeat, back-off.
    ///   - label: a short name for logs and the thread ("consumer", "publisher").
    ///   - logger: where connection events are logged.
    public init(configuration: AMQPConfiguration, label: String, logger: Logger) {
        precondition(!configuration.endpoints.isEmpty, "an AMQP configuration needs at least one endpoint")
        self.configuration = configuration
        self.label = label
        var logger = logger
        logger[metadataKey: "amqp_connection"] = "\(label)"
        self.logger = logger
        (deliveries, deliveryContinuation) = AsyncStream.makeStream(of: AMQPDelivery.self, bufferingPolicy: .unbounded)
        reconnects = Counter(label: "\(configuration.metricsPrefix)_broker_reconnects_total", dimensions: [("connection", label)])
        connectedGauge = Gauge(label: "\(configuration.metricsPrefix)_broker_connected", dimensions: [("connection", label)])
    }

    /// Starts the connection thread, which connects (and keeps reconnecting) in the background.
    public func start() {
        let shouldStart = shared.withLock { state -> Bool in
            guard case .new = state.phase else { return false }
            state.phase = .disconnected
            return true
        }
        guard shouldStart else { return }
        let box = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { argument in
            let connection = Unmanaged<AMQPConnection>.fromOpaque(argument!).takeRetainedValue()
            connection.runThread()
            return nil
        }, box.toOpaque())
        precondition(result == 0, "could not start the AMQP connection thread: \(result)")
        pthread_detach(thread)
    }

    /// Whether a connection to a broker is up right now.
    public var isConnected: Bool {
        shared.withLock { if case .connected = $0.phase { true } else { false } }
    }

    /// How many times a connection was established (1 after the first connect).
    public var generation: UInt64 {
        shared.withLock { $0.generation }
    }

    /// Waits until a connection is up; throws ``AMQPError/Code/closed`` once the connection is closed.
    public func waitUntilConnected() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            let result: Result<Void, Error>? = shared.withLock { state in
                switch state.phase {
                case .connected: return .success(())
                case .closing, .closed: return .failure(AMQPError(.closed, "the \(label) connection is closed"))
                case .new, .disconnected:
                    state.connectedWaiters.append(continuation)
                    return nil
                }
            }
            if let result { continuation.resume(with: result) }
        }
    }

    // MARK: Topology

    /// Declares an exchange, now and after every reconnect.
    public func declareExchange(_ declaration: AMQPExchangeDeclaration) async throws {
        try await declare(.exchange(declaration))
    }

    /// Declares a queue, now and after every reconnect.
    public func declareQueue(_ declaration: AMQPQueueDeclaration) async throws {
        try await declare(.queue(declaration))
    }

    /// Binds a queue to an exchange, now and after every reconnect.
    public func bindQueue(_ binding: AMQPQueueBinding) async throws {
        try await declare(.binding(binding))
    }

    /// Sets the channel's prefetch count (`basic.qos`), now and after every reconnect.
    public func setPrefetch(_ count: UInt16) async throws {
        try await declare(.qos(prefetchCount: count))
    }

    /// Starts consuming from a queue with manual acknowledgements, now and after every reconnect.
    /// Messages arrive on ``deliveries``.
    @discardableResult
    public func consume(queue: String, consumerTag: String? = nil) async throws -> String {
        let tag = consumerTag ?? "\(label)-\(queue)"
        try await declare(.consumer(queue: queue, tag: tag))
        return tag
    }

    /// Stops a consumer; it is not restored after a reconnect.
    public func cancel(consumerTag: String) async throws {
        try await submit { ticket, continuation in .cancelConsumer(tag: consumerTag, ticket, continuation) }
    }

    private func declare(_ item: AMQPTopologyItem) async throws {
        try await submit { ticket, continuation in .topology(item, ticket, continuation) }
    }

    /// Queues a command and waits for its result. If the waiting task is cancelled, the command
    /// is dropped if it has not run yet (also while no connection is up) and the wait ends with
    /// `CancellationError`.
    private func submit<T: Sendable>(_ make: (CommandTicket, CheckedContinuation<T, Error>) -> ConnectionCommand) async throws -> T {
        let ticket = CommandTicket()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                enqueue(make(ticket, continuation))
            }
        } onCancel: {
            ticket.cancel()
            wakeup.signal()
        }
    }

    // MARK: Publishing and settling

    /// Publishes a message: waits for a connection, then (in confirm mode) for the broker's
    /// verdict. Throws ``AMQPError/Code/publishNacked`` if the broker refuses the message and
    /// ``AMQPError/Code/closed`` if the connection is closed first.
    public func publish(_ message: AMQPOutgoingMessage) async throws -> AMQPPublishOutcome {
        try await submit { ticket, continuation in .publish(message, ticket, continuation) }
    }

    /// Acknowledges a delivery.
    public func ack(_ delivery: AMQPDelivery) async {
        await settle(delivery, .ack)
    }

    /// Rejects a delivery; without requeue it is dead-lettered (if the queue has a dead-letter
    /// exchange) or dropped.
    public func reject(_ delivery: AMQPDelivery, requeue: Bool) async {
        await settle(delivery, .reject(requeue: requeue))
    }

    /// Negatively acknowledges a delivery.
    public func nack(_ delivery: AMQPDelivery, requeue: Bool) async {
        await settle(delivery, .nack(requeue: requeue))
    }

    private func settle(_ delivery: AMQPDelivery, _ kind: Settlement.Kind) async {
        let settlement = Settlement(generation: delivery.connectionGeneration, deliveryTag: delivery.deliveryTag, kind: kind)
        await withCheckedContinuation { continuation in
            enqueue(.settle(settlement, continuation))
        }
    }

    // MARK: Closing

    /// Closes the connection: the channel and connection are closed politely (unacknowledged
    /// deliveries go back to their queues), queued commands fail with ``AMQPError/Code/closed``,
    /// and ``deliveries`` finishes. Returns when the connection thread has stopped.
    public func close() async {
        let action: CloseAction = shared.withLock { state in
            switch state.phase {
            case .new:
                state.phase = .closed
                return .finishNow
            case .closed:
                return .alreadyClosed
            case .closing, .disconnected, .connected:
                state.phase = .closing
                return .waitForThread
            }
        }
        switch action {
        case .finishNow:
            failQueuedCommands()
            let waiters = shared.withLock { state in
                defer { state.connectedWaiters = [] }
                return state.connectedWaiters
            }
            for waiter in waiters { waiter.resume(throwing: AMQPError(.closed, "the \(label) connection is closed")) }
            deliveryContinuation.finish()
        case .alreadyClosed:
            break
        case .waitForThread:
            wakeup.signal()
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = shared.withLock { state -> Bool in
                    if case .closed = state.phase { return true }
                    state.closeWaiters.append(continuation)
                    return false
                }
                if done { continuation.resume() }
            }
        }
    }

    private enum CloseAction { case finishNow, alreadyClosed, waitForThread }

    // MARK: Command queue

    private func enqueue(_ command: ConnectionCommand) {
        let rejected: ConnectionCommand? = shared.withLock { state in
            switch state.phase {
            case .closing, .closed:
                return command
            case .new, .disconnected, .connected:
                if case .settle(let settlement, _) = command, settlement.generation != state.generation || !state.phase.isConnected {
                    return command  // from an earlier connection: the broker has requeued it already
                }
                state.commands.append(command)
                return nil
            }
        }
        if let rejected {
            rejected.fail(AMQPError(.closed, "the \(label) connection is closed"))
        } else {
            wakeup.signal()
        }
    }

    private func failQueuedCommands() {
        let commands = shared.withLock { state -> [ConnectionCommand] in
            defer { state.commands = [] }
            return state.commands
        }
        let error = AMQPError(.closed, "the \(label) connection is closed")
        for command in commands { command.fail(error) }
    }

    /// Ends the waits of queued commands whose callers were cancelled.
    private func dropCancelledCommands() {
        let cancelled = shared.withLock { state -> [ConnectionCommand] in
            guard state.commands.contains(where: \.isCancelled) else { return [] }
            let dropped = state.commands.filter(\.isCancelled)
            state.commands.removeAll(where: \.isCancelled)
            return dropped
        }
        for command in cancelled { command.fail(CancellationError()) }
    }

    // MARK: The connection thread

    private func runThread() {
        image_worker_set_thread_name(String("amqp-\(label)".prefix(15)))
        let thread = ConnectionThreadState()
        while !isClosing {
            dropCancelledCommands()
            guard let live = thread.live else {
                if !connect(thread) { waitBeforeReconnecting(thread) }
                continue
            }
            do {
                try runQueuedCommands(on: live, thread)
                // Each read also sends a heartbeat when one is due, and fails with "heartbeat
                // timeout" once the broker has been silent for two heartbeat intervals.
                while let frame = try live.readFrame() { try handle(frame, thread) }
                live.releaseBuffersIfIdle()
                if !live.hasBufferedInput {
                    wakeup.wait(socket: live.socketDescriptor, timeout: idlePollInterval)
                }
            } catch {
                connectionLost(thread, error: error)
            }
        }
        shutDown(thread)
    }

    /// How long the thread sleeps in `poll(2)` when nothing happens; bounded so that heartbeats are
    /// sent and missed ones detected in time.
    private var idlePollInterval: Duration {
        let heartbeat = configuration.heartbeatSeconds
        return heartbeat > 0 ? min(.seconds(1), .milliseconds(heartbeat * 250)) : .seconds(1)
    }

    private var isClosing: Bool {
        shared.withLock { state in
            switch state.phase {
            case .closing, .closed: true
            default: false
            }
        }
    }

    private func connect(_ thread: ConnectionThreadState) -> Bool {
        let endpoints = configuration.endpoints
        let endpoint = endpoints[thread.endpointIndex % endpoints.count]
        do {
            let live = try LibRabbitMQConnection(endpoint: endpoint, configuration: configuration)
            for item in thread.topology {
                do {
                    try live.apply(item)
                } catch {
                    logger.error("declaring the topology again after connecting failed", metadata: ["item": "\(item)", "error": "\(error)"])
                    throw error
                }
            }
            let accepted = shared.withLock { state -> (UInt64, [CheckedContinuation<Void, Error>])? in
                guard case .disconnected = state.phase else { return nil }  // closing meanwhile
                state.generation += 1
                state.phase = .connected
                defer { state.connectedWaiters = [] }
                return (state.generation, state.connectedWaiters)
            }
            guard let (generation, waiters) = accepted else {
                live.closeGracefully()
                return true
            }
            thread.live = live
            connectedGauge.record(1)
            if generation > 1 { reconnects.increment() }
            if thread.failedAttempts > 0 || generation > 1 {
                logger.notice("reconnected to the broker", metadata: ["endpoint": "\(endpoint)", "generation": "\(generation)", "failed_attempts": "\(thread.failedAttempts)"])
            } else {
                logger.info("connected to the broker", metadata: ["endpoint": "\(endpoint)"])
            }
            thread.failedAttempts = 0
            for waiter in waiters { waiter.resume() }
            return true
        } catch {
            thread.failedAttempts += 1
            thread.endpointIndex += 1
            logger.warning("could not connect to the broker", metadata: [
                "endpoint": "\(endpoint)", "error": "\(error)", "attempt": "\(thread.failedAttempts)",
            ])
            return false
        }
    }

    private func waitBeforeReconnecting(_ thread: ConnectionThreadState) {
        let delay = configuration.reconnect.delay(beforeAttempt: thread.failedAttempts, random: Double.random(in: 0...1))
        logger.debug("waiting before reconnecting", metadata: ["delay_seconds": "\(delay.seconds)"])
        let deadline = ContinuousClock.now + delay
        while !isClosing, ContinuousClock.now < deadline {
            _ = wakeup.wait(socket: nil, timeout: min(ContinuousClock.now.duration(to: deadline), .milliseconds(500)))
            dropCancelledCommands()
        }
    }

    private func connectionLost(_ thread: ConnectionThreadState, error: Error) {
        logger.warning("lost the connection to the broker; reconnecting", metadata: ["error": "\(error)"])
        connectedGauge.record(0)
        thread.live = nil
        // Messages whose confirm did not arrive are published again on the next connection.
        let unconfirmed = thread.pendingConfirms.map { ConnectionCommand.publish($0.message, $0.ticket, $0.continuation) }
        thread.pendingConfirms = []
        let staleSettlements = shared.withLock { state -> [ConnectionCommand] in
            if case .connected = state.phase { state.phase = .disconnected }
            state.commands.insert(contentsOf: unconfirmed, at: 0)
            let stale = state.commands.filter(\.isSettlement)
            state.commands.removeAll(where: \.isSettlement)
            return stale
        }
        for settlement in staleSettlements { settlement.succeedSettlement() }
    }

    private func shutDown(_ thread: ConnectionThreadState) {
        if let live = thread.live {
            live.closeGracefully()
            thread.live = nil
        }
        let error = AMQPError(.closed, "the \(label) connection is closed")
        for pending in thread.pendingConfirms { pending.continuation.resume(throwing: error) }
        thread.pendingConfirms = []
        let (commands, connectedWaiters, closeWaiters) = shared.withLock { state in
            state.phase = .closed
            defer {
                state.commands = []
                state.connectedWaiters = []
                state.closeWaiters = []
            }
            return (state.commands, state.connectedWaiters, state.closeWaiters)
        }
        for command in commands { command.fail(error) }
        for waiter in connectedWaiters { waiter.resume(throwing: error) }
        deliveryContinuation.finish()
        logger.info("closed the broker connection")
        for waiter in closeWaiters { waiter.resume() }
    }

    private func runQueuedCommands(on live: LibRabbitMQConnection, _ thread: ConnectionThreadState) throws {
        let commands = shared.withLock { state -> [ConnectionCommand] in
            defer { state.commands = [] }
            return state.commands
        }
        for (index, command) in commands.enumerated() {
            do {
                try run(command, on: live, thread)
            } catch let failure as CommandFailure {
                // The connection is unusable now; what was not run waits for the next one.
                var remaining = Array(commands[(index + 1)...])
                if failure.retry { remaining.insert(command, at: 0) }
                shared.withLock { $0.commands.insert(contentsOf: remaining, at: 0) }
                throw failure.error
            }
        }
    }

    private func run(_ command: ConnectionCommand, on live: LibRabbitMQConnection, _ thread: ConnectionThreadState) throws {
        switch command {
        case .topology(let item, _, let continuation):
            do {
                try live.apply(item)
            } catch let error as AMQPError where error.replyCode != nil {
                // The broker refused this declaration: tell the caller, never replay it.
                continuation.resume(throwing: error)
                throw CommandFailure(error: error, retry: false)
            } catch {
                throw CommandFailure(error: error, retry: true)
            }
            thread.remember(item)
            continuation.resume()
        case .cancelConsumer(let tag, _, let continuation):
            thread.forgetConsumer(tag: tag)
            do {
                try live.cancelConsumer(tag: tag)
            } catch {
                continuation.resume()  // the connection is gone, and with it the consumer
                throw CommandFailure(error: error, retry: false)
            }
            continuation.resume()
        case .publish(let message, let ticket, let continuation):
            let tag: UInt64
            do {
                tag = try live.publish(message)
            } catch {
                throw CommandFailure(error: error, retry: true)
            }
            if configuration.publisherConfirms {
                thread.pendingConfirms.append(PendingPublish(tag: tag, message: message, ticket: ticket, continuation: continuation))
            } else {
                continuation.resume(returning: .sent)
            }
        case .settle(let settlement, let continuation):
            defer { continuation.resume() }
            guard settlement.generation == generation else { return }
            do {
                switch settlement.kind {
                case .ack: try live.ack(deliveryTag: settlement.deliveryTag)
                case .reject(let requeue): try live.reject(deliveryTag: settlement.deliveryTag, requeue: requeue)
                case .nack(let requeue): try live.nack(deliveryTag: settlement.deliveryTag, requeue: requeue)
                }
            } catch {
                throw CommandFailure(error: error, retry: false)
            }
        }
    }

    private func handle(_ frame: IncomingFrame, _ thread: ConnectionThreadState) throws {
        switch frame {
        case .delivery(var delivery):
            delivery.connectionGeneration = generation
            deliveryContinuation.yield(delivery)
        case .returned(let returned):
            // basic.return carries no publish tag; the body (which holds a unique id in every
            // message we send) identifies which pending publish it was.
            if let index = thread.pendingConfirms.firstIndex(where: {
                $0.returned == nil && $0.message.mandatory && $0.message.routingKey == returned.routingKey
                    && $0.message.exchange == returned.exchange && $0.message.body == returned.body
            }) {
                thread.pendingConfirms[index].returned = (returned.replyCode, returned.replyText)
            } else {
                logger.warning("the broker returned a message that is not pending", metadata: ["routing_key": "\(returned.routingKey)"])
            }
        case .publishAcknowledged(let tag, let multiple):
            for pending in thread.takeConfirmed(upTo: tag, multiple: multiple) {
                if let (code, text) = pending.returned {
                    pending.continuation.resume(returning: .returned(replyCode: code, replyText: text))
                } else {
                    pending.continuation.resume(returning: .confirmed)
                }
            }
        case .publishRejected(let tag, let multiple):
            for pending in thread.takeConfirmed(upTo: tag, multiple: multiple) {
                pending.continuation.resume(throwing: AMQPError(.publishNacked, "the broker refused a message published to '\(pending.message.exchange)' with routing key '\(pending.message.routingKey)'"))
            }
        case .consumerCancelled(let tag):
            // The queue went away under us; declaring everything again brings it back.
            throw AMQPError(.connectionLost, "the broker cancelled consumer '\(tag)'")
        case .blocked(let reason):
            logger.warning("the broker blocked publishing", metadata: ["reason": "\(reason)"])
        case .unblocked:
            logger.notice("the broker unblocked publishing")
        }
    }
}

// MARK: - State

/// The connection's state shared between async callers and the connection thread.
private struct SharedState {
    enum Phase {
        case new, disconnected, connected, closing, closed
        var isConnected: Bool { if case .connected = self { true } else { false } }
    }

    var phase: Phase = .new
    var generation: UInt64 = 0
    var commands: [ConnectionCommand] = []
    var connectedWaiters: [CheckedContinuation<Void, Error>] = []
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
}

/// What only the connection thread touches.
private final class ConnectionThreadState {
    var live: LibRabbitMQConnection?
    var topology: [AMQPTopologyItem] = []
    var pendingConfirms: [PendingPublish] = []
    var failedAttempts = 0
    var endpointIndex = 0

    /// Adds an item to replay. `basic.qos` applies to the consumers started after it, so each one
    /// keeps its place; declarations and consumers are kept once.
    func remember(_ item: AMQPTopologyItem) {
        if case .qos = item {
            topology.append(item)
        } else if !topology.contains(item) {
            topology.append(item)
        }
    }

    func forgetConsumer(tag: String) {
        topology.removeAll { if case .consumer(_, let t) = $0 { t == tag } else { false } }
    }

    func takeConfirmed(upTo tag: UInt64, multiple: Bool) -> [PendingPublish] {
        let confirmed = pendingConfirms.filter { multiple ? $0.tag <= tag : $0.tag == tag }
        pendingConfirms.removeAll { multiple ? $0.tag <= tag : $0.tag == tag }
        return confirmed
    }
}

private struct PendingPublish {
    var tag: UInt64
    var message: AMQPOutgoingMessage
    var ticket: CommandTicket
    var continuation: CheckedContinuation<AMQPPublishOutcome, Error>
    var returned: (UInt16, String)?
}

/// A failure while running a command that makes the connection unusable.
private struct CommandFailure: Error {
    var error: Error
    /// Run the command again on the next connection.
    var retry: Bool
}

private struct Settlement: Sendable {
    enum Kind: Sendable {
        case ack
        case reject(requeue: Bool)
        case nack(requeue: Bool)
    }
    var generation: UInt64
    var deliveryTag: UInt64
    var kind: Kind
}

/// Marks a queued command whose caller stopped waiting.
private final class CommandTicket: Sendable {
    private let cancelled = Atomic<Bool>(false)
    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
    func cancel() { cancelled.store(true, ordering: .relaxed) }
}

private enum ConnectionCommand: Sendable {
    case topology(AMQPTopologyItem, CommandTicket, CheckedContinuation<Void, Error>)
    case cancelConsumer(tag: String, CommandTicket, CheckedContinuation<Void, Error>)
    case publish(AMQPOutgoingMessage, CommandTicket, CheckedContinuation<AMQPPublishOutcome, Error>)
    case settle(Settlement, CheckedContinuation<Void, Never>)

    var isSettlement: Bool {
        if case .settle = self { true } else { false }
    }

    var isCancelled: Bool {
        switch self {
        case .topology(_, let ticket, _), .cancelConsumer(_, let ticket, _), .publish(_, let ticket, _): ticket.isCancelled
        case .settle: false
        }
    }

    func fail(_ error: Error) {
        switch self {
        case .topology(_, _, let c): c.resume(throwing: error)
        case .cancelConsumer(_, _, let c): c.resume(throwing: error)
        case .publish(_, _, let c): c.resume(throwing: error)
        case .settle(_, let c): c.resume()
        }
    }

    func succeedSettlement() {
        if case .settle(_, let c) = self { c.resume() }
    }
}
