import Primitives
import SystemSupport
import Foundation
import ImageServices
import ImageFormats
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The master image cache, as Ironic's instance image cache: one master copy of each image
/// (`<instance_master_path>/<key>`), hard-linked into every node folder that needs it, so a
/// hundred nodes deploying one image cost one download. Beyond Ironic:
///
/// - **single flight across processes**: concurrent requests for one key wait for the first
///   (an in-process lock, then `flock` on `.locks/<key>.lock` shared by every worker process on the
///   host), then link what it made;
/// - **ETag** as well as `Last-Modified` decides whether an http(s) master is current;
/// - **what a hit knows**: `<key>.json` beside each master keeps its validators, size and digests,
///   so a hit reports (and checks) its checksum without reading the image;
/// - **crash safety**: downloads go to a staging file in the cache folder (named after the owning
///   process), are fsynced and renamed; staging files of dead processes are removed at start;
/// - masters are linked into node folders with a reflink or a copy when a hard link is impossible.
///
/// Eviction (``cleanUp(amount:)``) removes only masters no node folder links to (link count 1):
/// expired ones first (`image_cache_ttl`), then the oldest while the cache is over
/// `image_cache_size`.
public final class MasterImageCache: Sendable {
    /// `[pxe] instance_master_path`, `image_cache_size`, `image_cache_ttl`.
    public struct Settings: Sendable, Hashable {
        public var directory: String
        public var sizeLimitBytes: Int64
        public var timeToLive: Duration
        /// The permissions of masters (`[image_worker] image_file_mode`): node files linked to
        /// a master share them.
        public var imageFileMode: mode_t

        public init(directory: String, sizeLimitBytes: Int64 = 20_480 << 20, timeToLive: Duration = .seconds(10_080 * 60),
                    imageFileMode: mode_t = 0o644) {
            self.directory = directory
            self.sizeLimitBytes = sizeLimitBytes
            self.timeToLive = timeToLive
            self.imageFileMode = imageFileMode
        }
    }

    /// What an eviction pass did.
    public struct CleanUpReport: Sendable, Hashable {
        public var removed: Int
        public var freedBytes: Int64
    }

    public let settings: Settings
    let directory: DirectoryHandle
    private let locks: DirectoryHandle
    private let keyLock = KeyedLock()
    private let logger: Logger
    /// Where downloads into the cache reserve their space.
    private let ledger: DiskSpaceLedger

    /// Opens (creating it) the cache folder and removes what dead processes left in it.
    public init(settings: Settings, logger: Logger, ledger: DiskSpaceLedger = .shared) throws {
        self.settings = settings
        self.logger = logger
        self.ledger = ledger
        directory = try DirectoryHandle(makingPath: settings.directory)
        locks = try directory.subdirectory(".locks", create: true)
        var abandoned = 0
        for entry in try directory.entries() where StagingFile.isAbandoned(entry) {
            try directory.remove(entry)
            abandoned += 1
        }
        if abandoned > 0 { logger.notice("removed staging files left in the image cache by an earlier process", metadata: ["count": "\(abandoned)"]) }
    }

    /// Fetches the plan's image through the cache into `destination` (a node's staging file),
    /// verified and transformed: on a miss, `transform` runs on the verified download before it
    /// becomes the master, so the master holds the transformed (decompressed, converted) bytes
    /// and the next node costs a link; on a hit it runs on the linked copy, where it finds nothing
    /// left to change and checks the master against this request.
    ///
    /// - Parameters:
    ///   - current: what the service says of the image now (`show`), for staleness and the space check.
    ///   - variant: the transforms' settings (``ImageTransformStage/cacheSettings``): part of the key.
    public func fetch(_ plan: ImagePlan, current: ImageMetadata?, variant: String?, into destination: StagingFile, context: ImageRequestContext,
                      progress: @escaping TransferProgressHandler, transform: @escaping ImageTransform) async throws -> StagedImage {
        let key = CacheKey.key(for: plan.reference, service: plan.service, variant: variant)
        var logger = context.logger
        logger[metadataKey: "cache_key"] = "\(key)"
        let started = ContinuousClock.now
        return try await keyLock.withLock(key) {
            let fileLock = try await CacheFileLock.acquire(in: locks, key: key)
            defer { _ = fileLock }
            if let hit = try await hit(key, plan: plan, current: current, into: destination, started: started, logger: logger) {
                return try await transform(hit)
            }
            return try await miss(key, plan: plan, current: current, variant: variant, into: destination, started: started, context: context,
                                  progress: progress, transform: transform, logger: logger)
        }
    }

