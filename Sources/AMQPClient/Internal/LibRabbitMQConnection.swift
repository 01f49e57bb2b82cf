internal import CRabbitMQ
import AMQPModel

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Something the broker sent that the connection's owner must act on, copied out of C memory.
enum IncomingFrame {
    /// A message for one of our consumers (its `connectionGeneration` is filled in by the owner).
    case delivery(AMQPDelivery)
    /// A mandatory message that no queue took (`basic.return`); its `basic.ack` follows.
    case returned(ReturnedMessage)
    /// Publisher confirm: the broker took the message(s) up to `tag`.
    case publishAcknowledged(tag: UInt64, multiple: Bool)
    /// Publisher confirm: the broker refused the message(s) up to `tag`.
    case publishRejected(tag: UInt64, multiple: Bool)
    /// The broker cancelled one of our consumers (its queue was deleted, for instance).
    case consumerCancelled(tag: String)
    /// The broker stopped reading from publishers (resource alarm).
    case blocked(reason: String)
    /// The broker reads from publishers again.
    case unblocked
}

/// A message the broker returned as unroutable.
struct ReturnedMessage {
    var replyCode: UInt16
    var replyText: String
    var exchange: String
    var routingKey: String
    var body: [UInt8]
}

/// One live librabbitmq connection with channel 1 open (and in confirm mode when asked).
///
/// librabbitmq is not thread safe: an instance is created, used and destroyed on its connection
/// thread only. Every call that can fail goes through ``check(_:_:)`` or ``check(status:_:)``,
/// which turn librabbitmq's results into ``AMQPError``s.
final class LibRabbitMQConnection {
    let endpoint: AMQPEndpoint
    private let state: amqp_connection_state_t
    private let channel: amqp_channel_t = 1
    /// The tag the broker gives the next publish in confirm mode (counted from 1 per channel).
    private(set) var nextPublishTag: UInt64 = 1
    private var connectionClosedByBroker = false

    /// Connects, logs in, opens channel 1 and, when asked, selects publisher confirms.
    init(endpoint: AMQPEndpoint, configuration: AMQPConfiguration) throws {
        guard let state = amqp_new_connection() else {
            throw AMQPError(.connectionFailed, "librabbitmq could not allocate a connection")
        }
        self.endpoint = endpoint
        self.state = state
        // From here on deinit destroys `state`, also when the rest of the setup throws.
        try open(configuration: configuration)
    }

    deinit {
        amqp_destroy_connection(state)
    }

    private func open(configuration: AMQPConfiguration) throws {
        let arena = CMemoryArena()
        defer { withExtendedLifetime(arena) {} }  // C holds pointers into it until here
        let socket: OpaquePointer?
        if endpoint.useTLS {
            socket = amqp_ssl_socket_new(state)
            guard let socket else { throw AMQPError(.connectionFailed, "librabbitmq could not create a TLS socket") }
            let tls = configuration.tls
            if let caFile = tls.caFile {
                try check(status: amqp_ssl_socket_set_cacert(socket, arena.cString(caFile)), "loading ssl_ca_file \(caFile)", code: .connectionFailed)
            }
            if let certificateFile = tls.certificateFile, let keyFile = tls.keyFile {
                try check(status: amqp_ssl_socket_set_key(socket, arena.cString(certificateFile), arena.cString(keyFile)),
                          "loading ssl_cert_file \(certificateFile) and ssl_key_file", code: .connectionFailed)
            }
            amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
            amqp_ssl_socket_set_verify_hostname(socket, tls.verifyHostname ? 1 : 0)
        } else {
            socket = amqp_tcp_socket_new(state)
            guard socket != nil else { throw AMQPError(.connectionFailed, "librabbitmq could not create a TCP socket") }
        }
        var connectTimeout = timeval(configuration.connectTimeout)
        try check(status: amqp_socket_open_noblock(socket, arena.cString(endpoint.host), Int32(endpoint.port), &connectTimeout),
                  "connecting to \(endpoint)", code: .connectionFailed)
        try check(status: amqp_set_handshake_timeout(state, &connectTimeout), "setting the handshake timeout", code: .connectionFailed)
        var rpcTimeout = timeval(configuration.rpcTimeout)
        try check(status: amqp_set_rpc_timeout(state, &rpcTimeout), "setting the RPC timeout", code: .connectionFailed)

        var properties = arena.table([
            "product": .longString("image-worker"),
            "connection_name": .longString(configuration.connectionName),
            "capabilities": .table([
                "authentication_failure_close": .bool(true),
                "consumer_cancel_notify": .bool(true),
                "connection.blocked": .bool(true),
            ]),
        ])
        let login = image_worker_amqp_login_plain(
            state, arena.cString(endpoint.virtualHost), 0, Int32(configuration.frameMax),
            Int32(configuration.heartbeatSeconds), &properties,
            arena.cString(endpoint.username), arena.cString(endpoint.password))
        try check(login, "logging in to \(endpoint)", code: .connectionFailed)
        _ = amqp_channel_open(state, channel)
        try check(amqp_get_rpc_reply(state), "opening a channel on \(endpoint)", code: .connectionFailed)
        if configuration.publisherConfirms {
            _ = amqp_confirm_select(state, channel)
            try check(amqp_get_rpc_reply(state), "selecting publisher confirms", code: .connectionFailed)
        }
    }

