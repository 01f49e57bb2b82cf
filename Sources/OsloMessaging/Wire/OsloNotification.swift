import OsloJSON
/// A notification as oslo's `messagingv2` driver sends it.
public struct OsloNotification: Sendable, Hashable {
    /// Notification priorities; the body carries the upper-case name, the routing key the
    /// lower-case one (`warning` is sent as `WARN`/`.warn`, as oslo does).
    public enum Priority: String, Sendable, Hashable, CaseIterable {
        case audit = "AUDIT", debug = "DEBUG", info = "INFO", warn = "WARN", error = "ERROR", critical = "CRITICAL", sample = "SAMPLE"

        /// The routing-key suffix.
        public var routingSuffix: String { rawValue.lowercased() }
    }

    /// A dashed UUID.
    public var messageID: String
    /// `<service>.<host>`.
    public var publisherID: String
    /// `baremetal.image.fetch.end`, …
    public var eventType: String
    public var priority: Priority
    public var payload: JSONValue
    /// Microseconds since the epoch; written as Python's `str(utcnow())`.
    public var timestampMicroseconds: Int64
    /// A fresh de-duplication id.
    public var uniqueID: String
    /// The request context (secrets already removed).
    public var context: JSONObject

    /// Creates a notification with fresh ids and the current time.
    public init(
        publisherID: String, eventType: String, priority: Priority, payload: JSONValue, context: JSONObject = JSONObject(),
        messageID: String = OsloIdentifiers.uuid4(), uniqueID: String = OsloIdentifiers.uuid4Hex(),
        timestampMicroseconds: Int64 = OsloTimestamp.nowMicroseconds()
    ) {
        self.messageID = messageID
        self.publisherID = publisherID
        self.eventType = eventType
        self.priority = priority
        self.payload = payload
        self.timestampMicroseconds = timestampMicroseconds
        self.uniqueID = uniqueID
        self.context = context
    }

    /// The routing key for a notification topic: `<topic>.<priority>`.
    public func routingKey(topic: String) -> String {
        "\(topic).\(priority.routingSuffix)"
    }

    /// The inner message, keys in oslo's order, context flattened to `_context_*`.
    public var encodedMessage: JSONObject {
        var message: JSONObject = [
            "message_id": .string(messageID),
            "publisher_id": .string(publisherID),
            "event_type": .string(eventType),
            "priority": .string(priority.rawValue),
            "payload": payload,
            "timestamp": .string(OsloTimestamp.notificationFormat(microseconds: timestampMicroseconds)),
            "_unique_id": .string(uniqueID),
        ]
        for field in context { message.append("_context_" + field.key, field.value) }
        return message
    }

    /// Reads a notification back from its inner message (as ``encodedMessage`` writes it).
    public init?(decoding message: JSONObject) {
        guard let messageID = message["message_id"]?.stringValue, let publisherID = message["publisher_id"]?.stringValue,
              let eventType = message["event_type"]?.stringValue, let priorityName = message["priority"]?.stringValue,
              let priority = Priority(rawValue: priorityName), let payload = message["payload"],
              let uniqueID = message["_unique_id"]?.stringValue, let timestamp = message["timestamp"]?.stringValue,
              let micros = OsloTimestamp.parseNotificationFormat(timestamp)
        else { return nil }
        var context = JSONObject()
        for field in message where field.key.hasPrefix("_context_") { context.append(String(field.key.dropFirst(9)), field.value) }
        self.init(publisherID: publisherID, eventType: eventType, priority: priority, payload: payload, context: context,
                  messageID: messageID, uniqueID: uniqueID, timestampMicroseconds: micros)
    }

    /// The enveloped body to publish.
    public func encodedBody() -> [UInt8] {
        OsloEnvelope.wrap(encodedMessage)
    }
}
