// swift-tools-version:6.0
import PackageDescription

/// The upcoming-language features every target builds with, as the anchors do.
var strict: [SwiftSetting] {
    [.enableUpcomingFeature("ExistentialAny"), .enableUpcomingFeature("MemberImportVisibility")]
}

let package = Package(
    name: "image-worker",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "image-worker", targets: ["ImageWorkerCLI"]),
        .executable(name: "image-worker-bench", targets: ["ImageWorkerBench"]),
        .executable(name: "image-worker-fuzz", targets: ["ImageWorkerFuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.0.0"..<"5.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // NIOConcurrencyHelpers' NIOLockedValueBox guards shared state rather than Synchronization's
        // Mutex: ThreadSanitizer sees pthread mutexes, not Mutex's futex (deploy/sanitize.sh thread).
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.100.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.30.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.4.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
    ],
    targets: [
        // MARK: C, each behind one module

        // librabbitmq (Debian librabbitmq-dev) as a system library; only AMQPClient imports it.
        .systemLibrary(
            name: "CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),
        // glibc calls declared only under _GNU_SOURCE (sync_file_range, copy_file_range), eventfd
        // and thread names.
        .target(name: "CFileSystem"),
        // OpenSSL's libcrypto (Debian libssl-dev, a dependency of librabbitmq-dev): every image digest.
        .systemLibrary(
            name: "COpenSSLCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),

        // The decompressors of zstd, gzip, xz and bzip2 from Debian's system libraries (libzstd-dev,
        // zlib1g-dev, liblzma-dev, libbz2-dev), behind one module, with a wrapper for what is a
        // macro. No listed Swift package decodes all four (compress-nio has gzip and deflate only).
        .target(name: "CCompression", linkerSettings: [
            .linkedLibrary("zstd"), .linkedLibrary("z"), .linkedLibrary("lzma"), .linkedLibrary("bz2"),
        ]),

        // MARK: Building blocks without a broker

        // One of each small primitive, for every module, in pure Swift: hex, percent-decoding, UUID
        // text, durations in seconds.
        .target(name: "Primitives", swiftSettings: strict),
        // Threads, blocking work off the cooperative pool, descriptors and system-call errors.
        .target(name: "SystemSupport", dependencies: [
            "CFileSystem",
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: strict),
        // AMQP as values: deliveries, properties, field tables, topology, errors, transport URLs,
        // and the connection's state machine. No C.
        .target(name: "AMQPModel", dependencies: ["Primitives"], swiftSettings: strict),
        // Python-compatible JSON, as oslo.messaging writes and reads it.
        .target(name: "OsloJSON", dependencies: ["Primitives"], swiftSettings: strict),
        // Disk image formats from a stream, as oslo.utils' format inspector reads them, with its
        // safety checks. Pure Swift, no I/O.
        .target(name: "ImageFormats", swiftSettings: strict),
        // Streaming decompression of the four compressions an image may arrive in, known by magic.
        .target(name: "ImageCompression", dependencies: ["CCompression"], swiftSettings: strict),
        // oslo.messaging's wire format, RPC server and notifier over an abstract transport.
        .target(name: "OsloMessaging", dependencies: [
            "AMQPModel", "OsloJSON", "Primitives",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),
        // Image references, the services by scheme, checksums, the HTTP stack.
        .target(name: "ImageServices", dependencies: [
            "CFileSystem", "COpenSSLCrypto", "Primitives", "SystemSupport",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ], swiftSettings: strict),
        // The worker itself: instance_info rules, the fetch pipeline, the cache, the journal,
        // events, configuration, monitoring.
        .target(name: "ImageWorker", dependencies: [
            "AMQPModel", "ImageCompression", "ImageFormats", "ImageServices", "OsloJSON", "OsloMessaging", "Primitives", "SystemSupport",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Subprocess", package: "swift-subprocess"),
        ], swiftSettings: strict),

        // MARK: The broker, through librabbitmq

        // The only Swift code that touches librabbitmq: a connection on its own thread, driven by
        // AMQPModel's state machine.
        .target(name: "AMQPClient", dependencies: [
            "AMQPModel", "CFileSystem", "CRabbitMQ", "Primitives", "SystemSupport",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Metrics", package: "swift-metrics"),
        ], swiftSettings: strict),
        // oslo's transport (and an RPC client) over AMQPClient.
        .target(name: "OsloAMQP", dependencies: [
            "AMQPClient", "AMQPModel", "OsloJSON", "OsloMessaging", "Primitives",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),

        // MARK: Programs

        // The worker wired from real parts: services, broker transport, RPC server, monitoring.
        .target(name: "ImageWorkerApp", dependencies: [
            "AMQPModel", "ImageServices", "ImageWorker", "OsloAMQP", "OsloMessaging", "Primitives",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),
        .executableTarget(name: "ImageWorkerCLI", dependencies: [
            "AMQPClient", "AMQPModel", "ImageCompression", "ImageFormats", "ImageServices", "ImageWorker", "ImageWorkerApp", "OsloAMQP", "OsloJSON", "OsloMessaging", "Primitives", "SystemSupport",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),
        // deploy/bench.sh's in-process measurements (what a whole-process timing cannot resolve).
        .executableTarget(name: "ImageWorkerBench", dependencies: [
            "ImageServices", "ImageWorker", "Primitives",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),

        // libFuzzer's driver, declared for Swift (deploy/fuzz.sh links it with -sanitize=fuzzer).
        .target(name: "CLibFuzzer"),
        // The parsers of hostile bytes under libFuzzer (deploy/fuzz.sh), or their corpus replayed.
        .executableTarget(name: "ImageWorkerFuzz", dependencies: [
            "AMQPModel", "CLibFuzzer", "ImageCompression", "ImageFormats", "ImageServices", "ImageWorker", "OsloJSON", "OsloMessaging", "Primitives",
        ], swiftSettings: strict),

        // MARK: Tests

        // Helpers shared by the suites: where the real servers are, temporary directories.
        .target(name: "TestSupport", dependencies: [
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
        ], path: "Tests/TestSupport", swiftSettings: strict),
        // Unit suites: no server, no librabbitmq (`swift test --filter Unit` is not needed: these
        // targets never need a server).
        .testTarget(name: "ImageFormatsTests", dependencies: ["ImageFormats", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "ImageCompressionTests", dependencies: ["ImageCompression", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "AMQPModelTests", dependencies: ["AMQPModel", "Primitives"], swiftSettings: strict),
        .testTarget(name: "OsloMessagingTests", dependencies: [
            "AMQPModel", "OsloJSON", "OsloMessaging", "TestSupport",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),
        .testTarget(name: "ImageServicesTests", dependencies: [
            "ImageServices", "Primitives", "SystemSupport", "TestSupport",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ], swiftSettings: strict),
        .testTarget(name: "ImageWorkerTests", dependencies: [
            "AMQPModel", "ImageFormats", "ImageServices", "ImageWorker", "OsloJSON", "OsloMessaging", "Primitives", "SystemSupport", "TestSupport",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ], swiftSettings: strict),
        // Integration suites against the real broker (librabbitmq).
        .testTarget(name: "AMQPClientTests", dependencies: [
            "AMQPClient", "AMQPModel", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "MetricsTestKit", package: "swift-metrics"),
        ], swiftSettings: strict),
    ]
)

