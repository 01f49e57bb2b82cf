import AMQPModel
import ImageServices
import ImageWorker
import OsloAMQP
import Logging
import OsloMessaging
import Prometheus
import ServiceLifecycle

/// The worker, assembled from its configuration: the image services by scheme, the node folders,
/// the broker transport, the RPC server and its endpoint. ``services`` go into a `ServiceGroup`.
public struct ImageWorkerApplication: Sendable {
    public let configuration: WorkerConfiguration
    public let transport: AMQPOsloTransport
    public let server: RPCServer
    public let store: NodeImageStore
    public let imageServices: ImageServicesBundle
    /// The `/metrics`, `/healthz`, `/readyz` endpoint, when `metrics_address` is set.
    public let monitoring: MonitoringServer?

    /// Builds the worker; opens (creating if needed) `images_dir` and removes staging files a
    /// killed process left behind. `metricsRegistry` is what `/metrics` serves (the registry
    /// behind the process's metrics factory, see ``WorkerMetrics/metricsFactory(registry:)``).
    public init(configuration: WorkerConfiguration, metricsRegistry: PrometheusCollectorRegistry? = nil, logger: Logger,
                onMonitoringListening: @escaping @Sendable (Int) async -> Void = { _ in }) throws {
        self.configuration = configuration
        imageServices = try ImageServicesBundle(configuration: configuration)
        store = try NodeImageStore(path: configuration.imagesDirectory, locksPath: configuration.nodeLocksDirectory)
        let leftovers = try store.removeLeftoverStagingFiles()
        if leftovers > 0 { logger.notice("removed staging files left by an earlier process", metadata: ["count": "\(leftovers)"]) }
        // A small look-ahead on the work queue, so a slot freed is filled without a round trip.
        let prefetch = UInt16(clamping: configuration.maxConcurrentDownloads + 1)
        let deadLetterQueue = configuration.deadLetterExchange.map { DeadLetterQueue(name: $0, quorum: configuration.queueOptions.quorumQueues) }
        var amqp = configuration.amqpConfiguration
        amqp.metricsPrefix = WorkerMetrics.prefix
        transport = AMQPOsloTransport(configuration: amqp, topology: configuration.rpcTopology(),
                                      notificationTopics: configuration.notificationTopics, prefetch: prefetch,
                                      deadLetterQueue: deadLetterQueue, logger: logger)
        let journal = try FileRequestJournal(path: configuration.stateDirectory + "/journal", capacity: configuration.journalSize, logger: logger)
        let cache = try configuration.cache.map { try MasterImageCache(settings: $0, logger: logger) }
        let fetcher = ImageFetcher(registry: imageServices.registry, checksums: configuration.checksumPolicy, cache: cache,
                                   transforms: configuration.transformStages, imageFileMode: configuration.imageFileMode)
        let endpoint = WorkerEndpoint(fetcher: fetcher, store: store, events: ImageEventPublisher(transport: transport, publisherID: configuration.publisherID),
                                      progressInterval: configuration.progressInterval, logger: logger)
        server = RPCServer(transport: transport, endpoint: endpoint, journal: journal,
                           configuration: RPCServer.Configuration(maximumConcurrentRequests: configuration.maxConcurrentDownloads,
                                                                  gracefulShutdownTimeout: configuration.gracefulShutdownTimeout,
                                                                  maximumAttempts: configuration.maxTaskAttempts,
                                                                  deliveryLimit: configuration.workQueueDeliveryLimit,
                                                                  metricsPrefix: WorkerMetrics.prefix),
                           logger: logger)
        if let address = configuration.metricsAddress {
            let transport = self.transport
            monitoring = MonitoringServer(address: address, registry: metricsRegistry ?? PrometheusCollectorRegistry(),
                                          readiness: { transport.readiness }, logger: logger, onListening: onMonitoringListening)
        } else {
            monitoring = nil
        }
    }


    /// The long-running parts, in start order (they stop in reverse: the server drains first,
    /// then the broker connections close, then the HTTP clients, and last the monitoring endpoint,
    /// which so reports the drain).
    public var services: [any Service] {
        (monitoring.map { [$0] } ?? []) + [imageServices, TransportService(transport: transport), server]
    }
}

/// Keeps the broker connections open for the life of the service group.
struct TransportService: Service {
    let transport: AMQPOsloTransport

    func run() async throws {
        transport.start()
        try? await gracefulShutdown()
        await transport.close()
    }
}
