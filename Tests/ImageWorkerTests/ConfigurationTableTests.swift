import Foundation
import Testing
@testable import ImageWorker

/// The option table (``WorkerOptions``) is the one list of options: the README's table is made
/// from it, and every typed option in it is really read, with its range, by the loader.
@Suite("configuration as a table")
struct ConfigurationTableTests {
    static let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../README.md").standardized

    @Test("the README's option table is the one the table makes (image-worker config --markdown)")
    func readmeTable() throws {
        let text = try String(contentsOf: Self.readme, encoding: .utf8)
        let begin = "<!-- options-table: made by `image-worker config --markdown`, checked by ConfigurationTableTests -->\n"
        let end = "\n<!-- options-table end -->"
        let start = try #require(text.range(of: begin), "the README has no generated option table")
        let stop = try #require(text.range(of: end, range: start.upperBound..<text.endIndex))
        #expect(String(text[start.upperBound..<stop.lowerBound]) == WorkerOptions.markdownTable())
    }

    @Test("options are unique, and each typed one is read and checked by the loader under its own name")
    func everyTypedOptionIsRead() throws {
        let names = WorkerOptions.all.map(\.displayName)
        #expect(Set(names).count == names.count)
        for option in WorkerOptions.all {
            let bad: String
            switch option.kind {
            case .boolean: bad = "maybe"
            case .integer, .number: bad = "many"
            case .choice: bad = "none-of-these"
            case .text, .url, .list: continue
            }
            if option == WorkerOptions.glanceAuthType || option == WorkerOptions.imageServerAuthStrategy { continue }  // read only when relevant below
            // `host` given, so that no load resolves this machine's name (getaddrinfo blocks).
            let sources = ConfigurationSources(overrides: [("DEFAULT", "host", "w1"), (option.section, option.name, bad)])
            #expect(throws: ConfigurationError.self, "\(option.displayName) = \(bad) was not refused") {
                _ = try WorkerConfiguration.load(sources)
            }
            do {
                _ = try WorkerConfiguration.load(sources)
            } catch {
                #expect(error.option == option.displayName)
            }
        }
        for option in [WorkerOptions.glanceAuthType, WorkerOptions.imageServerAuthStrategy] {
            let sources = ConfigurationSources(overrides: [("DEFAULT", "host", "w1"), (option.section, option.name, "none-of-these")])
            #expect(throws: ConfigurationError.self) { _ = try WorkerConfiguration.load(sources) }
        }
    }

    @Test("secrets are masked when shown; URLs keep their hosts")
    func masking() {
        #expect(WorkerOptions.transportURL.shownValue("rabbit://user:s3cr3t@h1:5672,user:s3cr3t@h2:5672/vh") == "rabbit://user:***@h1:5672,user:***@h2:5672/vh")
        #expect(WorkerOptions.glancePassword.shownValue("hunter2") == "***")
        #expect(WorkerOptions.glancePassword.shownValue("x://y") == "***", "a password that looks like a URL is still a password")
        #expect(WorkerOptions.topic.shownValue("ironic.image_worker") == "ironic.image_worker")
        #expect(WorkerOptions.httpProxy.shownValue("http://proxy:3128") == "http://proxy:3128")
    }

    @Test("each value says where it came from: flag over environment over the last file over the default")
    func origins() throws {
        let first = try INIFile(text: "[image_worker]\ntopic = one\nmax_concurrent_downloads = 3", file: "a.conf")
        let second = try INIFile(text: "[image_worker]\ntopic = two\n[DEFAULT]\nsome_ironic_option = 1", file: "b.conf")
        let sources = ConfigurationSources(files: [first, second], environment: ["OS_IMAGE_WORKER__JOURNAL_SIZE": "500"],
                                           overrides: [("image_worker", "log_level", "debug")])
        #expect(sources.lookup("image_worker", "topic")?.origin == .file("b.conf"))
        #expect(sources.lookup("image_worker", "max_concurrent_downloads")?.origin == .file("a.conf"))
        #expect(sources.lookup("image_worker", "journal_size")?.origin == .environment("OS_IMAGE_WORKER__JOURNAL_SIZE"))
        #expect(sources.lookup("image_worker", "log_level")?.origin == .flag)
        #expect(sources.lookup("image_worker", "state_dir") == nil)
        let unknown = sources.optionsInFiles.filter { WorkerOptions.option(section: $0.section, name: $0.name) == nil }
        #expect(unknown.map { "\($0.file) [\($0.section)] \($0.name)" } == ["b.conf [DEFAULT] some_ironic_option"])
    }
}
