import Primitives
import OsloJSON

import ImageServices
import Logging
import OsloMessaging
import NIOConcurrencyHelpers
import SystemSupport

#if canImport(Glibc)
import Glibc
#endif

/// The request journal on disk, in `<state_dir>/journal`, shared by the worker processes of one
/// host (they must share `images_dir` too: a task may be finished by another process than the
/// one that started it).
///
/// One file per request, `requests/<key>`, which goes through two states:
/// - running: a process runs the request and holds `flock(2)` on the file for the run; the file
///   holds the number of runs started and the request's fingerprint (`3 <sha256>`). A process that
///   dies releases the lock but leaves the line, so the next run knows how many died (a poison
///   message's count).
/// - finished: the run's outcome (reply and event) and the fingerprint as JSON, written over the
///   line under the lock, so whoever takes the lock next reads it. The lock is held on while the
///   outcome's event is published, and `"event_published": true` added once the broker confirmed
///   it: a redelivery then repeats the reply but not the event (a listener counts events), and
///   one that finds it unconfirmed publishes it under the lock, so two never publish it at once.
/// The fingerprint is the SHA-256 of ``RPCRequest/fingerprint``: a message that reuses the
/// `_unique_id` for other work is a conflict, not a duplicate. Records of older versions have none
/// and match any request. Files are 0600 in a 0700 folder: outcomes hold node and image details.
/// Bounded: past `capacity` files the oldest unlocked ones go.
///
/// One file for both states, never removed when a run ends, because creating and removing files
/// is what a busy journal costs: ext4's inode allocator scans past every recently freed inode, and
/// two creates and a removal per request made the journal a third of the worker's CPU at a few
/// hundred tasks per second.
///
/// `<key>` is the SHA-256 of the `_unique_id`, so no caller-chosen text becomes a file name.
/// A duplicate that finds the request running in this process waits for that run's outcome; one
/// that finds it running in another process polls until the lock is released.
///
/// The files are small and touched once or twice per request, so they are read and written on the
/// calling task; only pruning (a directory scan) runs on a thread of its own. Records are not
/// fsynced: they survive any process crash (the case they exist for); after a power loss a
/// request may run again, as it would without the journal. A process killed while writing an
/// outcome leaves a file that is neither a number nor an outcome: it is logged and counted as no
/// earlier run.
public final class FileRequestJournal: RequestJournal {
    /// The journal's folder.
    public let path: String
    private let requests: DirectoryHandle
    private let capacity: Int
    private let pollInterval: Duration
    private let logger: Logger
    private let state: NIOLockedValueBox<State>

    private struct State {
        var runs: [String: Run] = [:]
        var fileCount: Int
        var pruning = false
        var nextWaiter = 0
    }

    /// A request this process holds (running, or publishing its outcome's event): the locked
    /// file, the attempt it is, its fingerprint's digest, the outcome once recorded, who waits for it.
    private struct Run {
        var marker: OwnedDescriptor
        var attempt: Int
        var digest: String
        var outcome: RecordedOutcome?
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    /// An outcome as its file holds it.
    private struct RecordedOutcome {
        var uniqueID: String
        var outcome: RPCOutcome
    }

    /// Opens (creating it if needed) the journal in `path`, keeping about `capacity` requests.
    public init(path: String, capacity: Int = 10_000, pollInterval: Duration = .milliseconds(100), logger: Logger) throws {
        let root = try DirectoryHandle(makingPath: path)
        self.path = path
        requests = try root.subdirectory("requests", create: true, mode: 0o700)
        // Tightened if an older version made it with 0755; its files are tightened as they are written.
        try SystemCallError.check(fchmod(requests.descriptor.rawValue, 0o700), "chmod", requests.path)
        self.capacity = max(1, capacity)
        self.pollInterval = pollInterval
        self.logger = logger
        state = NIOLockedValueBox(State(fileCount: try requests.entries().count))
    }

