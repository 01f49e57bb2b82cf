import Testing
@testable import AMQPModel

/// The connection's decisions, played out without a broker: a waiter is a number, and each test
/// checks whom the machine resumes, with what, and what it tells the driver to do.
@Suite("AMQP connection state machine")
struct AMQPConnectionStateMachineTests {
    typealias Machine = AMQPConnectionStateMachine<Int>

    /// A started, connected machine (generation 1).
    func connectedMachine(confirms: Bool = true) -> Machine {
        var machine = Machine(publisherConfirms: confirms)
        let started = machine.start()
        #expect(started)
        guard case .use(let generation, _) = machine.connected() else {
            Issue.record("a started machine must take its first connection")
            return machine
        }
        #expect(generation == 1)
        return machine
    }

    func message(_ routingKey: String = "q", body: [UInt8] = [1]) -> AMQPOutgoingMessage {
        AMQPOutgoingMessage(exchange: "", routingKey: routingKey, body: body, mandatory: true)
    }

    func outcomes(_ completions: [Machine.Completion]) -> [Int: String] {
        Dictionary(uniqueKeysWithValues: completions.map { ($0.waiter, describe($0.outcome)) })
    }

    func describe(_ outcome: Machine.Outcome) -> String {
        switch outcome {
        case .done: "done"
        case .published(.confirmed): "confirmed"
        case .published(.sent): "sent"
        case .published(.returned(let code, _)): "returned \(code)"
        case .failed(let error): "failed \(error.code)"
        case .cancelled: "cancelled"
        }
    }

    @Test("reconnect during settle: a settlement of the dropped connection is a no-op, never run on the next one")
    func reconnectDuringSettle() {
        var machine = connectedMachine()
        let settle = Machine.Settlement(generation: 1, deliveryTag: 7, kind: .ack)
        let (_, queued) = machine.enqueue(.settle(settle), waiter: 1)
        #expect(queued.wakeThread && queued.completions.isEmpty)
        // The connection drops before the thread ran it.
        #expect(outcomes(machine.connectionLost()) == [1: "done"])
        #expect(machine.queuedCount == 0)
        guard case .use(let generation, _) = machine.connected() else { Issue.record("no reconnect"); return }
        #expect(generation == 2)
        #expect(machine.takeCommands().isEmpty, "the old delivery tag must not be acknowledged on the new connection")
        // A settlement arriving after the reconnect, for a delivery of the old connection, is done at once.
        let (_, late) = machine.enqueue(.settle(settle), waiter: 2)
        #expect(outcomes(late.completions) == [2: "done"])
        #expect(!late.wakeThread)
    }

    @Test("hosts: the first attempt goes to the chosen host, failures and lost connections move round the list in order")
    func endpointOrder() {
        var machine = Machine(publisherConfirms: true, endpointCount: 3, firstEndpoint: 2)
        #expect(machine.endpointIndex == 2)
        _ = machine.start()
        #expect(machine.connectFailed() == 1)
        #expect(machine.endpointIndex == 0, "after the last host, the first")
        _ = machine.connected()
        #expect(machine.endpointIndex == 0, "a success stays where it is")
        _ = machine.connectionLost()
        #expect(machine.endpointIndex == 1, "the node that dropped the connection is not tried first")
        _ = machine.connectionLost()
        #expect(machine.endpointIndex == 1, "a loss noticed twice moves once")
        #expect(Machine(publisherConfirms: true, endpointCount: 3, firstEndpoint: 7).endpointIndex == 1)
    }

    @Test("close during reconnect: waiters learn the connection is closed, and a connection made meanwhile is closed at once")
    func closeDuringReconnect() {
        var machine = connectedMachine()
        #expect(machine.connectionLost().isEmpty)
        #expect(machine.connectFailed() == 1)
        #expect(machine.waitUntilConnected(10) == nil, "a caller waits for the reconnect")
        let (_, publish) = machine.enqueue(.publish(message()), waiter: 11)
        #expect(publish.wakeThread)
        guard case .wakeThreadAndWait = machine.close(12) else { Issue.record("closing a live machine waits for its thread"); return }
        #expect(machine.isClosing)
        // The connect attempt that was under way succeeds after the close: it is not used.
        guard case .closeIt = machine.connected() else { Issue.record("a connection made while closing must be closed"); return }
        let (_, afterClose) = machine.enqueue(.publish(message()), waiter: 13)
        #expect(outcomes(afterClose.completions) == [13: "failed closed"])
        let final = outcomes(machine.threadFinished())
        #expect(final == [10: "failed closed", 11: "failed closed", 12: "done"])
        #expect(machine.phase == .closed)
    }

