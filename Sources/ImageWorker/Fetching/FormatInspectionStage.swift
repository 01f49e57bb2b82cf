import Foundation
import ImageFormats
import ImageServices
import Logging
import Primitives
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// Which formats the worker accepts, and whether it looks at all: Ironic's
/// `[conductor] permitted_image_formats` and `disable_deep_image_inspection` (contract §3.3).
public struct FormatPolicy: Sendable {
    /// Formats an image may have; `raw` permits `gpt` too (Ironic's `RAW_IMAGE_FORMATS`).
    public var permittedFormats: Set<String>
    /// Skips inspection, and the comparison with the declared format.
    public var inspectionDisabled: Bool

    public init(permittedFormats: Set<String> = ["raw", "gpt", "qcow2", "iso"], inspectionDisabled: Bool = false) {
        self.permittedFormats = permittedFormats
        self.inspectionDisabled = inspectionDisabled
    }

    /// Whether `format` is permitted.
    public func permits(_ format: DiskFormat) -> Bool {
        permittedFormats.contains(format.rawValue) || (format == .gpt && permittedFormats.contains("raw"))
    }

    /// Whether `detected` agrees with the declared format (Ironic's rule: declared raw accepts
    /// gpt; aki and ari accept anything).
    public static func agrees(declared: String, detected: DiskFormat) -> Bool {
        let declared = declared.lowercased()
        return declared == detected.rawValue || (declared == "raw" && detected == .gpt) || declared == "aki" || declared == "ari"
    }
}

/// The inspect, permit and compare steps of contract §3.3 on the disk image in its staging file:
/// the format as oslo.utils' inspector (``ImageFormats/FormatDetector``) decides it, its safety
/// checks, the permitted formats, and the declared format. Anything refused is `ImageUnacceptable`
/// and the staging file goes (the fetcher removes it). It reads only what the decision needs (the
/// first 256 KiB for most images, from the page cache just written), never the whole file again,
/// except for a VMDK whose footer must be read.
public struct FormatInspectionStage: ImageTransformStage {
    public let policy: FormatPolicy

    public init(policy: FormatPolicy) {
        self.policy = policy
    }

    /// Inspection changes no bytes, but conversion needs it; the permitted and declared formats
    /// are checked again on every use of a master.
    public var cacheSettings: String? { policy.inspectionDisabled ? nil : "inspect" }

    public func transform(_ image: StagedImage, context: ImageRequestContext, progress: @escaping TransferProgressHandler) async throws -> StagedImage {
        guard !policy.inspectionDisabled else { return image }
        let staging = image.staging
        progress(TransferProgress(phase: .inspect, bytes: 0, total: image.fetched.size))
        let started = ContinuousClock.now
        let inspection = try await BlockingWork.run { cancellation in try Self.inspect(staging, cancellation: cancellation) }
        let reference = image.plan.reference.redacted
        context.logger.info("image format inspected", metadata: [
            "format": "\(inspection.format?.rawValue ?? "none")", "virtual_size": "\(inspection.virtualSize.map(String.init) ?? "unknown")",
            "safe": "\(inspection.isSafe)", "seconds": "\((ContinuousClock.now - started).seconds)",
        ])
        WorkerMetrics.imageInspected(inspection.format)
        guard inspection.isSafe, let format = inspection.format else {
            WorkerMetrics.imageRefused(.unsafe)
            throw IronicError(.imageUnacceptable, "Image \(reference) is unacceptable: its content failed inspection (\(inspection.reasons.joined(separator: "; "))).")
        }
        // The rules judge the content as served: a master converted by an earlier fetch (its
        // source recorded in the cache) is judged by the format it was served in.
        let judged = image.source?.diskFormat ?? format
        guard policy.permits(judged) else {
            WorkerMetrics.imageRefused(.notPermitted)
            throw IronicError(.imageUnacceptable, "Image \(reference) is unacceptable: its format \(judged.rawValue) is not permitted "
                + "([conductor] permitted_image_formats: \(policy.permittedFormats.sorted().joined(separator: ", "))).")
        }
        if let declared = image.plan.declaredFormat, !FormatPolicy.agrees(declared: declared, detected: judged) {
            WorkerMetrics.imageRefused(.formatMismatch)
            throw IronicError(.imageUnacceptable, "Image \(reference) is unacceptable: it is declared \(declared) but its content is \(judged.rawValue).")
        }
        var inspected = image
        inspected.inspection = inspection
        // Under a compression, the source's format is the content's.
        if inspected.source != nil && inspected.source?.diskFormat == nil { inspected.source?.diskFormat = format }
        return inspected
    }

    /// Reads the staged file through a detector until the format is decided; the rest is counted.
    static func inspect(_ staging: StagingFile, cancellation: BlockingWork.CancellationFlag) throws -> FormatInspection {
        try inspect(try staging.openForReading(), cancellation: cancellation)
    }

    /// Reads an open image file from its start through a detector until the format is decided;
    /// the rest of the file is counted, not read (blocking: call it off the cooperative pool).
    public static func inspect(_ file: OwnedDescriptor, cancellation: BlockingWork.CancellationFlag? = nil) throws -> FormatInspection {
        let size = try file.fileStatus().size
        let detector = FormatDetector()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while !detector.isDecided {
            if cancellation?.isCancelled == true { throw CancellationError() }
            let count = try readRetrying(file.rawValue, buffer, offset: offset)
            if count == 0 { break }
            detector.feed(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            offset += Int64(count)
        }
        if detector.isDecided && size > offset { detector.skip(size - offset) }
        return detector.finish()
    }
}
