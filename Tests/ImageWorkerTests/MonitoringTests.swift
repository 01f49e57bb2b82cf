import OsloJSON
import AsyncHTTPClient
import Logging
import Metrics
import NIOCore
import OsloMessaging
import Prometheus
import NIOConcurrencyHelpers
import Testing
@testable import ImageWorker
import NIOHTTP1

@Suite("monitoring endpoint and JSON logs")
struct MonitoringTests {
    @Test("/healthz, /readyz following the readiness check, /metrics from the registry")
    func endpoints() async throws {
        let registry = PrometheusCollectorRegistry()
        let factory = WorkerMetrics.metricsFactory(registry: registry)
        let ready = NIOLockedValueBox(false)
        let port = NIOLockedValueBox<Int?>(nil)
        let server = MonitoringServer(address: MetricsAddress(host: "127.0.0.1", port: 0), registry: registry,
                                      readiness: { ready.withLockedValue { $0 } ? (true, "consuming") : (false, "the consumer connection to the broker is down") },
                                      logger: Logger(label: "test"), onListening: { bound in port.withLockedValue { $0 = bound } })
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            var waited = 0
            while port.withLockedValue({ $0 }) == nil, waited < 200 { try await Task.sleep(for: .milliseconds(25)); waited += 1 }
            let base = "http://127.0.0.1:\(try #require(port.withLockedValue { $0 }))"
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            defer { _ = client.shutdown() }
            func get(_ path: String) async throws -> (Int, String) {
                let response = try await client.execute(HTTPClientRequest(url: base + path), timeout: .seconds(10))
                let body = try await response.body.collect(upTo: 1 << 20)
                return (Int(response.status.code), String(buffer: body))
            }
            #expect(try await get("/healthz") == (200, "ok\n"))
            let unready = try await get("/readyz")
            #expect(unready.0 == 503)
            #expect(unready.1.contains("consumer connection"))
            ready.withLockedValue { $0 = true }
            #expect(try await get("/readyz").0 == 200)
            Counter(label: "image_worker_tasks_total", dimensions: [("method", "fetch_image"), ("outcome", "success"), ("code", "")], factory: factory)
                .increment(by: 3)
            Timer(label: "image_worker_task_duration_seconds", dimensions: [("method", "fetch_image"), ("outcome", "success")], factory: factory)
                .recordSeconds(42)
            let (status, metrics) = try await get("/metrics")
            #expect(status == 200)
            #expect(metrics.contains(#"image_worker_tasks_total{method="fetch_image",outcome="success",code=""} 3"#))
            #expect(metrics.contains(#"image_worker_task_duration_seconds_bucket{method="fetch_image",outcome="success",le="60.0"} 1"#),
                    "task durations have buckets up to an hour:\n\(metrics)")
            #expect(try await get("/nope").0 == 404)
        }
    }

    @Test("a JSON log record is one object: fixed keys, then the metadata, values as strings")
    func jsonRecord() throws {
        let line = JSONLogHandler.format(timestamp: 1_795_000_000_123_456, level: .warning, label: "image-worker", message: "image fetch failed \"x\"",
                                         source: "ImageWorker", metadata: [
                                             "request_id": "req-1", "node_uuid": "n1", "task_id": "t1", "level": "spoofed",
                                             "list": ["a", "b"], "count": .stringConvertible(3),
                                         ])
        #expect(!line.contains("\n"))
        let object = try #require(try JSONParser().parse(line).objectValue)
        #expect(object["timestamp"] == "2026-11-18T11:06:40.123456Z")
        #expect(object["level"] == "warning", "a metadata key cannot replace a fixed one")
        #expect(object["message"] == "image fetch failed \"x\"")
        #expect(object["logger"] == "image-worker")
        #expect(object["request_id"] == "req-1")
        #expect(object["node_uuid"] == "n1")
        #expect(object["task_id"] == "t1")
        #expect(object["list"] == ["a", "b"])
        #expect(object["count"] == "3")
    }
}
