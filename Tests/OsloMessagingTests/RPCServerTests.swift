import OsloJSON
import AMQPModel
import Logging
import NIOConcurrencyHelpers
import Testing
@testable import OsloMessaging

/// An endpoint for the server tests: `echo` returns its args, `fail` fails, `slow` sleeps,
/// `crash` throws (the outcome could not be made durable).
final class TestEndpoint: RPCEndpoint {
    let version = RPCVersion(major: 1, minor: 3)
    let methods: Set<String> = ["echo", "fail", "slow", "crash"]
    let refusals = NIOLockedValueBox<[RPCRefusal]>([])
    /// The attempt number of every run.
    let runs = NIOLockedValueBox<[Int]>([])
    let running = NIOLockedValueBox((now: 0, peak: 0))
    let slowDuration: Duration

    init(slowDuration: Duration = .milliseconds(300)) {
        self.slowDuration = slowDuration
    }

    func dispatch(_ request: RPCRequest, delivery: RequestDelivery) async throws -> RPCOutcome {
        running.withLockedValue { $0.now += 1; $0.peak = max($0.peak, $0.now) }
        defer { running.withLockedValue { $0.now -= 1 } }
        runs.withLockedValue { $0.append(delivery.attempt) }
        switch request.method {
        case "echo": return outcome(.success(.object(request.args)))
        case "fail": return outcome(.failure(.ironic("ImageNotFound", message: "Image x could not be found.", httpStatus: 404)))
        case "slow":
            try await Task.sleep(for: slowDuration)
            return outcome(.success("done"))
        default: throw CancellationError()
        }
    }

    /// Every outcome carries an event, as the worker's do.
    func outcome(_ reply: Result<JSONValue, RemoteFailure>) -> RPCOutcome {
        RPCOutcome(reply: reply, notification: OsloNotification(publisherID: "test", eventType: "test.end", priority: .info, payload: .null))
    }

    func refused(_ refusal: RPCRefusal, delivery: RequestDelivery) -> OsloNotification? {
        refusals.withLockedValue { $0.append(refusal) }
        return OsloNotification(publisherID: "test", eventType: "test.refused", priority: .error, payload: .null)
    }

    func gaveUp(_ request: RPCRequest, attempts: Int, delivery: RequestDelivery) -> RPCOutcome {
        RPCOutcome(reply: .failure(.ironic("ImageDownloadFailed", message: "gave up after \(attempts)", httpStatus: 500)),
                   notification: OsloNotification(publisherID: "test", eventType: "test.gave_up", priority: .error, payload: .null))
    }
}

@Suite("RPC server on the in-memory transport")
struct RPCServerTests {
    /// A delivery for the in-memory transport.
    struct Delivery {
        var body: [UInt8]
        var contentType: String? = "application/json"
        var headers: AMQPTable? = nil
        var exchange = "ironic"
        var redelivered = false
    }

    /// Runs a server, delivers requests, and returns the first `count` transport events.
    func run(_ requests: [[UInt8]], contentType: String? = "application/json", endpoint: TestEndpoint = TestEndpoint(),
             configuration: RPCServer.Configuration = .init(), expecting count: Int) async throws -> [InMemoryOsloTransport.Event] {
        try await run(requests.map { Delivery(body: $0, contentType: contentType) }, endpoint: endpoint, configuration: configuration, expecting: count)
    }