    /// The file name for a `_unique_id`.
    static func key(_ uniqueID: String) -> String {
        Hex.lowercase(MultiDigest.bytes(.sha256, of: Array(uniqueID.utf8)))
    }

    /// The digest of a request's fingerprint, as kept in its file.
    static func fingerprintDigest(_ fingerprint: String) -> String {
        Hex.lowercase(MultiDigest.bytes(.sha256, of: Array(fingerprint.utf8)))
    }

    public func begin(uniqueID: String, fingerprint: String) async throws -> JournalDecision {
        do {
            return try await decide(uniqueID: uniqueID, fingerprint: fingerprint)
        } catch let error as SystemCallError where error.errno == ENOSPC || error.errno == EDQUOT {
            throw RequestJournalFull("\(error)")
        }
    }

    private func decide(uniqueID: String, fingerprint: String) async throws -> JournalDecision {
        let key = Self.key(uniqueID)
        let digest = Self.fingerprintDigest(fingerprint)
        while true {
            try Task.checkCancellation()
            switch runHere(key, digest: digest) {
            case .none: break
            case .otherRequest: return .conflict
            case .waiting(let waiter):
                await wait(for: key, waiter: waiter)
                continue
            }
            guard let (marker, created) = try claim(key) else {
                // Another process runs it: a conflict can be told at once, a duplicate waits.
                if let recorded = peekFingerprint(key), recorded != digest { return .conflict }
                try await Task.sleep(for: pollInterval)
                continue
            }
            let attempt: Int
            switch Self.read(marker) {
            case .finished(let outcome, let recorded, let eventPublished):
                guard recorded == nil || recorded == digest else { return .conflict }
                let published = eventPublished || outcome.notification == nil
                // Closing the descriptor releases the lock; an unpublished event is published under it.
                if !published {
                    state.withLockedValue { state in
                        state.runs[key] = Run(marker: marker, attempt: 0, digest: digest, outcome: RecordedOutcome(uniqueID: uniqueID, outcome: outcome))
                    }
                }
                return .finished(outcome, eventPublished: published)
            case .runs(let runs, let recorded):
                if let recorded, recorded != digest { return .conflict }
                attempt = runs + 1
            case .unreadable:
                logger.warning("an unreadable journal record was ignored", metadata: ["file": "\(requests.path)/\(key)"])
                attempt = 1
            }
            try writeRuns(attempt, digest: digest, to: marker, key: key)
            state.withLockedValue { state in
                state.runs[key] = Run(marker: marker, attempt: attempt, digest: digest)
                if created { state.fileCount += 1 }
            }
            return .run(attempt: attempt)
        }
    }

    public func record(uniqueID: String, outcome: RPCOutcome) async throws {
        let key = Self.key(uniqueID)
        guard let (marker, digest) = state.withLockedValue({ state in state.runs[key].map { ($0.marker, $0.digest) } }) else { return }
        let recorded = RecordedOutcome(uniqueID: uniqueID, outcome: outcome)
        do {
            try write(Self.outcomeRecord(recorded, digest: digest, eventPublished: false), to: marker, key: key)
        } catch {
            endRun(key, keepingRuns: nil)
            throw error
        }
        state.withLockedValue { $0.runs[key]?.outcome = recorded }
    }

    public func end(uniqueID: String, eventPublished: Bool) async {
        let key = Self.key(uniqueID)
        guard let run = state.withLockedValue({ $0.runs[key] }) else { return }
        if eventPublished, let recorded = run.outcome {
            do {
                try write(Self.outcomeRecord(recorded, digest: run.digest, eventPublished: true), to: run.marker, key: key)
            } catch {
                // Not fatal: a redelivery would publish the event once more.
                logger.warning("could not record that an outcome's event was published", metadata: ["task_id": "\(uniqueID)", "error": "\(error)"])
            }
        }
        endRun(key, keepingRuns: nil)  // before pruning: waiters need not wait for a directory scan
        let prune = state.withLockedValue { state -> Bool in
            guard state.fileCount > capacity + capacity / 10, !state.pruning else { return false }
            state.pruning = true
            return true
        }
        if prune { await self.prune() }
    }

