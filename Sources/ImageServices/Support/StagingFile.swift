import SystemSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A directory held open, so that files are created relative to it (`openat`, `linkat`,
/// `renameat`) and a path swapped under it cannot redirect writes elsewhere.
public final class DirectoryHandle: Sendable {
    /// The open directory.
    public let descriptor: OwnedDescriptor
    /// Its path, for messages and results.
    public let path: String

    /// Opens `path` as a directory, refusing a symlink in its last component.
    public init(path: String) throws(SystemCallError) {
        let fd = try SystemCallError.check(open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "open", path)
        descriptor = OwnedDescriptor(fd)
        self.path = path
    }

    /// Opens `path` as a directory, creating it and its parents first if needed (`mkdir -p`).
    public convenience init(makingPath path: String) throws(SystemCallError) {
        var current = ""
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw SystemCallError(call: "mkdir", subject: current, errno: errno)
            }
        }
        try self.init(path: path)
    }

    private init(descriptor: OwnedDescriptor, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    /// Opens (creating it with `mode` if needed) the subdirectory `name`, never following a symlink.
    public func subdirectory(_ name: String, create: Bool, mode: mode_t = 0o755) throws(SystemCallError) -> DirectoryHandle {
        precondition(!name.contains("/") && name != "." && name != "..", "not a plain directory name: \(name)")
        if create, mkdirat(descriptor.rawValue, name, mode) != 0, errno != EEXIST {
            throw SystemCallError(call: "mkdir", subject: "\(path)/\(name)", errno: errno)
        }
        let fd = try SystemCallError.check(openat(descriptor.rawValue, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "open", "\(path)/\(name)")
        return DirectoryHandle(descriptor: OwnedDescriptor(fd), path: "\(path)/\(name)")
    }

    /// The names in the directory (without `.` and `..`).
    public func entries() throws(SystemCallError) -> [String] {
        let fd = openat(descriptor.rawValue, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0, let stream = fdopendir(fd) else {
            let error = errno
            if fd >= 0 { close(fd) }
            throw SystemCallError(call: "opendir", subject: path, errno: error)
        }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = Self.entryName(UnsafeRawPointer(entry))
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The name in the directory record at `record` (a `struct dirent` as `readdir` returns it),
    /// read in place and never past the record's end.
    ///
    /// Linux packs records by their real length (`d_reclen`): the last one in `readdir`'s buffer
    /// may end a few bytes after its name, so loading `d_name` as the Swift type's 256-byte array
    /// reads past the buffer, and faults when the buffer ends at a page boundary.
    static func entryName(_ record: UnsafeRawPointer) -> String {
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        let lengthOffset = MemoryLayout<dirent>.offset(of: \dirent.d_reclen)!
        let recordLength = Int(record.loadUnaligned(fromByteOffset: lengthOffset, as: UInt16.self))
        let name = (record + nameOffset).assumingMemoryBound(to: CChar.self)
        let length = strnlen(name, max(recordLength - nameOffset, 0))
        return String(decoding: UnsafeRawBufferPointer(start: name, count: length), as: UTF8.self)
    }

    /// `fstatat` without following symlinks, as ``FileStatus``; nil when there is no such entry.
    public func fileStatus(of name: String) throws(SystemCallError) -> FileStatus? {
        try status(of: name).map(FileStatus.init)
    }

    /// `fstatat` without following symlinks; nil when there is no such entry.
    public func status(of name: String) throws(SystemCallError) -> stat? {
        var info = stat()
        guard fstatat(descriptor.rawValue, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
            if errno == ENOENT { return nil }
            throw SystemCallError(call: "stat", subject: "\(path)/\(name)", errno: errno)
        }
        return info
    }

    /// Removes an entry (a file, or an empty directory with `directory`); missing is fine.
    public func remove(_ name: String, directory: Bool = false) throws(SystemCallError) {
        guard unlinkat(descriptor.rawValue, name, directory ? AT_REMOVEDIR : 0) == 0 || errno == ENOENT else {
            throw SystemCallError(call: directory ? "rmdir" : "unlink", subject: "\(path)/\(name)", errno: errno)
        }
    }

    /// Removes everything under the entry `name` (which may be a file), without following symlinks.
    public func removeTree(_ name: String) throws(SystemCallError) {
        guard let info = try status(of: name) else { return }
        if info.isDirectory {
            let child = try subdirectory(name, create: false)
            for entry in try child.entries() { try child.removeTree(entry) }
            try remove(name, directory: true)
        } else {
            try remove(name)
        }
    }
}

/// A temporary file next to where an image will live (same directory, so same file system): it is
/// filled or linked under a hidden name, then renamed over the final name in one atomic step, or
/// removed. A final name is therefore never seen half-written.
public final class StagingFile: Sendable {
    /// Prefix of every staging name: `.staging-<pid>.<start time>-<final name>-<random>` (see
    /// ``ProcessStamp``).
    public static let namePrefix = ".staging-"

    /// The directory.
    public let directory: DirectoryHandle
    /// The name the image will get.
    public let finalName: String
    /// The hidden name it has meanwhile.
    public let temporaryName: String
    /// The permissions a created file gets, whatever the umask (a linked file keeps its source's).
    public let mode: mode_t

    /// A staging file for `finalName` in `directory` (nothing is created yet).
    public init(in directory: DirectoryHandle, finalName: String, mode: mode_t = 0o644) {
        self.directory = directory
        self.finalName = finalName
        self.mode = mode
        var generator = SystemRandomNumberGenerator()
        let suffix = String(UInt64.random(in: 0...UInt64.max, using: &generator), radix: 16)
        temporaryName = "\(Self.namePrefix)\(ProcessStamp.current)-\(finalName)-\(suffix)"
    }

    /// Whether `name` is a staging file whose process is gone (so nobody will finish it).
    public static func isAbandoned(_ name: String) -> Bool {
        guard name.hasPrefix(namePrefix) else { return false }
        let rest = name.dropFirst(namePrefix.count)
        guard let dash = rest.firstIndex(of: "-") else { return true }
        return !ProcessStamp.isAlive(rest[..<dash])
    }

    /// The final path, for results.
    public var finalPath: String { "\(directory.path)/\(finalName)" }

    /// The temporary file's path, for a child process that writes or reads it (`qemu-img`).
    public var temporaryPath: String { "\(directory.path)/\(temporaryName)" }

    /// Creates the temporary file for writing (it must not exist), with ``mode`` exactly.
    public func create() throws(SystemCallError) -> OwnedDescriptor {
        let fd = try SystemCallError.check(openat(directory.descriptor.rawValue, temporaryName, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode), "create", "\(directory.path)/\(temporaryName)")
        let file = OwnedDescriptor(fd)
        // The umask only narrows open(2)'s mode; fchmod sets it as asked.
        _ = try SystemCallError.check(fchmod(fd, mode), "chmod", "\(directory.path)/\(temporaryName)")
        return file
    }

    /// Opens the temporary file for reading (a stage reading what was staged).
    public func openForReading() throws(SystemCallError) -> OwnedDescriptor {
        OwnedDescriptor(try SystemCallError.check(openat(directory.descriptor.rawValue, temporaryName, O_RDONLY | O_CLOEXEC | O_NOFOLLOW),
                                                  "open", finalPath))
    }

    /// Hard-links the open file `source` under the temporary name. Throws `EXDEV` across file
    /// systems (and `EPERM`, `EMLINK`, … where linking is not allowed): the caller copies then.
    public func link(from source: OwnedDescriptor) throws(SystemCallError) {
        // Linking the descriptor (not a path) links exactly the inode that was checked and read.
        let procPath = "/proc/self/fd/\(source.rawValue)"
        guard linkat(AT_FDCWD, procPath, directory.descriptor.rawValue, temporaryName, AT_SYMLINK_FOLLOW) == 0 else {
            throw SystemCallError(call: "link", subject: "\(directory.path)/\(temporaryName)", errno: errno)
        }
    }

    /// The temporary file's status.
    public func status() throws(SystemCallError) -> stat? {
        try directory.status(of: temporaryName)
    }

    /// Renames the temporary file over the final name, atomically.
    public func commit() throws(SystemCallError) {
        guard renameat(directory.descriptor.rawValue, temporaryName, directory.descriptor.rawValue, finalName) == 0 else {
            throw SystemCallError(call: "rename", subject: "\(directory.path)/\(finalName)", errno: errno)
        }
        // rename(2) does nothing when both names are links to the same inode (the image was
        // linked again from the same source): the temporary name is still there then.
        try directory.remove(temporaryName)
    }

    /// Removes the temporary file, if it exists.
    public func discard() {
        try? directory.remove(temporaryName)
    }

    /// ``commit()`` on a blocking-work thread: renaming over a final name frees the file it
    /// replaces, which for a large image takes long enough to stall the cooperative pool.
    public func commitOffPool() async throws {
        try await BlockingWork.run { _ in try self.commit() }
    }

    /// ``discard()`` on a blocking-work thread: unlinking a large file frees its extents.
    public func discardOffPool() async {
        _ = try? await BlockingWork.run { _ in self.discard() }
    }
}
