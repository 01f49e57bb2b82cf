import Crypto
import Foundation
import Logging
import Testing
import TestSupport
@testable import ImageServices

/// The http(s) service against the real nginx that deploy/test.sh starts.
@Suite("http(s) images from nginx")
struct HTTPImageServiceIntegrationTests {
    let context = ImageRequestContext(requestID: "req-nginx", logger: Logger(label: "nginx"))

    typealias Server = NginxTestServer

    /// Publishes random bytes under nginx's root; returns them and their sha256.
    func publish(_ server: Server, _ path: String, size: Int = 1 << 20) throws -> ([UInt8], String) {
        let bytes = randomBytes(size)
        try server.publish(path, bytes)
        return (bytes, SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined())
    }

    func service(_ settings: HTTPClientSettings = HTTPClientSettings(connectTimeout: .seconds(5), stallTimeout: .seconds(10))) throws -> HTTPImageService {
        HTTPImageService(transport: try HTTPTransport(settings: settings))
    }

    func fetch(_ service: HTTPImageService, _ href: String) async throws -> (FetchedImage, [UInt8]) {
        let folder = try TemporaryDirectory(prefix: "nginx")
        defer { folder.remove() }
        let staging = StagingFile(in: try DirectoryHandle(path: folder.path), finalName: "disk")
        let request = ImageFetchRequest(reference: try ImageReference(href), destination: staging, digestAlgorithms: [.sha256], context: context)
        do {
            let fetched = try await service.fetch(request)
            try staging.commit()
            return (fetched, Array(try Data(contentsOf: URL(fileURLWithPath: staging.finalPath))))
        } catch {
            staging.discard()
            #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
            throw error
        }
    }

    func unique(_ name: String) -> String { "\(uniqueHex().prefix(8))-\(name)" }

    @Test("http: show gives size, Last-Modified and ETag; fetch streams and hashes")
    func plainHTTP() async throws {
        try await withCleanup { cleanup in
            let server = try Server()
            let name = unique("plain.img")
            let (bytes, sha) = try publish(server, "images/\(name)", size: 3 << 20)
            let service = try service()
            cleanup.add { await service.transport.shutdown() }
            let metadata = try await service.show(try ImageReference("\(server.http)/images/\(name)"), context: context)
            #expect(metadata.size == Int64(bytes.count))
            #expect(metadata.updatedAtMicroseconds != nil)
            #expect(metadata.noCache == false)
            let (fetched, content) = try await fetch(service, "\(server.http)/images/\(name)")
            #expect(fetched.transfer == .download)
            #expect(fetched.digests[.sha256] == sha)
            #expect(content == bytes)
        }
    }

