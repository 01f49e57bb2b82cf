import Logging

/// Keeps a text log one record per line: control characters in a message, a metadata key or a
/// metadata value are written as escapes (`\n`, `\u{1B}`) before the wrapped handler sees them.
/// Much of what is logged comes from requests (references, `node_uuid`, `request_id`), and
/// swift-log's `StreamLogHandler` writes text as it is given, so a reference with a newline in
/// it could otherwise forge a log line.
///
/// The JSON handler needs no wrapper: JSON escapes control characters itself.
public struct ControlCharacterEscapingLogHandler<Wrapped: LogHandler>: LogHandler {
    private var wrapped: Wrapped
    /// Asked at each record; its values are escaped like the rest (the wrapped handler gets none).
    public var metadataProvider: Logger.MetadataProvider?

    /// Wraps `handler`, taking over its metadata provider.
    public init(_ handler: Wrapped) {
        var handler = handler
        metadataProvider = handler.metadataProvider
        handler.metadataProvider = nil
        wrapped = handler
    }

    public var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }

    public var metadata: Logger.Metadata {
        get { wrapped.metadata }
        set { wrapped.metadata = Self.escaped(newValue) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { wrapped[metadataKey: Self.escaped(key)] }
        set { wrapped[metadataKey: Self.escaped(key)] = newValue.map(Self.escaped) }
    }

    public func log(event: LogEvent) {
        var event = event
        event.message = Logger.Message(stringLiteral: Self.escaped(event.message.description))
        var metadata = metadataProvider?.get() ?? [:]
        if let explicit = event.metadata { metadata.merge(explicit) { _, new in new } }
        if let error = event.error {
            // The wrapped handler would write an error's description as it is.
            metadata[metadata["error"] == nil ? "error" : "error.description"] = .string("\(error)")
            event.error = nil
        }
        event.metadata = metadata.isEmpty ? nil : Self.escaped(metadata)
        wrapped.log(event: event)
    }

    /// `text` with C0 and C1 control characters, DEL and the Unicode line and paragraph
    /// separators written as Swift-style escapes.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where needsEscape(scalar): result += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    private static func escaped(_ metadata: Logger.Metadata) -> Logger.Metadata {
        Logger.Metadata(metadata.map { (escaped($0.key), escaped($0.value)) }, uniquingKeysWith: { _, last in last })
    }

    private static func escaped(_ value: Logger.Metadata.Value) -> Logger.Metadata.Value {
        switch value {
        case .string(let text): .string(escaped(text))
        case .stringConvertible(let convertible): .string(escaped(convertible.description))
        case .array(let values): .array(values.map(escaped))
        case .dictionary(let dictionary): .dictionary(escaped(dictionary))
        }
    }
}
