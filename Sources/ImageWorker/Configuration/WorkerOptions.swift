import ImageServices

/// Every option the worker reads (contract §8), in the order the README lists them. Names follow
/// Ironic's and oslo's where they exist, so an existing ironic.conf can be pointed at as it is.
public enum WorkerOptions {
    // MARK: [DEFAULT]

    public static let transportURL = ConfigurationOption(
        "DEFAULT", "transport_url", .url, default: "rabbit://guest:guest@localhost:5672/", secret: true,
        help: "oslo syntax: several `user:pass@host:port` comma-separated for fail-over, percent-encoded parts, `/vhost`, `?ssl=1` and other `[oslo_messaging_rabbit]` options in the query")
    public static let controlExchange = ConfigurationOption("DEFAULT", "control_exchange", .text, default: "ironic", help: "the topic exchange of requests and events")
    public static let host = ConfigurationOption(
        "DEFAULT", "host", .text, defaultDescription: "the machine's FQDN", help: "names this worker's own queue `<topic>.<host>`")

    // MARK: [oslo_messaging_rabbit]

    public static let durableQueues = ConfigurationOption(
        "oslo_messaging_rabbit", "amqp_durable_queues", .boolean, default: "false", help: "durable exchange and queues; must match the conductors' (the broker refuses mismatched declarations)")
    public static let autoDelete = ConfigurationOption(
        "oslo_messaging_rabbit", "amqp_auto_delete", .boolean, default: "false", help: "auto-delete queues, as oslo's option")
    public static let quorumQueues = ConfigurationOption(
        "oslo_messaging_rabbit", "rabbit_quorum_queue", .boolean, default: "false", help: "quorum queues (durable); must match the conductors'")
    public static let quorumDeliveryLimit = ConfigurationOption(
        "oslo_messaging_rabbit", "rabbit_quorum_delivery_limit", .integer(0...Int(Int32.max)), default: "0", help: "`x-delivery-limit` of quorum queues; 0 leaves it unset")
    public static let heartbeat = ConfigurationOption(
        "oslo_messaging_rabbit", "heartbeat_timeout_threshold", .integer(0...3600), default: "60", help: "seconds of silence after which a broker is considered down (heartbeats every half of it); 0 turns heartbeats off")
    public static let ssl = ConfigurationOption("oslo_messaging_rabbit", "ssl", .boolean, default: "false", help: "TLS to the broker; certificates are verified")
    public static let sslCAFile = ConfigurationOption("oslo_messaging_rabbit", "ssl_ca_file", .text, help: "CA file to verify the broker with")
    public static let sslCertFile = ConfigurationOption("oslo_messaging_rabbit", "ssl_cert_file", .text, help: "client certificate for the broker")
    public static let sslKeyFile = ConfigurationOption("oslo_messaging_rabbit", "ssl_key_file", .text, secret: true, help: "its key")

    // MARK: [oslo_messaging_notifications]

    public static let notificationTopics = ConfigurationOption(
        "oslo_messaging_notifications", "topics", .list, default: "ironic_versioned_notifications", help: "where events go: `<topic>.info`, `<topic>.error`")

    // MARK: [conductor], [agent]

    public static let fileURLAllowedPaths = ConfigurationOption(
        "conductor", "file_url_allowed_paths", .list, default: "/var/lib/ironic", help: "absolute paths `file://` images may come from; empty turns `file://` off")
    public static let checksumFilesDisabled = ConfigurationOption(
        "conductor", "disable_support_for_checksum_files", .boolean, default: "false", help: "refuse checksum-file URLs in `image_checksum`")
    public static let allowMD5 = ConfigurationOption("agent", "allow_md5_checksum", .boolean, default: "true", help: "accept md5 checksums")
    public static let permittedImageFormats = ConfigurationOption(
        "conductor", "permitted_image_formats", .list, default: "raw, gpt, qcow2, iso",
        help: "formats a disk image may have, as inspected (`raw` permits `gpt`); others are `ImageUnacceptable`")
    public static let forceRawImages = ConfigurationOption(
        "DEFAULT", "force_raw_images", .boolean, default: "true", help: "convert inspected qcow2, vmdk, vhd, vhdx and vdi images to raw with `qemu-img`")
    public static let convertMemoryLimit = ConfigurationOption(
        "disk_utils", "image_convert_memory_limit", .integer(64...1_048_576), default: "2048", help: "MiB of address space `qemu-img convert` may use")
    public static let convertAttempts = ConfigurationOption(
        "disk_utils", "image_convert_attempts", .integer(1...20), default: "3", help: "tries of one conversion")
    public static let decompressImages = ConfigurationOption(
        "image_worker", "decompress_images", .boolean, default: "true",
        help: "decompress disk images that arrive zstd, gzip, xz or bzip2 compressed (known by their magic)")
    public static let zstdDecompressionDisabled = ConfigurationOption(
        "conductor", "disable_zstandard_decompression", .boolean, default: "false", help: "leave zstd-compressed disk images as they are")
    public static let maxImageSize = ConfigurationOption(
        "image_worker", "max_image_size", .integer(0...Int.max), default: "0",
        help: "bytes a disk image may have once decompressed, and virtual bytes once converted (0: no limit but the free space); past it `ImageUnacceptable`")
    public static let deepInspectionDisabled = ConfigurationOption(
        "conductor", "disable_deep_image_inspection", .boolean, default: "false",
        help: "do not inspect disk images' formats (nor check them against the declared format)")