    @Test("https: verified against the test CA; another CA is refused; verification off accepts it")
    func https() async throws {
        try await withCleanup { cleanup in
            let server = try Server()
            let name = unique("tls.img")
            let (_, sha) = try publish(server, "images/\(name)")
            let href = "\(server.https)/images/\(name)"
            let trusted = try service(HTTPClientSettings(verification: .caFile(server.certificates + "/ca.pem"), connectTimeout: .seconds(5)))
            cleanup.add { await trusted.transport.shutdown() }
            #expect(try await fetch(trusted, href).0.digests[.sha256] == sha)

            let untrusted = try service(HTTPClientSettings(verification: .caFile(server.certificates + "/other-ca.pem"), connectTimeout: .seconds(5), retries: 0))
            cleanup.add { await untrusted.transport.shutdown() }
            await #expect {
                _ = try await untrusted.validate(try ImageReference(href), context: context)
            } throws: { error in
                let error = error as? IronicError
                return error?.code == .imageRefValidationFailed && error?.message.contains("TLS") == true
            }
            await #expect { _ = try await fetch(untrusted, href) } throws: { ($0 as? IronicError)?.message.contains("TLS") == true }

            let unverified = try service(HTTPClientSettings(verification: .none, connectTimeout: .seconds(5)))
            cleanup.add { await unverified.transport.shutdown() }
            #expect(try await fetch(unverified, href).0.digests[.sha256] == sha)
        }
    }

    @Test("basic auth: accepted with the right credentials (global, netrc or in the URL), refused without or with wrong ones")
    func basicAuth() async throws {
        try await withCleanup { cleanup in
            let server = try Server()
            let name = unique("secret.img")
            let (_, sha) = try publish(server, "private/\(name)")
            let href = "\(server.http)/private/\(name)"
            let global = try service(HTTPClientSettings(connectTimeout: .seconds(5), credentials: HTTPCredentials(everyServer: ("imageuser", server.password))))
            cleanup.add { await global.transport.shutdown() }
            #expect(try await fetch(global, href).0.digests[.sha256] == sha)
            let netrc = try NetrcFile(text: "machine 127.0.0.1 login imageuser password \(server.password)\n")
            let perHost = try service(HTTPClientSettings(connectTimeout: .seconds(5), credentials: HTTPCredentials(perHost: netrc)))
            cleanup.add { await perHost.transport.shutdown() }
            #expect(try await fetch(perHost, href).0.digests[.sha256] == sha)
            let anonymous = try service()
            cleanup.add { await anonymous.transport.shutdown() }
            let withUserInfo = href.replacingOccurrences(of: "http://", with: "http://imageuser:\(server.password)@")
            let (fetched, _) = try await fetch(anonymous, withUserInfo)
            #expect(fetched.digests[.sha256] == sha)
            for (client, target) in [(anonymous, href), (anonymous, href.replacingOccurrences(of: "http://", with: "http://imageuser:wrong@"))] {
                await #expect {
                    _ = try await fetch(client, target)
                } throws: { error in
                    let error = error as? IronicError
                    return error?.message.contains("Got HTTP code 401 instead of 200") == true && error?.message.contains("wrong") == false
                }
            }
        }
    }

    @Test("a redirect chain is followed; redirects to file:// and redirect loops are refused")
    func redirects() async throws {
        try await withCleanup { cleanup in
            let server = try Server()
            let (_, sha) = try publish(server, "images/redirected.img")
            let service = try service()
            cleanup.add { await service.transport.shutdown() }
            #expect(try await fetch(service, "\(server.http)/redirect/hop1").0.digests[.sha256] == sha)
            #expect(try await service.show(try ImageReference("\(server.http)/redirect/hop1"), context: context).size == 1 << 20)
            await #expect { _ = try await fetch(service, "\(server.http)/redirect/to-file") } throws: {
                ($0 as? IronicError)?.message.contains("redirect to a file:// URL is not allowed") == true
            }
            await #expect { _ = try await service.validate(try ImageReference("\(server.http)/redirect/loop"), context: context) } throws: {
                ($0 as? IronicError)?.message.contains("more than 10 redirects") == true
            }
        }
    }

    @Test("a server that demands a client certificate gets the configured one; without it, it refuses")
    func clientCertificate() async throws {
        try await withCleanup { cleanup in
            let server = try Server()
            let url = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_CLIENT_TLS_URL", for: "nginx's client-certificate listener")
            let name = unique("mtls.img")
            let (_, sha) = try publish(server, "images/\(name)")
            let ca = HTTPClientSettings.Verification.caFile(server.certificates + "/ca.pem")
            let withCertificate = try service(HTTPClientSettings(verification: ca, clientCertificateFile: server.certificates + "/client.pem",
                                                                 clientKeyFile: server.certificates + "/client.key", connectTimeout: .seconds(5)))
            cleanup.add { await withCertificate.transport.shutdown() }
            #expect(try await fetch(withCertificate, "\(url)/images/\(name)").0.digests[.sha256] == sha)
            let without = try service(HTTPClientSettings(verification: ca, connectTimeout: .seconds(5), retries: 0))
            cleanup.add { await without.transport.shutdown() }
            await #expect { _ = try await fetch(without, "\(url)/images/\(name)") } throws: {
                ($0 as? IronicError)?.message.contains("Got HTTP code 400") == true
            }
        }
    }

    @Test("http_proxy carries the requests (a CONNECT tunnel through a real proxy); no_proxy bypasses it")
    func proxy() async throws {
        try await withCleanup { cleanup in
            let server = try Server()
            let proxyURL = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_HTTP_PROXY", for: "the test proxy")
            let proxyLog = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_PROXY_LOG", for: "the test proxy's log")
            let name = unique("proxied.img")
            let (_, sha) = try publish(server, "images/\(name)")
            let proxy = try ProxySettings.parseProxy(proxyURL)
            let href = "\(server.http)/images/\(name)"
            let target = String(server.http.dropFirst("http://".count))
            func tunnels() throws -> Int {
                try String(contentsOfFile: proxyLog, encoding: .utf8).components(separatedBy: "CONNECT \(target)").count - 1
            }
            let before = try tunnels()
            let proxied = try service(HTTPClientSettings(connectTimeout: .seconds(5), proxies: ProxySettings(http: proxy)))
            cleanup.add { await proxied.transport.shutdown() }
            #expect(try await fetch(proxied, href).0.digests[.sha256] == sha)
            let through = try tunnels()
            #expect(through > before, "the download did not go through the proxy")
            let bypassing = try service(HTTPClientSettings(connectTimeout: .seconds(5), proxies: ProxySettings(http: proxy, noProxy: ["127.0.0.1"])))
            cleanup.add { await bypassing.transport.shutdown() }
            #expect(try await fetch(bypassing, href).0.digests[.sha256] == sha)
            #expect(try tunnels() == through, "no_proxy did not bypass the proxy")
        }
    }

    @Test("a 404 fails validation and fetch with Ironic's messages")
    func notFound() async throws {
        try await withCleanup { cleanup in
            let server = try Server()
            let service = try service()
            cleanup.add { await service.transport.shutdown() }
            let href = "\(server.http)/images/missing-\(uniqueHex()).img"
            await #expect { _ = try await service.validate(try ImageReference(href), context: context) } throws: {
                ($0 as? IronicError)?.message.hasSuffix("failed, reason: Got HTTP code 404 instead of 200 in response to HEAD request.") == true
            }
            await #expect { _ = try await fetch(service, href) } throws: {
                ($0 as? IronicError)?.message.contains("Got HTTP code 404 instead of 200 in response to GET request.") == true
            }
        }
    }

    @Test("a directory URL ending in / answering 403 is valid as a directory, not as an image")
    func directory() async throws {
        try await withCleanup { cleanup in
            let server = try Server()
            let service = try service()
            cleanup.add { await service.transport.shutdown() }
            let metadata = try await service.validate(try ImageReference("\(server.http)/dir/"), context: context)
            #expect(metadata.size == nil)
            await #expect { _ = try await service.show(try ImageReference("\(server.http)/dir/"), context: context) } throws: {
                ($0 as? IronicError)?.message.contains("Got HTTP code 403") == true
            }
            await #expect { _ = try await service.validate(try ImageReference("\(server.http)/dir"), context: context) } throws: {
                ($0 as? IronicError)?.message.contains("Got HTTP code") == true
            }
        }
    }

    @Test("a server that refuses HEAD is asked for one byte instead; no-store means no_cache")
    func refusesHead() async throws {
        try await withCleanup { cleanup in
            let server = try Server()
            let name = unique("nohead.img")
            let (bytes, sha) = try publish(server, "nohead/\(name)", size: 123_456)
            let service = try service()
            cleanup.add { await service.transport.shutdown() }
            let metadata = try await service.show(try ImageReference("\(server.http)/nohead/\(name)"), context: context)
            #expect(metadata.size == Int64(bytes.count))
            #expect(try await fetch(service, "\(server.http)/nohead/\(name)").0.digests[.sha256] == sha)
            let stored = unique("nostore.img")
            _ = try publish(server, "nostore/\(stored)", size: 10)
            #expect(try await service.show(try ImageReference("\(server.http)/nostore/\(stored)"), context: context).noCache)
        }
    }
}
