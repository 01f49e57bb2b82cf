import AMQP
import ImageServices
import Logging
import OsloMessaging

/// Everything the worker is configured with, read from ironic.conf-style sources with Ironic's and
/// oslo's option names where they exist (contract §8), each value checked at start.
public struct WorkerConfiguration: Sendable {
    // [DEFAULT]
    /// `transport_url`: the broker(s).
    public var transportURL: TransportURL
    /// `control_exchange` (`ironic`).
    public var controlExchange: String
    /// `host`: this worker's name in the `<topic>.<host>` queue (default: the machine's FQDN).
    public var host: String

    // [oslo_messaging_rabbit]
    /// `amqp_durable_queues`, `amqp_auto_delete`, `rabbit_quorum_queue`, `rabbit_quorum_delivery_limit`.
    public var queueOptions: RPCServerTopology.Options
    /// `heartbeat_timeout_threshold` in seconds (0 disables heartbeats).
    public var heartbeatTimeoutThreshold: Int
    /// `ssl` (or `?ssl=1` in the URL) and `ssl_ca_file`, `ssl_cert_file`, `ssl_key_file`.
    public var tls: AMQPTLSConfiguration?

    // [oslo_messaging_notifications]
    /// `topics`.
    public var notificationTopics: [String]

    // [conductor]
    /// `file_url_allowed_paths`.
    public var fileURLAllowedPaths: [String]

    // [agent]
    /// `allow_md5_checksum`.
    public var allowMD5Checksum: Bool

    // [conductor]
    /// `disable_support_for_checksum_files`: refuse checksum-file URLs in `image_checksum`.
    public var checksumFilesDisabled: Bool

    /// Outgoing HTTP(S) to image servers: `[DEFAULT] webserver_verify_ca`,
    /// `webserver_connection_timeout`; `[deploy] image_server_*`; `[image_worker] http_*`, `netrc_file`,
    /// `download_*`.
    public var http: HTTPClientSettings
    /// `[image_worker] require_http_checksum`: an http(s) image needs a checksum (Ironic's rule).
    public var requireHTTPChecksum: Bool

    /// `[glance]`: where Glance is and how to authenticate, with its own TLS (`cafile`, `insecure`).
    public var glance: GlanceSettings
    public var glanceHTTP: HTTPClientSettings

    // [pxe]
    /// `instance_master_path`, `image_cache_size` (MiB), `image_cache_ttl` (minutes); nil when
    /// `instance_master_path` is set empty (no cache, as in Ironic).
    public var cache: MasterImageCache.Settings?

    // [image_worker]
    /// `state_dir`: where the worker keeps its state (defaults of `images_dir` and the cache).
    public var stateDirectory: String
    /// `images_dir`: node folders live under it.
    public var imagesDirectory: String
    /// `topic` (`ironic.image_worker`).
    public var topic: String
    /// `max_concurrent_downloads`: requests run at once by this process.
    public var maxConcurrentDownloads: Int
    /// `progress_interval`: at most one progress event per task per interval.
    public var progressInterval: Duration
    /// `graceful_shutdown_timeout`: how long running tasks may finish after SIGTERM.
    public var gracefulShutdownTimeout: Duration
    /// `log_level`.
    public var logLevel: Logger.Level
    /// `log_format`: `text` (one line per record) or `json` (one JSON object per line).
    public var logFormat: LogFormat
    /// `dead_letter_exchange`: where malformed and given-up requests are copied (none by default).
    public var deadLetterExchange: String?
    /// `max_task_attempts`: runs of one request (started and never finished) before the worker
    /// gives up on it; defaults to `rabbit_quorum_delivery_limit` when that is set, else 5.
    public var maxTaskAttempts: Int
    /// `journal_size`: outcomes kept in `<state_dir>/journal` for duplicate requests.
    public var journalSize: Int
    /// `metrics_address`: `host:port` of the `/metrics`, `/healthz` and `/readyz` endpoint; off
    /// (nil) when empty, the default, so that several workers can share a host unconfigured.
    public var metricsAddress: MetricsAddress?

