import SystemSupport
import Foundation
import NIOCore
import Synchronization
import Testing
import TestSupport
@testable import ImageServices

/// The disk-space ledger against a file system whose free space the test sets.
@Suite("disk space reserved for downloads in progress")
struct DiskReservationTests {
    /// A file system with `free` bytes free, as statvfs would say.
    final class FakeFileSystem: Sendable {
        let free: Atomic<Int64>
        init(_ free: Int64) { self.free = Atomic(free) }
        /// Writes `bytes` (the free space drops).
        func write(_ bytes: Int64) { free.wrappingSubtract(bytes, ordering: .relaxed) }
        var ledger: DiskSpaceLedger { DiskSpaceLedger(available: { _ in self.free.load(ordering: .relaxed) }) }
    }

    static func isInsufficient(_ error: any Error) -> Bool { (error as? IronicError)?.code == .insufficientDiskSpace }

    @Test("two downloads cannot both count the same free bytes; a released reservation frees them")
    func concurrentReservations() throws {
        let folder = try TemporaryDirectory(prefix: "ledger")
        defer { folder.remove() }
        let directory = try DirectoryHandle(path: folder.path)
        let ledger = FakeFileSystem(100_000).ledger
        let first = try ledger.reserve(60_000, limit: 60_000, in: directory)
        #expect(try ledger.unreserved(in: directory) == 40_000)
        #expect(throws: IronicError.self) { _ = try ledger.reserve(60_000, limit: 60_000, in: directory) }
        #expect { _ = try ledger.reserve(60_000, limit: 60_000, in: directory) } throws: { error in
            Self.isInsufficient(error) && (error as? IronicError)?.message.contains(folder.path) == true
        }
        first.release()
        #expect(try ledger.unreserved(in: directory) == 100_000)
        _ = try ledger.reserve(60_000, limit: 60_000, in: directory)
    }

    @Test("what a download has written is no longer outstanding: statvfs counts it")
    func writtenBytesCountOnce() throws {
        let folder = try TemporaryDirectory(prefix: "ledger")
        defer { folder.remove() }
        let directory = try DirectoryHandle(path: folder.path)
        let disk = FakeFileSystem(100_000)
        let ledger = disk.ledger
        let download = try ledger.reserve(60_000, limit: 60_000, in: directory)
        try download.cover(upTo: 50_000)
        disk.write(50_000)
        #expect(try ledger.unreserved(in: directory) == 40_000, "50,000 free less the 10,000 the download has yet to write")
        try download.cover(upTo: 0)  // the server would not resume: the file was truncated
        disk.write(-50_000)
        #expect(try ledger.unreserved(in: directory) == 40_000, "all 60,000 outstanding again")
    }

    @Test("a download past the size it announced stops: Overrun")
    func overrun() throws {
        let folder = try TemporaryDirectory(prefix: "ledger")
        defer { folder.remove() }
        let directory = try DirectoryHandle(path: folder.path)
        let reservation = try FakeFileSystem(1 << 30).ledger.reserve(1000, limit: 1000, in: directory)
        try reservation.cover(upTo: 1000)
        #expect(throws: DiskReservation.Overrun.self) { try reservation.cover(upTo: 1001) }
    }

    @Test("without an announced size the reservation grows as bytes arrive, and stops where others' reservations begin")
    func growth() throws {
        let folder = try TemporaryDirectory(prefix: "ledger")
        defer { folder.remove() }
        let directory = try DirectoryHandle(path: folder.path)
        let disk = FakeFileSystem(10 << 20)
        let ledger = disk.ledger
        let unknown = try ledger.reserve(0, limit: nil, in: directory)
        try unknown.cover(upTo: 1 << 20)
        disk.write(1 << 20)
        #expect(try ledger.unreserved(in: directory) == 0, "it grew by what was free (less than a growth step)")
        #expect(throws: IronicError.self) { _ = try ledger.reserve(1, limit: 1, in: directory) }
        unknown.release()
        let other = try ledger.reserve(8 << 20, limit: 8 << 20, in: directory)
        let second = try ledger.reserve(0, limit: nil, in: directory)
        try second.cover(upTo: 1 << 20)  // the last free MiB
        disk.write(1 << 20)
        #expect { try second.cover(upTo: (1 << 20) + 1) } throws: { Self.isInsufficient($0) }
        _ = other
    }

    @Test("a download sink covers each write: a write past the announced size fails the sink and is not written")
    func sinkCoversWrites() async throws {
        let folder = try TemporaryDirectory(prefix: "ledger")
        defer { folder.remove() }
        let directory = try DirectoryHandle(path: folder.path)
        let reservation = try FakeFileSystem(1 << 30).ledger.reserve(1000, limit: 1000, in: directory)
        let staging = StagingFile(in: directory, finalName: "disk")
        defer { staging.discard() }
        let sink = try DownloadSink(file: try staging.create(), algorithms: [.sha256], reservation: reservation)
        try await sink.write(ByteBuffer(bytes: [UInt8](repeating: 1, count: 800)))
        try await sink.write(ByteBuffer(bytes: [UInt8](repeating: 2, count: 800)))
        await #expect(throws: DiskReservation.Overrun.self) { try await sink.drain() }
        sink.abandon()
        #expect(try staging.status()?.st_size == 800)
    }
}
