import Foundation
import ImageFormats
import ImageServices
import Logging
import Primitives
import Subprocess
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// `[DEFAULT] force_raw_images` and `[disk_utils] image_convert_memory_limit`,
/// `image_convert_attempts` (Ironic's options and defaults).
public struct ConversionSettings: Sendable {
    /// Convert qcow2, vmdk, vhd, vhdx and vdi images to raw.
    public var forceRaw: Bool
    /// The address space `qemu-img` may use, in MiB.
    public var memoryLimitMiB: Int
    /// Tries of one conversion.
    public var attempts: Int
    /// `[image_worker] max_image_size`: the largest virtual size converted (0: no limit but the disk).
    public var maxImageSize: Int64

    public init(forceRaw: Bool = true, memoryLimitMiB: Int = 2048, attempts: Int = 3, maxImageSize: Int64 = 0) {
        self.forceRaw = forceRaw
        self.memoryLimitMiB = memoryLimitMiB
        self.attempts = attempts
        self.maxImageSize = maxImageSize
    }
}

/// The convert step of contract §3.3: an inspected qcow2, vmdk, vhd, vhdx or vdi image becomes
/// raw with `qemu-img convert -f <detected> -O raw` (never a guessed format: CVE-2024-44082), run
/// under an address-space limit (`prlimit --as`), after its virtual size was reserved on the
/// disk. The output is sparse, inspected again (anything but raw or gpt is refused) and hashed;
/// it replaces the staged image, which keeps what was served as its ``StagedImage/source``.
/// Cancelling the task kills `qemu-img` (swift-subprocess's teardown) and removes its output.
public struct ImageConversionStage: ImageTransformStage {
    public let settings: ConversionSettings
    private let ledger: DiskSpaceLedger

    public init(settings: ConversionSettings, ledger: DiskSpaceLedger = .shared) {
        self.settings = settings
        self.ledger = ledger
    }

    public var cacheSettings: String? { settings.forceRaw ? "raw max_image_size=\(settings.maxImageSize)" : nil }

    public func transform(_ image: StagedImage, context: ImageRequestContext, progress: @escaping TransferProgressHandler) async throws -> StagedImage {
        // A master cache hit is already what the stages made of the image: never converted twice.
        guard settings.forceRaw, image.cache != .hit, let inspection = image.inspection, let format = inspection.format,
              format.isConvertibleToRaw else { return image }
        let reference = image.plan.reference.redacted
        if settings.maxImageSize > 0, let virtualSize = inspection.virtualSize, virtualSize > settings.maxImageSize {
            WorkerMetrics.imageRefused(.tooLarge)
            throw IronicError(.imageUnacceptable, "Image \(reference) is unacceptable: its virtual size (\(virtualSize) bytes) exceeds "
                + "[image_worker] max_image_size (\(settings.maxImageSize) bytes).")
        }
        progress(TransferProgress(phase: .convert, bytes: 0, total: inspection.virtualSize))
        let directory = image.staging.directory, ledger = self.ledger
        // The output is sparse, but may take every byte of the virtual size.
        let reservation = try await BlockingWork.run { _ in try ledger.reserve(inspection.virtualSize ?? 0, limit: nil, in: directory) }
        defer { reservation.release() }
        let output = StagingFile(in: directory, finalName: image.staging.finalName, mode: image.staging.mode)
        let started = ContinuousClock.now
        do {
            try await convert(image.staging, as: format, into: output, reservation: reservation, reference: reference, logger: context.logger) { allocated in
                progress(TransferProgress(phase: .convert, bytes: allocated, total: inspection.virtualSize))
            }
            let algorithm: HashAlgorithm = image.checksum.algorithm == .sha512 ? .sha512 : .sha256
            let converting = ContinuousClock.now - started
            let (converted, size, digest) = try await BlockingWork.run { cancellation in
                try Self.finish(output, algorithm: algorithm, cancellation: cancellation)
            }
            guard converted.isSafe, let convertedFormat = converted.format, convertedFormat.isRaw else {
                WorkerMetrics.imageRefused(.conversionFailed)
                throw IronicError(.imageUnacceptable, "Image \(reference) was converted to raw, but its format is now \(converted.format?.rawValue ?? "unknown").")
            }
            WorkerMetrics.imageConverted(from: format, duration: ContinuousClock.now - started)
            context.logger.info("image converted to raw", metadata: [
                "from": "\(format.rawValue)", "virtual_size": "\(inspection.virtualSize ?? 0)", "size": "\(size)",
                "seconds": "\((ContinuousClock.now - started).seconds)", "convert_seconds": "\(converting.seconds)",
                "inspect_and_hash_seconds": "\((ContinuousClock.now - started - converting).seconds)",
            ])
            await image.staging.discardOffPool()
            var result = image
            result.source = image.source ?? image.served
            result.staging = output
            result.fetched.size = size
            result.checksum = try ImageChecksum(algorithm: algorithm, value: digest)
            result.inspection = converted
            return result
        } catch {
            await output.discardOffPool()
            throw error
        }
    }

