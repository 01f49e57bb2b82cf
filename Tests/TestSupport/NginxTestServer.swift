import Foundation
import Testing

/// The test nginx that deploy/test.sh starts: where it listens, where its files are, and its
/// basic-auth password.
public struct NginxTestServer: Sendable {
    public let http: String
    public let https: String
    /// The document root: files written here are served.
    public let root: String
    /// The folder of the test CA (`ca.pem`, `other-ca.pem`).
    public let certificates: String
    /// The password of `imageuser` under `/private/`.
    public let password: String

    /// Skips the test when there is no test nginx (fails under CI).
    public init() throws {
        http = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_HTTP_URL", for: "nginx")
        https = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_HTTPS_URL", for: "nginx over TLS")
        root = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_HTTP_ROOT", for: "nginx's document root")
        certificates = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_TLS_DIR", for: "the test certificates")
        password = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_HTTP_PASSWORD", for: "nginx's basic-auth password")
    }

    /// Writes `bytes` at `path` under the document root.
    public func publish(_ path: String, _ bytes: [UInt8]) throws {
        let file = (root as NSString).appendingPathComponent(path)
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: file))
    }
}

/// `count` random bytes.
public func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}
