import Primitives
import SystemSupport
import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `file://` images: a local file, hard-linked into the node's folder when it is on the same file
/// system (no bytes move; the node's file shares the source's inode), copied otherwise.
///
/// Safety, beyond Ironic's: the policy is checked on the path as given *and* on the path with
/// symlinks resolved (Ironic checks only the first, so a symlink in an allowed folder could reach
/// `/etc`); the file is opened once and everything after — the type check, the hash, the link or
/// copy — works on that descriptor, whose kernel path is checked again, so swapping files or
/// folders midway cannot redirect the read. Only regular files are accepted (no devices, FIFOs
/// or directories), and `/dev/zero` is refused before anything is opened.
public struct FileImageService: ImageService {
    public let name = "file"
    public let schemes = ["file"]

    /// Which paths may be read.
    public let policy: FilePathPolicy
    /// The read size for hashing.
    public var chunkSize: Int
    /// Digests of sources already read, so that an unchanged source is not hashed again.
    public let digestMemo: FileDigestMemo

    /// Creates the service.
    public init(policy: FilePathPolicy, chunkSize: Int = 1 << 20, digestMemo: FileDigestMemo = FileDigestMemo()) {
        self.policy = policy
        self.chunkSize = chunkSize
        self.digestMemo = digestMemo
    }

    public func show(_ reference: ImageReference, context: ImageRequestContext) async throws -> ImageMetadata {
        let policy = self.policy
        return try await BlockingWork.run { _ in
            let file = try Self.open(reference, policy: policy)
            return file.metadata
        }
    }

    public func fetch(_ request: ImageFetchRequest) async throws -> FetchedImage {
        let policy = self.policy
        let chunkSize = self.chunkSize
        let memo = digestMemo
        return try await BlockingWork.run { cancellation in
            let file = try Self.open(request.reference, policy: policy)
            let size = file.metadata.size ?? 0
            let known = memo.digests(for: file.status, algorithms: request.digestAlgorithms)
            do {
                try request.destination.link(from: file.descriptor)
                request.diskReservation?.release()  // a link takes no space
                request.progress(TransferProgress(phase: .link, bytes: size, total: size))
                let digests = try known ?? Self.digest(file, algorithms: request.digestAlgorithms, chunkSize: chunkSize, memo: memo,
                                                       cancellation: cancellation, progress: request.progress)
                return FetchedImage(size: size, digests: digests, transfer: .hardlink, bytesTransferred: 0, metadata: file.metadata)
            } catch let error as SystemCallError where Self.linkFailuresThatMeanCopy.contains(error.errno) {
                request.context.logger.debug("hard link not possible, copying", metadata: ["reason": "\(error.reason)"])
            }
            do {
                try request.diskReservation?.cover(upTo: size)
            } catch let overrun as DiskReservation.Overrun {
                throw IronicError(.imageDownloadFailed, "The image file \(request.reference.redacted) changed: \(overrun).")
            }
            let copied: Int64, digests: [HashAlgorithm: String]
            do {
                (copied, digests) = try Self.copy(file, to: request.destination, known: known, algorithms: request.digestAlgorithms,
                                                  chunkSize: chunkSize, memo: memo, cancellation: cancellation, progress: request.progress)
            } catch {
                throw DiskSpace.explainingFull(error, in: request.destination.directory.path)
            }
            return FetchedImage(size: copied, digests: digests, transfer: .copy, bytesTransferred: copied, metadata: file.metadata)
        }
    }

    /// `link(2)` errors after which copying is the right answer: another file system, links not
    /// permitted (protected_hardlinks, ownership), too many links, or not supported.
    static let linkFailuresThatMeanCopy: Set<Int32> = [EXDEV, EPERM, EACCES, EMLINK, EOPNOTSUPP, ENOTSUP]

    // MARK: Opening safely

    struct OpenFile {
        var descriptor: OwnedDescriptor
        var path: String
        var metadata: ImageMetadata
        /// `fstat` at opening.
        var status: stat
    }

