import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs blocking work (file copies, hashing) on a thread of its own, so that it never occupies
/// one of the few threads of Swift's cooperative pool. Cancelling the awaiting task sets the
/// ``CancellationFlag`` the work should check between chunks.
public enum BlockingWork {
    /// Set when the task that waits for the work is cancelled.
    public final class CancellationFlag: Sendable {
        private let flag = Atomic<Bool>(false)
        init() {}
        /// Whether the work should stop.
        public var isCancelled: Bool { flag.load(ordering: .relaxed) }
        func cancel() { flag.store(true, ordering: .relaxed) }
    }

    /// Runs `work` on a new thread and returns its result.
    public static func run<Result: Sendable>(_ work: @escaping @Sendable (CancellationFlag) throws -> Result) async throws -> Result {
        let flag = CancellationFlag()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Result, Error>) in
                do {
                    try DetachedThread.start("a blocking I/O thread") { continuation.resume(with: Swift.Result { try work(flag) }) }
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            flag.cancel()
        }
    }

}
