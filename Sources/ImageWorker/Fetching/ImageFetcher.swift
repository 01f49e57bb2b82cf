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
    public let registry: ImageServiceRegistry
    public let store: NodeImageStore
    public let allowMD5Checksum: Bool

    /// Creates a fetcher.
    public init(registry: ImageServiceRegistry, store: NodeImageStore, allowMD5Checksum: Bool) {
        self.registry = registry
        self.store = store
        self.allowMD5Checksum = allowMD5Checksum
    }

    private struct Plan {
        var role: ImageRole
        var reference: ImageReference
        var service: any ImageService
        var checksum: ChecksumSource
    }

    /// Fetches the node's images into its folder.
    public func fetch(_ arguments: FetchImageArguments, context: ImageRequestContext,
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
        defer { for (staging, _) in staged { staging.discard() } }
        for plan in plans {
            let staging = StagingFile(in: directory, finalName: plan.role.fileName)
            staged.append((staging, try await fetchOne(plan, into: staging, context: context, progress: progress)))
        }
        var images: [ResolvedImage] = []
        for (staging, var image) in staged {
            do {
                try staging.commit()
            } catch {
                throw RoleError(role: image.role, reference: image.reference.redacted,
                                error: IronicError(.imageDownloadFailed, "Cannot move image \(image.reference.redacted) into place: \(error)."))
            }
            image.path = staging.finalPath
            images.append(image)
        }
        staged = []
        return NodeImages(nodeUUID: arguments.nodeUUID, imageType: imageType, images: images, instanceInfo: arguments.instanceInfo)
    }

    /// Resolves every reference and checks it could be fetched, without fetching.
    public func validate(_ arguments: FetchImageArguments, context: ImageRequestContext) async throws -> NodeImages {
        let (imageType, plans) = try await plan(arguments, context: context)
        var images: [ResolvedImage] = []
        for plan in plans {
            let started = monotonicMicroseconds()
            let metadata = try await perRole(plan) { try await plan.service.validate(plan.reference, context: context) }
            var checksum: ImageChecksum? = nil
            if case .value(let expected) = plan.checksum { checksum = expected }
            images.append(ResolvedImage(role: plan.role, reference: plan.reference, serviceName: plan.service.name, metadata: metadata,
                                        path: nil, fetched: nil, checksum: checksum ?? metadata.checksum, verified: false, cache: nil,
                                        durationMicroseconds: monotonicMicroseconds() - started))
        }
        return NodeImages(nodeUUID: arguments.nodeUUID, imageType: imageType, images: images, instanceInfo: arguments.instanceInfo)
    }

    /// The images to fetch, each with its service and expected checksum.
    private func plan(_ arguments: FetchImageArguments, context: ImageRequestContext) async throws -> (ImageType, [Plan]) {
        let info = arguments.instanceInfo
        let imagePlan = try makePlan(.image, info.imageSource, checksum: {
            try ChecksumSource.parse(imageChecksum: info.imageChecksum, osHashAlgorithm: info.osHashAlgorithm,
                                     osHashValue: info.osHashValue, allowMD5: allowMD5Checksum)
        })
        let imageType = info.decideImageType()
        guard imageType == .partition else { return (imageType, [imagePlan]) }
        let missing = [("kernel", info.kernel), ("ramdisk", info.ramdisk)].filter { $0.1 == nil }.map(\.0)
        guard missing.isEmpty else {
            throw RoleError(role: .image, reference: imagePlan.reference.redacted,
                            error: .missingParameter("Image \(imagePlan.reference.redacted) is missing the following properties: \(missing.joined(separator: ", "))."))
        }
        let kernelPlan = try makePlan(.kernel, info.kernel!, checksum: { .none })
        let ramdiskPlan = try makePlan(.ramdisk, info.ramdisk!, checksum: { .none })
        return (imageType, [imagePlan, kernelPlan, ramdiskPlan])
    }

    private func makePlan(_ role: ImageRole, _ text: String, checksum: () throws -> ChecksumSource) throws -> Plan {
        do {
            let reference = try ImageReference(text)
            let service = try registry.service(for: reference)
            let source = try checksum()
            if case .checksumFile = source {
                throw IronicError.validationFailed(reference.redacted, "checksum file URLs are resolved by the http image service, which this worker does not have.")
            }
            return Plan(role: role, reference: reference, service: service, checksum: source)
        } catch let error as IronicError {
            throw RoleError(role: role, reference: ImageReference.redact(text), error: error)
        }
    }

    private func fetchOne(_ plan: Plan, into staging: StagingFile, context: ImageRequestContext,
                          progress: @escaping @Sendable (ImageRole, TransferProgress) -> Void) async throws -> ResolvedImage {
        let started = monotonicMicroseconds()
        var expected: ImageChecksum? = nil
        if case .value(let checksum) = plan.checksum { expected = checksum }
        let algorithms: Set<HashAlgorithm> = [expected?.algorithm ?? .sha256]
        let role = plan.role
        let request = ImageFetchRequest(reference: plan.reference, destination: staging, digestAlgorithms: algorithms, context: context,
                                        progress: { progress(role, $0) })
        let fetched = try await perRole(plan) {
            do {
                return try await plan.service.fetch(request)
            } catch {
                staging.discard()
                throw error
            }
        }
        let algorithm = expected?.algorithm ?? .sha256
        guard let actual = fetched.digests[algorithm] else {
            staging.discard()
            throw RoleError(role: role, reference: plan.reference.redacted,
                            error: IronicError(.imageChecksumAlgorithmFailure, "The \(plan.service.name) service did not compute the \(algorithm) digest of \(plan.reference.redacted)."))
        }
        if let expected, actual != expected.value {
            staging.discard()
            throw RoleError(role: role, reference: plan.reference.redacted,
                            error: IronicError(.imageChecksumError, "The checksum of image \(plan.reference.redacted) does not match: expected \(expected.algorithm) \(expected.value), got \(actual)."))
        }
        return ResolvedImage(role: role, reference: plan.reference, serviceName: plan.service.name, metadata: fetched.metadata, path: nil,
                             fetched: fetched, checksum: try? ImageChecksum(algorithm: algorithm, value: actual), verified: expected != nil,
                             cache: .bypass, durationMicroseconds: monotonicMicroseconds() - started)
    }

    /// Runs `body`, attributing any failure to the plan's role (non-Ironic errors become
    /// `ImageDownloadFailed`; cancellation passes through).
    private func perRole<T>(_ plan: Plan, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as IronicError {
            throw RoleError(role: plan.role, reference: plan.reference.redacted, error: error)
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as RoleError {
            throw error
        } catch {
            throw RoleError(role: plan.role, reference: plan.reference.redacted, error: .downloadFailed(plan.reference.redacted, "\(error)"))
        }
    }
}

/// Microseconds on the monotonic clock, for durations.
func monotonicMicroseconds() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1_000
}
