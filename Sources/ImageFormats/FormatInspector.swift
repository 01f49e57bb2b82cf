/// Content that cannot be parsed as the format an inspector reads (oslo.utils' `ImageFormatError`).
public struct ImageFormatError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// One failed safety check (oslo.utils' `SafetyViolation`).
public struct SafetyViolation: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// A named safety check of an inspector.
struct SafetyCheck {
    var name: String
    var run: () throws -> Void

    /// For formats without a meaningful check.
    static var null: SafetyCheck { SafetyCheck(name: "null") {} }
    /// For formats we recognize only to refuse (qed).
    static var banned: SafetyCheck { SafetyCheck(name: "banned") { throw SafetyViolation("This file format is not allowed") } }
}

/// A stream-based inspector for one format (oslo.utils' `FileInspector`): it is shown the image one
/// chunk at a time and keeps only the regions it asked for. Subclasses add regions and checks in
/// `init`, and override the hooks.
///
/// Written by hand (no Swift package inspects disk images), as a port of oslo.utils 10's
/// `format_inspector.py`, which the differential test runs beside it.
class FormatInspector {
    let format: DiskFormat
    /// Bytes shown so far.
    private(set) var totalCount: Int64 = 0
    private var regions: [(name: String, region: CaptureRegion)] = []
    private(set) var safetyChecks: [SafetyCheck] = []
    private var finished = false

    init(_ format: DiskFormat) {
        self.format = format
    }

    // MARK: Hooks

    /// Called after each chunk was captured; may add regions (which then see the same chunk).
    func postProcess() throws {}
    /// Called once when a region becomes complete.
    func regionCompleted(_ name: String) throws {}
    /// Whether the content is this format, from what was captured.
    func formatMatches() throws -> Bool { false }
    /// The virtual size, or 0 when unknown, for a stream of `streamLength` bytes: by default the
    /// stream's length (raw). (oslo.utils answers with the bytes it was shown before it decided,
    /// which for raw is not the image's size.)
    func virtualSize(streamLength: Int64) throws -> Int64 { streamLength }

    // MARK: Regions and checks

    func region(_ name: String) -> CaptureRegion? { regions.first { $0.name == name }?.region }
    func hasRegion(_ name: String) -> Bool { region(name) != nil }

    func addRegion(_ name: String, _ region: CaptureRegion) throws {
        guard !hasRegion(name) else { throw ImageFormatError("Inspector re-added region \(name)") }
        regions.append((name, region))
    }

    func deleteRegion(_ name: String) { regions.removeAll { $0.name == name } }

    func addSafetyCheck(_ check: SafetyCheck) { safetyChecks.append(check) }

    /// Whether every region has what it wants.
    var isComplete: Bool { regions.allSatisfy { $0.region.isComplete } }

    // MARK: Feeding

    /// Shows the next chunk of the stream (oslo.utils' `eat_chunk`).
    func eat(_ chunk: ArraySlice<UInt8>) throws {
        // The regions themselves, not their identities: a region deleted meanwhile stays alive
        // here, so a new one cannot take its address and pass for it.
        let before = regions.map(\.region)
        let completeBefore = before.filter(\.isComplete)
        totalCount += Int64(chunk.count)
        capture(chunk, only: nil)
        try postProcess()
        let added = regions.map(\.region).filter { region in !before.contains { $0 === region } }
        if !added.isEmpty { capture(chunk, only: added) }
        for (name, region) in regions where region.isComplete && !completeBefore.contains(where: { $0 === region }) {
            try regionCompleted(name)
        }
    }

    private func capture(_ chunk: ArraySlice<UInt8>, only: [CaptureRegion]?) {
        for (_, region) in regions where only?.contains(where: { $0 === region }) ?? true {
            if region.isAtEnd || !region.isComplete { region.capture(chunk, endingAt: totalCount) }
        }
    }

    /// The stream ended.
    func finish() {
        finished = true
        for (_, region) in regions { region.streamDidEnd() }
    }

    /// Runs every safety check; returns the failures by check name (oslo.utils' `safety_check`).
    /// Throws ``ImageFormatError`` when the content is incomplete or not this format.
    func safetyFailures() throws -> [(check: String, reason: String)] {
        guard isComplete else { throw ImageFormatError("Incomplete file cannot be safety checked") }
        guard try formatMatches() else { throw ImageFormatError("Unable to safety check format \(format.rawValue) because content does not match") }
        var failures: [(String, String)] = []
        for check in safetyChecks {
            do {
                try check.run()
            } catch let violation as SafetyViolation {
                failures.append((check.name, violation.description))
            } catch {
                failures.append((check.name, "Unexpected error"))
            }
        }
        return failures
    }
}

/// Reads fixed-size integers from captured bytes; a read past the end is an error, as Python's
/// `struct.unpack` on short data is.
extension Array where Element == UInt8 {
    func integer<T: FixedWidthInteger>(_: T.Type, at offset: Int, bigEndian: Bool = false) throws -> T {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset + size <= count else { throw ImageFormatError("truncated structure at \(offset)") }
        var value: T = 0
        for index in 0..<size {
            let byte = T(self[offset + (bigEndian ? index : size - 1 - index)])
            value = value << 8 | byte
        }
        return value
    }

    func hasPrefix(_ prefix: [UInt8]) -> Bool { count >= prefix.count && self[..<prefix.count].elementsEqual(prefix) }
}
