import Primitives
import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import Foundation
import NIOSSL
import NIOConcurrencyHelpers

/// The HTTP clients image services share: one async-http-client `HTTPClient` per way out
/// (directly, or through the http or https proxy), made when first needed, all with the same
/// TLS, timeouts and a large receive buffer. Redirects are followed by ``HTTPExchange``, not by
/// the client, so that each hop is checked.
///
/// A hop the egress policy checked goes to the address it checked: a client whose DNS override
/// maps the host to that address (async-http-client resolves names itself otherwise, and a
/// second lookup could answer differently). Such clients are kept per host and address, up to
/// ``pinnedClientLimit``; past it, a hop gets a client of its own, shut down when the hop's
/// slot is released, so that names a tenant invents cannot grow the worker without bound.
public final class HTTPTransport: Sendable {
    public let settings: HTTPClientSettings
    private let clients = NIOLockedValueBox([String: HTTPClient]())
    /// Pinned clients kept at most.
    static let pinnedClientLimit = 64
    private let tlsConfiguration: TLSConfiguration
    /// Every request to an origin takes one of its slots first (see ``OriginConnectionSlots``).
    let slots: OriginConnectionSlots

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
        slots = OriginConnectionSlots(limit: settings.maximumConnectionsPerHost)
    }

    /// A response, the connection slot it holds, and the instant the request had to be done by.
    struct SlottedResponse {
        var response: HTTPClientResponse
        /// Released by the caller once done with the body (or once it is no longer referenced).
        var slot: OriginConnectionSlots.Slot
        /// The absolute deadline the request ran under: later requests of the same exchange
        /// (redirect hops, resumed attempts) keep it.
        var deadline: NIODeadline
    }

    /// Sends one request to `url` (no redirects) once its origin has a free slot, waiting as long
    /// as that takes (`onQueued` is called when it has to wait). The wait counts toward no
    /// deadline that starts with this request (``RequestDeadline/afterSlot(_:)``, or a download's
    /// ``RequestDeadline/download(_:)`` at its first request); one already running keeps running.
    /// `pinnedTo`, when given, are the addresses the connection may go to, tried in order while
    /// connecting fails (see the type's comment).
    func execute(_ request: HTTPClientRequest, to url: ParsedHTTPURL, pinnedTo addresses: [IPAddress]? = nil, deadline: RequestDeadline,
                 onQueued: () -> Void = {}) async throws -> SlottedResponse {
        let originSlot = try await slots.acquire(url.origin, onWait: onQueued)
        let absolute = deadline.absolute(startingNow: .now())
        guard let addresses else {
            do {
                let response = try await client(scheme: url.scheme, host: url.host, port: url.port).execute(request, deadline: absolute)
                return SlottedResponse(response: response, slot: originSlot, deadline: absolute)
            } catch {
                originSlot.release()
                throw error
            }
        }
        for (index, address) in addresses.enumerated() {
            let (client, ownClient) = pinnedClient(host: url.host, address: address)
            do {
                let response = try await client.execute(request, deadline: absolute)
                // A hop's own client goes with its slot (made only now: a slot dropped by a failed
                // attempt would give the origin's slot back while the next attempt uses it).
                let slot = ownClient ? OriginConnectionSlots.Slot { originSlot.release(); client.shutdown { _ in } } : originSlot
                return SlottedResponse(response: response, slot: slot, deadline: absolute)
            } catch {
                if ownClient { client.shutdown { _ in } }
                guard index < addresses.count - 1, HTTPErrors.isConnectFailure(error) else {
                    originSlot.release()
                    throw error
                }
            }
        }
        originSlot.release()
        throw HostResolver.Failure(host: url.host, reason: "the host name resolved to no address")
    }

    /// Whether requests to `url` go through a proxy (which then decides where it connects).
    func usesProxy(_ url: ParsedHTTPURL) -> Bool {
        settings.proxies.proxy(scheme: url.scheme, host: url.host, port: url.port) != nil
    }

    /// The client that connects to `address` for `host`; `true` when it is the hop's own (past
    /// the limit), to be shut down after the hop.
    private func pinnedClient(host: String, address: IPAddress) -> (HTTPClient, Bool) {
        let key = "pinned \(host) \(address)"
        let make = { () -> HTTPClient in
            var configuration = self.configuration(proxy: nil)
            // Both spellings of an IPv6 literal, as async-http-client may see either.
            configuration.dnsOverride[host] = "\(address)"
            configuration.dnsOverride[HostResolver.unbracketed(host)] = "\(address)"
            return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        }
        let kept = clients.withLockedValue { clients -> HTTPClient? in
            if let existing = clients[key] { return existing }
            guard clients.keys.count(where: { $0.hasPrefix("pinned ") }) < Self.pinnedClientLimit else { return nil }
            let client = make()
            clients[key] = client
            return client
        }
        if let kept { return (kept, false) }
        return (make(), true)
    }

    /// Sends one request and collects its body (at most `limit` bytes), holding an origin slot
    /// for the whole exchange: for small JSON answers (Glance, Keystone).
    func collect(_ request: HTTPClientRequest, to url: ParsedHTTPURL, timeout: Duration, limit: Int) async throws -> (HTTPClientResponse, ByteBuffer) {
        let answer = try await execute(request, to: url, deadline: .afterSlot(timeout))
        defer { answer.slot.release() }
        let body = try await answer.response.body.collect(upTo: limit)
        return (answer.response, body)
    }

    /// The client for a request to `scheme://host:port`.
    func client(scheme: String, host: String, port: Int) -> HTTPClient {
        let proxy = settings.proxies.proxy(scheme: scheme, host: host, port: port)
        let key = proxy.map { "\(scheme)-\($0.host):\($0.port)" } ?? "direct"
        return clients.withLockedValue { clients in
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
        // As many connections per host as the worker lets requests run there at once: a request
        // that has its origin slot never waits for (and never times out waiting for) a connection.
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = settings.maximumConnectionsPerHost
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
        for client in clients.withLockedValue({ Array($0.values) }) {
            client.shutdown { _ in }
        }
    }

    /// Shuts every client down.
    public func shutdown() async {
        let all = clients.withLockedValue { clients -> [HTTPClient] in
            defer { clients = [:] }
            return Array(clients.values)
        }
        for client in all { try? await client.shutdown() }
    }
}

