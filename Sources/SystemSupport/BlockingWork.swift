import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs blocking work (file copies, hashing, small file-system calls) off Swift's cooperative pool,
/// on an ``ElasticThreadPool``: a long copy never makes a short call wait, and a short call does
/// not pay for a new thread (a `clone` per call cost the worker ~4 % of its CPU on cache hits).
/// Cancelling the awaiting task sets the ``CancellationFlag`` the work should check between chunks.
public enum BlockingWork {
    /// Set when the task that waits for the work is cancelled.
    public final class CancellationFlag: Sendable {
        private let flag = Atomic<Bool>(false)
        public init() {}
        /// Whether the work should stop.
        public var isCancelled: Bool { flag.load(ordering: .relaxed) }
        /// Tells the work to stop.
        public func cancel() { flag.store(true, ordering: .relaxed) }
    }

    /// Up to 16 idle threads are kept: more than the worker's usual concurrent short calls.
    private static let pool = ElasticThreadPool(name: "blocking-work", maximumIdle: 16)

    /// Runs `work` on a pool thread and returns its result.
    public static func run<Result: Sendable>(_ work: @escaping @Sendable (CancellationFlag) throws -> Result) async throws -> Result {
        let flag = CancellationFlag()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Result, Error>) in
                do {
                    try pool.submit { continuation.resume(with: Swift.Result { try work(flag) }) }
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            flag.cancel()
        }
    }

}
