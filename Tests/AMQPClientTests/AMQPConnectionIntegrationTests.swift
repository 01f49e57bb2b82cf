@testable import AMQPClient
import AMQPModel
import Logging
import MetricsTestKit
import Testing
import TestSupport

/// The AMQP layer against the real RabbitMQ that deploy/test.sh starts.
@Suite("AMQP connection against RabbitMQ", .serialized)
struct AMQPConnectionIntegrationTests {
    let logger = Logger(label: "amqp-test")

    func connection(url: String, label: String = "test", heartbeat: Int = 60, vhost: String? = nil,
                    through proxy: FaultInjectingTCPProxy? = nil, metrics: TestMetrics? = nil) throws -> AMQPConnection {
        var endpoints = try TransportURL(parsing: url).endpoints
        if let vhost { for index in endpoints.indices { endpoints[index].virtualHost = vhost } }
        if let proxy {
            endpoints = [endpoints[0]]
            endpoints[0].host = "127.0.0.1"
            endpoints[0].port = proxy.port
        }
        let configuration = AMQPConfiguration(
            endpoints: endpoints, heartbeatSeconds: heartbeat,
            reconnect: AMQPReconnectPolicy(initialDelay: .milliseconds(100), maximumDelay: .seconds(1)),
            connectionName: "amqp-test-\(label)")
        let connection = AMQPConnection(configuration: configuration, label: label, logger: logger, metricsFactory: metrics)
        connection.start()
        return connection
    }

    func nextDelivery(_ connection: AMQPConnection, within timeout: Duration = .seconds(10)) async throws -> AMQPDelivery {
        try await withThrowingTaskGroup(of: AMQPDelivery?.self) { group in
            group.addTask {
                for await delivery in connection.deliveries { return delivery }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            return try #require(first, "no delivery within \(timeout)")
        }
    }

    @Test("publish with confirm, consume, and the properties survive the round trip")
    func roundTrip() async throws {
        try await withCleanup { cleanup in
            let url = try IntegrationEnvironment.amqpURL()
            let connection = try connection(url: url)
            cleanup.add { await connection.close() }
            let queue = "amqp-test-\(uniqueHex())"
            try await connection.declareQueue(AMQPQueueDeclaration(name: queue, autoDelete: true, arguments: ["x-expires": .int32(60_000)]))
            try await connection.consume(queue: queue)
            let properties = AMQPMessageProperties(contentType: "application/json", contentEncoding: "utf-8", headers: [:],
                                                   deliveryMode: 2, priority: 0, expiration: "60000")
            let body = Array(#"{"hello": "w\u00f6rld"}"#.utf8) + [0, 255]
            let outcome = try await connection.publish(AMQPOutgoingMessage(exchange: "", routingKey: queue, body: body, properties: properties))
            #expect(outcome == .confirmed)
            let delivery = try await nextDelivery(connection)
            #expect(delivery.body == body)
            #expect(delivery.properties == properties)
            #expect(delivery.routingKey == queue)
            #expect(delivery.redelivered == false)
            #expect(delivery.connectionGeneration == 1)
            await connection.ack(delivery)
        }
    }

    @Test("a publish that can never succeed (a routing key over 255 bytes) fails at once and is counted; the next one goes out")
    func impossiblePublishIsDropped() async throws {
        try await withCleanup { cleanup in
            let metrics = TestMetrics()
            let connection = try connection(url: try IntegrationEnvironment.amqpURL(), label: "dropper", metrics: metrics)
            cleanup.add { await connection.close() }
            let queue = "amqp-test-\(uniqueHex())"
            try await connection.declareQueue(AMQPQueueDeclaration(name: queue, autoDelete: true, arguments: ["x-expires": .int32(60_000)]))
            try await connection.consume(queue: queue)
            let properties = AMQPMessageProperties(contentType: "application/json")
            await #expect {
                _ = try await connection.publish(AMQPOutgoingMessage(exchange: "", routingKey: String(repeating: "q", count: 256), body: [1], properties: properties))
            } throws: { error in
                (error as? AMQPError)?.code == .invalidArgument
            }
            let dropped = try metrics.expectCounter("amqp_broker_commands_dropped_total", [("connection", "dropper")])
            #expect(dropped.totalValue == 1)
            // Not put back at the head of the queue: the next publish is confirmed and arrives.
            let outcome = try await connection.publish(AMQPOutgoingMessage(exchange: "", routingKey: queue, body: [2], properties: properties))
            #expect(outcome == .confirmed)
            #expect(try await nextDelivery(connection).body == [2])
            #expect(dropped.totalValue == 1)
        }
    }

    @Test("a rejected delivery with requeue comes back marked redelivered")
    func rejectRequeue() async throws {
        try await withCleanup { cleanup in
            let url = try IntegrationEnvironment.amqpURL()
            let connection = try connection(url: url)
            cleanup.add { await connection.close() }
            let queue = "amqp-test-\(uniqueHex())"
            try await connection.declareQueue(AMQPQueueDeclaration(name: queue, autoDelete: true))
            try await connection.consume(queue: queue)
            _ = try await connection.publish(AMQPOutgoingMessage(exchange: "", routingKey: queue, body: Array("x".utf8)))
            let first = try await nextDelivery(connection)
            await connection.reject(first, requeue: true)
            let second = try await nextDelivery(connection)
            #expect(second.body == Array("x".utf8))
            #expect(second.redelivered)
            await connection.ack(second)
        }
    }

    @Test("an unroutable mandatory message is returned, not confirmed")
    func mandatoryReturn() async throws {
        try await withCleanup { cleanup in
            let url = try IntegrationEnvironment.amqpURL()
            let connection = try connection(url: url)
            cleanup.add { await connection.close() }
            let outcome = try await connection.publish(AMQPOutgoingMessage(
                exchange: "", routingKey: "no-such-queue-\(uniqueHex())", body: Array("lost".utf8), mandatory: true))
            #expect(outcome == .returned(replyCode: 312, replyText: "NO_ROUTE"))
            // A routable mandatory message after it is confirmed as usual.
            let queue = "amqp-test-\(uniqueHex())"
            try await connection.declareQueue(AMQPQueueDeclaration(name: queue, autoDelete: true, arguments: ["x-expires": .int32(10_000)]))
            let routed = try await connection.publish(AMQPOutgoingMessage(exchange: "", routingKey: queue, body: Array("kept".utf8), mandatory: true))
            #expect(routed == .confirmed)
        }
    }

    @Test("a declaration that conflicts with an existing queue fails with PRECONDITION_FAILED, and the connection recovers")
    func preconditionFailed() async throws {
        try await withCleanup { cleanup in
            let url = try IntegrationEnvironment.amqpURL()
            let connection = try connection(url: url)
            cleanup.add { await connection.close() }
            let queue = "amqp-test-\(uniqueHex())"
            try await connection.declareQueue(AMQPQueueDeclaration(name: queue, autoDelete: true, arguments: ["x-expires": .int32(60_000)]))
            await #expect {
                try await connection.declareQueue(AMQPQueueDeclaration(name: queue, durable: true))
            } throws: { error in
                (error as? AMQPError)?.replyCode == AMQPError.preconditionFailed
            }
            // The refused declaration is not replayed; the remembered one is, and publishing works again.
            try await connection.consume(queue: queue)
            let outcome = try await connection.publish(AMQPOutgoingMessage(exchange: "", routingKey: queue, body: Array("after".utf8)))
            #expect(outcome == .confirmed)
            let delivery = try await nextDelivery(connection)
            #expect(delivery.body == Array("after".utf8))
            await connection.ack(delivery)
        }
    }

