import AMQPModel
import Foundation
import ImageFormats
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
    /// `permitted_image_formats` and `disable_deep_image_inspection`.
    public var formatPolicy: FormatPolicy
    /// `force_raw_images`, `[disk_utils] image_convert_memory_limit` and `image_convert_attempts`.
    public var conversion: ConversionSettings
    /// `[image_worker] decompress_images`, `max_image_size`; `[conductor] disable_zstandard_decompression`.
    public var decompression: DecompressionSettings

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
    /// `image_file_mode`: the permissions of image files the worker writes.
    public var imageFileMode: mode_t

    /// `<state_dir>/node-locks`: one lock file per node, so that requests for a node run one after
    /// the other across the processes sharing `state_dir` and `images_dir`.
    public var nodeLocksDirectory: String { stateDirectory + "/node-locks" }

    /// The worker's own files, never readable through `file://`: `state_dir` (journal, node
    /// locks), `images_dir`, the master cache, and the credential files the configuration names
    /// (netrc, TLS keys), wherever they are.
    public var workerFolders: [String] {
        [imagesDirectory, stateDirectory] + (cache.map { [$0.directory] } ?? []) + secretFiles
    }

    /// Files holding credentials: `netrc_file`, `http_client_key_file`, `[glance] keyfile`,
    /// `[oslo_messaging_rabbit] ssl_key_file`.
    public var secretFiles: [String] = []
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
    /// gives up on it (default 5).
    public var maxTaskAttempts: Int
    /// The work queue's `x-delivery-limit` (`rabbit_quorum_delivery_limit` on quorum queues): the
    /// worker gives up on the last delivery the broker will make, before the broker drops it.
    public var workQueueDeliveryLimit: Int? {
        queueOptions.quorumQueues ? queueOptions.quorumDeliveryLimit : nil
    }
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
    public static let section = WorkerOptions.section

    /// Reads and checks the configuration: every option from ``WorkerOptions``.
    public static func load(_ sources: ConfigurationSources) throws(ConfigurationError) -> WorkerConfiguration {
        typealias O = WorkerOptions
        var transportURL: TransportURL
        do {
            transportURL = try TransportURL(parsing: sources.string(O.transportURL))
        } catch {
            throw ConfigurationError(O.transportURL, error.message)
        }
        // oslo lets the URL's query override [oslo_messaging_rabbit] options.
        func rabbitBool(_ option: ConfigurationOption) throws(ConfigurationError) -> Bool {
            if let value = transportURL.option(option.name) {
                guard let parsed = ConfigurationSources.parseBool(value) else {
                    throw ConfigurationError(O.transportURL, "query option \(option.name)='\(value)' is not a boolean")
                }
                return parsed
            }
            return try sources.bool(option)
        }
        let deliveryLimit = try sources.integer(O.quorumDeliveryLimit)
        let queueOptions = RPCServerTopology.Options(
            durableQueues: try rabbitBool(O.durableQueues),
            autoDelete: try rabbitBool(O.autoDelete),
            quorumQueues: try rabbitBool(O.quorumQueues),
            quorumDeliveryLimit: deliveryLimit > 0 ? deliveryLimit : nil)
        let useTLS = try rabbitBool(O.ssl) || transportURL.endpoints.contains { $0.useTLS }
        var tls: AMQPTLSConfiguration? = nil
        if useTLS {
            for index in transportURL.endpoints.indices { transportURL.endpoints[index].useTLS = true }
            tls = AMQPTLSConfiguration(caFile: try readableFile(sources, O.sslCAFile), certificateFile: try readableFile(sources, O.sslCertFile),
                                       keyFile: try readableFile(sources, O.sslKeyFile))
            if (tls?.certificateFile == nil) != (tls?.keyFile == nil) {
                throw ConfigurationError(O.sslKeyFile, "ssl_cert_file and ssl_key_file must be given together")
            }
        }

        let controlExchange = try routingWord(sources.string(O.controlExchange), O.controlExchange)
        let host = try routingWord(sources.optionalString(O.host) ?? HostName.fullyQualified(), O.host)
        let topic = try routingWord(sources.string(O.topic), O.topic)
        let notificationTopics = try sources.list(O.notificationTopics).map { (topic) throws(ConfigurationError) in try routingWord(topic, O.notificationTopics) }

        let allowedPaths = sources.list(O.fileURLAllowedPaths)
        for path in allowedPaths {
            let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
            guard trimmed.hasPrefix("/"), FilePathNormalisation.isNormalised(trimmed) else {
                throw ConfigurationError(O.fileURLAllowedPaths, "'\(path)' is not an absolute path without '.' or '..'")
            }
        }

        let stateDirectory = try absolutePath(sources, O.stateDirectory)
        let imagesDirectory = try absolutePath(sources, O.imagesDirectory, default: stateDirectory + "/images")
        let modeText = sources.string(O.imageFileMode).trimmingCharacters(in: .whitespaces)
        guard modeText.hasPrefix("0"), let imageFileMode = mode_t(modeText, radix: 8), imageFileMode <= 0o777 else {
            throw ConfigurationError(O.imageFileMode, "'\(modeText)' is not an octal file mode such as 0644 or 0640")
        }
        guard imageFileMode & 0o600 == 0o600 else {
            throw ConfigurationError(O.imageFileMode, "'\(modeText)' must let the worker's user read and write its files (0600 at least)")
        }
        var cache: MasterImageCache.Settings? = nil
        if sources.raw(O.masterPath.section, O.masterPath.name) != "" {
            cache = MasterImageCache.Settings(
                directory: try absolutePath(sources, O.masterPath, default: stateDirectory + "/master_images"),
                sizeLimitBytes: Int64(try sources.integer(O.cacheSize)) << 20,
                timeToLive: .seconds(60 * (try sources.integer(O.cacheTTL))),
                imageFileMode: imageFileMode)
        }
        let levelText = sources.string(O.logLevel).lowercased()
        guard let logLevel = Logger.Level(rawValue: levelText == "warn" ? "warning" : levelText) else {
            throw ConfigurationError(O.logLevel, "'\(levelText)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        let formatText = sources.string(O.logFormat).lowercased()
        guard let logFormat = LogFormat(rawValue: formatText) else {
            throw ConfigurationError(O.logFormat, "'\(formatText)' is neither text nor json")
        }
        let deadLetterExchange = try sources.optionalString(O.deadLetterExchange).map { (name) throws(ConfigurationError) in try routingWord(name, O.deadLetterExchange) }
        var metricsAddress: MetricsAddress? = nil
        let metricsText = sources.string(O.metricsAddress)
        if !metricsText.isEmpty {
            guard let parsed = MetricsAddress(metricsText) else {
                throw ConfigurationError(O.metricsAddress, "'\(metricsText)' is not host:port (an IPv6 host in brackets), nor empty")
            }
            metricsAddress = parsed
        }

        let http = try httpSettings(sources)
        let (glance, glanceHTTP) = try glanceSettings(sources, http: http)
        var configuration = WorkerConfiguration(
            transportURL: transportURL,
            controlExchange: controlExchange,
            host: host,
            queueOptions: queueOptions,
            heartbeatTimeoutThreshold: try sources.integer(O.heartbeat),
            tls: tls,
            notificationTopics: notificationTopics,
            fileURLAllowedPaths: allowedPaths,
            allowMD5Checksum: try sources.bool(O.allowMD5),
            checksumFilesDisabled: try sources.bool(O.checksumFilesDisabled),
            formatPolicy: try formatPolicy(sources),
            conversion: ConversionSettings(forceRaw: try sources.bool(O.forceRawImages), memoryLimitMiB: try sources.integer(O.convertMemoryLimit),
                                           attempts: try sources.integer(O.convertAttempts), maxImageSize: Int64(try sources.integer(O.maxImageSize))),
            decompression: DecompressionSettings(enabled: try sources.bool(O.decompressImages), zstd: !(try sources.bool(O.zstdDecompressionDisabled)),
                                                 maxImageSize: Int64(try sources.integer(O.maxImageSize))),
            http: http,
            requireHTTPChecksum: try sources.bool(O.requireHTTPChecksum),
            glance: glance,
            glanceHTTP: glanceHTTP,
            cache: cache,
            stateDirectory: stateDirectory,
            imagesDirectory: imagesDirectory,
            imageFileMode: imageFileMode,
            topic: topic,
            maxConcurrentDownloads: try sources.integer(O.maxConcurrentDownloads),
            progressInterval: .milliseconds(Int64(try sources.number(O.progressInterval) * 1000)),
            gracefulShutdownTimeout: .seconds(try sources.integer(O.gracefulShutdownTimeout)),
            logLevel: logLevel,
            logFormat: logFormat,
            deadLetterExchange: deadLetterExchange,
            maxTaskAttempts: try sources.integer(O.maxTaskAttempts),
            journalSize: try sources.integer(O.journalSize),
            metricsAddress: metricsAddress)
        configuration.secretFiles = [sources.optionalString(O.netrcFile), http.clientKeyFile, glanceHTTP.clientKeyFile, tls?.keyFile].compactMap { $0 }
        return configuration
    }

    /// The AMQP connection settings this configuration implies.
    /// The heartbeat is half of `heartbeat_timeout_threshold`: librabbitmq gives a broker up after
    /// two silent heartbeat intervals, and the threshold is the silence after which the broker is
    /// considered down (a frozen node is then left within it, not after twice it).
    public var amqpConfiguration: AMQPConfiguration {
        let heartbeat = heartbeatTimeoutThreshold == 0 ? 0 : max(1, (heartbeatTimeoutThreshold + 1) / 2)
        return AMQPConfiguration(endpoints: transportURL.endpoints, tls: tls ?? AMQPTLSConfiguration(), heartbeatSeconds: heartbeat,
                          connectionName: "image-worker:\(host):\(ProcessIdentity.current)")
    }

    /// The queues this worker declares and consumes, as an oslo RPC server for `topic` would.
    public func rpcTopology() -> RPCServerTopology {
        RPCServerTopology(exchange: controlExchange, topic: topic, server: host, options: queueOptions)
    }

    /// `[conductor] permitted_image_formats` (names the inspector knows) and
    /// `disable_deep_image_inspection`.
    static func formatPolicy(_ sources: ConfigurationSources) throws(ConfigurationError) -> FormatPolicy {
        let permitted = sources.list(WorkerOptions.permittedImageFormats).map { $0.lowercased() }
        for name in permitted where DiskFormat(rawValue: name) == nil {
            throw ConfigurationError(WorkerOptions.permittedImageFormats, "'\(name)' is not a format the inspector knows (\(DiskFormat.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return FormatPolicy(permittedFormats: Set(permitted), inspectionDisabled: try sources.bool(WorkerOptions.deepInspectionDisabled))
    }

    /// What the fetcher does to a verified disk image before it is placed (contract §3.3).
    public var transformStages: [any ImageTransformStage] {
        // Conversion needs the inspection's verdict: without inspection nothing is converted
        // (qemu-img never reads an image the inspector has not approved).
        [DecompressionStage(settings: decompression), FormatInspectionStage(policy: formatPolicy), ImageConversionStage(settings: conversion)]
    }

    /// The checksum rules for the fetcher.
    public var checksumPolicy: ChecksumPolicy {
        ChecksumPolicy(allowMD5: allowMD5Checksum, requireChecksums: requireHTTPChecksum, checksumFilesDisabled: checksumFilesDisabled)
    }

    /// The `publisher_id` of events: `image-worker.<host>`.
    public var publisherID: String { "image-worker.\(host)" }

    /// An absolute, normalised path option (`default` for a computed default).
    private static func absolutePath(_ sources: ConfigurationSources, _ option: ConfigurationOption, default fallback: String? = nil) throws(ConfigurationError) -> String {
        let path = sources.string(option, default: fallback)
        guard path.hasPrefix("/"), FilePathNormalisation.isNormalised(path) else {
            throw ConfigurationError(option, "'\(path)' is not an absolute path without '.' or '..'")
        }
        return path
    }

    /// A queue or exchange name part must be a routing-key word: no blanks, no wildcards.
    private static func routingWord(_ value: String, _ option: ConfigurationOption) throws(ConfigurationError) -> String {
        let allowed = value.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-:@".unicodeScalars.contains($0)) }
        guard !value.isEmpty, value.utf8.count <= 200, allowed else {
            throw ConfigurationError(option, "'\(value)' must be 1 to 200 characters of letters, digits and . _ - : @")
        }
        return value
    }
}
