import Primitives
import Crypto
import Foundation
import ImageServices
import ImageWorker
import Logging

/// `image-worker-bench hash [MIB]`: SHA-256 and SHA-512 of MIB MiB (default 256) in memory,
/// through swift-crypto (BoringSSL) and through libcrypto (the worker's ``MultiDigest``), best of
/// three runs each, as `<implementation>_<algorithm>_mbps=…`. Both libraries honour
/// `OPENSSL_ia32cap`, so a CPU's SHA extensions can be masked to measure as on a CPU without them.
func hashBenchmark(megabytes: Int) {
    var generator = SystemRandomNumberGenerator()
    let words = (0..<(megabytes << 17)).map { _ in generator.next() }
    words.withUnsafeBytes { bytes in
        func best(_ body: () -> Void) -> Double {
            var fastest = Double.infinity
            for _ in 0..<3 {
                let elapsed = ContinuousClock().measure(body)
                fastest = min(fastest, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            }
            return Double(megabytes) * 1.048576 / fastest
        }
        let figures: [(String, Double)] = [
            ("swift_crypto_sha256", best { _ = SHA256.hash(data: bytes) }),
            ("libcrypto_sha256", best { var digest = try! MultiDigest([.sha256]); digest.update(bytes); _ = digest.finalize() }),
            ("swift_crypto_sha512", best { _ = SHA512.hash(data: bytes) }),
            ("libcrypto_sha512", best { var digest = try! MultiDigest([.sha512]); digest.update(bytes); _ = digest.finalize() }),
        ]
        for (name, rate) in figures { print(String(format: "%@_mbps=%.0f", name, rate)) }
    }
}

if CommandLine.arguments.count >= 2, CommandLine.arguments[1] == "hash" {
    hashBenchmark(megabytes: CommandLine.arguments.count > 2 ? Int(CommandLine.arguments[2]) ?? 256 : 256)
    exit(0)
}

/// `image-worker-bench same-fs SOURCE IMAGES_DIR COUNT [CHECKSUM]`: the in-worker time of `COUNT`
/// fetch_image runs of one `file://` source into as many node folders on the same file system,
/// through the fetcher the worker uses (open and check the path, hard link, verify, rename).
/// Prints `first_us=…` (the run that reads and hashes the source) and `median_us=…`, `p99_us=…`
/// of the rest. Used by deploy/bench.sh; the process's own clock, so no start-up is counted.
let arguments = CommandLine.arguments
guard arguments.count >= 5, arguments[1] == "same-fs", let count = Int(arguments[4]), count > 1 else {
    FileHandle.standardError.write(Data("usage: image-worker-bench same-fs SOURCE IMAGES_DIR COUNT [CHECKSUM] | hash [MIB]\n".utf8))
    exit(2)
}
let source = arguments[2]
let imagesDirectory = arguments[3]
let checksum = arguments.count > 5 ? arguments[5] : nil

var registry = ImageServiceRegistry()
registry.register(FileImageService(policy: FilePathPolicy(allowedPaths: [(source as NSString).deletingLastPathComponent])))
let fetcher = ImageFetcher(registry: registry)
let store = try NodeImageStore(path: imagesDirectory)
let context = ImageRequestContext(requestID: "req-bench", logger: Logger(label: "bench"))
var micros: [Double] = []
for _ in 0..<count {
    let info = InstanceInfo(imageSource: "file://" + source, imageChecksum: checksum)
    let arguments = try FetchImageArguments(nodeUUID: UUID().uuidString.lowercased(), instanceInfo: info)
    let started = ContinuousClock.now
    _ = try await fetcher.fetch(arguments, into: store, context: context, progress: { _, _ in })
    let elapsed = ContinuousClock.now - started
    micros.append(Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12)
}
let rest = micros.dropFirst().sorted()
print(String(format: "first_us=%.1f", micros[0]))
print(String(format: "median_us=%.1f", rest[rest.count / 2]))
print(String(format: "p99_us=%.1f", rest[min(rest.count - 1, rest.count * 99 / 100)]))
