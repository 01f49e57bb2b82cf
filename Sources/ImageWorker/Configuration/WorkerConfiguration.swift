import AMQP
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

    // [image_worker]
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

        let imagesDirectory = sources.string(section, "images_dir", default: "/var/lib/image-worker/images")
        guard imagesDirectory.hasPrefix("/"), FilePathNormalisation.isNormalised(imagesDirectory) else {
            throw ConfigurationError(section: section, name: "images_dir", reason: "'\(imagesDirectory)' is not an absolute path without '.' or '..'")
        }
        let levelText = sources.string(section, "log_level", default: "info").lowercased()
        guard let logLevel = Logger.Level(rawValue: levelText == "warn" ? "warning" : levelText) else {
            throw ConfigurationError(section: section, name: "log_level", reason: "'\(levelText)' is not one of trace, debug, info, notice, warning, error, critical")
        }

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
            imagesDirectory: imagesDirectory,
            topic: topic,
            maxConcurrentDownloads: try sources.integer(section, "max_concurrent_downloads", default: 20, range: 1...1000),
            progressInterval: .milliseconds(Int64(try sources.number(section, "progress_interval", default: 5, range: 0.1...3600) * 1000)),
            gracefulShutdownTimeout: .seconds(try sources.integer(section, "graceful_shutdown_timeout", default: 60, range: 0...86400)),
            logLevel: logLevel)
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

    /// The `publisher_id` of events: `image-worker.<host>`.
    public var publisherID: String { "image-worker.\(host)" }

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
