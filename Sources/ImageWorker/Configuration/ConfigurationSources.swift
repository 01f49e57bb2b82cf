import Foundation

/// A configuration option that cannot be used, named so an operator can find it.
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// `[section] option`.
    public var option: String
    /// What is wrong with its value.
    public var reason: String

    public init(section: String, name: String, reason: String) {
        option = "[\(section)] \(name)"
        self.reason = reason
    }

    /// The option's value cannot be used, because of `reason`.
    public init(_ option: ConfigurationOption, _ reason: String) {
        self.init(section: option.section, name: option.name, reason: reason)
    }

    public init(general reason: String) {
        option = ""
        self.reason = reason
    }

    public var description: String { option.isEmpty ? reason : "\(option): \(reason)" }
}

/// Where option values come from, in rising precedence: configuration files (later files win, as
/// in oslo.config), environment variables `OS_<SECTION>__<OPTION>` (oslo.config's naming), and
/// command-line overrides `section.option=value`. Typed readers refuse bad values with a message
/// that names the option; unknown sections and options are simply never read.
public struct ConfigurationSources: Sendable {
    private var files: [INIFile]
    /// The process environment (also read for `http_proxy` and friends).
    public private(set) var environment: [String: String]
    private var overrides: [(section: String, name: String, value: String)]

    /// Combines sources.
    public init(files: [INIFile] = [], environment: [String: String] = [:], overrides: [(section: String, name: String, value: String)] = []) {
        self.files = files
        self.environment = environment
        self.overrides = overrides
    }

    /// Parses a `section.option=value` override.
    public static func parseOverride(_ text: String) throws(ConfigurationError) -> (section: String, name: String, value: String) {
        guard let equals = text.firstIndex(of: "="), let dot = text[..<equals].lastIndex(of: ".") else {
            throw ConfigurationError(general: "an override must look like section.option=value, not '\(text)'")
        }
        let section = String(text[..<dot])
        let name = String(text[text.index(after: dot)..<equals])
        guard !section.isEmpty, !name.isEmpty else {
            throw ConfigurationError(general: "an override must look like section.option=value, not '\(text)'")
        }
        return (section, name, String(text[text.index(after: equals)...]))
    }

    /// The environment variable for an option: `OS_IMAGE_WORKER__IMAGES_DIR`.
    public static func environmentVariable(section: String, name: String) -> String {
        "OS_\(section.uppercased())__\(name.uppercased())"
    }

    /// Where a value came from.
    public enum Origin: Sendable, Hashable, CustomStringConvertible {
        /// A `--set` (or shorthand) flag.
        case flag
        /// The environment variable named.
        case environment(String)
        /// The configuration file named.
        case file(String)
        /// No source sets it.
        case defaultValue

        public var description: String {
            switch self {
            case .flag: "flag"
            case .environment(let variable): "environment \(variable)"
            case .file(let path): "file \(path)"
            case .defaultValue: "default"
            }
        }
    }

    /// The raw value with the highest precedence, and where it came from; nil when no source sets it.
    public func lookup(_ section: String, _ name: String) -> (value: String, origin: Origin)? {
        if let override = overrides.last(where: { $0.section == section && $0.name == name }) { return (override.value, .flag) }
        let variable = Self.environmentVariable(section: section, name: name)
        if let value = environment[variable] { return (value, .environment(variable)) }
        for file in files.reversed() {
            if let value = file.values(section: section, name: name).last { return (value, .file(file.name)) }
        }
        return nil
    }

    /// The raw value with the highest precedence, if any source sets it.
    public func raw(_ section: String, _ name: String) -> String? {
        lookup(section, name)?.value
    }

    /// Every `[section] option` the files set, file by file (for warnings about unknown options).
    public var optionsInFiles: [(file: String, section: String, name: String)] {
        files.flatMap { file in file.options.map { (file: file.name, section: $0.section, name: $0.name) } }
    }

    // MARK: Options from the table

    /// The option's raw value; nil when unset (or set empty).
    public func optionalString(_ option: ConfigurationOption) -> String? {
        optionalString(option.section, option.name)
    }