    @Test("heartbeats keep an idle connection alive past two heartbeat intervals")
    func heartbeats() async throws {
        try await withCleanup { cleanup in
            let url = try IntegrationEnvironment.amqpURL()
            let connection = try connection(url: url, label: "heartbeat", heartbeat: 2)
            cleanup.add { await connection.close() }
            try await connection.waitUntilConnected()
            try await Task.sleep(for: .seconds(7))
            #expect(connection.isConnected)
            #expect(connection.generation == 1, "the connection was re-established: heartbeats were missed")
            let queue = "amqp-test-\(uniqueHex())"
            try await connection.declareQueue(AMQPQueueDeclaration(name: queue, autoDelete: true, arguments: ["x-expires": .int32(10_000)]))
            #expect(connection.generation == 1)
        }
    }

    @Test("a broker that goes silent is noticed by missed heartbeats, and the connection comes back")
    func missedHeartbeats() async throws {
        try await withCleanup { cleanup in
            let url = try IntegrationEnvironment.amqpURL()
            var endpoints = try TransportURL(parsing: url).endpoints
            // Silence on this connection's path only (a frozen forwarder, sockets kept open), not on
            // the shared broker that the other suites are using at the same time.
            let proxy = try FaultInjectingTCPProxy(targetPort: endpoints[0].port)
            defer { proxy.close() }
            endpoints[0].host = "127.0.0.1"
            endpoints[0].port = proxy.port
            endpoints[0].virtualHost = "/"
            let configuration = AMQPConfiguration(endpoints: endpoints, heartbeatSeconds: 2, connectTimeout: .seconds(3),
                                                  reconnect: AMQPReconnectPolicy(initialDelay: .milliseconds(100), maximumDelay: .seconds(1)),
                                                  connectionName: "amqp-test-silent")
            let connection = AMQPConnection(configuration: configuration, label: "silent", logger: logger)
            connection.start()
            cleanup.add { await connection.close() }
            try await connection.waitUntilConnected()
            proxy.freeze()
            let frozenAt = ContinuousClock.now
            let deadline = frozenAt + .seconds(20)
            while ContinuousClock.now < deadline, connection.isConnected { try await Task.sleep(for: .milliseconds(100)) }
            let noticed = !connection.isConnected
            proxy.thaw()
            #expect(noticed, "the silent broker was not noticed within 20 s (heartbeat 2 s)")
            let reconnectDeadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < reconnectDeadline, connection.generation < 2 { try await Task.sleep(for: .milliseconds(100)) }
            #expect(connection.generation >= 2)
            #expect(connection.isConnected)
        }
    }

