import AMQP
import ImageServices
import Logging
import OsloMessaging
import ServiceLifecycle

/// The worker, assembled from its configuration: the image services by scheme, the node folders,
/// the broker transport, the RPC server and its endpoint. ``services`` go into a `ServiceGroup`.
public struct ImageWorkerApplication: Sendable {
    public let configuration: WorkerConfiguration
    public let transport: AMQPOsloTransport
    public let server: RPCServer
    public let store: NodeImageStore

    /// Builds the worker; opens (creating if needed) `images_dir` and removes staging files a
    /// killed process left behind.
    public init(configuration: WorkerConfiguration, registry: ImageServiceRegistry? = nil, logger: Logger) throws {
        self.configuration = configuration
        store = try NodeImageStore(path: configuration.imagesDirectory)
        let leftovers = try store.removeLeftoverStagingFiles()
        if leftovers > 0 { logger.notice("removed staging files left by an earlier process", metadata: ["count": "\(leftovers)"]) }
        // A small look-ahead on the work queue, so a slot freed is filled without a round trip.
        let prefetch = UInt16(clamping: configuration.maxConcurrentDownloads + 1)
        transport = AMQPOsloTransport(configuration: configuration.amqpConfiguration, topology: configuration.rpcTopology(),
                                      notificationTopics: configuration.notificationTopics, prefetch: prefetch, logger: logger)
        let fetcher = ImageFetcher(registry: registry ?? Self.defaultRegistry(configuration), store: store,
                                   allowMD5Checksum: configuration.allowMD5Checksum)
        let endpoint = WorkerEndpoint(fetcher: fetcher, events: ImageEventPublisher(transport: transport, publisherID: configuration.publisherID),
                                      progressInterval: configuration.progressInterval, logger: logger)
        server = RPCServer(transport: transport, endpoint: endpoint,
                           configuration: RPCServer.Configuration(maximumConcurrentRequests: configuration.maxConcurrentDownloads,
                                                                  gracefulShutdownTimeout: configuration.gracefulShutdownTimeout),
                           logger: logger)
    }

    /// The image services this build carries, by scheme.
    public static func defaultRegistry(_ configuration: WorkerConfiguration) -> ImageServiceRegistry {
        var registry = ImageServiceRegistry()
        registry.register(FileImageService(policy: FilePathPolicy(allowedPaths: configuration.fileURLAllowedPaths)))
        return registry
    }

    /// The long-running parts, in start order (they stop in reverse: the server drains first,
    /// then the broker connections close).
    public var services: [any Service] {
        [TransportService(transport: transport), server]
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
