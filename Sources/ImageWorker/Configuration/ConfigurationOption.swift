import Foundation

/// One option the worker reads: where it lives, what it holds, its default, what it is for, and
/// whether its value is a secret. ``WorkerOptions/all`` lists every one; that list drives parsing,
/// `image-worker config`, the README's option table and the deploy checks.
public struct ConfigurationOption: Sendable, Hashable {
    /// What a value must be.
    public enum Kind: Sendable, Hashable {
        /// Any text.
        case text
        /// A URL (or several, comma-separated, as `transport_url`): printed without its passwords.
        case url
        /// `true`/`false` (oslo.config's words: also yes/no, on/off, 1/0).
        case boolean
        /// An integer within the range.
        case integer(ClosedRange<Int>)
        /// A number within the range.
        case number(ClosedRange<Double>)
        /// Comma-separated items.
        case list
        /// One of these words.
        case choice([String])
    }

    /// `DEFAULT`, `image_worker`, …
    public let section: String
    public let name: String
    public let kind: Kind
    /// The default as a value would be written, or nil when there is none or it is computed (then
    /// ``defaultDescription`` says what it is).
    public let defaultValue: String?
    /// The default for people: the value, or how it is found (`the machine's FQDN`).
    public let defaultDescription: String
    /// What the option does, in one line.
    public let help: String
    /// Never printed: `image-worker config` masks it.
    public let secret: Bool

    /// Declares an option.
    public init(_ section: String, _ name: String, _ kind: Kind, default defaultValue: String? = nil, defaultDescription: String? = nil,
                secret: Bool = false, help: String) {
        self.section = section
        self.name = name
        self.kind = kind
        self.defaultValue = defaultValue
        self.defaultDescription = defaultDescription ?? defaultValue.map { $0.isEmpty ? "empty" : $0 } ?? "—"
        self.help = help
        self.secret = secret
    }

    /// `[section] name`.
    public var displayName: String { "[\(section)] \(name)" }

    /// A value as it may be printed: a secret is masked (a URL option keeps everything but its
    /// passwords, so `transport_url` still shows its hosts), anything else is shown as it is.
    public func shownValue(_ value: String) -> String {
        guard secret, !value.isEmpty else { return value }
        guard kind == .url else { return "***" }
        // user:password@host → user:***@host, in each comma-separated authority.
        return value.split(separator: ",", omittingEmptySubsequences: false).map { part -> String in
            guard let at = part.lastIndex(of: "@") else { return String(part) }
            let before = part[..<at]
            let start = before.range(of: "://").map(\.upperBound) ?? before.startIndex
            guard let colon = before[start...].firstIndex(of: ":") else { return String(part) }
            return String(part[...colon]) + "***" + String(part[at...])
        }.joined(separator: ",")
    }
}

extension ConfigurationOption.Kind {
    /// The kind's name, as `image-worker config --list-options` prints it.
    public var name: String {
        switch self {
        case .text: "text"
        case .url: "url"
        case .boolean: "boolean"
        case .integer: "integer"
        case .number: "number"
        case .list: "list"
        case .choice: "choice"
        }
    }
}