    @Test("a publish waiting for a connection ends when its task is cancelled")
    func cancelledWhileDisconnected() async throws {
        try await withCleanup { cleanup in
            let configuration = AMQPConfiguration(endpoints: [AMQPEndpoint(host: "127.0.0.1", port: 1)],
                                                  reconnect: AMQPReconnectPolicy(initialDelay: .seconds(5), maximumDelay: .seconds(5)))
            let connection = AMQPConnection(configuration: configuration, label: "nowhere", logger: logger)
            connection.start()
            cleanup.add { await connection.close() }
            let started = ContinuousClock.now
            let publish = Task { try await connection.publish(AMQPOutgoingMessage(exchange: "", routingKey: "q", body: [1])) }
            try await Task.sleep(for: .milliseconds(200))
            publish.cancel()
            await #expect(throws: CancellationError.self) { _ = try await publish.value }
            #expect(ContinuousClock.now - started < .seconds(3))
        }
    }

    @Test("after the broker drops the connection it reconnects, declares again and resumes consuming")
    func reconnect() async throws {
        try await withCleanup { cleanup in
            let url = try IntegrationEnvironment.amqpURL()
            // The drop happens on this connection's path only (the shared broker goes on).
            let proxy = try FaultInjectingTCPProxy(targetPort: try TransportURL(parsing: url).endpoints[0].port)
            cleanup.add { proxy.close() }
            let connection = try connection(url: url, label: "reconnect", through: proxy)
            cleanup.add { await connection.close() }
            let queue = "q-\(uniqueHex())"
            try await connection.declareQueue(AMQPQueueDeclaration(name: queue, autoDelete: true))
            try await connection.consume(queue: queue)
            #expect(connection.generation == 1)

            proxy.dropConnections()
            let deadline = ContinuousClock.now + .seconds(20)
            while connection.generation < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(connection.generation >= 2)
            // The auto-delete queue went with its only consumer; the reconnect must have declared it
            // again, or this mandatory message would come back unroutable.
            let outcome = try await connection.publish(AMQPOutgoingMessage(exchange: "", routingKey: queue, body: Array("again".utf8), mandatory: true))
            #expect(outcome == .confirmed)
            let delivery = try await nextDelivery(connection)
            #expect(delivery.body == Array("again".utf8))
            #expect(delivery.connectionGeneration == connection.generation)
            await connection.ack(delivery)
        }
    }

    @Test("TLS: the broker is verified against the configured CA; another CA is refused")
    func tls() async throws {
        try await withCleanup { cleanup in
            let url = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_AMQPS_URL", for: "RabbitMQ's TLS listener")
            let certificates = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_TLS_DIR", for: "the test certificates")
            let endpoints = try TransportURL(parsing: url).endpoints
            #expect(endpoints.allSatisfy { $0.useTLS })
            let trusted = AMQPConfiguration(endpoints: endpoints, tls: AMQPTLSConfiguration(caFile: certificates + "/ca.pem"), connectionName: "amqp-test-tls")
            let connection = AMQPConnection(configuration: trusted, label: "tls", logger: logger)
            connection.start()
            cleanup.add { await connection.close() }
            let queue = "amqp-test-tls-\(uniqueHex())"
            try await connection.declareQueue(AMQPQueueDeclaration(name: queue, autoDelete: true, arguments: ["x-expires": .int32(10_000)]))
            try await connection.consume(queue: queue)
            #expect(try await connection.publish(AMQPOutgoingMessage(exchange: "", routingKey: queue, body: Array("over tls".utf8))) == .confirmed)
            #expect(try await nextDelivery(connection).body == Array("over tls".utf8))

            let untrusted = AMQPConfiguration(endpoints: endpoints, tls: AMQPTLSConfiguration(caFile: certificates + "/other-ca.pem"))
            #expect {
                _ = try LibRabbitMQConnection(endpoint: endpoints[0], configuration: untrusted)
            } throws: { error in
                (error as? AMQPError)?.code == .connectionFailed
            }
        }
    }

    @Test("closing fails queued publishes and finishes the delivery stream")
    func close() async throws {
        let url = try IntegrationEnvironment.amqpURL()
        let connection = try connection(url: url, label: "close")
        try await connection.waitUntilConnected()
        await connection.close()
        await #expect {
            _ = try await connection.publish(AMQPOutgoingMessage(exchange: "", routingKey: "x", body: []))
        } throws: { error in
            (error as? AMQPError)?.code == .closed
        }
        var count = 0
        for await _ in connection.deliveries { count += 1 }
        #expect(count == 0)
    }
}