    @Test("a confirm after a drop: the publish goes out again on the next connection and its caller is resumed once")
    func confirmAfterDrop() {
        var machine = connectedMachine()
        let (_, queued) = machine.enqueue(.publish(message(body: [9])), waiter: 1)
        #expect(queued.wakeThread)
        let commands = machine.takeCommands()
        #expect(commands.count == 1)
        #expect(machine.commandRan(commands[0], .succeeded(publishTag: 1)).completions.isEmpty)
        #expect(machine.unconfirmedCount == 1)
        // The connection drops before the confirm came: the message is queued again (at least once).
        #expect(machine.connectionLost().isEmpty)
        #expect(machine.queuedCount == 1 && machine.unconfirmedCount == 0)
        // A confirm from the dropped connection's numbering means nothing now.
        #expect(machine.publishConfirmed(tag: 1, multiple: false, rejected: false).isEmpty)
        guard case .use = machine.connected() else { Issue.record("no reconnect"); return }
        let again = machine.takeCommands()
        #expect(again.count == 1 && again[0].waiter == 1)
        #expect(machine.commandRan(again[0], .succeeded(publishTag: 1)).completions.isEmpty)
        #expect(outcomes(machine.publishConfirmed(tag: 1, multiple: false, rejected: false)) == [1: "confirmed"])
        #expect(machine.publishConfirmed(tag: 1, multiple: false, rejected: false).isEmpty, "resumed exactly once")
    }

    @Test("a publish that can never succeed is dropped with an error, never retried, and the next one goes out")
    func publishThatCanNeverSucceed() {
        var machine = connectedMachine()
        // Refused before anything is sent: a routing key over 255 bytes.
        let (_, refused) = machine.enqueue(.publish(message(String(repeating: "k", count: 300))), waiter: 1)
        #expect(outcomes(refused.completions) == [1: "failed invalidArgument"])
        #expect(refused.dropped.count == 1)
        #expect(!refused.wakeThread && machine.queuedCount == 0)
        let (_, next) = machine.enqueue(.publish(message()), waiter: 2)
        #expect(next.wakeThread)
        let commands = machine.takeCommands()
        #expect(commands.map(\.waiter) == [2])
        #expect(machine.commandRan(commands[0], .succeeded(publishTag: 1)).completions.isEmpty)
        #expect(outcomes(machine.publishConfirmed(tag: 1, multiple: false, rejected: false)) == [2: "confirmed"])
    }

    @Test("a publish librabbitmq refuses to encode is dropped; the commands after it run on the next connection")
    func libraryRefusal() {
        var machine = connectedMachine()
        _ = machine.enqueue(.publish(message(body: [1])), waiter: 1)
        _ = machine.enqueue(.publish(message(body: [2])), waiter: 2)
        let commands = machine.takeCommands()
        let actions = machine.commandRan(commands[0], .invalid(AMQPError(.invalidArgument, "bad data")), unrun: Array(commands[1...]))
        #expect(outcomes(actions.completions) == [1: "failed invalidArgument"])
        #expect(actions.dropConnection && actions.dropped.count == 1)
        #expect(machine.connectionLost().isEmpty)
        guard case .use = machine.connected() else { Issue.record("no reconnect"); return }
        #expect(machine.takeCommands().map(\.waiter) == [2], "only the next publish is sent again, not the refused one")
    }

    @Test("a declaration the broker refuses is not declared again; the connection starts over")
    func refusedDeclaration() {
        var machine = connectedMachine()
        let queue = AMQPTopologyItem.queue(AMQPQueueDeclaration(name: "q", durable: true))
        _ = machine.enqueue(.topology(queue), waiter: 1)
        let commands = machine.takeCommands()
        let refusal = AMQPError(.brokerClosed, "PRECONDITION_FAILED", replyCode: 406)
        let actions = machine.commandRan(commands[0], .refusedByBroker(refusal))
        #expect(outcomes(actions.completions) == [1: "failed brokerClosed"])
        #expect(actions.dropConnection)
        #expect(machine.topology.isEmpty)
        _ = machine.enqueue(.topology(.qos(prefetchCount: 3)), waiter: 2)
        let next = machine.takeCommands()
        #expect(machine.commandRan(next[0], .succeeded(publishTag: nil)).completions.map(\.waiter) == [2])
        #expect(machine.topology == [.qos(prefetchCount: 3)], "what succeeded is declared again after a reconnect")
    }

