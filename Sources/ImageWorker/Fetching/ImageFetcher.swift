import ImageServices
import OsloMessaging

#if canImport(Glibc)
import Glibc
#endif

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
    public var durationMicroseconds: Int64
}

/// What fetching (or validating) a node's images produced.
public struct NodeImages: Sendable {
    public var nodeUUID: String
    public var imageType: ImageType
    public var images: [ResolvedImage]
    public var instanceInfo: InstanceInfo
}

/// Fetches a node's images: picks each reference's service by scheme, decides whole disk or
/// partition, fetches every image into a staging file next to its final name, verifies each
/// against its expected checksum, and only when all are good renames them into place. On any
/// failure every staging file is removed: nothing partial is ever left under a final name.
public struct ImageFetcher: Sendable {
    /// Ironic's checksum rules, as configured.
    public struct ChecksumPolicy: Sendable {
        /// `[agent] allow_md5_checksum`.
        public var allowMD5: Bool
        /// `[image_worker] require_http_checksum`: an http(s) image without any checksum is refused.
        public var requireForHTTP: Bool
        /// `[conductor] disable_support_for_checksum_files`.
        public var checksumFilesDisabled: Bool

        public init(allowMD5: Bool = true, requireForHTTP: Bool = true, checksumFilesDisabled: Bool = false) {
            self.allowMD5 = allowMD5
            self.requireForHTTP = requireForHTTP
            self.checksumFilesDisabled = checksumFilesDisabled
        }
    }

    public let registry: ImageServiceRegistry
    public let checksums: ChecksumPolicy
    /// The master image cache, if the worker keeps one (`[pxe] instance_master_path`).
    public let cache: MasterImageCache?

    /// Creates a fetcher.
    public init(registry: ImageServiceRegistry, checksums: ChecksumPolicy = ChecksumPolicy(), cache: MasterImageCache? = nil) {
        self.registry = registry
        self.checksums = checksums
        self.cache = cache
    }

    private struct Plan {
        var role: ImageRole
        var reference: ImageReference
        var service: any ImageService
        var checksum: ChecksumSource
        /// What the service said of the image while planning (Glance's record), if it was asked.
        var shown: ImageMetadata?
    }

    /// Fetches the node's images into its folder in `store`.
    public func fetch(_ arguments: FetchImageArguments, into store: NodeImageStore, context: ImageRequestContext,
                      progress: @escaping @Sendable (ImageRole, TransferProgress) -> Void) async throws -> NodeImages {
        let (imageType, plans) = try await plan(arguments, context: context)
        let directory: DirectoryHandle
        do {
            directory = try store.nodeDirectory(arguments.nodeUUID, create: true)
        } catch {
            throw RoleError(role: .image, reference: plans[0].reference.redacted,
                            error: IronicError(.imageDownloadFailed, "Cannot create the folder for node \(arguments.nodeUUID): \(error)."))
        }
        var staged: [(StagingFile, ResolvedImage)] = []
        do {
            for plan in plans {
                let staging = StagingFile(in: directory, finalName: plan.role.fileName)
                staged.append((staging, try await fetchOne(plan, into: staging, context: context, progress: progress)))
            }
            var images: [ResolvedImage] = []
            for (staging, var image) in staged {
                do {
                    try await staging.commitOffPool()
                } catch {
                    throw RoleError(role: image.role, reference: image.reference.redacted,
                                    error: IronicError(.imageDownloadFailed, "Cannot move image \(image.reference.redacted) into place: \(error)."))
                }
                image.path = staging.finalPath
                images.append(image)
            }
            return NodeImages(nodeUUID: arguments.nodeUUID, imageType: imageType, images: images, instanceInfo: arguments.instanceInfo)
        } catch {
            // Nothing partial stays: every image staged so far goes (committed ones are gone already).
            for (staging, _) in staged { await staging.discardOffPool() }
            throw error
        }
    }

    /// Resolves every reference and checks it could be fetched, without fetching.
    public func validate(_ arguments: FetchImageArguments, context: ImageRequestContext) async throws -> NodeImages {
        let (imageType, plans) = try await plan(arguments, context: context)
        var images: [ResolvedImage] = []
        for plan in plans {
            let started = monotonicMicroseconds()
            let metadata = try await perRole(plan.role, plan.reference) { try await plan.service.validate(plan.reference, context: context) }
            var checksum: ImageChecksum? = nil
            if case .value(let expected) = plan.checksum { checksum = expected }
            images.append(ResolvedImage(role: plan.role, reference: plan.reference, serviceName: plan.service.name, metadata: metadata,
                                        path: nil, fetched: nil, checksum: checksum ?? metadata.checksum, verified: false, cache: nil,
                                        durationMicroseconds: monotonicMicroseconds() - started))
        }
        return NodeImages(nodeUUID: arguments.nodeUUID, imageType: imageType, images: images, instanceInfo: arguments.instanceInfo)
    }

