import Foundation
import ImageServices
import ImageWorker
import Logging

/// `image-worker-bench same-fs SOURCE IMAGES_DIR COUNT [CHECKSUM]`: the in-worker time of `COUNT`
/// fetch_image runs of one `file://` source into as many node folders on the same file system,
/// through the fetcher the worker uses (open and check the path, hard link, verify, rename).
/// Prints `first_us=…` (the run that reads and hashes the source) and `median_us=…`, `p99_us=…`
/// of the rest. Used by deploy/bench.sh; the process's own clock, so no start-up is counted.
let arguments = CommandLine.arguments
guard arguments.count >= 5, arguments[1] == "same-fs", let count = Int(arguments[4]), count > 1 else {
    FileHandle.standardError.write(Data("usage: image-worker-bench same-fs SOURCE IMAGES_DIR COUNT [CHECKSUM]\n".utf8))
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
