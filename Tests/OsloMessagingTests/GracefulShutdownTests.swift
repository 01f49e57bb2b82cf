import AMQPModel
import Logging
import ServiceLifecycleTestKit
import Testing
@testable import OsloMessaging
import NIOConcurrencyHelpers
import OsloJSON

@Suite("RPC server graceful shutdown")
struct GracefulShutdownTests {
    /// Settlements by delivery tag, collected until the server returns.
    actor Settlements {
        var acked: Set<UInt64> = []
        var requeued: Set<UInt64> = []
        func record(_ event: InMemoryOsloTransport.Event) {
            switch event {
            case .acknowledged(let tag): acked.insert(tag)
            case .rejected(let tag, true): requeued.insert(tag)
            default: break
            }
        }
    }

    func cast(_ method: String) -> [UInt8] {
        OsloEnvelope.wrap(["method": .string(method), "args": [:], "version": "1.0"])
    }

    /// Runs a server with 2 slots, delivers 3 slow casts, triggers shutdown once 2 are running.
    func shutDown(slow: Duration, grace: Duration) async throws -> (Settlements, Duration) {
        let transport = InMemoryOsloTransport()
        let endpoint = TestEndpoint(slowDuration: slow)
        let server = RPCServer(transport: transport, endpoint: endpoint,
                               configuration: .init(maximumConcurrentRequests: 2, gracefulShutdownTimeout: grace), logger: Logger(label: "test"))
        let settlements = Settlements()
        let clock = ContinuousClock()
        var elapsed = Duration.zero
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { for await event in transport.events { await settlements.record(event) } }
                for _ in 0..<3 { transport.deliver(body: cast("slow")) }
                group.addTask {
                    while endpoint.running.withLockedValue({ $0.now }) < 2 { try await Task.sleep(for: .milliseconds(10)) }
                    trigger.triggerGracefulShutdown()
                }
                elapsed = try await clock.measure { try await server.run() }
                transport.finish()  // ends the event stream after the recorder has read it all
                try await group.waitForAll()
            }
        }
        #expect(endpoint.running.withLockedValue { $0.peak } == 2, "the third request must not start after the shutdown signal")
        return (settlements, elapsed)
    }

    @Test("running requests finish within the grace period and are acknowledged; the waiting one is not taken")
    func drains() async throws {
        let (settlements, _) = try await shutDown(slow: .milliseconds(300), grace: .seconds(10))
        #expect(await settlements.acked == [1, 2])
        #expect(await settlements.requeued.isEmpty)
    }

    @Test("past the grace period running requests are cancelled and requeued, and the server returns")
    func graceOver() async throws {
        // The requests would run for five minutes: returning within one proves they were cancelled
        // at the end of the grace period, with room for a busy machine.
        let (settlements, elapsed) = try await shutDown(slow: .seconds(300), grace: .milliseconds(300))
        #expect(await settlements.acked.isEmpty)
        #expect(await settlements.requeued == [1, 2])
        #expect(elapsed < .seconds(60))
    }
}
