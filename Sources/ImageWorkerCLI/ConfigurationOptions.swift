import OsloJSON
import SystemSupport
import ArgumentParser
import Foundation
import ImageServices
import ImageWorker
import Logging

/// The options every subcommand takes to find its configuration.
struct ConfigurationOptions: ParsableArguments {
    @Option(name: .customLong("config-file"), help: "An ironic.conf-style file (repeatable; later files win).")
    var configFiles: [String] = []

    @Option(name: .customLong("set"), help: "Override an option: section.option=value (repeatable).")
    var overrides: [String] = []

    @Option(name: .customLong("transport-url"), help: "Shorthand for --set DEFAULT.transport_url=URL.")
    var transportURL: String?

    @Option(name: .customLong("host"), help: "Shorthand for --set DEFAULT.host=NAME.")
    var host: String?

    @Option(name: .customLong("images-dir"), help: "Shorthand for --set image_worker.images_dir=DIR.")
    var imagesDirectory: String?

    @Option(name: .customLong("log-level"), help: "Shorthand for --set image_worker.log_level=LEVEL.")
    var logLevel: String?

    /// Files (read on a blocking-work thread), then `OS_<SECTION>__<OPTION>` environment
    /// variables, then flags.
    func sources() async throws -> ConfigurationSources {
        let paths = configFiles
        let files = try await BlockingWork.run { _ in
            try paths.map { path in
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw ValidationError("cannot read configuration file \(path)")
                }
                return try INIFile(text: String(decoding: data, as: UTF8.self), file: path)
            }
        }
        var parsed = try overrides.map { try ConfigurationSources.parseOverride($0) }
        if let transportURL { parsed.append(("DEFAULT", "transport_url", transportURL)) }
        if let host { parsed.append(("DEFAULT", "host", host)) }
        if let imagesDirectory { parsed.append((WorkerConfiguration.section, "images_dir", imagesDirectory)) }
        if let logLevel { parsed.append((WorkerConfiguration.section, "log_level", logLevel)) }
        return ConfigurationSources(files: files, environment: ProcessInfo.processInfo.environment, overrides: parsed)
    }

    /// The checked configuration; a bad one ends the program with a message naming the option.
    /// Checked on a blocking-work thread: an unset `host` is resolved with `getaddrinfo`, which
    /// waits for DNS (seconds when a resolver times out).
    func load() async throws -> WorkerConfiguration {
        do {
            let sources = try await sources()
            return try await BlockingWork.run { _ in try WorkerConfiguration.load(sources) }
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("image-worker: invalid configuration: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as INIFile.ParseError {
            FileHandle.standardError.write(Data("image-worker: invalid configuration file: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// Sends logs to standard error at `level`: text lines, or JSON objects (`log_format = json`).
func bootstrapLogging(level: Logger.Level, format: WorkerConfiguration.LogFormat = .text) {
    LoggingSystem.bootstrap { label in
        switch format {
        case .json:
            return JSONLogHandler(label: label, level: level)
        case .text:
            var handler = ControlCharacterEscapingLogHandler(StreamLogHandler.standardError(label: label))
            handler.logLevel = level
            return handler
        }
    }
}
