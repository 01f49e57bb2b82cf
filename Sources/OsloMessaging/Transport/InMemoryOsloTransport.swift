import AMQPModel
import NIOConcurrencyHelpers

/// An oslo transport in memory, for tests of the server and the worker: tests hand it request
/// bodies and read back what the server did with them (acks, rejects, replies, notifications).
public final class InMemoryOsloTransport: OsloTransport {
    /// Something the server did through the transport.
    public enum Event: Sendable {
        case acknowledged(deliveryTag: UInt64)
        case rejected(deliveryTag: UInt64, requeue: Bool)
        case reply(RPCReply, replyQueue: String)
        case notification(OsloNotification)
        case deadLettered(deliveryTag: UInt64, reason: DeadLetterReason)
    }

    public let requests: AsyncStream<AMQPDelivery>
    /// Everything the server did, in order.
    public let events: AsyncStream<Event>

    private let requestContinuation: AsyncStream<AMQPDelivery>.Continuation
    private let eventContinuation: AsyncStream<Event>.Continuation
    private let state = NIOLockedValueBox(State())

    private struct State {
        var nextTag: UInt64 = 1
        var consuming = false
        var goneReplyQueues: Set<String> = []
        var connectionGeneration: UInt64 = 1
    }

    /// Whether ``deadLetter(_:reason:)`` has an exchange to send to.
    public let hasDeadLetterExchange: Bool

    /// Creates an empty transport.
    public init(hasDeadLetterExchange: Bool = false) {
        self.hasDeadLetterExchange = hasDeadLetterExchange
        (requests, requestContinuation) = AsyncStream.makeStream(of: AMQPDelivery.self)
        (events, eventContinuation) = AsyncStream.makeStream(of: Event.self)
    }

    /// Delivers a request body to the server; returns its delivery tag.
    @discardableResult
    public func deliver(body: [UInt8], contentType: String? = "application/json", redelivered: Bool = false, headers: AMQPTable? = nil,
                        exchange: String = "ironic") -> UInt64 {
        let (tag, generation) = state.withLockedValue { state -> (UInt64, UInt64) in
            defer { state.nextTag += 1 }
            return (state.nextTag, state.connectionGeneration)
        }
        var properties = AMQPMessageProperties.oslo()
        properties.contentType = contentType
        properties.headers = headers
        requestContinuation.yield(AMQPDelivery(body: body, properties: properties, exchange: exchange, routingKey: "memory",
                                               consumerTag: "memory", deliveryTag: tag, redelivered: redelivered, connectionGeneration: generation))
        return tag
    }

    /// Delivers a request.
    @discardableResult
    public func deliver(_ request: RPCRequest) -> UInt64 {
        deliver(body: request.encodedBody())
    }

    /// Makes replies to `replyQueue` fail as if the caller were gone.
    public func markReplyQueueGone(_ replyQueue: String) {
        _ = state.withLockedValue { $0.goneReplyQueues.insert(replyQueue) }
    }

    /// Acts as if the connection had dropped and come back: deliveries made before cannot be
    /// settled any more (``canSettle(_:)`` is false for them).
    public func reconnect() {
        state.withLockedValue { $0.connectionGeneration += 1 }
    }

    /// Ends the request stream (as a closed connection would) and, once what was recorded has
    /// been read, the event stream.
    public func finish() {
        requestContinuation.finish()
        eventContinuation.finish()
    }

    public func startConsuming() async throws {
        state.withLockedValue { $0.consuming = true }
    }

    public func stopConsuming() async {
        state.withLockedValue { $0.consuming = false }
    }

    public var isConsuming: Bool { state.withLockedValue { $0.consuming } }

    public func acknowledge(_ delivery: AMQPDelivery) async {
        eventContinuation.yield(.acknowledged(deliveryTag: delivery.deliveryTag))
    }

    public func waitUntilReadyToPublish() async throws {}

    public func canSettle(_ delivery: AMQPDelivery) -> Bool {
        state.withLockedValue { $0.connectionGeneration == delivery.connectionGeneration }
    }

    public func reject(_ delivery: AMQPDelivery, requeue: Bool) async {
        eventContinuation.yield(.rejected(deliveryTag: delivery.deliveryTag, requeue: requeue))
    }

    public func sendReply(_ reply: RPCReply, to replyQueue: String) async throws -> Bool {
        if state.withLockedValue({ $0.goneReplyQueues.contains(replyQueue) }) { return false }
        eventContinuation.yield(.reply(reply, replyQueue: replyQueue))
        return true
    }

    public func sendNotification(_ notification: OsloNotification) async throws {
        eventContinuation.yield(.notification(notification))
    }

    public func deadLetter(_ delivery: AMQPDelivery, reason: DeadLetterReason) async throws -> Bool {
        guard hasDeadLetterExchange else { return false }
        eventContinuation.yield(.deadLettered(deliveryTag: delivery.deliveryTag, reason: reason))
        return true
    }
}
