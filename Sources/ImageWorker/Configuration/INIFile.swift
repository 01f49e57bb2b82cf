import Foundation

/// An ironic.conf-style INI file, read the way oslo.config reads it: `[section]` headers,
/// `name = value` (or `name: value`) lines, `#` and `;` comment lines, indented continuation lines
/// (joined with a newline), and repeated names kept in order (the last one wins for single values).
///
/// Hand-written: none of the machine's Swift packages parses INI.
public struct INIFile: Sendable, Hashable {
    /// A line that is not INI.
    public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        public var file: String
        public var line: Int
        public var reason: String
        public var description: String { "\(file):\(line): \(reason)" }
    }

    /// One `name = value` line.
    public struct Entry: Sendable, Hashable {
        public var section: String
        public var name: String
        public var value: String
    }

    /// The entries in file order.
    public var entries: [Entry]
    /// The file's name, for messages and `image-worker config`.
    public var name: String

    /// Parses the text of a file named `file` (for messages).
    public init(text: String, file: String) throws(ParseError) {
        name = file
        var entries: [Entry] = []
        var section: String? = nil
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty || trimmed.hasPrefix("#") || trimmed.hasPrefix(";") { continue }
            if let first = line.first, first == " " || first == "\t" {
                guard !entries.isEmpty, entries.last?.section == section else {
                    throw ParseError(file: file, line: lineNumber, reason: "an indented line continues nothing")
                }
                let previous = entries[entries.count - 1].value
                entries[entries.count - 1].value = previous.isEmpty ? trimmed : previous + "\n" + trimmed
                continue
            }
            if trimmed.hasPrefix("[") {
                guard trimmed.hasSuffix("]"), trimmed.count > 2 else {
                    throw ParseError(file: file, line: lineNumber, reason: "a section header must look like [name]")
                }
                section = String(trimmed.dropFirst().dropLast()).trimmingCharacters(in: .whitespacesAndNewlines)
                continue
            }
            guard let separator = trimmed.firstIndex(where: { $0 == "=" || $0 == ":" }) else {
                throw ParseError(file: file, line: lineNumber, reason: "expected 'name = value'")
            }
            guard let section else {
                throw ParseError(file: file, line: lineNumber, reason: "an option comes before any [section]")
            }
            let name = trimmed[..<separator].trimmingCharacters(in: .whitespacesAndNewlines)
            guard !name.isEmpty else { throw ParseError(file: file, line: lineNumber, reason: "an option has no name") }
            let value = trimmed[trimmed.index(after: separator)...].trimmingCharacters(in: .whitespacesAndNewlines)
            entries.append(Entry(section: section, name: name, value: value))
        }
        self.entries = entries
    }

    /// Every `[section] name` the file sets, once each, in file order.
    public var options: [(section: String, name: String)] {
        var seen = Set<String>()
        return entries.compactMap { entry in seen.insert("\(entry.section)\u{0}\(entry.name)").inserted ? (entry.section, entry.name) : nil }
    }

    /// Every value of `section.name`, in order.
    public func values(section: String, name: String) -> [String] {
        entries.filter { $0.section == section && $0.name == name }.map(\.value)
    }
}
