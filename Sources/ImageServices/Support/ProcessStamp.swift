#if canImport(Glibc)
import Glibc
#endif

/// A process's id together with its start time (`/proc/<pid>/stat` field 22, clock ticks since
/// boot), written `<pid>.<start>`: unlike a bare pid it does not match a later process that got
/// the same pid — a restarted container's worker is pid 1 again, but with another start time.
public enum ProcessStamp {
    /// This process's stamp.
    public static let current: String = {
        let pid = getpid()
        return startTime(of: pid).map { "\(pid).\($0)" } ?? "\(pid)"
    }()

    /// Whether the process that wrote `stamp` is still running. A stamp without a start time
    /// (`<pid>`) is judged by its pid alone.
    public static func isAlive(_ stamp: Substring) -> Bool {
        let parts = stamp.split(separator: ".", maxSplits: 1)
        guard let pid = Int32(parts[0]), pid > 0 else { return false }
        guard kill(pid, 0) == 0 || errno != ESRCH else { return false }
        guard parts.count == 2 else { return true }
        return startTime(of: pid).map { String($0) == parts[1] } ?? false
    }

    /// Field 22 of `/proc/<pid>/stat`; nil if it cannot be read.
    static func startTime(of pid: Int32) -> UInt64? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
        guard let close = buffer[..<count].lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = buffer[(close + 1)..<count].split(separator: UInt8(ascii: " "))
        guard fields.count > 19 else { return nil }
        return UInt64(String(decoding: fields[19], as: UTF8.self))
    }
}
