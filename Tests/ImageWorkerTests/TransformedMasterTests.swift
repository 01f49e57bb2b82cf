import Crypto
import Foundation
import ImageServices
import Logging
import NIOConcurrencyHelpers
import Testing
import TestSupport
@testable import ImageWorker

/// The master image cache keeps what the transform stages made (contract §3.3 step 6): a gzip
/// image (written by the real `gzip`) is decompressed once, its master is the decompressed bytes,
/// the next node links it, and other transform settings are another master.
@Suite("transformed masters")
struct TransformedMasterTests {
    let context = ImageRequestContext(requestID: "req-transformed", logger: Logger(label: "transformed"))

    /// Random bytes and zeros, and what `gzip` makes of them.
    static func gzipped() throws -> (content: [UInt8], served: [UInt8]) {
        let content = randomBytes(300_000) + [UInt8](repeating: 0, count: 2 << 20)
        return (content, try gzip(content))
    }

    /// What the real `gzip` makes of `content`.
    static func gzip(_ content: [UInt8]) throws -> [UInt8] {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let input = try directory.write(content, to: "image")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "gzip -c \"$0\" > \"$0.gz\"", input]
        try process.run()
        process.waitUntilExit()
        return Array(try Data(contentsOf: URL(fileURLWithPath: input + ".gz")))
    }

    static func sha256(_ bytes: [UInt8]) -> String { SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

    /// The phases a fetch reported.
    final class Phases: Sendable {
        let seen = NIOLockedValueBox<Set<TransferProgress.Phase>>([])
        func record(_ progress: TransferProgress) { _ = seen.withLockedValue { $0.insert(progress.phase) } }
    }

    @Test("a miss decompresses into the master; a hit links it, checked against the served checksum, without decompressing")
    func decompressedOnce() async throws {
        let (content, served) = try Self.gzipped()
        let transforms: [any ImageTransformStage] = [DecompressionStage(settings: DecompressionSettings())]
        let fixture = try MasterImageCacheTests.Fixture(service: ScriptedImageService(content: served), transforms: transforms)
        defer { fixture.root.remove() }
        let servedSHA = Self.sha256(served)

        let firstPhases = Phases()
        let first = try await fixture.fetch(checksum: servedSHA, context: context, progress: firstPhases.record)
        #expect(first.cache == .miss)
        #expect(firstPhases.seen.withLockedValue { $0.contains(.decompress) })
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: first.path!))) == content)
        #expect(first.checksum == (try ImageChecksum(algorithm: .sha256, value: Self.sha256(content))))
        #expect(first.source?.compression == "gzip")
        #expect(first.source?.checksum.value == servedSHA)
        #expect(fixture.masters.count == 1)
        let master = fixture.root.appending("masters/" + fixture.masters[0])
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: master))) == content, "the master is not the decompressed image")

        let secondPhases = Phases()
        let second = try await fixture.fetch(checksum: servedSHA, context: context, progress: secondPhases.record)
        #expect(second.cache == .hit)
        #expect(!secondPhases.seen.withLockedValue { $0.contains(.decompress) }, "the hit decompressed again")
        #expect(try fixture.inode(second.path!) == fixture.inode(master))
        #expect(second.source == first.source)
        #expect(second.checksum == first.checksum)
        #expect(fixture.service.downloads == 1)

        // The served checksum is what a hit is checked against: another one is a miss, then a mismatch.
        await #expect(throws: (any Error).self) { _ = try await fixture.fetch(checksum: Self.sha256(content), context: context) }
    }

    @Test("other transform settings are another master: decompression turned off gets the served bytes")
    func settingsChangeTheKey() async throws {
        let (_, served) = try Self.gzipped()
        let root = try TemporaryDirectory(prefix: "cache")
        defer { root.remove() }
        let decompressing = try MasterImageCacheTests.Fixture(service: ScriptedImageService(content: served), transforms: [
            DecompressionStage(settings: DecompressionSettings()),
        ], sharing: root)
        _ = try await decompressing.fetch(context: context)
        let asServed = try MasterImageCacheTests.Fixture(service: ScriptedImageService(content: served), transforms: [
            DecompressionStage(settings: DecompressionSettings(enabled: false)),
        ], sharing: root)
        let image = try await asServed.fetch(context: context)
        #expect(image.cache == .miss)
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: image.path!))) == served)
        #expect(asServed.masters.count == 2)
        #expect(ImageFetcher.cacheVariant(of: [DecompressionStage(settings: DecompressionSettings(maxImageSize: 1 << 30))])
            != ImageFetcher.cacheVariant(of: [DecompressionStage(settings: DecompressionSettings())]))
    }

    @Test("a decompressed size past max_image_size is refused, and nothing is cached")
    func maxImageSize() async throws {
        let (_, served) = try Self.gzipped()
        let fixture = try MasterImageCacheTests.Fixture(service: ScriptedImageService(content: served), transforms: [
            DecompressionStage(settings: DecompressionSettings(maxImageSize: 1 << 20)),
        ])
        defer { fixture.root.remove() }
        do {
            _ = try await fixture.fetch(context: context)
            Issue.record("a 2.3 MiB image passed a 1 MiB limit")
        } catch let error as RoleError {
            #expect(error.error.code == .imageUnacceptable)
            #expect(error.error.message.contains("max_image_size (1048576 bytes)"))
        }
        #expect(fixture.masters.isEmpty)
        let staging = try FileManager.default.contentsOfDirectory(atPath: fixture.root.appending("masters")).filter { $0.hasPrefix(".staging") }
        #expect(staging.isEmpty)
    }

    @Test("a decompressed size past the free space is refused, holes included (zeros take no space but count)")
    func freeSpace() async throws {
        let (_, served) = try Self.gzipped()
        // A file system with 1 MiB free: the image decompresses to 2.3 MiB, most of it zeros.
        let ledger = DiskSpaceLedger(available: { _ in 1 << 20 })
        let fixture = try MasterImageCacheTests.Fixture(service: ScriptedImageService(content: served), transforms: [
            DecompressionStage(settings: DecompressionSettings(), ledger: ledger),
        ])
        defer { fixture.root.remove() }
        do {
            _ = try await fixture.fetch(context: context)
            Issue.record("a 2.3 MiB image passed 1 MiB of free space")
        } catch let error as RoleError {
            #expect(error.error.code == .imageUnacceptable)
            #expect(error.error.message.contains("decompressed size exceeds the free space"))
        }
        #expect(fixture.masters.isEmpty)
    }

    @Test("a hit is the master as made: a gzip inside a gzip is decompressed once, on the miss, never again on a hit")
    func hitIsNotTransformedAgain() async throws {
        let inner = try Self.gzip(randomBytes(50_000))
        let fixture = try MasterImageCacheTests.Fixture(service: ScriptedImageService(content: try Self.gzip(inner)), transforms: [
            DecompressionStage(settings: DecompressionSettings()),
        ])
        defer { fixture.root.remove() }
        let first = try await fixture.fetch(context: context)
        let second = try await fixture.fetch(context: context)
        #expect((first.cache, second.cache) == (.miss, .hit))
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: first.path!))) == inner)
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: second.path!))) == inner, "the hit was decompressed again")
        #expect(second.source == first.source)
    }
}
