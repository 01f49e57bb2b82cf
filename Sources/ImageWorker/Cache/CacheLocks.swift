import SystemSupport
import ImageServices
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Single flight per cache key inside the process: one task works on a key, the others wait
/// (without occupying a thread) and then find the master it made.
final class KeyedLock: Sendable {
    private let waiters = NIOLockedValueBox([String: [CheckedContinuation<Void, Never>]]())

    /// Waits for `key`, holds it while `body` runs.
    func withLock<T: Sendable>(_ key: String, _ body: () async throws -> T) async throws -> T {
        await acquire(key)
        defer { release(key) }
        return try await body()
    }

    private func acquire(_ key: String) async {
        await withCheckedContinuation { continuation in
            let free = waiters.withLockedValue { waiters -> Bool in
                guard waiters[key] != nil else {
                    waiters[key] = []
                    return true
                }
                waiters[key]!.append(continuation)
                return false
            }
            if free { continuation.resume() }
        }
    }

    private func release(_ key: String) {
        let next = waiters.withLockedValue { waiters -> CheckedContinuation<Void, Never>? in
            guard var queue = waiters[key], !queue.isEmpty else {
                waiters[key] = nil
                return nil
            }
            let first = queue.removeFirst()
            waiters[key] = queue
            return first
        }
        next?.resume()
    }
}

/// Single flight per cache key across the worker processes that share the cache folder:
/// `flock(2)` on `<cache>/.locks/<key>.lock`, held while its descriptor is open.
struct CacheFileLock: Sendable {
    let descriptor: OwnedDescriptor

    /// Waits (on a thread of its own: it may take as long as another process's download) for the lock.
    static func acquire(in locks: DirectoryHandle, key: String) async throws -> CacheFileLock {
        let descriptor = try open(locks, key)
        try await BlockingWork.run { _ in
            while flock(descriptor.rawValue, LOCK_EX) != 0 {
                guard errno == EINTR else { throw SystemCallError(call: "flock", subject: "\(key).lock", errno: errno) }
            }
        }
        return CacheFileLock(descriptor: descriptor)
    }

    /// The lock if nobody holds it, else nil (eviction skips what is in use).
    static func tryAcquire(in locks: DirectoryHandle, key: String) throws -> CacheFileLock? {
        let descriptor = try open(locks, key)
        guard flock(descriptor.rawValue, LOCK_EX | LOCK_NB) == 0 else { return nil }
        return CacheFileLock(descriptor: descriptor)
    }

    private static func open(_ locks: DirectoryHandle, _ key: String) throws -> OwnedDescriptor {
        let fd = try SystemCallError.check(openat(locks.descriptor.rawValue, "\(key).lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600), "open", "\(locks.path)/\(key).lock")
        return OwnedDescriptor(fd)
    }
}
