import Primitives
import OsloJSON
import AMQPClient
import AMQPModel
import OsloMessaging
import Logging
import NIOConcurrencyHelpers

/// An oslo.messaging RPC client over an ``AMQPConnection``: casts and calls exactly as
/// `oslo_messaging.RPCClient` puts them on the wire (a conductor in a command, for the CLI, the
/// tests and the benchmarks).
///
/// Use it inside ``withClient(connection:exchange:options:logger:_:)``, which runs the reader of
/// the reply queue for as long as the body runs.
public final class RPCClient: Sendable {
    /// A call got no final reply in time (oslo's `MessagingTimeout`).
    public struct TimeoutError: Error, Sendable, CustomStringConvertible {
        public var method: String
        public var timeout: Duration
        public var description: String { "Timed out waiting for a reply to \(method) after \(timeout.components.seconds) s" }
    }

    private let connection: AMQPConnection
    private let exchange: String
    private let options: RPCServerTopology.Options
    private let replyQueue: String
    private let logger: Logger
    private let pendingCalls = NIOLockedValueBox([String: PendingCall]())

    /// A call's slot: registered before the request is published, so that a reply arriving
    /// before the caller waits is kept.
    private enum PendingCall {
        case waiting(CheckedContinuation<RPCReply, any Error>?)
        case replied(RPCReply)
    }

    private init(connection: AMQPConnection, exchange: String, options: RPCServerTopology.Options, logger: Logger) {
        self.connection = connection
        self.exchange = exchange
        self.options = options
        self.replyQueue = "reply_\(OsloIdentifiers.uuid4Hex())"
        self.logger = logger
    }

    /// Runs `body` with a client on `connection` (which must be started), reading replies
    /// meanwhile.
    public static func withClient<Result: Sendable>(
        connection: AMQPConnection, exchange: String, options: RPCServerTopology.Options = .init(), logger: Logger,
        _ body: @escaping @Sendable (RPCClient) async throws -> Result
    ) async throws -> Result {
        let client = RPCClient(connection: connection, exchange: exchange, options: options, logger: logger)
        try await connection.declareExchange(options.controlExchange(exchange))
        try await connection.declareQueue(AMQPQueueDeclaration(name: client.replyQueue, arguments: ["x-expires": .int32(RPCServerTopology.fanoutQueueExpiryMilliseconds)]))
        try await connection.consume(queue: client.replyQueue)
        return try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask {
                await client.readReplies()
                return nil
            }
            group.addTask { try await body(client) }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let next { return next }
            }
            throw AMQPError(.closed, "the connection closed before the client finished")
        }
    }

    private func readReplies() async {
        for await delivery in connection.deliveries {
            await connection.ack(delivery)
            guard delivery.routingKey == replyQueue, let reply = try? RPCReply.decode(body: delivery.body) else { continue }
            let isHeartbeat = !reply.ending && reply.result.isNull && reply.failure == nil
            guard !isHeartbeat else { continue }
            let continuation = pendingCalls.withLockedValue { calls -> CheckedContinuation<RPCReply, any Error>? in
                guard case .waiting(let continuation) = calls[reply.messageID] else { return nil }
                if let continuation {
                    calls[reply.messageID] = nil
                    return continuation
                }
                calls[reply.messageID] = .replied(reply)
                return nil
            }
            continuation?.resume(returning: reply)
        }
    }

    /// Sends a cast to `topic` (or to `topic.server`, or to every server with `fanout`).
    public func cast(_ method: String, args: JSONObject, topic: String, server: String? = nil, fanout: Bool = false,
                     version: RPCVersion = RPCVersion(major: 1, minor: 0), context: RPCContext = RPCContext()) async throws {
        let request = RPCRequest(method: method, args: args, version: version, uniqueID: OsloIdentifiers.uuid4Hex(), context: context)
        try await publish(request, topic: topic, server: server, fanout: fanout, expiration: nil)
    }

    /// Sends a call and waits for its result; throws the remote failure, or ``TimeoutError``.
    public func call(_ method: String, args: JSONObject, topic: String, server: String? = nil, timeout: Duration = .seconds(60),
                     callMonitorTimeout: Int? = nil, version: RPCVersion = RPCVersion(major: 1, minor: 0),
                     context: RPCContext = RPCContext()) async throws -> JSONValue {
        let messageID = OsloIdentifiers.uuid4Hex()
        let request = RPCRequest(method: method, args: args, version: version, messageID: messageID, replyQueue: replyQueue,
                                 callMonitorTimeout: callMonitorTimeout.map(Double.init), uniqueID: OsloIdentifiers.uuid4Hex(), context: context)
        let milliseconds = timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000
        pendingCalls.withLockedValue { $0[messageID] = .waiting(nil) }
        do {
            try await publish(request, topic: topic, server: server, fanout: false, expiration: String(milliseconds))
        } catch {
            _ = pendingCalls.withLockedValue { $0.removeValue(forKey: messageID) }
            throw error
        }
        let reply = try await withThrowingTaskGroup(of: RPCReply?.self) { group in
            group.addTask { try await self.waitForReply(messageID) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            if let reply = try await group.next() ?? nil { return reply }
            let pending = pendingCalls.withLockedValue { $0.removeValue(forKey: messageID) }
            if case .waiting(let continuation?) = pending {
                continuation.resume(throwing: TimeoutError(method: method, timeout: timeout))
            }
            throw TimeoutError(method: method, timeout: timeout)
        }
        if let failure = reply.failure { throw failure }
        return reply.result
    }

    private func waitForReply(_ messageID: String) async throws -> RPCReply {
        try await withCheckedThrowingContinuation { continuation in
            let early = pendingCalls.withLockedValue { calls -> Result<RPCReply, any Error>? in
                switch calls[messageID] {
                case .replied(let reply):
                    calls[messageID] = nil
                    return .success(reply)
                case .waiting:
                    calls[messageID] = .waiting(continuation)
                    return nil
                case nil:
                    return .failure(CancellationError())  // timed out before we got here
                }
            }
            if let early { continuation.resume(with: early) }
        }
    }

    private func publish(_ request: RPCRequest, topic: String, server: String?, fanout: Bool, expiration: String?) async throws {
        let message: AMQPOutgoingMessage
        if fanout {
            let fanoutExchange = "\(topic)_fanout"
            try await connection.declareExchange(AMQPExchangeDeclaration(name: fanoutExchange, type: .fanout, durable: false, autoDelete: true))
            message = AMQPOutgoingMessage(exchange: fanoutExchange, routingKey: "", body: request.encodedBody(), properties: .oslo(expiration: expiration))
        } else {
            let routingKey = server.map { "\(topic).\($0)" } ?? topic
            message = AMQPOutgoingMessage(exchange: exchange, routingKey: routingKey, body: request.encodedBody(), properties: .oslo(expiration: expiration))
        }
        _ = try await connection.publish(message)
    }
}
