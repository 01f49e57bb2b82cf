import Crypto
import ImageServices
import Logging
import OsloMessaging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The request journal on disk, in `<state_dir>/journal`, shared by the worker processes of one
/// host (they must share `images_dir` too: a task may be finished by another process than the
/// one that started it).
///
/// - `finished/<key>`: the outcome of a finished request (reply and event), JSON, written under a
///   temporary name and renamed into place. Bounded: past `capacity` entries the oldest go.
/// - `running/<key>`: exists while a process runs the request, which holds `flock(2)` on it for
///   the run; it holds the number of runs started. A process that dies releases the lock but
///   leaves the file, so the next run knows how many died (a poison message's count).
///
/// `<key>` is the SHA-256 of the `_unique_id`, so no caller-chosen text becomes a file name.
/// A duplicate that finds the request running in this process waits for that run's outcome; one
/// that finds it running in another process polls until the lock is released.
///
/// The files are small and touched once or twice per request, so they are read and written on the
/// calling task; only pruning (a directory scan) runs on a thread of its own. Records are not
/// fsynced: they survive any process crash (the case they exist for); after a power loss a
/// request may run again, as it would without the journal.
public final class FileRequestJournal: RequestJournal {
    /// The journal's folder.
    public let path: String
    private let finished: DirectoryHandle
    private let running: DirectoryHandle
    private let capacity: Int
    private let pollInterval: Duration
    private let logger: Logger
    private let state: Mutex<State>

    private struct State {
        var runs: [String: Run] = [:]
        var finishedCount: Int
        var pruning = false
        var nextWaiter = 0
    }

    /// A run in this process: the locked marker, the attempt it is, who waits for it.
    private struct Run {
        var marker: OwnedDescriptor
        var attempt: Int
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    /// Opens (creating it if needed) the journal in `path`, keeping at most `capacity` outcomes.
    public init(path: String, capacity: Int = 10_000, pollInterval: Duration = .milliseconds(100), logger: Logger) throws {
        let root = try DirectoryHandle(makingPath: path)
        self.path = path
        finished = try root.subdirectory("finished", create: true)
        running = try root.subdirectory("running", create: true)
        self.capacity = max(1, capacity)
        self.pollInterval = pollInterval
        self.logger = logger
        // Records a killed process was writing.
        for name in try finished.entries() where StagingFile.isAbandoned(name) { try? finished.remove(name) }
        state = Mutex(State(finishedCount: try finished.entries().count))
    }

    /// The file name for a `_unique_id`.
    static func key(_ uniqueID: String) -> String {
        SHA256.hash(data: Array(uniqueID.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    public func begin(uniqueID: String) async throws -> JournalDecision {
        let key = Self.key(uniqueID)
        while true {
            try Task.checkCancellation()
            if let waiter = waiterIfRunningHere(key) {
                await wait(for: key, waiter: waiter)
                continue
            }
            if let outcome = readFinished(key) { return .finished(outcome) }
            guard let (marker, previousRuns) = try claim(key) else {
                try await Task.sleep(for: pollInterval)  // another process runs it
                continue
            }
            // It may have finished between the look and the lock.
            if let outcome = readFinished(key) {
                _ = unlinkat(running.descriptor.rawValue, key, 0)
                return .finished(outcome)
            }
            let attempt = previousRuns + 1
            try writeRuns(attempt, to: marker, key: key)
            state.withLock { $0.runs[key] = Run(marker: marker, attempt: attempt) }
            return .run(attempt: attempt)
        }
    }

    public func finish(uniqueID: String, outcome: RPCOutcome) async throws {
        let key = Self.key(uniqueID)
        defer { endRun(key, keepingRuns: nil) }
        let record: JSONObject = ["unique_id": .string(uniqueID), "outcome": .object(outcome.jsonObject)]
        let staging = StagingFile(in: finished, finalName: key)
        do {
            let output = try staging.create()
            let bytes = JSONWriter().bytes(.object(record))
            try bytes.withUnsafeBytes { buffer in
                guard Glibc.write(output.rawValue, buffer.baseAddress, buffer.count) == buffer.count else {
                    throw SystemCallError(call: "write", subject: "\(finished.path)/\(staging.temporaryName)", errno: errno)
                }
            }
            try staging.commit()
        } catch {
            staging.discard()
            throw error
        }
        let count = state.withLock { state -> Int? in
            state.finishedCount += 1
            guard state.finishedCount > capacity + capacity / 10, !state.pruning else { return nil }
            state.pruning = true
            return state.finishedCount
        }
        if count != nil { await prune() }
    }

    public func abandon(uniqueID: String) async {
        let key = Self.key(uniqueID)
        let attempt = state.withLock { $0.runs[key]?.attempt } ?? 1
        endRun(key, keepingRuns: attempt - 1)
    }

    // MARK: Runs in this process

    /// Registers a waiter if this process runs `key`; nil if it does not.
    private func waiterIfRunningHere(_ key: String) -> Int? {
        state.withLock { state in
            guard state.runs[key] != nil else { return nil }
            state.nextWaiter += 1
            return state.nextWaiter
        }
    }

    /// Waits for the run of `key` here to end (or for this task's cancellation).
    private func wait(for key: String, waiter: Int) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let waiting = state.withLock { state -> Bool in
                    guard state.runs[key] != nil, !Task.isCancelled else { return false }
                    state.runs[key]!.waiters[waiter] = continuation
                    return true
                }
                if !waiting { continuation.resume() }
            }
        } onCancel: {
            let continuation = state.withLock { $0.runs[key]?.waiters.removeValue(forKey: waiter) }
            continuation?.resume()
        }
    }

