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
