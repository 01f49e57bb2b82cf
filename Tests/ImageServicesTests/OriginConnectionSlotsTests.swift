import NIOCore
import NIOConcurrencyHelpers
import Synchronization
import Testing
@testable import ImageServices

@Suite("connection slots per origin")
struct OriginConnectionSlotsTests {
    /// What the requests of the first test saw, shared by their tasks.
    final class Observations: Sendable {
        let inFlight = NIOLockedValueBox((now: 0, peak: 0))
        let order = NIOLockedValueBox([Int]())
        let waited = Atomic<Int>(0)
    }

    @Test("no more than the limit in flight per origin; the rest wait in order and all get their turn", arguments: [1, 2])
    func limitAndOrder(limit: Int) async throws {
        let slots = OriginConnectionSlots(limit: limit)
        let seen = Observations()
        // Every slot taken first, so that every request below waits, queued in the order it came.
        var held: [OriginConnectionSlots.Slot] = []
        for _ in 0..<limit { held.append(try await slots.acquire("http://a:80")) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<10 {
                group.addTask {
                    let slot = try await slots.acquire("http://a:80") { seen.waited.add(1, ordering: .relaxed) }
                    seen.order.withLockedValue { $0.append(index) }
                    seen.inFlight.withLockedValue { $0.now += 1; $0.peak = max($0.peak, $0.now) }
                    try await Task.sleep(for: .milliseconds(10))
                    seen.inFlight.withLockedValue { $0.now -= 1 }
                    slot.release()
                }
                while slots.waiting("http://a:80") < index + 1 { try await Task.sleep(for: .milliseconds(1)) }
            }
            for slot in held { slot.release() }
            try await group.waitForAll()
        }
        #expect(seen.inFlight.withLockedValue { $0.peak } == limit)
        if limit == 1 {
            #expect(seen.order.withLockedValue { $0 } == Array(0..<10), "first come, first served")
        } else {
            // Slots are handed on in order, but two tasks woken at once may record in either order.
            #expect(seen.order.withLockedValue { $0 }.sorted() == Array(0..<10))
        }
        #expect(seen.waited.load(ordering: .relaxed) == 10, "every request was told it waits")
        #expect(slots.inFlight("http://a:80") == 0)
    }

    @Test("origins do not share slots")
    func originsAreSeparate() async throws {
        let slots = OriginConnectionSlots(limit: 1)
        let first = try await slots.acquire("http://a:80")
        let other = try await slots.acquire("https://a:443")  // would wait forever if shared
        #expect(slots.inFlight("http://a:80") == 1)
        #expect(slots.inFlight("https://a:443") == 1)
        first.release()
        other.release()
        first.release()  // a second release changes nothing
        #expect(slots.inFlight("http://a:80") == 0)
    }

    @Test("a waiter whose task is cancelled leaves the queue; the next one gets the slot")
    func cancelledWaiter() async throws {
        let slots = OriginConnectionSlots(limit: 1)
        let held = try await slots.acquire("o")
        let cancelled = Task { try await slots.acquire("o") }
        let next = Task { try await slots.acquire("o") }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { _ = try await cancelled.value }
        held.release()
        let slot = try await next.value
        #expect(slots.inFlight("o") == 1)
        slot.release()
        #expect(slots.inFlight("o") == 0)
    }

    @Test("waiters cancelled while slots are handed on: each is resumed once, and every slot comes back")
    func cancellationRacesRelease() async throws {
        let slots = OriginConnectionSlots(limit: 2)
        for round in 0..<200 {
            let held = [try await slots.acquire("o"), try await slots.acquire("o")]
            let waiters = (0..<8).map { _ in
                Task {
                    // A waiter resumed twice would stop the process here (a checked continuation).
                    let slot = try await slots.acquire("o")
                    await Task.yield()
                    slot.release()
                }
            }
            // Cancel half of them around the moment the held slots are handed on, at a different
            // point each round, so the cancellation meets a waiter being queued, queued, or woken.
            for (index, waiter) in waiters.enumerated() where index % 2 == round % 2 {
                if index == round % 8 { for slot in held { slot.release() } }
                waiter.cancel()
            }
            for slot in held { slot.release() }
            for waiter in waiters { _ = await waiter.result }
            #expect(slots.inFlight("o") == 0, "round \(round): every slot given back")
            #expect(slots.waiting("o") == 0, "round \(round): no waiter left behind")
        }
    }

    @Test("a slot no longer referenced is given back")
    func releasedWhenDropped() async throws {
        let slots = OriginConnectionSlots(limit: 1)
        do { _ = try await slots.acquire("o") }
        let again = try await slots.acquire("o")  // would wait forever if the first were still held
        again.release()
        #expect(slots.inFlight("o") == 0)
    }
}

@Suite("a download's overall deadline")
struct DownloadDeadlineTests {
    @Test("it starts at the first request's slot; later requests share it, their waits included")
    func startsAtTheFirstSlot() {
        let deadline = RequestDeadline.download(DownloadDeadline(.seconds(10)))
        let firstSlot = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let laterSlot = NIODeadline.uptimeNanoseconds(7_000_000_000)
        #expect(deadline.absolute(startingNow: firstSlot) == .uptimeNanoseconds(11_000_000_000))
        #expect(deadline.absolute(startingNow: laterSlot) == .uptimeNanoseconds(11_000_000_000))
        #expect(RequestDeadline.afterSlot(.seconds(10)).absolute(startingNow: laterSlot) == .uptimeNanoseconds(17_000_000_000))
    }
}