    /// How log records are written.
    public enum LogFormat: String, Sendable, Hashable, CaseIterable {
        case text, json
    }

    /// The section of the worker's own options.
    public static let section = "image_worker"

    /// Reads and checks the configuration.
    public static func load(_ sources: ConfigurationSources) throws(ConfigurationError) -> WorkerConfiguration {
        let urlText = sources.string("DEFAULT", "transport_url", default: "rabbit://guest:guest@localhost:5672/")
        var transportURL: TransportURL
        do {
            transportURL = try TransportURL(parsing: urlText)
        } catch {
            throw ConfigurationError(section: "DEFAULT", name: "transport_url", reason: error.message)
        }
        // oslo lets the URL's query override [oslo_messaging_rabbit] options.
        func rabbitBool(_ name: String, _ defaultValue: Bool) throws(ConfigurationError) -> Bool {
            if let value = transportURL.option(name) {
                guard let parsed = ConfigurationSources.parseBool(value) else {
                    throw ConfigurationError(section: "DEFAULT", name: "transport_url", reason: "query option \(name)='\(value)' is not a boolean")
                }
                return parsed
            }
            return try sources.bool("oslo_messaging_rabbit", name, default: defaultValue)
        }
        let rabbit = "oslo_messaging_rabbit"
        let deliveryLimit = try sources.integer(rabbit, "rabbit_quorum_delivery_limit", default: 0, range: 0...Int(Int32.max))
        let queueOptions = RPCServerTopology.Options(
            durableQueues: try rabbitBool("amqp_durable_queues", false),
            autoDelete: try rabbitBool("amqp_auto_delete", false),
            quorumQueues: try rabbitBool("rabbit_quorum_queue", false),
            quorumDeliveryLimit: deliveryLimit > 0 ? deliveryLimit : nil)
        let useTLS = try rabbitBool("ssl", false) || transportURL.endpoints.contains { $0.useTLS }
        var tls: AMQPTLSConfiguration? = nil
        if useTLS {
            for index in transportURL.endpoints.indices { transportURL.endpoints[index].useTLS = true }
            tls = AMQPTLSConfiguration(
                caFile: try readableFile(sources, rabbit, "ssl_ca_file"),
                certificateFile: try readableFile(sources, rabbit, "ssl_cert_file"),
                keyFile: try readableFile(sources, rabbit, "ssl_key_file"))
            if (tls?.certificateFile == nil) != (tls?.keyFile == nil) {
                throw ConfigurationError(section: rabbit, name: "ssl_key_file", reason: "ssl_cert_file and ssl_key_file must be given together")
            }
        }

        let controlExchange = sources.string("DEFAULT", "control_exchange", default: "ironic")
        try checkRoutingWord(controlExchange, "DEFAULT", "control_exchange")
        let host = sources.optionalString("DEFAULT", "host") ?? HostName.fullyQualified()
        try checkRoutingWord(host, "DEFAULT", "host")
        let topic = sources.string(section, "topic", default: "ironic.image_worker")
        try checkRoutingWord(topic, section, "topic")
        let notificationTopics = sources.list("oslo_messaging_notifications", "topics", default: ["ironic_versioned_notifications"])
        for notificationTopic in notificationTopics { try checkRoutingWord(notificationTopic, "oslo_messaging_notifications", "topics") }

        let allowedPaths = sources.list("conductor", "file_url_allowed_paths", default: ["/var/lib/ironic"])
        for path in allowedPaths {
            let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
            guard trimmed.hasPrefix("/"), FilePathNormalisation.isNormalised(trimmed) else {
                throw ConfigurationError(section: "conductor", name: "file_url_allowed_paths", reason: "'\(path)' is not an absolute path without '.' or '..'")
            }
        }

        let stateDirectory = try absolutePath(sources, section, "state_dir", default: "/var/lib/image-worker")
        let imagesDirectory = try absolutePath(sources, section, "images_dir", default: stateDirectory + "/images")
        var cache: MasterImageCache.Settings? = nil
        if sources.raw("pxe", "instance_master_path") != "" {
            cache = MasterImageCache.Settings(
                directory: try absolutePath(sources, "pxe", "instance_master_path", default: stateDirectory + "/master_images"),
                sizeLimitBytes: Int64(try sources.integer("pxe", "image_cache_size", default: 20_480, range: 0...Int(Int32.max))) << 20,
                timeToLive: .seconds(60 * (try sources.integer("pxe", "image_cache_ttl", default: 10_080, range: 0...Int(Int32.max)))))
        }
        let levelText = sources.string(section, "log_level", default: "info").lowercased()
        guard let logLevel = Logger.Level(rawValue: levelText == "warn" ? "warning" : levelText) else {
            throw ConfigurationError(section: section, name: "log_level", reason: "'\(levelText)' is not one of trace, debug, info, notice, warning, error, critical")
        }

        let formatText = sources.string(section, "log_format", default: "text").lowercased()
        guard let logFormat = LogFormat(rawValue: formatText) else {
            throw ConfigurationError(section: section, name: "log_format", reason: "'\(formatText)' is neither text nor json")
        }
        let deadLetterExchange = sources.optionalString(section, "dead_letter_exchange")
        if let deadLetterExchange { try checkRoutingWord(deadLetterExchange, section, "dead_letter_exchange") }
        var metricsAddress: MetricsAddress? = nil
        let metricsText = sources.string(section, "metrics_address", default: "")
        if !metricsText.isEmpty {
            guard let parsed = MetricsAddress(metricsText) else {
                throw ConfigurationError(section: section, name: "metrics_address", reason: "'\(metricsText)' is not host:port (an IPv6 host in brackets), nor empty")
            }
            metricsAddress = parsed
        }

        let http = try httpSettings(sources)
        let (glance, glanceHTTP) = try glanceSettings(sources, http: http)
        return WorkerConfiguration(
            transportURL: transportURL,
            controlExchange: controlExchange,
            host: host,
            queueOptions: queueOptions,
            heartbeatTimeoutThreshold: try sources.integer(rabbit, "heartbeat_timeout_threshold", default: 60, range: 0...3600),
            tls: tls,
            notificationTopics: notificationTopics,
            fileURLAllowedPaths: allowedPaths,
            allowMD5Checksum: try sources.bool("agent", "allow_md5_checksum", default: true),
            checksumFilesDisabled: try sources.bool("conductor", "disable_support_for_checksum_files", default: false),
            http: http,
            requireHTTPChecksum: try sources.bool(section, "require_http_checksum", default: true),
            glance: glance,
            glanceHTTP: glanceHTTP,
            cache: cache,
            stateDirectory: stateDirectory,
            imagesDirectory: imagesDirectory,
            topic: topic,
            maxConcurrentDownloads: try sources.integer(section, "max_concurrent_downloads", default: 20, range: 1...1000),
            progressInterval: .milliseconds(Int64(try sources.number(section, "progress_interval", default: 5, range: 0.1...3600) * 1000)),
            gracefulShutdownTimeout: .seconds(try sources.integer(section, "graceful_shutdown_timeout", default: 60, range: 0...86400)),
            logLevel: logLevel,
            logFormat: logFormat,
            deadLetterExchange: deadLetterExchange,
            maxTaskAttempts: try sources.integer(section, "max_task_attempts", default: deliveryLimit > 0 ? deliveryLimit : 5, range: 1...1000),
            journalSize: try sources.integer(section, "journal_size", default: 10_000, range: 100...10_000_000),
            metricsAddress: metricsAddress)
    }

