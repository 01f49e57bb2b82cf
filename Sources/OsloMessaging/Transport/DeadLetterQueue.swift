import AMQPModel
import OsloJSON

/// Where requests go that will never succeed (malformed, or given up on after too many attempts)
/// when `[image_worker] dead_letter_exchange` is set: a durable fanout exchange of that name and
/// a durable queue of the same name bound to it (quorum when `rabbit_quorum_queue` is on).
///
/// The worker publishes the copy itself rather than relying on `basic.reject`, so that nothing
/// is dropped on a queue that has no dead-letter policy; a broker policy with the same exchange
/// (`deploy/rabbitmq/definitions.json`) also catches what the broker drops on its own (a quorum
/// queue's delivery limit).
public struct DeadLetterQueue: Sendable, Hashable {
    /// The exchange's name, and the queue's.
    public var name: String
    /// Whether the queue is a quorum queue.
    public var quorum: Bool

    /// Creates the destination.
    public init(name: String, quorum: Bool) {
        self.name = name
        self.quorum = quorum
    }

    /// The exchange.
    public var exchange: AMQPExchangeDeclaration {
        AMQPExchangeDeclaration(name: name, type: .fanout, durable: true, autoDelete: false)
    }

    /// The queue.
    public var queue: AMQPQueueDeclaration {
        AMQPQueueDeclaration(name: name, durable: true, arguments: quorum ? ["x-queue-type": .longString("quorum")] : [:])
    }

    /// The binding (a fanout exchange ignores the key).
    public var binding: AMQPQueueBinding {
        AMQPQueueBinding(queue: name, exchange: name, routingKey: "")
    }

    /// The copy of a request to publish: same body (without the caller's secrets) and properties,
    /// persistent, with where it came from and why it is here in its headers.
    ///
    /// The caller's token and the context's other secrets (``RPCContext/secretKeys``, as
    /// `_context_<key>`) are replaced by `***` in a body that parses (re-encoded as oslo writes
    /// it), and `x-image-worker-redacted` names them; a body that does not parse is kept as it is.
    ///
    /// The copy can always be published: text the broker sent as a short string (at most 255
    /// bytes) can come back longer, since invalid UTF-8 is repaired with U+FFFD (three bytes
    /// each), and a publish the broker can never accept would be dropped, the request with it.
    /// Such text is cut to 255 bytes, and `x-image-worker-cut` names what was cut.
    public func message(for delivery: AMQPDelivery, reason: DeadLetterReason) -> AMQPOutgoingMessage {
        var cut: [String] = []
        func fit(_ text: String?, _ name: String) -> String? {
            guard let text, text.utf8.count > AMQPOutgoingMessage.shortStringLimit else { return text }
            cut.append(name)
            return AMQPOutgoingMessage.shortStringPrefix(text)
        }
        var properties = delivery.properties
        properties.contentType = fit(properties.contentType, "content type")
        properties.contentEncoding = fit(properties.contentEncoding, "content encoding")
        properties.correlationID = fit(properties.correlationID, "correlation id")
        properties.replyTo = fit(properties.replyTo, "reply-to")
        // A call's per-message TTL (oslo sets its timeout) would make the copy expire in the
        // dead-letter queue; it is kept in a header instead, as RabbitMQ's own dead-lettering does.
        let expiration = properties.expiration
        properties.expiration = nil
        properties.messageID = fit(properties.messageID, "message id")
        properties.type = fit(properties.type, "type")
        properties.appID = fit(properties.appID, "app id")
        let routingKey = fit(delivery.routingKey, "routing key") ?? ""
        var headers = Self.fitted(properties.headers ?? [:], &cut)
        headers.entries.removeAll { $0.key.hasPrefix("x-image-worker-") }
        headers.entries.append(contentsOf: [
            .init(key: "x-image-worker-error-code", value: .longString(reason.code)),
            .init(key: "x-image-worker-error", value: .longString(String(reason.message.prefix(1024)))),
            .init(key: "x-image-worker-original-exchange", value: .longString(delivery.exchange)),
            .init(key: "x-image-worker-original-routing-key", value: .longString(delivery.routingKey)),
        ])
        if let expiration {
            headers.entries.append(.init(key: "x-image-worker-original-expiration", value: .longString(expiration)))
        }
        var body = delivery.body
        if let (redactedBody, keys) = Self.withoutSecrets(delivery.body) {
            body = redactedBody
            headers.entries.append(.init(key: "x-image-worker-redacted", value: .longString(keys.joined(separator: ", "))))
        }
        if !cut.isEmpty {
            headers.entries.append(.init(key: "x-image-worker-cut", value: .longString(Set(cut).sorted().joined(separator: ", "))))
        }
        properties.headers = headers
        properties.deliveryMode = 2
        return AMQPOutgoingMessage(exchange: name, routingKey: routingKey, body: body, properties: properties, mandatory: true)
    }

    /// `body` with the context's secrets replaced by `***` (every field of that name: JSON may
    /// repeat a key), and their keys; nil when it does not parse or holds none.
    static func withoutSecrets(_ body: [UInt8]) -> ([UInt8], [String])? {
        guard let message = try? OsloEnvelope.unwrap(body) else { return nil }
        let secret = Set(RPCContext.secretKeys.map { "_context_" + $0 })
        let keys = Set(message.fields.map(\.key)).intersection(secret).sorted()
        guard !keys.isEmpty else { return nil }
        let redacted = JSONObject(message.fields.map { ($0.key, secret.contains($0.key) ? .string("***") : $0.value) })
        return (OsloEnvelope.wrap(redacted), keys)
    }

    /// `table` with every header name cut to a short string (nested tables and arrays too).
    private static func fitted(_ table: AMQPTable, _ cut: inout [String]) -> AMQPTable {
        AMQPTable(table.entries.map { entry in
            var key = entry.key
            if key.utf8.count > AMQPOutgoingMessage.shortStringLimit {
                cut.append("header name")
                key = AMQPOutgoingMessage.shortStringPrefix(key)
            }
            return AMQPTable.Entry(key: key, value: fitted(entry.value, &cut))
        })
    }

    private static func fitted(_ value: AMQPFieldValue, _ cut: inout [String]) -> AMQPFieldValue {
        switch value {
        case .table(let table): .table(fitted(table, &cut))
        case .array(let values): .array(values.map { fitted($0, &cut) })
        default: value
        }
    }
}