    func run(_ deliveries: [Delivery], endpoint: TestEndpoint = TestEndpoint(), transport: InMemoryOsloTransport = InMemoryOsloTransport(),
             journal: any RequestJournal = InMemoryRequestJournal(), configuration: RPCServer.Configuration = .init(),
             expecting count: Int) async throws -> [InMemoryOsloTransport.Event] {
        let server = RPCServer(transport: transport, endpoint: endpoint, journal: journal, configuration: configuration, logger: Logger(label: "test"))
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
            for delivery in deliveries {
                transport.deliver(body: delivery.body, contentType: delivery.contentType, redelivered: delivery.redelivered, headers: delivery.headers,
                                  exchange: delivery.exchange)
            }
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

    func cast(_ method: String, args: JSONObject = [:], uniqueID: String = "u1") -> [UInt8] {
        OsloEnvelope.wrap(["method": .string(method), "args": .object(args), "version": "1.0", "_unique_id": .string(uniqueID)])
    }

    func reply(_ event: InMemoryOsloTransport.Event) -> RPCReply? {
        if case .reply(let reply, _) = event { return reply }
        return nil
    }

    func notification(_ event: InMemoryOsloTransport.Event) -> OsloNotification? {
        if case .notification(let notification) = event { return notification }
        return nil
    }

    /// The events by kind, for order checks: `ack`, `requeue`, `reject`, `reply`, `dead-letter`, or
    /// the notification's event type.
    func kinds(_ events: [InMemoryOsloTransport.Event]) -> [String] {
        events.map { event in
            switch event {
            case .acknowledged: "ack"
            case .rejected(_, let requeue): requeue ? "requeue" : "reject"
            case .reply(let reply, _): reply.ending ? "reply" : "heartbeat"
            case .notification(let notification): notification.eventType
            case .deadLettered: "dead-letter"
            }
        }
    }

    @Test("a cast runs; its outcome event is published, then it is acknowledged; no reply")
    func castIsAcked() async throws {
        let events = try await run([cast("echo", args: ["a": 1])], expecting: 2)
        #expect(kinds(events) == ["test.end", "ack"])
    }

    @Test("a call: outcome event, then the reply, then the ack")
    func callRepliedThenAcked() async throws {
        let events = try await run([call("echo", args: ["x": "y"])], expecting: 3)
        #expect(kinds(events) == ["test.end", "reply", "ack"])
        let first = try #require(reply(events[1]))
        #expect(first.result == ["x": "y"])
        #expect(first.failure == nil)
        #expect(first.messageID == "m1")
    }

    @Test("a failed call carries the failure; an endpoint's compatible minor versions are served")
    func failure() async throws {
        let events = try await run([call("fail", version: "1.3")], expecting: 3)
        let failure = try #require(reply(events[1])?.failure)
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
        let events = try await run([call(method, version: version)], endpoint: endpoint, expecting: 3)
        #expect(kinds(events) == ["test.refused", "reply", "ack"])
        let failure = try #require(reply(events[1])?.failure)
        #expect(failure.className == expected)
        #expect(failure.module == "oslo_messaging.rpc.dispatcher")
        #expect(endpoint.refusals.withLockedValue { $0.count } == 1)
        #expect(endpoint.refusals.withLockedValue { $0.first?.malformed } == false)
    }

    @Test("a malformed message is reported and acknowledged")
    func malformedAcked() async throws {
        let endpoint = TestEndpoint()
        let events = try await run([Array("{nope".utf8)], endpoint: endpoint, expecting: 2)
        #expect(kinds(events) == ["test.refused", "ack"])
        let refusal = try #require(endpoint.refusals.withLockedValue { $0.first })
        #expect(refusal.malformed)
        #expect(refusal.failure.className == "InvalidParameterValue")
        #expect(refusal.failure.kwargs["code"] == 400)
    }

    @Test("a malformed call with readable ids gets an InvalidParameterValue reply, and is dead-lettered when there is an exchange for it")
    func malformedCallDeadLettered() async throws {
        let body = OsloEnvelope.wrap(["args": [:], "_msg_id": "m9", "_reply_q": "reply_q"])
        let events = try await run([Delivery(body: body)], transport: InMemoryOsloTransport(hasDeadLetterExchange: true), expecting: 4)
        #expect(kinds(events) == ["test.refused", "reply", "dead-letter", "ack"])
        #expect(reply(events[1])?.failure?.className == "InvalidParameterValue")
        guard case .deadLettered(_, let reason) = events[2] else { return }
        #expect(reason.code == "InvalidParameterValue")
        #expect(reason.message.contains("method"))
    }

    @Test("an unknown method is not dead-lettered: it is a valid message this worker does not serve")
    func unknownMethodNotDeadLettered() async throws {
        let events = try await run([Delivery(body: cast("nope"))], transport: InMemoryOsloTransport(hasDeadLetterExchange: true), expecting: 2)
        #expect(kinds(events) == ["test.refused", "ack"])
    }

    @Test("a wrong content type is refused even when the body is fine")
    func wrongContentType() async throws {
        let events = try await run([call("echo")], contentType: "text/plain", expecting: 3)
        #expect(reply(events[1])?.failure?.message.contains("text/plain") == true)
    }

    @Test("heartbeats every half call-monitor timeout, only when asked")
    func heartbeats() async throws {
        let events = try await run([call("slow", timeout: 0.2)], endpoint: TestEndpoint(slowDuration: .milliseconds(450)), expecting: 5)
        let replies = events.compactMap(reply)
        let heartbeats = replies.filter { !$0.ending }
        #expect(heartbeats.count >= 2)
        #expect(heartbeats.allSatisfy { $0.result == .null && $0.failure == nil && $0.messageID == "m1" })
        let quiet = try await run([call("slow")], endpoint: TestEndpoint(slowDuration: .milliseconds(300)), expecting: 3)
        #expect(kinds(quiet) == ["test.end", "reply", "ack"])
    }

    @Test("absurd values anyone can put in a message do not crash the server")
    func hostileNumbers() async throws {
        let events = try await run([call("echo", timeout: 1e300)], expecting: 3)
        #expect(reply(events[1])?.result == [:])
        let headers: AMQPTable = ["x-delivery-count": .int64(.max)]
        let delivery = AMQPDelivery(body: [], properties: AMQPMessageProperties(headers: headers), exchange: "", routingKey: "",
                                    consumerTag: "", deliveryTag: 1, redelivered: true, connectionGeneration: 1)
        #expect(RequestDelivery(delivery).attempt == 1_000_001)
        let negative = AMQPDelivery(body: [], properties: AMQPMessageProperties(headers: ["x-delivery-count": .int32(-5)]), exchange: "",
                                    routingKey: "", consumerTag: "", deliveryTag: 1, redelivered: true, connectionGeneration: 1)
        #expect(RequestDelivery(negative).attempt == 1)
    }

    @Test("a request that could not finish is requeued, not acknowledged, and runs again when redelivered")
    func crashRequeues() async throws {
        let endpoint = TestEndpoint()
        let events = try await run([call("crash"), call("crash")], endpoint: endpoint, expecting: 2)
        #expect(kinds(events) == ["requeue", "requeue"])
        #expect(endpoint.runs.withLockedValue { $0 } == [1, 1], "an abandoned run is not a failed attempt")
    }

    @Test("no more requests run at once than the limit")
    func concurrencyLimit() async throws {
        let endpoint = TestEndpoint(slowDuration: .milliseconds(100))
        let requests = (0..<9).map { cast("slow", uniqueID: "u\($0)") }
        let events = try await run(requests, endpoint: endpoint, configuration: .init(maximumConcurrentRequests: 3), expecting: 18)
        #expect(kinds(events).filter { $0 == "ack" }.count == 9)
        #expect(endpoint.running.withLockedValue { $0.peak } == 3)
    }

    // MARK: Duplicates

    @Test("a duplicate of a finished request gets the same outcome again and does not run")
    func duplicateAfterFinish() async throws {
        let endpoint = TestEndpoint()
        let events = try await run([call("echo", args: ["n": 1]), call("echo", args: ["n": 1])], endpoint: endpoint, expecting: 6)
        #expect(kinds(events) == ["test.end", "reply", "ack", "test.end", "reply", "ack"])
        #expect(endpoint.runs.withLockedValue { $0.count } == 1)
        let first = try #require(notification(events[0])), second = try #require(notification(events[3]))
        #expect(first == second, "the same event, message_id included, so a listener can tell it is a repeat")
        #expect(reply(events[4])?.result == ["n": 1])
    }

    @Test("a redelivery of a finished request whose event the broker confirmed gets its reply again, not the event")
    func redeliveryAfterConfirmedEvent() async throws {
        let endpoint = TestEndpoint()
        var redelivery = Delivery(body: call("echo", args: ["n": 1]))
        redelivery.redelivered = true
        let events = try await run([Delivery(body: call("echo", args: ["n": 1])), redelivery], endpoint: endpoint,
                                   configuration: .init(maximumConcurrentRequests: 1), expecting: 5)
        #expect(kinds(events) == ["test.end", "reply", "ack", "reply", "ack"])
        #expect(endpoint.runs.withLockedValue { $0.count } == 1)
        #expect(reply(events[3])?.result == reply(events[1])?.result && reply(events[3])?.messageID == "m1")
    }

    @Test("a duplicate that arrives while the first runs joins it")
    func duplicateWhileRunning() async throws {
        let endpoint = TestEndpoint(slowDuration: .milliseconds(300))
        let events = try await run([cast("slow", uniqueID: "same"), cast("slow", uniqueID: "same")], endpoint: endpoint, expecting: 4)
        #expect(kinds(events) == ["test.end", "ack", "test.end", "ack"])
        #expect(endpoint.runs.withLockedValue { $0.count } == 1)
        #expect(endpoint.running.withLockedValue { $0.peak } == 1)
        #expect(notification(events[0]) == notification(events[2]))
    }

    /// Waits until the endpoint runs a request (on a busy machine a task may start late).
    func waitUntilRunning(_ endpoint: TestEndpoint) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while endpoint.running.withLockedValue({ $0.now }) == 0 {
            try #require(ContinuousClock.now < deadline, "the request never started")
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    @Test("a prefetched request taken after its connection was lost is not run: the broker delivers it again")
    func stalePrefetchIsNotRun() async throws {
        let endpoint = TestEndpoint(slowDuration: .milliseconds(300))
        let transport = InMemoryOsloTransport()
        let server = RPCServer(transport: transport, endpoint: endpoint, configuration: .init(maximumConcurrentRequests: 1), logger: Logger(label: "test"))
        let running = Task { try await server.run() }
        defer { running.cancel() }
        transport.deliver(body: cast("slow", uniqueID: "running"))
        transport.deliver(body: cast("echo", uniqueID: "prefetched"))  // waits for the one slot
        try await waitUntilRunning(endpoint)
        transport.reconnect()
        transport.deliver(body: cast("echo", uniqueID: "after"))
        var events: [InMemoryOsloTransport.Event] = []
        for await event in transport.events {
            events.append(event)
            if events.count == 2 { break }
        }
        #expect(kinds(events) == ["test.end", "ack"], "only the request of the new connection settles")
        #expect(endpoint.runs.withLockedValue { $0.count } == 2, "the running one and the new one ran; the prefetched one did not")
    }

    @Test("a run whose connection was lost publishes nothing (the broker redelivers it); the redelivery publishes the event, once")
    func lostConnectionDefersTheEvent() async throws {
        let endpoint = TestEndpoint(slowDuration: .milliseconds(300))
        let transport = InMemoryOsloTransport()
        let journal = InMemoryRequestJournal()
        let server = RPCServer(transport: transport, endpoint: endpoint, journal: journal, configuration: .init(), logger: Logger(label: "test"))
        let running = Task { try await server.run() }
        defer { running.cancel() }
        transport.deliver(body: cast("slow", uniqueID: "u1"))
        try await waitUntilRunning(endpoint)
        transport.reconnect()  // the delivery above can no longer be acknowledged
        // The run ends meanwhile; its outcome is recorded but not published.
        var waited = Duration.zero
        while endpoint.running.withLockedValue({ $0.now }) > 0 || waited < .milliseconds(300) {
            try await Task.sleep(for: .milliseconds(50))
            waited += .milliseconds(50)
        }
        transport.deliver(body: cast("slow", uniqueID: "u1"), redelivered: true)
        var events: [InMemoryOsloTransport.Event] = []
        for await event in transport.events {
            events.append(event)
            if events.count == 2 { break }
        }
        #expect(kinds(events) == ["test.end", "ack"], "the first thing the transport saw is the redelivery's event")
        #expect(endpoint.runs.withLockedValue { $0.count } == 1, "the redelivery did not run it again")
        let fingerprint = try RPCRequest.decode(body: cast("slow", uniqueID: "u1"), contentType: "application/json").fingerprint
        guard case .finished(_, let eventPublished) = try await journal.begin(uniqueID: "u1", fingerprint: fingerprint) else {
            Issue.record("the journal has no outcome for the request")
            return
        }
        #expect(eventPublished, "the journal knows the broker confirmed the event")
    }

    @Test("the same _unique_id with other content is refused, not answered with the first request's outcome")
    func sameIDOtherContent() async throws {
        let endpoint = TestEndpoint()
        let first = cast("echo", args: ["node_uuid": "a"], uniqueID: "same")
        let otherNode = cast("echo", args: ["node_uuid": "b"], uniqueID: "same")
        let otherMethod = cast("fail", args: ["node_uuid": "a"], uniqueID: "same")
        // One at a time, so that the first is the one that runs and the order of events is fixed.
        let events = try await run([first, otherNode, otherMethod], endpoint: endpoint, configuration: .init(maximumConcurrentRequests: 1), expecting: 6)
        #expect(kinds(events) == ["test.end", "ack", "test.refused", "ack", "test.refused", "ack"])
        #expect(endpoint.runs.withLockedValue { $0.count } == 1)
        let refusals = endpoint.refusals.withLockedValue { $0 }
        #expect(refusals.map(\.failure.className) == ["InvalidParameterValue", "InvalidParameterValue"])
        #expect(refusals.first?.failure.message == "'_unique_id' same already identifies a request with other content.")
        #expect(refusals.map(\.nodeUUID) == ["b", "a"], "the refusal names the refused request's node")
        #expect(refusals.allSatisfy { $0.uniqueID == nil }, "the refusal's event must not carry the first request's id")
    }

    @Test("fingerprints: key order and repeated keys as the endpoint reads them do not matter; method, version and values do")
    func fingerprints() throws {
        func request(_ body: String) throws -> RPCRequest {
            try RPCRequest.decode(body: OsloEnvelope.wrap(try #require(JSONParser().parse(Array(body.utf8)).objectValue)), contentType: "application/json")
        }
        let base = try request(#"{"method": "echo", "version": "1.0", "args": {"a": 1, "b": {"x": [1, 2], "y": "z"}}}"#)
        let reordered = try request(#"{"version": "1.0", "args": {"b": {"y": "z", "x": [1, 2]}, "a": 0, "a": 1}, "method": "echo"}"#)
        #expect(base.fingerprint == reordered.fingerprint)
        #expect(base.fingerprint == #"{"args": {"a": 1, "b": {"x": [1, 2], "y": "z"}}, "method": "echo", "version": "1.0"}"#)
        for other in [#"{"method": "fail", "version": "1.0", "args": {"a": 1, "b": {"x": [1, 2], "y": "z"}}}"#,
                      #"{"method": "echo", "version": "1.1", "args": {"a": 1, "b": {"x": [1, 2], "y": "z"}}}"#,
                      #"{"method": "echo", "version": "1.0", "args": {"a": 1, "b": {"x": [2, 1], "y": "z"}}}"#,
                      #"{"method": "echo", "version": "1.0", "args": {"a": "1", "b": {"x": [1, 2], "y": "z"}}}"#] {
            #expect(try request(other).fingerprint != base.fingerprint, "\(other)")
        }
    }

    @Test("a journal whose disk is full: the request is refused with InsufficientDiskSpace and acknowledged, not requeued to fail again")
    func journalFull() async throws {
        struct FullJournal: RequestJournal {
            func begin(uniqueID: String, fingerprint: String) async throws -> JournalDecision { throw RequestJournalFull("write: No space left on device") }
            func record(uniqueID: String, outcome: RPCOutcome) async throws {}
            func end(uniqueID: String, eventPublished: Bool) async {}
            func abandon(uniqueID: String) async {}
        }
        let endpoint = TestEndpoint()
        let events = try await run([Delivery(body: call("echo"))], endpoint: endpoint, journal: FullJournal(), expecting: 3)
        #expect(kinds(events) == ["test.refused", "reply", "ack"])
        #expect(reply(events[1])?.failure?.className == "InsufficientDiskSpace")
        #expect(endpoint.runs.withLockedValue { $0.isEmpty })
    }

    @Test("broadcasts are not journaled: every delivery runs")
    func fanoutRunsEveryTime() async throws {
        let endpoint = TestEndpoint()
        let fanout = Delivery(body: cast("echo", uniqueID: "b"), exchange: "ironic.image_worker_fanout")
        let events = try await run([fanout, fanout], endpoint: endpoint, expecting: 4)
        #expect(kinds(events) == ["test.end", "ack", "test.end", "ack"])
        #expect(endpoint.runs.withLockedValue { $0.count } == 2)
    }

    @Test("at the broker's delivery limit the request is given up on: error event, failure reply, dead-lettered")
    func givenUpAtTheLimit() async throws {
        let endpoint = TestEndpoint()
        let fifth = Delivery(body: call("echo"), headers: ["x-delivery-count": .int64(4)])
        let sixth = Delivery(body: call("echo", id: "m2"), headers: ["x-delivery-count": .int64(5)])
        let events = try await run([fifth, sixth], endpoint: endpoint, transport: InMemoryOsloTransport(hasDeadLetterExchange: true),
                                   configuration: .init(maximumConcurrentRequests: 1, maximumAttempts: 5, deliveryLimit: 5), expecting: 7)
        #expect(kinds(events) == ["test.end", "reply", "ack", "test.gave_up", "reply", "dead-letter", "ack"])
        #expect(endpoint.runs.withLockedValue { $0 } == [5])
        #expect(reply(events[4])?.failure?.message == "gave up after 5")
    }

    @Test("without a delivery limit the broker's count is not a count of failed runs: a request returned unstarted many times still runs")
    func brokerReturnsAreNotFailedRuns() async throws {
        let endpoint = TestEndpoint()
        // A rolling restart returns a prefetched request with each lost connection; the journal
        // saw no run die.
        let returned = Delivery(body: call("echo"), headers: ["x-delivery-count": .int64(9)])
        let events = try await run([returned], endpoint: endpoint, configuration: .init(maximumAttempts: 5), expecting: 3)
        #expect(kinds(events) == ["test.end", "reply", "ack"])
        #expect(endpoint.runs.withLockedValue { $0.count } == 1)
    }
}
