import ArgumentParser
import Foundation
import ImageWorker

/// `image-worker config`: the effective configuration, each value with where it came from
/// (default, file, environment, flag), secrets masked; warnings about options the worker does not
/// know in the given files. Exits 2, as `serve` would, when a value cannot be used.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print the effective configuration with each value's source; warn about unknown options.")

    @OptionGroup var options: ConfigurationOptions

    @Flag(help: "Also warn about unknown options in the sections an ironic.conf shares with the worker ([DEFAULT], [conductor], …).")
    var strict = false

    @Flag(name: .customLong("list-options"), help: "Print every option the worker knows, one 'section.option kind' a line.")
    var listOptions = false

    @Flag(help: "Print the README's option table (markdown).")
    var markdown = false

    func run() async throws {
        if listOptions {
            for option in WorkerOptions.all { print("\(option.section).\(option.name) \(option.kind.name)") }
            return
        }
        if markdown {
            print(WorkerOptions.markdownTable())
            return
        }
        let sources = try await options.sources()
        for (file, section, name) in sources.optionsInFiles where WorkerOptions.option(section: section, name: name) == nil {
            if strict || WorkerOptions.ownSections.contains(section) {
                FileHandle.standardError.write(Data("image-worker: warning: \(file): [\(section)] \(name) is not an option of image-worker; it is ignored\n".utf8))
            }
        }
        _ = try await options.load()  // a value that cannot be used ends here, as for `serve`
        let rows = WorkerOptions.all.map { option -> (String, String, String) in
            guard let (value, origin) = sources.lookup(option.section, option.name) else {
                return (option.displayName, option.defaultDescription, "default")
            }
            return (option.displayName, option.shownValue(value), origin.description)
        }
        let nameWidth = rows.map(\.0.count).max() ?? 0
        for (name, value, origin) in rows {
            print("\(name.padding(toLength: nameWidth, withPad: " ", startingAt: 0))  \(value)  (\(origin))")
        }
    }
}
