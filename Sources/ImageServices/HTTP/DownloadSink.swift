import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Where a download's bytes go: a dedicated thread writes each chunk to the staging file and feeds
/// the digests, so neither blocking writes nor hashing run on Swift's cooperative threads, and
/// receiving the next chunk overlaps with writing and hashing the last one.
///
/// The queue is bounded in bytes held: a producer that gets ahead waits (asynchronously), which
/// stops reading from the socket, which slows the server down — memory stays flat whatever the
/// image size.
final class DownloadSink: @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `lock`, and the file descriptor and digest are
    // touched only by the sink thread while it runs, or by callers after `drain()` returned.
    private let file: OwnedDescriptor
    private let algorithms: Set<HashAlgorithm>
    private let capacityBytes: Int
    /// Buffers held at most: each pins its whole backing storage (up to a receive buffer, 1 MiB),
    /// however few bytes of it are readable.
    private let capacityBuffers: Int
    private let lock = ConditionLock()

    private var queue: [ByteBuffer] = []
    private var queuedBytes = 0
    private var busy = false
    private var closed = false
    private var failure: Error?
    private var spaceWaiters: [CheckedContinuation<Void, Never>] = []
    private var drainWaiters: [CheckedContinuation<Void, Never>] = []
    private var digest: MultiDigest
    private var writtenBytes: Int64 = 0

    /// Starts the sink thread for `file`, computing `algorithms` over what is written.
    init(file: OwnedDescriptor, algorithms: Set<HashAlgorithm>, capacityBytes: Int = 8 << 20, capacityBuffers: Int = 8) throws {
        self.file = file
        self.algorithms = algorithms
        self.capacityBytes = capacityBytes
        self.capacityBuffers = capacityBuffers
        self.digest = MultiDigest(algorithms)
        try DetachedThread.start("a download writer") { self.run() }
    }

    /// Bytes written so far (once drained, the file's size).
    var written: Int64 { lock.withLock { writtenBytes } }

    /// Hands a chunk over; waits while the queue is full. Throws the writer's error, if any.
    func write(_ buffer: ByteBuffer) async throws {
        guard buffer.readableBytes > 0 else { return }
        while true {
            let outcome: WriteOutcome = lock.withLock {
                if let failure { return .failed(failure) }
                if isFull(adding: buffer) { return .full }
                queue.append(buffer)
                queuedBytes += buffer.readableBytes
                lock.signal()
                return .queued
            }
            switch outcome {
            case .queued: return
            case .failed(let error): throw error
            case .full:
                await withCheckedContinuation { continuation in
                    let resumeNow = lock.withLock { () -> Bool in
                        if failure != nil || !isFull(adding: buffer) { return true }
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
        case failed(Error)
    }

    /// Waits until every chunk handed over is written and hashed.
    func drain() async throws {
        await withCheckedContinuation { continuation in
            let idle = lock.withLock { () -> Bool in
                if queue.isEmpty && !busy { return true }
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
        try lock.withLock {
            guard ftruncate(file.rawValue, 0) == 0 else { throw SystemCallError(call: "truncate", subject: "the staging file", errno: errno) }
            writtenBytes = 0
            digest = MultiDigest(algorithms)
        }
    }

    /// Drains, flushes the file to disk and returns the digests; the thread ends.
    func finish() async throws -> [HashAlgorithm: String] {
        try await drain()
        try file.sync()
        return lock.withLock {
            closed = true
            lock.signal()
            return digest.finalize()
        }
    }

    /// Stops the thread without flushing (the download failed).
    func abandon() {
        lock.withLock {
            closed = true
            queue.removeAll()
            queuedBytes = 0
            lock.signal()
        }
    }

    private func run() {
        while true {
            lock.lock()
            while queue.isEmpty && !closed { lock.wait() }
            if queue.isEmpty && closed {
                lock.unlock()
                return
            }
            let buffer = queue.removeFirst()
            busy = true
            let offset = writtenBytes
            let alreadyFailed = failure != nil
            lock.unlock()

            var error: Error? = nil
            if !alreadyFailed {
                buffer.withUnsafeReadableBytes { bytes in
                    do {
                        try writeAll(file.rawValue, bytes, offset: offset)
                        digest.update(bytes)
                    } catch let caught {
                        error = caught
                    }
                }
            }

            lock.lock()
            busy = false
            queuedBytes -= buffer.readableBytes
            if let error, failure == nil { failure = error }
            if failure == nil { writtenBytes += Int64(buffer.readableBytes) }
            let waiters = spaceWaiters
            spaceWaiters = []
            let drained = queue.isEmpty ? drainWaiters : []
            if queue.isEmpty { drainWaiters = [] }
            lock.unlock()
            for waiter in waiters { waiter.resume() }
            for waiter in drained { waiter.resume() }
        }
    }
}

/// A pthread mutex and condition variable (Swift's `Mutex` has no condition to wait on, and the
/// sink thread must sleep until work arrives).
final class ConditionLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
    /// Waits for a signal; call with the lock held.
    func wait() { pthread_cond_wait(condition, mutex) }
    /// Wakes the waiting thread; call with the lock held.
    func signal() { pthread_cond_signal(condition) }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
