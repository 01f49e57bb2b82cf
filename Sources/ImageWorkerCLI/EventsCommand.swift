import OsloJSON
import AMQPClient
import AMQPModel
import OsloAMQP
import ArgumentParser
import Foundation
import ImageWorker
import Logging
import OsloMessaging

/// `image-worker events`: print the worker's notifications as they are published.
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Print image-worker notifications as they are published (one JSON object per line).",
        discussion: """
            Listens on a private queue bound to <topic>.* for every notification topic, so it takes \
            nothing away from other listeners (the shared <topic>.info and <topic>.error queues keep \
            their copies).
            """)

    @OptionGroup var options: ConfigurationOptions

    @Option(help: "Stop after this many events.")
    var count: Int?

    @Option(help: "Stop after this many seconds.")
    var timeout: Int?

    func run() async throws {
        let configuration = try await options.load()
        bootstrapLogging(level: .warning)
        var amqp = configuration.amqpConfiguration
        amqp.connectionName = "image-worker-events"
        amqp.publisherConfirms = false
        let connection = AMQPConnection(configuration: amqp, label: "events", logger: Logger(label: "image-worker-events"))
        connection.start()
        let queue = "image-worker-events-\(OsloIdentifiers.uuid4Hex())"
        try await connection.declareExchange(configuration.queueOptions.controlExchange(configuration.controlExchange))
        try await connection.declareQueue(AMQPQueueDeclaration(name: queue, exclusive: true, autoDelete: true))
        for topic in configuration.notificationTopics {
            try await connection.bindQueue(AMQPQueueBinding(queue: queue, exchange: configuration.controlExchange, routingKey: "\(topic).*"))
        }
        try await connection.consume(queue: queue)
        FileHandle.standardError.write(Data("listening for \(configuration.notificationTopics.map { "\($0).*" }.joined(separator: ", ")) on exchange \(configuration.controlExchange)\n".utf8))
        let limit = count
        let seconds = timeout
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var seen = 0
                for await delivery in connection.deliveries {
                    await connection.ack(delivery)
                    if let message = try? OsloEnvelope.unwrap(delivery.body) {
                        FileHandle.standardOutput.write(Data((JSONWriter().string(.object(message)) + "\n").utf8))
                    }
                    seen += 1
                    if let limit, seen >= limit { return }
                }
            }
            if let seconds {
                group.addTask { try? await Task.sleep(for: .seconds(seconds)) }
            }
            await group.next()
            group.cancelAll()
            await connection.close()
        }
    }
}
