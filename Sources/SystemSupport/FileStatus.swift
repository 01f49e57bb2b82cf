#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What the worker reads of `stat(2)`, as Swift values.
///
/// Modules that only need these facts take this rather than `stat` itself: which C module a
/// compilation sees as owning `struct stat` depends on what it imported first (Glibc, or
/// Dispatch through Foundation), and with `MemberImportVisibility` a file that sees it through
/// the other one loses its fields and extensions in some incremental builds.
public struct FileStatus: Sendable, Hashable {
    /// The kinds of file the worker tells apart.
    public enum Kind: Sendable, Hashable {
        case regular, directory, symbolicLink, other
    }

    public var kind: Kind
    public var inode: UInt64
    public var size: Int64
    /// Bytes the file holds on the disk (`st_blocks` × 512): less than `size` for a sparse file.
    public var allocatedBytes: Int64
    public var linkCount: UInt64
    /// Times in microseconds since the epoch.
    public var modificationMicroseconds: Int64
    public var accessMicroseconds: Int64
    public var changeMicroseconds: Int64

    /// The facts of `info`.
    public init(_ info: stat) {
        kind = Self.kind(info.st_mode)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        allocatedBytes = Int64(info.st_blocks) * 512
        linkCount = UInt64(info.st_nlink)
        modificationMicroseconds = Self.microseconds(info.st_mtim)
        accessMicroseconds = Self.microseconds(info.st_atim)
        changeMicroseconds = Self.microseconds(info.st_ctim)
    }

    /// The kind of file a `st_mode` says.
    static func kind(_ mode: mode_t) -> Kind {
        switch mode & S_IFMT {
        case S_IFREG: .regular
        case S_IFDIR: .directory
        case S_IFLNK: .symbolicLink
        default: .other
        }
    }

    /// A `stat` time in microseconds since the epoch.
    static func microseconds(_ time: timespec) -> Int64 {
        Int64(time.tv_sec) * 1_000_000 + Int64(time.tv_nsec) / 1_000
    }
}

extension OwnedDescriptor {
    /// `fstat(2)`, as ``FileStatus``.
    public func fileStatus() throws(SystemCallError) -> FileStatus {
        FileStatus(try status())
    }
}
