import Primitives

/// Writes ``JSONValue``s the way Python's `json.dumps` does with its defaults, which is what
/// oslo.messaging puts on the wire: separators `", "` and `": "`, keys in insertion order,
/// `ensure_ascii` (everything outside ASCII as `\uXXXX`, surrogate pairs above the BMP), `/` not
/// escaped, floats in their shortest round-trip form, `NaN`/`Infinity` for non-finite floats.
///
/// Written by hand because no encoder available here produces those bytes: Foundation's
/// `JSONSerialization` and `JSONEncoder` separate with `,`/`:`, escape `/`, write non-ASCII as
/// UTF-8 and do not keep key order, and the wire format is compared byte for byte with what a real
/// oslo.messaging sent (`Tests/OsloMessagingTests/WireFormatTests.swift`).
public struct JSONWriter: Sendable {
    /// How the output is laid out.
    public enum Style: Sendable {
        /// Byte for byte what Python's `json.dumps(value)` produces.
        case python
        /// Indented by two spaces, for people (the CLI's output).
        case pretty
    }

    /// The layout.
    public var style: Style

    /// Creates a writer.
    public init(style: Style = .python) {
        self.style = style
    }

    /// The JSON text of `value` as bytes.
    public func bytes(_ value: JSONValue) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(256)
        write(value, into: &output, indent: 0)
        return output
    }

    /// The JSON text of `value`.
    public func string(_ value: JSONValue) -> String {
        String(decoding: bytes(value), as: UTF8.self)
    }

    private func write(_ value: JSONValue, into output: inout [UInt8], indent: Int) {
        switch value {
        case .null: output.append(contentsOf: "null".utf8)
        case .bool(let b): output.append(contentsOf: (b ? "true" : "false").utf8)
        case .integer(let i): output.append(contentsOf: String(i).utf8)
        case .double(let d): output.append(contentsOf: Self.pythonFloat(d).utf8)
        case .string(let s): Self.writeString(s, into: &output)
        case .array(let elements):
            guard !elements.isEmpty else { output.append(contentsOf: "[]".utf8); return }
            output.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(contentsOf: style == .python ? ", ".utf8 : ",".utf8) }
                newline(into: &output, indent: indent + 1)
                write(element, into: &output, indent: indent + 1)
            }
            newline(into: &output, indent: indent)
            output.append(UInt8(ascii: "]"))
        case .object(let object):
            guard !object.isEmpty else { output.append(contentsOf: "{}".utf8); return }
            output.append(UInt8(ascii: "{"))
            for (index, field) in object.fields.enumerated() {
                if index > 0 { output.append(contentsOf: style == .python ? ", ".utf8 : ",".utf8) }
                newline(into: &output, indent: indent + 1)
                Self.writeString(field.key, into: &output)
                output.append(contentsOf: ": ".utf8)
                write(field.value, into: &output, indent: indent + 1)
            }
            newline(into: &output, indent: indent)
            output.append(UInt8(ascii: "}"))
        }
    }

    private func newline(into output: inout [UInt8], indent: Int) {
        guard style == .pretty else { return }
        output.append(UInt8(ascii: "\n"))
        output.append(contentsOf: repeatElement(UInt8(ascii: " "), count: indent * 2))
    }

    static func writeString(_ string: String, into output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": output.append(contentsOf: "\\\"".utf8)
            case "\\": output.append(contentsOf: "\\\\".utf8)
            case "\n": output.append(contentsOf: "\\n".utf8)
            case "\r": output.append(contentsOf: "\\r".utf8)
            case "\t": output.append(contentsOf: "\\t".utf8)
            case "\u{08}": output.append(contentsOf: "\\b".utf8)
            case "\u{0C}": output.append(contentsOf: "\\f".utf8)
            default:
                let value = scalar.value
                if value >= 0x20 && value < 0x7F {
                    output.append(UInt8(value))
                } else if value < 0x10000 {
                    appendEscape(UInt16(value), into: &output)
                } else {
                    let offset = value - 0x10000
                    appendEscape(UInt16(0xD800 + (offset >> 10)), into: &output)
                    appendEscape(UInt16(0xDC00 + (offset & 0x3FF)), into: &output)
                }
            }
        }
        output.append(UInt8(ascii: "\""))
    }

    private static func appendEscape(_ unit: UInt16, into output: inout [UInt8]) {
        output.append(contentsOf: "\\u".utf8)
        Hex.append(UInt8(unit >> 8), to: &output)
        Hex.append(UInt8(truncatingIfNeeded: unit), to: &output)
    }

    /// Python's `repr(float)`: Swift's shortest round-trip digits, with Python's exponent rules
    /// (scientific notation below 1e-4 and from 1e16, two-digit exponents with a sign).
    static func pythonFloat(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
        if value == 0 { return value.sign == .minus ? "-0.0" : "0.0" }
        let magnitude = abs(value)
        if magnitude >= 1e-4 && magnitude < 1e16 {
            let text = "\(value)"
            if !text.contains("e") { return text.contains(".") ? text : text + ".0" }
        }
        // Scientific: take Swift's digits and exponent, then format like Python.
        let text = "\(value)"
        var mantissa: Substring
        var exponent: Int
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = text[..<e]
            exponent = Int(text[text.index(after: e)...]) ?? 0
        } else {
            mantissa = Substring(text)
            exponent = 0
        }
        let negative = mantissa.hasPrefix("-")
        if negative { mantissa = mantissa.dropFirst() }
        // Normalise the mantissa to one digit before the point.
        var digits = mantissa.replacingOccurrences(of: ".", with: "")
        let pointIndex = mantissa.firstIndex(of: ".").map { mantissa.distance(from: mantissa.startIndex, to: $0) } ?? mantissa.count
        let leadingZeros = digits.prefix { $0 == "0" }.count
        digits.removeFirst(leadingZeros)
        exponent += pointIndex - 1 - leadingZeros
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        var result = negative ? "-" : ""
        result += String(digits.prefix(1))
        if digits.count > 1 { result += "." + digits.dropFirst() }
        result += exponent < 0 ? "e-" : "e+"
        let absExponent = abs(exponent)
        result += absExponent < 10 ? "0\(absExponent)" : "\(absExponent)"
        return result
    }
}

extension Substring {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
