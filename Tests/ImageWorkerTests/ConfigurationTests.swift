import AMQPModel
import ImageServices
import ImageFormats
import Testing
import TestSupport
@testable import ImageWorker
import OsloMessaging

@Suite("configuration")
struct ConfigurationTests {
    func load(_ text: String, environment: [String: String] = [:], overrides: [String] = []) throws -> WorkerConfiguration {
        let file = try INIFile(text: text, file: "test.conf")
        return try WorkerConfiguration.load(ConfigurationSources(files: [file], environment: environment,
                                                                 overrides: try overrides.map { try ConfigurationSources.parseOverride($0) }))
    }

    func reason(_ text: String, overrides: [String] = []) -> String {
        do {
            _ = try load(text, overrides: overrides)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test("INI: sections, comments, continuation lines and repeated options")
    func ini() throws {
        let file = try INIFile(text: """
            # comment
            [DEFAULT]
            host = a
            ; another comment
            host: b
            [conductor]
            file_url_allowed_paths = /a,
               /b
            """, file: "f")
        #expect(file.values(section: "DEFAULT", name: "host") == ["a", "b"])
        #expect(file.values(section: "conductor", name: "file_url_allowed_paths") == ["/a,\n/b"])
    }

    @Test("INI errors name the file and line", arguments: [
        ("host = a", "f:1: an option comes before any [section]"),
        ("[DEFAULT]\njust words", "f:2: expected 'name = value'"),
        ("[DEFAULT\nx = 1", "f:1: a section header must look like [name]"),
        ("  indented = 1", "f:1: an indented line continues nothing"),
    ])
    func iniErrors(text: String, expected: String) {
        #expect { _ = try INIFile(text: text, file: "f") } throws: { "\($0)" == expected }
    }

    @Test("permitted image formats: Ironic's default (raw permits gpt), a list of names the inspector knows, inspection can be turned off")
    func formatPolicy() throws {
        let defaults = try load("[DEFAULT]\nhost = w1\n").formatPolicy
        #expect(defaults.permittedFormats == ["raw", "gpt", "qcow2", "iso"] && !defaults.inspectionDisabled)
        #expect(defaults.permits(.gpt) && defaults.permits(.qcow2) && !defaults.permits(.vhd) && !defaults.permits(.qed))
        let narrow = try load("[DEFAULT]\nhost = w1\n[conductor]\npermitted_image_formats = RAW\ndisable_deep_image_inspection = true\n").formatPolicy
        #expect(narrow.permittedFormats == ["raw"] && narrow.permits(.gpt) && !narrow.permits(.qcow2) && narrow.inspectionDisabled)
        #expect { _ = try load("[DEFAULT]\nhost = w1\n[conductor]\npermitted_image_formats = raw, vhdx2\n") } throws: {
            "\($0)".contains("'vhdx2' is not a format the inspector knows")
        }
    }

    @Test("defaults are Ironic's and oslo's")
    func defaults() throws {
        let configuration = try load("[DEFAULT]\nhost = w1\n")
        #expect(configuration.controlExchange == "ironic")
        #expect(configuration.topic == "ironic.image_worker")
        #expect(configuration.notificationTopics == ["ironic_versioned_notifications"])
        #expect(configuration.fileURLAllowedPaths == ["/var/lib/ironic"])
        #expect(configuration.maxConcurrentDownloads == 20)
        #expect(configuration.heartbeatTimeoutThreshold == 60)
        #expect(configuration.amqpConfiguration.heartbeatSeconds == 30, "two silent heartbeats are the threshold")
        #expect(try load("[DEFAULT]\nhost = w1\n[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 3\n").amqpConfiguration.heartbeatSeconds == 2)
        #expect(try load("[DEFAULT]\nhost = w1\n[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 0\n").amqpConfiguration.heartbeatSeconds == 0)
        #expect(configuration.queueOptions == .init())
        #expect(configuration.allowMD5Checksum)
        #expect(configuration.publisherID == "image-worker.w1")
        #expect(configuration.transportURL.endpoints == [AMQPEndpoint(host: "localhost")])
        #expect(configuration.metricsAddress == nil, "off unless asked for, so several workers can share a host")
        #expect(configuration.deadLetterExchange == nil)
        #expect(configuration.maxTaskAttempts == 5)
        #expect(configuration.journalSize == 10_000)
        #expect(configuration.logFormat == .text)
    }

    @Test("operations options: metrics address, dead-letter exchange, attempts apart from the quorum delivery limit")
    func operationsOptions() throws {
        let configuration = try load("""
            [DEFAULT]
            host = w1
            [oslo_messaging_rabbit]
            rabbit_quorum_queue = true
            rabbit_quorum_delivery_limit = 3
            [image_worker]
            metrics_address = [::1]:9464
            dead_letter_exchange = ironic.image_worker.dead_letter
            log_format = JSON
            """)
        #expect(configuration.metricsAddress == MetricsAddress(host: "::1", port: 9464))
        #expect(configuration.metricsAddress?.description == "[::1]:9464")
        #expect(configuration.deadLetterExchange == "ironic.image_worker.dead_letter")
        #expect(configuration.maxTaskAttempts == 5, "runs that died, counted by the worker, not the broker's returns")
        #expect(configuration.workQueueDeliveryLimit == 3, "the worker gives up on the broker's last delivery")
        #expect(try load("[DEFAULT]\nhost = w\n[oslo_messaging_rabbit]\nrabbit_quorum_delivery_limit = 3").workQueueDeliveryLimit == nil,
                "a limit only quorum queues have")
        #expect(configuration.logFormat == .json)
        #expect(try load("[DEFAULT]\nhost = w\n[image_worker]\nmetrics_address = 0.0.0.0:0\nmax_task_attempts = 9").maxTaskAttempts == 9)
    }

