import NIOConcurrencyHelpers

/// A request journal inside one process, bounded to the most recent outcomes: enough for a
/// single worker without a state folder, and for tests. It dies with the process, so it never
/// sees an earlier run that crashed: every run it allows is attempt 1.
public final class InMemoryRequestJournal: RequestJournal {
    private let capacity: Int
    private let state = NIOLockedValueBox(State())

    fileprivate struct State {
        var finished: [String: Finished] = [:]
        var finishedOrder: [String] = []
        var running: [String: Run] = [:]
        var nextWaiter = 0
    }

    /// Creates a journal that keeps the last `capacity` outcomes.
    public init(capacity: Int = 10_000) {
        self.capacity = max(1, capacity)
    }

    /// A request held by a caller (running, or publishing its outcome's event): its fingerprint
    /// and who waits for it.
    fileprivate struct Run {
        var fingerprint: String
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    /// A recorded outcome and whether the broker confirmed its event.
    fileprivate struct Finished {
        var fingerprint: String
        var outcome: RPCOutcome
        var eventPublished: Bool
    }

    public func begin(uniqueID: String, fingerprint: String) async throws -> JournalDecision {
        while true {
            try Task.checkCancellation()
            enum Step { case decided(JournalDecision), wait(Int) }
            let step = state.withLockedValue { state -> Step in
                if let run = state.running[uniqueID] {
                    guard run.fingerprint == fingerprint else { return .decided(.conflict) }
                    state.nextWaiter += 1
                    return .wait(state.nextWaiter)
                }
                if let finished = state.finished[uniqueID] {
                    guard finished.fingerprint == fingerprint else { return .decided(.conflict) }
                    let published = finished.eventPublished || finished.outcome.notification == nil
                    if !published { state.running[uniqueID] = Run(fingerprint: fingerprint) }
                    return .decided(.finished(finished.outcome, eventPublished: published))
                }
                state.running[uniqueID] = Run(fingerprint: fingerprint)
                return .decided(.run(attempt: 1))
            }
            switch step {
            case .decided(let decision): return decision
            case .wait(let waiter): await waitForRun(uniqueID, waiter: waiter)
            }
        }
    }

    public func record(uniqueID: String, outcome: RPCOutcome) async throws {
        state.withLockedValue { state in
            guard let run = state.running[uniqueID] else { return }
            if state.finished.updateValue(Finished(fingerprint: run.fingerprint, outcome: outcome, eventPublished: false), forKey: uniqueID) == nil {
                state.finishedOrder.append(uniqueID)
            }
            if state.finishedOrder.count > capacity {
                let excess = state.finishedOrder.count - capacity
                for id in state.finishedOrder.prefix(excess) { state.finished[id] = nil }
                state.finishedOrder.removeFirst(excess)
            }
        }
    }

    public func end(uniqueID: String, eventPublished: Bool) async {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            if eventPublished { state.finished[uniqueID]?.eventPublished = true }
            return state.removeRun(uniqueID)
        }
        for waiter in waiters { waiter.resume() }
    }

    public func abandon(uniqueID: String) async {
        let waiters = state.withLockedValue { $0.removeRun(uniqueID) }
        for waiter in waiters { waiter.resume() }
    }

    /// Waits until the run of `uniqueID` ends (or this task is cancelled).
    private func waitForRun(_ uniqueID: String, waiter: Int) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let waiting = state.withLockedValue { state -> Bool in
                    guard state.running[uniqueID] != nil, !Task.isCancelled else { return false }
                    state.running[uniqueID]!.waiters[waiter] = continuation
                    return true
                }
                if !waiting { continuation.resume() }
            }
        } onCancel: {
            let continuation = state.withLockedValue { $0.running[uniqueID]?.waiters.removeValue(forKey: waiter) }
            continuation?.resume()
        }
    }
}

private extension InMemoryRequestJournal.State {
    /// Ends the run of `uniqueID`; returns those waiting for it.
    mutating func removeRun(_ uniqueID: String) -> [CheckedContinuation<Void, Never>] {
        guard let run = running.removeValue(forKey: uniqueID) else { return [] }
        return Array(run.waiters.values)
    }
}
