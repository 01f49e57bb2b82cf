import Logging

/// Who asks for an image: services that act on the caller's behalf (Glance, with the caller's
/// token) need it; all log with its request id.
public struct ImageRequestContext: Sendable {
    /// The request id that ties logs and events together.
    public var requestID: String
    /// The caller's Keystone token, if any. Never logged.
    public var authToken: String?
    /// The caller's project.
    public var projectID: String?
    /// The caller's roles.
    public var roles: [String]
    /// Whether the caller acts as an administrator (the context's `is_admin`).
    public var isAdmin: Bool
    /// A logger carrying the request's metadata.
    public var logger: Logger
    /// Called when a request the service makes for this reference (a HEAD, a checksum file) has
    /// to wait for a connection to its server, so that the task can say `phase: queued`.
    public var onQueued: @Sendable () -> Void = {}

    /// Creates a context.
    public init(requestID: String, authToken: String? = nil, projectID: String? = nil, roles: [String] = [], isAdmin: Bool = false, logger: Logger) {
        self.requestID = requestID
        self.authToken = authToken
        self.projectID = projectID
        self.roles = roles
        self.isAdmin = isAdmin
        self.logger = logger
    }

    /// The same context, reporting a wait for a connection to `progress` as `phase: queued`.
    public func reportingQueued(to progress: @escaping TransferProgressHandler) -> ImageRequestContext {
        var context = self
        context.onQueued = { progress(TransferProgress(phase: .queued, bytes: 0, total: nil)) }
        return context
    }
}

/// What a service knows about an image without fetching it (Ironic's `show()`).
public struct ImageMetadata: Sendable, Hashable {
    /// Size in bytes, when known.
    public var size: Int64?
    /// Last modification, in microseconds since the epoch, when known.
    public var updatedAtMicroseconds: Int64?
    /// The disk format (`qcow2`, `raw`, …), when the service knows it.
    public var diskFormat: String?
    /// The digest the service says the image has (Glance's `os_hash_*`).
    public var checksum: ImageChecksum?
    /// Other properties (Glance's `kernel_id`, `ramdisk_id`, …).
    public var properties: [String: String]
    /// Whether the image must not be cached (`Cache-Control: no-store`; always for `file://`).
    public var noCache: Bool
    /// The `ETag` the server gave, as it gave it.
    public var entityTag: String?
    /// The `Last-Modified` the server gave, as it gave it.
    public var lastModified: String?

    /// Creates metadata.
    public init(size: Int64? = nil, updatedAtMicroseconds: Int64? = nil, diskFormat: String? = nil, checksum: ImageChecksum? = nil,
                properties: [String: String] = [:], noCache: Bool = false, entityTag: String? = nil, lastModified: String? = nil) {
        self.size = size
        self.updatedAtMicroseconds = updatedAtMicroseconds
        self.diskFormat = diskFormat
        self.checksum = checksum
        self.properties = properties
        self.noCache = noCache
        self.entityTag = entityTag
        self.lastModified = lastModified
    }
}

/// Whether images of a service may be kept in the master image cache, and how a kept copy is
/// known to be current.
public enum ImageCaching: Sendable, Hashable {
    /// Never cached (local files: a link or copy of the source is as cheap).
    case never
    /// An image never changes once it exists (Glance: an id names one content).
    case immutable
    /// An image may change; its `ETag` or `Last-Modified` (from `show`) says whether it did.
    case revalidate
}

/// Where the checksum an image must have comes from.
public enum ChecksumAuthority: Sendable, Hashable {
    /// The request gives it (`instance_info`: a value, or the URL of a checksum file). With
    /// `required`, an image without one is refused unless the operator turned that requirement
    /// off (`[image_worker] require_http_checksum`); without, its sha256 is computed and reported.
    case request(required: Bool)
    /// The service knows it (Glance's `os_hash_value`, a registry's digest); what `instance_info`
    /// says is not used.
    case service
}

/// How the bytes reached the destination.
public enum ImageTransfer: String, Sendable, Hashable {
    case download, hardlink, reflink, copy
}

/// Where a transfer is, for progress events.
public struct TransferProgress: Sendable, Hashable {
    /// What is happening.
    public enum Phase: String, Sendable, Hashable {
        /// Waiting for a connection to the image's server (`max_connections_per_host` are busy).
        case queued
        case resolve, download, verify
        /// The transform stages of contract §3.3, on the disk image.
        case decompress, inspect, convert
        case link
    }

    public var phase: Phase
    /// Bytes done so far in this phase.
    public var bytes: Int64
    /// Bytes in all, when known.
    public var total: Int64?

    /// Creates a progress report.
    public init(phase: Phase, bytes: Int64, total: Int64?) {
        self.phase = phase
        self.bytes = bytes
        self.total = total
    }
}

/// Receives progress reports; it is called often and must be cheap (the caller throttles).
public typealias TransferProgressHandler = @Sendable (TransferProgress) -> Void