    public func abandon(uniqueID: String) async {
        let key = Self.key(uniqueID)
        guard let run = state.withLockedValue({ $0.runs[key] }) else { return }
        // A recorded outcome stays as it is; a run without one gives its attempt back.
        endRun(key, keepingRuns: run.outcome == nil ? run.attempt - 1 : nil)
    }

    /// A finished request's file.
    private static func outcomeRecord(_ recorded: RecordedOutcome, digest: String, eventPublished: Bool) -> [UInt8] {
        var record: JSONObject = ["unique_id": .string(recorded.uniqueID), "fingerprint": .string(digest), "outcome": .object(recorded.outcome.jsonObject)]
        if eventPublished { record["event_published"] = .bool(true) }
        return JSONWriter().bytes(.object(record))
    }

    // MARK: Runs in this process

    /// What this process runs under a key.
    private enum RunHere {
        case none
        /// Another request (another fingerprint) under the same `_unique_id`.
        case otherRequest
        /// This request: the waiter registered for its end.
        case waiting(Int)
    }

    /// Registers a waiter if this process runs the request of `key` and `digest`.
    private func runHere(_ key: String, digest: String) -> RunHere {
        state.withLockedValue { state in
            guard let run = state.runs[key] else { return .none }
            guard run.digest == digest else { return .otherRequest }
            state.nextWaiter += 1
            return .waiting(state.nextWaiter)
        }
    }

