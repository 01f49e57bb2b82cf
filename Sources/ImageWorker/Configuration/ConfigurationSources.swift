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

    /// The raw value with the highest precedence, if any source sets it.
    public func raw(_ section: String, _ name: String) -> String? {
        if let override = overrides.last(where: { $0.section == section && $0.name == name }) { return override.value }
        if let value = environment[Self.environmentVariable(section: section, name: name)] { return value }
        for file in files.reversed() {
            if let value = file.values(section: section, name: name).last { return value }
        }
        return nil
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
        return value.split(whereSeparator: { $0 == "," || $0 == "\n" }).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
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