    @Test("an existing ironic.conf is read as it is: unknown sections and options are ignored")
    func unknownOptionsIgnored() throws {
        let configuration = try load("""
            [DEFAULT]
            transport_url = rabbit://u:p@broker:5673/ironic
            enabled_hardware_types = ipmi
            host = conductor-1
            [database]
            connection = mysql+pymysql://x
            [oslo_messaging_rabbit]
            amqp_durable_queues = true
            rabbit_quorum_queue = True
            rabbit_quorum_delivery_limit = 5
            """)
        #expect(configuration.host == "conductor-1")
        #expect(configuration.queueOptions.durable)
        #expect(configuration.queueOptions.quorumDeliveryLimit == 5)
        #expect(configuration.transportURL.endpoints.first?.virtualHost == "ironic")
    }

    @Test("precedence: later files, then OS_<SECTION>__<OPTION>, then overrides")
    func precedence() throws {
        let first = try INIFile(text: "[image_worker]\ntopic = one\nmax_concurrent_downloads = 3\nprogress_interval = 2", file: "a")
        let second = try INIFile(text: "[image_worker]\ntopic = two\n[DEFAULT]\nhost = h", file: "b")
        let sources = ConfigurationSources(files: [first, second], environment: ["OS_IMAGE_WORKER__MAX_CONCURRENT_DOWNLOADS": "7"],
                                           overrides: [try ConfigurationSources.parseOverride("image_worker.progress_interval=0.5")])
        let configuration = try WorkerConfiguration.load(sources)
        #expect(configuration.topic == "two")
        #expect(configuration.maxConcurrentDownloads == 7)
        #expect(configuration.progressInterval == .milliseconds(500))
    }

    @Test("the transport URL's query overrides the rabbit options, as in oslo")
    func urlQueryOptions() throws {
        let configuration = try load("[DEFAULT]\nhost = h\ntransport_url = rabbit://u:p@b:5672/?amqp_durable_queues=true\n[oslo_messaging_rabbit]\namqp_durable_queues = false")
        #expect(configuration.queueOptions.durableQueues)
    }

