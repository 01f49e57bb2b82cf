import Logging
import NIOConcurrencyHelpers
import Testing
@testable import ImageWorker

/// Records what reaches it, as a text handler would write it.
struct RecordingLogHandler: LogHandler {
    final class Records: Sendable {
        let lines = NIOLockedValueBox<[(message: String, metadata: Logger.Metadata)]>([])
    }
    let records = Records()
    var logLevel = Logger.Level.trace
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        records.lines.withLockedValue { $0.append((event.message.description, merged)) }
    }
}

@Suite("text logs: one record, one line")
struct LogEscapingTests {
    @Test("control characters from a request are escaped in the message, metadata set on the logger, and per-record metadata")
    func escaped() {
        let recorder = RecordingLogHandler()
        var logger = Logger(label: "t") { _ in ControlCharacterEscapingLogHandler(recorder) }
        logger[metadataKey: "request_id"] = "req-1\n2026-12-01T00:00:00+0000 critical forged"
        logger.warning("image fetch failed: Invalid image href http://h/a\r\n\u{1B}[2Jx\u{85}y\u{2028}z",
                       metadata: ["reason": "bad\tref", "nested": .array([.string("a\u{7F}b")]), "plain": "fine"])
        let record = recorder.records.lines.withLockedValue { $0 }.first
        #expect(record?.message == #"image fetch failed: Invalid image href http://h/a\r\n\u{1B}[2Jx\u{85}y\u{2028}z"#)
        #expect(record?.metadata["request_id"] == .string(#"req-1\n2026-12-01T00:00:00+0000 critical forged"#))
        #expect(record?.metadata["reason"] == .string(#"bad\tref"#))
        #expect(record?.metadata["nested"] == .array([.string(#"a\u{7F}b"#)]))
        #expect(record?.metadata["plain"] == .string("fine"))
    }

    @Test("text without control characters, accents and emoji included, is written as it is")
    func untouched() {
        for text in ["fetched images", "node 1be26c0b, file:///srv/été/🚀.img", #"a \ backslash"#] {
            #expect(ControlCharacterEscapingLogHandler<RecordingLogHandler>.escaped(text) == text)
        }
    }

    @Test("an error attached to a record is written as escaped metadata")
    func attachedError() {
        struct Forged: Error, CustomStringConvertible { var description: String { "bad\nforged line" } }
        let recorder = RecordingLogHandler()
        let logger = Logger(label: "t") { _ in ControlCharacterEscapingLogHandler(recorder) }
        logger.error("failed", error: Forged())
        #expect(recorder.records.lines.withLockedValue { $0 }.first?.metadata["error"] == .string(#"bad\nforged line"#))
    }

    @Test("a metadata provider's values are escaped too")
    func provided() {
        let recorder = RecordingLogHandler()
        var inner = recorder
        inner.metadataProvider = Logger.MetadataProvider { ["task_id": "t\n1"] }
        let logger = Logger(label: "t") { _ in ControlCharacterEscapingLogHandler(inner) }
        logger.info("x")
        #expect(recorder.records.lines.withLockedValue { $0 }.first?.metadata["task_id"] == .string(#"t\n1"#))
    }
}
