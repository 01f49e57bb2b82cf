import Primitives
import SystemSupport
import ImageServices

#if canImport(Glibc)
import Glibc
#endif

/// `<images_dir>/<node_uuid>/`: the node folders, all reached through the images folder's open
/// descriptor, so that nothing is ever written outside it (a node folder that is a symlink is
/// refused, and node names are canonical UUIDs).
public final class NodeImageStore: Sendable {
    /// The images folder.
    public let root: DirectoryHandle

    /// Opens `images_dir`, creating it (and its parents) if needed.
    public init(path: String) throws {
        root = try DirectoryHandle(makingPath: path)
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
