/// What inspecting an image found.
public struct FormatInspection: Sendable, Equatable {
    /// A safety check that failed, by oslo.utils' name for it.
    public struct Failure: Sendable, Equatable {
        public var check: String
        public var reason: String
    }

    /// The detected format; nil when none could be decided (``problem`` says why).
    public var format: DiskFormat?
    /// The virtual size the format declares (the stream's length for raw and gpt); nil when the
    /// format could not be decided or its header could not be read.
    public var virtualSize: Int64?
    /// Failed safety checks.
    public var failures: [Failure]
    /// Why the content could not be inspected (several formats at once, a broken structure).
    public var problem: String?
    /// Bytes of the stream (all of it, also past what the decision needed).
    public var streamLength: Int64

    /// Whether the image may go on: one format, readable, every safety check passed.
    public var isSafe: Bool { format != nil && problem == nil && failures.isEmpty }

    /// The reasons it may not, for messages and logs.
    public var reasons: [String] {
        (problem.map { [$0] } ?? []) + failures.map { "\($0.check): \($0.reason)" }
    }
}

/// Detects the format of a stream as Ironic does (`detect_file_format`: oslo.utils' inspectors
/// side by side, shown the stream in 4096-byte chunks until they have decided), then applies
/// Ironic's rule for several matches (iso and gpt together are an iso; any other pair is refused)
/// and runs the detected format's safety checks.
///
/// Feed it every byte as it passes (the download, the copy); after the decision it only counts.
/// Not thread-safe: one stream, one caller.
public final class FormatDetector {
    /// oslo.utils' `detect_file_format` reads this much at a time; some verdicts (a VMDK descriptor
    /// file read from its first chunk) depend on it, so the stream is cut the same way.
    static let chunkSize = 4096

    private let inspectors: [FormatInspector] = [
        RawInspector(), QCOW2Inspector(), VHDInspector(), VHDXInspector(), VMDKInspector(),
        VDIInspector(), QEDInspector(), ISOInspector(), GPTInspector(), LUKSInspector(),
    ]
    /// Inspectors that threw while reading: shown no more, but still asked whether they match.
    private var failed: Set<ObjectIdentifier> = []
    private var pending: [UInt8] = []
    private var decision: Decision?
    private var streamLength: Int64 = 0

    private enum Decision {
        case format(FormatInspector)
        case problem(String)
    }

    public init() {
        pending.reserveCapacity(Self.chunkSize)
    }

    /// Whether the format is decided (the rest of the stream only counts).
    public var isDecided: Bool { decision != nil }

    /// Shows the next bytes of the stream.
    public func feed(_ bytes: UnsafeRawBufferPointer) {
        streamLength += Int64(bytes.count)
        guard decision == nil else { return }
        var rest = bytes[...]
        while decision == nil && !rest.isEmpty {
            let taken = rest.prefix(Self.chunkSize - pending.count)
            pending.append(contentsOf: taken)
            rest = rest.dropFirst(taken.count)
            if pending.count == Self.chunkSize {
                eat(pending[...])
                pending.removeAll(keepingCapacity: true)
                decide(finished: false)
            }
        }
    }

    /// Counts `count` bytes of the stream without showing them: for a reader that stops reading
    /// once the format is decided (``isDecided``) and knows how long the rest is.
    public func skip(_ count: Int64) {
        precondition(decision != nil, "bytes skipped before the format was decided")
        streamLength += count
    }

    /// Convenience for byte arrays.
    public func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }

    /// The stream ended: decides, runs the safety checks and returns what was found.
    public func finish() -> FormatInspection {
        if decision == nil && !pending.isEmpty {
            eat(pending[...])
            pending = []
            decide(finished: false)
        }
        if decision == nil { eat([][...]) }  // oslo.utils shows the empty read at the end too
        for inspector in inspectors { inspector.finish() }
        if decision == nil { decide(finished: true) }
        var inspection = FormatInspection(format: nil, virtualSize: nil, failures: [], problem: nil, streamLength: streamLength)
        switch decision {
        case .problem(let problem):
            inspection.problem = problem
        case .format(let inspector):
            inspection.format = inspector.format
            do {
                inspection.failures = try inspector.safetyFailures().map { FormatInspection.Failure(check: $0.check, reason: $0.reason) }
                inspection.virtualSize = try inspector.virtualSize(streamLength: streamLength)
            } catch {
                inspection.problem = "\(error)"
            }
        case nil:
            inspection.problem = "the format could not be decided"
        }
        return inspection
    }

    private func eat(_ chunk: ArraySlice<UInt8>) {
        for inspector in inspectors where !failed.contains(ObjectIdentifier(inspector)) {
            do {
                try inspector.eat(chunk)
            } catch {
                failed.insert(ObjectIdentifier(inspector))
            }
        }
    }

    /// oslo.utils' `InspectWrapper.formats`/`format`, with Ironic's iso-and-gpt rule.
    private func decide(finished: Bool) {
        let specific = inspectors.filter { $0.format != .raw }
        guard finished || specific.allSatisfy(\.isComplete) else { return }
        do {
            let matches = try specific.filter { try $0.formatMatches() }
            switch Set(matches.map(\.format)) {
            case []: decision = .format(inspectors[0])
            case [.iso, .gpt]: decision = .format(matches.first { $0.format == .iso }!)
            case let found where found.count == 1: decision = .format(matches[0])
            default:
                decision = .problem("Multiple formats detected: " + matches.map(\.format.rawValue).joined(separator: ","))
            }
        } catch {
            decision = .problem("\(error)")
        }
    }
}