    /// The socket, for `poll(2)`.
    var socketDescriptor: Int32 { amqp_get_sockfd(state) }

    /// Whether librabbitmq holds input that `poll(2)` on the socket would not show.
    var hasBufferedInput: Bool {
        amqp_frames_enqueued(state) != 0 || amqp_data_in_buffer(state) != 0
    }

    /// Frees librabbitmq's frame memory when nothing refers to it any more.
    func releaseBuffersIfIdle() {
        amqp_maybe_release_buffers(state)
    }

    // MARK: Declarations

    /// Applies one piece of topology (a declare, a bind, qos or a consumer).
    func apply(_ item: AMQPTopologyItem) throws {
        let arena = CMemoryArena()
        defer { withExtendedLifetime(arena) {} }  // C holds pointers into it until here
        switch item {
        case .exchange(let e):
            _ = amqp_exchange_declare(state, channel, arena.bytes(e.name), arena.bytes(e.type.rawValue), 0,
                                      e.durable ? 1 : 0, e.autoDelete ? 1 : 0, 0, arena.table(e.arguments))
            try check(amqp_get_rpc_reply(state), "declaring exchange '\(e.name)'")
        case .queue(let q):
            _ = amqp_queue_declare(state, channel, arena.bytes(q.name), 0, q.durable ? 1 : 0, q.exclusive ? 1 : 0,
                                   q.autoDelete ? 1 : 0, arena.table(q.arguments))
            try check(amqp_get_rpc_reply(state), "declaring queue '\(q.name)'")
        case .binding(let b):
            _ = amqp_queue_bind(state, channel, arena.bytes(b.queue), arena.bytes(b.exchange), arena.bytes(b.routingKey), arena.table(b.arguments))
            try check(amqp_get_rpc_reply(state), "binding queue '\(b.queue)' to '\(b.exchange)' with '\(b.routingKey)'")
        case .qos(let prefetchCount):
            _ = amqp_basic_qos(state, channel, 0, prefetchCount, 0)
            try check(amqp_get_rpc_reply(state), "setting prefetch to \(prefetchCount)")
        case .consumer(let queue, let tag):
            _ = amqp_basic_consume(state, channel, arena.bytes(queue), arena.bytes(tag), 0, 0, 0, amqp_table_t(num_entries: 0, entries: nil))
            try check(amqp_get_rpc_reply(state), "consuming from queue '\(queue)'")
        }
    }

