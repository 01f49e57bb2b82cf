import CFileSystem
import Foundation  // so that `stat` and its members resolve as in the modules that use Foundation
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call: which call, on what, and `errno`.
public struct SystemCallError: Error, Sendable, Hashable, CustomStringConvertible {
    public var call: String
    public var subject: String
    public var errno: Int32

    /// Describes a failed call.
    public init(call: String, subject: String, errno: Int32) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    /// Describes a failed call from what swift-system threw (an `Errno`).
    public init(call: String, subject: String, _ error: any Error) {
        self.init(call: call, subject: subject, errno: (error as? Errno)?.rawValue ?? EIO)
    }

    /// Returns `result`, or throws the call's error when it is negative (`errno` is read then).
    @discardableResult
    public static func check<Result: BinaryInteger>(_ result: Result, _ call: String, _ subject: @autoclosure () -> String) throws(SystemCallError) -> Result {
        guard result < 0 else { return result }
        let code = Glibc.errno  // before the subject is built, which may change it
        throw SystemCallError(call: call, subject: subject(), errno: code)
    }

    /// The C library's text for the errno.
    public var reason: String { String(cString: strerror(errno)) }

    public var description: String { "\(call) \(subject): \(reason)" }
}

/// An open file descriptor that is closed when the last reference goes.
public final class OwnedDescriptor: Sendable {
    /// The descriptor.
    public let rawValue: Int32

    /// Takes ownership of `rawValue`.
    public init(_ rawValue: Int32) {
        self.rawValue = rawValue
    }

    deinit {
        close(rawValue)
    }

    /// `fstat(2)`.
    public func status() throws(SystemCallError) -> stat {
        var info = stat()
        try SystemCallError.check(fstat(rawValue, &info), "fstat", "descriptor \(rawValue)")
        return info
    }

    /// The path the kernel has for this descriptor (`/proc/self/fd/N`).
    public func currentPath() throws(SystemCallError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let link = "/proc/self/fd/\(rawValue)"
        let count = try SystemCallError.check(readlink(link, &buffer, buffer.count - 1), "readlink", link)
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `fsync(2)`.
    public func sync() throws(SystemCallError) {
        try SystemCallError.check(fsync(rawValue), "fsync", "descriptor \(rawValue)")
    }

    /// Queues the file's dirty pages for writing without waiting (`sync_file_range(2)` with
    /// `SYNC_FILE_RANGE_WRITE`, to the end of the file): the disk works while the caller does,
    /// and a later ``sync()`` waits only for the rest. Best effort: errors are left to `sync()`.
    public func startWriteBack() {
        _ = iw_start_write_back(rawValue, 0, 0)
    }
}

extension stat {
    /// Whether this is a regular file.
    public var isRegularFile: Bool { FileStatus.kind(st_mode) == .regular }
    /// Whether this is a directory.
    public var isDirectory: Bool { FileStatus.kind(st_mode) == .directory }
    /// Last modification in microseconds since the epoch.
    public var modificationMicroseconds: Int64 { FileStatus.microseconds(st_mtim) }
}

/// Reads from `descriptor` at `offset` into `buffer`, retrying on EINTR; returns the count read.
public func readRetrying(_ descriptor: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int64) throws(SystemCallError) -> Int {
    do {
        return try FileDescriptor(rawValue: descriptor).read(fromAbsoluteOffset: offset, into: buffer)
    } catch {
        throw SystemCallError(call: "read", subject: "descriptor \(descriptor)", error)
    }
}

/// Writes all of `buffer` to `descriptor` at `offset`, retrying on EINTR and short writes.
public func writeAll(_ descriptor: Int32, _ buffer: UnsafeRawBufferPointer, offset: Int64) throws(SystemCallError) {
    do {
        _ = try FileDescriptor(rawValue: descriptor).writeAll(toAbsoluteOffset: offset, buffer)
    } catch {
        throw SystemCallError(call: "write", subject: "descriptor \(descriptor)", error)
    }
}

/// Writes all of `buffer` to `descriptor`, retrying on EINTR and short writes.
public func writeAll(_ descriptor: Int32, _ buffer: UnsafeRawBufferPointer) throws(SystemCallError) {
    do {
        _ = try FileDescriptor(rawValue: descriptor).writeAll(buffer)
    } catch {
        throw SystemCallError(call: "write", subject: "descriptor \(descriptor)", error)
    }
}
