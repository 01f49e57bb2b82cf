/// How outgoing HTTP(S) requests are made: TLS, timeouts, proxies, credentials, retries.
public struct HTTPClientSettings: Sendable, Hashable {
    /// Server certificate verification (`[DEFAULT] webserver_verify_ca`: true, false or a CA path).
    public enum Verification: Sendable, Hashable {
        /// Verify against the system's trust store.
        case system
        /// Verify against the CAs in this PEM file only.
        case caFile(String)
        /// Do not verify (`webserver_verify_ca = false`).
        case none
    }

    public var verification: Verification
    /// A client certificate and key (PEM) to present, for servers that ask for one.
    public var clientCertificateFile: String?
    public var clientKeyFile: String?
    /// How long connecting (TCP and TLS) may take.
    public var connectTimeout: Duration
    /// How long a transfer may go without receiving a byte.
    public var stallTimeout: Duration
    /// How long a whole download may take, retries included.
    public var overallTimeout: Duration
    /// How many times a transient failure is retried (resuming where possible).
    public var retries: Int
    /// The delay before the first retry; it doubles up to ``maximumRetryDelay``.
    public var initialRetryDelay: Duration
    public var maximumRetryDelay: Duration
    /// Redirects followed at most (only to http and https).
    public var maximumRedirects: Int
    /// `http_proxy`, `https_proxy`, `no_proxy`.
    public var proxies: ProxySettings
    /// Basic-auth credentials: one pair for every image server (`[deploy] image_server_*`), and
    /// per-host ones (a netrc file).
    public var credentials: HTTPCredentials
    /// The read size asked of the socket; large reads keep the per-chunk cost low.
    public var receiveBufferBytes: Int
    /// Requests in flight to one origin at most (`[image_worker] max_connections_per_host`); the
    /// rest wait their turn, however long, without failing.
    public var maximumConnectionsPerHost: Int
    /// Where connections may go (§5.1), checked for every hop not sent through a proxy; nil for
    /// operator-configured endpoints (Glance, Keystone), which are not checked.
    public var egress: EgressPolicy?

    /// Creates settings; defaults follow Ironic's where it has them.
    public init(
        verification: Verification = .system, clientCertificateFile: String? = nil, clientKeyFile: String? = nil,
        connectTimeout: Duration = .seconds(60), stallTimeout: Duration = .seconds(60), overallTimeout: Duration = .seconds(6 * 3600),
        retries: Int = 3, initialRetryDelay: Duration = .seconds(1), maximumRetryDelay: Duration = .seconds(30),
        maximumRedirects: Int = 10, proxies: ProxySettings = ProxySettings(), credentials: HTTPCredentials = HTTPCredentials(),
        receiveBufferBytes: Int = 1 << 20, maximumConnectionsPerHost: Int = 20, egress: EgressPolicy? = nil
    ) {
        self.verification = verification
        self.clientCertificateFile = clientCertificateFile
        self.clientKeyFile = clientKeyFile
        self.connectTimeout = connectTimeout
        self.stallTimeout = stallTimeout
        self.overallTimeout = overallTimeout
        self.retries = retries
        self.initialRetryDelay = initialRetryDelay
        self.maximumRetryDelay = maximumRetryDelay
        self.maximumRedirects = maximumRedirects
        self.proxies = proxies
        self.credentials = credentials
        self.receiveBufferBytes = receiveBufferBytes
        self.maximumConnectionsPerHost = maximumConnectionsPerHost
        self.egress = egress
    }

    /// The delay before retry `attempt` (1 for the first).
    func retryDelay(attempt: Int) -> Duration {
        var delay = initialRetryDelay
        for _ in 1..<max(attempt, 1) {
            delay = delay * 2
            if delay >= maximumRetryDelay { return maximumRetryDelay }
        }
        return min(delay, maximumRetryDelay)
    }
}

/// Basic-auth credentials for image servers. Each goes only to the reference's own origin (§5.1),
/// never to a redirect's.
public struct HTTPCredentials: Sendable, Hashable {
    /// One user and password for every image server (`image_server_auth_strategy = http_basic`).
    public var everyServer: (user: String, password: String)? {
        get { everyServerPair.map { ($0.user, $0.password) } }
        set { everyServerPair = newValue.map { Pair(user: $0.user, password: $0.password) } }
    }
    /// Per-host credentials (a netrc file).
    public var perHost: NetrcFile?

    private var everyServerPair: Pair?

    private struct Pair: Sendable, Hashable {
        var user: String
        var password: String
    }

    /// Creates credentials.
    public init(everyServer: (user: String, password: String)? = nil, perHost: NetrcFile? = nil) {
        self.everyServerPair = everyServer.map { Pair(user: $0.user, password: $0.password) }
        self.perHost = perHost
    }
}
