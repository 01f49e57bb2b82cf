/// Which local paths `file://` references may name (Ironic's OSSA-2025-001 rules): never under
/// `/dev /sys /proc /boot /etc /run`, and only under `[conductor] file_url_allowed_paths`.
/// The worker applies both to the path as given and to the path with every symlink resolved.
/// Beyond Ironic, the worker's own folders (node images, master cache, request journal) are never
/// readable through `file://`, even below an allowed path: another tenant's private Glance image
/// in the cache would otherwise be one reference away. They are refused in the same words as a
/// path outside the allowlist.
public struct FilePathPolicy: Sendable, Hashable {
    /// Prefixes no `file://` reference may reach, whatever the configuration says.
    public static let alwaysBlocked = ["/dev", "/sys", "/proc", "/boot", "/etc", "/run"]

    /// The allowed prefixes, normalised (an empty list disables `file://`).
    public let allowedPaths: [String]

    /// The worker's own folders, normalised: refused even below an allowed path.
    public let workerPaths: [String]

    /// Creates a policy; entries are normalised (`..`, `.`, repeated and trailing slashes).
    public init(allowedPaths: [String], workerPaths: [String] = []) {
        self.allowedPaths = allowedPaths.map(Self.normalize)
        self.workerPaths = workerPaths.map(Self.normalize)
    }

    /// Throws Ironic's error when `path` (absolute, normalised) is under a blocked prefix.
    public func checkNotBlocked(_ path: String, reference: String) throws(IronicError) {
        if let blocked = Self.alwaysBlocked.first(where: { Self.isUnder(path, $0) }) {
            throw IronicError.validationFailed(reference, "Security: The path \(blocked) is not permitted in file URLs")
        }
    }

    /// Throws Ironic's error when `path` is blocked, outside every allowed prefix, or in one of
    /// the worker's own folders.
    ///
    /// - Parameters:
    ///   - resolvedAllowedPaths: the allowed paths with their symlinks resolved, for checking a
    ///     path whose symlinks were resolved (an allowed folder may itself be a link).
    ///   - resolvedWorkerPaths: the worker's folders with their symlinks resolved, likewise.
    public func check(_ path: String, reference: String, resolvedAllowedPaths: [String] = [], resolvedWorkerPaths: [String] = []) throws(IronicError) {
        try checkNotBlocked(path, reference: reference)
        let allowed = (allowedPaths + resolvedAllowedPaths).contains { Self.isUnder(path, $0) }
        let workers = (workerPaths + resolvedWorkerPaths).contains { Self.isUnder(path, $0) }
        guard allowed && !workers else {
            throw IronicError.validationFailed(reference, "Security: Path \(path) is not allowed for image source file URLs")
        }
    }

    /// Whether `path` is `prefix` or below it (path boundaries respected: `/devices` is not under `/dev`).
    static func isUnder(_ path: String, _ prefix: String) -> Bool {
        if prefix == "/" { return true }
        return path == prefix || path.hasPrefix(prefix + "/")
    }

    /// `os.path.abspath` for an absolute path: no `.`, no `..`, no repeated or trailing slashes.
    public static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..": if !parts.isEmpty { parts.removeLast() }
            default: parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }
}
