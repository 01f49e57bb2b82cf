import AMQPModel

extension AMQPMessageProperties {
    /// The properties on every oslo publish (kombu's defaults): JSON in UTF-8, an empty headers
    /// table, persistent, priority 0; calls add `expiration` (the call timeout in milliseconds).
    /// These reproduce oslo's content-header bytes exactly.
    public static func oslo(expiration: String? = nil) -> AMQPMessageProperties {
        AMQPMessageProperties(contentType: "application/json", contentEncoding: "utf-8", headers: [:],
                              deliveryMode: 2, priority: 0, expiration: expiration)
    }
}