    // MARK: Hit

    private func hit(_ key: String, plan: ImagePlan, current: ImageMetadata?, into destination: StagingFile, started: ContinuousClock.Instant,
                     logger: Logger) async throws -> StagedImage? {
        let (found, opened) = try await BlockingWork.run { [directory] _ in (CacheRecord.read(from: directory, key: key), self.openMaster(key)) }
        guard var record = found, let master = opened else { return nil }
        guard record.isCurrent(for: current, caching: plan.service.caching) else {
            logger.info("the cached master is stale; fetching again")
            return nil
        }
        let expected = plan.expectedChecksum
        // A transformed master is checked against the digest of what was served (recorded): in
        // the request's algorithm (none recorded in it: fetched again); without an expected
        // checksum, sha256 when recorded, else any recorded one, to report.
        var served: (algorithm: HashAlgorithm, digest: String)?
        if let record = record.served {
            let recorded = record.digests.compactMap { name, value in HashAlgorithm(name: name).map { (algorithm: $0, digest: value) } }
            let found = if let expected {
                recorded.first { $0.algorithm == expected.algorithm }
            } else {
                recorded.first { $0.algorithm == .sha256 } ?? recorded.first
            }
            guard let found else {
                logger.info("the cached master was transformed and its source's digest in this algorithm is unknown; fetching again")
                return nil
            }
            served = found
        }
        // The master's own digest: the request's algorithm, or for a transformed master sha256
        // (sha512 when asked for), as the transforms report it.
        let algorithm: HashAlgorithm = record.served == nil ? expected?.algorithm ?? .sha256 : expected?.algorithm == .sha512 ? .sha512 : .sha256
        if record.digest(algorithm) == nil {
            // Asked for a digest the record lacks: compute it once from the master and keep it.
            let digests = try await BlockingWork.run { cancellation in
                try SparseFileDigest.digests(of: master, algorithms: [algorithm], cancellation: cancellation)
            }
            record.digests[algorithm.rawValue] = digests[algorithm]
            try await writeRecord(record, key: key)
        }
        if let expected, (served?.digest ?? record.digest(algorithm)) != expected.value {
            logger.warning("the cached master does not have the expected checksum; fetching again")
            return nil
        }
        let checksum = try ImageChecksum(algorithm: algorithm, value: record.digest(algorithm) ?? "")
        let source = try record.served.map { recorded in
            ImageSource(diskFormat: recorded.diskFormat.flatMap(DiskFormat.init(rawValue:)), compression: recorded.compression, size: recorded.size,
                        checksum: try ImageChecksum(algorithm: served?.algorithm ?? .sha256, value: served?.digest ?? ""))
        }
        let transfer = try await place(master, into: destination)
        Self.markUsed(master)
        var digests: [HashAlgorithm: String] = [:]
        for (name, value) in record.digests { if let algorithm = HashAlgorithm(name: name) { digests[algorithm] = value } }
        logger.info("image cache hit", metadata: ["transfer": "\(transfer.rawValue)", "transformed": "\(record.served != nil)"])
        let fetched = FetchedImage(size: record.size, digests: digests, transfer: transfer,
                                   bytesTransferred: transfer == .copy ? record.size : 0, metadata: record.metadata)
        WorkerMetrics.cacheLookup(hit: true)
        var image = StagedImage(plan: plan, staging: destination, fetched: fetched, checksum: checksum, verified: expected != nil,
                                cache: .hit, started: started)
        image.source = source
        return image
    }

    // MARK: Miss

