import Foundation
import Logging
import NIOHTTP1
import Testing
import TestSupport
@testable import ImageServices

/// Credentials go only to the origin they belong to (contract §5.1), checked at two scripted
/// servers: the reference's, which redirects, and another origin (same address, other port).
@Suite("credentials stay with their origin")
struct CredentialScopeTests {
    let context = ImageRequestContext(requestID: "req-credentials", logger: Logger(label: "credentials"))
    static let body = Array("image bytes".utf8)

    /// Starts a target and a front server that redirects everything to the target; fetches
    /// `front + path` (with `userInfo` in the reference) and returns what each server saw.
    func fetchThroughRedirect(userInfo: String = "", credentials: HTTPCredentials = HTTPCredentials(), headers: HTTPHeaders = [:])
        async throws -> (front: [FaultServer.Seen], target: [FaultServer.Seen]) {
        try await withCleanup { cleanup in
            let target = try await FaultServer { _, _ in .init(body: Self.body) }
            cleanup.add { await target.stop() }
            let front = try await FaultServer { _, _ in .init(status: .found, headers: [("Location", target.url + "/moved.img")]) }
            cleanup.add { await front.stop() }
            let transport = try HTTPTransport(settings: HTTPClientSettings(connectTimeout: .seconds(5), retries: 0, credentials: credentials))
            cleanup.add { await transport.shutdown() }
            let folder = try TemporaryDirectory(prefix: "credentials")
            cleanup.add { folder.remove() }
            let staging = StagingFile(in: try DirectoryHandle(path: folder.path), finalName: "disk")
            let href = front.url.replacingOccurrences(of: "http://", with: "http://\(userInfo)") + "/image.img"
            let request = ImageFetchRequest(reference: try ImageReference(href), destination: staging, digestAlgorithms: [.sha256], context: context)
            let url = try ParsedHTTPURL(href)
            let download = ResumableDownload(transport: transport, url: url, headers: headers, request: request)
            let fetched = try await download.run()
            staging.discard()
            #expect(fetched.size == Int64(Self.body.count))
            return (front.requests, target.requests)
        }
    }

    static func authorization(_ seen: [FaultServer.Seen]) -> [String?] {
        seen.map { $0.headers.first(name: "Authorization") }
    }

    @Test("user-info in the reference goes to its origin only, not to a redirect's")
    func userInfo() async throws {
        let seen = try await fetchThroughRedirect(userInfo: "svc:s3cret@")
        #expect(Self.authorization(seen.front) == ["Basic " + Data("svc:s3cret".utf8).base64EncodedString()])
        #expect(Self.authorization(seen.target) == [nil])
    }

    @Test("[deploy] image_server_* and a netrc default go to the reference's origin only")
    func everyServerAndDefault() async throws {
        for credentials in [HTTPCredentials(everyServer: ("image", "pw")),
                            HTTPCredentials(perHost: try NetrcFile(text: "default login image password pw"))] {
            let seen = try await fetchThroughRedirect(credentials: credentials)
            #expect(Self.authorization(seen.front) == ["Basic " + Data("image:pw".utf8).base64EncodedString()])
            #expect(Self.authorization(seen.target) == [nil])
        }
    }

    @Test("a netrc machine entry goes to the reference's origin only: not to another port of the same host, not to other hosts")
    func machineEntry() async throws {
        let expected = "Basic " + Data("m:pw".utf8).base64EncodedString()
        let own = try await fetchThroughRedirect(credentials: HTTPCredentials(perHost: try NetrcFile(text: "machine 127.0.0.1 login m password pw")))
        #expect(Self.authorization(own.front) == [expected])
        #expect(Self.authorization(own.target) == [nil], "the target is another origin (another port)")
        let other = try await fetchThroughRedirect(credentials: HTTPCredentials(perHost: try NetrcFile(text: "machine images.example login m password pw")))
        #expect(Self.authorization(other.front) == [nil] && Self.authorization(other.target) == [nil])
    }

    @Test("a caller's credential headers (Glance's X-Auth-Token, Authorization, Cookie) stay with the first origin; others follow")
    func callerHeaders() async throws {
        let headers = HTTPHeaders([("X-Auth-Token", "gAAAA-token"), ("Cookie", "session=1"), ("X-Openstack-Request-Id", "req-credentials")])
        let seen = try await fetchThroughRedirect(headers: headers)
        #expect(seen.front.first?.headers.first(name: "X-Auth-Token") == "gAAAA-token")
        #expect(seen.front.first?.headers.first(name: "Cookie") == "session=1")
        #expect(seen.target.first?.headers.first(name: "X-Auth-Token") == nil)
        #expect(seen.target.first?.headers.first(name: "Cookie") == nil)
        #expect(seen.target.first?.headers.first(name: "X-Openstack-Request-Id") == "req-credentials")
    }
}
