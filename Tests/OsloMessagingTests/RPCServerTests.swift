import AMQP
import Logging
import Synchronization
import Testing
@testable import OsloMessaging

/// An endpoint for the server tests: `echo` returns its args, `fail` fails, `slow` sleeps,
/// `crash` throws (the outcome could not be made durable).
final class TestEndpoint: RPCEndpoint {
    let version = RPCVersion(major: 1, minor: 3)
    let methods: Set<String> = ["echo", "fail", "slow", "crash"]
    let refusals = Mutex<[RPCRefusal]>([])
    let running = Mutex((now: 0, peak: 0))
    let slowDuration: Duration

    init(slowDuration: Duration = .milliseconds(300)) {
        self.slowDuration = slowDuration
    }

    func dispatch(_ request: RPCRequest, delivery: RequestDelivery) async throws -> Result<JSONValue, RemoteFailure> {
        running.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
        defer { running.withLock { $0.now -= 1 } }
        switch request.method {
        case "echo": return .success(.object(request.args))
        case "fail": return .failure(.ironic("ImageNotFound", message: "Image x could not be found.", httpStatus: 404))
        case "slow":
            try await Task.sleep(for: slowDuration)
            return .success("done")
        default: throw CancellationError()
        }
    }

    func refused(_ refusal: RPCRefusal, delivery: RequestDelivery) async throws {
        refusals.withLock { $0.append(refusal) }
    }
}

@Suite("RPC server on the in-memory transport")
struct RPCServerTests {
    /// Runs a server, delivers requests, and returns the first `count` transport events.
    func run(_ requests: [[UInt8]], contentType: String? = "application/json", endpoint: TestEndpoint = TestEndpoint(),
             configuration: RPCServer.Configuration = .init(), expecting count: Int) async throws -> [InMemoryOsloTransport.Event] {
        let transport = InMemoryOsloTransport()
        let server = RPCServer(transport: transport, endpoint: endpoint, configuration: configuration, logger: Logger(label: "test"))
        return try await withThrowingTaskGroup(of: [InMemoryOsloTransport.Event]?.self) { group in
            group.addTask {
                try await server.run()
                return nil
            }
            group.addTask {
                var events: [InMemoryOsloTransport.Event] = []
                for await event in transport.events {
                    events.append(event)
                    if events.count == count { break }
                }
                return events
            }
            group.addTask {
                try await Task.sleep(for: .seconds(20))
                return nil
            }
            for body in requests { transport.deliver(body: body, contentType: contentType) }
            var collected: [InMemoryOsloTransport.Event]? = nil
            while collected == nil, let next = try await group.next() {
                collected = next
                if next == nil { break }
            }
            transport.finish()
            group.cancelAll()
            return try #require(collected, "the server did not produce \(count) events in time")
        }
    }

    func call(_ method: String, args: JSONObject = [:], version: String = "1.0", timeout: Double? = nil, id: String = "m1") -> [UInt8] {
        var message: JSONObject = ["method": .string(method), "args": .object(args), "version": .string(version),
                                   "_msg_id": .string(id), "_reply_q": "reply_q", "_unique_id": .string("u-\(id)"), "_context_request_id": "req-1"]
        if let timeout { message["_timeout"] = .double(timeout) }
        return OsloEnvelope.wrap(message)
    }

    func cast(_ method: String, args: JSONObject = [:]) -> [UInt8] {
        OsloEnvelope.wrap(["method": .string(method), "args": .object(args), "version": "1.0", "_unique_id": "u1"])
    }

    func reply(_ event: InMemoryOsloTransport.Event) -> RPCReply? {
        if case .reply(let reply, _) = event { return reply }
        return nil
    }

    @Test("a cast runs and is acknowledged, with no reply")
    func castIsAcked() async throws {
        let events = try await run([cast("echo", args: ["a": 1])], expecting: 1)
        guard case .acknowledged(1) = events[0] else { Issue.record("expected an ack, got \(events)"); return }
    }

    @Test("a call is replied to, then acknowledged")
    func callRepliedThenAcked() async throws {
        let events = try await run([call("echo", args: ["x": "y"])], expecting: 2)
        let first = try #require(reply(events[0]))
        #expect(first.result == ["x": "y"])
        #expect(first.failure == nil)
        #expect(first.ending)
        #expect(first.messageID == "m1")
        guard case .acknowledged = events[1] else { Issue.record("the ack must come after the reply: \(events)"); return }
    }

    @Test("a failed call carries the failure; an endpoint's compatible minor versions are served")
    func failure() async throws {
        let events = try await run([call("fail", version: "1.3")], expecting: 2)
        let failure = try #require(reply(events[0])?.failure)
        #expect(failure.className == "ImageNotFound")
        #expect(failure.module == "ironic.common.exception")
        #expect(failure.kwargs["code"] == 404)
    }

