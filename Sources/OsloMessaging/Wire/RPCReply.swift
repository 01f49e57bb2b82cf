import OsloJSON
/// A reply to a call, as an oslo RPC server sends it: one message with `result`, `failure`
/// (always present, `null` or a serialized exception string) and `ending: true`; or, while a call
/// with a call-monitor timeout runs, heartbeats `{"result": null, "failure": null, "ending": false}`.
public struct RPCReply: Sendable, Hashable {
    /// The method's return value (`null` for heartbeats and failures).
    public var result: JSONValue
    /// The exception, if the call failed.
    public var failure: RemoteFailure?
    /// `true` for the final reply, `false` for a heartbeat.
    public var ending: Bool
    /// The call's `_msg_id`, echoed.
    public var messageID: String
    /// A fresh de-duplication id for this message.
    public var uniqueID: String

    /// Creates a reply.
    public init(result: JSONValue = .null, failure: RemoteFailure? = nil, ending: Bool = true, messageID: String, uniqueID: String = OsloIdentifiers.uuid4Hex()) {
        self.result = result
        self.failure = failure
        self.ending = ending
        self.messageID = messageID
        self.uniqueID = uniqueID
    }

    /// A call-monitor heartbeat for the call `messageID`.
    public static func heartbeat(messageID: String) -> RPCReply {
        RPCReply(result: .null, failure: nil, ending: false, messageID: messageID)
    }

    /// The inner message, keys in oslo's order.
    public var encodedMessage: JSONObject {
        [
            "result": result,
            "failure": failure.map { .string($0.jsonString) } ?? .null,
            "ending": .bool(ending),
            "_msg_id": .string(messageID),
            "_unique_id": .string(uniqueID),
        ]
    }

    /// The enveloped body to publish.
    public func encodedBody() -> [UInt8] {
        OsloEnvelope.wrap(encodedMessage)
    }

    /// Reads a reply from a message body.
    public static func decode(body: [UInt8]) throws -> RPCReply {
        let message = try OsloEnvelope.unwrap(body)
        guard let messageID = message["_msg_id"]?.stringValue else {
            throw OsloEnvelope.DecodingError(reason: "a reply has no _msg_id")
        }
        var failure: RemoteFailure? = nil
        if let text = message["failure"]?.stringValue { failure = try RemoteFailure(jsonString: text) }
        return RPCReply(result: message["result"] ?? .null, failure: failure, ending: message["ending"]?.boolValue ?? false,
                        messageID: messageID, uniqueID: message["_unique_id"]?.stringValue ?? "")
    }
}
