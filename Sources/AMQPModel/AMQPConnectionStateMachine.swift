/// Everything an AMQP connection decides, as a value: what it is doing, the commands callers
/// queued, the topology to declare again, the publishes waiting for their confirms. Each event
/// (a caller's command, a connect, a frame, a lost connection, a close) is a mutating method that
/// returns what the driver must do — resume these waiters, wake the connection thread, reconnect —
/// and the driver does it outside its lock (the swift-kafka-client and swift-nio pattern).
///
/// It knows nothing of librabbitmq, threads or continuations: `Waiter` is whatever the driver
/// resumes (a continuation; a test's record), so every race can be played out in a unit test.
public struct AMQPConnectionStateMachine<Waiter: Sendable>: Sendable {
    /// What the connection is doing.
    public enum Phase: Sendable, Hashable {
        /// Created; nothing started.
        case new
        /// Started, not connected (connecting, or waiting before the next attempt).
        case disconnected
        /// Connected: commands run.
        case connected
        /// Closing: no new commands; the thread closes the connection and finishes.
        case closing
        /// Closed for good.
        case closed
    }

    /// A delivery to settle, tagged with the connection that received it.
    public struct Settlement: Sendable, Hashable {
        public enum Kind: Sendable, Hashable {
            case ack
            case reject(requeue: Bool)
            case nack(requeue: Bool)
        }

        /// The connection generation the delivery came from.
        public var generation: UInt64
        public var deliveryTag: UInt64
        public var kind: Kind

        public init(generation: UInt64, deliveryTag: UInt64, kind: Kind) {
            self.generation = generation
            self.deliveryTag = deliveryTag
            self.kind = kind
        }
    }

    /// What a command asks of the broker.
    public enum Operation: Sendable {
        /// Declare (and remember, to declare again after a reconnect).
        case topology(AMQPTopologyItem)
        /// Cancel a consumer (and forget it).
        case cancelConsumer(tag: String)
        case publish(AMQPOutgoingMessage)
        case settle(Settlement)
    }

    /// A queued command.
    public struct Command: Sendable {
        /// Unique within the connection, for cancelling.
        public var id: UInt64
        public var operation: Operation
        public var waiter: Waiter
    }

    /// How a command ended, for its waiter.
    public enum Outcome: Sendable {
        /// Done (a declaration, a cancel, a settlement).
        case done
        /// A publish's fate.
        case published(AMQPPublishOutcome)
        case failed(AMQPError)
        /// The caller stopped waiting before the command ran.
        case cancelled
    }

    /// A waiter to resume, and with what.
    public struct Completion: Sendable {
        public var waiter: Waiter
        public var outcome: Outcome
    }

    /// What running a command on the live connection gave.
    public enum RunResult: Sendable {
        /// It went out; a publish in confirm mode carries the tag its confirm will have.
        case succeeded(publishTag: UInt64?)
        /// The broker refused it and closed the channel (a declaration with other flags): the
        /// caller is told, the item is never declared again, and the connection starts over.
        case refusedByBroker(AMQPError)
        /// It can never succeed (librabbitmq refused to encode it, past what ``enqueue(_:waiter:)``
        /// checks): the caller is told and it is dropped, never tried again. The connection starts
        /// over (part of it may have been sent), and the commands after it run on the next one.
        case invalid(AMQPError)
        /// The connection broke while running it: it runs again on the next connection.
        case connectionBroke(AMQPError)
    }

    /// What the driver must do after an event.
    public struct Actions: Sendable {
        /// Waiters to resume.
        public var completions: [Completion] = []
        /// Wake the connection thread (new work).
        public var wakeThread = false
        /// The connection is unusable: drop it and reconnect.
        public var dropConnection = false
        /// Commands dropped because they can never succeed (for logs and a metric).
        public var dropped: [AMQPError] = []

        public init() {}
    }

    /// What the thread should do about a new connection.
    public enum ConnectedDecision: Sendable {
        /// Use it: it is generation `generation`; resume the waiters.
        case use(generation: UInt64, completions: [Completion])
        /// The connection is closing: close the new one at once.
        case closeIt
    }

    public private(set) var phase: Phase = .new
    /// How many connections were made (1 after the first).
    public private(set) var generation: UInt64 = 0
    /// Topology to declare on every new connection, in order.
    public private(set) var topology: [AMQPTopologyItem] = []
    /// Connection attempts that failed since the last success.
    public private(set) var failedAttempts = 0
    /// Which endpoint the next attempt goes to (an index into the configuration's list).
    public private(set) var endpointIndex = 0
    /// How many endpoints there are.
    private let endpointCount: Int