    /// The AMQP connection settings this configuration implies.
    public var amqpConfiguration: AMQPConfiguration {
        AMQPConfiguration(endpoints: transportURL.endpoints, tls: tls ?? AMQPTLSConfiguration(), heartbeatSeconds: heartbeatTimeoutThreshold,
                          connectionName: "image-worker:\(host):\(ProcessIdentity.current)")
    }

    /// The queues this worker declares and consumes, as an oslo RPC server for `topic` would.
    public func rpcTopology() -> RPCServerTopology {
        RPCServerTopology(exchange: controlExchange, topic: topic, server: host, options: queueOptions)
    }

    /// The checksum rules for the fetcher.
    public var checksumPolicy: ImageFetcher.ChecksumPolicy {
        ImageFetcher.ChecksumPolicy(allowMD5: allowMD5Checksum, requireForHTTP: requireHTTPChecksum, checksumFilesDisabled: checksumFilesDisabled)
    }

    /// The `publisher_id` of events: `image-worker.<host>`.
    public var publisherID: String { "image-worker.\(host)" }

    /// An absolute, normalised path option.
    private static func absolutePath(_ sources: ConfigurationSources, _ section: String, _ name: String, default defaultValue: String) throws(ConfigurationError) -> String {
        let path = sources.string(section, name, default: defaultValue)
        guard path.hasPrefix("/"), FilePathNormalisation.isNormalised(path) else {
            throw ConfigurationError(section: section, name: name, reason: "'\(path)' is not an absolute path without '.' or '..'")
        }
        return path
    }

