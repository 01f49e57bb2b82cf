import OsloJSON
import AMQPClient
import AMQPModel
import OsloAMQP
import ArgumentParser
import Foundation
import ImageWorker
import Logging
import OsloMessaging

/// What `call` and `cast` share: where to send, and the method's arguments.
struct RequestOptions: ParsableArguments {
    @Argument(help: "The method (fetch_image, validate_image, show_image, delete_images).")
    var method: String

    @Argument(help: "The method's arguments as a JSON object, e.g. '{\"node_uuid\": \"…\", \"instance_info\": {…}}'.")
    var arguments: String = "{}"

    @Option(help: "Send to one worker's queue (<topic>.<server>) instead of the shared one.")
    var server: String?

    @Option(help: "The request_id to put in the context.")
    var requestID: String?

    /// The arguments, parsed.
    func argumentsObject() throws -> JSONObject {
        do {
            guard let object = try JSONParser().parse(arguments).objectValue else { throw ValidationError("the arguments must be a JSON object") }
            return object
        } catch let error as JSONParser.Error {
            throw ValidationError("the arguments are not valid JSON: \(error)")
        }
    }

    var context: RPCContext {
        RPCContext(fields: ["request_id": .string(requestID ?? "req-\(OsloIdentifiers.uuid4())")])
    }
}

/// Connects as a conductor would, runs `body` with an RPC client, and closes.
func withRPCClient<T: Sendable>(_ configuration: WorkerConfiguration, _ body: @escaping @Sendable (RPCClient) async throws -> T) async throws -> T {
    var amqp = configuration.amqpConfiguration
    amqp.connectionName = "image-worker-cli"
    let logger = Logger(label: "image-worker-cli")
    let connection = AMQPConnection(configuration: amqp, label: "cli", logger: logger)
    connection.start()
    do {
        let result = try await RPCClient.withClient(connection: connection, exchange: configuration.controlExchange,
                                                    options: configuration.queueOptions, logger: logger, body)
        await connection.close()
        return result
    } catch {
        await connection.close()
        throw error
    }
}

/// `image-worker call`: a conductor's call in a command; prints the result.
struct CallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Call a worker method the way a conductor does and print the result as JSON.")

    @OptionGroup var options: ConfigurationOptions
    @OptionGroup var request: RequestOptions

    @Option(help: "Seconds to wait for the reply.")
    var timeout: Int = 60

    @Option(help: "Ask for heartbeats every half of this many seconds while the call runs.")
    var callMonitorTimeout: Int?

    func run() async throws {
        var configuration = try await options.load()
        configuration.logLevel = .warning
        bootstrapLogging(level: .warning)
        let args = try request.argumentsObject()
        let (method, server, context, timeout, monitor) = (request.method, request.server, request.context, timeout, callMonitorTimeout)
        let topic = configuration.topic
        do {
            let result = try await withRPCClient(configuration) { client in
                try await client.call(method, args: args, topic: topic, server: server, timeout: .seconds(timeout),
                                      callMonitorTimeout: monitor, context: context)
            }
            print(JSONWriter(style: .pretty).string(result))
        } catch let failure as RemoteFailure {
            FileHandle.standardError.write(Data("\(failure.className): \(failure.message)\n".utf8))
            throw ExitCode(1)
        } catch let timeout as RPCClient.TimeoutError {
            FileHandle.standardError.write(Data("MessagingTimeout: \(timeout)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// `image-worker cast`: a conductor's cast in a command.
struct CastCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cast",
        abstract: "Cast a worker method the way a conductor does (no reply; watch the events).")

    @OptionGroup var options: ConfigurationOptions
    @OptionGroup var request: RequestOptions

    @Flag(help: "Send to every worker (the fanout exchange).")
    var fanout = false

    func run() async throws {
        let configuration = try await options.load()
        bootstrapLogging(level: .warning)
        let args = try request.argumentsObject()
        let (method, server, context, fanout) = (request.method, request.server, request.context, fanout)
        let topic = configuration.topic
        try await withRPCClient(configuration) { client in
            try await client.cast(method, args: args, topic: topic, server: server, fanout: fanout, context: context)
        }
        print("sent \(method) (request_id \(context.requestID ?? "-"))")
    }
}