    private let publisherConfirms: Bool
    private var queue: [Command] = []
    private var pendingConfirms: [PendingConfirm] = []
    private var connectedWaiters: [Waiter] = []
    private var closeWaiters: [Waiter] = []
    private var nextID: UInt64 = 0
    /// Commands the thread has taken (running, or a publish waiting for its confirm).
    private var inFlight: Set<UInt64> = []
    /// Of those, the ones whose caller stopped waiting: they are not queued again.
    private var cancelledInFlight: Set<UInt64> = []

    private struct PendingConfirm: Sendable {
        var tag: UInt64
        var command: Command
        var message: AMQPOutgoingMessage
        var returned: (replyCode: UInt16, replyText: String)?
    }

    /// A machine for a connection that does (or does not) ask for publisher confirms.
    /// Creates a machine whose first connection attempt goes to endpoint `firstEndpoint` (of
    /// `endpointCount`); later attempts go round the list from there.
    public init(publisherConfirms: Bool, endpointCount: Int = 1, firstEndpoint: Int = 0) {
        self.publisherConfirms = publisherConfirms
        self.endpointCount = max(1, endpointCount)
        endpointIndex = max(0, firstEndpoint) % self.endpointCount
    }

    /// Whether the thread should stop.
    public var isClosing: Bool { phase == .closing || phase == .closed }

    /// Commands waiting to run.
    public var queuedCount: Int { queue.count }

    /// Publishes sent and waiting for their confirm.
    public var unconfirmedCount: Int { pendingConfirms.count }

    // MARK: Callers

    /// `start()`: true when the thread must be started (the first time only).
    public mutating func start() -> Bool {
        guard phase == .new else { return false }
        phase = .disconnected
        return true
    }

    /// A caller's command; returns its id (for ``cancel(_:)``) and what to do.
    public mutating func enqueue(_ operation: Operation, waiter: Waiter) -> (id: UInt64, actions: Actions) {
        nextID += 1
        let command = Command(id: nextID, operation: operation, waiter: waiter)
        var actions = Actions()
        switch phase {
        case .closing, .closed:
            actions.completions.append(Completion(waiter: waiter, outcome: .failed(Self.closedError)))
            return (command.id, actions)
        case .new, .disconnected, .connected:
            break
        }
        if case .settle(let settlement) = operation, settlement.generation != generation || phase != .connected {
            // From an earlier connection: the broker requeued the delivery when it dropped.
            actions.completions.append(Completion(waiter: waiter, outcome: .done))
            return (command.id, actions)
        }
        if case .publish(let message) = operation, let problem = message.validationProblem {
            let error = AMQPError(.invalidArgument, "a message to '\(message.exchange)' cannot be published: \(problem)")
            actions.completions.append(Completion(waiter: waiter, outcome: .failed(error)))
            actions.dropped.append(error)
            return (command.id, actions)
        }
        queue.append(command)
        actions.wakeThread = true
        return (command.id, actions)
    }

    /// The caller of command `id` stopped waiting: if it has not run, it never will. One the
    /// thread has taken goes on, but is not run again after a lost connection.
    public mutating func cancel(_ id: UInt64) -> Completion? {
        guard let index = queue.firstIndex(where: { $0.id == id }) else {
            if inFlight.contains(id) { cancelledInFlight.insert(id) }
            return nil
        }
        let command = queue.remove(at: index)
        return Completion(waiter: command.waiter, outcome: .cancelled)
    }

    /// A caller waits for a connection: resumed now (connected, or closed), or later.
    public mutating func waitUntilConnected(_ waiter: Waiter) -> Completion? {
        switch phase {
        case .connected: return Completion(waiter: waiter, outcome: .done)
        case .closing, .closed: return Completion(waiter: waiter, outcome: .failed(Self.closedError))
        case .new, .disconnected:
            connectedWaiters.append(waiter)
            return nil
        }
    }

    /// What `close()` must do.
    public enum CloseDecision: Sendable {
        /// Never started: everything is finished now.
        case finishedNow([Completion])
        /// Already closed: resume the closer at once.
        case alreadyClosed(Completion)
        /// The thread closes the connection; the closer is resumed by ``threadFinished()``.
        case wakeThreadAndWait
    }