    static func open(_ reference: ImageReference, policy: FilePathPolicy) throws -> OpenFile {
        let shown = reference.redacted
        guard let components = reference.urlComponents else {
            throw IronicError(.invalidImageRef, "Invalid image href \(shown).")
        }
        if let host = components.authority?.host, !host.isEmpty, host.lowercased() != "localhost" {
            throw IronicError.validationFailed(shown, "file URLs name a local path; host '\(host)' is not supported (write file:///path).")
        }
        guard components.path.hasPrefix("/") else {
            throw IronicError.validationFailed(shown, "file URLs need an absolute path (file:///path).")
        }
        // Ironic reads the path as it is written; RFC 8089 percent-encodes it. Take the literal
        // path when such a file exists, the decoded one otherwise; both go through every check.
        var candidates = [components.path]
        if let decoded = percentDecoded(components.path), decoded != components.path { candidates.append(decoded) }
        for candidate in candidates { try policy.checkNotBlocked(FilePathPolicy.normalize(candidate), reference: shown) }
        // The allowlist before existence (Ironic's order): "not found" must say nothing about a
        // path the caller may not use. A decoded spelling outside it is not a candidate (the
        // literal one, which Ironic reads, may still be allowed); with none left, the refusal.
        let allowed = candidates.filter { (try? policy.check(FilePathPolicy.normalize($0), reference: shown)) != nil }
        if allowed.isEmpty { try policy.check(FilePathPolicy.normalize(components.path), reference: shown) }
        guard let requested = allowed.first(where: { lstatExists($0) }) else {
            throw IronicError.validationFailed(shown, "Specified image file not found.")
        }
        let resolved = try resolvedPath(requested, reference: shown)
        // The path as written must be allowed (Ironic's rule), and so must the file it leads to;
        // an allowed folder that is itself a symlink allows what lies in its target.
        let resolvedAllowed = policy.allowedPaths.compactMap { try? resolvedPath($0, reference: shown) }
        let resolvedWorker = policy.workerPaths.compactMap { try? resolvedPath($0, reference: shown) }
        try policy.check(FilePathPolicy.normalize(requested), reference: shown)
        try policy.check(resolved, reference: shown, resolvedAllowedPaths: resolvedAllowed, resolvedWorkerPaths: resolvedWorker)

        let fd = Glibc.open(resolved, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else {
            let error = errno
            if error == ENOENT || error == ELOOP { throw IronicError.validationFailed(shown, "Specified image file not found.") }
            throw IronicError.validationFailed(shown, "the image file cannot be opened: \(String(cString: strerror(error))).")
        }
        let descriptor = OwnedDescriptor(fd)
        let info = try descriptor.status()
        guard info.isRegularFile else {
            throw IronicError.validationFailed(shown, "Specified image file is not a regular file.")
        }
        // What was opened is what the kernel says, whatever happened to the path meanwhile.
        let opened = try descriptor.currentPath()
        try policy.check(opened, reference: shown, resolvedAllowedPaths: resolvedAllowed, resolvedWorkerPaths: resolvedWorker)
        let metadata = ImageMetadata(size: Int64(info.st_size), updatedAtMicroseconds: info.modificationMicroseconds, noCache: true)
        return OpenFile(descriptor: descriptor, path: opened, metadata: metadata, status: info)
    }

    private static func lstatExists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    private static func resolvedPath(_ path: String, reference: String) throws(IronicError) -> String {
        guard let resolved = realpath(path, nil) else {
            let error = errno
            if error == ENOENT || error == ENOTDIR || error == ELOOP {
                throw IronicError.validationFailed(reference, "Specified image file not found.")
            }
            throw IronicError.validationFailed(reference, "the image path cannot be resolved: \(String(cString: strerror(error))).")
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// `%XX` decoded, or nil when the path has a malformed escape, a NUL, or is not UTF-8 once decoded.
    static func percentDecoded(_ path: String) -> String? {
        guard let decoded = PercentEncoding.decode(path), !decoded.utf8.contains(0) else { return nil }
        return decoded
    }

    // MARK: Moving bytes

    /// Reads and hashes the file, and remembers the digests when the file did not change meanwhile.
    private static func digest(_ file: OpenFile, algorithms: Set<HashAlgorithm>, chunkSize: Int, memo: FileDigestMemo,
                               cancellation: BlockingWork.CancellationFlag, progress: TransferProgressHandler,
                               phase: TransferProgress.Phase = .verify) throws -> [HashAlgorithm: String] {
        let digests = try stream(file.descriptor, size: file.metadata.size, into: nil, phase: phase, algorithms: algorithms,
                                 chunkSize: chunkSize, cancellation: cancellation, progress: progress).1
        if let after = try? file.descriptor.status(), FileDigestMemo.Key(after) == FileDigestMemo.Key(file.status) {
            memo.record(digests, for: file.status)
        }
        return digests
    }

    /// The digests of a whole open file (blocking: call from ``BlockingWork``).
    public static func digests(of file: OwnedDescriptor, algorithms: Set<HashAlgorithm>, cancellation: BlockingWork.CancellationFlag) throws -> [HashAlgorithm: String] {
        try stream(file, size: nil, into: nil, phase: .verify, algorithms: algorithms, chunkSize: 1 << 20, cancellation: cancellation) { _ in }.1
    }

    /// Copies the file inside the kernel (``KernelCopy``) on a thread of its own while this one
    /// reads and hashes it (unless its digests are known): on two cores the copy costs about what
    /// the hash does, not the sum of both. The copy is flushed to disk before it is placed.
    private static func copy(_ file: OpenFile, to destination: StagingFile, known: [HashAlgorithm: String]?, algorithms: Set<HashAlgorithm>,
                             chunkSize: Int, memo: FileDigestMemo, cancellation: BlockingWork.CancellationFlag,
                             progress: TransferProgressHandler) throws -> (Int64, [HashAlgorithm: String]) {
        let output = try destination.create()
        let source = file.descriptor
        let copier = try ThreadResult("image-copy") { try KernelCopy.copy(from: source.rawValue, to: output.rawValue, expectedSize: file.metadata.size, cancellation: cancellation) }
        let digests: [HashAlgorithm: String]
        do {
            digests = try known ?? digest(file, algorithms: algorithms, chunkSize: chunkSize, memo: memo, cancellation: cancellation,
                                          progress: progress, phase: .download)
        } catch {
            cancellation.cancel()
            _ = try? copier.wait()
            throw error
        }
        let copied = try copier.wait()
        let size = file.metadata.size ?? copied
        guard copied == size else {
            throw IronicError(.imageDownloadFailed, "The image file changed while it was copied (\(copied) bytes copied, \(size) expected).")
        }
        // The copy and the hash read the file separately: they saw the same bytes only if the
        // file did not change meanwhile (a rewrite in place at the same size changes its mtime).
        guard let after = try? source.status(), FileDigestMemo.Key(after) == FileDigestMemo.Key(file.status) else {
            throw IronicError(.imageDownloadFailed, "The image file changed while it was copied (its modification time or size moved).")
        }
        progress(TransferProgress(phase: .download, bytes: copied, total: size))
        try output.sync()
        return (copied, digests)
    }

    /// Reads the whole file once, hashing every chunk and writing it to `output` when given.
    private static func stream(_ file: OwnedDescriptor, size total: Int64?, into output: OwnedDescriptor?, phase: TransferProgress.Phase,
                               algorithms: Set<HashAlgorithm>, chunkSize: Int, cancellation: BlockingWork.CancellationFlag,
                               progress: TransferProgressHandler) throws -> (Int64, [HashAlgorithm: String]) {
        var digest = try MultiDigest(algorithms)
        var offset: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            if cancellation.isCancelled { throw CancellationError() }
            let count = try readRetrying(file.rawValue, buffer, offset: offset)
            if count == 0 { break }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[..<count])
            if let output { try writeAll(output.rawValue, chunk) }
            digest.update(chunk)
            offset += Int64(count)
            progress(TransferProgress(phase: phase, bytes: offset, total: total))
        }
        return (offset, digest.finalize())
    }
}
