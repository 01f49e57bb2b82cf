/// A JSON value that keeps what oslo.messaging's bytes depend on: the order of object keys and the
/// difference between integers and floats.
///
/// Foundation's `JSONSerialization` loses both (and bridges booleans to numbers), and
/// `JSONEncoder` escapes `/` and writes raw UTF-8, so the wire format is parsed and written by
/// ``JSONParser`` and ``JSONWriter`` instead.
public indirect enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case integer(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// The string, if this is one.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The object, if this is one.
    public var objectValue: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// The array, if this is one.
    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The boolean, if this is one.
    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// The integer, if this is one (a float with an integral value counts).
    public var integerValue: Int64? {
        switch self {
        case .integer(let i): i
        case .double(let d) where d.rounded() == d && abs(d) < 9.2e18: Int64(d)
        default: nil
        }
    }

    /// The number as a double, if this is a number.
    public var doubleValue: Double? {
        switch self {
        case .integer(let i): Double(i)
        case .double(let d): d
        default: nil
        }
    }

    /// Whether this is `null`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The JSON type's name, for error messages ("a string", "an object", …).
    public var typeDescription: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .integer, .double: "a number"
        case .string: "a string"
        case .array: "a list"
        case .object: "an object"
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByNilLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(JSONObject(elements.map { ($0.0, $0.1) }))
    }
}

extension JSONValue {
    /// A string, or `null` when `value` is nil.
    public static func string(orNull value: String?) -> JSONValue {
        value.map(JSONValue.string) ?? .null
    }

    /// An integer, or `null` when `value` is nil.
    public static func integer(orNull value: Int64?) -> JSONValue {
        value.map(JSONValue.integer) ?? .null
    }
}

/// A JSON object with its keys in insertion order. Lookups return the last value for a key, as
/// Python's `json.loads` keeps the last of duplicated keys.
public struct JSONObject: Sendable, Hashable, ExpressibleByDictionaryLiteral, Sequence {
    /// One key and its value.
    public struct Field: Sendable, Hashable {
        public var key: String
        public var value: JSONValue
        public init(key: String, value: JSONValue) {
            self.key = key
            self.value = value
        }
    }

    /// The fields in order.
    public private(set) var fields: [Field]

    /// Creates an object from key–value pairs, in order.
    public init(_ pairs: [(String, JSONValue)] = []) {
        fields = pairs.map { Field(key: $0.0, value: $0.1) }
    }

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self.init(elements.map { ($0.0, $0.1) })
    }

    /// The value for `key`; setting replaces it in place or appends it; setting `nil` removes it.
    public subscript(key: String) -> JSONValue? {
        get { fields.last { $0.key == key }?.value }
        set {
            if let newValue {
                if let index = fields.lastIndex(where: { $0.key == key }) {
                    fields[index].value = newValue
                } else {
                    fields.append(Field(key: key, value: newValue))
                }
            } else {
                fields.removeAll { $0.key == key }
            }
        }
    }

    /// Adds a field at the end, even if the key exists (the wire format may repeat keys).
    public mutating func append(_ key: String, _ value: JSONValue) {
        fields.append(Field(key: key, value: value))
    }

    /// The keys, in order.
    public var keys: [String] { fields.map(\.key) }

    /// The number of fields.
    public var count: Int { fields.count }

    /// Whether there are no fields.
    public var isEmpty: Bool { fields.isEmpty }

    public func makeIterator() -> IndexingIterator<[Field]> {
        fields.makeIterator()
    }
}
