import ImageServices
import ServiceLifecycle

/// The image services this build carries, by scheme, with the HTTP clients they share; a
/// `Service` so that the clients are shut down when the worker stops.
public struct ImageServicesBundle: Service {
    public let registry: ImageServiceRegistry
    private let transports: [HTTPTransport]

    /// Builds the services from the configuration (TLS files are read now).
    public init(configuration: WorkerConfiguration) throws {
        let web = try HTTPTransport(settings: configuration.http)
        let glance = try HTTPTransport(settings: configuration.glanceHTTP)
        var registry = ImageServiceRegistry()
        registry.register(FileImageService(policy: FilePathPolicy(allowedPaths: configuration.fileURLAllowedPaths,
                                                                  workerPaths: configuration.workerFolders)))
        registry.register(HTTPImageService(transport: web))
        registry.register(GlanceImageService(settings: configuration.glance, transport: glance))
        self.registry = registry
        transports = [web, glance]
    }

    public func run() async throws {
        try? await gracefulShutdown()
        await shutdown()
    }

    /// Closes the HTTP clients (for users outside a service group, like `image-worker fetch`).
    public func shutdown() async {
        for transport in transports { await transport.shutdown() }
    }
}
