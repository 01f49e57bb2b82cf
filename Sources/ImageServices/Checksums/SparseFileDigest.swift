import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// The digests of a sparse file, reading only its data: the holes (`SEEK_HOLE`) are hashed as the
/// zeros they read as, from a buffer, without a system call per block. A converted image (1 GiB
/// virtual, half of it holes) is then hashed with half the reads; the hashing itself cannot be
/// skipped (every byte, zeros too, goes through the digest in order). On a file system without
/// `SEEK_DATA` the whole file is data, and this is a plain read.
public enum SparseFileDigest {
    /// Linux's `SEEK_DATA` and `SEEK_HOLE` (<unistd.h> declares them only under _GNU_SOURCE, which
    /// Swift's Glibc module leaves out).
    private static let seekData: Int32 = 3, seekHole: Int32 = 4

    /// The digests of the open file (blocking: call from ``BlockingWork``).
    public static func digests(of file: OwnedDescriptor, algorithms: Set<HashAlgorithm>,
                               cancellation: BlockingWork.CancellationFlag) throws -> [HashAlgorithm: String] {
        let size = try file.fileStatus().size
        var digest = try MultiDigest(algorithms)
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        var offset: Int64 = 0
        while offset < size {
            if cancellation.isCancelled { throw CancellationError() }
            // The next data at or after `offset`; ENXIO: none, the rest is a hole.
            var data = Int64(lseek(file.rawValue, off_t(offset), Self.seekData))
            if data < 0 {
                guard errno == ENXIO else { throw SystemCallError(call: "lseek", subject: "SEEK_DATA", errno: errno) }
                data = size
            }
            var hole = min(data, size) - offset
            while hole > 0 {
                let count = Int(min(hole, Int64(chunk)))
                digest.update(UnsafeRawBufferPointer(rebasing: zeros[..<count]))
                hole -= Int64(count)
            }
            guard data < size else { break }
            let end = min(Int64(lseek(file.rawValue, off_t(data), Self.seekHole)), size)
            guard end > data else { throw SystemCallError(call: "lseek", subject: "SEEK_HOLE", errno: errno) }
            offset = data
            while offset < end {
                if cancellation.isCancelled { throw CancellationError() }
                let wanted = Int(min(end - offset, Int64(chunk)))
                let count = try readRetrying(file.rawValue, UnsafeMutableRawBufferPointer(rebasing: buffer[..<wanted]), offset: offset)
                guard count > 0 else { throw SystemCallError(call: "read", subject: "a file that shrank while it was hashed", errno: EIO) }
                digest.update(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
                offset += Int64(count)
            }
        }
        return digest.finalize()
    }
}