    // MARK: Image servers

    public static let verifyCA = ConfigurationOption(
        "DEFAULT", "webserver_verify_ca", .text, default: "True", help: "image servers' TLS: `True`, `False` or a CA file")
    public static let connectionTimeout = ConfigurationOption(
        "DEFAULT", "webserver_connection_timeout", .integer(1...3600), default: "60",
        help: "seconds to connect (and, unless set apart, of silence before a download counts as stalled)")
    public static let adminBypass = ConfigurationOption(
        "DEFAULT", "ignore_project_check_for_admin_tasks", .boolean, default: "True", help: "an admin caller sees every Glance image")
    public static let accessViaAuthToken = ConfigurationOption(
        "DEFAULT", "allow_image_access_via_auth_token", .boolean, default: "False", help: "a caller's token is enough to see a Glance image")
    public static let imageServerAuthStrategy = ConfigurationOption(
        "deploy", "image_server_auth_strategy", .choice(["noauth", "http_basic"]), default: "noauth", help: "`http_basic`: one user and password for every image server")
    public static let imageServerUser = ConfigurationOption("deploy", "image_server_user", .text, help: "with `http_basic`")
    public static let imageServerPassword = ConfigurationOption("deploy", "image_server_password", .text, secret: true, help: "with `http_basic`")

    // MARK: [glance]

    public static let glanceEndpoint = ConfigurationOption("glance", "endpoint_override", .url, help: "Glance's URL (else from the Keystone catalog)")
    public static let glanceAuthType = ConfigurationOption(
        "glance", "auth_type", .choice(["none", "noauth", "token", "admin_token", "password", "v3password"]), default: "none",
        help: "`none`, `token` (with `token`), or `password` (with the Keystone options below)")
    public static let glanceToken = ConfigurationOption("glance", "token", .text, secret: true, help: "the token of `auth_type = token`")
    public static let glanceAuthURL = ConfigurationOption("glance", "auth_url", .url, help: "Keystone's URL, for `auth_type = password`")
    public static let glanceUsername = ConfigurationOption("glance", "username", .text, help: "for `auth_type = password`")
    public static let glancePassword = ConfigurationOption("glance", "password", .text, secret: true, help: "for `auth_type = password`")
    public static let glanceUserDomain = ConfigurationOption("glance", "user_domain_name", .text, default: "Default", help: "the user's domain")
    public static let glanceProjectName = ConfigurationOption("glance", "project_name", .text, help: "the worker's project, by name (or `project_id`)")
    public static let glanceProjectID = ConfigurationOption(
        "glance", "project_id", .text, help: "the worker's project: for Keystone, and for private and shared images when not from Keystone")
    public static let glanceProjectDomain = ConfigurationOption("glance", "project_domain_name", .text, default: "Default", help: "the project's domain")
    public static let glanceRegion = ConfigurationOption("glance", "region_name", .text, help: "the catalog's region for Glance's endpoint")
    public static let glanceInterface = ConfigurationOption("glance", "interface", .text, default: "public", help: "the catalog's interface for Glance's endpoint")
    public static let glanceValidInterfaces = ConfigurationOption("glance", "valid_interfaces", .list, defaultDescription: "`interface`", help: "the first one is used")
    public static let glanceRetries = ConfigurationOption("glance", "num_retries", .integer(0...100), default: "0", help: "retries of Glance requests on 5xx and connection errors")
    public static let glanceCAFile = ConfigurationOption("glance", "cafile", .text, help: "CA file for Glance and Keystone")
    public static let glanceInsecure = ConfigurationOption("glance", "insecure", .boolean, default: "false", help: "do not verify Glance's and Keystone's certificates")
    public static let glanceCertFile = ConfigurationOption("glance", "certfile", .text, help: "client certificate for Glance and Keystone")
    public static let glanceKeyFile = ConfigurationOption("glance", "keyfile", .text, secret: true, help: "its key")

