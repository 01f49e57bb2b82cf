/// OS threads for blocking work that grow with demand and are kept for reuse: a job runs at once
/// on an idle thread, or on a new one when none is idle, so a long copy never makes a short call
/// wait, and a short call does not pay for creating a thread.
///
/// Written by hand because neither available pool does both: swift-nio's `NIOThreadPool` has a
/// fixed number of threads (a few long copies would queue every short call behind them, and
/// blocking waits on file locks could wait on work queued behind them), and on Linux a concurrent
/// `DispatchQueue` stops adding threads at about five (measured here: 64 half-second sleeps took
/// 6 s).
public final class ElasticThreadPool: @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `lock`.
    private let lock = ConditionLock()
    private let name: String
    private let maximumIdle: Int
    private var pending: [Job] = []
    private var idle = 0

    /// A pool whose threads are named `name` and of which at most `maximumIdle` wait for work.
    public init(name: String, maximumIdle: Int) {
        self.name = name
        self.maximumIdle = maximumIdle
    }

    /// Runs `job` on an idle thread, or on a new one.
    public func submit(_ body: @escaping () -> Void) throws(SystemCallError) {
        let job = Job(body)
        let needsThread = lock.withLock { () -> Bool in
            pending.append(job)
            // Each idle thread takes one pending job; more jobs than that need a thread more.
            if idle >= pending.count {
                lock.signal()
                return false
            }
            return true
        }
        guard needsThread else { return }
        do throws(SystemCallError) {
            try DetachedThread.start(name: name) { self.serve() }
        } catch {
            // No thread: take the job back unless an idle thread took it meanwhile.
            let taken = lock.withLock { () -> Bool in
                guard let index = pending.lastIndex(where: { $0 === job }) else { return true }
                pending.remove(at: index)
                return false
            }
            if !taken { throw error }
        }
    }

    private func serve() {
        lock.lock()
        while true {
            if pending.isEmpty {
                guard idle < maximumIdle else { break }
                idle += 1
                while pending.isEmpty { lock.wait() }
                idle -= 1
            }
            let job = pending.removeFirst()
            lock.unlock()
            job.run()
            lock.lock()
        }
        lock.unlock()
    }

    private final class Job {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }
}