    private func miss(_ key: String, plan: ImagePlan, current: ImageMetadata?, variant: String?, into destination: StagingFile,
                      started: ContinuousClock.Instant, context: ImageRequestContext, progress: @escaping TransferProgressHandler,
                      transform: ImageTransform, logger: Logger) async throws -> StagedImage {
        let reference = plan.reference, service = plan.service, expected = plan.expectedChecksum
        // Every step that can free or flush a large file runs off the cooperative pool.
        let reservation = try await BlockingWork.run { [directory] _ in
            try directory.remove(key)
            try directory.remove("\(key).json")
            return try self.reserveSpace(for: current?.size)
        }
        let staging = StagingFile(in: directory, finalName: key, mode: settings.imageFileMode)
        // One digest of the download, in the request's algorithm: a second (sha256 beside a
        // Glance image's sha512, for later requests in another algorithm) would cost a second
        // pass of the CPU on every download. Such a request is a miss once.
        let algorithm = expected?.algorithm ?? .sha256
        var image: StagedImage
        do {
            defer { reservation.release() }
            let fetched = try await service.fetch(ImageFetchRequest(reference: reference, destination: staging, digestAlgorithms: [algorithm],
                                                                    context: context, progress: progress, announcedSize: current?.size,
                                                                    diskReservation: reservation))
            let checksum = try ChecksumVerification.verify(fetched, expected: expected, reference: reference, serviceName: service.name)
            image = StagedImage(plan: plan, staging: staging, fetched: fetched, checksum: checksum, verified: expected != nil,
                                cache: .miss, started: started)
        } catch {
            await staging.discardOffPool()
            throw error
        }
        // The transforms remove their staging files on failure.
        image = try await transform(image)
        do {
            try await image.staging.commitOffPool()
        } catch {
            await image.staging.discardOffPool()
            throw error
        }
        let metadata = image.fetched.metadata
        // The download's digests are of the served bytes: the master's own when the transforms
        // left them as served, else the record of what was served.
        var served: [String: String] = [:]
        for (algorithm, value) in image.fetched.digests { served[algorithm.rawValue] = value }
        var digests = image.source == nil ? served : [:]
        digests[image.checksum.algorithm.rawValue] = image.checksum.value
        let record = CacheRecord(
            source: reference.redacted, service: service.name, entityTag: metadata.entityTag ?? current?.entityTag,
            lastModified: metadata.lastModified ?? current?.lastModified, updatedAtMicroseconds: metadata.updatedAtMicroseconds ?? current?.updatedAtMicroseconds,
            diskFormat: metadata.diskFormat ?? current?.diskFormat, size: image.fetched.size, digests: digests,
            fetchedAtMicroseconds: Int64(Date().timeIntervalSince1970 * 1_000_000), variant: variant,
            served: image.source.map { CacheRecord.Served($0, digests: served) })
        try await writeRecord(record, key: key)
        guard let master = openMaster(key) else {
            throw IronicError(.imageDownloadFailed, "The cached master of \(reference.redacted) vanished after it was written.")
        }
        let placed = try await place(master, into: destination)
        logger.info("image cache miss: downloaded", metadata: [
            "bytes": "\(image.fetched.bytesTransferred)", "linked": "\(placed.rawValue)", "transformed": "\(image.source != nil)",
        ])
        image.staging = destination
        image.fetched.metadata = record.metadata
        do {
            let report = try await BlockingWork.run { _ in try self.cleanUp() }
            if report.removed > 0 { logger.info("evicted cached images", metadata: ["removed": "\(report.removed)", "freed_bytes": "\(report.freedBytes)"]) }
        } catch {
            logger.warning("image cache eviction failed", metadata: ["error": "\(error)"])
        }
        WorkerMetrics.cacheLookup(hit: false)
        return image
    }

    /// Reserves space for a download of `size` bytes (nil: unknown, the reservation grows as bytes
    /// arrive) in the cache's folder, less what downloads under way still need (``DiskSpaceLedger``).
    /// When short, it evicts unused masters, only as many as the download needs and only when it
    /// can fit at all (a HEAD that claims 10^15 bytes evicts nothing); else `InsufficientDiskSpace`.
    /// Blocking: call it off the cooperative pool.
    public func reserveSpace(for size: Int64?) throws -> DiskReservation {
        guard let size else { return try ledger.reserve(0, limit: nil, in: directory) }
        let available = try ledger.unreserved(in: directory)
        if available < size {
            let evictable = try unlinkedMasters().reduce(Int64(0)) { $0 + $1.size }
            guard available + evictable >= size else {
                logger.notice("a download larger than the disk could hold; nothing evicted for it", metadata: [
                    "needed_bytes": "\(size)", "available_bytes": "\(available)", "evictable_bytes": "\(evictable)",
                ])
                throw DiskSpace.insufficient(directory.path, required: size, available: max(available, 0))
            }
            logger.notice("short of disk space for a download; cleaning the image cache", metadata: [
                "needed_bytes": "\(size)", "available_bytes": "\(available)",
            ])
            _ = try cleanUp(amount: size - available)
        }
        return try ledger.reserve(size, limit: size, in: directory)
    }

