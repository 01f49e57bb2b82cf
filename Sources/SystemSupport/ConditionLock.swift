#if canImport(Glibc)
import Glibc
#endif

/// A pthread mutex and condition variable: Swift's `Mutex` has no condition to wait on, and the
/// threads of a download sink or the blocking-work pool must sleep until work arrives.
public final class ConditionLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    /// A lock and its condition.
    public init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Takes the lock.
    public func lock() { pthread_mutex_lock(mutex) }
    /// Releases the lock.
    public func unlock() { pthread_mutex_unlock(mutex) }
    /// Waits for a signal; call with the lock held.
    public func wait() { pthread_cond_wait(condition, mutex) }
    /// Wakes the waiting threads; call with the lock held.
    public func broadcast() { pthread_cond_broadcast(condition) }
    /// Wakes one waiting thread; call with the lock held.
    public func signal() { pthread_cond_signal(condition) }

    /// Runs `body` with the lock held.
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
