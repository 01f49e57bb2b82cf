import Primitives
import SystemSupport
import ImageServices

#if canImport(Glibc)
import Glibc
#endif

/// `<images_dir>/<node_uuid>/`: the node folders, all reached through the images folder's open
/// descriptor, so that nothing is ever written outside it (a node folder that is a symlink is
/// refused, and node names are canonical UUIDs).
///
/// One node at a time (contract §6): ``withNodeLock(_:_:)`` holds `flock(2)` on
/// `<locks>/<node_uuid>.lock` for a request's whole run, so requests for one node run one after
/// the other in this process and in every process sharing the folders. The lock files live outside
/// `images_dir` (which holds node folders only) and are kept: one small file per node.
public final class NodeImageStore: Sendable {
    /// The images folder.
    public let root: DirectoryHandle
    /// The node lock files' folder.
    private let locks: DirectoryHandle
    private let lockPollInterval: Duration
    /// First come first served within this process (the lock file orders processes, not waiters).
    private let turns = NodeTurns()

    /// Opens `images_dir`, creating it (and its parents) if needed, and the lock folder
    /// (`locksPath`, by default `<images_dir>.locks` beside it; the worker uses `<state_dir>/node-locks`).
    public init(path: String, locksPath: String? = nil, lockPollInterval: Duration = .milliseconds(50)) throws {
        root = try DirectoryHandle(makingPath: path)
        locks = try DirectoryHandle(makingPath: locksPath ?? FilePathPolicy.normalize(path) + ".locks")
        self.lockPollInterval = lockPollInterval
    }

    /// Runs `body` holding the node's lock, after waiting (cancellably) for whoever holds it;
    /// requests in this process get it in the order they asked.
    public func withNodeLock<Result: Sendable>(_ nodeUUID: String, _ body: () async throws -> Result) async throws -> Result {
        precondition(UUIDText.canonical(nodeUUID) == nodeUUID, "node locks are named by canonical UUIDs")
        try await turns.take(nodeUUID)
        defer { turns.release(nodeUUID) }
        let name = "\(nodeUUID).lock"
        let fd = try SystemCallError.check(openat(locks.descriptor.rawValue, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600),
                                           "open", "\(locks.path)/\(name)")
        let lock = OwnedDescriptor(fd)  // closing it releases the lock, whatever happens below
        while flock(lock.rawValue, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else { throw SystemCallError(call: "flock", subject: "\(locks.path)/\(name)", errno: errno) }
            try await Task.sleep(for: lockPollInterval)
        }
        defer { withExtendedLifetime(lock) {} }
        return try await body()
    }

    /// A node's folder, created if asked.
    public func nodeDirectory(_ nodeUUID: String, create: Bool) throws -> DirectoryHandle {
        precondition(UUIDText.canonical(nodeUUID) == nodeUUID, "node folders are named by canonical UUIDs")
        return try root.subdirectory(nodeUUID, create: create)
    }

    /// Removes a node's folder and everything in it; `false` when there was none.
    @discardableResult
    public func deleteNode(_ nodeUUID: String) throws -> Bool {
        precondition(UUIDText.canonical(nodeUUID) == nodeUUID, "node folders are named by canonical UUIDs")
        guard try root.fileStatus(of: nodeUUID) != nil else { return false }
        try root.removeTree(nodeUUID)
        return true
    }

    /// Removes staging files that processes which no longer exist left in node folders (a worker
    /// killed mid-fetch); those of live workers sharing the folder stay. Returns how many.
    @discardableResult
    public func removeLeftoverStagingFiles() throws -> Int {
        var removed = 0
        for name in try root.entries() where UUIDText.canonical(name) == name {
            guard try root.fileStatus(of: name)?.kind == .directory else { continue }
            let node = try root.subdirectory(name, create: false)
            for entry in try node.entries() where StagingFile.isAbandoned(entry) {
                try node.remove(entry)
                removed += 1
            }
        }
        return removed
    }
}
