import Crypto
import Foundation
import ImageServices
import Logging
import NIOConcurrencyHelpers
import Testing
import TestSupport
@testable import ImageWorker
import SystemSupport

/// An http-like service in memory: serves `content` under any `scripted://` reference, with the
/// ETag the test sets, counting downloads.
final class ScriptedImageService: ImageService, Sendable {
    let name = "scripted"
    let schemes = ["scripted"]
    let caching: ImageCaching
    private let state: NIOLockedValueBox<State>
    private struct State {
        var content: [UInt8]
        var entityTag: String?
        var downloads = 0
    }

    init(content: [UInt8], entityTag: String? = "\"v1\"", caching: ImageCaching = .revalidate) {
        state = NIOLockedValueBox(State(content: content, entityTag: entityTag))
        self.caching = caching
    }

    var downloads: Int { state.withLockedValue { $0.downloads } }
    func replace(content: [UInt8], entityTag: String?) { state.withLockedValue { $0.content = content; $0.entityTag = entityTag } }

    func show(_ reference: ImageReference, context: ImageRequestContext) async throws -> ImageMetadata {
        state.withLockedValue { ImageMetadata(size: Int64($0.content.count), entityTag: $0.entityTag) }
    }

    func fetch(_ request: ImageFetchRequest) async throws -> FetchedImage {
        let (content, tag) = state.withLockedValue { state -> ([UInt8], String?) in
            state.downloads += 1
            return (state.content, state.entityTag)
        }
        try await Task.sleep(for: .milliseconds(50))  // long enough for concurrent requests to pile up
        let output = try request.destination.create()
        _ = content.withUnsafeBytes { write(output.rawValue, $0.baseAddress, $0.count) }
        var digest = try MultiDigest(request.digestAlgorithms)
        digest.update(content)
        return FetchedImage(size: Int64(content.count), digests: digest.finalize(), transfer: .download, bytesTransferred: Int64(content.count),
                            metadata: ImageMetadata(size: Int64(content.count), entityTag: tag))
    }
}

@Suite("master image cache")
struct MasterImageCacheTests {
    let context = ImageRequestContext(requestID: "req-cache", logger: Logger(label: "cache"))

    struct Fixture {
        let root: TemporaryDirectory
        let cache: MasterImageCache
        let store: NodeImageStore
        let fetcher: ImageFetcher
        let service: ScriptedImageService

        init(service: ScriptedImageService, sizeLimit: Int64 = 1 << 30, ttl: Duration = .seconds(3600), imageFileMode: mode_t = 0o644,
             transforms: [any ImageTransformStage] = [], sharing shared: TemporaryDirectory? = nil) throws {
            root = try shared ?? TemporaryDirectory(prefix: "cache")
            cache = try MasterImageCache(settings: .init(directory: root.appending("masters"), sizeLimitBytes: sizeLimit, timeToLive: ttl,
                                                         imageFileMode: imageFileMode),
                                         logger: Logger(label: "cache"))
            store = try NodeImageStore(path: root.appending("images"))
            var registry = ImageServiceRegistry()
            registry.register(service)
            fetcher = ImageFetcher(registry: registry, checksums: .init(requireChecksums: false), cache: cache, transforms: transforms)
            self.service = service
        }

        func fetch(_ node: String = UUID().uuidString.lowercased(), _ reference: String = "scripted://images/base.img", checksum: String? = nil,
                   context: ImageRequestContext, progress: @escaping @Sendable (TransferProgress) -> Void = { _ in }) async throws -> ResolvedImage {
            let arguments = try FetchImageArguments(nodeUUID: node, instanceInfo: InstanceInfo(imageSource: reference, imageChecksum: checksum))
            return try await fetcher.fetch(arguments, into: store, context: context) { _, report in progress(report) }.images[0]
        }

        func inode(_ path: String) throws -> UInt64 {
            (try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as! NSNumber).uint64Value
        }

