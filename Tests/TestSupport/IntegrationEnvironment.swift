import Foundation
import Testing

/// Where integration suites find the real servers that `deploy/test.sh` starts.
///
/// Outside that script a suite whose server is missing is skipped with a message; under CI
/// (`CI=true`) the same absence is a failure, so a broken setup can never pass as a skip.
public enum IntegrationEnvironment {
    /// `rabbit://…` of the test broker.
    public static let amqpURLVariable = "IMAGE_WORKER_TEST_AMQP_URL"

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