    // MARK: [pxe]

    public static let masterPath = ConfigurationOption(
        "pxe", "instance_master_path", .text, defaultDescription: "`<state_dir>/master_images`", help: "the image cache; empty turns it off")
    public static let cacheSize = ConfigurationOption("pxe", "image_cache_size", .integer(0...Int(Int32.max)), default: "20480", help: "MiB")
    public static let cacheTTL = ConfigurationOption("pxe", "image_cache_ttl", .integer(0...Int(Int32.max)), default: "10080", help: "minutes an unused master is kept")

    // MARK: [image_worker]

    /// The section of the worker's own options.
    public static let section = "image_worker"

    public static let stateDirectory = ConfigurationOption(section, "state_dir", .text, default: "/var/lib/image-worker", help: "where the worker keeps its state")
    public static let imagesDirectory = ConfigurationOption(section, "images_dir", .text, defaultDescription: "`<state_dir>/images`", help: "node folders live under it")
    public static let imageFileMode = ConfigurationOption(
        section, "image_file_mode", .text, default: "0644",
        help: "octal permissions of the image files the worker writes, whatever the umask (a hard-linked `file://` image keeps its source's); 0644 lets a web server on the host serve them")
    public static let topic = ConfigurationOption(section, "topic", .text, default: "ironic.image_worker", help: "the queue conductors send requests to")
    public static let maxConcurrentDownloads = ConfigurationOption(
        section, "max_concurrent_downloads", .integer(1...1000), default: "20",
        help: "tasks run at once; the work queue's prefetch is this plus 1, the per-worker and fanout queues' 1 each")
    public static let maxConnectionsPerHost = ConfigurationOption(
        section, "max_connections_per_host", .integer(1...1000), defaultDescription: "`max_concurrent_downloads`",
        help: "requests in flight to one image server (scheme, host, port) at once; the rest wait their turn (`phase: queued` in progress events) and never fail for waiting: a request's timeouts, and a download's overall deadline, start when it gets its connection")
    public static let progressInterval = ConfigurationOption(section, "progress_interval", .number(0.1...3600), default: "5", help: "seconds between progress events of a task")
    public static let gracefulShutdownTimeout = ConfigurationOption(
        section, "graceful_shutdown_timeout", .integer(0...86400), default: "60", help: "seconds running tasks get after SIGTERM")
    public static let logLevel = ConfigurationOption(
        section, "log_level", .choice(["trace", "debug", "info", "notice", "warning", "warn", "error", "critical"]), default: "info", help: "the least important records written")
    public static let logFormat = ConfigurationOption(
        section, "log_format", .choice(["text", "json"]), default: "text", help: "`json`: one JSON object per line, with `request_id`, `node_uuid`, `task_id`")
    public static let metricsAddress = ConfigurationOption(
        section, "metrics_address", .text, default: "", defaultDescription: "empty (off)", help: "`host:port` of `/metrics`, `/healthz`, `/readyz` (see [Operations](#operations))")
    public static let deadLetterExchange = ConfigurationOption(
        section, "dead_letter_exchange", .text, defaultDescription: "empty (none)", help: "where malformed and given-up requests are copied")
    public static let maxTaskAttempts = ConfigurationOption(
        section, "max_task_attempts", .integer(1...1000), default: "5",
        help: "runs of one request that never finished (the worker died) before it is given up on (and on a quorum queue's last delivery)")
    public static let journalSize = ConfigurationOption(
        section, "journal_size", .integer(100...10_000_000), default: "10000", help: "outcomes kept in `<state_dir>/journal` to answer duplicates")
    public static let requireHTTPChecksum = ConfigurationOption(
        section, "require_http_checksum", .boolean, default: "true", help: "an image of a service that needs a checksum (http) is refused without one")
    public static let downloadRetries = ConfigurationOption(section, "download_retries", .integer(0...100), default: "3", help: "retries of a download after a transient failure")
    public static let downloadStallTimeout = ConfigurationOption(
        section, "download_stall_timeout", .integer(1...3600), defaultDescription: "`webserver_connection_timeout`", help: "seconds without a byte before a download counts as stalled")
    public static let downloadTimeout = ConfigurationOption(section, "download_timeout", .integer(10...(7 * 86400)), default: "21600", help: "seconds a whole download may take")
    public static let netrcFile = ConfigurationOption(
        section, "netrc_file", .text, help: "per-host credentials for image servers (`machine HOST login USER password PASS`)")
    public static let clientCertFile = ConfigurationOption(section, "http_client_cert_file", .text, help: "a client certificate for image servers that ask for one")
    public static let clientKeyFile = ConfigurationOption(section, "http_client_key_file", .text, secret: true, help: "its key")
    public static let httpProxy = ConfigurationOption(
        section, "http_proxy", .url, defaultDescription: "the environment's", secret: true,
        help: "proxy for http image servers, through a `CONNECT` tunnel (async-http-client's way): the proxy must allow `CONNECT` to their ports")
    public static let httpsProxy = ConfigurationOption(section, "https_proxy", .url, defaultDescription: "the environment's", secret: true, help: "proxy for https image servers")
    public static let noProxy = ConfigurationOption(section, "no_proxy", .list, defaultDescription: "the environment's", help: "hosts reached without a proxy")
    public static let disallowedNetworks = ConfigurationOption(
        section, "disallowed_networks", .list, default: EgressPolicy.defaultDisallowedNetworks.joined(separator: ", "),
        help: "CIDRs image downloads never connect to (every redirect hop and every address of a name checked; see [Safety](#safety)); set it empty to refuse none")
    public static let allowedNetworks = ConfigurationOption(
        section, "allowed_networks", .list, defaultDescription: "empty (any)", help: "when set, the only CIDRs image downloads may connect to")
    public static let disallowedPorts = ConfigurationOption(
        section, "disallowed_ports", .list, defaultDescription: "empty (none)", help: "ports (`N` or `N-M`) image downloads never connect to")
    public static let allowedPorts = ConfigurationOption(
        section, "allowed_ports", .list, defaultDescription: "empty (any)", help: "when set, the only ports (`N` or `N-M`) image downloads may connect to")

