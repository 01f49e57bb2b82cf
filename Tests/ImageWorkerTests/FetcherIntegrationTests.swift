import Primitives
import OsloJSON
import Crypto
import Foundation
import ImageServices
import Logging
import OsloMessaging
import Testing
import TestSupport
@testable import ImageWorker

/// The fetcher with every service, against the real nginx and glance-api of deploy/test.sh.
@Suite("fetching from nginx and Glance")
struct FetcherIntegrationTests {
    let context = ImageRequestContext(requestID: "req-fetcher", logger: Logger(label: "fetcher"))

    struct Fixture {
        let images: TemporaryDirectory
        let fetcher: ImageFetcher
        let store: NodeImageStore
        let server: NginxTestServer
        var http: String { server.http }
        var https: String { server.https }
        let glance: GlanceTestClient
        private let transports: [HTTPTransport]

        init(requireHTTPChecksum: Bool = true) throws {
            server = try NginxTestServer()
            let certificates = server.certificates
            glance = try GlanceTestClient()
            images = try TemporaryDirectory(prefix: "fetcher")
            let web = try HTTPTransport(settings: HTTPClientSettings(verification: .caFile(certificates + "/ca.pem"), connectTimeout: .seconds(5)))
            let glanceTransport = try HTTPTransport(settings: HTTPClientSettings(connectTimeout: .seconds(5)))
            var registry = ImageServiceRegistry()
            registry.register(HTTPImageService(transport: web))
            registry.register(GlanceImageService(settings: GlanceSettings(endpointOverride: glance.url), transport: glanceTransport))
            fetcher = ImageFetcher(registry: registry, checksums: .init(requireChecksums: requireHTTPChecksum))
            store = try NodeImageStore(path: images.path)
            transports = [web, glanceTransport]
        }

        func publish(_ path: String, _ bytes: [UInt8]) throws {
            try server.publish(path, bytes)
        }

        func nodeFiles(_ node: String) throws -> [String] {
            let folder = images.appending(node)
            return FileManager.default.fileExists(atPath: folder) ? try FileManager.default.contentsOfDirectory(atPath: folder).sorted() : []
        }

        func close() async {
            for transport in transports { await transport.shutdown() }
            images.remove()
        }
    }

