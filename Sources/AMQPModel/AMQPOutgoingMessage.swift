/// A message to publish.
public struct AMQPOutgoingMessage: Sendable, Hashable {
    /// The exchange; `""` is the default exchange, which routes by queue name.
    public var exchange: String
    public var routingKey: String
    public var body: [UInt8]
    public var properties: AMQPMessageProperties
    /// Ask the broker to return the message (`basic.return`) when no queue takes it.
    public var mandatory: Bool

    /// Creates a message to publish.
    public init(
        exchange: String,
        routingKey: String,
        body: [UInt8],
        properties: AMQPMessageProperties = AMQPMessageProperties(),
        mandatory: Bool = false
    ) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
    }
}

/// What became of a published message.
public enum AMQPPublishOutcome: Sendable, Hashable {
    /// The broker confirmed it (`basic.ack` in confirm mode).
    case confirmed
    /// The broker could not route a mandatory message and returned it; it reached no queue.
    case returned(replyCode: UInt16, replyText: String)
    /// Sent on a connection without publisher confirms; nothing is known beyond that.
    case sent
}
