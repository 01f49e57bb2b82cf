import SystemSupport
import CFileSystem

#if canImport(Glibc)
import Glibc
#endif

/// Copies a whole file without the bytes passing through user space: `copy_file_range(2)` (which
/// may also reflink), else `sendfile(2)` (across file systems, where recent kernels refuse
/// copy_file_range), else plain reads and writes. Blocking: call it off the cooperative pool.
enum KernelCopy {
    /// The most asked of the kernel per call, so that cancellation is noticed between calls.
    private static let step = 64 << 20

    /// Copies `source` from its start to `output` at its offset; returns the bytes copied.
    /// `expectedSize`, when known, tells an early end (some file systems answer 0 to
    /// copy_file_range or sendfile before the end) from the real one: the next method is tried.
    static func copy(from source: Int32, to output: Int32, expectedSize: Int64? = nil, cancellation: BlockingWork.CancellationFlag?) throws -> Int64 {
        var offset: Int64 = 0
        var method = Method.copyFileRange
        while true {
            if cancellation?.isCancelled == true { throw CancellationError() }
            let copied: Int
            switch method {
            case .copyFileRange: copied = iw_copy_file_range(source, &offset, output, step)
            case .sendfile: copied = iw_sendfile(output, source, &offset, step)
            case .readWrite: copied = try readWrite(source, &offset, output)
            }
            if copied > 0 { continue }
            if copied == 0 {
                guard let expectedSize, offset < expectedSize, method != .readWrite else { return offset }
                method = method == .copyFileRange ? .sendfile : .readWrite
                continue
            }
            let error = errno
            if error == EINTR { continue }
            // Both offsets stay consistent across methods (the source's is ours, the output's is the
            // file position every method advances), so falling back midway is safe.
            if method == .copyFileRange, [EXDEV, EINVAL, EOPNOTSUPP, ENOSYS, EBADF].contains(error) {
                method = .sendfile
            } else if method == .sendfile, [EINVAL, ENOSYS].contains(error) {
                method = .readWrite
            } else {
                throw SystemCallError(call: method.rawValue, subject: "the image copy", errno: error)
            }
        }
    }

    private enum Method: String {
        case copyFileRange = "copy_file_range", sendfile, readWrite = "write"
    }

    private static func readWrite(_ source: Int32, _ offset: inout Int64, _ output: Int32) throws -> Int {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        let count = try readRetrying(source, buffer, offset: offset)
        if count > 0 { try writeAll(output, UnsafeRawBufferPointer(rebasing: buffer[..<count])) }
        offset += Int64(count)
        return count
    }
}
