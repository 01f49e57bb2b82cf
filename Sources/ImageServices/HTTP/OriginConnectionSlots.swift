import NIOConcurrencyHelpers
import Synchronization

/// At most `limit` requests in flight to one origin (scheme, host, port); the rest wait their turn,
/// first come first served, for as long as it takes.
///
/// async-http-client's own pool would also make requests wait for a connection, but counts that
/// wait against the connect timeout and then fails them (`getConnectionFromPoolTimeout`): a task
/// must never fail because it waited for its turn. So the worker queues here, and the client's
/// pool is sized to the same limit, so that a request that has its slot gets a connection.
final class OriginConnectionSlots: Sendable {
    /// Requests allowed in flight per origin.
    let limit: Int

    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct Origin {
        var inFlight = 0
        var waiting: [Waiter] = []
    }

    private struct State {
        var origins: [String: Origin] = [:]
        var nextWaiterID: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())

    private enum WaitDecision { case granted, queued, cancelled }

    /// Slots for `limit` requests per origin (at least one).
    init(limit: Int) {
        self.limit = max(limit, 1)
    }

    /// Waits for a slot for `origin`; `onWait` is called first when the request has to wait.
    /// Throws `CancellationError` if the task is cancelled while waiting.
    func acquire(_ origin: String, onWait: () -> Void = {}) async throws -> Slot {
        let granted = state.withLockedValue { state -> Bool in
            guard state.origins[origin, default: Origin()].inFlight < limit else { return false }
            state.origins[origin, default: Origin()].inFlight += 1
            return true
        }
        if !granted {
            onWait()
            let id = state.withLockedValue { state -> UInt64 in
                state.nextWaiterID += 1
                return state.nextWaiterID
            }
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    // Decided once, under the lock: after the waiter is queued only `release()` or
                    // the cancellation handler may resume it (each removes it first), never this.
                    let decision = state.withLockedValue { state -> WaitDecision in
                        if Task.isCancelled { return .cancelled }
                        // A slot may have come free since the first look.
                        if state.origins[origin, default: Origin()].inFlight < limit {
                            state.origins[origin, default: Origin()].inFlight += 1
                            return .granted
                        }
                        state.origins[origin, default: Origin()].waiting.append(Waiter(id: id, continuation: continuation))
                        return .queued
                    }
                    switch decision {
                    case .granted: continuation.resume()
                    case .cancelled: continuation.resume(throwing: CancellationError())
                    case .queued: break
                    }
                }
            } onCancel: {
                let waiter = state.withLockedValue { state -> Waiter? in
                    guard let index = state.origins[origin]?.waiting.firstIndex(where: { $0.id == id }) else { return nil }
                    return state.origins[origin]?.waiting.remove(at: index)
                }
                waiter?.continuation.resume(throwing: CancellationError())
            }
        }
        return Slot { [weak self] in self?.release(origin) }
    }

    /// Requests in flight to `origin` now (for tests and metrics).
    func inFlight(_ origin: String) -> Int {
        state.withLockedValue { $0.origins[origin]?.inFlight ?? 0 }
    }

    /// Requests waiting for a slot of `origin` now.
    func waiting(_ origin: String) -> Int {
        state.withLockedValue { $0.origins[origin]?.waiting.count ?? 0 }
    }

    /// Hands the slot to the first waiter, or frees it.
    private func release(_ origin: String) {
        let next = state.withLockedValue { state -> Waiter? in
            guard var entry = state.origins[origin] else { return nil }
            if entry.waiting.isEmpty {
                entry.inFlight -= 1
                state.origins[origin] = entry.inFlight == 0 ? nil : entry
                return nil
            }
            let waiter = entry.waiting.removeFirst()  // the slot passes on: inFlight stays
            state.origins[origin] = entry
            return waiter
        }
        next?.continuation.resume()
    }

    /// One request's right to a connection to its origin, until ``release()`` (or until it is
    /// no longer referenced, as a safety net).
    final class Slot: Sendable {
        private let onRelease: @Sendable () -> Void
        private let released = Atomic<Bool>(false)

        init(onRelease: @escaping @Sendable () -> Void) {
            self.onRelease = onRelease
        }

        /// Gives the slot back; later calls do nothing.
        func release() {
            guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
            onRelease()
        }

        deinit { release() }
    }
}
