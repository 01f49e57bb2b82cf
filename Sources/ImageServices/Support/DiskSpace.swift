import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// Free space, as Ironic checks it before a download (`statvfs`: blocks available to an
/// unprivileged user × fragment size).
public enum DiskSpace {
    /// Bytes available on the file system of `directory`.
    public static func available(at directory: DirectoryHandle) throws(SystemCallError) -> Int64 {
        var info = statvfs()
        guard fstatvfs(directory.descriptor.rawValue, &info) == 0 else {
            throw SystemCallError(call: "statvfs", subject: directory.path, errno: errno)
        }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    /// Ironic's `InsufficientDiskSpace` for `directory`.
    public static func insufficient(_ directory: String, required: Int64, available: Int64) -> IronicError {
        IronicError(.insufficientDiskSpace, "Disk volume where '\(directory)' is located doesn't have enough disk space. "
            + "Required \(required >> 20) MiB, only \(available >> 20) MiB available space present.")
    }

    /// `error` as Ironic's `InsufficientDiskSpace` when it is a write that found the disk or the
    /// quota full (`ENOSPC`, `EDQUOT`: another process took the space), else `error` itself.
    public static func explainingFull(_ error: any Error, in directory: String) -> any Error {
        guard let call = error as? SystemCallError, call.errno == ENOSPC || call.errno == EDQUOT else { return error }
        return IronicError(.insufficientDiskSpace, "Disk volume where '\(directory)' is located ran out of space while the image was written: \(call.reason).")
    }
}
