import SystemSupport
import ArgumentParser
import ImageServices
import ImageWorker
import ImageWorkerApp
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals

/// `image-worker serve`: consume fetch tasks until SIGTERM or SIGINT.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the worker: consume tasks from RabbitMQ until SIGTERM or Ctrl-C.")

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        let configuration = try await options.load()
        bootstrapLogging(level: configuration.logLevel, format: configuration.logFormat)
        let logger = Logger(label: "image-worker")
        // Before anything creates a metric: swift-metrics binds each one to the factory of the moment.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(WorkerMetrics.metricsFactory(registry: registry))
        // Opening the folders sweeps what killed processes left (large files, long directory scans).
        let application = try await BlockingWork.run { _ in
            try ImageWorkerApplication(configuration: configuration, metricsRegistry: registry, logger: logger)
        }
        logger.info("starting", metadata: [
            "host": "\(configuration.host)",
            "transport_url": "\(configuration.transportURL)",
            "exchange": "\(configuration.controlExchange)",
            "topic": "\(configuration.topic)",
            "images_dir": "\(configuration.imagesDirectory)",
            "file_url_allowed_paths": "\(configuration.fileURLAllowedPaths.joined(separator: ","))",
            "max_concurrent_downloads": "\(configuration.maxConcurrentDownloads)",
            "metrics_address": "\(configuration.metricsAddress?.description ?? "off")",
        ])
        var groupConfiguration = ServiceGroupConfiguration(services: application.services, gracefulShutdownSignals: [.sigterm, .sigint],
                                                           cancellationSignals: [], logger: logger)
        // Running tasks get graceful_shutdown_timeout; past that and a margin to close the broker
        // connections, everything is cancelled so the process always ends.
        groupConfiguration.maximumGracefulShutdownDuration = configuration.gracefulShutdownTimeout + .seconds(30)
        try await ServiceGroup(configuration: groupConfiguration).run()
        logger.info("stopped")
    }
}
