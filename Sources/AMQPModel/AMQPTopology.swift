/// The type of an exchange.
public enum AMQPExchangeType: String, Sendable, Hashable {
    case direct, topic, fanout, headers
}

/// An `exchange.declare`.
public struct AMQPExchangeDeclaration: Sendable, Hashable {
    public var name: String
    public var type: AMQPExchangeType
    public var durable: Bool
    public var autoDelete: Bool
    public var arguments: AMQPTable

    /// Creates an exchange declaration.
    public init(name: String, type: AMQPExchangeType, durable: Bool = false, autoDelete: Bool = false, arguments: AMQPTable = [:]) {
        self.name = name
        self.type = type
        self.durable = durable
        self.autoDelete = autoDelete
        self.arguments = arguments
    }
}

/// A `queue.declare`.
public struct AMQPQueueDeclaration: Sendable, Hashable {
    public var name: String
    public var durable: Bool
    public var exclusive: Bool
    public var autoDelete: Bool
    public var arguments: AMQPTable

    /// Creates a queue declaration.
    public init(name: String, durable: Bool = false, exclusive: Bool = false, autoDelete: Bool = false, arguments: AMQPTable = [:]) {
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.autoDelete = autoDelete
        self.arguments = arguments
    }
}

/// A `queue.bind`.
public struct AMQPQueueBinding: Sendable, Hashable {
    public var queue: String
    public var exchange: String
    public var routingKey: String
    public var arguments: AMQPTable

    /// Creates a binding.
    public init(queue: String, exchange: String, routingKey: String, arguments: AMQPTable = [:]) {
        self.queue = queue
        self.exchange = exchange
        self.routingKey = routingKey
        self.arguments = arguments
    }
}

/// Something the connection declares, and declares again after every reconnect.
public enum AMQPTopologyItem: Sendable, Hashable {
    case exchange(AMQPExchangeDeclaration)
    case queue(AMQPQueueDeclaration)
    case binding(AMQPQueueBinding)
    case qos(prefetchCount: UInt16)
    case consumer(queue: String, tag: String)
}
