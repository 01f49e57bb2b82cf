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

/// The transfer and verify stage: the bytes into a staging file — through the master image cache
/// when the service's images may be cached, else straight from the service after a space check —
/// hashed on the way and compared with the expected checksum. On failure nothing is left.
struct ImageTransferStage: Sendable {
    let cache: MasterImageCache?

    func run(_ plan: ImagePlan, into staging: StagingFile, context: ImageRequestContext,
             progress: @escaping TransferProgressHandler) async throws -> StagedImage {
        let started = ContinuousClock.now
        let expected = plan.expectedChecksum
        let service = plan.service
        let (fetched, cacheOutcome) = try await RoleError.attributed(to: plan.role, plan.reference) { () -> (FetchedImage, CacheOutcome) in
            // What the service says now: the description from planning, else (for images whose
            // cached copy must be revalidated) a fresh look.
            let current = service.caching == .revalidate && cache != nil
                ? try await service.validate(plan.reference, context: context.reportingQueued(to: progress)) : plan.shown
            if let cache, service.caching != .never, current?.noCache != true {
                let outcome = try await cache.fetch(plan.reference, service: service, current: current, expected: expected,
                                                    into: staging, context: context, progress: progress)
                return (outcome.fetched, outcome.cache)
            }
            // statvfs: on a network file system it waits for the server.
            let size = current?.size, directory = staging.directory
            let reservation = try await BlockingWork.run { _ in try DiskSpaceLedger.shared.reserve(size ?? 0, limit: size, in: directory) }
            defer { reservation.release() }
            let request = ImageFetchRequest(reference: plan.reference, destination: staging, digestAlgorithms: [expected?.algorithm ?? .sha256],
                                            context: context, progress: progress, announcedSize: size, diskReservation: reservation)
            do {
                return (try await service.fetch(request), .bypass)
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
        return StagedImage(plan: plan, staging: staging, fetched: fetched, checksum: checksum, verified: expected != nil,
                           cache: cacheOutcome, started: started)
    }
}
