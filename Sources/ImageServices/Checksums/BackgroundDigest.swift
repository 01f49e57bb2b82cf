import SystemSupport

/// A digest computed on a thread of its own: ``update(_:)`` copies the bytes into one of a few
/// buffers and returns, so that the caller's work (decompressing and writing an image) and the
/// hashing of what it makes run on two cores at once. The buffers bound the memory (4 MiB); when
/// all are waiting to be hashed, ``update(_:)`` waits. One producer thread; blocking.
public final class BackgroundDigest {
    /// The buffers and their queue, shared with the hashing thread (which must not keep the
    /// owner alive: an owner dropped without ``finalize()`` stops the thread in `deinit`).
    private final class Channel: @unchecked Sendable {
        // @unchecked: every field is read and written under `lock`.
        let lock = ConditionLock()
        var free: [UnsafeMutableRawBufferPointer]
        var queued: [(buffer: UnsafeMutableRawBufferPointer, count: Int)] = []
        var closed = false

        init(buffers: [UnsafeMutableRawBufferPointer]) { free = buffers }
    }

    private let channel: Channel
    private let buffers: [UnsafeMutableRawBufferPointer]
    private var thread: ThreadResult<[HashAlgorithm: String]>?
    private var current: UnsafeMutableRawBufferPointer?
    private var filled = 0
    private var finalized = false

    /// Starts the hashing thread for `algorithms`.
    public init(_ algorithms: Set<HashAlgorithm>, bufferSize: Int = 1 << 20, bufferCount: Int = 4) throws {
        let digest = try MultiDigest(algorithms)
        buffers = (0..<bufferCount).map { _ in .allocate(byteCount: bufferSize, alignment: 4096) }
        let channel = Channel(buffers: buffers)
        self.channel = channel
        thread = try ThreadResult("image-hash") {
            var digest = digest
            while true {
                channel.lock.lock()
                while channel.queued.isEmpty && !channel.closed { channel.lock.wait() }
                guard !channel.queued.isEmpty else {
                    channel.lock.unlock()
                    return digest.finalize()
                }
                let (buffer, count) = channel.queued.removeFirst()
                channel.lock.unlock()
                digest.update(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
                channel.lock.withLock {
                    channel.free.append(buffer)
                    channel.lock.broadcast()
                }
            }
        }
        // A throw above still runs deinit (every property is set), which frees the buffers.
    }

    deinit {
        if !finalized && thread != nil { _ = try? finalize() }
        for buffer in buffers { buffer.deallocate() }
    }

    /// Hashes `bytes` (after those given before), copying them first.
    public func update(_ bytes: UnsafeRawBufferPointer) {
        precondition(!finalized, "BackgroundDigest.update after finalize")
        var start = 0
        while start < bytes.count {
            let buffer = current ?? takeFree()
            current = buffer
            let count = min(bytes.count - start, buffer.count - filled)
            UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<(filled + count)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + count)]))
            filled += count
            start += count
            if filled == buffer.count { handOver() }
        }
    }

    /// Waits for every byte to be hashed; returns the digests. Call it once.
    public func finalize() throws -> [HashAlgorithm: String] {
        precondition(!finalized, "BackgroundDigest.finalize called twice")
        finalized = true
        if current != nil { handOver() }
        channel.lock.withLock {
            channel.closed = true
            channel.lock.broadcast()
        }
        guard let thread else { return [:] }
        self.thread = nil
        return try thread.wait()
    }

    private func takeFree() -> UnsafeMutableRawBufferPointer {
        channel.lock.lock()
        defer { channel.lock.unlock() }
        while channel.free.isEmpty { channel.lock.wait() }
        filled = 0
        return channel.free.removeLast()
    }

    private func handOver() {
        guard let buffer = current else { return }
        let count = filled
        current = nil
        filled = 0
        channel.lock.withLock {
            channel.queued.append((buffer, count))
            channel.lock.broadcast()
        }
    }
}
