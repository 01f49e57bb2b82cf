import NIOConcurrencyHelpers

/// The requests for each node in this process, first come first served: the first holds the
/// node's turn, the others wait in line. `flock` alone (``NodeImageStore/withNodeLock(_:_:)``)
/// lets whichever waiter polls first win, so a `delete_images` queued before a `fetch_image`
/// could run after it and remove its images.
final class NodeTurns: Sendable {
    private struct Waiter {
        var id: Int
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        /// A node is a key while someone holds its turn; the value is the line behind it.
        var lines: [String: [Waiter]] = [:]
        var nextID = 0
    }

    private let state = NIOLockedValueBox(State())

    /// Waits (cancellably) until it is this caller's turn for `node`.
    func take(_ node: String) async throws {
        let id = state.withLockedValue { state -> Int? in
            guard state.lines[node] != nil else {
                state.lines[node] = []
                return nil
            }
            state.nextID += 1
            return state.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Now { case wait, granted, cancelled }
                let now = state.withLockedValue { state -> Now in
                    if Task.isCancelled { return .cancelled }
                    guard state.lines[node] != nil else {  // the holder left meanwhile, with nobody in line
                        state.lines[node] = []
                        return .granted
                    }
                    state.lines[node]?.append(Waiter(id: id, continuation: continuation))
                    return .wait
                }
                switch now {
                case .wait: break
                case .granted: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state -> Waiter? in
                guard let index = state.lines[node]?.firstIndex(where: { $0.id == id }) else { return nil }
                return state.lines[node]?.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Ends the caller's turn: the next in line gets it.
    func release(_ node: String) {
        let next = state.withLockedValue { state -> Waiter? in
            guard var line = state.lines[node], !line.isEmpty else {
                state.lines[node] = nil
                return nil
            }
            let next = line.removeFirst()
            state.lines[node] = line
            return next
        }
        next?.continuation.resume()
    }
}
