/// What to do with a request, given what is known about its `_unique_id`.
public enum JournalDecision: Sendable, Hashable {
    /// Run it: nothing is known, or every earlier run died. `attempt` counts the runs started
    /// (1 for the first); the journal holds the request for the caller until
    /// ``RequestJournal/end(uniqueID:eventPublished:)`` or ``RequestJournal/abandon(uniqueID:)``.
    case run(attempt: Int)
    /// It already finished: reproduce this outcome, do not run it again. When `eventPublished` is
    /// false the broker never confirmed the outcome's event: the journal holds the request for the
    /// caller, as for ``run(attempt:)``, so that only the caller publishes it, and the caller ends
    /// the hold with ``RequestJournal/end(uniqueID:eventPublished:)``. When it is true the event
    /// must not be published again (a listener would count it twice): only the reply is repeated.
    case finished(RPCOutcome, eventPublished: Bool)
    /// The `_unique_id` already names a request with another fingerprint
    /// (``RPCRequest/fingerprint``): refuse this one, neither run it nor answer with the other's outcome.
    case conflict
}

/// A journal that cannot record a request because its disk is full. The server refuses the
/// request (`InsufficientDiskSpace`) instead of returning it to the queue, where it would come
/// straight back and fail again, over and over.
public struct RequestJournalFull: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// Remembers requests by `_unique_id`, so that a redelivered or duplicated request is not run
/// twice: a known outcome is reproduced, and a run still in progress is joined. Each request's
/// fingerprint is kept beside it, so a message that reuses an id for other work is told apart.
///
/// ``InMemoryRequestJournal`` serves one process; the worker's `FileRequestJournal` is shared by
/// the processes of one host and survives them.
public protocol RequestJournal: Sendable {
    /// Decides what to do with a request. Waits while another run of it is in progress (here or,
    /// for a shared journal, in another process), then decides again. Throws when cancelled.
    /// A record without a fingerprint (written by an older version) matches any.
    func begin(uniqueID: String, fingerprint: String) async throws -> JournalDecision

    /// Records the outcome of a run that ``begin(uniqueID:fingerprint:)`` allowed. The request
    /// stays held (duplicates wait) until ``end(uniqueID:eventPublished:)``: its event is
    /// published under the hold, so that a duplicate never publishes it at the same time.
    func record(uniqueID: String, outcome: RPCOutcome) async throws

    /// Ends the caller's hold on a request whose outcome is recorded, noting whether the broker
    /// confirmed its event, and hands it to those waiting.
    func end(uniqueID: String, eventPublished: Bool) async

    /// Ends the caller's hold without an outcome of its own: a run that will not finish here
    /// (cancelled, or its outcome could not be made durable) is forgotten without counting as a
    /// failed attempt; a recorded outcome stays, its event still unpublished. Whoever waits for
    /// it decides again.
    func abandon(uniqueID: String) async
}

extension RequestJournal {
    /// Records the outcome of a run and ends the hold, its event not published (a redelivery
    /// will publish it).
    public func finish(uniqueID: String, outcome: RPCOutcome) async throws {
        try await record(uniqueID: uniqueID, outcome: outcome)
        await end(uniqueID: uniqueID, eventPublished: false)
    }
}
