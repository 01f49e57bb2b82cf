import SystemSupport
import CFileSystem
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Where a download's bytes go: two dedicated threads, one writing each chunk to the staging file
/// and one feeding the digests, so that neither blocking writes nor hashing run on Swift's
/// cooperative threads, and receiving, writing and hashing overlap (on two cores the hash, the
/// slowest of the three, sets the pace). The writer also starts the kernel's write-back every
/// 32 MiB (`sync_file_range`), so that the final `fsync` finds little left to do.
///
/// The queue is bounded in bytes held: a producer that gets ahead waits (asynchronously), which
/// stops reading from the socket, which slows the server down — memory stays flat whatever the
/// image size. A chunk leaves the queue once both threads are done with it.
final class DownloadSink: @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `lock`, except `digest`, which only the hasher
    // thread touches while chunks are pending, and callers once `drain()` returned.
    private let file: OwnedDescriptor
    private let algorithms: Set<HashAlgorithm>
    private let capacityBytes: Int
    /// Buffers held at most: each pins its whole backing storage (up to a receive buffer, 1 MiB),
    /// however few bytes of it are readable.
    private let capacityBuffers: Int
    /// Covers every write before it is made (nil: nothing reserved, as in tests).
    private let reservation: DiskReservation?
    private let lock = ConditionLock()

    /// Chunks not yet both written and hashed, oldest first.
    private var queue: [ByteBuffer] = []
    private var queuedBytes = 0
    /// How many of `queue`'s chunks the writer, and the hasher, finished.
    private var writerDone = 0
    private var hasherDone = 0
    private var writerBusy = false
    private var hasherBusy = false
    private var closed = false
    private var failure: (any Error)?
    private var spaceWaiters: [CheckedContinuation<Void, Never>] = []
    private var drainWaiters: [CheckedContinuation<Void, Never>] = []
    private var digest: MultiDigest
    private var writtenBytes: Int64 = 0
    private var writeBackStart: Int64 = 0
    /// Bumped when `abandon()` empties the queue, so that a thread finishing a chunk taken before
    /// does not count it against the emptied queue.
    private var epoch = 0

    /// Bytes written between two write-back starts.
    private static let writeBackInterval: Int64 = 32 << 20

    /// Starts the writer and hasher threads for `file`, computing `algorithms` over what is written;
    /// each write is covered by `reservation` first (on the writer thread: growing it may `statvfs`).
    init(file: OwnedDescriptor, algorithms: Set<HashAlgorithm>, reservation: DiskReservation? = nil,
         capacityBytes: Int = 8 << 20, capacityBuffers: Int = 8) throws {
        self.file = file
        self.reservation = reservation
        self.algorithms = algorithms
        self.capacityBytes = capacityBytes
        self.capacityBuffers = capacityBuffers
        self.digest = try MultiDigest(algorithms)
        try DetachedThread.start(name: "download-writer") { self.run(.writer) }
        do {
            try DetachedThread.start(name: "download-hasher") { self.run(.hasher) }
        } catch {
            abandon()
            throw error
        }
    }

    /// Bytes written so far (once drained, the file's size).
    var written: Int64 { lock.withLock { writtenBytes } }

    /// Hands a chunk over; waits while the queue is full. Throws the writer's error, if any.
    func write(_ buffer: ByteBuffer) async throws {
        guard buffer.readableBytes > 0 else { return }
        while true {
            let outcome: WriteOutcome = lock.withLock {
                if let failure { return .failed(failure) }
                if closed { return .failed(CancellationError()) }  // abandoned: the threads are gone
                if isFull(adding: buffer) { return .full }
                queue.append(buffer)
                queuedBytes += buffer.readableBytes
                lock.broadcast()
                return .queued
            }
            switch outcome {
            case .queued: return
            case .failed(let error): throw error
            case .full:
                await withCheckedContinuation { continuation in
                    let resumeNow = lock.withLock { () -> Bool in
                        if failure != nil || closed || !isFull(adding: buffer) { return true }
                        spaceWaiters.append(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
        }
    }

    /// Whether `buffer` must wait (call with the lock held). An empty queue always takes one.
    private func isFull(adding buffer: ByteBuffer) -> Bool {
        !queue.isEmpty && (queue.count >= capacityBuffers || queuedBytes + buffer.readableBytes > capacityBytes)
    }

    private enum WriteOutcome {
        case queued, full
        case failed(any Error)
    }

    /// Whether both threads are done with everything handed over (call with the lock held).
    private var isIdle: Bool { queue.isEmpty && !writerBusy && !hasherBusy }

    /// Waits until every chunk handed over is written and hashed.
    func drain() async throws {
        await withCheckedContinuation { continuation in
            let idle = lock.withLock { () -> Bool in
                if isIdle { return true }
                drainWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
        if let failure = lock.withLock({ failure }) { throw failure }
    }

    /// Starts over: empties the file and the digests (the server would not resume).
    func restart() async throws {
        try await drain()
        // Freeing a large file's extents takes long: off the cooperative pool (the threads are idle).
        _ = try await BlockingWork.run { [file] _ in
            try SystemCallError.check(ftruncate(file.rawValue, 0), "truncate", "the staging file")
        }
        try reservation?.cover(upTo: 0)
        let fresh = try MultiDigest(algorithms)
        lock.withLock {
            writtenBytes = 0
            writeBackStart = 0
            digest = fresh
        }
    }

    /// Drains, flushes the file to disk and returns the digests; the threads end.
    func finish() async throws -> [HashAlgorithm: String] {
        try await drain()
        // fsync waits for every dirty page and a journal commit: seconds on a slow disk.
        try await BlockingWork.run { [file] _ in try file.sync() }
        return lock.withLock {
            closed = true
            lock.broadcast()
            return digest.finalize()
        }
    }

    /// Stops the threads without flushing (the download failed); anyone waiting goes on.
    func abandon() {
        let waiters = lock.withLock {
            closed = true
            queue.removeAll()
            queuedBytes = 0
            writerDone = 0
            hasherDone = 0
            epoch += 1
            lock.broadcast()
            defer { spaceWaiters = []; drainWaiters = [] }
            return spaceWaiters + drainWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private enum Role {
        case writer, hasher
    }

    private func run(_ role: Role) {
        while true {
            lock.lock()
            while (role == .writer ? writerDone : hasherDone) >= queue.count && !closed { lock.wait() }
            let index = role == .writer ? writerDone : hasherDone
            if closed && index >= queue.count {
                lock.unlock()
                return
            }
            let buffer = queue[index]
            let taken = epoch
            let offset = writtenBytes
            let alreadyFailed = failure != nil
            if role == .writer { writerBusy = true } else { hasherBusy = true }
            lock.unlock()

            var error: (any Error)? = nil
            if !alreadyFailed {
                buffer.withUnsafeReadableBytes { bytes in
                    switch role {
                    case .writer:
                        do {
                            try reservation?.cover(upTo: offset + Int64(bytes.count))
                            try writeAll(file.rawValue, bytes, offset: offset)
                        } catch let caught {
                            error = caught
                        }
                    case .hasher:
                        digest.update(bytes)
                    }
                }
            }

            lock.lock()
            if role == .writer {
                writerBusy = false
                if let error, failure == nil { failure = error }
                if failure == nil { writtenBytes += Int64(buffer.readableBytes) }
            } else {
                hasherBusy = false
            }
            // Counts stay relative to the queue's head, which the other thread may have moved
            // meanwhile; `abandon()` may have emptied it, and then there is nothing to count.
            if taken == epoch {
                if role == .writer { writerDone += 1 } else { hasherDone += 1 }
            }
            let writeBack = role == .writer && failure == nil && writtenBytes - writeBackStart >= Self.writeBackInterval
                ? (writeBackStart, writtenBytes - writeBackStart) : nil
            if let writeBack { writeBackStart += writeBack.1 }
            let (space, drained) = releaseFinished()
            lock.unlock()
            if let (start, length) = writeBack {
                // Asynchronous: it only queues the range for writing, so the final fsync is short.
                _ = iw_start_write_back(file.rawValue, start, length)
            }
            for waiter in space { waiter.resume() }
            for waiter in drained { waiter.resume() }
        }
    }

    /// Drops the chunks both threads finished; returns who may now go on (call with the lock held).
    private func releaseFinished() -> ([CheckedContinuation<Void, Never>], [CheckedContinuation<Void, Never>]) {
        let done = min(writerDone, hasherDone)
        var space: [CheckedContinuation<Void, Never>] = []
        if done > 0 {
            for chunk in queue[..<done] { queuedBytes -= chunk.readableBytes }
            queue.removeFirst(done)
            writerDone -= done
            hasherDone -= done
            space = spaceWaiters
            spaceWaiters = []
        }
        var drained: [CheckedContinuation<Void, Never>] = []
        if isIdle {
            drained = drainWaiters
            drainWaiters = []
        }
        return (space, drained)
    }
}
