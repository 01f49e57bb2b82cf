import OsloJSON
/// What a request ended with: the reply its caller gets, and the notification that records it
/// (the worker's `.end` or `.error` event). The server makes the notification durable before it
/// replies and acknowledges, and a request journal keeps the pair so that a duplicate of the
/// request reproduces it exactly (same `message_id`) instead of running again.
public struct RPCOutcome: Sendable, Hashable {
    /// The method's result, or the failure the caller gets.
    public var reply: Result<JSONValue, RemoteFailure>
    /// The event that records the outcome, if the method sends one.
    public var notification: OsloNotification?

    /// Creates an outcome.
    public init(reply: Result<JSONValue, RemoteFailure>, notification: OsloNotification? = nil) {
        self.reply = reply
        self.notification = notification
    }

    /// The failure's class name, if the outcome is a failure.
    public var failureClass: String? {
        if case .failure(let failure) = reply { return failure.className }
        return nil
    }

    /// The final reply to the call `messageID`.
    public func reply(to messageID: String) -> RPCReply {
        switch reply {
        case .success(let result): RPCReply(result: result, messageID: messageID)
        case .failure(let failure): RPCReply(failure: failure, messageID: messageID)
        }
    }
}

extension RPCOutcome {
    /// The outcome as a JSON object (for a journal on disk): `{"result": …}` or
    /// `{"failure": …}`, plus `"notification"` (the notification's inner message) when there is one.
    public var jsonObject: JSONObject {
        var object = JSONObject()
        switch reply {
        case .success(let result): object["result"] = result
        case .failure(let failure): object["failure"] = .object(failure.jsonObject)
        }
        if let notification { object["notification"] = .object(notification.encodedMessage) }
        return object
    }

    /// Reads ``jsonObject`` back; nil if it is not one.
    public init?(jsonObject object: JSONObject) {
        let notification: OsloNotification?
        if let message = object["notification"] {
            guard let message = message.objectValue, let decoded = OsloNotification(decoding: message) else { return nil }
            notification = decoded
        } else {
            notification = nil
        }
        if let result = object["result"] {
            self.init(reply: .success(result), notification: notification)
        } else if let failure = object["failure"]?.objectValue, let decoded = try? RemoteFailure(jsonObject: failure) {
            self.init(reply: .failure(decoded), notification: notification)
        } else {
            return nil
        }
    }
}
