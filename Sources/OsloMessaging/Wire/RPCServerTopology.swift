import AMQPModel

/// The exchanges, queues and bindings an oslo.messaging RPC server declares for
/// `Target(topic:server:)` on a control exchange, with the same flags, so that the worker and real
/// oslo peers can declare side by side without PRECONDITION_FAILED (oslo-wire.md §1.1):
///
/// 1. topic exchange `<exchange>`; queue `<topic>` bound with `<topic>`
/// 2. queue `<topic>.<server>` bound with `<topic>.<server>`
/// 3. fanout exchange `<topic>_fanout` (auto-delete) and queue `<topic>_fanout_<hex>`
///    (`x-expires` 1800000 as int32) bound with `<topic>`
public struct RPCServerTopology: Sendable, Hashable {
    /// The options that decide the flags, named as oslo's `[oslo_messaging_rabbit]` options.
    public struct Options: Sendable, Hashable {
        /// `amqp_durable_queues`.
        public var durableQueues: Bool
        /// `amqp_auto_delete`.
        public var autoDelete: Bool
        /// `rabbit_quorum_queue`.
        public var quorumQueues: Bool
        /// `rabbit_quorum_delivery_limit` (nil or 0: not set).
        public var quorumDeliveryLimit: Int?

        /// Creates options; oslo's defaults are all off.
        public init(durableQueues: Bool = false, autoDelete: Bool = false, quorumQueues: Bool = false, quorumDeliveryLimit: Int? = nil) {
            self.durableQueues = durableQueues
            self.autoDelete = autoDelete
            self.quorumQueues = quorumQueues
            self.quorumDeliveryLimit = quorumDeliveryLimit
        }

        /// oslo: `durable = amqp_durable_queues or rabbit_quorum_queue`.
        public var durable: Bool { durableQueues || quorumQueues }

        /// The arguments of topic and notification queues (`_get_queue_arguments`): quorum type and
        /// delivery limit; never `x-expires`.
        public var queueArguments: AMQPTable {
            guard quorumQueues else { return [:] }
            var table: AMQPTable = ["x-queue-type": .longString("quorum")]
            if let limit = quorumDeliveryLimit, limit > 0 {
                table.entries.append(.init(key: "x-delivery-limit", value: .int32(Int32(clamping: limit))))
            }
            return table
        }

        /// The control exchange as oslo declares it.
        public func controlExchange(_ name: String) -> AMQPExchangeDeclaration {
            AMQPExchangeDeclaration(name: name, type: .topic, durable: durable, autoDelete: autoDelete)
        }

        /// A topic or notification queue as oslo declares it.
        public func topicQueue(_ name: String) -> AMQPQueueDeclaration {
            AMQPQueueDeclaration(name: name, durable: durable, exclusive: false, autoDelete: autoDelete, arguments: queueArguments)
        }
    }

    /// The control exchange (`ironic`).
    public var exchange: String
    /// The topic (`ironic.image_worker`).
    public var topic: String
    /// The server name (the worker's `host`).
    public var server: String
    /// The per-process suffix of the fanout queue (`uuid4().hex`).
    public var fanoutQueueSuffix: String
    /// The flags.
    public var options: Options

    /// The fanout queue's `x-expires`, 30 minutes as oslo sets it.
    public static let fanoutQueueExpiryMilliseconds: Int32 = 1_800_000

    /// Creates the topology of one server process.
    public init(exchange: String, topic: String, server: String, options: Options, fanoutQueueSuffix: String = OsloIdentifiers.uuid4Hex()) {
        self.exchange = exchange
        self.topic = topic
        self.server = server
        self.options = options
        self.fanoutQueueSuffix = fanoutQueueSuffix
    }

    /// The shared work queue (competing consumers).
    public var topicQueueName: String { topic }
    /// The queue that targets this server alone.
    public var serverQueueName: String { "\(topic).\(server)" }
    /// The fanout exchange.
    public var fanoutExchangeName: String { "\(topic)_fanout" }
    /// This process's fanout queue.
    public var fanoutQueueName: String { "\(topic)_fanout_\(fanoutQueueSuffix)" }

    /// The declarations, in oslo's order.
    public var exchanges: [AMQPExchangeDeclaration] {
        [options.controlExchange(exchange),
         AMQPExchangeDeclaration(name: fanoutExchangeName, type: .fanout, durable: false, autoDelete: true)]
    }

    /// The queues, in oslo's order.
    public var queues: [AMQPQueueDeclaration] {
        [options.topicQueue(topicQueueName),
         options.topicQueue(serverQueueName),
         AMQPQueueDeclaration(name: fanoutQueueName, durable: false, exclusive: false, autoDelete: false,
                              arguments: ["x-expires": .int32(Self.fanoutQueueExpiryMilliseconds)])]
    }

    /// The bindings, in oslo's order.
    public var bindings: [AMQPQueueBinding] {
        [AMQPQueueBinding(queue: topicQueueName, exchange: exchange, routingKey: topicQueueName),
         AMQPQueueBinding(queue: serverQueueName, exchange: exchange, routingKey: serverQueueName),
         AMQPQueueBinding(queue: fanoutQueueName, exchange: fanoutExchangeName, routingKey: topic)]
    }

    /// The queues to consume from.
    public var consumedQueues: [String] { [topicQueueName, serverQueueName, fanoutQueueName] }
}
