extension AMQPOutgoingMessage {
    /// Why the message can never be published, or nil: AMQP's short strings (the exchange, the
    /// routing key, the text properties, header names) hold at most 255 bytes. A message over that
    /// is refused by librabbitmq after the method frame may already be on the wire, so it is
    /// refused here instead, before anything is sent.
    public var validationProblem: String? {
        let shortStrings: [(String, String?)] = [
            ("exchange", exchange), ("routing key", routingKey),
            ("content type", properties.contentType), ("content encoding", properties.contentEncoding),
            ("correlation id", properties.correlationID), ("reply-to", properties.replyTo),
            ("expiration", properties.expiration), ("message id", properties.messageID),
            ("type", properties.type), ("app id", properties.appID),
        ]
        for (name, value) in shortStrings {
            if let value, value.utf8.count > Self.shortStringLimit {
                return "the \(name) is \(value.utf8.count) bytes long; AMQP allows \(Self.shortStringLimit)"
            }
        }
        if let headers = properties.headers, let problem = Self.tableProblem(headers) { return problem }
        return nil
    }

    /// The longest AMQP short string, in bytes.
    public static let shortStringLimit = 255

    /// The longest prefix of `text` that is a short string (at most 255 bytes of UTF-8), cut
    /// between characters.
    public static func shortStringPrefix(_ text: String) -> String {
        var result = ""
        var bytes = 0
        for character in text {
            bytes += character.utf8.count
            guard bytes <= shortStringLimit else { break }
            result.append(character)
        }
        return result
    }

    private static func tableProblem(_ table: AMQPTable) -> String? {
        for entry in table.entries {
            if entry.key.utf8.count > shortStringLimit {
                return "a header name is \(entry.key.utf8.count) bytes long; AMQP allows \(shortStringLimit)"
            }
            if let problem = valueProblem(entry.value) { return problem }
        }
        return nil
    }

    private static func valueProblem(_ value: AMQPFieldValue) -> String? {
        switch value {
        case .table(let table): return tableProblem(table)
        case .array(let values): return values.lazy.compactMap(valueProblem).first
        default: return nil
        }
    }
}
