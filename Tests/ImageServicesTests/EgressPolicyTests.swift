import AsyncHTTPClient
import Foundation
import Logging
import NIOHTTP1
import Testing
import TestSupport
@testable import ImageServices

/// The egress policy (contract §5.1): networks, spellings of addresses, and refusals through the
/// HTTP service before any connection.
@Suite("egress policy")
struct EgressPolicyTests {
    let context = ImageRequestContext(requestID: "req-egress", logger: Logger(label: "egress"))

    @Test("networks: CIDRs of both families, host bits cleared, IPv4 matching its IPv4-mapped spelling")
    func networks() throws {
        let linkLocal = try #require(IPNetwork("169.254.0.0/16"))
        #expect(linkLocal.contains(try #require(IPAddress("169.254.169.254"))))
        #expect(linkLocal.contains(try #require(IPAddress("::ffff:169.254.169.254"))))
        #expect(!linkLocal.contains(try #require(IPAddress("169.253.255.255"))))
        let sloppy = try #require(IPNetwork("10.1.2.3/8"))
        #expect(sloppy.contains(try #require(IPAddress("10.200.0.1"))))
        let v6 = try #require(IPNetwork("fe80::/10"))
        #expect(v6.contains(try #require(IPAddress("febf::1"))))
        #expect(!v6.contains(try #require(IPAddress("fec0::1"))))
        #expect(try #require(IPNetwork("fd00:ec2::254")).contains(try #require(IPAddress("fd00:ec2::254"))))
        #expect(try #require(IPNetwork("0.0.0.0/0")).contains(try #require(IPAddress("8.8.8.8"))))
        let everyIPv4 = try #require(IPNetwork("0.0.0.0/0"))
        #expect(!everyIPv4.contains(try #require(IPAddress("2001:db8::1"))), "an IPv4 network holds no IPv6 address")
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "example.com/8", "10.0.0.0/-1", "10.0.0.0/ 8", ""] {
            #expect(IPNetwork(bad) == nil, "\(bad)")
        }
        #expect(IPAddress("::ffff:10.0.0.1")?.description == "10.0.0.1")
        let mapped = try #require(IPNetwork("::ffff:169.254.169.254/128"), "an IPv4-mapped network is written as IPv6")
        #expect(mapped.contains(try #require(IPAddress("169.254.169.254"))))
        #expect(IPNetwork("::ffff:0:0/96")?.contains(try #require(IPAddress("8.8.8.8"))) == true)
        #expect(IPAddress("2001:db8:0::1")?.description == "2001:db8::1")
    }

    @Test("every spelling of the metadata address and of loopback is refused by the default policy",
          arguments: ["169.254.169.254", "2852039166", "0xa9.0xfe.0xa9.0xfe", "0251.0376.0251.0376", "[::ffff:169.254.169.254]",
                      "127.0.0.1", "127.1", "2130706433", "[::1]", "0.0.0.0", "localhost", "[fd00:ec2::254]", "[fe80::1%25lo]"])
    func spellingsRefused(host: String) async throws {
        await #expect(throws: EgressPolicy.Refusal.notAllowed) { try await EgressPolicy().destinations(host: host, port: 80) }
    }

    @Test("hosts the HTTP client could read otherwise than the policy (non-ASCII, percent-encoded) and bad ports are refused as references",
          arguments: ["http://ｅvil.example/x", "http://ev%69l.example/x", "http://[2001:db8::1]:65558/x", "http://[2001:db8::1]x/x",
                      "http://[2001:db8::1]:/x", "http://h.example:0/x", "http://[fe80::1%eth0]/x"])
    func unparsableHosts(href: String) {
        #expect(throws: IronicError.self) { _ = try ParsedHTTPURL(href) }
    }

    @Test("a lookup's answer goes to its waiter once: the first of the lookup, its timeout or its cancellation")
    func firstAnswerWins() async throws {
        let early = HostResolver.FirstAnswer<Int>()
        early.give(.success(1))
        early.give(.success(2))
        #expect(try await withCheckedThrowingContinuation { early.wait(with: $0) } == 1, "an answer before the wait is kept")
        let late = HostResolver.FirstAnswer<Int>()
        let waiter = Task { try await withCheckedThrowingContinuation { late.wait(with: $0) } }
        try await Task.sleep(for: .milliseconds(50))
        late.give(.failure(CancellationError()))
        late.give(.success(3))
        await #expect(throws: CancellationError.self) { _ = try await waiter.value }
        #expect(try await HostResolver.addresses(of: "127.0.0.1", timeout: .seconds(10)) == [try #require(IPAddress("127.0.0.1"))])
    }

    @Test("allowed networks and ports: only what is listed passes; ports are checked before any lookup")
    func allowLists() async throws {
        let policy = EgressPolicy(disallowedNetworks: [], allowedNetworks: [try #require(IPNetwork("127.0.0.0/8"))],
                                  disallowedPorts: [8080], allowedPorts: Set(80...90).union([8080]))
        #expect(try await policy.destinations(host: "127.0.0.2", port: 80) == [try #require(IPAddress("127.0.0.2"))])
        await #expect(throws: EgressPolicy.Refusal.notAllowed) { try await policy.destinations(host: "10.0.0.1", port: 80) }
        await #expect(throws: EgressPolicy.Refusal.notAllowed) { try await policy.destinations(host: "127.0.0.1", port: 8080) }
        await #expect(throws: EgressPolicy.Refusal.notAllowed) { try await policy.destinations(host: "127.0.0.1", port: 443) }
        // A name that cannot resolve: with a refused port, no lookup happens, so the answer is the refusal.
        await #expect(throws: EgressPolicy.Refusal.notAllowed) { try await policy.destinations(host: "no-such-host.invalid", port: 443) }
        await #expect(throws: EgressPolicy.Refusal.self) { try await policy.destinations(host: "no-such-host.invalid", port: 80) }
    }

    /// Fetches `href` through an HTTP transport with `policy`; returns the error.
    func refusal(_ href: String, policy: EgressPolicy) async throws -> IronicError {
        try await withCleanup { cleanup in
            let folder = try TemporaryDirectory(prefix: "egress")
            cleanup.add { folder.remove() }
            let transport = try HTTPTransport(settings: HTTPClientSettings(connectTimeout: .seconds(5), retries: 0, egress: policy))
            cleanup.add { await transport.shutdown() }
            let staging = StagingFile(in: try DirectoryHandle(path: folder.path), finalName: "disk")
            let request = ImageFetchRequest(reference: try ImageReference(href), destination: staging, digestAlgorithms: [.sha256], context: context)
            do {
                _ = try await HTTPImageService(transport: transport).fetch(request)
                staging.discard()
                Issue.record("\(href) was fetched")
                return IronicError(.imageDownloadFailed, "fetched")
            } catch let error as IronicError {
                staging.discard()
                #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
                return error
            }
        }
    }

    @Test("a refused destination fails before connecting, with the same words whether or not something listens there")
    func refusedBeforeConnecting() async throws {
        let server = try await FaultServer { _, _ in .init(body: Array("secret".utf8)) }
        let listening: IronicError
        do {
            listening = try await refusal(server.url + "/latest/meta-data", policy: EgressPolicy())
        } catch {
            await server.stop()
            throw error
        }
        let contacted = server.requests.count
        await server.stop()  // once, here: with a second stop in a cleanup the test hung
        #expect(listening.code == .imageRefValidationFailed)
        #expect(listening.message.hasSuffix("is not an allowed destination."), "\(listening.message)")
        #expect(contacted == 0, "a refused destination must not be contacted")
        let closed = try await refusal(server.url + "/latest/meta-data", policy: EgressPolicy())
        #expect(closed.message == listening.message, "an oracle: the answer depends on what listens")
    }

    @Test("a pinned connection falls back to the host's next checked address when connecting fails (::1 refused, 127.0.0.1 listening)")
    func fallsBackToTheNextAddress() async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { _, _ in .init(body: Array("ok".utf8)) }
            cleanup.add { await server.stop() }
            let transport = try HTTPTransport(settings: HTTPClientSettings(connectTimeout: .seconds(5), retries: 0))
            cleanup.add { await transport.shutdown() }
            let url = try ParsedHTTPURL(server.url.replacingOccurrences(of: "127.0.0.1", with: "localhost") + "/x")
            let addresses = [try #require(IPAddress("::1")), try #require(IPAddress("127.0.0.1"))]
            let answer = try await transport.execute(HTTPClientRequest(url: url.withoutUserInfo), to: url, pinnedTo: addresses, deadline: .afterSlot(.seconds(10)))
            defer { answer.slot.release() }
            #expect(answer.response.status == .ok)
            #expect(server.requests.count == 1)
        }
    }

    @Test("every redirect hop is checked: an allowed server redirecting to a refused port is refused, the target never contacted")
    func redirectHopsChecked() async throws {
        try await withCleanup { cleanup in
            let target = try await FaultServer { _, _ in .init(body: Array("metrics".utf8)) }
            cleanup.add { await target.stop() }
            let targetPort = try #require(URLComponents(string: target.url)?.port)
            let front = try await FaultServer { _, _ in .init(status: .found, headers: [("Location", target.url + "/metrics")]) }
            cleanup.add { await front.stop() }
            let policy = EgressPolicy(disallowedNetworks: [], disallowedPorts: [targetPort])
            let error = try await refusal(front.url + "/image.img", policy: policy)
            #expect(error.code == .imageRefValidationFailed)
            #expect(error.message.contains("http://127.0.0.1:\(targetPort) is not an allowed destination"), "\(error.message)")
            #expect(front.requests.count == 1)
            #expect(target.requests.isEmpty)
        }
    }
}
