import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing
import TestSupport
@testable import ImageServices
import NIOHTTP1

/// The Glance service against the real glance-api that deploy/test.sh starts, and (for Keystone
/// and retries) against scripted stand-ins.
@Suite("Glance images")
struct GlanceImageServiceIntegrationTests {
    static let project = "project-worker"

    func context(admin: Bool = false) -> ImageRequestContext {
        ImageRequestContext(requestID: "req-glance", isAdmin: admin, logger: Logger(label: "glance"))
    }

    func service(_ glance: GlanceTestClient, bypass: Bool = false) throws -> GlanceImageService {
        GlanceImageService(settings: GlanceSettings(endpointOverride: glance.url, projectID: Self.project, adminBypassesProjectCheck: bypass),
                           transport: try HTTPTransport(settings: HTTPClientSettings(connectTimeout: .seconds(5))))
    }

    func sha512(_ bytes: [UInt8]) -> String { SHA512.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

    func fetch(_ service: GlanceImageService, _ id: String, context: ImageRequestContext? = nil) async throws -> FetchedImage {
        let folder = try TemporaryDirectory(prefix: "glance")
        defer { folder.remove() }
        let staging = StagingFile(in: try DirectoryHandle(path: folder.path), finalName: "disk")
        defer { staging.discard() }
        return try await service.fetch(ImageFetchRequest(reference: try ImageReference(id), destination: staging, digestAlgorithms: [.sha512],
                                                         context: context ?? self.context()))
    }

    func expectNotFound(_ service: GlanceImageService, _ id: String, context: ImageRequestContext? = nil) async {
        await #expect {
            _ = try await service.show(try ImageReference(id), context: context ?? self.context())
        } throws: { ($0 as? IronicError)?.code == .imageNotFound }
    }

    @Test("a public image: show gives Glance's sha512; the download matches it; glance:// works too")
    func publicImage() async throws {
        let glance = try GlanceTestClient()
        let bytes = randomBytes(300_000)
        let id = try await glance.image(bytes)
        let service = try service(glance)
        let metadata = try await service.show(try ImageReference(id), context: context())
        #expect(metadata.size == Int64(bytes.count))
        #expect(metadata.checksum == (try ImageChecksum(algorithm: .sha512, value: sha512(bytes))))
        #expect(metadata.diskFormat == "raw")
        #expect(try await fetch(service, id).digests[.sha512] == sha512(bytes))
        #expect(try await service.show(try ImageReference("glance://region/\(id)"), context: context()).size == Int64(bytes.count))
    }

    @Test("private images: visible when the worker's project owns them, not otherwise")
    func privateImages() async throws {
        let glance = try GlanceTestClient()
        let service = try service(glance)
        // Both set up at once: glance-api's round trips are most of this test's time.
        async let ownImage = glance.image(randomBytes(1000), visibility: "private", owner: Self.project)
        async let othersImage = glance.image(randomBytes(1000), visibility: "private", owner: "project-other")
        let (own, others) = try await (ownImage, othersImage)
        #expect(try await service.show(try ImageReference(own), context: context()).size == 1000)
        await expectNotFound(service, others)
    }

    @Test("shared images: visible to a member project only")
    func sharedImages() async throws {
        let glance = try GlanceTestClient()
        let service = try service(glance)
        // Both set up at once: glance-api's round trips are most of this test's time.
        async let sharedImage = { () async throws -> String in
            let id = try await glance.image(randomBytes(1000), visibility: "shared", owner: "project-other")
            try await glance.share(id, with: Self.project)
            return id
        }()
        async let notSharedImage = { () async throws -> String in
            let id = try await glance.image(randomBytes(1000), visibility: "shared", owner: "project-other")
            try await glance.share(id, with: "project-third")
            return id
        }()
        let (shared, notShared) = try await (sharedImage, notSharedImage)
        #expect(try await service.show(try ImageReference(shared), context: context()).size == 1000)
        await expectNotFound(service, notShared)
    }

    @Test("an admin caller sees every image only when the bypass is on")
    func adminBypass() async throws {
        let glance = try GlanceTestClient()
        let others = try await glance.image(randomBytes(500), visibility: "private", owner: "project-other")
        #expect(try await service(glance, bypass: true).show(try ImageReference(others), context: context(admin: true)).size == 500)
        await expectNotFound(try service(glance, bypass: false), others, context: context(admin: true))
        await expectNotFound(try service(glance, bypass: true), others, context: context(admin: false))
    }

