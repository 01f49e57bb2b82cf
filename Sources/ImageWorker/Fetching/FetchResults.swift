import ImageFormats
import ImageServices

/// An error while handling one of a node's images, with which one it was.
public struct RoleError: Error, Sendable {
    public var role: ImageRole
    public var reference: String
    public var error: IronicError
}

/// How the image cache was involved in a fetch.
public enum CacheOutcome: String, Sendable, Hashable {
    /// Served from a master copy already in the cache.
    case hit
    /// Downloaded into the cache, then linked.
    case miss
    /// The cache was not used (`file://` images, `Cache-Control: no-store`).
    case bypass
}

/// One fetched (or validated) image of a node.
public struct ResolvedImage: Sendable {
    public var role: ImageRole
    public var reference: ImageReference
    public var serviceName: String
    public var metadata: ImageMetadata
    /// The file, once fetched.
    public var path: String?
    public var fetched: FetchedImage?
    /// The checksum reported: the verified one, or the one computed when none was given.
    public var checksum: ImageChecksum?
    /// Whether an expected checksum was given and matched.
    public var verified: Bool
    /// How the image cache was involved (nil when nothing was fetched).
    public var cache: CacheOutcome?
    public var duration: Duration
    /// What the format inspection found (the disk image, when inspection ran).
    public var inspection: FormatInspection? = nil
    /// What was served, when the worker changed the bytes (converted them).
    public var source: ImageSource? = nil
}

/// An image as it was served, before the worker changed its bytes (contract §3.3 `source`).
public struct ImageSource: Sendable, Equatable {
    public var diskFormat: DiskFormat?
    /// `zstd`, `gzip`, `xz`, `bzip2`, or nil.
    public var compression: String?
    public var size: Int64
    /// The checksum verified against the request (or computed when none was given).
    public var checksum: ImageChecksum
}

/// What fetching (or validating) a node's images produced.
public struct NodeImages: Sendable {
    public var nodeUUID: String
    public var imageType: ImageType
    public var images: [ResolvedImage]
    public var instanceInfo: InstanceInfo
}

extension RoleError {
    /// Runs `body`, attributing any failure to the role (non-Ironic errors become
    /// `ImageDownloadFailed`; cancellation passes through).
    static func attributed<T>(to role: ImageRole, _ reference: ImageReference, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as IronicError {
            throw RoleError(role: role, reference: reference.redacted, error: error)
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as RoleError {
            throw error
        } catch {
            throw RoleError(role: role, reference: reference.redacted, error: .downloadFailed(reference.redacted, "\(error)"))
        }
    }
}
