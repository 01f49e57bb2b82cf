import Crypto
import Foundation
import Logging
import OsloMessaging
import Synchronization
import Testing
import TestSupport
@testable import ImageWorker
import OsloJSON

@Suite("request journal on disk")
struct FileRequestJournalTests {
    let outcome = RPCOutcome(reply: .success(["path": "/images/x/disk"]),
                             notification: OsloNotification(publisherID: "image-worker.test", eventType: "baremetal.image.fetch.end",
                                                            priority: .info, payload: ["ironic_object.data": ["task_id": "t1"]],
                                                            context: ["request_id": "req-1"]))

    static let fingerprint = #"{"args": {"node_uuid": "n1"}, "method": "fetch_image", "version": "1.0"}"#

    func journal(_ directory: TemporaryDirectory, capacity: Int = 100) throws -> FileRequestJournal {
        try FileRequestJournal(path: directory.appending("journal"), capacity: capacity, pollInterval: .milliseconds(20), logger: Logger(label: "test"))
    }

    @Test("an unknown request runs; once finished, a duplicate gets the recorded outcome, also after a restart")
    func recordsOutcomes() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let first = try journal(directory)
        #expect(try await first.begin(uniqueID: "u1") == .run(attempt: 1))
        try await first.finishPublished(uniqueID: "u1", outcome: outcome)
        #expect(try await first.begin(uniqueID: "u1") == .finished(outcome, eventPublished: true))
        let restarted = try journal(directory)
        #expect(try await restarted.begin(uniqueID: "u1") == .finished(outcome, eventPublished: true), "the outcome survives the process")
        #expect(try await restarted.begin(uniqueID: "u2") == .run(attempt: 1))
        let failure = RPCOutcome(reply: .failure(.ironic("ImageNotFound", message: "gone", httpStatus: 404)))
        try await restarted.finishPublished(uniqueID: "u2", outcome: failure)
        #expect(try await first.begin(uniqueID: "u2") == .finished(failure, eventPublished: true))
    }

    @Test("file names are digests: no caller text reaches the file system")
    func namesAreDigests() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try journal(directory)
        #expect(try await journal.begin(uniqueID: "../../etc/passwd") == .run(attempt: 1))
        try await journal.finishPublished(uniqueID: "../../etc/passwd", outcome: outcome)
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.appending("journal/requests"))
        // The file's name is the SHA-256 of the id (computed here independently of the journal).
        #expect(names == [SHA256.hash(data: Array("../../etc/passwd".utf8)).map { String(format: "%02x", $0) }.joined()])
        #expect(names[0].count == 64 && names[0].allSatisfy(\.isHexDigit))
    }

    @Test("a run that died (marker left, lock free) counts: the next run is attempt 2; an abandoned one does not count")
    func deadRunsCount() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try journal(directory)
        let marker = directory.appending("journal/requests/\(FileRequestJournal.key("u1"))")
        try Array("2\n".utf8).withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: marker)) }
        #expect(try await journal.begin(uniqueID: "u1") == .run(attempt: 3))
        await journal.abandon(uniqueID: "u1")
        #expect(try String(contentsOfFile: marker, encoding: .utf8) == "2 \(FileRequestJournal.fingerprintDigest(Self.fingerprint))\n",
                "the abandoned run is taken off the count; the request's fingerprint is kept")
        #expect(try await journal.begin(uniqueID: "u1") == .run(attempt: 3))
        try await journal.finishPublished(uniqueID: "u1", outcome: outcome)
        #expect(try await journal.begin(uniqueID: "u1") == .finished(outcome, eventPublished: true), "the outcome replaced the count")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.appending("journal/requests")) == [FileRequestJournal.key("u1")],
                "one file per request, whatever its state")
    }

    @Test("a process killed while writing an outcome leaves an unreadable file: the request runs again as attempt 1")
    func halfWrittenOutcome() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try journal(directory)
        #expect(try await journal.begin(uniqueID: "u1") == .run(attempt: 1))
        await journal.abandon(uniqueID: "u1")
        let file = directory.appending("journal/requests/\(FileRequestJournal.key("u1"))")
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)).isEmpty, "an abandoned first run leaves an empty file")
        _ = FileManager.default.createFile(atPath: file, contents: Data("{\"unique_id\": \"u1\", \"outco".utf8))
        #expect(try await journal.begin(uniqueID: "u1") == .run(attempt: 1))
        try await journal.finishPublished(uniqueID: "u1", outcome: outcome)
        #expect(try await journal.begin(uniqueID: "u1") == .finished(outcome, eventPublished: true))
    }

    @Test("pruning spares, for a day, the files counting runs that died: a poison message's count outlives a burst")
    func pruningSparesDeadRunCounts() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try journal(directory, capacity: 5)
        let counted = directory.appending("journal/requests/\(FileRequestJournal.key("poison"))")
        _ = FileManager.default.createFile(atPath: counted, contents: Data("1\n".utf8))
        for index in 0..<30 {
            #expect(try await journal.begin(uniqueID: "u\(index)") == .run(attempt: 1))
            try await journal.finishPublished(uniqueID: "u\(index)", outcome: outcome)
        }
        #expect(FileManager.default.fileExists(atPath: counted))
        #expect(try await journal.begin(uniqueID: "poison") == .run(attempt: 2))
    }

    @Test("pruning spares the files of runs going on")
    func pruningSparesRunning() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try journal(directory, capacity: 5)
        #expect(try await journal.begin(uniqueID: "long") == .run(attempt: 1))
        for index in 0..<30 {
            #expect(try await journal.begin(uniqueID: "u\(index)") == .run(attempt: 1))
            try await journal.finishPublished(uniqueID: "u\(index)", outcome: outcome)
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.appending("journal/requests"))
        #expect(names.contains(FileRequestJournal.key("long")), "the oldest file is a run going on")
        #expect(names.count <= 6, "kept \(names.count)")
        try await journal.finishPublished(uniqueID: "long", outcome: outcome)
        #expect(try await journal.begin(uniqueID: "long") == .finished(outcome, eventPublished: true))
    }

    @Test("a request running in another process is waited for, and its outcome taken")
    func otherProcessRun() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        // Two journals on one folder lock like two processes: flock belongs to the open file.
        let owner = try journal(directory), other = try journal(directory)
        #expect(try await owner.begin(uniqueID: "u1") == .run(attempt: 1))
        let decided = DecidedFlag()
        let waiting = Task {
            let decision = try await other.begin(uniqueID: "u1")
            decided.set()
            return decision
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(!decided.isSet, "the duplicate must wait while the run holds the lock")
        try await owner.finishPublished(uniqueID: "u1", outcome: outcome)
        #expect(try await waiting.value == .finished(outcome, eventPublished: true))
    }

    @Test("a duplicate in the same process joins the run; when that run is abandoned, it runs itself")
    func joinsAndTakesOver() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try journal(directory)
        #expect(try await journal.begin(uniqueID: "u1") == .run(attempt: 1))
        async let joined = journal.begin(uniqueID: "u1")
        try await Task.sleep(for: .milliseconds(100))
        await journal.abandon(uniqueID: "u1")
        #expect(try await joined == .run(attempt: 1))
        async let second = journal.begin(uniqueID: "u1")
        try await Task.sleep(for: .milliseconds(100))
        try await journal.finishPublished(uniqueID: "u1", outcome: outcome)
        #expect(try await second == .finished(outcome, eventPublished: true))
    }

    @Test("a waiting duplicate can be cancelled")
    func waitingIsCancellable() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let first = try journal(directory), other = try journal(directory)
        #expect(try await first.begin(uniqueID: "u1") == .run(attempt: 1))
        for waiter in [first, other] {
            let task = Task { try await waiter.begin(uniqueID: "u1") }
            try await Task.sleep(for: .milliseconds(100))
            task.cancel()
            await #expect(throws: CancellationError.self) { try await task.value }
        }
    }

    @Test("the journal keeps about its capacity, the newest outcomes")
    func bounded() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try journal(directory, capacity: 10)
        for index in 0..<40 {
            if index == 39 { try await Task.sleep(for: .milliseconds(20)) }  // file times are coarse
            #expect(try await journal.begin(uniqueID: "u\(index)") == .run(attempt: 1))
            try await journal.finishPublished(uniqueID: "u\(index)", outcome: outcome)
        }
        let count = try FileManager.default.contentsOfDirectory(atPath: directory.appending("journal/requests")).count
        #expect(count >= 10 && count <= 11, "kept \(count)")
        #expect(try await journal.begin(uniqueID: "u39") == .finished(outcome, eventPublished: true))
    }

    @Test("an unreadable record is ignored: the request runs")
    func corruptRecord() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try journal(directory)
        let record = directory.appending("journal/requests/\(FileRequestJournal.key("u1"))")
        _ = FileManager.default.createFile(atPath: record, contents: Data("{\"outcome\": 12".utf8))
        #expect(try await journal.begin(uniqueID: "u1") == .run(attempt: 1))
    }

    @Test("an outcome whose event the broker did not confirm is published by the next duplicate, under the hold; once confirmed, duplicates only reply")
    func unpublishedEventsArePublishedOnce() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let first = try journal(directory), otherProcess = try journal(directory)
        #expect(try await first.begin(uniqueID: "u1") == .run(attempt: 1))
        try await first.finish(uniqueID: "u1", outcome: outcome)  // recorded, event not confirmed
        #expect(try await first.begin(uniqueID: "u1") == .finished(outcome, eventPublished: false))
        let decided = DecidedFlag()
        let waiting = Task {
            let decision = try await otherProcess.begin(uniqueID: "u1")
            decided.set()
            return decision
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(!decided.isSet, "a second duplicate waits while the first publishes the event")
        await first.end(uniqueID: "u1", eventPublished: true)
        #expect(try await waiting.value == .finished(outcome, eventPublished: true))
        #expect(try await self.journal(directory).begin(uniqueID: "u1") == .finished(outcome, eventPublished: true), "the mark survives the process")
    }

    @Test("a duplicate waits while the run publishes its event; a run abandoned after its outcome was recorded keeps the outcome")
    func holdCoversPublishing() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try self.journal(directory)
        #expect(try await journal.begin(uniqueID: "u1") == .run(attempt: 1))
        try await journal.record(uniqueID: "u1", outcome: outcome)
        let decided = DecidedFlag()
        let waiting = Task {
            let decision = try await journal.begin(uniqueID: "u1")
            decided.set()
            return decision
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(!decided.isSet, "the hold lasts until the event is published")
        await journal.end(uniqueID: "u1", eventPublished: true)
        #expect(try await waiting.value == .finished(outcome, eventPublished: true))

        #expect(try await journal.begin(uniqueID: "u2") == .run(attempt: 1))
        try await journal.record(uniqueID: "u2", outcome: outcome)
        await journal.abandon(uniqueID: "u2")
        #expect(try await journal.begin(uniqueID: "u2") == .finished(outcome, eventPublished: false))
    }
}

