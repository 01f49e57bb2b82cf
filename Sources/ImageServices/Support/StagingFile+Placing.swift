import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

extension StagingFile {
    /// `FICLONE` (`_IOW(0x94, 9, int)`): share the source's extents (btrfs, XFS with reflink).
    private static let ficlone: UInt = 0x4004_9409

    /// Puts the content of the open file `source` under the temporary name as cheaply as the file
    /// systems allow: a hard link on the same file system, else a reflink where supported, else a
    /// copy. Returns which it was.
    public func place(from source: OwnedDescriptor, cancellation: BlockingWork.CancellationFlag? = nil) throws -> ImageTransfer {
        do {
            try link(from: source)
            return .hardlink
        } catch {
            // Another file system, or links not allowed: a reflink or a copy instead.
            guard [EXDEV, EPERM, EACCES, EMLINK, EOPNOTSUPP, ENOTSUP].contains(error.errno) else { throw error }
        }
        // A copy takes the source's size on this file system: reserved like a download's.
        var info = stat()
        _ = try SystemCallError.check(fstat(source.rawValue, &info), "stat", "the image to place")
        let reservation = try DiskSpaceLedger.shared.reserve(Int64(info.st_size), limit: nil, in: directory)
        defer { reservation.release() }
        let output = try create()
        if ioctl(output.rawValue, Self.ficlone, source.rawValue) == 0 {
            try output.sync()
            return .reflink
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        do {
            while true {
                if cancellation?.isCancelled == true { throw CancellationError() }
                let count = try readRetrying(source.rawValue, buffer, offset: offset)
                if count == 0 { break }
                try reservation.cover(upTo: offset + Int64(count))
                try writeAll(output.rawValue, UnsafeRawBufferPointer(rebasing: buffer[..<count]))
                offset += Int64(count)
            }
            try output.sync()
        } catch {
            throw DiskSpace.explainingFull(error, in: directory.path)
        }
        return .copy
    }
}