    @Test("ssl in [oslo_messaging_rabbit] or ?ssl=1 in the URL puts every endpoint on TLS")
    func tls() throws {
        let fromOption = try load("[DEFAULT]\nhost = h\ntransport_url = rabbit://u:p@a:5671,u:p@b:5671/\n[oslo_messaging_rabbit]\nssl = true")
        #expect(fromOption.transportURL.endpoints.allSatisfy { $0.useTLS })
        #expect(fromOption.tls != nil)
        let fromQuery = try load("[DEFAULT]\nhost = h\ntransport_url = rabbit://u:p@a:5671/?ssl=1")
        #expect(fromQuery.amqpConfiguration.endpoints.allSatisfy { $0.useTLS })
        let plain = try load("[DEFAULT]\nhost = h\ntransport_url = rabbit://u:p@a:5672/")
        #expect(plain.tls == nil)
        #expect(plain.transportURL.endpoints.allSatisfy { !$0.useTLS })
    }

    @Test("a bad value is refused with the section, the option and the problem", arguments: [
        ("[DEFAULT]\ntransport_url = http://x", "[DEFAULT] transport_url: transport_url scheme 'http' is not supported"),
        ("[oslo_messaging_rabbit]\namqp_durable_queues = maybe", "[oslo_messaging_rabbit] amqp_durable_queues: 'maybe' is not a boolean"),
        ("[image_worker]\nmax_concurrent_downloads = 0", "[image_worker] max_concurrent_downloads: 0 is outside 1...1000"),
        ("[image_worker]\nmax_concurrent_downloads = lots", "[image_worker] max_concurrent_downloads: 'lots' is not an integer"),
        ("[image_worker]\nimages_dir = relative/dir", "[image_worker] images_dir: 'relative/dir' is not an absolute path"),
        ("[conductor]\nfile_url_allowed_paths = /srv/../etc", "[conductor] file_url_allowed_paths: '/srv/../etc' is not an absolute path"),
        ("[DEFAULT]\nhost = bad host", "[DEFAULT] host: 'bad host' must be"),
        ("[image_worker]\ntopic = a*b", "[image_worker] topic: 'a*b' must be"),
        ("[oslo_messaging_rabbit]\nssl = true\nssl_ca_file = /nonexistent/ca.pem", "[oslo_messaging_rabbit] ssl_ca_file: '/nonexistent/ca.pem' cannot be read"),
        ("[image_worker]\nlog_level = loud", "[image_worker] log_level: 'loud' is not one of"),
        ("[image_worker]\nprogress_interval = 0", "[image_worker] progress_interval: 0.0 is outside"),
        ("[image_worker]\nmetrics_address = 9464", "[image_worker] metrics_address: '9464' is not host:port"),
        ("[image_worker]\nmetrics_address = host:99999", "[image_worker] metrics_address: 'host:99999' is not host:port"),
        ("[image_worker]\nlog_format = xml", "[image_worker] log_format: 'xml' is neither text nor json"),
        ("[image_worker]\ndead_letter_exchange = a b", "[image_worker] dead_letter_exchange: 'a b' must be"),
        ("[image_worker]\nmax_task_attempts = 0", "[image_worker] max_task_attempts: 0 is outside"),
        ("[image_worker]\nimage_file_mode = 644", "[image_worker] image_file_mode: '644' is not an octal file mode"),
        ("[image_worker]\nimage_file_mode = 01777", "[image_worker] image_file_mode: '01777' is not an octal file mode"),
        ("[image_worker]\nimage_file_mode = 0689", "[image_worker] image_file_mode: '0689' is not an octal file mode"),
        ("[image_worker]\nimage_file_mode = 0044", "[image_worker] image_file_mode: '0044' must let the worker's user read and write"),
        ("[image_worker]\ndisallowed_networks = 10.0.0.0/33", "[image_worker] disallowed_networks: '10.0.0.0/33' is not an IP network"),
        ("[image_worker]\nallowed_networks = example.com", "[image_worker] allowed_networks: 'example.com' is not an IP network"),
        ("[image_worker]\nallowed_ports = 0", "[image_worker] allowed_ports: '0' is not a port"),
        ("[image_worker]\ndisallowed_ports = 9000-80", "[image_worker] disallowed_ports: '9000-80' is not a port"),
    ])
    func refused(text: String, expected: String) {
        #expect(reason("[DEFAULT]\nhost = h\n" + text).hasPrefix(expected))
    }