    @Test("queued images are unacceptable; deleted and unknown ones are not found")
    func statuses() async throws {
        let glance = try GlanceTestClient()
        let service = try service(glance)
        let queued = try await glance.create()
        await #expect {
            _ = try await service.show(try ImageReference(queued), context: context())
        } throws: { error in
            let error = error as? IronicError
            return error?.code == .imageUnacceptable && error?.message.contains("active state") == true
        }
        let deleted = try await glance.image(randomBytes(100))
        try await glance.delete(deleted)
        await expectNotFound(service, deleted)
        await expectNotFound(service, UUID().uuidString.lowercased())
        await #expect { _ = try await service.show(try ImageReference("glance://x/not-a-uuid"), context: context()) } throws: {
            ($0 as? IronicError)?.code == .invalidImageRef
        }
    }

    @Test("Keystone v3 password: token and endpoint from the catalog, a new token on a 401")
    func keystone() async throws {
        try await withCleanup { cleanup in
            let glanceRecord = #"{"id": "%ID%", "status": "active", "visibility": "public", "size": 3, "disk_format": "raw", "os_hash_algo": "sha512", "os_hash_value": "%SHA%"}"#
            let id = UUID().uuidString.lowercased()
            let record = glanceRecord.replacingOccurrences(of: "%ID%", with: id).replacingOccurrences(of: "%SHA%", with: sha512([1, 2, 3]))
            let fakeGlance = try await FaultServer { _, seen in
                // The first token is refused, as an expired one would be.
                if seen.headers.first(name: "X-Auth-Token") != "token-2" { return .init(status: .unauthorized) }
                return seen.uri.hasSuffix("/file") ? .init(body: [1, 2, 3]) : .init(headers: [("Content-Type", "application/json")], body: Array(record.utf8))
            }
            cleanup.add { await fakeGlance.stop() }
            let counter = TokenCounter()
            let catalog = #"{"token": {"project": {"id": "p-from-keystone"}, "expires_at": "2099-01-01T00:00:00.000000Z", "catalog": [{"type": "image", "endpoints": [{"interface": "internal", "url": "http://wrong"}, {"interface": "public", "url": "%GLANCE%"}]}]}}"#
                .replacingOccurrences(of: "%GLANCE%", with: fakeGlance.url)
            let keystone = try await FaultServer { _, _ in
                .init(status: .created, headers: [("X-Subject-Token", "token-\(counter.next())"), ("Content-Type", "application/json")], body: Array(catalog.utf8))
            }
            cleanup.add { await keystone.stop() }
            let settings = GlanceSettings(authentication: .password(.init(authURL: keystone.url + "/identity", username: "ironic", password: "s3cret",
                                                                         projectName: "service")))
            let service = GlanceImageService(settings: settings, transport: try HTTPTransport(settings: HTTPClientSettings(connectTimeout: .seconds(5))))
            #expect(try await service.show(try ImageReference(id), context: context()).size == 3)
            #expect(try await fetch(service, id).digests[.sha512] == sha512([1, 2, 3]))
            #expect(keystone.requests.first?.uri == "/identity/v3/auth/tokens")
            #expect(keystone.requests.count == 2, "one token, then one more after the 401")
        }
    }

    @Test("[glance] num_retries: a 5xx is retried that many times")
    func retries() async throws {
        try await withCleanup { cleanup in
            let id = UUID().uuidString.lowercased()
            let record = #"{"id": "\#(id)", "status": "active", "visibility": "public", "size": 1}"#
            let flaky = try await FaultServer { index, _ in
                index == 0 ? .init(status: .serviceUnavailable) : .init(headers: [("Content-Type", "application/json")], body: Array(record.utf8))
            }
            cleanup.add { await flaky.stop() }
            let transport = try HTTPTransport(settings: HTTPClientSettings(connectTimeout: .seconds(5)))
            let patient = GlanceImageService(settings: GlanceSettings(endpointOverride: flaky.url, retries: 1), transport: transport)
            #expect(try await patient.show(try ImageReference(id), context: context()).size == 1)
            let second = try await FaultServer { _, _ in .init(status: .serviceUnavailable) }
            cleanup.add { await second.stop() }
            let failing = GlanceImageService(settings: GlanceSettings(endpointOverride: second.url, retries: 0), transport: transport)
            await #expect { _ = try await failing.show(try ImageReference(id), context: context()) } throws: {
                let error = $0 as? IronicError
                return error?.code == .temporaryFailure && error?.retryable == true
            }
        }
    }
}

/// Counts tokens handed out by the fake Keystone.
final class TokenCounter: Sendable {
    private let value = NIOLockedValueBox(0)
    func next() -> Int { value.withLockedValue { $0 += 1; return $0 } }
}
