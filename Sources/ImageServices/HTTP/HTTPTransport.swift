import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import Foundation
import NIOSSL
import Synchronization

/// The HTTP clients image services share: one async-http-client `HTTPClient` per way out
/// (directly, or through the http or https proxy), made when first needed, all with the same
/// TLS, timeouts and a large receive buffer. Redirects are followed by ``HTTPExchange``, not by
/// the client, so that each hop is checked.
public final class HTTPTransport: Sendable {
    public let settings: HTTPClientSettings
    private let clients = Mutex([String: HTTPClient]())
    private let tlsConfiguration: TLSConfiguration

    /// Creates the transport; the TLS files are read now, so a bad one fails at start.
    public init(settings: HTTPClientSettings) throws(IronicError) {
        self.settings = settings
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            switch settings.verification {
            case .system: break
            case .caFile(let path): tls.trustRoots = .file(path)
            case .none: tls.certificateVerification = .none
            }
            if let certificate = settings.clientCertificateFile, let key = settings.clientKeyFile {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            if case .caFile(let path) = settings.verification { _ = try NIOSSLCertificate.fromPEMFile(path) }
        } catch {
            throw IronicError.invalidParameter("The TLS files for image downloads cannot be used: \(error).")
        }
        tlsConfiguration = tls
    }

    /// The client for a request to `scheme://host:port`.
    func client(scheme: String, host: String, port: Int) -> HTTPClient {
        let proxy = settings.proxies.proxy(scheme: scheme, host: host, port: port)
        let key = proxy.map { "\(scheme)-\($0.host):\($0.port)" } ?? "direct"
        return clients.withLock { clients in
            if let existing = clients[key] { return existing }
            let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration(proxy: proxy))
            clients[key] = client
            return client
        }
    }

    private func configuration(proxy: ProxySettings.Proxy?) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tlsConfiguration,
            redirectConfiguration: .disallow,
            timeout: .init(connect: .nanoseconds(Int64(settings.connectTimeout.seconds * 1e9)),
                           read: .nanoseconds(Int64(settings.stallTimeout.seconds * 1e9))),
            proxy: proxy.map { proxy in
                let authorization = proxy.user.map { HTTPClient.Authorization.basic(username: $0, password: proxy.password ?? "") }
                return HTTPClient.Configuration.Proxy.server(host: proxy.host, port: proxy.port, authorization: authorization)
            },
            ignoreUncleanSSLShutdown: false,
            decompression: .disabled)
        configuration.httpVersion = .http1Only
        // A refused connection or TLS handshake fails the attempt at once; whether to try again is
        // the download's retry policy, not the pool's (which would retry until the deadline).
        configuration.connectionPool.retryConnectionEstablishment = false
        // Reads of up to 1 MiB instead of NIO's adaptive 64 KiB: every chunk costs a hop from the
        // event loop to the consuming task (docs: http-stack.md, "The AHC read chunk size").
        let receiveBytes = settings.receiveBufferBytes
        configuration.http1_1ConnectionDebugInitializer = { channel in
            channel.setOption(ChannelOptions.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: receiveBytes))
        }
        return configuration
    }

    deinit {
        // A client released without shutdown traps in async-http-client's debug builds and leaks
        // otherwise; those not shut down explicitly are shut down here, without waiting.
        for client in clients.withLock({ Array($0.values) }) {
            client.shutdown { _ in }
        }
    }

    /// Shuts every client down.
    public func shutdown() async {
        let all = clients.withLock { clients -> [HTTPClient] in
            defer { clients = [:] }
            return Array(clients.values)
        }
        for client in all { try? await client.shutdown() }
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}

extension NIOSSLError: NIOSSLErrorDescribable {
    var sslDescription: String {
        if case .handshakeFailed(let error) = self { return "TLS handshake failed: \(error.reasons)" }
        return "TLS: \(self)"
    }
}

extension BoringSSLError: NIOSSLErrorDescribable {
    var sslDescription: String { "TLS: \(reasons)" }

    /// BoringSSL's reason names (`CERTIFICATE_VERIFY_FAILED`), without its source paths.
    var reasons: String {
        let text = "\(self)"
        let names = text.components(separatedBy: "OPENSSL_internal:").dropFirst().map { $0.prefix { $0 != " " && $0 != "]" && $0 != ")" } }
        return names.isEmpty ? text : names.joined(separator: ", ")
    }
}

extension NIOSSLExtraError: NIOSSLErrorDescribable {
    var sslDescription: String { "TLS: \(self)" }
}