    @Test("the egress policy: the contract's default, lists of networks and port ranges, empty allow lists meaning any")
    func egress() throws {
        let defaults = try #require(try load("[DEFAULT]\nhost = h").http.egress)
        #expect(defaults.disallowedNetworks.map(\.description) == EgressPolicy.defaultDisallowedNetworks)
        #expect(defaults.allowedNetworks == nil && defaults.allowedPorts == nil && defaults.disallowedPorts.isEmpty)
        let configured = try #require(try load("""
            [DEFAULT]
            host = h
            [image_worker]
            disallowed_networks =
            allowed_networks = 10.0.0.0/8, 2001:db8::/32
            allowed_ports = 80, 443, 8000-8002
            disallowed_ports = 8001
            """).http.egress)
        #expect(configured.disallowedNetworks.isEmpty)
        #expect(configured.allowedNetworks?.map(\.description) == ["10.0.0.0/8", "2001:db8::/32"])
        #expect(configured.allowedPorts == [80, 443, 8000, 8001, 8002])
        #expect(configured.disallowedPorts == [8001])
        #expect(try load("[DEFAULT]\nhost = h").glanceHTTP.egress == nil, "Glance and Keystone are the operator's endpoints")
    }

    @Test("image_file_mode: octal, 0644 by default, passed to the cache")
    func imageFileMode() throws {
        #expect(try load("[DEFAULT]\nhost = h").imageFileMode == 0o644)
        let configured = try load("[DEFAULT]\nhost = h\n[image_worker]\nimage_file_mode = 0640")
        #expect(configured.imageFileMode == 0o640)
        #expect(configured.cache?.imageFileMode == 0o640)
    }

    @Test("the worker's own files, closed to file://: images, state_dir, the master cache when there is one, credential files")
    func workerFolders() throws {
        let configuration = try load("[DEFAULT]\nhost = h\n[image_worker]\nstate_dir = /srv/iw\n[pxe]\ninstance_master_path = /var/lib/ironic/master_images")
        #expect(configuration.workerFolders == ["/srv/iw/images", "/srv/iw", "/var/lib/ironic/master_images"])
        let noCache = try load("[DEFAULT]\nhost = h\n[image_worker]\nstate_dir = /srv/iw\nimages_dir = /data/nodes\n[pxe]\ninstance_master_path =")
        #expect(noCache.workerFolders == ["/data/nodes", "/srv/iw"])
        let netrc = try TemporaryDirectory(prefix: "netrc")
        defer { netrc.remove() }
        let file = try netrc.write(Array("machine h login u password p\n".utf8), to: "netrc")
        let withSecrets = try load("[DEFAULT]\nhost = h\n[image_worker]\nstate_dir = /srv/iw\nnetrc_file = \(file)\n[pxe]\ninstance_master_path =")
        #expect(withSecrets.workerFolders == ["/srv/iw/images", "/srv/iw", file], "credential files are closed too")
    }

    @Test("overrides must look like section.option=value")
    func badOverride() {
        #expect(throws: ConfigurationError.self) { _ = try ConfigurationSources.parseOverride("nodot=1") }
        #expect(throws: ConfigurationError.self) { _ = try ConfigurationSources.parseOverride("section.option") }
        let parsed = try? ConfigurationSources.parseOverride("DEFAULT.transport_url=rabbit://a=b@h/")
        #expect(parsed?.section == "DEFAULT")
        #expect(parsed?.name == "transport_url")
        #expect(parsed?.value == "rabbit://a=b@h/")
    }

    @Test("the RPC topology follows the options")
    func topology() throws {
        let configuration = try load("[DEFAULT]\nhost = w1\ncontrol_exchange = ex\n[oslo_messaging_rabbit]\nrabbit_quorum_queue = true")
        let topology = configuration.rpcTopology()
        #expect(topology.exchange == "ex")
        #expect(topology.serverQueueName == "ironic.image_worker.w1")
        #expect(topology.queues[0].durable)
        #expect(topology.queues[0].arguments == ["x-queue-type": .longString("quorum")])
        #expect(topology.queues[2].arguments == ["x-expires": .int32(1_800_000)])
        #expect(topology.queues[2].durable == false)
        #expect(topology.exchanges[1] == AMQPExchangeDeclaration(name: "ironic.image_worker_fanout", type: .fanout, durable: false, autoDelete: true))
    }
}
