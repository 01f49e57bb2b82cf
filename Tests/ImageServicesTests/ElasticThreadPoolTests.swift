import SystemSupport
import Foundation
import NIOConcurrencyHelpers
import Synchronization
import Testing
@testable import ImageServices

@Suite("elastic thread pool for blocking work")
struct ElasticThreadPoolTests {
    @Test("jobs blocked until a later job runs do not stop it: busy threads never make a job wait")
    func neverQueuesBehindBusyThreads() async throws {
        let pool = ElasticThreadPool(name: "test", maximumIdle: 4)
        let release = DispatchSemaphore(value: 0)
        let finished = Atomic<Int>(0)
        let blocked = 40
        for _ in 0..<blocked {
            try pool.submit {
                release.wait()
                finished.add(1, ordering: .relaxed)
            }
        }
        // With a fixed or capped pool (a concurrent DispatchQueue on Linux stops near five
        // threads) this job would never run and the blocked ones would wait forever.
        try pool.submit { for _ in 0..<blocked { release.signal() } }
        let deadline = ContinuousClock.now + .seconds(30)
        while finished.load(ordering: .relaxed) < blocked && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(finished.load(ordering: .relaxed) == blocked)
    }

    @Test("idle threads are reused: one job after another runs on the same few threads")
    func reusesIdleThreads() async throws {
        let pool = ElasticThreadPool(name: "test", maximumIdle: 4)
        let threads = NIOLockedValueBox<Set<UInt>>([])
        for _ in 0..<100 {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                do {
                    try pool.submit {
                        threads.withLockedValue { _ = $0.insert(UInt(pthread_self())) }  // pthread_t is an integer on Linux
                        continuation.resume()
                    }
                } catch {
                    Issue.record("submit failed: \(error)")
                    continuation.resume()
                }
            }
        }
        // A job may be handed to a new thread while the previous one is still on its way back
        // to idle, and on a busy machine that race is won now and then (5 threads were seen in a
        // loaded run); a thread per job would give 100.
        let count = threads.withLockedValue { $0.count }
        #expect(count >= 1 && count <= 20, "\(count) threads for 100 jobs in sequence")
    }
}