/// When a request must be done by.
enum RequestDeadline: Sendable {
    /// A fixed instant (later hops of an exchange keep the first hop's).
    case at(NIODeadline)
    /// This long after the request gets its connection slot: waiting for the slot is free.
    case afterSlot(Duration)
    /// A whole download's deadline, shared by its attempts: it starts when the first request gets
    /// its slot; the attempts after that (retries, resumes) count their waits too.
    case download(DownloadDeadline)

    /// The instant, for a request whose slot was granted at `now`.
    func absolute(startingNow now: NIODeadline) -> NIODeadline {
        switch self {
        case .at(let deadline): return deadline
        case .afterSlot(let duration): return now + .nanoseconds(Int64(duration.seconds * 1e9))
        case .download(let deadline): return deadline.start(now)
        }
    }
}

/// The overall deadline of one download, set when its first request gets a connection slot.
final class DownloadDeadline: Sendable {
    private let duration: Duration
    private let instant = NIOLockedValueBox<NIODeadline?>(nil)

    /// A deadline `duration` after the download's first slot.
    init(_ duration: Duration) {
        self.duration = duration
    }

    /// The deadline, setting it from `now` the first time.
    func start(_ now: NIODeadline) -> NIODeadline {
        instant.withLockedValue { instant in
            if let instant { return instant }
            let deadline = now + .nanoseconds(Int64(duration.seconds * 1e9))
            instant = deadline
            return deadline
        }
    }
}


extension BoringSSLError: NIOSSLErrorDescribable {
    var sslDescription: String { "TLS: \(Self.reasons(of: self))" }

    /// BoringSSL's reason names (`CERTIFICATE_VERIFY_FAILED`), without its source paths.
    static func reasons(of error: BoringSSLError) -> String {
        let text = "\(error)"
        let names = text.components(separatedBy: "OPENSSL_internal:").dropFirst().map { $0.prefix { $0 != " " && $0 != "]" && $0 != ")" } }
        return names.isEmpty ? text : names.joined(separator: ", ")
    }
}

extension NIOSSLExtraError: NIOSSLErrorDescribable {
    var sslDescription: String { "TLS: \(self)" }
}