@Suite("request journal on disk: request identity")
struct FileRequestJournalIdentityTests {
    let outcome = RPCOutcome(reply: .success(["path": "/images/x/disk"]))

    func open(_ directory: TemporaryDirectory) throws -> FileRequestJournal {
        try FileRequestJournal(path: directory.appending("journal"), pollInterval: .milliseconds(20), logger: Logger(label: "test"))
    }

    @Test("the same _unique_id for other content is a conflict: finished, running here, running in another process, or dead")
    func otherContentConflicts() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try open(directory), otherProcess = try open(directory)
        #expect(try await journal.begin(uniqueID: "u1", fingerprint: "fetch node A") == .run(attempt: 1))
        #expect(try await journal.begin(uniqueID: "u1", fingerprint: "delete node A") == .conflict, "running here")
        #expect(try await otherProcess.begin(uniqueID: "u1", fingerprint: "delete node A") == .conflict, "running in another process")
        try await journal.finish(uniqueID: "u1", outcome: outcome)
        #expect(try await journal.begin(uniqueID: "u1", fingerprint: "delete node A") == .conflict, "finished")
        #expect(try await otherProcess.begin(uniqueID: "u1", fingerprint: "fetch node A") == .finished(outcome, eventPublished: true))

        #expect(try await journal.begin(uniqueID: "u2", fingerprint: "fetch node B") == .run(attempt: 1))
        await journal.abandon(uniqueID: "u2")
        #expect(try await journal.begin(uniqueID: "u2", fingerprint: "fetch node B") == .run(attempt: 1), "a first run abandoned leaves no claim")
        #expect(try await journal.begin(uniqueID: "u2", fingerprint: "fetch node C") == .conflict)
    }

    @Test("a record of an older version (no fingerprint) matches any request")
    func olderRecordsMatchAny() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try open(directory)
        let file = directory.appending("journal/requests/\(FileRequestJournal.key("u1"))")
        _ = FileManager.default.createFile(atPath: file, contents: Data("1\n".utf8))
        #expect(try await journal.begin(uniqueID: "u1", fingerprint: "anything") == .run(attempt: 2))
        try await journal.finish(uniqueID: "u1", outcome: outcome)
        let older = try JSONParser().parse(Array(Data(contentsOf: URL(fileURLWithPath: file))))
        var record = try #require(older.objectValue)
        record["fingerprint"] = nil
        _ = FileManager.default.createFile(atPath: file, contents: Data(JSONWriter().bytes(.object(record))))
        #expect(try await journal.begin(uniqueID: "u1", fingerprint: "something else") == .finished(outcome, eventPublished: true))
    }

    @Test("an outcome of 5 MiB reads back whole (it used to be cut at 4 MiB and run again)")
    func largeOutcome() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let journal = try open(directory)
        let large = RPCOutcome(reply: .success(["log": .string(String(repeating: "x", count: 5 << 20))]))
        #expect(try await journal.begin(uniqueID: "u1", fingerprint: "f") == .run(attempt: 1))
        try await journal.finish(uniqueID: "u1", outcome: large)
        #expect(try await journal.begin(uniqueID: "u1", fingerprint: "f") == .finished(large, eventPublished: true))
    }

    @Test("a full disk is RequestJournalFull (the server refuses the request), not an error that requeues it",
          .enabled(if: getuid() == 0, "mounts a 64 KiB tmpfs (root only; CI runs as root)"))
    func fullDisk() async throws {
        let directory = try TemporaryDirectory(prefix: "journal-full")
        defer { directory.remove() }
        let mountPoint = directory.appending("small")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        try #require(mount("tmpfs", mountPoint, "tmpfs", 0, "size=64k") == 0, "mount: \(String(cString: strerror(errno)))")
        defer { umount2(mountPoint, 2) }  // MNT_DETACH
        let journal = try FileRequestJournal(path: mountPoint + "/journal", logger: Logger(label: "test"))
        // Fill what is left.
        let filler = Glibc.open(mountPoint + "/filler", O_WRONLY | O_CREAT, 0o600)
        try #require(filler >= 0)
        let block = [UInt8](repeating: 7, count: 4096)
        while block.withUnsafeBytes({ write(filler, $0.baseAddress, $0.count) }) > 0 {}
        close(filler)
        await #expect(throws: RequestJournalFull.self) { _ = try await journal.begin(uniqueID: "u1", fingerprint: "f") }
    }

    @Test("records are 0600 in a 0700 folder, also where an older version made them wider")
    func modes() async throws {
        let directory = try TemporaryDirectory(prefix: "journal")
        defer { directory.remove() }
        let folder = directory.appending("journal/requests")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let older = "\(folder)/\(FileRequestJournal.key("old"))"
        _ = FileManager.default.createFile(atPath: older, contents: Data("1\n".utf8), attributes: [.posixPermissions: 0o644])
        let journal = try open(directory)
        #expect(try await journal.begin(uniqueID: "new", fingerprint: "f") == .run(attempt: 1))
        #expect(try await journal.begin(uniqueID: "old", fingerprint: "f") == .run(attempt: 2))
        func mode(_ path: String) throws -> Int {
            try (FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? -1) & 0o777
        }
        #expect(try mode(folder) == 0o700)
        #expect(try mode("\(folder)/\(FileRequestJournal.key("new"))") == 0o600)
        #expect(try mode(older) == 0o600)
    }
}

private extension FileRequestJournal {
    /// Most tests here tell requests apart by id alone: one fingerprint for all of them.
    func begin(uniqueID: String) async throws -> JournalDecision {
        try await begin(uniqueID: uniqueID, fingerprint: FileRequestJournalTests.fingerprint)
    }

    /// Records an outcome and ends the run with its event confirmed, as the server does.
    func finishPublished(uniqueID: String, outcome: RPCOutcome) async throws {
        try await record(uniqueID: uniqueID, outcome: outcome)
        await end(uniqueID: uniqueID, eventPublished: true)
    }
}

/// Set once a task got its decision.
private final class DecidedFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}