    @Test("unknown, private and unsupported-version requests are refused as oslo does", arguments: [
        ("nope", "1.0", "NoSuchMethod"),
        ("_echo", "1.0", "NoSuchMethod"),
        ("echo", "1.4", "UnsupportedVersion"),
        ("echo", "2.0", "UnsupportedVersion"),
    ])
    func refusals(method: String, version: String, expected: String) async throws {
        let endpoint = TestEndpoint()
        let events = try await run([call(method, version: version)], endpoint: endpoint, expecting: 2)
        let failure = try #require(reply(events[0])?.failure)
        #expect(failure.className == expected)
        #expect(failure.module == "oslo_messaging.rpc.dispatcher")
        guard case .acknowledged = events[1] else { Issue.record("refusals are acknowledged"); return }
        #expect(endpoint.refusals.withLock { $0.count } == 1)
        #expect(endpoint.refusals.withLock { $0.first?.malformed } == false)
    }

    @Test("a malformed message is reported to the endpoint and acknowledged")
    func malformedAcked() async throws {
        let endpoint = TestEndpoint()
        let events = try await run([Array("{nope".utf8)], endpoint: endpoint, expecting: 1)
        guard case .acknowledged = events[0] else { Issue.record("expected an ack: \(events)"); return }
        let refusal = try #require(endpoint.refusals.withLock { $0.first })
        #expect(refusal.malformed)
        #expect(refusal.failure.className == "InvalidParameterValue")
        #expect(refusal.failure.kwargs["code"] == 400)
    }

    @Test("a malformed call with readable ids gets an InvalidParameterValue reply; dead-lettering rejects it")
    func malformedCallDeadLettered() async throws {
        let body = OsloEnvelope.wrap(["args": [:], "_msg_id": "m9", "_reply_q": "reply_q"])
        let events = try await run([body], configuration: .init(deadLetterMalformedRequests: true), expecting: 2)
        #expect(reply(events[0])?.failure?.className == "InvalidParameterValue")
        guard case .rejected(_, requeue: false) = events[1] else { Issue.record("expected a reject without requeue: \(events)"); return }
    }

    @Test("a wrong content type is refused even when the body is fine")
    func wrongContentType() async throws {
        let events = try await run([call("echo")], contentType: "text/plain", expecting: 2)
        #expect(reply(events[0])?.failure?.message.contains("text/plain") == true)
    }

    @Test("heartbeats every half call-monitor timeout, only when asked")
    func heartbeats() async throws {
        let events = try await run([call("slow", timeout: 0.2)], endpoint: TestEndpoint(slowDuration: .milliseconds(450)), expecting: 4)
        let replies = events.compactMap(reply)
        let heartbeats = replies.filter { !$0.ending }
        #expect(heartbeats.count >= 2)
        #expect(heartbeats.allSatisfy { $0.result == .null && $0.failure == nil && $0.messageID == "m1" })
        let quiet = try await run([call("slow")], endpoint: TestEndpoint(slowDuration: .milliseconds(300)), expecting: 2)
        #expect(quiet.compactMap(reply).allSatisfy { $0.ending })
    }

    @Test("absurd values anyone can put in a message do not crash the server")
    func hostileNumbers() async throws {
        let events = try await run([call("echo", timeout: 1e300)], expecting: 2)
        #expect(reply(events[0])?.result == [:])
        let headers: AMQPTable = ["x-delivery-count": .int64(.max)]
        let delivery = AMQPDelivery(body: [], properties: AMQPMessageProperties(headers: headers), exchange: "", routingKey: "",
                                    consumerTag: "", deliveryTag: 1, redelivered: true, connectionGeneration: 1)
        #expect(RequestDelivery(delivery).attempt == 1_000_001)
        let negative = AMQPDelivery(body: [], properties: AMQPMessageProperties(headers: ["x-delivery-count": .int32(-5)]), exchange: "",
                                    routingKey: "", consumerTag: "", deliveryTag: 1, redelivered: true, connectionGeneration: 1)
        #expect(RequestDelivery(negative).attempt == 1)
    }

    @Test("an outcome that could not be made durable is requeued, not acknowledged")
    func crashRequeues() async throws {
        let events = try await run([call("crash")], expecting: 1)
        guard case .rejected(_, requeue: true) = events[0] else { Issue.record("expected a requeue: \(events)"); return }
    }

    @Test("no more requests run at once than the limit")
    func concurrencyLimit() async throws {
        let endpoint = TestEndpoint(slowDuration: .milliseconds(100))
        let requests = (0..<9).map { _ in cast("slow") }
        let events = try await run(requests, endpoint: endpoint, configuration: .init(maximumConcurrentRequests: 3), expecting: 9)
        #expect(events.count == 9)
        #expect(endpoint.running.withLock { $0.peak } == 3)
    }
}
