import CFileSystem

#if canImport(Glibc)
import Glibc
#endif

/// Starts an OS thread, named, that runs a closure and ends: the one way the worker starts
/// threads (the AMQP connection's, a download's writer and hasher, the blocking-work pool's), so
/// that blocking work stays off Swift's cooperative pool. Foundation's `Thread` would do, but
/// cannot name the thread as `top -H` and crash reports show it, nor report a failure to start.
public enum DetachedThread {
    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept).
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemCallError) {
        let box = Unmanaged.passRetained(Body(name: name, run: body))
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { argument in
            let body = Unmanaged<Body>.fromOpaque(argument!).takeRetainedValue()
            iw_set_thread_name(String(body.name.utf8.prefix(15)) ?? "image-worker")
            body.run()
            return nil
        }, box.toOpaque())
        guard status == 0 else {
            box.release()
            throw SystemCallError(call: "pthread_create", subject: name, errno: status)
        }
        pthread_detach(thread)
    }

    private final class Body {
        let name: String
        let run: @Sendable () -> Void
        init(name: String, run: @escaping @Sendable () -> Void) {
            self.name = name
            self.run = run
        }
    }
}

/// Work running on a thread of its own whose result another thread waits for (blocking), so that
/// two blocking jobs — copying and hashing one file — run side by side.
public final class ThreadResult<Value>: @unchecked Sendable {
    // @unchecked: `result` is written once by the worker thread and read after it, both under `lock`.
    private let lock = ConditionLock()
    private var result: Result<Value, any Error>?

    /// Starts `body` on a new thread.
    public init(_ name: String, _ body: @escaping () throws -> Value) throws {
        nonisolated(unsafe) let body = body
        try DetachedThread.start(name: name) {
            let outcome = Result { try body() }
            self.lock.withLock {
                self.result = outcome
                self.lock.broadcast()
            }
        }
    }

    /// Blocks until the work ends; returns its value or throws its error.
    public func wait() throws -> Value {
        lock.lock()
        while result == nil { lock.wait() }
        let outcome = result!
        lock.unlock()
        return try outcome.get()
    }
}
