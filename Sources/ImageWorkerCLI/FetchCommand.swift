import OsloJSON
import ArgumentParser
import Foundation
import ImageServices
import ImageWorker
import Logging
import OsloMessaging
#if canImport(Glibc)
import Glibc
#endif

/// `image-worker fetch`: one fetch, without a broker, as the worker would do it.
struct FetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Fetch an image (and for a partition image its kernel and ramdisk) without a broker; print the result as JSON.",
        discussion: """
            With --node the images go to <images_dir>/<node>/ exactly as a fetch_image task puts them \
            (disk, kernel, ramdisk). With --output the image alone goes to that file (kernel and ramdisk \
            are refused). Without either, to the current folder under the reference's last name. The \
            configuration options are the worker's (TLS, credentials, proxies, [glance], …).
            """)

    @OptionGroup var options: ConfigurationOptions

    @Argument(help: "The image reference: a Glance UUID, glance://…, http(s)://…, file:///….")
    var reference: String

    @Option(help: "Fetch for this node, into <images_dir>/<node>/.")
    var node: String?

    @Option(help: "Write the image to this file.")
    var output: String?

    @Option(help: "The expected checksum: hex (md5/sha256/sha512 by length), algo:hex, or the URL of a checksum file.")
    var checksum: String?

    @Option(help: "The kernel of a partition image (with --node).")
    var kernel: String?

    @Option(help: "The ramdisk of a partition image (with --node).")
    var ramdisk: String?

    @Flag(help: ArgumentHelp("After the result, print worker_peak_rss_kib=<this process's own peak RSS> on stderr "
                             + "(qemu-img's apart; for deploy/bench.sh).", visibility: .hidden))
    var printPeakRSS = false

    func validate() throws {
        if node != nil && output != nil { throw ValidationError("give --node or --output, not both") }
        if output != nil || node == nil, kernel != nil || ramdisk != nil { throw ValidationError("--kernel and --ramdisk go with --node") }
    }

    func run() async throws {
        let configuration = try await options.load()
        bootstrapLogging(level: min(configuration.logLevel, .warning))
        let logger = Logger(label: "image-worker-fetch")
        let services = try ImageServicesBundle(configuration: configuration)
        let display = ProgressDisplay()
        let context = ImageRequestContext(requestID: "req-\(OsloIdentifiers.uuid4())", logger: logger)
        let info = InstanceInfo(imageSource: reference, imageChecksum: checksum, kernel: kernel, ramdisk: ramdisk)
        let progress: @Sendable (ImageRole, TransferProgress) -> Void = { display.report($0, $1) }
        do {
            let result: JSONObject
            let fetcher = ImageFetcher(registry: services.registry, checksums: configuration.checksumPolicy, transforms: configuration.transformStages,
                                       imageFileMode: configuration.imageFileMode)
            if let node {
                let store = try NodeImageStore(path: configuration.imagesDirectory, locksPath: configuration.nodeLocksDirectory)
                let arguments = try FetchImageArguments(nodeUUID: node, instanceInfo: info)
                let images = try await store.withNodeLock(arguments.nodeUUID) {
                    try await fetcher.fetch(arguments, into: store, context: context, progress: progress)
                }
                result = images.resultJSON(requestID: context.requestID, taskID: OsloIdentifiers.uuid4Hex())
            } else {
                let target = output ?? Self.defaultName(reference)
                let absolute = target.hasPrefix("/") ? target : FileManager.default.currentDirectoryPath + "/" + target
                let directory = try DirectoryHandle(path: (absolute as NSString).deletingLastPathComponent)
                let image = try await fetcher.fetchImage(info, into: directory, named: (absolute as NSString).lastPathComponent,
                                                         context: context, progress: progress)
                result = image.json(diskFormat: nil)
            }
            display.finish()
            await services.shutdown()
            print(JSONWriter(style: .pretty).string(.object(result)))
            if printPeakRSS {
                // RUSAGE_SELF: this process alone, not the children it waited for (qemu-img).
                var usage = rusage()
                getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
                FileHandle.standardError.write(Data("worker_peak_rss_kib=\(usage.ru_maxrss)\n".utf8))
            }
        } catch let error as RoleError {
            display.finish()
            await services.shutdown()
            FileHandle.standardError.write(Data("\(error.error.code.name): \(error.error.message)\n".utf8))
            throw ExitCode(1)
        } catch let error as IronicError {
            display.finish()
            await services.shutdown()
            FileHandle.standardError.write(Data("\(error.code.name): \(error.message)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// The reference's last path segment (a Glance id for Glance images), as `curl -O` names files.
    static func defaultName(_ reference: String) -> String {
        if let parsed = try? ImageReference(reference), parsed.scheme != "glance" {
            let name = ChecksumFile.fileName(of: parsed)
            if !name.isEmpty && name != "." && name != ".." { return name }
        }
        let last = reference.split(separator: "/").last.map(String.init) ?? "image"
        return last.isEmpty ? "image" : last
    }
}

/// `image-worker show`: an image's metadata, without a broker.
struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print an image's metadata (size, updated_at, disk_format, checksum, properties, no_cache) as JSON.")

    @OptionGroup var options: ConfigurationOptions

    @Argument(help: "The image reference.")
    var reference: String

    func run() async throws {
        let configuration = try await options.load()
        bootstrapLogging(level: min(configuration.logLevel, .warning))
        let services = try ImageServicesBundle(configuration: configuration)
        let context = ImageRequestContext(requestID: "req-\(OsloIdentifiers.uuid4())", logger: Logger(label: "image-worker-show"))
        do {
            let parsed = try ImageReference(reference)
            let metadata = try await services.registry.service(for: parsed).show(parsed, context: context)
            await services.shutdown()
            print(JSONWriter(style: .pretty).string(.object(metadata.json)))
        } catch let error as IronicError {
            await services.shutdown()
            FileHandle.standardError.write(Data("\(error.code.name): \(error.message)\n".utf8))
            throw ExitCode(1)
        }
    }
}