    // MARK: Eviction

    /// Removes masters no node uses: expired ones, then the oldest while the cache is over its size
    /// or (when asked) until `amount` bytes are freed. Masters still linked from a node folder, and
    /// masters another task or process is working on, are never removed.
    @discardableResult
    public func cleanUp(amount: Int64? = nil) throws -> CleanUpReport {
        var total: Int64 = 0
        var masters = try unlinkedMasters(total: &total)
        masters.sort { $0.lastUsed < $1.lastUsed }
        let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
        let ttl = Int64(settings.timeToLive.components.seconds) * 1_000_000
        var report = CleanUpReport(removed: 0, freedBytes: 0)
        var remaining: [UnlinkedMaster] = []
        for master in masters {
            if now - master.lastUsed > ttl, try remove(master.key) {
                report.removed += 1
                report.freedBytes += master.size
                total -= master.size
            } else {
                remaining.append(master)
            }
        }
        for master in remaining {
            let wanted = total > settings.sizeLimitBytes || (amount.map { report.freedBytes < $0 } ?? false)
            guard wanted else { break }
            if try remove(master.key) {
                report.removed += 1
                report.freedBytes += master.size
                total -= master.size
            }
        }
        WorkerMetrics.cacheEvicted(count: report.removed, bytes: report.freedBytes)
        return report
    }

    /// A master no node folder links to: a candidate for eviction.
    private struct UnlinkedMaster {
        var key: String
        var size: Int64
        var lastUsed: Int64
    }

    /// The masters no node folder links to; `total` gets the size of every master.
    private func unlinkedMasters(total: inout Int64) throws -> [UnlinkedMaster] {
        var masters: [UnlinkedMaster] = []
        for entry in try directory.entries() where !entry.hasPrefix(".") && !entry.hasSuffix(".json") {
            guard let info = try directory.fileStatus(of: entry), info.kind == .regular else { continue }
            // The blocks a master takes, not its size: a converted master is sparse, and evicting
            // it frees what it takes.
            total += info.allocatedBytes
            guard info.linkCount == 1 else { continue }
            let lastUsed = max(info.modificationMicroseconds, info.accessMicroseconds, info.changeMicroseconds)
            masters.append(UnlinkedMaster(key: entry, size: info.allocatedBytes, lastUsed: lastUsed))
        }
        return masters
    }

    private func unlinkedMasters() throws -> [UnlinkedMaster] {
        var total: Int64 = 0
        return try unlinkedMasters(total: &total)
    }

    /// Removes one master and its record, unless it is in use (locked, or linked from a node).
    private func remove(_ key: String) throws -> Bool {
        guard let lock = try CacheFileLock.tryAcquire(in: locks, key: key) else { return false }
        defer { _ = lock }
        guard let info = try directory.fileStatus(of: key), info.linkCount == 1 else { return false }
        try directory.remove(key)
        try directory.remove("\(key).json")
        return true
    }

    // MARK: Helpers

    /// Writes a master's record (an fsync, which waits behind a large download's write-back).
    private func writeRecord(_ record: CacheRecord, key: String) async throws {
        try await BlockingWork.run { [directory] _ in try record.write(to: directory, key: key) }
    }

    /// Links (or copies) the master into a node's staging file; on failure nothing is left there.
    private func place(_ master: OwnedDescriptor, into destination: StagingFile) async throws -> ImageTransfer {
        do {
            return try await BlockingWork.run { cancellation in try destination.place(from: master, cancellation: cancellation) }
        } catch {
            await destination.discardOffPool()
            throw error
        }
    }

    private func openMaster(_ key: String) -> OwnedDescriptor? {
        let fd = openat(directory.descriptor.rawValue, key, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        return fd >= 0 ? OwnedDescriptor(fd) : nil
    }

    /// Records a use: the access time is what eviction's "last used" reads (mounts with
    /// relatime or noatime would not update it by reading).
    private static func markUsed(_ master: OwnedDescriptor) {
        // <sys/stat.h>'s UTIME_NOW and UTIME_OMIT, which Swift's Glibc module does not export.
        let now = (1 << 30) - 1
        let omit = (1 << 30) - 2
        var times = [timespec(tv_sec: 0, tv_nsec: now), timespec(tv_sec: 0, tv_nsec: omit)]
        _ = futimens(master.rawValue, &times)
    }
}