    /// A caller closes the connection; `waiter` is resumed once it is closed.
    public mutating func close(_ waiter: Waiter) -> CloseDecision {
        switch phase {
        case .new:
            phase = .closed
            return .finishedNow(failEverything() + [Completion(waiter: waiter, outcome: .done)])
        case .closed:
            return .alreadyClosed(Completion(waiter: waiter, outcome: .done))
        case .closing, .disconnected, .connected:
            phase = .closing
            closeWaiters.append(waiter)
            return .wakeThreadAndWait
        }
    }

    // MARK: The connection thread

    /// A connection attempt succeeded and the topology was declared on it.
    public mutating func connected() -> ConnectedDecision {
        guard phase == .disconnected else { return .closeIt }
        generation += 1
        phase = .connected
        failedAttempts = 0
        defer { connectedWaiters = [] }
        return .use(generation: generation, completions: connectedWaiters.map { Completion(waiter: $0, outcome: .done) })
    }

    /// A connection attempt failed: the next goes to the next endpoint; returns how many failed
    /// in a row (for the back-off).
    public mutating func connectFailed() -> Int {
        failedAttempts += 1
        endpointIndex = (endpointIndex + 1) % endpointCount
        return failedAttempts
    }

    /// The commands to run now, in order (they leave the queue).
    public mutating func takeCommands() -> [Command] {
        guard phase == .connected else { return [] }
        defer { queue = [] }
        inFlight.formUnion(queue.map(\.id))
        return queue
    }

    /// How running `command` went; `unrun` are the commands taken with it that have not run yet
    /// (they go back to the head of the queue when the connection cannot go on).
    public mutating func commandRan(_ command: Command, _ result: RunResult, unrun: [Command] = []) -> Actions {
        var actions = Actions()
        defer {
            // Unless a publish now waits for its confirm, the command and those not run are no longer the thread's.
            for id in [command.id] + unrun.map(\.id) where !pendingConfirms.contains(where: { $0.command.id == id }) { settled(id) }
        }
        switch result {
        case .succeeded(let publishTag):
            switch command.operation {
            case .topology(let item):
                remember(item)
                actions.completions.append(Completion(waiter: command.waiter, outcome: .done))
            case .cancelConsumer(let tag):
                forgetConsumer(tag)
                actions.completions.append(Completion(waiter: command.waiter, outcome: .done))
            case .publish(let message):
                if publisherConfirms, let publishTag {
                    pendingConfirms.append(PendingConfirm(tag: publishTag, command: command, message: message))
                } else {
                    actions.completions.append(Completion(waiter: command.waiter, outcome: .published(.sent)))
                }
            case .settle:
                actions.completions.append(Completion(waiter: command.waiter, outcome: .done))
            }
        case .invalid(let error):
            actions.completions.append(Completion(waiter: command.waiter, outcome: failureOutcome(command, error)))
            actions.dropped.append(error)
            actions.completions += requeue(unrun)
            actions.dropConnection = true
        case .refusedByBroker(let error):
            if case .cancelConsumer(let tag) = command.operation { forgetConsumer(tag) }
            actions.completions.append(Completion(waiter: command.waiter, outcome: failureOutcome(command, error)))
            actions.completions += requeue(unrun)
            actions.dropConnection = true
        case .connectionBroke(let error):
            switch command.operation {
            case .topology, .publish:
                actions.completions += requeue([command] + unrun)  // runs again on the next connection
            case .cancelConsumer(let tag):
                // The consumer went with the connection; it is not declared again.
                forgetConsumer(tag)
                actions.completions.append(Completion(waiter: command.waiter, outcome: .done))
                actions.completions += requeue(unrun)
            case .settle:
                _ = error  // the broker requeues what the dropped connection held
                actions.completions.append(Completion(waiter: command.waiter, outcome: .done))
                actions.completions += requeue(unrun)
            }
            actions.dropConnection = true
        }
        return actions
    }

    private func failureOutcome(_ command: Command, _ error: AMQPError) -> Outcome {
        if case .settle = command.operation { return .done }
        return .failed(error)
    }

