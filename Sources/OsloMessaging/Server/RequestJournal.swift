/// What to do with a request, given what is known about its `_unique_id`.
public enum JournalDecision: Sendable, Hashable {
    /// Run it: nothing is known, or every earlier run died. `attempt` counts the runs started
    /// (1 for the first); the journal holds the request until ``RequestJournal/finish(uniqueID:outcome:)``
    /// or ``RequestJournal/abandon(uniqueID:)``.
    case run(attempt: Int)
    /// It already finished: reproduce this outcome, do not run it again.
    case finished(RPCOutcome)
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

    /// Records the outcome of a run that ``begin(uniqueID:fingerprint:)`` allowed, and hands it to those
    /// waiting for that run.
    func finish(uniqueID: String, outcome: RPCOutcome) async throws

    /// Forgets a run that will not finish here (cancelled, or its outcome could not be made
    /// durable) without counting it as a failed attempt: whoever waits for it decides again.
    func abandon(uniqueID: String) async
}
