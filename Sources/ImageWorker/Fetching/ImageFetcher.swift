import ImageServices
#if canImport(Glibc)
import Glibc
#endif

/// Fetches a node's images as a pipeline of stages, each a type with one concern:
///
/// 1. **plan and resolve** (``FetchPlanner``): Ironic's `instance_info` rules; each reference's
///    service by scheme; whole disk or partition; every image's expected checksum;
/// 2. **transfer and verify** (``ImageTransferStage``): the bytes into a staging file next to the
///    final name, through the master image cache when it applies, checked against the checksum;
/// 3. **transform** (``ImageTransformStage``s, on the disk image): format inspection
///    (``FormatInspectionStage``) and conversion to raw (``ImageConversionStage``) as the worker
///    configures them;
/// 4. **place** (``ImagePlacement``): only when every image is good, each renamed into place.
///
/// On any failure every staging file is removed: nothing partial is ever left under a final name.
/// Services are asked only through the ``ImageServices/ImageService`` protocol's capabilities, so
/// registering a service for a new scheme changes nothing here.
public struct ImageFetcher: Sendable {
    public let registry: ImageServiceRegistry
    public let checksums: ChecksumPolicy
    /// The master image cache, if the worker keeps one (`[pxe] instance_master_path`).
    public let cache: MasterImageCache?
    /// The stages run on the disk image between verification and placement, in order.
    public let transforms: [any ImageTransformStage]
    /// The permissions of the image files written (`[image_worker] image_file_mode`); a hard
    /// link keeps its source's.
    public let imageFileMode: mode_t

    private var planner: FetchPlanner { FetchPlanner(registry: registry, checksums: checksums) }
    private var transfer: ImageTransferStage { ImageTransferStage(cache: cache) }

    /// Creates a fetcher.
    public init(registry: ImageServiceRegistry, checksums: ChecksumPolicy = ChecksumPolicy(), cache: MasterImageCache? = nil,
                transforms: [any ImageTransformStage] = [], imageFileMode: mode_t = 0o644) {
        self.registry = registry
        self.checksums = checksums
        self.cache = cache
        self.transforms = transforms
        self.imageFileMode = imageFileMode
    }

    /// Fetches the node's images into its folder in `store`.
    public func fetch(_ arguments: FetchImageArguments, into store: NodeImageStore, context: ImageRequestContext,
                      progress: @escaping @Sendable (ImageRole, TransferProgress) -> Void) async throws -> NodeImages {
        // Planning's requests (a description, a checksum file) are the disk image's as far as
        // progress goes: a wait for their connection shows as the image's `phase: queued`.
        let (imageType, plans) = try await planner.plan(arguments.instanceInfo, context: context.reportingQueued { progress(.image, $0) })
        let directory: DirectoryHandle
        do {
            directory = try store.nodeDirectory(arguments.nodeUUID, create: true)
        } catch {
            throw RoleError(role: .image, reference: plans[0].reference.redacted,
                            error: IronicError(.imageDownloadFailed, "Cannot create the folder for node \(arguments.nodeUUID): \(error)."))
        }
        var staged: [StagedImage] = []
        do {
            for plan in plans {
                let staging = StagingFile(in: directory, finalName: plan.role.fileName, mode: imageFileMode)
                staged.append(try await stage(plan, into: staging, context: context, progress: progress))
            }
            let images = try await ImagePlacement.place(staged)
            // The folder holds exactly this fetch's files: a whole-disk fetch after a partition
            // one leaves no kernel or ramdisk of the earlier image behind.
            let placed = Set(plans.map(\.role))
            try await ImagePlacement.removeOthers(than: placed, in: directory)
            return NodeImages(nodeUUID: arguments.nodeUUID, imageType: imageType, images: images, instanceInfo: arguments.instanceInfo)
        } catch {
            await ImagePlacement.discard(staged)
            throw error
        }
    }

    /// Resolves every reference and checks it could be fetched, without fetching.
    public func validate(_ arguments: FetchImageArguments, context: ImageRequestContext) async throws -> NodeImages {
        let (imageType, plans) = try await planner.plan(arguments.instanceInfo, context: context)
        var images: [ResolvedImage] = []
        for plan in plans {
            let started = ContinuousClock.now
            let metadata = try await RoleError.attributed(to: plan.role, plan.reference) { try await plan.service.validate(plan.reference, context: context) }
            images.append(ResolvedImage(role: plan.role, reference: plan.reference, serviceName: plan.service.name, metadata: metadata,
                                        path: nil, fetched: nil, checksum: plan.expectedChecksum ?? metadata.checksum, verified: false, cache: nil,
                                        duration: ContinuousClock.now - started))
        }
        return NodeImages(nodeUUID: arguments.nodeUUID, imageType: imageType, images: images, instanceInfo: arguments.instanceInfo)
    }

    /// Fetches one image (no kernel or ramdisk) to `directory/name`, verified and transformed as a
    /// node's disk would be: for `image-worker fetch --output`.
    public func fetchImage(_ info: InstanceInfo, into directory: DirectoryHandle, named name: String, context: ImageRequestContext,
                           progress: @escaping @Sendable (ImageRole, TransferProgress) -> Void) async throws -> ResolvedImage {
        let plan = try await planner.diskPlan(info, context: context)
        let image = try await stage(plan, into: StagingFile(in: directory, finalName: name, mode: imageFileMode), context: context, progress: progress)
        do {
            return try await ImagePlacement.place([image])[0]
        } catch {
            await ImagePlacement.discard([image])
            throw error
        }
    }

    /// Transfer, verify and (for the disk image) transform one image into its staging file.
    private func stage(_ plan: ImagePlan, into staging: StagingFile, context: ImageRequestContext,
                       progress: @escaping @Sendable (ImageRole, TransferProgress) -> Void) async throws -> StagedImage {
        let role = plan.role
        guard role == .image, !transforms.isEmpty else {
            return try await transfer.run(plan, into: staging, context: context, cacheVariant: nil, progress: { progress(role, $0) }) { $0 }
        }
        let transforms = self.transforms
        return try await transfer.run(plan, into: staging, context: context, cacheVariant: Self.cacheVariant(of: transforms),
                                      progress: { progress(role, $0) }) { staged in
            var image = staged
            for stage in transforms {
                do {
                    image = try await RoleError.attributed(to: role, plan.reference) {
                        try await stage.transform(image, context: context) { progress(role, $0) }
                    }
                } catch {
                    await image.staging.discardOffPool()
                    throw error
                }
            }
            return image
        }
    }

    /// What the transforms' settings make of an image, as a cache key's suffix: a master made
    /// under other settings is another master (contract §3.3 step 6). Nil when no stage changes bytes.
    static func cacheVariant(of transforms: [any ImageTransformStage]) -> String? {
        let settings = transforms.compactMap(\.cacheSettings)
        return settings.isEmpty ? nil : settings.joined(separator: ";")
    }
}
