/// A message delivered to one of the connection's consumers.
///
/// Settle it with ``AMQPConnection/ack(_:)``, ``AMQPConnection/reject(_:requeue:)`` or
/// ``AMQPConnection/nack(_:requeue:)``. A delivery belongs to the connection that received it:
/// after a reconnect its tag means nothing, settling it is a no-op, and the broker redelivers it.
public struct AMQPDelivery: Sendable {
    /// The message body.
    public var body: [UInt8]
    /// The message's content properties.
    public var properties: AMQPMessageProperties
    /// The exchange the message was published to.
    public var exchange: String
    /// The routing key it was published with.
    public var routingKey: String
    /// The consumer that received it.
    public var consumerTag: String
    /// The broker's tag for this delivery on its connection.
    public var deliveryTag: UInt64
    /// Whether the broker delivered this message before (to this or another consumer).
    public var redelivered: Bool
    /// Which connection (counted from 1 for each successful connect) received the delivery.
    public var connectionGeneration: UInt64

    /// Creates a delivery (the connection does this; tests and in-memory transports may too).
    public init(
        body: [UInt8],
        properties: AMQPMessageProperties,
        exchange: String,
        routingKey: String,
        consumerTag: String,
        deliveryTag: UInt64,
        redelivered: Bool,
        connectionGeneration: UInt64
    ) {
        self.body = body
        self.properties = properties
        self.exchange = exchange
        self.routingKey = routingKey
        self.consumerTag = consumerTag
        self.deliveryTag = deliveryTag
        self.redelivered = redelivered
        self.connectionGeneration = connectionGeneration
    }
}