        var masters: [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: root.appending("masters"))) ?? []).filter { !$0.hasPrefix(".") && !$0.hasSuffix(".json") }.sorted()
        }
    }

    @Test("keys are Ironic's: uuid5(NAMESPACE_URL, href), or the Glance id")
    func keys() {
        // Python: uuid.uuid5(uuid.NAMESPACE_URL, 'http://abc.com/ubuntu.qcow2')
        #expect(CacheKey.uuid5(name: "http://abc.com/ubuntu.qcow2") == "3e0a1e66-6413-5a54-a832-f42edaa5f564")
    }

    @Test("a miss downloads once; a hit links the master, reports its recorded checksum and downloads nothing")
    func missThenHit() async throws {
        let content = randomBytes(100_000)
        let fixture = try Fixture(service: ScriptedImageService(content: content))
        defer { fixture.root.remove() }
        let first = try await fixture.fetch(context: context)
        #expect(first.cache == .miss)
        #expect(first.fetched?.transfer == .download)
        let second = try await fixture.fetch(context: context)
        #expect(second.cache == .hit)
        #expect(second.fetched?.transfer == .hardlink)
        #expect(second.fetched?.bytesTransferred == 0)
        #expect(second.checksum?.value == SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined())
        #expect(fixture.service.downloads == 1)
        let master = fixture.root.appending("masters/\(fixture.masters[0])")
        #expect(try fixture.inode(first.path!) == fixture.inode(master))
        #expect(try fixture.inode(second.path!) == fixture.inode(master))
    }

    @Test("modes whatever the umask: masters and node files image_file_mode, records 0600")
    func modes() async throws {
        let fixture = try Fixture(service: ScriptedImageService(content: randomBytes(1000)), imageFileMode: 0o640)
        defer { fixture.root.remove() }
        let previous = umask(0o077)  // narrower than 0640: the worker must set modes itself
        defer { umask(previous) }
        let image = try await fixture.fetch(context: context)
        func mode(_ path: String) throws -> Int {
            try (FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? -1) & 0o777
        }
        let master = fixture.root.appending("masters/\(fixture.masters[0])")
        #expect(try mode(master) == 0o640)
        #expect(try mode(try #require(image.path)) == 0o640)
        #expect(try mode(master + ".json") == 0o600)
    }

    @Test("twenty concurrent requests for one image download it once")
    func singleFlight() async throws {
        let fixture = try Fixture(service: ScriptedImageService(content: randomBytes(50_000)))
        defer { fixture.root.remove() }
        let outcomes = try await withThrowingTaskGroup(of: CacheOutcome?.self) { group in
            for _ in 0..<20 { group.addTask { try await fixture.fetch(context: context).cache } }
            return try await group.reduce(into: [CacheOutcome?]()) { $0.append($1) }
        }
        #expect(fixture.service.downloads == 1)
        #expect(outcomes.filter { $0 == .miss }.count == 1)
        #expect(outcomes.filter { $0 == .hit }.count == 19)
    }

    @Test("a changed ETag means a new download; an unchanged one a hit; no validator at all, a download each time")
    func staleness() async throws {
        let service = ScriptedImageService(content: randomBytes(1000))
        let fixture = try Fixture(service: service)
        defer { fixture.root.remove() }
        _ = try await fixture.fetch(context: context)
        #expect(try await fixture.fetch(context: context).cache == .hit)
        let newer = randomBytes(2000)
        service.replace(content: newer, entityTag: "\"v2\"")
        let refreshed = try await fixture.fetch(context: context)
        #expect(refreshed.cache == .miss)
        #expect(refreshed.fetched?.size == 2000)
        #expect(service.downloads == 2)
        service.replace(content: newer, entityTag: nil)
        #expect(try await fixture.fetch(context: context).cache == .miss)
        #expect(try await fixture.fetch(context: context).cache == .miss)
        #expect(service.downloads == 4)
    }

    @Test("a master that does not have the expected checksum is fetched again")
    func hitWithWrongChecksum() async throws {
        let service = ScriptedImageService(content: randomBytes(1000))
        let fixture = try Fixture(service: service)
        defer { fixture.root.remove() }
        _ = try await fixture.fetch(context: context)
        let other = randomBytes(1000)
        service.replace(content: other, entityTag: "\"v1\"")  // changed without a new ETag
        let sha = SHA256.hash(data: other).map { String(format: "%02x", $0) }.joined()
        let fetched = try await fixture.fetch(checksum: sha, context: context)
        #expect(fetched.cache == .miss)
        #expect(fetched.verified)
        #expect(service.downloads == 2)
    }

    @Test("eviction by size: oldest unlinked masters first; a master linked from a node is never removed")
    func evictionBySize() async throws {
        let service = ScriptedImageService(content: randomBytes(40_000))
        let fixture = try Fixture(service: service, sizeLimit: 100_000)
        defer { fixture.root.remove() }
        let nodes = (0..<4).map { _ in UUID().uuidString.lowercased() }
        for (index, node) in nodes.enumerated() {
            _ = try await fixture.fetch(node, "scripted://images/\(index).img", context: context)
        }
        // Each miss ran eviction; all four masters are linked from a node, so none went.
        #expect(fixture.masters.count == 4)
        try fixture.store.deleteNode(nodes[0])
        try fixture.store.deleteNode(nodes[1])
        let report = try fixture.cache.cleanUp()
        #expect(report.removed == 2)
        #expect(fixture.masters.count == 2)
        try fixture.store.deleteNode(nodes[2])
        #expect(try fixture.cache.cleanUp().removed == 0, "two masters of 40 kB fit in 100 kB")
        #expect(try fixture.cache.cleanUp(amount: 1).removed == 1)
        #expect(fixture.masters.count == 1)
    }

    @Test("eviction by age: expired unlinked masters go, linked ones stay")
    func evictionByAge() async throws {
        // Last use is max(mtime, atime, ctime), and ctime cannot be set back: a TTL of zero ages
        // every master at once.
        let fixture = try Fixture(service: ScriptedImageService(content: randomBytes(1000)), ttl: .zero)
        defer { fixture.root.remove() }
        let linked = UUID().uuidString.lowercased()
        let unlinked = UUID().uuidString.lowercased()
        _ = try await fixture.fetch(linked, "scripted://images/a.img", context: context)
        _ = try await fixture.fetch(unlinked, "scripted://images/b.img", context: context)
        #expect(fixture.masters.count == 2, "both are linked from nodes after their misses")
        try fixture.store.deleteNode(unlinked)
        try await Task.sleep(for: .milliseconds(20))
        #expect(try fixture.cache.cleanUp().removed == 1, "the expired unlinked master goes")
        #expect(fixture.masters.count == 1, "the linked one stays, however old")
        let long = try Fixture(service: ScriptedImageService(content: randomBytes(1000)), ttl: .seconds(3600))
        defer { long.root.remove() }
        let node = UUID().uuidString.lowercased()
        _ = try await long.fetch(node, context: context)
        try long.store.deleteNode(node)
        #expect(try long.cache.cleanUp().removed == 0, "an unlinked master younger than the TTL stays")
    }

    @Test("no space for a download: the cache is cleaned first, then InsufficientDiskSpace names the folder")
    func insufficientSpace() async throws {
        let fixture = try Fixture(service: ScriptedImageService(content: randomBytes(1000)))
        defer { fixture.root.remove() }
        #expect(throws: Never.self) { try fixture.cache.reserveSpace(for: 1) }
        #expect {
            try fixture.cache.reserveSpace(for: Int64.max / 2)
        } throws: { error in
            let error = error as? IronicError
            return error?.code == .insufficientDiskSpace && error?.message.contains(fixture.root.appending("masters")) == true
        }
    }

    @Test("a size no eviction could make room for (a HEAD claiming 10^15 bytes) fails at once and evicts nothing")
    func impossibleSizeEvictsNothing() async throws {
        let fixture = try Fixture(service: ScriptedImageService(content: randomBytes(1000)))
        defer { fixture.root.remove() }
        for _ in 0..<3 {
            let node = UUID().uuidString.lowercased()
            _ = try await fixture.fetch(node, "scripted://images/\(UUID().uuidString).img", context: context)
            try fixture.store.deleteNode(node)  // unlinked: evictable
        }
        #expect(fixture.masters.count == 3)
        #expect(throws: IronicError.self) { try fixture.cache.reserveSpace(for: 1_000_000_000_000_000) }
        #expect(fixture.masters.count == 3, "the masters were evicted for a download that could never fit")
    }

    @Test("staging files of dead processes in the cache folder are removed at start")
    func abandonedStaging() throws {
        let root = try TemporaryDirectory(prefix: "cache-start")
        defer { root.remove() }
        try root.write([1], to: "masters/\(StagingFile.namePrefix)99999999-key-abc")
        try root.write([2], to: "masters/\(StagingFile.namePrefix)\(getpid())-key-def")
        _ = try MasterImageCache(settings: .init(directory: root.appending("masters")), logger: Logger(label: "cache"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: root.appending("masters")).sorted() == [".locks", "\(StagingFile.namePrefix)\(getpid())-key-def"])
    }
}
