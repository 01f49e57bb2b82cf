#if canImport(Glibc)
import Glibc
#endif

/// Starts an OS thread that runs a closure and ends (for blocking work kept off Swift's
/// cooperative pool).
enum DetachedThread {
    static func start(_ name: String, _ body: @escaping () -> Void) throws(SystemCallError) {
        let box = Unmanaged.passRetained(Body(body))
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { argument in
            Unmanaged<Body>.fromOpaque(argument!).takeRetainedValue().run()
            return nil
        }, box.toOpaque())
        guard status == 0 else {
            box.release()
            throw SystemCallError(call: "pthread_create", subject: name, errno: status)
        }
        pthread_detach(thread)
    }

    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }
}

/// Work running on a thread of its own whose result another thread waits for (blocking), so that
/// two blocking jobs — copying and hashing one file — run side by side.
final class ThreadResult<Value>: @unchecked Sendable {
    // @unchecked: `result` is written once by the worker thread and read after it, both under `lock`.
    private let lock = ConditionLock()
    private var result: Result<Value, Error>?

    /// Starts `body` on a new thread.
    init(_ name: String, _ body: @escaping () throws -> Value) throws {
        try DetachedThread.start(name) {
            let outcome = Result { try body() }
            self.lock.withLock {
                self.result = outcome
                self.lock.broadcast()
            }
        }
    }

    /// Blocks until the work ends; returns its value or throws its error.
    func wait() throws -> Value {
        lock.lock()
        while result == nil { lock.wait() }
        let outcome = result!
        lock.unlock()
        return try outcome.get()
    }
}