    /// The broker confirmed (or, `rejected`, refused) publishes up to `tag`.
    public mutating func publishConfirmed(tag: UInt64, multiple: Bool, rejected: Bool) -> [Completion] {
        let matches = { (pending: PendingConfirm) in multiple ? pending.tag <= tag : pending.tag == tag }
        let confirmed = pendingConfirms.filter(matches)
        pendingConfirms.removeAll(where: matches)
        for pending in confirmed { settled(pending.command.id) }
        return confirmed.map { pending in
            if rejected {
                let error = AMQPError(.publishNacked, "the broker refused a message published to '\(pending.message.exchange)' with routing key '\(pending.message.routingKey)'")
                return Completion(waiter: pending.command.waiter, outcome: .failed(error))
            }
            if let returned = pending.returned {
                return Completion(waiter: pending.command.waiter, outcome: .published(.returned(replyCode: returned.replyCode, replyText: returned.replyText)))
            }
            return Completion(waiter: pending.command.waiter, outcome: .published(.confirmed))
        }
    }

    /// The broker returned a mandatory message (its confirm follows). `basic.return` carries no
    /// publish tag; the body (which holds a unique id in every message the worker sends) tells
    /// which pending publish it was. False when none matches.
    public mutating func publishReturned(exchange: String, routingKey: String, body: [UInt8], replyCode: UInt16, replyText: String) -> Bool {
        guard let index = pendingConfirms.firstIndex(where: {
            $0.returned == nil && $0.message.mandatory && $0.message.routingKey == routingKey
                && $0.message.exchange == exchange && $0.message.body == body
        }) else { return false }
        pendingConfirms[index].returned = (replyCode, replyText)
        return true
    }

    /// The live connection broke (or was dropped): publishes whose confirm did not come go back to
    /// the head of the queue (published again: at least once), settlements queued for it are done
    /// (the broker requeued those deliveries), and the thread reconnects.
    /// The next attempt goes to the next endpoint: the node that dropped the connection is likely
    /// stopping (it may still accept a connection and drop it again) or cut off.
    public mutating func connectionLost() -> [Completion] {
        if phase == .connected {
            phase = .disconnected
            endpointIndex = (endpointIndex + 1) % endpointCount
        }
        let unconfirmed = pendingConfirms.map(\.command)
        pendingConfirms = []
        var completions = requeue(unconfirmed)
        for command in unconfirmed { settled(command.id) }
        let stale = queue.filter { if case .settle = $0.operation { true } else { false } }
        queue.removeAll { if case .settle = $0.operation { true } else { false } }
        completions += stale.map { Completion(waiter: $0.waiter, outcome: .done) }
        return completions
    }

    /// The thread stopped (after a close): every waiter learns the connection is closed, and the
    /// closers are resumed last.
    public mutating func threadFinished() -> [Completion] {
        phase = .closed
        let closers = closeWaiters.map { Completion(waiter: $0, outcome: .done) }
        closeWaiters = []
        return failEverything() + closers
    }

    // MARK: Helpers

    /// The error every command gets once the connection is closed.
    public static var closedError: AMQPError { AMQPError(.closed, "the connection is closed") }

    private mutating func failEverything() -> [Completion] {
        let waiting = queue.map(\.waiter) + pendingConfirms.map(\.command.waiter) + connectedWaiters
        queue = []
        pendingConfirms = []
        connectedWaiters = []
        inFlight = []
        cancelledInFlight = []
        return waiting.map { Completion(waiter: $0, outcome: .failed(Self.closedError)) }
    }

    /// Puts commands back at the head of the queue, in order, except those whose caller stopped
    /// waiting meanwhile: they end now, cancelled.
    private mutating func requeue(_ commands: [Command]) -> [Completion] {
        let cancelled = commands.filter { cancelledInFlight.contains($0.id) }
        queue.insert(contentsOf: commands.filter { !cancelledInFlight.contains($0.id) }, at: 0)
        return cancelled.map { Completion(waiter: $0.waiter, outcome: .cancelled) }
    }

    /// The thread is done with command `id`.
    private mutating func settled(_ id: UInt64) {
        inFlight.remove(id)
        cancelledInFlight.remove(id)
    }

    /// Adds an item to declare again. `basic.qos` applies to the consumers started after it, so
    /// each one keeps its place; declarations and consumers are kept once.
    private mutating func remember(_ item: AMQPTopologyItem) {
        if case .qos = item {
            topology.append(item)
        } else if !topology.contains(item) {
            topology.append(item)
        }
    }

    private mutating func forgetConsumer(_ tag: String) {
        topology.removeAll { if case .consumer(_, let consumerTag) = $0 { consumerTag == tag } else { false } }
    }
}