    /// Every option, in the README's order.
    public static let all: [ConfigurationOption] = [
        transportURL, controlExchange, host,
        durableQueues, autoDelete, quorumQueues, quorumDeliveryLimit, heartbeat, ssl, sslCAFile, sslCertFile, sslKeyFile,
        notificationTopics,
        fileURLAllowedPaths, checksumFilesDisabled, allowMD5, permittedImageFormats, deepInspectionDisabled,
        decompressImages, zstdDecompressionDisabled, maxImageSize, forceRawImages, convertMemoryLimit, convertAttempts,
        verifyCA, connectionTimeout, adminBypass, accessViaAuthToken, imageServerAuthStrategy, imageServerUser, imageServerPassword,
        glanceEndpoint, glanceAuthType, glanceToken, glanceAuthURL, glanceUsername, glancePassword, glanceUserDomain, glanceProjectName,
        glanceProjectID, glanceProjectDomain, glanceRegion, glanceInterface, glanceValidInterfaces, glanceRetries, glanceCAFile,
        glanceInsecure, glanceCertFile, glanceKeyFile,
        masterPath, cacheSize, cacheTTL,
        stateDirectory, imagesDirectory, imageFileMode, topic, maxConcurrentDownloads, maxConnectionsPerHost, progressInterval, gracefulShutdownTimeout,
        logLevel, logFormat, metricsAddress, deadLetterExchange, maxTaskAttempts, journalSize, requireHTTPChecksum, downloadRetries,
        downloadStallTimeout, downloadTimeout, netrcFile, clientCertFile, clientKeyFile, httpProxy, httpsProxy, noProxy,
        disallowedNetworks, allowedNetworks, disallowedPorts, allowedPorts,
    ]

    /// The sections only the worker uses: an unknown option there is a mistake worth a warning.
    /// The others are shared with ironic.conf, whose other options are not the worker's business.
    public static let ownSections: Set<String> = [section]

    /// The option `[section] name`, if the worker knows it.
    public static func option(section: String, name: String) -> ConfigurationOption? {
        all.first { $0.section == section && $0.name == name }
    }

    /// The README's option table (markdown), generated from ``all``.
    public static func markdownTable() -> String {
        var lines = ["| section | option | default | |", "|---|---|---|---|"]
        var previousSection = ""
        for option in all {
            let section = option.section == previousSection ? "" : "`[\(option.section)]`"
            previousSection = option.section
            let defaultText = option.defaultValue.map { $0.isEmpty ? option.defaultDescription : "`\($0)`" } ?? option.defaultDescription
            lines.append("| \(section) | `\(option.name)` | \(defaultText) | \(option.help) |")
        }
        return lines.joined(separator: "\n")
    }
}