    /// Settings for image servers.
    private static func httpSettings(_ sources: ConfigurationSources) throws(ConfigurationError) -> HTTPClientSettings {
        var verification = HTTPClientSettings.Verification.system
        let verifyText = sources.string("DEFAULT", "webserver_verify_ca", default: "True")
        if let verify = ConfigurationSources.parseBool(verifyText) {
            verification = verify ? .system : .none
        } else {
            guard FileAccess.isReadable(verifyText) else {
                throw ConfigurationError(section: "DEFAULT", name: "webserver_verify_ca", reason: "'\(verifyText)' is neither true, false nor a readable CA file")
            }
            verification = .caFile(verifyText)
        }
        let connectTimeout = try sources.integer("DEFAULT", "webserver_connection_timeout", default: 60, range: 1...3600)
        var credentials = HTTPCredentials()
        let strategy = sources.string("deploy", "image_server_auth_strategy", default: "noauth")
        switch strategy {
        case "noauth": break
        case "http_basic":
            guard let user = sources.optionalString("deploy", "image_server_user") else {
                throw ConfigurationError(section: "deploy", name: "image_server_user", reason: "http_basic needs a user")
            }
            guard let password = sources.optionalString("deploy", "image_server_password") else {
                throw ConfigurationError(section: "deploy", name: "image_server_password", reason: "http_basic needs a password")
            }
            credentials.everyServer = (user, password)
        default:
            throw ConfigurationError(section: "deploy", name: "image_server_auth_strategy", reason: "'\(strategy)' is neither noauth nor http_basic")
        }
        if let netrc = try readableFile(sources, section, "netrc_file") {
            do {
                credentials.perHost = try NetrcFile(path: netrc)
            } catch {
                throw ConfigurationError(section: section, name: "netrc_file", reason: error.message)
            }
        }
        let certificate = try readableFile(sources, section, "http_client_cert_file")
        let key = try readableFile(sources, section, "http_client_key_file")
        if (certificate == nil) != (key == nil) {
            throw ConfigurationError(section: section, name: "http_client_key_file", reason: "http_client_cert_file and http_client_key_file must be given together")
        }
        let proxies: ProxySettings
        do {
            proxies = try ProxySettings.fromEnvironment(sources.environment, http: sources.optionalString(section, "http_proxy"),
                                                        https: sources.optionalString(section, "https_proxy"), noProxy: sources.optionalString(section, "no_proxy"))
        } catch {
            throw ConfigurationError(section: section, name: "http_proxy", reason: error.message)
        }
        return HTTPClientSettings(
            verification: verification, clientCertificateFile: certificate, clientKeyFile: key,
            connectTimeout: .seconds(connectTimeout),
            stallTimeout: .seconds(try sources.integer(section, "download_stall_timeout", default: connectTimeout, range: 1...3600)),
            overallTimeout: .seconds(try sources.integer(section, "download_timeout", default: 6 * 3600, range: 10...7 * 86400)),
            retries: try sources.integer(section, "download_retries", default: 3, range: 0...100),
            proxies: proxies, credentials: credentials,
            maximumConnectionsPerHost: try sources.integer(
                section, "max_connections_per_host",
                default: try sources.integer(section, "max_concurrent_downloads", default: 20, range: 1...1000), range: 1...1000))
    }

