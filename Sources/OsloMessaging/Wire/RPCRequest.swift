import AMQPModel
import OsloJSON
import Foundation

/// An RPC request (a cast or a call) as an oslo.messaging client sends it.
public struct RPCRequest: Sendable, Hashable {
    /// The endpoint method to run.
    public var method: String
    /// Its keyword arguments.
    public var args: JSONObject
    /// The API version the caller asks for (`1.0` when absent, as oslo assumes).
    public var version: RPCVersion
    /// The target namespace, if the caller set one.
    public var namespace: String?
    /// The call's id (`_msg_id`), echoed in the reply; nil for a cast.
    public var messageID: String?
    /// The caller's reply queue (`_reply_q`); nil for a cast.
    public var replyQueue: String?
    /// The call-monitor timeout (`_timeout`) in seconds: when set, send heartbeats every half of it.
    public var callMonitorTimeout: Double?
    /// The message's de-duplication id (`_unique_id`).
    public var uniqueID: String?
    /// The caller's context (`_context_*`).
    public var context: RPCContext

    /// Creates a request.
    public init(
        method: String, args: JSONObject = JSONObject(), version: RPCVersion = RPCVersion(major: 1, minor: 0),
        namespace: String? = nil, messageID: String? = nil, replyQueue: String? = nil,
        callMonitorTimeout: Double? = nil, uniqueID: String? = nil, context: RPCContext = RPCContext()
    ) {
        self.method = method
        self.args = args
        self.version = version
        self.namespace = namespace
        self.messageID = messageID
        self.replyQueue = replyQueue
        self.callMonitorTimeout = callMonitorTimeout
        self.uniqueID = uniqueID
        self.context = context
    }

    /// Whether the caller waits for a reply.
    public var isCall: Bool { messageID != nil && replyQueue != nil }
}

/// What could be read from a message that is not a valid request, so that the refusal can still
/// reach the caller (a reply) and the operator (an error event).
public struct RPCRequestDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong with the message.
    public var reason: String
    /// `method`, if it was readable.
    public var method: String?
    /// `_msg_id`, if readable: with ``replyQueue``, the refusal can be replied to.
    public var messageID: String?
    /// `_reply_q`, if readable.
    public var replyQueue: String?
    /// `_unique_id`, if readable.
    public var uniqueID: String?
    /// The context, as far as it was readable.
    public var context: RPCContext
    /// `args.node_uuid`, if it was a string: for the error event.
    public var nodeUUID: String?

    public var description: String { reason }
}

extension RPCRequest {
    /// The media type oslo requires on every message.
    public static let contentType = "application/json"

    /// Decodes a request from a message body and its content type.
    ///
    /// Refuses (with whatever ids could be read) a content type other than `application/json`,
    /// a body that is not an oslo message, a missing or non-string `method`, `args` that are not
    /// an object, and malformed `version`, `_msg_id`, `_reply_q`, `_timeout` or `_unique_id`.
    public static func decode(body: [UInt8], contentType: String?, parser: JSONParser = JSONParser()) throws(RPCRequestDecodingError) -> RPCRequest {
        let mediaType = contentType?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() }
        let contentTypeProblem = mediaType == Self.contentType
            ? nil : "content type \(contentType.map { "'\($0)'" } ?? "(none)") is not application/json"
        let message: JSONObject
        do {
            message = try OsloEnvelope.unwrap(body, parser: parser)
        } catch {
            throw RPCRequestDecodingError(reason: contentTypeProblem ?? error.reason, context: RPCContext())
        }
        var partial = RPCRequestDecodingError(reason: "", context: Self.context(of: message))
        partial.method = message["method"]?.stringValue
        partial.messageID = message["_msg_id"]?.stringValue
        // A reply queue the broker cannot take (a routing key over 255 bytes) is not replied to.
        partial.replyQueue = message["_reply_q"]?.stringValue.flatMap(Self.usableReplyQueue)
        partial.uniqueID = message["_unique_id"]?.stringValue
        partial.nodeUUID = message["args"]?.objectValue?["node_uuid"]?.stringValue

        func refuse(_ reason: String) -> RPCRequestDecodingError {
            var error = partial
            error.reason = reason
            return error
        }

