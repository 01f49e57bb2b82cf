import Foundation
import Testing

/// Where integration suites find the real servers that `deploy/test.sh` starts.
///
/// Outside that script a suite whose server is missing is skipped with a message; under CI
/// (`CI=true`) the same absence is a failure, so a broken setup can never pass as a skip.
public enum IntegrationEnvironment {
    /// `rabbit://…` of the test broker.
    public static let amqpURLVariable = "IMAGE_WORKER_TEST_AMQP_URL"
    /// A command that controls the test broker (`deploy/lib/rabbitmq.sh`, with `BROKER_DIR` set).
    public static let brokerControlVariable = "IMAGE_WORKER_TEST_BROKER_CTL"

    /// Whether this is a CI run, where nothing may be skipped.
    public static var isCI: Bool {
        let value = ProcessInfo.processInfo.environment["CI"]?.lowercased() ?? ""
        return ["1", "true", "yes"].contains(value)
    }

    /// The value of `variable`; skips the test when it is unset, or fails it under CI.
    public static func require(_ variable: String, for server: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        if let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty {
            return value
        }
        if isCI {
            throw MissingServerError(message: "\(server) is required under CI but \(variable) is not set; deploy/test.sh starts it and sets the variable")
        }
        try Test.cancel("\(server) not available: set \(variable) (deploy/test.sh does)", sourceLocation: sourceLocation)
    }

    /// The test broker's transport URL.
    public static func amqpURL() throws -> String {
        try require(amqpURLVariable, for: "RabbitMQ")
    }

    /// Runs the broker control script with `arguments` and returns its standard output.
    @discardableResult
    public static func brokerControl(_ arguments: String...) async throws -> String {
        let command = try require(brokerControlVariable, for: "RabbitMQ control")
        return try await run(command, arguments)
    }

    /// Runs a program and returns its standard output; throws when it exits non-zero.
    ///
    /// The wait for the process and the read of its output block, for seconds with `rabbitmqctl`
    /// (an Erlang VM start): they run on a thread of their own, never on the cooperative pool,
    /// where two such waits would stop every other test of the run.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String]) async throws -> String {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<String, Error>) in
            Thread.detachNewThread {
                continuation.resume(with: Result { try runBlocking(executable, arguments) })
            }
        }
    }

    private static func runBlocking(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandError(message: "\(executable) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus)")
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// An integration server that CI must have and does not.
public struct MissingServerError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// A helper command that failed.
public struct CommandError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
