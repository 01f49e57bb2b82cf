import OsloJSON
import AMQPModel
import Foundation
import ImageServices
import Logging
import OsloMessaging
import Testing
import TestSupport
@testable import ImageWorker

@Suite("worker endpoint on the in-memory transport")
struct WorkerEndpointTests {
    struct Fixture {
        let sources: TemporaryDirectory
        let images: TemporaryDirectory
        let transport = InMemoryOsloTransport()
        let server: RPCServer

        init() throws {
            sources = try TemporaryDirectory(prefix: "endpoint-src")
            images = try TemporaryDirectory(prefix: "endpoint-images")
            var registry = ImageServiceRegistry()
            registry.register(FileImageService(policy: FilePathPolicy(allowedPaths: [sources.path])))
            let store = try NodeImageStore(path: images.path)
            let endpoint = WorkerEndpoint(fetcher: ImageFetcher(registry: registry), store: store,
                                          events: ImageEventPublisher(transport: transport, publisherID: "image-worker.test"),
                                          progressInterval: .seconds(5), logger: Logger(label: "test"))
            server = RPCServer(transport: transport, endpoint: endpoint, configuration: .init(), logger: Logger(label: "test"))
        }

        func remove() {
            sources.remove()
            images.remove()
        }

        /// Delivers `request` and returns the transport events up to and including its settlement.
        func exchange(_ request: RPCRequest) async throws -> [InMemoryOsloTransport.Event] {
            try await withThrowingTaskGroup(of: [InMemoryOsloTransport.Event]?.self) { group in
                group.addTask {
                    try await server.run()
                    return nil
                }
                group.addTask {
                    var events: [InMemoryOsloTransport.Event] = []
                    for await event in transport.events {
                        events.append(event)
                        switch event {
                        case .acknowledged, .rejected: return events
                        default: continue
                        }
                    }
                    return events
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(20))
                    return nil
                }
                transport.deliver(request)
                let events = try await group.next() ?? nil
                transport.finish()
                group.cancelAll()
                return try #require(events, "no settlement within 20 s")
            }
        }
    }

    func notifications(_ events: [InMemoryOsloTransport.Event]) -> [OsloNotification] {
        events.compactMap { if case .notification(let n) = $0 { n } else { nil } }
    }

    func fetchRequest(_ args: JSONObject, call: Bool = true) -> RPCRequest {
        RPCRequest(method: "fetch_image", args: args, messageID: call ? "m1" : nil, replyQueue: call ? "reply_q" : nil,
                   uniqueID: "task-1", context: RPCContext(fields: ["request_id": "req-abc", "auth_token": "SECRET"]))
    }

    @Test("a fetch sends start, then end, then the reply, then the ack")
    func fetchOrder() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let source = try fixture.sources.write(Array("abc".utf8), to: "d.img")
        let node = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        let events = try await fixture.exchange(fetchRequest(["node_uuid": .string(node), "instance_info": ["image_source": .string("file://" + source)]]))
        let kinds = events.map { event -> String in
            switch event {
            case .notification(let n): n.eventType
            case .reply: "reply"
            case .acknowledged: "ack"
            case .rejected: "reject"
            case .deadLettered: "dead-letter"
            }
        }
        #expect(kinds == ["baremetal.image.fetch.start", "baremetal.image.fetch.end", "reply", "ack"])
        let end = notifications(events)[1]
        #expect(end.publisherID == "image-worker.test")
        #expect(end.priority == .info)
        let data = try #require(end.payload.objectValue?["ironic_object.data"]?.objectValue)
        #expect(data["request_id"] == "req-abc")
        #expect(data["task_id"] == "task-1")
        #expect(data["images"]?.objectValue?["image"]?.objectValue?["checksum"]?.objectValue?["value"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(end.context["auth_token"] == .null, "the caller's token must not reach an event")
        #expect(!JSONWriter().string(.object(end.encodedMessage)).contains("SECRET"))
        #expect(FileManager.default.fileExists(atPath: fixture.images.appending("\(node)/disk")))
    }

    @Test("a refused reference sends start, error, the failure reply, then the ack")
    func refusedReference() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let events = try await fixture.exchange(fetchRequest(["node_uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "instance_info": ["image_source": "file:///etc/shadow"]]))
        let sent = notifications(events)
        #expect(sent.map(\.eventType) == ["baremetal.image.fetch.start", "baremetal.image.fetch.error"])
        #expect(sent[1].priority == .error)
        let error = try #require(sent[1].payload.objectValue?["ironic_object.data"]?.objectValue?["error"]?.objectValue)
        #expect(error["code"] == "ImageRefValidationFailed")
        #expect(error["http_status"] == 500)
        #expect(error["retryable"] == false)
        guard case .reply(let reply, _) = events[2] else { Issue.record("expected the reply third: \(events)"); return }
        #expect(reply.failure?.className == "ImageRefValidationFailed")
        guard case .acknowledged = events[3] else { Issue.record("expected the ack last"); return }
    }

    @Test("bad arguments send only an error event; nothing is created")
    func badArguments() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let events = try await fixture.exchange(fetchRequest(["node_uuid": "../../etc", "instance_info": ["image_source": "file:///x"]], call: false))
        #expect(notifications(events).map(\.eventType) == ["baremetal.image.fetch.error"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.images.path).isEmpty)
    }

    @Test("a node_uuid of 32 bytes that are not hex characters is refused, not a crash")
    func hostileNodeUUIDBytes() async throws {
        for node in [String(repeating: "é", count: 16), String(repeating: "\r\n", count: 16)] {
            let fixture = try Fixture()  // one exchange each
            defer { fixture.remove() }
            let events = try await fixture.exchange(fetchRequest(["node_uuid": .string(node), "instance_info": ["image_source": "file:///x"]], call: false))
            #expect(notifications(events).map(\.eventType) == ["baremetal.image.fetch.error"])
            #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.images.path).isEmpty)
        }
    }

    @Test("a checksum mismatch leaves the node folder empty")
    func checksumMismatch() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let source = try fixture.sources.write(Array("abc".utf8), to: "d.img")
        let node = "2be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        let events = try await fixture.exchange(fetchRequest(["node_uuid": .string(node), "instance_info": ["image_source": .string("file://" + source), "image_os_hash_algo": "sha256", "image_os_hash_value": .string(String(repeating: "0", count: 64))]]))
        #expect(notifications(events).last?.eventType == "baremetal.image.fetch.error")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.images.appending(node)).isEmpty)
    }

    @Test("a partition image whose kernel fails leaves no disk either")
    func partitionAllOrNothing() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let disk = try fixture.sources.write([1, 2, 3], to: "disk.img")
        let node = "3be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        let events = try await fixture.exchange(fetchRequest(["node_uuid": .string(node), "instance_info": [
            "image_source": .string("file://" + disk), "kernel": .string("file://" + fixture.sources.appending("missing")), "ramdisk": .string("file://" + disk),
        ]]))
        let error = notifications(events).last?.payload.objectValue?["ironic_object.data"]?.objectValue
        #expect(error?["role"] == "kernel")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.images.appending(node)).isEmpty)
    }

    @Test("delete_images removes the node folder and reports whether there was one")
    func deleteImages() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let node = "4be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        try fixture.images.write([1], to: "\(node)/disk")
        let events = try await fixture.exchange(RPCRequest(method: "delete_images", args: ["node_uuid": .string(node)], messageID: "m", replyQueue: "q"))
        guard case .reply(let reply, _) = events[0] else { Issue.record("expected a reply"); return }
        #expect(reply.result == ["node_uuid": .string(node), "deleted": true])
        #expect(!FileManager.default.fileExists(atPath: fixture.images.appending(node)))
    }

    @Test("staging files of dead processes are removed at start; those of live ones stay")
    func leftovers() throws {
        let images = try TemporaryDirectory(prefix: "leftovers")
        defer { images.remove() }
        let node = "5be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        try images.write([1], to: "\(node)/disk")
        // A pid no process has (above the kernel's pid_max) and this process's own.
        try images.write([2], to: "\(node)/\(StagingFile.namePrefix)99999999-disk-abc")
        // This pid with another start time: an earlier process that had the same pid (a
        // restarted container's worker is pid 1 each time).
        try images.write([4], to: "\(node)/\(StagingFile.namePrefix)\(getpid()).1-disk-ghi")
        let live = "\(StagingFile.namePrefix)\(ProcessStamp.current)-kernel-def"
        #expect(ProcessStamp.current.hasPrefix("\(getpid())."), "the stamp carries the start time")
        try images.write([3], to: "\(node)/\(live)")
        let store = try NodeImageStore(path: images.path)
        #expect(try store.removeLeftoverStagingFiles() == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: images.appending(node)).sorted() == [live, "disk"].sorted())
    }
}
