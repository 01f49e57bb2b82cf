import AMQPModel

/// What an RPC server needs from the message broker: a stream of requests, settling them, and
/// publishing replies and notifications. ``AMQPOsloTransport`` is the real one;
/// ``InMemoryOsloTransport`` lets the server and the worker be tested without a broker.
public protocol OsloTransport: Sendable {
    /// Requests from the server's queues. Each must be settled with ``acknowledge(_:)`` or
    /// ``reject(_:requeue:)``.
    var requests: AsyncStream<AMQPDelivery> { get }

    /// Declares the server's queues (as an oslo RPC server does) and starts consuming them.
    /// Throws when the broker refuses a declaration (PRECONDITION_FAILED, …).
    func startConsuming() async throws

    /// Stops taking new requests; those already delivered still arrive and must be settled.
    func stopConsuming() async

    /// The request is done with.
    func acknowledge(_ delivery: AMQPDelivery) async

    /// Waits until notifications can be published right away (the publisher is connected), so
    /// that the time between deciding to publish an outcome and its confirm stays short.
    func waitUntilReadyToPublish() async throws

    /// Whether `delivery` can still be settled: false once the connection that received it is
    /// gone, when the broker has put it back in its queue and will deliver it again.
    func canSettle(_ delivery: AMQPDelivery) -> Bool

    /// The request is refused: requeued, or (without requeue) dead-lettered if the queue has a
    /// dead-letter exchange, dropped otherwise.
    func reject(_ delivery: AMQPDelivery, requeue: Bool) async

    /// Sends a reply to a caller's reply queue (default exchange, mandatory). Returns `false`
    /// when no such queue exists any more (the caller is gone).
    func sendReply(_ reply: RPCReply, to replyQueue: String) async throws -> Bool

    /// Publishes a notification on every configured notification topic, declaring each
    /// `<topic>.<priority>` queue first as oslo does, and waits for the broker's confirms.
    func sendNotification(_ notification: OsloNotification) async throws

    /// Copies a request to the dead-letter exchange, if one is configured, with `reason` in its
    /// headers, and waits for the broker's confirm. Returns `false` when there is none. The
    /// caller then acknowledges the original.
    func deadLetter(_ delivery: AMQPDelivery, reason: DeadLetterReason) async throws -> Bool

    /// Whether the transport is connected and consuming (for readiness checks).
    var isConsuming: Bool { get }
}

/// Why a request was dead-lettered; goes into the copy's headers.
public struct DeadLetterReason: Sendable, Hashable {
    /// The error code (`InvalidParameterValue`, …).
    public var code: String
    /// What was wrong.
    public var message: String

    /// Creates a reason.
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}