        if let contentTypeProblem { throw refuse(contentTypeProblem) }
        guard let methodValue = message["method"] else { throw refuse("the message has no 'method'") }
        guard let method = methodValue.stringValue, !method.isEmpty else {
            throw refuse("'method' is \(methodValue.typeDescription), not a method name")
        }
        guard let argsValue = message["args"] else { throw refuse("the message has no 'args'") }
        guard let args = argsValue.objectValue else { throw refuse("'args' is \(argsValue.typeDescription), not an object") }

        var version = RPCVersion(major: 1, minor: 0)
        if let versionValue = message["version"], !versionValue.isNull {
            guard let text = versionValue.stringValue, let parsed = RPCVersion(text) else {
                throw refuse("'version' must be a \"major.minor\" string")
            }
            version = parsed
        }
        var namespace: String? = nil
        if let value = message["namespace"], !value.isNull {
            guard let text = value.stringValue else { throw refuse("'namespace' must be a string") }
            namespace = text
        }
        let messageID = try optionalString(message, "_msg_id", refuse)
        let replyQueue = try optionalString(message, "_reply_q", refuse)
        if let replyQueue, Self.usableReplyQueue(replyQueue) == nil {
            throw refuse("'_reply_q' is \(replyQueue.utf8.count) bytes long; an AMQP routing key holds at most \(AMQPOutgoingMessage.shortStringLimit)")
        }
        let uniqueID = try optionalString(message, "_unique_id", refuse)
        var timeout: Double? = nil
        if let value = message["_timeout"], !value.isNull {
            guard let seconds = value.doubleValue, seconds.isFinite, seconds >= 0 else {
                throw refuse("'_timeout' must be a number of seconds or null")
            }
            // Heartbeats every half of it; more than a day apart would be none at all.
            timeout = seconds > 0 ? min(seconds, 86_400) : nil
        }
        if (messageID == nil) != (replyQueue == nil) {
            throw refuse("a call needs both '_msg_id' and '_reply_q'")
        }
        return RPCRequest(method: method, args: args, version: version, namespace: namespace,
                          messageID: messageID, replyQueue: replyQueue, callMonitorTimeout: timeout,
                          uniqueID: uniqueID, context: partial.context)
    }

    /// `name` if a reply can be routed to it: the broker refuses a routing key over 255 bytes,
    /// and a publish it can never accept must not be attempted (contract §6).
    private static func usableReplyQueue(_ name: String) -> String? {
        name.utf8.count <= AMQPOutgoingMessage.shortStringLimit ? name : nil
    }

    private static func optionalString(_ message: JSONObject, _ key: String, _ refuse: (String) -> RPCRequestDecodingError) throws(RPCRequestDecodingError) -> String? {
        guard let value = message[key], !value.isNull else { return nil }
        guard let text = value.stringValue, !text.isEmpty else { throw refuse("'\(key)' must be a non-empty string") }
        return text
    }

    private static func context(of message: JSONObject) -> RPCContext {
        var fields = JSONObject()
        for field in message where field.key.hasPrefix("_context_") {
            fields[String(field.key.dropFirst("_context_".count))] = field.value
        }
        return RPCContext(fields: fields)
    }

    /// The inner message as an oslo client writes it (key order as captured from oslo 14).
    public func encodedMessage() -> JSONObject {
        var message = JSONObject()
        message["method"] = .string(method)
        message["args"] = .object(args)
        if let namespace { message["namespace"] = .string(namespace) }
        message["version"] = .string(version.description)
        if let messageID, let replyQueue {
            message["_msg_id"] = .string(messageID)
            message["_reply_q"] = .string(replyQueue)
            message["_timeout"] = callMonitorTimeout.map { $0.rounded() == $0 ? .integer(Int64($0)) : .double($0) } ?? .null
        }
        message["_unique_id"] = .string(uniqueID ?? OsloIdentifiers.uuid4Hex())
        for field in context.fields { message.append("_context_" + field.key, field.value) }
        return message
    }

    /// The enveloped body to publish.
    public func encodedBody() -> [UInt8] {
        OsloEnvelope.wrap(encodedMessage())
    }
}
