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

/// `count` random bytes: SplitMix64 seeded from the system generator, eight bytes a step (one
/// system call per byte took seconds for a few MiB in a debug build, on the cooperative pool).
public func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var state = generator.next()
    return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
        var offset = 0
        while offset < count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var word = state
            word = (word ^ (word >> 30)) &* 0xBF58_476D_1CE4_E5B9
            word = (word ^ (word >> 27)) &* 0x94D0_49BB_1331_11EB
            word ^= word >> 31
            for shift in stride(from: 0, to: min(8, count - offset) * 8, by: 8) {
                buffer[offset] = UInt8(truncatingIfNeeded: word >> UInt64(shift))
                offset += 1
            }
        }
        initialized = count
    }
}