    @Test("a command cancelled while queued never runs; one running is not affected")
    func cancellation() {
        var machine = connectedMachine()
        let (first, _) = machine.enqueue(.publish(message()), waiter: 1)
        let (second, _) = machine.enqueue(.publish(message()), waiter: 2)
        #expect(machine.cancel(first).map { describe($0.outcome) } == "cancelled")
        #expect(machine.cancel(first) == nil)
        let commands = machine.takeCommands()
        #expect(commands.map(\.id) == [second])
        #expect(machine.cancel(second) == nil, "taken by the thread: it runs")
    }

    @Test("a publish whose caller stops waiting while it awaits its confirm is not sent again after a drop")
    func cancelledWhileInFlight() {
        var machine = connectedMachine()
        let (id, _) = machine.enqueue(.publish(message()), waiter: 1)
        let (other, _) = machine.enqueue(.publish(message(body: [2])), waiter: 2)
        let commands = machine.takeCommands()
        _ = machine.commandRan(commands[0], .succeeded(publishTag: 1))
        _ = machine.commandRan(commands[1], .succeeded(publishTag: 2))
        #expect(machine.cancel(id) == nil, "sent: it cannot be taken back now")
        #expect(outcomes(machine.connectionLost()) == [1: "cancelled"])
        #expect(machine.queuedCount == 1, "the other publish goes out again")
        guard case .use = machine.connected() else { Issue.record("no reconnect"); return }
        #expect(machine.takeCommands().map(\.id) == [other])
        // A cancel for a command long finished changes nothing.
        #expect(machine.cancel(id) == nil)
    }

    @Test("a returned mandatory message is reported with its confirm")
    func returnedMessage() {
        var machine = connectedMachine()
        _ = machine.enqueue(.publish(message("gone", body: [5])), waiter: 1)
        let commands = machine.takeCommands()
        _ = machine.commandRan(commands[0], .succeeded(publishTag: 1))
        let unrelated = machine.publishReturned(exchange: "", routingKey: "other", body: [5], replyCode: 312, replyText: "NO_ROUTE")
        let matched = machine.publishReturned(exchange: "", routingKey: "gone", body: [5], replyCode: 312, replyText: "NO_ROUTE")
        #expect(!unrelated)
        #expect(matched)
        #expect(outcomes(machine.publishConfirmed(tag: 1, multiple: false, rejected: false)) == [1: "returned 312"])
    }

    @Test("without publisher confirms a publish is done once sent")
    func withoutConfirms() {
        var machine = connectedMachine(confirms: false)
        _ = machine.enqueue(.publish(message()), waiter: 1)
        let commands = machine.takeCommands()
        #expect(outcomes(machine.commandRan(commands[0], .succeeded(publishTag: 1)).completions) == [1: "sent"])
    }
}

@Suite("messages that can never be published")
struct OutgoingMessageValidationTests {
    @Test("short strings over 255 bytes are named; at 255 they are fine")
    func shortStrings() {
        let long = String(repeating: "é", count: 128)  // 256 bytes
        #expect(AMQPOutgoingMessage(exchange: "", routingKey: long, body: []).validationProblem?.contains("routing key is 256 bytes") == true)
        #expect(AMQPOutgoingMessage(exchange: "", routingKey: String(repeating: "k", count: 255), body: []).validationProblem == nil)
        let properties = AMQPMessageProperties(contentType: long)
        #expect(AMQPOutgoingMessage(exchange: "", routingKey: "q", body: [], properties: properties).validationProblem?.contains("content type") == true)
        let headers = AMQPMessageProperties(headers: ["x": .table([AMQPTable.Entry(key: long, value: .bool(true))].reduce(into: AMQPTable()) { $0.entries.append($1) })])
        #expect(AMQPOutgoingMessage(exchange: "", routingKey: "q", body: [], properties: headers).validationProblem?.contains("header name") == true)
    }
}