    /// Waits for the run of `key` here to end (or for this task's cancellation).
    private func wait(for key: String, waiter: Int) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let waiting = state.withLockedValue { state -> Bool in
                    guard state.runs[key] != nil, !Task.isCancelled else { return false }
                    state.runs[key]!.waiters[waiter] = continuation
                    return true
                }
                if !waiting { continuation.resume() }
            }
        } onCancel: {
            let continuation = state.withLockedValue { $0.runs[key]?.waiters.removeValue(forKey: waiter) }
            continuation?.resume()
        }
    }

    /// Ends the run of `key` here: the file keeps the outcome (finished) or the runs to remember
    /// (abandoned; empty at 0), is unlocked, and the waiters decide again.
    private func endRun(_ key: String, keepingRuns runs: Int?) {
        guard let run = state.withLockedValue({ $0.runs.removeValue(forKey: key) }) else { return }
        // Changed while the lock is still held, so nobody reads it half-way.
        if let runs {
            if runs > 0 { try? writeRuns(runs, digest: run.digest, to: run.marker, key: key) } else { _ = ftruncate(run.marker.rawValue, 0) }
        }
        _ = flock(run.marker.rawValue, LOCK_UN)
        for waiter in run.waiters.values { waiter.resume() }
    }

    // MARK: Files

    /// Locks `requests/<key>` (creating it); returns it and whether it is new, or nil when another
    /// process holds it.
    private func claim(_ key: String) throws -> (OwnedDescriptor, Bool)? {
        while true {
            var created = false
            var fd = openat(requests.descriptor.rawValue, key, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            if fd < 0 && errno == ENOENT {
                fd = openat(requests.descriptor.rawValue, key, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
                if fd < 0 && errno == EEXIST { continue }  // another process made it meanwhile
                created = true
            }
            guard fd >= 0 else { throw SystemCallError(call: "open", subject: "\(requests.path)/\(key)", errno: errno) }
            let marker = OwnedDescriptor(fd)
            if !created { _ = fchmod(fd, 0o600) }  // a file an older version made 0644
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
                if errno == EWOULDBLOCK { return nil }
                throw SystemCallError(call: "flock", subject: "\(requests.path)/\(key)", errno: errno)
            }
            // Pruning may have removed the file between our open and our lock: then the lock is on
            // a file nobody else will look at; start again.
            guard let current = try requests.fileStatus(of: key), try current.inode == marker.fileStatus().inode else { continue }
            return (marker, created)
        }
    }

    /// What a request's file says; `fingerprint` is nil in an older version's records.
    private enum Record {
        case runs(Int, fingerprint: String?)
        case finished(RPCOutcome, fingerprint: String?, eventPublished: Bool)
        case unreadable
    }

    /// Reads the whole file (an outcome is as large as its reply and event, unbounded here).
    private static func read(_ marker: OwnedDescriptor) -> Record {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { pread(marker.rawValue, $0.baseAddress, $0.count, off_t(bytes.count)) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk.prefix(count)
        }
        let words = bytes.split { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") }.map { String(decoding: $0, as: UTF8.self) }
        if words.isEmpty { return .runs(0, fingerprint: nil) }
        if words.count <= 2, let runs = Int(words[0]), runs >= 0 {
            guard words.count == 2 else { return .runs(runs, fingerprint: nil) }
            guard isDigest(words[1]) else { return .unreadable }
            return .runs(runs, fingerprint: words[1])
        }
        guard let record = try? JSONParser().parse(bytes).objectValue, let outcome = record["outcome"]?.objectValue.flatMap(RPCOutcome.init(jsonObject:))
        else { return .unreadable }
        return .finished(outcome, fingerprint: record["fingerprint"]?.stringValue, eventPublished: record["event_published"]?.boolValue ?? false)
    }

    private static func isDigest(_ text: String) -> Bool {
        text.utf8.count == 64 && Hex.isDigits(text)
    }

    /// The fingerprint digest in the file of a run another process holds, read without the lock:
    /// nil unless the file holds a whole record with one (a half-written file is not one).
    private func peekFingerprint(_ key: String) -> String? {
        let fd = openat(requests.descriptor.rawValue, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        switch Self.read(OwnedDescriptor(fd)) {
        case .runs(_, let fingerprint), .finished(_, let fingerprint, _): return fingerprint
        case .unreadable: return nil
        }
    }

    private func writeRuns(_ runs: Int, digest: String, to marker: OwnedDescriptor, key: String) throws {
        try write(Array("\(runs) \(digest)\n".utf8), to: marker, key: key)
    }

    /// Replaces the file's content (under the lock).
    private func write(_ bytes: [UInt8], to marker: OwnedDescriptor, key: String) throws {
        guard bytes.withUnsafeBytes({ pwrite(marker.rawValue, $0.baseAddress, $0.count, 0) }) == bytes.count,
              ftruncate(marker.rawValue, off_t(bytes.count)) == 0
        else { throw SystemCallError(call: "write", subject: "\(requests.path)/\(key)", errno: errno) }
    }

    // MARK: Bounds

    /// Removes the oldest files down to `capacity`, except those of runs going on (locked) and,
    /// for a day, those counting runs that died (a poison message's count must outlive a burst
    /// of other requests).
    private func prune() async {
        let requests = self.requests, capacity = self.capacity
        let remaining = try? await BlockingWork.run { _ -> Int in
            var entries: [(name: String, modified: Int64)] = []
            for name in try requests.entries() {
                guard let info = try? requests.fileStatus(of: name) else { continue }
                entries.append((name, info.modificationMicroseconds))
            }
            entries.sort { $0.modified < $1.modified }
            let dayAgo = (Int64(time(nil)) - 86_400) * 1_000_000
            var removed = 0
            for entry in entries.prefix(max(0, entries.count - capacity)) {
                let fd = openat(requests.descriptor.rawValue, entry.name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                guard fd >= 0 else { continue }
                let file = OwnedDescriptor(fd)
                guard flock(file.rawValue, LOCK_EX | LOCK_NB) == 0 else { continue }  // running
                if case .runs(let runs, _) = Self.read(file), runs > 0, entry.modified > dayAgo { continue }
                if (try? requests.remove(entry.name)) != nil { removed += 1 }
            }
            return entries.count - removed
        }
        state.withLockedValue { state in
            if let remaining { state.fileCount = remaining }
            state.pruning = false
        }
    }
}
