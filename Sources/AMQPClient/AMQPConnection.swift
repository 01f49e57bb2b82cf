import Primitives
internal import CRabbitMQ
import AMQPModel
import Logging
import CoreMetrics
import Metrics
import NIOConcurrencyHelpers
import SystemSupport

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
/// Every decision (what to run, what to replay, whom to resume) is the
/// ``AMQPConnectionStateMachine``'s; this type carries its actions out.
///
/// - Declarations, bindings, prefetch and consumers are remembered and replayed, in order, after
///   every reconnect (non-durable queues vanish with a restarted broker).
/// - ``publish(_:)`` waits for a connection, then for the broker's confirm; a message whose
///   confirm was lost with the connection is published again on the next one (at least once). A
///   message that can never be published (a routing key over 255 bytes) fails at once and never
///   holds up the next one.
/// - ``deliveries`` yields every message for every consumer, tagged with the connection
///   generation; settling a delivery from an earlier connection is a no-op because the broker
///   requeues what was unacknowledged when a connection drops.
public final class AMQPConnection: Sendable {
    /// Messages for this connection's consumers, across reconnections.
    public let deliveries: AsyncStream<AMQPDelivery>

    private typealias Machine = AMQPConnectionStateMachine<Waiter>

    private let configuration: AMQPConfiguration
    private let logger: Logger
    private let label: String
    private let wakeup = WakeupEvent()
    private let machine: NIOLockedValueBox<Machine>
    private let deliveryContinuation: AsyncStream<AMQPDelivery>.Continuation
    private let reconnects: Counter
    /// `<prefix>_broker_connected{connection, node}`, one per broker of the URL (`host:port`):
    /// 1 for the one this connection is on, so a fleet's spread over a cluster shows.
    private let connectedGauges: [String: Gauge]
    private let droppedCommands: Counter

    /// Creates a connection; nothing happens until ``start()``.
    ///
    /// - Parameters:
    ///   - configuration: brokers, TLS, heartbeat, back-off.
    ///   - label: a short name for logs and the thread ("consumer", "publisher").
    ///   - logger: where connection events are logged.
    ///   - metricsFactory: where its counters and gauge go (the process's `MetricsSystem` by default).
    public init(configuration: AMQPConfiguration, label: String, logger: Logger, metricsFactory: (any MetricsFactory)? = nil) {
        precondition(!configuration.endpoints.isEmpty, "an AMQP configuration needs at least one endpoint")
        self.configuration = configuration
        self.label = label
        var logger = logger
        logger[metadataKey: "amqp_connection"] = "\(label)"
        self.logger = logger
        // As oslo: each connection starts at a random host of the URL, so that a fleet of workers
        // spreads over a cluster, and goes round the list in order from there after a failure.
        let count = configuration.endpoints.count
        machine = NIOLockedValueBox(Machine(publisherConfirms: configuration.publisherConfirms, endpointCount: count, firstEndpoint: Int.random(in: 0..<count)))
        (deliveries, deliveryContinuation) = AsyncStream.makeStream(of: AMQPDelivery.self, bufferingPolicy: .unbounded)
        let factory = metricsFactory ?? MetricsSystem.factory
        let dimensions = [("connection", label)]
        reconnects = Counter(label: "\(configuration.metricsPrefix)_broker_reconnects_total", dimensions: dimensions, factory: factory)
        var gauges: [String: Gauge] = [:]
        for endpoint in configuration.endpoints where gauges[endpoint.node] == nil {
            gauges[endpoint.node] = Gauge(label: "\(configuration.metricsPrefix)_broker_connected", dimensions: dimensions + [("node", endpoint.node)], factory: factory)
        }
        connectedGauges = gauges
        droppedCommands = Counter(label: "\(configuration.metricsPrefix)_broker_commands_dropped_total", dimensions: dimensions, factory: factory)
    }

    /// Starts the connection thread, which connects (and keeps reconnecting) in the background.
    public func start() {
        guard machine.withLockedValue({ $0.start() }) else { return }
        do {
            try DetachedThread.start(name: "amqp-\(label)") { self.runThread() }
        } catch {
            // Only when the system is out of threads, at start: nothing can work then.
            preconditionFailure("could not start the AMQP connection thread: \(error)")
        }
    }

    /// Whether a connection to a broker is up right now.
    public var isConnected: Bool {
        machine.withLockedValue { $0.phase == .connected }
    }