    /// Ends the run of `key` here: the marker is removed (finished) or rewritten with the runs
    /// to remember (abandoned; removed at 0), then unlocked, and the waiters decide again.
    private func endRun(_ key: String, keepingRuns runs: Int?) {
        guard let run = state.withLock({ $0.runs.removeValue(forKey: key) }) else { return }
        // Changed while the lock is still held, so nobody reads it half-way.
        if let runs, runs > 0 {
            try? writeRuns(runs, to: run.marker, key: key)
        } else {
            _ = unlinkat(running.descriptor.rawValue, key, 0)
        }
        _ = flock(run.marker.rawValue, LOCK_UN)
        for waiter in run.waiters.values { waiter.resume() }
    }

    // MARK: Files

    /// Locks `running/<key>` (creating it); returns it with the runs it records, or nil when
    /// another process holds it.
    private func claim(_ key: String) throws -> (OwnedDescriptor, Int)? {
        while true {
            let fd = openat(running.descriptor.rawValue, key, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard fd >= 0 else { throw SystemCallError(call: "open", subject: "\(running.path)/\(key)", errno: errno) }
            let marker = OwnedDescriptor(fd)
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
                if errno == EWOULDBLOCK { return nil }
                throw SystemCallError(call: "flock", subject: "\(running.path)/\(key)", errno: errno)
            }
            // The holder before us may have removed the file between our open and our lock: then
            // the lock is on a file nobody else will look at; start again.
            guard let current = try running.status(of: key), try current.st_ino == marker.status().st_ino else { continue }
            return (marker, Self.readRuns(marker))
        }
    }

    private static func readRuns(_ marker: OwnedDescriptor) -> Int {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(marker.rawValue, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return 0 }
        let text = String(decoding: buffer.prefix(count).filter { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self)
        return min(max(Int(text) ?? 0, 0), 1_000_000)
    }

    private func writeRuns(_ runs: Int, to marker: OwnedDescriptor, key: String) throws {
        let bytes = Array("\(runs)\n".utf8)
        guard ftruncate(marker.rawValue, 0) == 0,
              bytes.withUnsafeBytes({ pwrite(marker.rawValue, $0.baseAddress, $0.count, 0) }) == bytes.count
        else { throw SystemCallError(call: "write", subject: "\(running.path)/\(key)", errno: errno) }
    }

    /// The recorded outcome of `key`, if there is a readable one.
    private func readFinished(_ key: String) -> RPCOutcome? {
        let fd = openat(finished.descriptor.rawValue, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        let file = OwnedDescriptor(fd)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while bytes.count <= 4 << 20 {
            let count = chunk.withUnsafeMutableBytes { read(file.rawValue, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk.prefix(count)
        }
        guard let record = try? JSONParser().parse(bytes).objectValue, let outcome = record["outcome"]?.objectValue.flatMap(RPCOutcome.init(jsonObject:))
        else {
            logger.warning("an unreadable journal record was ignored", metadata: ["file": "\(finished.path)/\(key)"])
            return nil
        }
        return outcome
    }

    // MARK: Bounds

    /// Removes the oldest outcomes down to `capacity`, and markers of runs that died more than a
    /// day ago (their request went elsewhere or expired).
    private func prune() async {
        let finished = self.finished, running = self.running, capacity = self.capacity
        let remaining = try? await BlockingWork.run { _ -> Int in
            var entries: [(name: String, modified: Int64)] = []
            for name in try finished.entries() {
                guard let info = try? finished.status(of: name) else { continue }
                if StagingFile.isAbandoned(name) { try? finished.remove(name); continue }
                entries.append((name, info.modificationMicroseconds))
            }
            entries.sort { $0.modified < $1.modified }
            let excess = max(0, entries.count - capacity)
            for entry in entries.prefix(excess) { try? finished.remove(entry.name) }
            let dayAgo = Int64(time(nil)) - 86_400
            for name in try running.entries() {
                guard let info = try? running.status(of: name), Int64(info.st_mtim.tv_sec) < dayAgo else { continue }
                let fd = openat(running.descriptor.rawValue, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                guard fd >= 0 else { continue }
                let marker = OwnedDescriptor(fd)
                if flock(marker.rawValue, LOCK_EX | LOCK_NB) == 0 { try? running.remove(name) }
            }
            return entries.count - excess
        }
        state.withLock { state in
            if let remaining { state.finishedCount = remaining }
            state.pruning = false
        }
    }
}