    /// Cancels a consumer (`basic.cancel`); deliveries already sent still arrive.
    func cancelConsumer(tag: String) throws {
        let arena = CMemoryArena()
        defer { withExtendedLifetime(arena) {} }  // C holds pointers into it until here
        _ = amqp_basic_cancel(state, channel, arena.bytes(tag))
        try check(amqp_get_rpc_reply(state), "cancelling consumer '\(tag)'")
    }

    // MARK: Publishing and settling

    /// Publishes a message and returns the tag its publisher confirm will carry.
    func publish(_ message: AMQPOutgoingMessage) throws -> UInt64 {
        let arena = CMemoryArena()
        defer { withExtendedLifetime(arena) {} }  // C holds pointers into it until here
        var properties = arena.properties(message.properties)
        let status = message.body.withUnsafeBytes { body in
            amqp_basic_publish(state, channel, arena.bytes(message.exchange), arena.bytes(message.routingKey),
                               message.mandatory ? 1 : 0, 0, &properties,
                               amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
        }
        // librabbitmq refuses to encode some messages (a field too long, a table too big): such a
        // message can never be published; the connection state machine drops it.
        let unencodable = [AMQP_STATUS_BAD_AMQP_DATA, AMQP_STATUS_TABLE_TOO_BIG, AMQP_STATUS_UNKNOWN_CLASS, AMQP_STATUS_INVALID_PARAMETER]
            .contains { $0.rawValue == status }
        try check(status: status, "publishing to '\(message.exchange)' with routing key '\(message.routingKey)'",
                  code: unencodable ? .invalidArgument : .connectionLost)
        defer { nextPublishTag += 1 }
        return nextPublishTag
    }

    /// `basic.ack`.
    func ack(deliveryTag: UInt64, multiple: Bool = false) throws {
        try check(status: amqp_basic_ack(state, channel, deliveryTag, multiple ? 1 : 0), "acknowledging delivery \(deliveryTag)")
    }

    /// `basic.nack`.
    func nack(deliveryTag: UInt64, requeue: Bool) throws {
        try check(status: amqp_basic_nack(state, channel, deliveryTag, 0, requeue ? 1 : 0), "nacking delivery \(deliveryTag)")
    }

    /// `basic.reject`.
    func reject(deliveryTag: UInt64, requeue: Bool) throws {
        try check(status: amqp_basic_reject(state, channel, deliveryTag, requeue ? 1 : 0), "rejecting delivery \(deliveryTag)")
    }

    // MARK: Reading

    /// The next frame worth acting on, without blocking; `nil` when nothing is available. Calling
    /// this also sends a heartbeat when one is due, and detects a broker that stopped sending them
    /// (checked against Debian's librabbitmq 0.11 by the "goes silent" integration test).
    func readFrame() throws -> IncomingFrame? {
        while true {
            var frame = amqp_frame_t()
            var immediately = timeval(tv_sec: 0, tv_usec: 0)
            let status = amqp_simple_wait_frame_noblock(state, &frame, &immediately)
            if status == AMQP_STATUS_TIMEOUT.rawValue { return nil }
            try check(status: status, "reading from the broker")
            guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { continue }
            let method = frame.payload.method
            switch method.id {
            case IW_BASIC_DELIVER:
                let deliver = method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
                let consumerTag = deliver.consumer_tag.string
                let exchange = deliver.exchange.string
                let routingKey = deliver.routing_key.string
                let (properties, body) = try readContent(channel: frame.channel)
                return .delivery(AMQPDelivery(
                    body: body, properties: properties, exchange: exchange, routingKey: routingKey,
                    consumerTag: consumerTag, deliveryTag: deliver.delivery_tag,
                    redelivered: deliver.redelivered != 0, connectionGeneration: 0))
            case IW_BASIC_RETURN:
                let returned = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
                let replyCode = returned.reply_code
                let replyText = returned.reply_text.string
                let exchange = returned.exchange.string
                let routingKey = returned.routing_key.string
                let (_, body) = try readContent(channel: frame.channel)
                return .returned(ReturnedMessage(replyCode: replyCode, replyText: replyText, exchange: exchange, routingKey: routingKey, body: body))
            case IW_BASIC_ACK:
                let ack = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
                return .publishAcknowledged(tag: ack.delivery_tag, multiple: ack.multiple != 0)
            case IW_BASIC_NACK:
                let nack = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
                return .publishRejected(tag: nack.delivery_tag, multiple: nack.multiple != 0)
            case IW_BASIC_CANCEL:
                let cancel = method.decoded.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
                return .consumerCancelled(tag: cancel.consumer_tag.string)
            case IW_CONNECTION_BLOCKED:
                let blocked = method.decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee
                return .blocked(reason: blocked.reason.string)
            case IW_CONNECTION_UNBLOCKED:
                return .unblocked
            case IW_CHANNEL_CLOSE, IW_CONNECTION_CLOSE:
                throw acknowledgeBrokerClose(method, while: "reading from the broker")
            default:
                continue
            }
        }
    }

    private func readContent(channel: amqp_channel_t) throws -> (AMQPMessageProperties, [UInt8]) {
        var message = amqp_message_t()
        try check(amqp_read_message(state, channel, &message, 0), "reading a message's content")
        defer { amqp_destroy_message(&message) }
        return (AMQPMessageProperties(message.properties), message.body.array)
    }

    // MARK: Closing

    /// Closes the channel and the connection politely; errors are ignored (the socket goes anyway).
    func closeGracefully() {
        guard !connectionClosedByBroker else { return }
        _ = amqp_channel_close(state, channel, Int32(AMQP_REPLY_SUCCESS))
        _ = amqp_connection_close(state, Int32(AMQP_REPLY_SUCCESS))
        connectionClosedByBroker = true
    }

    // MARK: Checking results

    /// Turns a status code into an error; `code` says how a failure is classified.
    private func check(status: Int32, _ operation: String, code: AMQPError.Code = .connectionLost) throws {
        guard status != AMQP_STATUS_OK.rawValue else { return }
        throw AMQPError(code, "\(operation) failed: \(Self.describe(status: status))", libraryStatus: status)
    }

    /// Turns an RPC reply into an error; a broker's channel.close or connection.close is
    /// acknowledged (close-ok) and reported with its reply code.
    private func check(_ reply: amqp_rpc_reply_t, _ operation: String, code: AMQPError.Code = .connectionLost) throws {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            try check(status: reply.library_error, operation, code: code)
            throw AMQPError(code, "\(operation) failed inside librabbitmq")
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            throw acknowledgeBrokerClose(reply.reply, while: operation)
        default:
            throw AMQPError(code, "\(operation) failed: the broker closed the connection")
        }
    }

    private func acknowledgeBrokerClose(_ method: amqp_method_t, while operation: String) -> AMQPError {
        switch method.id {
        case IW_CONNECTION_CLOSE:
            // The reply text lives in the library's pool: copied before the library is called again.
            let close = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let text = close.reply_text.string
            var ok = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, 0, IW_CONNECTION_CLOSE_OK, &ok)
            connectionClosedByBroker = true
            return AMQPError(.brokerClosed, "\(operation): the broker closed the connection: \(text)", replyCode: close.reply_code)
        case IW_CHANNEL_CLOSE:
            let close = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let text = close.reply_text.string
            var ok = amqp_channel_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, channel, IW_CHANNEL_CLOSE_OK, &ok)
            return AMQPError(.brokerClosed, "\(operation): the broker closed the channel: \(text)", replyCode: close.reply_code)
        default:
            return AMQPError(.brokerClosed, "\(operation): unexpected method \(method.id) from the broker")
        }
    }

    private static func describe(status: Int32) -> String {
        guard let text = amqp_error_string2(status) else { return "status \(status)" }
        return String(cString: text)
    }
}

extension timeval {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}
