import AMQPModel

/// What the server knows about how a request arrived.
public struct RequestDelivery: Sendable, Hashable {
    /// The broker delivered this message before.
    public var redelivered: Bool
    /// How many times the broker delivered it before (quorum queues' `x-delivery-count`), if known.
    public var previousDeliveries: Int?
    /// The routing key it was published with (`ironic.image_worker`, `…<host>`, `…_fanout`).
    public var routingKey: String

    /// The run number from the request journal, when the server keeps one: how many times this
    /// request was started, this run included.
    public var journalAttempt: Int?

    /// The attempt number of this delivery: 1 for the first.
    public var attempt: Int {
        let broker = previousDeliveries.map { $0 + 1 } ?? (redelivered ? 2 : 1)
        return max(broker, journalAttempt ?? 1)
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
///
/// The endpoint computes outcomes; the server makes them durable: it records each in the request
/// journal, publishes its notification (confirmed by the broker), replies, and only then
/// acknowledges the request.
public protocol RPCEndpoint: Sendable {
    /// The API version served; requests with the same major and a minor not above it are accepted.
    var version: RPCVersion { get }

    /// The method names served. Names starting with `_` are never dispatched (oslo's default
    /// access policy).
    var methods: Set<String> { get }

    /// Runs a method and returns its outcome. Throwing means the work was cancelled or could not
    /// finish here (the request is then requeued, not acknowledged).
    func dispatch(_ request: RPCRequest, delivery: RequestDelivery) async throws -> RPCOutcome

    /// The notification reporting a refused request (an error event), if the endpoint sends one.
    func refused(_ refusal: RPCRefusal, delivery: RequestDelivery) -> OsloNotification?

    /// The outcome of a request given up on: it was started `attempts` times and never finished
    /// (each run killed its worker, or the broker's delivery limit is reached).
    func gaveUp(_ request: RPCRequest, attempts: Int, delivery: RequestDelivery) -> RPCOutcome
}
