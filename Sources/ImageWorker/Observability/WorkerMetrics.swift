import ImageCompression
import Prometheus
import ImageFormats
import ImageServices
import CoreMetrics
import Metrics

/// The worker's own metrics (swift-metrics; `image-worker serve` exports them through a
/// Prometheus registry on `metrics_address`), all `image_worker_*` with few label values.
/// The RPC server adds `image_worker_tasks_*` and the broker connections
/// `image_worker_broker_*` (see `RPCServerMetrics` and `AMQPConfiguration.metricsPrefix`).
public enum WorkerMetrics {
    /// The prefix of every metric the worker records (also given to the RPC server and the broker connections).
    public static let prefix = "image_worker"

    /// The swift-metrics factory `serve` bootstraps: Prometheus, with duration buckets that reach
    /// an hour for tasks (downloads take minutes).
    public static func metricsFactory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["\(WorkerMetrics.prefix)_task_duration_seconds"] = [
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(120),
            .seconds(300), .seconds(600), .seconds(1800), .seconds(3600),
        ]
        return factory
    }

    /// An image placed in a node folder: `image_worker_images_total{transfer}` and
    /// `image_worker_image_bytes_total{transfer}` (its size), plus the bytes that crossed the network
    /// (or were copied), `image_worker_transferred_bytes_total`.
    static func imagePlaced(_ fetched: FetchedImage) {
        let dimensions = [("transfer", fetched.transfer.rawValue)]
        Counter(label: "image_worker_images_total", dimensions: dimensions).increment()
        Counter(label: "image_worker_image_bytes_total", dimensions: dimensions).increment(by: fetched.size)
        Counter(label: "image_worker_transferred_bytes_total").increment(by: fetched.bytesTransferred)
    }

    /// A lookup in the master image cache: `image_worker_cache_hits_total` or `_misses_total`.
    static func cacheLookup(hit: Bool) {
        Counter(label: hit ? "image_worker_cache_hits_total" : "image_worker_cache_misses_total").increment()
    }

    /// Why an image was refused by the format rules (contract §3.3).
    enum FormatRefusal: String {
        case unsafe, notPermitted = "not_permitted", formatMismatch = "format_mismatch", conversionFailed = "conversion_failed"
        /// Larger once decompressed (or converted) than `max_image_size` or the free space.
        case tooLarge = "too_large"
        /// Compressed content that does not decompress (corrupt, cut short).
        case decompressionFailed = "decompression_failed"
    }

    /// A disk image inspected: `image_worker_image_inspections_total{format}` (`none` when no
    /// single format could be decided).
    static func imageInspected(_ format: DiskFormat?) {
        Counter(label: "image_worker_image_inspections_total", dimensions: [("format", format?.rawValue ?? "none")]).increment()
    }

    /// An image refused by the format rules: `image_worker_image_refusals_total{reason}`.
    static func imageRefused(_ reason: FormatRefusal) {
        Counter(label: "image_worker_image_refusals_total", dimensions: [("reason", reason.rawValue)]).increment()
    }

    /// An image converted to raw: `image_worker_image_conversions_total{from}` and
    /// `image_worker_image_conversion_duration_seconds{from}`.
    static func imageConverted(from format: DiskFormat, duration: Duration) {
        counted("image_worker_image_conversions_total", timed: "image_worker_image_conversion_duration_seconds",
                dimensions: [("from", format.rawValue)], duration: duration)
    }

    /// An image decompressed: `image_worker_image_decompressions_total{compression}` and
    /// `image_worker_image_decompression_duration_seconds{compression}`.
    static func imageDecompressed(_ compression: ImageCompression, duration: Duration) {
        counted("image_worker_image_decompressions_total", timed: "image_worker_image_decompression_duration_seconds",
                dimensions: [("compression", compression.rawValue)], duration: duration)
    }

    /// One more of a counter, and its duration in a timer of the same dimensions.
    private static func counted(_ counter: String, timed timer: String, dimensions: [(String, String)], duration: Duration) {
        Counter(label: counter, dimensions: dimensions).increment()
        let (seconds, attoseconds) = duration.components
        Timer(label: timer, dimensions: dimensions).recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// Masters evicted: `image_worker_cache_evictions_total` and `image_worker_cache_evicted_bytes_total`.
    static func cacheEvicted(count: Int, bytes: Int64) {
        guard count > 0 else { return }
        Counter(label: "image_worker_cache_evictions_total").increment(by: count)
        Counter(label: "image_worker_cache_evicted_bytes_total").increment(by: bytes)
    }
}