    /// Fetches one image (no kernel or ramdisk) to `directory/name`, verified as a node's disk
    /// would be: for `image-worker fetch --output`.
    public func fetchImage(_ info: InstanceInfo, into directory: DirectoryHandle, named name: String, context: ImageRequestContext,
                           progress: @escaping @Sendable (ImageRole, TransferProgress) -> Void) async throws -> ResolvedImage {
        let (plan, _) = try await imagePlan(info, context: context)
        let staging = StagingFile(in: directory, finalName: name)
        var image = try await fetchOne(plan, into: staging, context: context, progress: progress)
        do {
            try await staging.commitOffPool()
        } catch {
            await staging.discardOffPool()
            throw RoleError(role: .image, reference: plan.reference.redacted,
                            error: IronicError(.imageDownloadFailed, "Cannot move image \(plan.reference.redacted) into place: \(error)."))
        }
        image.path = staging.finalPath
        return image
    }

    /// The image's plan, and Glance's metadata when it is a Glance image.
    private func imagePlan(_ info: InstanceInfo, context: ImageRequestContext) async throws -> (Plan, ImageMetadata?) {
        let (imageReference, imageService) = try resolve(.image, info.imageSource)
        // Glance knows more: the type (kernel_id/ramdisk_id), the kernel and ramdisk, the checksum.
        let glanceMetadata = imageService is GlanceImageService
            ? try await perRole(.image, imageReference) { try await imageService.show(imageReference, context: context) } : nil
        let imageChecksum = try await expectedChecksum(for: imageReference, service: imageService, glanceMetadata: glanceMetadata, role: .image, context: context) {
            try ChecksumSource.parse(imageChecksum: info.imageChecksum, osHashAlgorithm: info.osHashAlgorithm,
                                     osHashValue: info.osHashValue, allowMD5: checksums.allowMD5)
        }
        return (Plan(role: .image, reference: imageReference, service: imageService, checksum: imageChecksum, shown: glanceMetadata), glanceMetadata)
    }

    /// The images to fetch, each with its service and expected checksum.
    private func plan(_ arguments: FetchImageArguments, context: ImageRequestContext) async throws -> (ImageType, [Plan]) {
        let info = arguments.instanceInfo
        let (imagePlan, glanceMetadata) = try await imagePlan(info, context: context)
        let imageReference = imagePlan.reference
        let imageType = info.decideImageType(glanceProperties: glanceMetadata?.properties)
        guard imageType == .partition else { return (imageType, [imagePlan]) }
        let kernel = info.kernel ?? glanceMetadata?.properties["kernel_id"]
        let ramdisk = info.ramdisk ?? glanceMetadata?.properties["ramdisk_id"]
        let missing = [("kernel", kernel), ("ramdisk", ramdisk)].filter { $0.1 == nil }.map(\.0)
        guard missing.isEmpty else {
            throw RoleError(role: .image, reference: imageReference.redacted,
                            error: .missingParameter("Image \(imageReference.redacted) is missing the following properties: \(missing.joined(separator: ", "))."))
        }
        var plans = [imagePlan]
        for (role, text) in [(ImageRole.kernel, kernel!), (.ramdisk, ramdisk!)] {
            let (reference, service) = try resolve(role, text)
            let metadata = service is GlanceImageService
                ? try await perRole(role, reference) { try await service.show(reference, context: context) } : nil
            let checksum = try await expectedChecksum(for: reference, service: service, glanceMetadata: metadata, role: role, context: context) { .none }
            plans.append(Plan(role: role, reference: reference, service: service, checksum: checksum, shown: metadata))
        }
        return (imageType, plans)
    }

    /// A reference and the service for its scheme.
    private func resolve(_ role: ImageRole, _ text: String) throws -> (ImageReference, any ImageService) {
        do {
            let reference = try ImageReference(text)
            return (reference, try registry.service(for: reference))
        } catch {
            throw RoleError(role: role, reference: ImageReference.redact(text), error: error)
        }
    }

