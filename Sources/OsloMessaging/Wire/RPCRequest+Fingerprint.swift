import OsloJSON

extension RPCRequest {
    /// What makes two messages the same request, as text: the method, the version asked for and
    /// the arguments as the endpoint reads them (object keys sorted, a repeated key's last value),
    /// in JSON. A redelivery or a duplicate publish has the same fingerprint; a message that reuses
    /// another's `_unique_id` for other work has another. The context is left out: it says who
    /// asks, not what is asked.
    public var fingerprint: String {
        let content: JSONObject = [
            "args": Self.canonical(.object(args)),
            "method": .string(method),
            "version": .string(version.description),
        ]
        return JSONWriter().string(.object(content))
    }

    /// `value` with every object's keys sorted, each key once with its last value.
    private static func canonical(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let object):
            var lastValues: [String: JSONValue] = [:]
            for field in object { lastValues[field.key] = field.value }
            let sorted = lastValues.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            return .object(JSONObject(sorted.map { ($0.key, canonical($0.value)) }))
        case .array(let elements):
            return .array(elements.map(canonical))
        default:
            return value
        }
    }
}
