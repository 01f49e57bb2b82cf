import ArgumentParser
import Foundation
import ImageCompression
import ImageFormats
import ImageWorker
import SystemSupport

#if canImport(Glibc)
import Glibc
#endif

/// `image-worker inspect FILE`: the compression, format, virtual size and safety verdict of a disk
/// image, as the worker decides them before it converts or places an image: a `qemu-img info` that
/// is safe to run on untrusted files (nothing but reading the bytes; compressed content is
/// decompressed in memory and inspected, nothing written).
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print a disk image's compression, format, virtual size and safety verdict (exit 1 when it would be refused).")

    @Argument(help: "The image file.")
    var file: String

    @Flag(help: "Print JSON: compression, format, virtual_size, size (decompressed), safe, reasons, failures.")
    var json = false

    /// The verdict as printed with --json.
    struct Report: Encodable {
        var file: String
        var compression: String?
        var format: String?
        var virtual_size: Int64?
        var size: Int64
        var safe: Bool
        var reasons: [String]
        var failures: [[String: String]]
    }

    func run() throws {
        let (compression, inspection) = try Self.inspect(path: file)
        let report = Report(file: file, compression: compression?.rawValue, format: inspection.format?.rawValue, virtual_size: inspection.virtualSize, size: inspection.streamLength,
                            safe: inspection.isSafe, reasons: inspection.reasons,
                            failures: inspection.failures.map { ["check": $0.check, "reason": $0.reason] })
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print("file: \(file)")
            print("compression: \(report.compression ?? "none")")
            print("format: \(report.format ?? "unknown")")
            print("virtual size: \(report.virtual_size.map { "\($0) bytes" } ?? "unknown")")
            print("size: \(report.size) bytes")
            print("verdict: \(report.safe ? "safe" : "refused")")
            for reason in report.reasons { print("  \(reason)") }
        }
        if !report.safe { throw ExitCode(1) }
    }

    /// Inspects the file as the worker inspects a fetched image (its content, when compressed).
    static func inspect(path: String) throws -> (ImageCompression?, FormatInspection) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ValidationError("cannot open \(path): \(String(cString: strerror(errno)))") }
        return try DecompressionStage.inspectContent(of: OwnedDescriptor(fd))
    }
}
