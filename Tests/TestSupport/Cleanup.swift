import NIOConcurrencyHelpers

/// What a test must close when it ends — servers, HTTP clients, broker connections — closed in
/// reverse order and awaited, whether the test returned or threw (a `defer` cannot await, and a
/// `Task` started in one outlives the test).
public final class Cleanup: Sendable {
    private let steps = NIOLockedValueBox<[@Sendable () async -> Void]>([])

    init() {}

    /// Closes `body`'s resource when the test ends.
    public func add(_ body: @escaping @Sendable () async -> Void) {
        steps.withLockedValue { $0.append(body) }
    }

    fileprivate func run() async {
        for step in steps.withLockedValue({ $0 }).reversed() { await step() }
    }
}

/// Runs `body`, then every step it registered with ``Cleanup/add(_:)``, last first.
public func withCleanup<T>(_ body: (Cleanup) async throws -> T) async throws -> T {
    let cleanup = Cleanup()
    do {
        let result = try await body(cleanup)
        await cleanup.run()
        return result
    } catch {
        await cleanup.run()
        throw error
    }
}