    /// The option's text, else its default (or `fallback` for a computed default).
    public func string(_ option: ConfigurationOption, default fallback: String? = nil) -> String {
        string(option.section, option.name, default: fallback ?? option.defaultValue ?? "")
    }

    /// A boolean option, else its default.
    public func bool(_ option: ConfigurationOption) throws(ConfigurationError) -> Bool {
        try bool(option.section, option.name, default: option.defaultValue.flatMap(Self.parseBool) ?? false)
    }

    /// An integer option within its range, else its default (or `fallback` for a computed default).
    public func integer(_ option: ConfigurationOption, default fallback: Int? = nil) throws(ConfigurationError) -> Int {
        guard case .integer(let range) = option.kind else { preconditionFailure("\(option.displayName) is not an integer option") }
        return try integer(option.section, option.name, default: fallback ?? option.defaultValue.flatMap { Int($0) } ?? range.lowerBound, range: range)
    }

    /// A number option within its range, else its default.
    public func number(_ option: ConfigurationOption) throws(ConfigurationError) -> Double {
        guard case .number(let range) = option.kind else { preconditionFailure("\(option.displayName) is not a number option") }
        return try number(option.section, option.name, default: option.defaultValue.flatMap { Double($0) } ?? range.lowerBound, range: range)
    }

    /// A list option, else its default (or `fallback`).
    public func list(_ option: ConfigurationOption, default fallback: [String]? = nil) -> [String] {
        list(option.section, option.name, default: fallback ?? option.defaultValue.map(Self.listItems) ?? [])
    }

    /// A string option.
    public func string(_ section: String, _ name: String, default defaultValue: String) -> String {
        raw(section, name) ?? defaultValue
    }

    /// An optional string option (empty means unset).
    public func optionalString(_ section: String, _ name: String) -> String? {
        guard let value = raw(section, name), !value.isEmpty else { return nil }
        return value
    }

    /// A boolean option (`true/false/yes/no/on/off/1/0`, any case).
    public func bool(_ section: String, _ name: String, default defaultValue: Bool) throws(ConfigurationError) -> Bool {
        guard let value = raw(section, name) else { return defaultValue }
        guard let parsed = Self.parseBool(value) else {
            throw ConfigurationError(section: section, name: name, reason: "'\(value)' is not a boolean (use true or false)")
        }
        return parsed
    }

    /// An integer option within `range`.
    public func integer(_ section: String, _ name: String, default defaultValue: Int, range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard let value = raw(section, name) else { return defaultValue }
        guard let parsed = Int(value.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ConfigurationError(section: section, name: name, reason: "'\(value)' is not an integer")
        }
        guard range.contains(parsed) else {
            throw ConfigurationError(section: section, name: name, reason: "\(parsed) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        return parsed
    }

    /// A number option within `range`.
    public func number(_ section: String, _ name: String, default defaultValue: Double, range: ClosedRange<Double>) throws(ConfigurationError) -> Double {
        guard let value = raw(section, name) else { return defaultValue }
        guard let parsed = Double(value.trimmingCharacters(in: .whitespacesAndNewlines)), parsed.isFinite else {
            throw ConfigurationError(section: section, name: name, reason: "'\(value)' is not a number")
        }
        guard range.contains(parsed) else {
            throw ConfigurationError(section: section, name: name, reason: "\(parsed) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        return parsed
    }

    /// A list option: comma-separated, blanks trimmed, empty items dropped.
    public func list(_ section: String, _ name: String, default defaultValue: [String]) -> [String] {
        guard let value = raw(section, name) else { return defaultValue }
        return Self.listItems(value)
    }

    /// The items of a list value (or of a list option's default): comma- or line-separated,
    /// blanks trimmed, empty items dropped.
    static func listItems(_ text: String) -> [String] {
        text.split(whereSeparator: { $0 == "," || $0 == "\n" }).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
    }

    /// oslo.config's strict boolean words.
    public static func parseBool(_ text: String) -> Bool? {
        switch text.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() {
        case "true", "yes", "on", "1": true
        case "false", "no", "off", "0": false
        default: nil
        }
    }
}