    func sha256(_ bytes: [UInt8]) -> String { SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

    func arguments(_ node: String, _ info: JSONObject) throws -> FetchImageArguments {
        try FetchImageArguments(["node_uuid": .string(node), "instance_info": .object(info)])
    }

    func roleError(_ body: () async throws -> Void) async -> RoleError? {
        do {
            try await body()
            return nil
        } catch {
            return error as? RoleError
        }
    }

    @Test("a Glance partition image: kernel and ramdisk come from its properties; all three verified")
    func glancePartition() async throws {
        let fixture = try Fixture()
        let kernel = try await fixture.glance.image(randomBytes(4096), visibility: "public")
        let ramdisk = try await fixture.glance.image(randomBytes(8192), visibility: "public")
        let disk = try await fixture.glance.image(randomBytes(100_000), properties: ["kernel_id": kernel, "ramdisk_id": ramdisk])
        let node = UUID().uuidString.lowercased()
        let images = try await fixture.fetcher.fetch(try arguments(node, ["image_source": .string(disk)]), into: fixture.store, context: context) { _, _ in }
        #expect(images.imageType == .partition)
        #expect(images.images.map(\.role) == [.image, .kernel, .ramdisk])
        #expect(images.images.allSatisfy { $0.verified && $0.checksum?.algorithm == .sha512 && $0.serviceName == "glance" })
        #expect(try fixture.nodeFiles(node) == ["disk", "kernel", "ramdisk"])
        let result = images.resultJSON(requestID: "r", taskID: "t")
        #expect(result["instance_info"]?.objectValue?["kernel"] == .string(kernel))
        #expect(result["instance_info"]?.objectValue?["image_os_hash_algo"] == "sha512")
        await fixture.close()
    }

    @Test("a Glance image with http kernel and ramdisk (mixed schemes)")
    func mixedSchemes() async throws {
        let fixture = try Fixture()
        let name = uniqueHex().prefix(8)
        try fixture.publish("images/\(name)-vmlinuz", randomBytes(3000))
        try fixture.publish("images/\(name)-initrd", randomBytes(5000))
        let disk = try await fixture.glance.image(randomBytes(20_000))
        let node = UUID().uuidString.lowercased()
        let images = try await fixture.fetcher.fetch(try arguments(node, [
            "image_source": .string(disk), "kernel": .string("\(fixture.http)/images/\(name)-vmlinuz"),
            "ramdisk": .string("\(fixture.https)/images/\(name)-initrd"),
        ]), into: fixture.store, context: context) { _, _ in }
        #expect(images.images.map(\.serviceName) == ["glance", "http", "http"])
        #expect(try fixture.nodeFiles(node) == ["disk", "kernel", "ramdisk"])
        await fixture.close()
    }

    @Test("data altered behind Glance's back fails verification and leaves nothing")
    func alteredGlanceData() async throws {
        let fixture = try Fixture()
        let bytes = randomBytes(50_000)
        let id = try await fixture.glance.image(bytes)
        let stored = (fixture.glance.store as NSString).appendingPathComponent(id)
        var altered = bytes
        altered[25_000] ^= 0xFF
        try Data(altered).write(to: URL(fileURLWithPath: stored))
        let node = UUID().uuidString.lowercased()
        let error = await roleError { _ = try await fixture.fetcher.fetch(try arguments(node, ["image_source": .string(id)]), into: fixture.store, context: context) { _, _ in } }
        #expect(error?.error.code == .imageChecksumError)
        #expect(error?.error.message.contains("sha512") == true)
        #expect(try fixture.nodeFiles(node).isEmpty)
        await fixture.close()
    }

    @Test("an https image verified through a checksum file (GNU lines, the image's name matched literally)")
    func checksumFile() async throws {
        let fixture = try Fixture()
        let name = "\(uniqueHex().prefix(8))-os(1).img"
        let bytes = randomBytes(70_000)
        try fixture.publish("images/\(name)", bytes)
        try fixture.publish("images/\(name).SHA256SUMS", Array("\(sha256(randomBytes(10)))  decoy.img\n\(sha256(bytes).uppercased()) *\(name)\n".utf8))
        let node = UUID().uuidString.lowercased()
        let encoded = name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed)!
        let images = try await fixture.fetcher.fetch(try arguments(node, [
            "image_source": .string("\(fixture.https)/images/\(encoded)"), "image_checksum": .string("\(fixture.https)/images/\(encoded).SHA256SUMS"),
        ]), into: fixture.store, context: context) { _, _ in }
        #expect(images.images[0].verified)
        #expect(images.images[0].checksum?.value == sha256(bytes))
        await fixture.close()
    }

    @Test("an http image without any checksum is MissingParameterValue, unless that rule is off")
    func httpNeedsChecksum() async throws {
        let strict = try Fixture()
        let name = "\(uniqueHex().prefix(8)).img"
        try strict.publish("images/\(name)", randomBytes(1000))
        let error = await roleError {
            _ = try await strict.fetcher.fetch(try arguments(UUID().uuidString.lowercased(), ["image_source": .string("\(strict.http)/images/\(name)")]), into: strict.store, context: context) { _, _ in }
        }
        #expect(error?.error.code == .missingParameterValue)
        await strict.close()
        let lenient = try Fixture(requireHTTPChecksum: false)
        let images = try await lenient.fetcher.fetch(try arguments(UUID().uuidString.lowercased(), ["image_source": .string("\(lenient.http)/images/\(name)")]), into: lenient.store, context: context) { _, _ in }
        #expect(images.images[0].verified == false)
        #expect(images.images[0].checksum?.algorithm == .sha256)
        await lenient.close()
    }

    @Test("validate_image: a missing http image is ImageRefValidationFailed; nothing is downloaded")
    func validateMissing() async throws {
        let fixture = try Fixture()
        let error = await roleError {
            _ = try await fixture.fetcher.validate(try arguments(UUID().uuidString.lowercased(), [
                "image_source": .string("\(fixture.http)/images/missing-\(uniqueHex()).img"), "image_checksum": .string(String(repeating: "a", count: 64)),
            ]), context: context)
        }
        #expect(error?.error.code == .imageRefValidationFailed)
        await fixture.close()
    }
}