    /// What the image must hash to: Glance's own checksum for Glance images; otherwise what
    /// `instance_info` says (a checksum file is fetched and searched), which an http(s) image must have.
    private func expectedChecksum(for reference: ImageReference, service: any ImageService, glanceMetadata: ImageMetadata?, role: ImageRole,
                                  context: ImageRequestContext, given: () throws -> ChecksumSource) async throws -> ChecksumSource {
        if service is GlanceImageService {
            return glanceMetadata?.checksum.map(ChecksumSource.value) ?? .none
        }
        let source: ChecksumSource
        do {
            source = try given()
        } catch let error as IronicError {
            throw RoleError(role: role, reference: reference.redacted, error: error)
        }
        switch source {
        case .value:
            return source
        case .checksumFile(let url):
            guard !checksums.checksumFilesDisabled else {
                throw RoleError(role: role, reference: reference.redacted,
                                error: .invalidParameter("Checksum file URLs are disabled ([conductor] disable_support_for_checksum_files); give the checksum itself."))
            }
            guard let http = try? registry.service(for: url) as? HTTPImageService else {
                throw RoleError(role: role, reference: reference.redacted,
                                error: .validationFailed(url.redacted, "checksum file URLs need the http image service."))
            }
            return try await perRole(role, reference) {
                let text = try await http.text(of: url, context: context)
                return .value(try ChecksumFile.checksum(in: text, for: ChecksumFile.fileName(of: reference), reference: url.redacted, allowMD5: checksums.allowMD5))
            }
        case .none:
            if role == .image && checksums.requireForHTTP && service is HTTPImageService {
                throw RoleError(role: role, reference: reference.redacted, error: .missingParameter(
                    "image_checksum, or image_os_hash_algo and image_os_hash_value, must be given in instance_info for the http(s) image \(reference.redacted)."))
            }
            return .none
        }
    }

    private func fetchOne(_ plan: Plan, into staging: StagingFile, context: ImageRequestContext,
                          progress: @escaping @Sendable (ImageRole, TransferProgress) -> Void) async throws -> ResolvedImage {
        let started = monotonicMicroseconds()
        var expected: ImageChecksum? = nil
        if case .value(let checksum) = plan.checksum { expected = checksum }
        let role = plan.role
        let report: TransferProgressHandler = { progress(role, $0) }
        let (fetched, cacheOutcome) = try await perRole(role, plan.reference) { () -> (FetchedImage, CacheOutcome) in
            // What the service says now: Glance's record from planning, else a HEAD for images
            // whose cached copy must be revalidated.
            let current = plan.service.caching == .revalidate && cache != nil
                ? try await plan.service.validate(plan.reference, context: context) : plan.shown
            if let cache, plan.service.caching != .never, current?.noCache != true {
                let outcome = try await cache.fetch(plan.reference, service: plan.service, current: current, expected: expected,
                                                    into: staging, context: context, progress: report)
                return (outcome.fetched, outcome.cache)
            }
            if let size = current?.size {
                let available = try DiskSpace.available(at: staging.directory)
                if available < size { throw DiskSpace.insufficient(staging.directory.path, required: size, available: available) }
            }
            let request = ImageFetchRequest(reference: plan.reference, destination: staging, digestAlgorithms: [expected?.algorithm ?? .sha256],
                                            context: context, progress: report)
            do {
                return (try await plan.service.fetch(request), .bypass)
            } catch {
                await staging.discardOffPool()
                throw error
            }
        }
        let checksum: ImageChecksum
        do {
            checksum = try ChecksumVerification.verify(fetched, expected: expected, reference: plan.reference, serviceName: plan.service.name)
        } catch {
            await staging.discardOffPool()
            throw RoleError(role: role, reference: plan.reference.redacted, error: error)
        }
        return ResolvedImage(role: role, reference: plan.reference, serviceName: plan.service.name, metadata: fetched.metadata, path: nil,
                             fetched: fetched, checksum: checksum, verified: expected != nil, cache: cacheOutcome,
                             durationMicroseconds: monotonicMicroseconds() - started)
    }

    /// Runs `body`, attributing any failure to the role (non-Ironic errors become
    /// `ImageDownloadFailed`; cancellation passes through).
    private func perRole<T>(_ role: ImageRole, _ reference: ImageReference, _ body: () async throws -> T) async throws -> T {
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

/// Microseconds on the monotonic clock, for durations.
func monotonicMicroseconds() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1_000
}
