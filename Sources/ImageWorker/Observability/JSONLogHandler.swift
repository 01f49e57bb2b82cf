import OsloJSON
import Logging
import OsloMessaging

#if canImport(Glibc)
import Glibc
#endif

/// Writes each log record as one JSON object on a line of standard error (`[image_worker]
/// log_format = json`), for log shippers:
/// `{"timestamp": "2026-11-24T21:42:46.123456Z", "level": "info", "logger": "image-worker",
/// "message": "fetched images", "source": "ImageWorker", "request_id": "req-…", "node_uuid": "…", "task_id": "…", …}`.
///
/// Written here because swift-log ships only a text handler (`StreamLogHandler`) and none of the
/// packages this machine carries has a JSON one. Metadata keys are flattened into the object
/// (the fixed keys win); values are strings, or arrays and objects of them.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    /// A handler for `label` that lets through `level` and above.
    public init(label: String, level: Logger.Level, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.logLevel = level
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = Array(Self.format(timestamp: OsloTimestamp.nowMicroseconds(), level: event.level, label: label, message: event.message.description,
                                     source: event.source, metadata: mergedMetadata(event.metadata)).utf8)
        line.append(0x0A)
        // One write(2) per record, so lines from several threads never interleave.
        line.withUnsafeBytes { _ = Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    /// The record as a JSON object (without the newline).
    static func format(timestamp: Int64, level: Logger.Level, label: String, message: String, source: String, metadata: Logger.Metadata) -> String {
        var object: JSONObject = [
            "timestamp": .string(OsloTimestamp.rfc3339Format(microseconds: timestamp)),
            "level": .string(level.rawValue),
            "logger": .string(label),
            "message": .string(message),
            "source": .string(source),
        ]
        for key in metadata.keys.sorted() where object[key] == nil {
            object[key] = json(metadata[key]!)
        }
        return JSONWriter().string(.object(object))
    }

    private func mergedMetadata(_ explicit: Logger.Metadata?) -> Logger.Metadata {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit { merged.merge(explicit) { _, new in new } }
        return merged
    }

    private static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let convertible): .string(convertible.description)
        case .array(let values): .array(values.map(json))
        case .dictionary(let dictionary):
            .object(JSONObject(dictionary.keys.sorted().map { ($0, json(dictionary[$0]!)) }))
        }
    }
}
