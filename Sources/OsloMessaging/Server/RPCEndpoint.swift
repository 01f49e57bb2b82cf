import AMQP

/// What the server knows about how a request arrived.
public struct RequestDelivery: Sendable, Hashable {
    /// The broker delivered this message before.
    public var redelivered: Bool
    /// How many times the broker delivered it before (quorum queues' `x-delivery-count`), if known.
    public var previousDeliveries: Int?
    /// The routing key it was published with (`ironic.image_worker`, `…<host>`, `…_fanout`).
    public var routingKey: String

    /// The attempt number of this delivery: 1 for the first.
    public var attempt: Int {
        if let previousDeliveries { return previousDeliveries + 1 }
        return redelivered ? 2 : 1
    }

    /// Creates delivery information.
    public init(redelivered: Bool, previousDeliveries: Int?, routingKey: String) {
        self.redelivered = redelivered
        self.previousDeliveries = previousDeliveries
        self.routingKey = routingKey
    }

    /// Reads it off a broker delivery.
    public init(_ delivery: AMQPDelivery) {
        // A header anyone can set: keep it in a sane range.
        let count = delivery.properties.headers?["x-delivery-count"]?.integerValue.map { Int(min(max($0, 0), 1_000_000)) }
        self.init(redelivered: delivery.redelivered, previousDeliveries: count, routingKey: delivery.routingKey)
    }
}

/// A request the server refused before it reached a method, with whatever ids it could read.
public struct RPCRefusal: Sendable, Hashable {
    /// The failure the caller gets.
    public var failure: RemoteFailure
    /// Whether the message itself was malformed (as opposed to naming an unknown method or version).
    public var malformed: Bool
    public var method: String?
    public var messageID: String?
    public var replyQueue: String?
    public var uniqueID: String?
    public var context: RPCContext
    /// `args.node_uuid`, if it was readable.
    public var nodeUUID: String?

    /// Creates a refusal.
    public init(failure: RemoteFailure, malformed: Bool, method: String?, messageID: String?, replyQueue: String?, uniqueID: String?, context: RPCContext, nodeUUID: String?) {
        self.failure = failure
        self.malformed = malformed
        self.method = method
        self.messageID = messageID
        self.replyQueue = replyQueue
        self.uniqueID = uniqueID
        self.context = context
        self.nodeUUID = nodeUUID
    }
}

/// The application behind an ``RPCServer``: the methods it serves and what they do.
public protocol RPCEndpoint: Sendable {
    /// The API version served; requests with the same major and a minor not above it are accepted.
    var version: RPCVersion { get }

    /// The method names served. Names starting with `_` are never dispatched (oslo's default
    /// access policy).
    var methods: Set<String> { get }

    /// Runs a method. Returns its result, or the failure to send back; by the time this returns,
    /// everything the method must make durable (its outcome event) is confirmed, because the
    /// server acknowledges the request next. Throwing means the outcome could not be made durable
    /// (or the work was cancelled): the request is then requeued, not acknowledged.
    func dispatch(_ request: RPCRequest, delivery: RequestDelivery) async throws -> Result<JSONValue, RemoteFailure>

    /// Told about every refused request, so that it can report it (an error event). Throwing means
    /// the report could not be made durable: the request is requeued, not acknowledged.
    func refused(_ refusal: RPCRefusal, delivery: RequestDelivery) async throws
}
