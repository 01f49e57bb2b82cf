import ImageFormats
import ImageServices
import SystemSupport

/// An image in its staging file, verified, on its way to its final name: what the transfer stage
/// hands to the transform stages, and they to the placement.
public struct StagedImage: Sendable {
    public var plan: ImagePlan
    /// The hidden file next to the final name that holds the bytes.
    public var staging: StagingFile
    public var fetched: FetchedImage
    /// The checksum reported: the verified one, or the one computed when none was expected.
    public var checksum: ImageChecksum
    /// Whether an expected checksum was given and matched.
    public var verified: Bool
    public var cache: CacheOutcome
    /// When the work on this image began.
    public var started: ContinuousClock.Instant
    /// What the format inspection found (nil until it ran, or when it is turned off).
    public var inspection: FormatInspection? = nil
    /// What was served, once a stage changed the bytes (converted them); nil while they are as served.
    public var source: ImageSource? = nil

    /// The image as it is now, described as a source.
    public var served: ImageSource {
        ImageSource(diskFormat: inspection?.format, compression: nil, size: fetched.size, checksum: checksum)
    }
}

/// What the transform stages make of a verified image (the identity for kernels and ramdisks).
public typealias ImageTransform = @Sendable (StagedImage) async throws -> StagedImage

/// The transfer and verify stage: the bytes into a staging file — through the master image cache
/// when the service's images may be cached, else straight from the service after a space check —
/// hashed on the way and compared with the expected checksum, then handed to `transform`. Through
/// the cache, the transform runs before the master is kept, so the master holds the transformed
/// bytes (contract §3.3 step 6). On failure nothing is left.
struct ImageTransferStage: Sendable {
    let cache: MasterImageCache?

    func run(_ plan: ImagePlan, into staging: StagingFile, context: ImageRequestContext, cacheVariant: String?,
             progress: @escaping TransferProgressHandler, transform: @escaping ImageTransform) async throws -> StagedImage {
        let started = ContinuousClock.now
        let expected = plan.expectedChecksum
        let service = plan.service
        // What the service says now: the description from planning, else (for images whose
        // cached copy must be revalidated) a fresh look.
        let current = try await RoleError.attributed(to: plan.role, plan.reference) {
            service.caching == .revalidate && cache != nil
                ? try await service.validate(plan.reference, context: context.reportingQueued(to: progress)) : plan.shown
        }
        if let cache, service.caching != .never, current?.noCache != true {
            return try await RoleError.attributed(to: plan.role, plan.reference) {
                try await cache.fetch(plan, current: current, variant: cacheVariant, into: staging, context: context, progress: progress,
                                      transform: transform)
            }
        }
        let fetched = try await RoleError.attributed(to: plan.role, plan.reference) { () -> FetchedImage in
            // statvfs: on a network file system it waits for the server.
            let size = current?.size, directory = staging.directory
            let reservation = try await BlockingWork.run { _ in try DiskSpaceLedger.shared.reserve(size ?? 0, limit: size, in: directory) }
            defer { reservation.release() }
            let request = ImageFetchRequest(reference: plan.reference, destination: staging, digestAlgorithms: [expected?.algorithm ?? .sha256],
                                            context: context, progress: progress, announcedSize: size, diskReservation: reservation)
            do {
                return try await service.fetch(request)
            } catch {
                await staging.discardOffPool()
                throw error
            }
        }
        let checksum: ImageChecksum
        do {
            checksum = try ChecksumVerification.verify(fetched, expected: expected, reference: plan.reference, serviceName: service.name)
        } catch {
            await staging.discardOffPool()
            throw RoleError(role: plan.role, reference: plan.reference.redacted, error: error)
        }
        let image = StagedImage(plan: plan, staging: staging, fetched: fetched, checksum: checksum, verified: expected != nil,
                                cache: .bypass, started: started)
        return try await transform(image)
    }
}
