import CFileSystem
#if canImport(Glibc)
import Glibc
#endif

/// Writes a stream of bytes to a new file, leaving a hole wherever a whole 4 KiB block is zero:
/// a decompressed disk image takes the space of its data, not of its size (as `qemu-img
/// convert`'s output does). The stream is gathered in a buffer and written in large pieces at
/// explicit offsets; ``finish()`` sets the file's size, so trailing zeros are a hole too. Written
/// ranges are queued for write-back as they go (`sync_file_range`), so a final fsync is short.
/// Not thread-safe: one writer per file.
public final class SparseFileWriter {
    public static let blockSize = 4096
    private let descriptor: Int32
    private let buffer: UnsafeMutableRawBufferPointer
    private var buffered = 0
    /// Where the buffer's first byte goes in the file.
    private var bufferOffset: Int64 = 0
    /// Bytes written so far, holes included.
    public private(set) var size: Int64 = 0
    /// Where the range not yet queued for write-back starts.
    private var writeBackStart: Int64 = 0
    private static let writeBackInterval: Int64 = 8 << 20

    /// A writer to `descriptor` (an empty file opened for writing), gathering `bufferSize` bytes
    /// (a multiple of ``blockSize``) between writes.
    public init(descriptor: Int32, bufferSize: Int = 1 << 20) {
        precondition(bufferSize > 0 && bufferSize % Self.blockSize == 0)
        self.descriptor = descriptor
        buffer = .allocate(byteCount: bufferSize, alignment: Self.blockSize)
    }

    deinit { buffer.deallocate() }

    /// Appends `bytes` (blocking).
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemCallError) {
        var start = 0
        while start < bytes.count {
            let count = min(bytes.count - start, buffer.count - buffered)
            UnsafeMutableRawBufferPointer(rebasing: buffer[buffered..<(buffered + count)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + count)]))
            buffered += count
            start += count
            size += Int64(count)
            if buffered == buffer.count { try flush() }
        }
    }

    /// Writes what is buffered and sets the file's size (blocking).
    public func finish() throws(SystemCallError) {
        try flush()
        guard ftruncate(descriptor, off_t(size)) == 0 else { throw SystemCallError(call: "ftruncate", subject: "", errno: errno) }
    }

    /// Writes the buffer's runs of non-zero blocks at their offsets, skipping zero blocks.
    private func flush() throws(SystemCallError) {
        var block = 0
        while block < buffered {
            while block < buffered && Self.isZero(slice(block)) { block += Self.blockSize }
            let runStart = block
            while block < buffered && !Self.isZero(slice(block)) { block += Self.blockSize }
            let runEnd = min(block, buffered)
            if runEnd > runStart {
                try writeAll(descriptor, UnsafeRawBufferPointer(rebasing: buffer[runStart..<runEnd]), offset: bufferOffset + Int64(runStart))
            }
        }
        bufferOffset += Int64(buffered)
        buffered = 0
        if bufferOffset - writeBackStart >= Self.writeBackInterval {
            // Asynchronous: it only queues the range (its holes cost nothing) for writing.
            _ = iw_start_write_back(descriptor, writeBackStart, bufferOffset - writeBackStart)
            writeBackStart = bufferOffset
        }
    }

    /// The block at `start` (shorter at the buffer's end).
    private func slice(_ start: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: buffer[start..<min(start + Self.blockSize, buffered)])
    }

    /// Whether every byte is zero: the first is, and each equals the next (libc's vectorised memcmp).
    static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return true }
        return bytes[0] == 0 && (bytes.count == 1 || memcmp(base, base + 1, bytes.count - 1) == 0)
    }
}
