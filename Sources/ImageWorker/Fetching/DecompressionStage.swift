import ImageCompression
import ImageFormats
import ImageServices
import Logging
import Primitives
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// `[image_worker] decompress_images`, `max_image_size` and `[conductor] disable_zstandard_decompression`.
public struct DecompressionSettings: Sendable {
    /// Decompress at all.
    public var enabled: Bool
    /// Decompress zstd (Ironic's `disable_zstandard_decompression` turns it off).
    public var zstd: Bool
    /// The largest decompressed size, in bytes (0: no limit but the free space).
    public var maxImageSize: Int64

    public init(enabled: Bool = true, zstd: Bool = true, maxImageSize: Int64 = 0) {
        self.enabled = enabled
        self.zstd = zstd
        self.maxImageSize = maxImageSize
    }

    /// Whether content in `compression` is decompressed.
    public func decompresses(_ compression: ImageCompression) -> Bool {
        enabled && (compression != .zstd || zstd)
    }
}

/// The decompress step of contract §3.3: a verified disk image whose content starts with the
/// magic of zstd, gzip, xz or bzip2 is decompressed, streaming, into a new staging file (sparse:
/// zero blocks are holes) and hashed in the same pass (on a second thread). The decompressed size may not pass
/// `max_image_size` nor the free space: a bomb stops as soon as it does (a zstd frame that
/// declares its size is refused before any work), `ImageUnacceptable`, and nothing is left. The
/// compressed file, as served, becomes the image's ``StagedImage/source``.
public struct DecompressionStage: ImageTransformStage {
    public let settings: DecompressionSettings
    private let ledger: DiskSpaceLedger

    public init(settings: DecompressionSettings, ledger: DiskSpaceLedger = .shared) {
        self.settings = settings
        self.ledger = ledger
    }

    /// Why decompression stopped before the end.
    private enum Stop: Error {
        case maxImageSize(Int64)
        case freeSpace(available: Int64)
        case corrupt(DecompressionError)
    }

    public var cacheSettings: String? {
        guard settings.enabled else { return nil }
        let compressions = ImageCompression.allCases.filter(settings.decompresses).map(\.rawValue).joined(separator: ",")
        return "decompress=\(compressions) max_image_size=\(settings.maxImageSize)"
    }

    public func transform(_ image: StagedImage, context: ImageRequestContext, progress: @escaping TransferProgressHandler) async throws -> StagedImage {
        // A master cache hit is already what the stages made of the image (its key names their
        // settings): its bytes may start with a magic again, and are not decompressed twice.
        guard settings.enabled, image.cache != .hit else { return image }
        let input = image.staging
        let head = try await BlockingWork.run { _ in try Self.head(of: try input.openForReading(), count: 32) }
        guard let compression = ImageCompression.detect(head), settings.decompresses(compression) else { return image }
        let reference = image.plan.reference.redacted
        let output = StagingFile(in: input.directory, finalName: input.finalName, mode: input.mode)
        let algorithm: HashAlgorithm = image.checksum.algorithm == .sha512 ? .sha512 : .sha256
        let started = ContinuousClock.now
        let settings = self.settings, ledger = self.ledger, compressedSize = image.fetched.size
        let size: Int64, digest: String
        do {
            (size, digest) = try await BlockingWork.run { cancellation in
                try Self.decompress(input, compression: compression, head: head, into: output, algorithm: algorithm, settings: settings,
                                    ledger: ledger, cancellation: cancellation) { consumed in
                    progress(TransferProgress(phase: .decompress, bytes: consumed, total: compressedSize))
                }
            }
        } catch {
            await output.discardOffPool()
            throw Self.explained(error, compression: compression, reference: reference, directory: input.directory.path)
        }
        let duration = ContinuousClock.now - started
        WorkerMetrics.imageDecompressed(compression, duration: duration)
        context.logger.info("image decompressed", metadata: [
            "compression": "\(compression.rawValue)", "compressed_size": "\(compressedSize)", "size": "\(size)", "seconds": "\(duration.seconds)",
        ])
        let checksum: ImageChecksum
        do {
            checksum = try ImageChecksum(algorithm: algorithm, value: digest)
        } catch {
            await output.discardOffPool()
            throw error
        }
        var result = image
        result.source = ImageSource(diskFormat: nil, compression: compression.rawValue, size: compressedSize, checksum: image.checksum)
        result.staging = output
        result.fetched.size = size
        result.checksum = checksum
        result.inspection = nil
        await input.discardOffPool()
        return result
    }

    /// The refusal (or failure) an error of ``decompress`` stands for.
    private static func explained(_ error: any Error, compression: ImageCompression, reference: String, directory: String) -> any Error {
        switch error {
        case Stop.maxImageSize(let limit):
            WorkerMetrics.imageRefused(.tooLarge)
            return IronicError(.imageUnacceptable, "Image \(reference) is unacceptable: its decompressed size exceeds "
                + "[image_worker] max_image_size (\(limit) bytes); decompression was stopped there.")
        case Stop.freeSpace(let available):
            WorkerMetrics.imageRefused(.tooLarge)
            return IronicError(.imageUnacceptable, "Image \(reference) is unacceptable: its decompressed size exceeds the free space "
                + "where '\(directory)' is located (\(available >> 20) MiB); decompression was stopped there.")
        case Stop.corrupt(let failure):
            WorkerMetrics.imageRefused(.decompressionFailed)
            return IronicError(.imageUnacceptable, "Image \(reference) is unacceptable: \(failure).")
        default:
            return DiskSpace.explainingFull(error, in: directory)
        }
    }