    /// Settings for Glance and, with a password, Keystone.
    private static func glanceSettings(_ sources: ConfigurationSources, http: HTTPClientSettings) throws(ConfigurationError) -> (GlanceSettings, HTTPClientSettings) {
        let group = "glance"
        let authType = sources.string(group, "auth_type", default: "none").lowercased()
        let authentication: GlanceSettings.Authentication
        switch authType {
        case "none", "noauth":
            authentication = .none
        case "token", "admin_token":
            guard let token = sources.optionalString(group, "token") else {
                throw ConfigurationError(section: group, name: "token", reason: "auth_type = token needs a token")
            }
            authentication = .token(token)
        case "password", "v3password":
            func required(_ name: String) throws(ConfigurationError) -> String {
                guard let value = sources.optionalString(group, name) else {
                    throw ConfigurationError(section: group, name: name, reason: "auth_type = password needs \(name)")
                }
                return value
            }
            let projectName = sources.optionalString(group, "project_name")
            let projectID = sources.optionalString(group, "project_id")
            guard projectName != nil || projectID != nil else {
                throw ConfigurationError(section: group, name: "project_name", reason: "auth_type = password needs project_name or project_id")
            }
            authentication = .password(GlanceSettings.KeystonePassword(
                authURL: try required("auth_url"), username: try required("username"), password: try required("password"),
                userDomainName: sources.optionalString(group, "user_domain_name") ?? "Default", projectName: projectName, projectID: projectID,
                projectDomainName: sources.optionalString(group, "project_domain_name") ?? "Default",
                regionName: sources.optionalString(group, "region_name"),
                interface: sources.list(group, "valid_interfaces", default: [sources.string(group, "interface", default: "public")]).first ?? "public"))
        default:
            throw ConfigurationError(section: group, name: "auth_type", reason: "'\(authType)' is not one of none, token, password")
        }
        if let endpoint = sources.optionalString(group, "endpoint_override") {
            guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
                throw ConfigurationError(section: group, name: "endpoint_override", reason: "'\(endpoint)' is not an http(s) URL")
            }
        }
        let glance = GlanceSettings(
            endpointOverride: sources.optionalString(group, "endpoint_override"), authentication: authentication,
            projectID: sources.optionalString(group, "project_id"),
            retries: try sources.integer(group, "num_retries", default: 0, range: 0...100),
            adminBypassesProjectCheck: try sources.bool("DEFAULT", "ignore_project_check_for_admin_tasks", default: true),
            allowAccessViaAuthToken: try sources.bool("DEFAULT", "allow_image_access_via_auth_token", default: false))
        var glanceHTTP = http
        glanceHTTP.credentials = HTTPCredentials()
        glanceHTTP.clientCertificateFile = try readableFile(sources, group, "certfile")
        glanceHTTP.clientKeyFile = try readableFile(sources, group, "keyfile")
        if try sources.bool(group, "insecure", default: false) {
            glanceHTTP.verification = .none
        } else if let caFile = try readableFile(sources, group, "cafile") {
            glanceHTTP.verification = .caFile(caFile)
        } else {
            glanceHTTP.verification = .system
        }
        return (glance, glanceHTTP)
    }

    private static func readableFile(_ sources: ConfigurationSources, _ section: String, _ name: String) throws(ConfigurationError) -> String? {
        guard let path = sources.optionalString(section, name) else { return nil }
        guard FileAccess.isReadable(path) else {
            throw ConfigurationError(section: section, name: name, reason: "'\(path)' cannot be read")
        }
        return path
    }

    /// A queue or exchange name part must be a routing-key word: no blanks, no wildcards.
    private static func checkRoutingWord(_ value: String, _ section: String, _ name: String) throws(ConfigurationError) {
        let allowed = value.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-:@".unicodeScalars.contains($0)) }
        guard !value.isEmpty, value.utf8.count <= 200, allowed else {
            throw ConfigurationError(section: section, name: name, reason: "'\(value)' must be 1 to 200 characters of letters, digits and . _ - : @")
        }
    }
}