/// One fetch: which image, into which staging file, which digests to compute on the way.
public struct ImageFetchRequest: Sendable {
    public var reference: ImageReference
    /// The temporary file to fill (or link); the caller verifies and renames it.
    public var destination: StagingFile
    /// Digests to compute over the bytes that end up in the destination.
    public var digestAlgorithms: Set<HashAlgorithm>
    public var context: ImageRequestContext
    public var progress: TransferProgressHandler
    /// The size the service described before the download (HEAD's `Content-Length`), which free
    /// space was checked against: a transfer without a length of its own must not go past it.
    public var announcedSize: Int64?
    /// The space reserved for the destination's bytes (see ``DiskSpaceLedger``): a service that
    /// writes them covers each write with it, so that a download that outgrows what it announced,
    /// or finds the space taken by concurrent ones, stops with `InsufficientDiskSpace`.
    public var diskReservation: DiskReservation?

    /// Creates a request.
    public init(reference: ImageReference, destination: StagingFile, digestAlgorithms: Set<HashAlgorithm>, context: ImageRequestContext,
                progress: @escaping TransferProgressHandler = { _ in }, announcedSize: Int64? = nil, diskReservation: DiskReservation? = nil) {
        self.reference = reference
        self.destination = destination
        self.digestAlgorithms = digestAlgorithms
        self.context = context
        self.progress = progress
        self.announcedSize = announcedSize
        self.diskReservation = diskReservation
    }
}

/// What a fetch produced.
public struct FetchedImage: Sendable, Hashable {
    /// The size of the file at the destination.
    public var size: Int64
    /// The digests asked for, lower-case hex.
    public var digests: [HashAlgorithm: String]
    /// How the bytes got there.
    public var transfer: ImageTransfer
    /// How many bytes were read from the source and written (0 for a hard link).
    public var bytesTransferred: Int64
    /// What the service knows about the image.
    public var metadata: ImageMetadata

    /// Creates a result.
    public init(size: Int64, digests: [HashAlgorithm: String], transfer: ImageTransfer, bytesTransferred: Int64, metadata: ImageMetadata) {
        self.size = size
        self.digests = digests
        self.transfer = transfer
        self.bytesTransferred = bytesTransferred
        self.metadata = metadata
    }
}

/// An image service: fetches images whose references have one of its schemes.
///
/// To add one, conform a type to this protocol and register it with
/// ``ImageServiceRegistry/register(_:)``; no existing code changes (see the README's example).
/// Errors thrown should be ``IronicError``s; anything else is reported as `ImageDownloadFailed`.
public protocol ImageService: Sendable {
    /// The name results and metrics use (`file`, `http`, `glance`).
    var name: String { get }

    /// The reference schemes it serves, lower case.
    var schemes: [String] { get }

    /// Whether its images may be cached (``ImageCaching/never`` unless the service says otherwise).
    var caching: ImageCaching { get }

    /// Where an image's expected checksum comes from (the request's, not required, unless the
    /// service says otherwise).
    var checksumAuthority: ChecksumAuthority { get }

    /// Whether ``show(_:context:)`` describes an image as Ironic reads a Glance image: its
    /// properties say whether it is a partition image (`kernel_id`, `ramdisk_id`, which are then
    /// the kernel and ramdisk), its checksum and disk format. The fetcher then asks while planning.
    var describesImages: Bool { get }

    /// The name of an image's master copy in the cache: a stable id the service gives it (Glance's
    /// UUID), or nil for a name derived from the reference (`uuid5(NAMESPACE_URL, href)`).
    func cacheKey(for reference: ImageReference) -> String?

    /// The text of a small resource (a checksum file) at most `limit` bytes long. Services that
    /// cannot serve checksum files keep the default, which refuses.
    func checksumFileText(_ reference: ImageReference, context: ImageRequestContext, limit: Int) async throws -> String

    /// Checks that the reference can be fetched, without fetching it, and returns its metadata.
    func validate(_ reference: ImageReference, context: ImageRequestContext) async throws -> ImageMetadata

    /// The image's metadata (Ironic's `show()`).
    func show(_ reference: ImageReference, context: ImageRequestContext) async throws -> ImageMetadata

    /// Fetches the image into the request's staging file, computing the requested digests.
    func fetch(_ request: ImageFetchRequest) async throws -> FetchedImage
}

extension ImageService {
    public var caching: ImageCaching { .never }

    public var checksumAuthority: ChecksumAuthority { .request(required: false) }

    public var describesImages: Bool { false }

    public func cacheKey(for reference: ImageReference) -> String? { nil }

    public func checksumFileText(_ reference: ImageReference, context: ImageRequestContext, limit: Int) async throws -> String {
        throw IronicError.validationFailed(reference.redacted, "checksum files cannot be read with the \(name) service.")
    }

    /// By default, validating is showing.
    public func validate(_ reference: ImageReference, context: ImageRequestContext) async throws -> ImageMetadata {
        try await show(reference, context: context)
    }
}