    /// The content's first `count` bytes (32: enough for any compression's magic and zstd's
    /// frame header), fewer when the file is shorter.
    private static func head(of file: OwnedDescriptor, count: Int) throws -> [UInt8] {
        var head = [UInt8](repeating: 0, count: count)
        let read = try head.withUnsafeMutableBytes { try readRetrying(file.rawValue, $0, offset: 0) }
        return Array(head.prefix(read))
    }

    /// Reads `file` from its start through `decompressor` to its end, handing each decompressed
    /// piece to `output`; `progress` gets the compressed bytes read. Blocking.
    private static func decompress(_ file: OwnedDescriptor, with decompressor: any StreamDecompressor,
                                   cancellation: BlockingWork.CancellationFlag?, progress: (Int64) -> Void,
                                   output: (UnsafeRawBufferPointer) throws -> Void) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while true {
            if cancellation?.isCancelled == true { throw CancellationError() }
            let count = try readRetrying(file.rawValue, buffer, offset: offset)
            if count == 0 { break }
            try decompressor.decompress(UnsafeRawBufferPointer(rebasing: buffer[..<count]), output: output)
            offset += Int64(count)
            progress(offset)
        }
        try decompressor.finish(output: output)
    }

    /// Decompresses `input` into `output` (created here), hashing what comes out, within the
    /// limits; returns the decompressed size and digest. Blocking.
    private static func decompress(_ input: StagingFile, compression: ImageCompression, head: [UInt8], into output: StagingFile,
                                   algorithm: HashAlgorithm, settings: DecompressionSettings, ledger: DiskSpaceLedger,
                                   cancellation: BlockingWork.CancellationFlag, progress: (Int64) -> Void) throws -> (Int64, String) {
        let limit = settings.maxImageSize > 0 ? settings.maxImageSize : nil
        // A size the header declares is refused before any work when it is past a limit.
        let declared = head.withUnsafeBytes { ImageCompression.declaredSize(of: compression, head: $0) }.map { Int64(clamping: $0) }
        if let declared, let limit, declared > limit { throw Stop.maxImageSize(limit) }
        // The free space is a limit on the decompressed size as such, holes included: zero blocks
        // take no space, and a bomb of zeros would otherwise never fill the disk (it would run
        // for days instead). What the image really writes is reserved as it goes.
        let room = try ledger.unreserved(in: output.directory)
        if let declared, declared > room { throw Stop.freeSpace(available: room) }
        let reservation: DiskReservation
        do {
            reservation = try ledger.reserve(declared ?? 0, limit: nil, in: output.directory)
        } catch let error as IronicError where error.code == .insufficientDiskSpace {
            throw Stop.freeSpace(available: (try? ledger.unreserved(in: output.directory)) ?? 0)
        }
        defer { reservation.release() }

        let source = try input.openForReading()
        let destination = try output.create()
        let writer = SparseFileWriter(descriptor: destination.rawValue)
        // Hashed on a second thread: decompressing and writing use the first.
        let digest = try BackgroundDigest([algorithm])
        let decompressor: any StreamDecompressor
        do { decompressor = try compression.makeDecompressor() } catch { throw Stop.corrupt(error) }
        // Each decompressed piece: within the limits (counted before it is written), hashed, written.
        func accept(_ piece: UnsafeRawBufferPointer) throws {
            // One compressed chunk can make gigabytes: cancellation is looked at for each piece out.
            if cancellation.isCancelled { throw CancellationError() }
            let end = writer.size + Int64(piece.count)
            if let limit, end > limit { throw Stop.maxImageSize(limit) }
            if end > room { throw Stop.freeSpace(available: room) }
            do {
                try reservation.cover(upTo: end)
            } catch let error as IronicError where error.code == .insufficientDiskSpace {
                throw Stop.freeSpace(available: (try? ledger.unreserved(in: output.directory)) ?? 0)
            }
            digest.update(piece)
            try writer.write(piece)
        }
        do {
            try decompress(source, with: decompressor, cancellation: cancellation, progress: progress, output: accept)
        } catch let error as DecompressionError {
            throw Stop.corrupt(error)
        }
        try writer.finish()
        try destination.sync()
        return (writer.size, try digest.finalize()[algorithm] ?? "")
    }

    /// The compression of an open image file, if any, and the format of its content, decompressed
    /// in memory as it is read (nothing is written): `image-worker inspect` on a compressed file.
    /// Blocking.
    public static func inspectContent(of file: OwnedDescriptor) throws -> (ImageCompression?, FormatInspection) {
        guard let compression = ImageCompression.detect(try head(of: file, count: ImageCompression.magicLength)) else {
            return (nil, try FormatInspectionStage.inspect(file))
        }
        let detector = FormatDetector()
        try decompress(file, with: try compression.makeDecompressor(), cancellation: nil, progress: { _ in }) { detector.feed($0) }
        return (compression, detector.finish())
    }
}
