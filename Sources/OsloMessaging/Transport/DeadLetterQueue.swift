import AMQPModel

/// Where requests go that will never succeed (malformed, or given up on after too many attempts)
/// when `[image_worker] dead_letter_exchange` is set: a durable fanout exchange of that name and
/// a durable queue of the same name bound to it (quorum when `rabbit_quorum_queue` is on).
///
/// The worker publishes the copy itself rather than relying on `basic.reject`, so that nothing
/// is dropped on a queue that has no dead-letter policy; a broker policy with the same exchange
/// (`deploy/rabbitmq/definitions.json`) also catches what the broker drops on its own (a quorum
/// queue's delivery limit).
public struct DeadLetterQueue: Sendable, Hashable {
    /// The exchange's name, and the queue's.
    public var name: String
    /// Whether the queue is a quorum queue.
    public var quorum: Bool

    /// Creates the destination.
    public init(name: String, quorum: Bool) {
        self.name = name
        self.quorum = quorum
    }

    /// The exchange.
    public var exchange: AMQPExchangeDeclaration {
        AMQPExchangeDeclaration(name: name, type: .fanout, durable: true, autoDelete: false)
    }

    /// The queue.
    public var queue: AMQPQueueDeclaration {
        AMQPQueueDeclaration(name: name, durable: true, arguments: quorum ? ["x-queue-type": .longString("quorum")] : [:])
    }

    /// The binding (a fanout exchange ignores the key).
    public var binding: AMQPQueueBinding {
        AMQPQueueBinding(queue: name, exchange: name, routingKey: "")
    }

    /// The copy of a request to publish: same body and properties, persistent, with where it came
    /// from and why it is here in its headers.
    public func message(for delivery: AMQPDelivery, reason: DeadLetterReason) -> AMQPOutgoingMessage {
        var properties = delivery.properties
        var headers = properties.headers ?? [:]
        headers.entries.removeAll { $0.key.hasPrefix("x-image-worker-") }
        headers.entries.append(contentsOf: [
            .init(key: "x-image-worker-error-code", value: .longString(reason.code)),
            .init(key: "x-image-worker-error", value: .longString(String(reason.message.prefix(1024)))),
            .init(key: "x-image-worker-original-exchange", value: .longString(delivery.exchange)),
            .init(key: "x-image-worker-original-routing-key", value: .longString(delivery.routingKey)),
        ])
        properties.headers = headers
        properties.deliveryMode = 2
        return AMQPOutgoingMessage(exchange: name, routingKey: delivery.routingKey, body: delivery.body, properties: properties, mandatory: true)
    }
}
