import Primitives
import Crypto
import Foundation
import ImageServices
import Logging
import SystemSupport
import Testing
import TestSupport
@testable import ImageWorker

/// A service the worker has never heard of, registered for `vault://`, that declares its own
/// capabilities: it is the checksum authority (as a registry with digests is), names its cache
/// masters itself, and describes its images (a partition image with its kernel and ramdisk).
/// The fetcher honours each through the protocol alone.
struct VaultImageService: ImageService {
    let name = "vault"
    let schemes = ["vault"]
    let caching = ImageCaching.immutable
    let checksumAuthority = ChecksumAuthority.service
    let describesImages = true
    /// name → bytes
    let images: [String: [UInt8]]
    /// name → the digest the vault claims (the truth unless a test lies).
    let claims: [String: String]
    /// The algorithm of the claims.
    var claimedAlgorithm = HashAlgorithm.sha256

    func cacheKey(for reference: ImageReference) -> String? {
        "vault-" + reference.original.dropFirst("vault://".count)
    }

    private func name(_ reference: ImageReference) -> String { String(reference.original.dropFirst("vault://".count)) }

    func show(_ reference: ImageReference, context: ImageRequestContext) async throws -> ImageMetadata {
        let name = name(reference)
        guard let bytes = images[name] else { throw IronicError(.imageNotFound, "Image \(name) could not be found.") }
        let properties = name == "disk" ? ["kernel_id": "vault://vmlinuz", "ramdisk_id": "vault://initrd"] : [:]
        return ImageMetadata(size: Int64(bytes.count), checksum: try claims[name].map { try ImageChecksum(algorithm: claimedAlgorithm, value: $0) },
                             properties: properties)
    }

    func fetch(_ request: ImageFetchRequest) async throws -> FetchedImage {
        let bytes = images[name(request.reference)]!
        let output = try request.destination.create()
        _ = bytes.withUnsafeBytes { write(output.rawValue, $0.baseAddress, $0.count) }
        var digest = try MultiDigest(request.digestAlgorithms)
        digest.update(bytes)
        return FetchedImage(size: Int64(bytes.count), digests: digest.finalize(), transfer: .download, bytesTransferred: Int64(bytes.count),
                            metadata: ImageMetadata(size: Int64(bytes.count)))
    }
}

@Suite("a new service declares its capabilities; the fetcher changes nothing to use them")
struct ServiceCapabilitiesTests {
    let context = ImageRequestContext(requestID: "req-vault", logger: Logger(label: "vault"))

    /// An oracle independent of the worker's digests: swift-crypto.
    func sha256(_ bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    func fetcher(_ service: VaultImageService, root: TemporaryDirectory,
                 checksums: ChecksumPolicy = ChecksumPolicy()) throws -> (ImageFetcher, NodeImageStore) {
        var registry = ImageServiceRegistry()
        registry.register(service)
        let cache = try MasterImageCache(settings: .init(directory: root.appending("masters")), logger: Logger(label: "vault"))
        return (ImageFetcher(registry: registry, checksums: checksums, cache: cache), try NodeImageStore(path: root.appending("images")))
    }

    @Test("its own checksum is verified, instance_info's ignored; its cache key names the master; its description makes a partition image")
    func honoured() async throws {
        let root = try TemporaryDirectory(prefix: "vault")
        defer { root.remove() }
        let images = ["disk": randomBytes(5000), "vmlinuz": randomBytes(300), "initrd": randomBytes(700)]
        let service = VaultImageService(images: images, claims: images.mapValues(sha256))
        let (fetcher, store) = try fetcher(service, root: root)
        let node = UUIDText.random()
        // A checksum in instance_info that no image has: the vault's own are the authority.
        let info = InstanceInfo(imageSource: "vault://disk", imageChecksum: String(repeating: "0", count: 64))
        let result = try await fetcher.fetch(try FetchImageArguments(nodeUUID: node, instanceInfo: info), into: store, context: context) { _, _ in }
        #expect(result.imageType == .partition)
        #expect(result.images.map(\.role) == [.image, .kernel, .ramdisk])
        for image in result.images {
            #expect(image.verified)
            #expect(image.checksum?.value == sha256(images[String(image.reference.original.dropFirst("vault://".count))]!))
        }
        let masters = try FileManager.default.contentsOfDirectory(atPath: root.appending("masters")).filter { !$0.hasPrefix(".") && !$0.hasSuffix(".json") }
        #expect(Set(masters) == ["vault-disk", "vault-vmlinuz", "vault-initrd"])
    }

    @Test("when the service's checksum does not match the bytes: ImageChecksumError, nothing left")
    func authorityMismatch() async throws {
        let root = try TemporaryDirectory(prefix: "vault")
        defer { root.remove() }
        let images = ["plain": randomBytes(4000)]
        let service = VaultImageService(images: images, claims: ["plain": String(repeating: "a", count: 64)])
        let (fetcher, store) = try fetcher(service, root: root)
        let node = UUIDText.random()
        let info = InstanceInfo(imageSource: "vault://plain", imageChecksum: sha256(images["plain"]!))  // right, but not the authority
        await #expect { _ = try await fetcher.fetch(try FetchImageArguments(nodeUUID: node, instanceInfo: info), into: store, context: context) { _, _ in } } throws: {
            ($0 as? RoleError)?.error.code == .imageChecksumError
        }
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: root.appending("images/\(node)"))) ?? []).isEmpty)
    }

    @Test("the service's md5 is held to [agent] allow_md5_checksum like the request's")
    func serviceMD5() async throws {
        let root = try TemporaryDirectory(prefix: "vault")
        defer { root.remove() }
        let images = ["plain": randomBytes(4000)]
        let md5 = Insecure.MD5.hash(data: images["plain"]!).map { String(format: "%02x", $0) }.joined()
        var service = VaultImageService(images: images, claims: ["plain": md5])
        service.claimedAlgorithm = .md5
        let info = InstanceInfo(imageSource: "vault://plain")
        let (refusing, refusingStore) = try fetcher(service, root: root, checksums: ChecksumPolicy(allowMD5: false))
        await #expect { _ = try await refusing.fetch(try FetchImageArguments(nodeUUID: UUIDText.random(), instanceInfo: info), into: refusingStore, context: context) { _, _ in } } throws: {
            let error = ($0 as? RoleError)?.error
            return error?.code == .imageChecksumAlgorithmFailure && error?.message.contains("allow_md5_checksum") == true
        }
        let (allowing, allowingStore) = try fetcher(service, root: root)
        let result = try await allowing.fetch(try FetchImageArguments(nodeUUID: UUIDText.random(), instanceInfo: info), into: allowingStore, context: context) { _, _ in }
        #expect(result.images.first?.checksum == (try ImageChecksum(algorithm: .md5, value: md5)))
        #expect(result.images.first?.verified == true)
    }
}
