import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle

/// The worker's HTTP endpoint for operators, on `[image_worker] metrics_address`:
///
/// - `GET /metrics`: the Prometheus registry, in the text exposition format;
/// - `GET /healthz`: 200 while the process runs (liveness);
/// - `GET /readyz`: 200 while connected to the broker and consuming, else 503 with the reason
///   (readiness: unready at start, while the broker is unreachable, and once shutdown began).
///
/// Served by Hummingbird; a `Service`, so it starts and stops with the worker.
public struct MonitoringServer: Service {
    /// Whether the worker can take tasks, and if not, why.
    public typealias ReadinessCheck = @Sendable () -> (ready: Bool, reason: String)

    private let application: Application<RouterResponder<BasicRequestContext>>

    /// Creates the server; `onListening` is told the bound port (useful with port 0).
    public init(address: MetricsAddress, registry: PrometheusCollectorRegistry, readiness: @escaping ReadinessCheck, logger: Logger,
                onListening: @escaping @Sendable (Int) async -> Void = { _ in }) {
        let router = Router()
        router.get("/metrics") { _, _ -> Response in
            var buffer = ByteBuffer()
            buffer.writeBytes(registry.emitToBuffer())
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: ResponseBody(byteBuffer: buffer))
        }
        router.get("/healthz") { _, _ in Self.text(.ok, "ok\n") }
        router.get("/readyz") { _, _ -> Response in
            let (ready, reason) = readiness()
            return ready ? Self.text(.ok, "ready\n") : Self.text(.serviceUnavailable, "not ready: \(reason)\n")
        }
        application = Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(address.host, port: address.port), serverName: "image-worker"),
            onServerRunning: { channel in
                await onListening(channel.localAddress?.port ?? address.port)
            },
            logger: logger)
    }

    public func run() async throws {
        try await application.run()
    }

    private static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
