import AMQPClient
import AMQPModel
import OsloMessaging
import Logging
import NIOConcurrencyHelpers

/// The oslo transport over RabbitMQ: a consumer connection for requests and a publisher
/// connection (in confirm mode) for replies and notifications, as oslo keeps listening and
/// sending apart (a broker that blocks publishers then never stalls consuming and acking).
public final class AMQPOsloTransport: OsloTransport {
    /// The RPC server's queues and flags.
    public let topology: RPCServerTopology
    /// `[oslo_messaging_notifications] topics`.
    public let notificationTopics: [String]
    /// The number of unacknowledged requests the broker may hand this process.
    public let prefetch: UInt16
    /// How long to keep trying a reply whose queue does not exist (oslo: 60 s), for a caller that
    /// is declaring it again after a reconnect.
    public let replyRetryDuration: Duration
    /// Where malformed and given-up requests are copied, if anywhere.
    public let deadLetterQueue: DeadLetterQueue?

    private let consumer: AMQPConnection
    private let publisher: AMQPConnection
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var declaredNotificationKeys: Set<String> = []
        var consumerTags: [String] = []
    }

    /// Creates the transport; ``start()`` opens the connections.
    public init(configuration: AMQPConfiguration, topology: RPCServerTopology, notificationTopics: [String], prefetch: UInt16,
                deadLetterQueue: DeadLetterQueue? = nil, replyRetryDuration: Duration = .seconds(60), logger: Logger) {
        self.deadLetterQueue = deadLetterQueue
        self.topology = topology
        self.notificationTopics = notificationTopics
        self.prefetch = prefetch
        self.replyRetryDuration = replyRetryDuration
        self.logger = logger
        var consumerConfiguration = configuration
        consumerConfiguration.publisherConfirms = false
        consumerConfiguration.connectionName = "\(configuration.connectionName):consumer"
        var publisherConfiguration = configuration
        publisherConfiguration.publisherConfirms = true
        publisherConfiguration.connectionName = "\(configuration.connectionName):publisher"
        consumer = AMQPConnection(configuration: consumerConfiguration, label: "consumer", logger: logger)
        publisher = AMQPConnection(configuration: publisherConfiguration, label: "publisher", logger: logger)
    }

    /// Starts both connections (they connect and reconnect in the background).
    public func start() {
        consumer.start()
        publisher.start()
    }

    /// Closes both connections; unacknowledged requests go back to their queues.
    public func close() async {
        await consumer.close()
        await publisher.close()
    }

    public var requests: AsyncStream<AMQPDelivery> { consumer.deliveries }

    public var isConsuming: Bool { readiness.ready }

    /// Whether requests can be taken and outcomes published now, and if not, why (for `/readyz`).
    public var readiness: (ready: Bool, reason: String) {
        if !consumer.isConnected { return (false, "the consumer connection to the broker is down") }
        if !publisher.isConnected { return (false, "the publisher connection to the broker is down") }
        if state.withLockedValue({ $0.consumerTags.isEmpty }) { return (false, "not consuming (starting, or shutting down)") }
        return (true, "consuming")
    }

    public func startConsuming() async throws {
        for exchange in topology.exchanges { try await consumer.declareExchange(exchange) }
        for queue in topology.queues { try await consumer.declareQueue(queue) }
        for binding in topology.bindings { try await consumer.bindQueue(binding) }
        if let deadLetterQueue {
            try await consumer.declareExchange(deadLetterQueue.exchange)
            try await consumer.declareQueue(deadLetterQueue.queue)
            try await consumer.bindQueue(deadLetterQueue.binding)
        }
        // basic.qos counts per consumer, so the work queue gets the prefetch and the per-worker
        // and fanout queues one each: the process never holds much more than it can run.
        var tags: [String] = []
        for (queue, count) in zip(topology.consumedQueues, [prefetch, 1, 1]) {
            try await consumer.setPrefetch(count)
            tags.append(try await consumer.consume(queue: queue, consumerTag: "image-worker:\(queue)"))
        }
        state.withLockedValue { $0.consumerTags = tags }
        logger.info("consuming requests", metadata: [
            "queues": "\(topology.consumedQueues.joined(separator: ", "))", "exchange": "\(topology.exchange)", "prefetch": "\(prefetch)",
        ])
    }

    public func stopConsuming() async {
        let tags = state.withLockedValue { state -> [String] in
            defer { state.consumerTags = [] }
            return state.consumerTags
        }
        for tag in tags {
            do {
                try await consumer.cancel(consumerTag: tag)
            } catch {
                logger.debug("could not cancel a consumer", metadata: ["tag": "\(tag)", "error": "\(error)"])
            }
        }
    }

    public func acknowledge(_ delivery: AMQPDelivery) async {
        await consumer.ack(delivery)
    }

    public func waitUntilReadyToPublish() async throws {
        try await publisher.waitUntilConnected()
    }

    public func canSettle(_ delivery: AMQPDelivery) -> Bool {
        consumer.canSettle(delivery)
    }

    public func reject(_ delivery: AMQPDelivery, requeue: Bool) async {
        await consumer.reject(delivery, requeue: requeue)
    }

    public func sendReply(_ reply: RPCReply, to replyQueue: String) async throws -> Bool {
        let message = AMQPOutgoingMessage(exchange: "", routingKey: replyQueue, body: reply.encodedBody(), properties: .oslo(), mandatory: true)
        // As oslo: a final reply whose queue is missing is tried again for a while (the caller may
        // be declaring it again after a reconnect); a heartbeat is not.
        let deadline = ContinuousClock.now + (reply.ending ? replyRetryDuration : .zero)
        while true {
            switch try await publisher.publish(message) {
            case .confirmed, .sent:
                return true
            case .returned(let code, let text):
                guard ContinuousClock.now < deadline else {
                    logger.warning("the caller's reply queue is gone; the reply was dropped", metadata: [
                        "reply_queue": "\(replyQueue)", "reply_code": "\(code)", "reply_text": "\(text)",
                    ])
                    return false
                }
                try await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    public func sendNotification(_ notification: OsloNotification) async throws {
        let body = notification.encodedBody()
        for topic in notificationTopics {
            let routingKey = notification.routingKey(topic: topic)
            try await declareNotificationQueue(routingKey)
            let message = AMQPOutgoingMessage(exchange: topology.exchange, routingKey: routingKey, body: body, properties: .oslo())
            _ = try await publisher.publish(message)
        }
    }

    public func deadLetter(_ delivery: AMQPDelivery, reason: DeadLetterReason) async throws -> Bool {
        guard let deadLetterQueue else { return false }
        if case .returned(let code, let text) = try await publisher.publish(deadLetterQueue.message(for: delivery, reason: reason)) {
            throw AMQPError(.publishNacked, "the dead-letter exchange \(deadLetterQueue.name) routed the message nowhere: \(code) \(text)")
        }
        return true
    }

    /// oslo declares the `<topic>.<priority>` queue and binds it before it publishes there, so
    /// that notifications are kept until a listener comes.
    private func declareNotificationQueue(_ routingKey: String) async throws {
        guard !state.withLockedValue({ $0.declaredNotificationKeys.contains(routingKey) }) else { return }
        let options = topology.options
        try await publisher.declareExchange(options.controlExchange(topology.exchange))
        try await publisher.declareQueue(options.topicQueue(routingKey))
        try await publisher.bindQueue(AMQPQueueBinding(queue: routingKey, exchange: topology.exchange, routingKey: routingKey))
        _ = state.withLockedValue { $0.declaredNotificationKeys.insert(routingKey) }
    }
}