    /// `qemu-img convert`, tried up to `attempts` times. While it runs, what it has allocated is
    /// counted against the reservation once a second, so that the ledger does not count those
    /// bytes twice (statvfs already does).
    private func convert(_ input: StagingFile, as format: DiskFormat, into output: StagingFile, reservation: DiskReservation,
                         reference: String, logger: Logger, allocated: @escaping @Sendable (Int64) -> Void) async throws {
        let arguments = ["--as=\(settings.memoryLimitMiB << 20)", "--", "qemu-img", "convert", "-q", "-f", format.qemuName, "-O", "raw",
                         input.temporaryPath, output.temporaryPath]
        var lastError = ""
        for attempt in 1...max(settings.attempts, 1) {
            // swift-subprocess kills the child on cancellation and returns its signal status: a
            // cancelled task must end cancelled (and be requeued), not as a failed conversion.
            try Task.checkCancellation()
            var status: TerminationStatus = .exited(-1)
            do {
                // The conversion, and beside it a poller that stops when the conversion returns.
                let ran = try await withThrowingTaskGroup(of: (TerminationStatus, String)?.self) { group in
                    group.addTask {
                        let result = try await Subprocess.run(.name("prlimit"), arguments: Arguments(arguments), output: .discarded,
                                                              error: .string(limit: 1 << 20))
                        return (result.terminationStatus, result.standardError)
                    }
                    group.addTask {
                        while !Task.isCancelled {
                            try? await Task.sleep(for: .seconds(1))
                            if let bytes = try? await BlockingWork.run({ _ in try Self.coverAllocated(output, by: reservation) }) { allocated(bytes) }
                        }
                        return nil
                    }
                    defer { group.cancelAll() }
                    while let next = try await group.next() {
                        if let next { return next }
                    }
                    return (TerminationStatus.exited(-1), "")
                }
                status = ran.0
                lastError = ran.1.trimmingCharacters(in: .whitespacesAndNewlines)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                lastError = "\(error)"  // qemu-img could not be started, or wrote more than 1 MiB of errors
            }
            try Task.checkCancellation()
            if status.isSuccess { return }
            logger.warning("qemu-img convert failed", metadata: ["attempt": "\(attempt)", "status": "\(status)", "error": "\(lastError)"])
            await output.discardOffPool()
            if lastError.contains("No space left on device") {
                throw IronicError(.insufficientDiskSpace, "Disk volume where '\(output.directory.path)' is located ran out of space while image \(reference) was converted to raw.")
            }
        }
        WorkerMetrics.imageRefused(.conversionFailed)
        throw IronicError(.imageUnacceptable, "Image \(reference) could not be converted from \(format.rawValue) to raw after \(max(settings.attempts, 1)) attempts: \(lastError.prefix(500))")
    }

    /// Counts the blocks the output holds so far as written, and queues what qemu-img wrote for
    /// write-back (so that the disk works during the conversion, and the final fsync is short);
    /// returns how many bytes the output takes.
    private static func coverAllocated(_ output: StagingFile, by reservation: DiskReservation) throws -> Int64 {
        guard let file = try? output.openForReading() else { return 0 }  // not created yet
        let allocated = try file.fileStatus().allocatedBytes
        try reservation.cover(upTo: allocated)
        file.startWriteBack()
        return allocated
    }

    /// Sets the output's mode, inspects it again and hashes it (one read of its data; its holes
    /// are hashed without being read).
    private static func finish(_ output: StagingFile, algorithm: HashAlgorithm,
                               cancellation: BlockingWork.CancellationFlag) throws -> (FormatInspection, Int64, String) {
        let file = try output.openForReading()
        _ = try SystemCallError.check(fchmod(file.rawValue, output.mode), "chmod", output.finalPath)
        let size = try file.fileStatus().size
        // The disk writes what is left while the output is inspected and hashed.
        file.startWriteBack()
        let inspection = try FormatInspectionStage.inspect(output, cancellation: cancellation)
        let digests = try SparseFileDigest.digests(of: file, algorithms: [algorithm], cancellation: cancellation)
        try file.sync()
        return (inspection, size, digests[algorithm] ?? "")
    }
}
