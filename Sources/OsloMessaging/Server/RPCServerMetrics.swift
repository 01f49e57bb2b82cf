import Primitives
import CoreMetrics
import Metrics

/// What an ``RPCServer`` counts, through swift-metrics (exported by whatever backend the process
/// bootstrapped), named `<prefix>_…`:
///
/// - `<prefix>_tasks_total{method, outcome, code}`: requests settled; `outcome` is `success`,
///   `failure`, `refused`, `duplicate` (answered from the journal), `gave_up` or `requeued`;
///   `code` the failure's class (empty on success).
/// - `<prefix>_task_duration_seconds{method, outcome}`: from delivery to settlement.
/// - `<prefix>_tasks_in_flight`: requests being processed now.
///
/// Labels stay few: a method the endpoint does not serve is counted as `unknown`, so a hostile
/// message cannot create new series.
struct RPCServerMetrics: Sendable {
    /// How a request was settled.
    enum Outcome: String {
        case success, failure, refused, duplicate, requeued
        case gaveUp = "gave_up"
    }

    let prefix: String
    let methods: Set<String>
    let inFlight: Meter

    init(prefix: String, methods: Set<String>) {
        self.prefix = prefix
        self.methods = methods
        inFlight = Meter(label: "\(prefix)_tasks_in_flight")
    }

    /// Records a settled request.
    func settled(method: String?, outcome: Outcome, code: String?, started: ContinuousClock.Instant) {
        let method = method.flatMap { methods.contains($0) ? $0 : nil } ?? "unknown"
        Counter(label: "\(prefix)_tasks_total", dimensions: [("method", method), ("outcome", outcome.rawValue), ("code", code ?? "")]).increment()
        let elapsed = ContinuousClock.now - started
        Timer(label: "\(prefix)_task_duration_seconds", dimensions: [("method", method), ("outcome", outcome.rawValue)])
            .recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }
}
