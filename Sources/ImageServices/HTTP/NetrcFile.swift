import Foundation

/// Per-host credentials in the netrc format curl and Python use:
/// `machine HOST login USER password PASS`, and an optional `default login … password …`.
///
/// Hand-written: no package here reads netrc files; the format is a stream of words.
public struct NetrcFile: Sendable, Hashable {
    private struct Entry: Sendable, Hashable {
        var login: String?
        var password: String?
    }

    private var machines: [String: Entry] = [:]
    private var fallback: Entry?

    /// Parses netrc text.
    public init(text: String) throws(IronicError) {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }).map(String.init)
        var index = 0
        var current: String?? = nil  // .some(nil) = default, .some(name) = machine
        var entry = Entry()
        func flush() {
            guard let target = current else { return }
            if let name = target { machines[name.lowercased()] = entry } else { fallback = entry }
        }
        while index < words.count {
            let word = words[index]
            func next() throws(IronicError) -> String {
                index += 1
                guard index < words.count else { throw IronicError.invalidParameter("The netrc file ends after '\(word)'.") }
                return words[index]
            }
            switch word {
            case "machine":
                flush()
                current = .some(try next())
                entry = Entry()
            case "default":
                flush()
                current = .some(nil)
                entry = Entry()
            case "login": entry.login = try next()
            case "password": entry.password = try next()
            case "account": _ = try next()
            case "macdef":
                // A macro runs to the next blank line; its words are not credentials.
                flush()
                current = nil
                _ = try next()
                while index + 1 < words.count, !["machine", "default"].contains(words[index + 1]) { index += 1 }
            default:
                break
            }
            index += 1
        }
        flush()
    }

    /// Reads a netrc file.
    public init(path: String) throws(IronicError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IronicError.invalidParameter("The netrc file \(path) cannot be read.")
        }
        try self.init(text: String(decoding: data, as: UTF8.self))
    }

    /// The login and password of the `machine` entry for `host`, if it has both.
    public func credentials(forMachine host: String) -> (user: String, password: String)? {
        Self.pair(machines[host.lowercased()])
    }

    /// The login and password of the `default` entry, if it has both. It belongs to no host:
    /// the worker sends it only to the reference's own origin (never to a redirect's).
    public var defaultCredentials: (user: String, password: String)? {
        Self.pair(fallback)
    }

    private static func pair(_ entry: Entry?) -> (user: String, password: String)? {
        guard let login = entry?.login, let password = entry?.password else { return nil }
        return (login, password)
    }
}