    /// How many times a connection was established (1 after the first connect).
    public var generation: UInt64 {
        machine.withLockedValue { $0.generation }
    }

    /// Whether `delivery` came on the connection that is up now, so that settling it reaches the
    /// broker (a delivery of an earlier connection was requeued when that connection dropped).
    public func canSettle(_ delivery: AMQPDelivery) -> Bool {
        machine.withLockedValue { $0.phase == .connected && $0.generation == delivery.connectionGeneration }
    }

    /// Waits until a connection is up; throws ``AMQPError/Code/closed`` once the connection is closed.
    public func waitUntilConnected() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            if let completion = machine.withLockedValue({ $0.waitUntilConnected(.void(continuation)) }) {
                resume(completion)
            }
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
        try await submitWaiting { .void($0) } operation: { .cancelConsumer(tag: consumerTag) }
    }

    private func declare(_ item: AMQPTopologyItem) async throws {
        try await submitWaiting { .void($0) } operation: { .topology(item) }
    }

    // MARK: Publishing and settling

    /// Publishes a message: waits for a connection, then (in confirm mode) for the broker's
    /// verdict. Throws ``AMQPError/Code/publishNacked`` if the broker refuses the message,
    /// ``AMQPError/Code/invalidArgument`` if it can never be published, and
    /// ``AMQPError/Code/closed`` if the connection is closed first.
    public func publish(_ message: AMQPOutgoingMessage) async throws -> AMQPPublishOutcome {
        try await submitWaiting { .publish($0) } operation: { .publish(message) }
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

    private func settle(_ delivery: AMQPDelivery, _ kind: Machine.Settlement.Kind) async {
        let settlement = Machine.Settlement(generation: delivery.connectionGeneration, deliveryTag: delivery.deliveryTag, kind: kind)
        await withCheckedContinuation { continuation in
            submit(.settle(settlement), .settle(continuation))
        }
    }

    // MARK: Closing

    /// Closes the connection: the channel and connection are closed politely (unacknowledged
    /// deliveries go back to their queues), queued commands fail with ``AMQPError/Code/closed``,
    /// and ``deliveries`` finishes. Returns when the connection thread has stopped.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            switch machine.withLockedValue({ $0.close(.signal(continuation)) }) {
            case .finishedNow(let completions):
                deliveryContinuation.finish()
                for completion in completions { resume(completion) }
            case .alreadyClosed(let completion):
                resume(completion)
            case .wakeThreadAndWait:
                wakeup.signal()
            }
        }
    }

    // MARK: Commands

    /// Queues a command (or completes it at once) and returns its id.
    @discardableResult
    private func submit(_ operation: Machine.Operation, _ waiter: Waiter) -> UInt64 {
        let (id, actions) = machine.withLockedValue { $0.enqueue(operation, waiter: waiter) }
        perform(actions)
        return id
    }

    /// Queues a command and waits for its outcome. Cancelling the task drops the command if it
    /// has not run yet (also while no connection is up): the wait then ends with
    /// `CancellationError`.
    private func submitWaiting<T: Sendable>(_ waiter: (CheckedContinuation<T, any Error>) -> Waiter,
                                            operation: () -> Machine.Operation) async throws -> T {
        let handle = CommandHandle()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let id = submit(operation(), waiter(continuation))
                if handle.enqueued(id) { cancelCommand(id) }
            }
        } onCancel: {
            if let id = handle.cancel() { cancelCommand(id) }
        }
    }

    private func cancelCommand(_ id: UInt64) {
        if let completion = machine.withLockedValue({ $0.cancel(id) }) { resume(completion) }
    }

    /// Ties a queued command's id to its task's cancellation, whichever comes first.
    private final class CommandHandle: Sendable {
        private let state = NIOLockedValueBox<(id: UInt64?, cancelled: Bool)>((nil, false))

        /// The task was cancelled: the id to cancel, if the command is queued already.
        func cancel() -> UInt64? {
            state.withLockedValue { state in
                state.cancelled = true
                return state.id
            }
        }

        /// The command was queued as `id`; true when the task was cancelled before.
        func enqueued(_ id: UInt64) -> Bool {
            state.withLockedValue { state in
                state.id = id
                return state.cancelled
            }
        }
    }

    private func perform(_ actions: Machine.Actions) {
        for error in actions.dropped {
            droppedCommands.increment()
            logger.error("dropped a command that can never succeed", metadata: ["error": "\(error)"])
        }
        for completion in actions.completions { resume(completion) }
        if actions.wakeThread { wakeup.signal() }
    }

    private func resume(_ completion: Machine.Completion) {
        completion.waiter.resume(completion.outcome, label: label)
    }

    // MARK: The connection thread

    private func runThread() {
        var live: LibRabbitMQConnection? = nil
        while !machine.withLockedValue({ $0.isClosing }) {
            guard let connection = live else {
                live = connect()
                if live == nil { waitBeforeReconnecting() }
                continue
            }
            do {
                try runQueuedCommands(on: connection)
                // Each read also sends a heartbeat when one is due, and fails with "heartbeat
                // timeout" once the broker has been silent for two heartbeat intervals.
                while let frame = try connection.readFrame() { try handle(frame) }
                connection.releaseBuffersIfIdle()
                if !connection.hasBufferedInput {
                    wakeup.wait(socket: connection.socketDescriptor, timeout: idlePollInterval)
                }
            } catch {
                live = nil
                connectionLost(error)
            }
        }
        live?.closeGracefully()
        recordConnected(to: nil)
        deliveryContinuation.finish()
        logger.info("closed the broker connection")
        for completion in machine.withLockedValue({ $0.threadFinished() }) { resume(completion) }
    }

    /// How long the thread sleeps in `poll(2)` when nothing happens; bounded so that heartbeats are
    /// sent and missed ones detected in time.
    private var idlePollInterval: Duration {
        let heartbeat = configuration.heartbeatSeconds
        return heartbeat > 0 ? min(.seconds(1), .milliseconds(heartbeat * 250)) : .seconds(1)
    }

    private func connect() -> LibRabbitMQConnection? {
        let endpoints = configuration.endpoints
        let (endpointIndex, topology, failedAttempts) = machine.withLockedValue { ($0.endpointIndex, $0.topology, $0.failedAttempts) }
        let endpoint = endpoints[endpointIndex % endpoints.count]
        do {
            let live = try LibRabbitMQConnection(endpoint: endpoint, configuration: configuration)
            for item in topology {
                do {
                    try live.apply(item)
                } catch {
                    logger.warning("declaring the topology again after connecting failed", metadata: ["item": "\(item)", "error": "\(error)"])
                    throw error
                }
            }
            switch machine.withLockedValue({ $0.connected() }) {
            case .closeIt:
                live.closeGracefully()
                return nil
            case .use(let generation, let completions):
                recordConnected(to: endpoint)
                if generation > 1 { reconnects.increment() }
                if failedAttempts > 0 || generation > 1 {
                    logger.notice("reconnected to the broker", metadata: ["endpoint": "\(endpoint)", "generation": "\(generation)", "failed_attempts": "\(failedAttempts)"])
                } else {
                    logger.info("connected to the broker", metadata: ["endpoint": "\(endpoint)"])
                }
                for completion in completions { resume(completion) }
                return live
            }
        } catch {
            let attempt = machine.withLockedValue { $0.connectFailed() }
            logger.warning("could not connect to the broker", metadata: ["endpoint": "\(endpoint)", "error": "\(error)", "attempt": "\(attempt)"])
            return nil
        }
    }

    private func recordConnected(to endpoint: AMQPEndpoint?) {
        for (node, gauge) in connectedGauges { gauge.record(node == endpoint?.node ? 1 : 0) }
    }

    private func waitBeforeReconnecting() {
        let attempts = machine.withLockedValue { $0.failedAttempts }
        let delay = configuration.reconnect.delay(beforeAttempt: attempts, random: Double.random(in: 0...1))
        logger.debug("waiting before reconnecting", metadata: ["delay_seconds": "\(delay.seconds)"])
        let deadline = ContinuousClock.now + delay
        while !machine.withLockedValue({ $0.isClosing }), ContinuousClock.now < deadline {
            _ = wakeup.wait(socket: nil, timeout: min(ContinuousClock.now.duration(to: deadline), .milliseconds(500)))
        }
    }

    private func connectionLost(_ error: any Error) {
        logger.warning("lost the connection to the broker; reconnecting", metadata: ["error": "\(error)"])
        recordConnected(to: nil)
        for completion in machine.withLockedValue({ $0.connectionLost() }) { resume(completion) }
    }

    private func runQueuedCommands(on live: LibRabbitMQConnection) throws {
        let commands = machine.withLockedValue { $0.takeCommands() }
        for (index, command) in commands.enumerated() {
            let result = run(command, on: live)
            var unrun: [Machine.Command] = []
            if case .succeeded = result {} else { unrun = Array(commands[(index + 1)...]) }
            let actions = machine.withLockedValue { $0.commandRan(command, result, unrun: unrun) }
            perform(actions)
            if actions.dropConnection {
                throw AMQPError(.connectionLost, "the connection cannot go on after a failed command")
            }
        }
    }

    private func run(_ command: Machine.Command, on live: LibRabbitMQConnection) -> Machine.RunResult {
        do {
            switch command.operation {
            case .topology(let item):
                try live.apply(item)
                return .succeeded(publishTag: nil)
            case .cancelConsumer(let tag):
                try live.cancelConsumer(tag: tag)
                return .succeeded(publishTag: nil)
            case .publish(let message):
                return .succeeded(publishTag: try live.publish(message))
            case .settle(let settlement):
                switch settlement.kind {
                case .ack: try live.ack(deliveryTag: settlement.deliveryTag)
                case .reject(let requeue): try live.reject(deliveryTag: settlement.deliveryTag, requeue: requeue)
                case .nack(let requeue): try live.nack(deliveryTag: settlement.deliveryTag, requeue: requeue)
                }
                return .succeeded(publishTag: nil)
            }
        } catch let error as AMQPError {
            if error.replyCode != nil { return .refusedByBroker(error) }
            if error.code == .invalidArgument { return .invalid(error) }
            return .connectionBroke(error)
        } catch {
            return .connectionBroke(AMQPError(.connectionLost, "\(error)"))
        }
    }

    private func handle(_ frame: IncomingFrame) throws {
        switch frame {
        case .delivery(var delivery):
            delivery.connectionGeneration = generation
            deliveryContinuation.yield(delivery)
        case .returned(let returned):
            let matched = machine.withLockedValue {
                $0.publishReturned(exchange: returned.exchange, routingKey: returned.routingKey, body: returned.body,
                                   replyCode: returned.replyCode, replyText: returned.replyText)
            }
            if !matched {
                logger.warning("the broker returned a message that is not pending", metadata: ["routing_key": "\(returned.routingKey)"])
            }
        case .publishAcknowledged(let tag, let multiple):
            for completion in machine.withLockedValue({ $0.publishConfirmed(tag: tag, multiple: multiple, rejected: false) }) { resume(completion) }
        case .publishRejected(let tag, let multiple):
            for completion in machine.withLockedValue({ $0.publishConfirmed(tag: tag, multiple: multiple, rejected: true) }) { resume(completion) }
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

/// Whoever waits for a command of an ``AMQPConnection``.
private enum Waiter: Sendable {
    case void(CheckedContinuation<Void, any Error>)
    case publish(CheckedContinuation<AMQPPublishOutcome, any Error>)
    /// Settlements cannot fail: a delivery of a lost connection is requeued by the broker.
    case settle(CheckedContinuation<Void, Never>)
    /// `close()`.
    case signal(CheckedContinuation<Void, Never>)

    func resume(_ outcome: AMQPConnectionStateMachine<Waiter>.Outcome, label: String) {
        switch (self, outcome) {
        case (.settle(let continuation), _), (.signal(let continuation), _):
            continuation.resume()
        case (.void(let continuation), .done), (.void(let continuation), .published):
            continuation.resume()
        case (.publish(let continuation), .published(let result)):
            continuation.resume(returning: result)
        case (.publish(let continuation), .done):
            continuation.resume(returning: .sent)
        case (.void(let continuation), .failed(let error)):
            continuation.resume(throwing: Self.labelled(error, label))
        case (.publish(let continuation), .failed(let error)):
            continuation.resume(throwing: Self.labelled(error, label))
        case (.void(let continuation), .cancelled):
            continuation.resume(throwing: CancellationError())
        case (.publish(let continuation), .cancelled):
            continuation.resume(throwing: CancellationError())
        }
    }

    /// "the connection is closed" names which connection.
    private static func labelled(_ error: AMQPError, _ label: String) -> AMQPError {
        guard error.code == .closed else { return error }
        return AMQPError(.closed, "the \(label) connection is closed")
    }
}
