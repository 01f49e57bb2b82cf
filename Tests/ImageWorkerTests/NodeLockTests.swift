import Foundation
import ImageServices
import Logging
import Primitives
import NIOConcurrencyHelpers
import Testing
import TestSupport
@testable import ImageWorker

/// One node at a time (contract §6): requests for one node run one after the other, across
/// processes sharing the folders; and after a fetch the node's folder holds exactly its files.
@Suite("one node at a time")
struct NodeLockTests {
    let context = ImageRequestContext(requestID: "req-node-lock", logger: Logger(label: "node-lock"))

    @Test("a second holder of a node's lock waits for the first (two stores on one folder lock like two processes); other nodes do not wait")
    func serialises() async throws {
        let root = try TemporaryDirectory(prefix: "node-lock")
        defer { root.remove() }
        let first = try NodeImageStore(path: root.appending("images"), locksPath: root.appending("locks"), lockPollInterval: .milliseconds(10))
        let second = try NodeImageStore(path: root.appending("images"), locksPath: root.appending("locks"), lockPollInterval: .milliseconds(10))
        let node = UUIDText.random(), other = UUIDText.random()
        let order = OrderLog()
        let holding = AsyncStream<Void>.makeStream()
        let holder = Task {
            try await first.withNodeLock(node) {
                order.entries.withLockedValue { $0.append("first in") }
                holding.continuation.yield()
                while !order.entries.withLockedValue({ $0.contains("release") }) { try await Task.sleep(for: .milliseconds(10)) }
                order.entries.withLockedValue { $0.append("first out") }
            }
        }
        for await _ in holding.stream { break }
        try await second.withNodeLock(other) { order.entries.withLockedValue { $0.append("other node") } }
        let waiter = Task { try await second.withNodeLock(node) { order.entries.withLockedValue { $0.append("second in") } } }
        try await Task.sleep(for: .milliseconds(200))
        #expect(!order.entries.withLockedValue { $0 }.contains("second in"), "the second holder did not wait")
        order.entries.withLockedValue { $0.append("release") }
        try await holder.value
        try await waiter.value
        #expect(order.entries.withLockedValue { $0 } == ["first in", "other node", "release", "first out", "second in"])
        #expect(FileManager.default.fileExists(atPath: root.appending("locks/\(node).lock")))
        #expect(try FileManager.default.contentsOfDirectory(atPath: root.appending("images")).isEmpty, "no lock file among the node folders")
    }

    @Test("in one process, waiters get a node in the order they asked (a delete queued before a fetch runs before it)")
    func firstComeFirstServed() async throws {
        let root = try TemporaryDirectory(prefix: "node-lock")
        defer { root.remove() }
        let store = try NodeImageStore(path: root.appending("images"), lockPollInterval: .milliseconds(5))
        let node = UUIDText.random()
        let order = OrderLog()
        let holding = AsyncStream<Void>.makeStream()
        let holder = Task {
            try await store.withNodeLock(node) {
                holding.continuation.yield()
                while !order.entries.withLockedValue({ $0.contains("release") }) { try await Task.sleep(for: .milliseconds(5)) }
            }
        }
        for await _ in holding.stream { break }
        var waiters: [Task<Void, any Error>] = []
        for name in ["delete", "fetch", "delete again", "fetch again"] {
            waiters.append(Task { try await store.withNodeLock(node) { order.entries.withLockedValue { $0.append(name) } } })
            try await Task.sleep(for: .milliseconds(30))  // each is in line before the next asks
        }
        order.entries.withLockedValue { $0.append("release") }
        try await holder.value
        for waiter in waiters { try await waiter.value }
        #expect(order.entries.withLockedValue { $0 } == ["release", "delete", "fetch", "delete again", "fetch again"])
    }

    @Test("a request waiting for a node's lock can be cancelled; a holder that throws releases it")
    func cancellableAndReleased() async throws {
        let root = try TemporaryDirectory(prefix: "node-lock")
        defer { root.remove() }
        let store = try NodeImageStore(path: root.appending("images"), lockPollInterval: .milliseconds(10))
        let node = UUIDText.random()
        struct Failure: Error {}
        await #expect(throws: Failure.self) { try await store.withNodeLock(node) { throw Failure() } }
        let entered = AsyncStream<Void>.makeStream()
        let holder = Task {
            try await store.withNodeLock(node) {
                entered.continuation.yield()
                try await Task.sleep(for: .seconds(30))
            }
        }
        for await _ in entered.stream { break }
        let waiter = Task { try await store.withNodeLock(node) { "ran" } }
        try await Task.sleep(for: .milliseconds(100))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { _ = try await waiter.value }
        holder.cancel()
        _ = await holder.result
        #expect(try await store.withNodeLock(node) { "free" } == "free")
    }

    @Test("after a whole-disk fetch, the kernel and ramdisk of an earlier partition fetch are gone")
    func folderHoldsExactlyTheFetch() async throws {
        let root = try TemporaryDirectory(prefix: "node-files")
        defer { root.remove() }
        var registry = ImageServiceRegistry()
        registry.register(ScriptedImageService(content: randomBytes(2000)))
        let fetcher = ImageFetcher(registry: registry, checksums: .init(requireChecksums: false))
        let store = try NodeImageStore(path: root.appending("images"))
        let node = UUIDText.random()
        let partition = InstanceInfo(imageSource: "scripted://disk", kernel: "scripted://vmlinuz", ramdisk: "scripted://initrd", imageType: .partition)
        _ = try await fetcher.fetch(try FetchImageArguments(nodeUUID: node, instanceInfo: partition), into: store, context: context) { _, _ in }
        let folder = root.appending("images/\(node)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == ["disk", "kernel", "ramdisk"])
        let wholeDisk = InstanceInfo(imageSource: "scripted://disk2", imageType: .wholeDisk)
        _ = try await fetcher.fetch(try FetchImageArguments(nodeUUID: node, instanceInfo: wholeDisk), into: store, context: context) { _, _ in }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder) == ["disk"])
    }
}

/// What happened, in order, shared by the test's tasks.
private final class OrderLog: Sendable {
    let entries = NIOLockedValueBox<[String]>([])
}
