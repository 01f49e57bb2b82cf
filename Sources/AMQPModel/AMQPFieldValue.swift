/// A value in an AMQP field table, typed as it goes on the wire.
///
/// oslo.messaging (py-amqp) sends `x-expires` and `x-delivery-limit` as ``int32(_:)`` and
/// `x-queue-type` as ``longString(_:)``; a declaration with another type than an existing queue's
/// is refused by the broker with PRECONDITION_FAILED, so the type matters.
public indirect enum AMQPFieldValue: Sendable, Hashable {
    case bool(Bool)
    case int8(Int8)
    case uint8(UInt8)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case uint64(UInt64)
    case float(Float)
    case double(Double)
    case decimal(scale: UInt8, value: UInt32)
    /// A long string (`S`), the type of every text value oslo sends.
    case longString(String)
    /// Raw bytes (`x`).
    case bytes([UInt8])
    case timestamp(UInt64)
    case table(AMQPTable)
    case array([AMQPFieldValue])
    case void

    /// The value as an integer, whatever its integer width.
    public var integerValue: Int64? {
        switch self {
        case .int8(let v): Int64(v)
        case .uint8(let v): Int64(v)
        case .int16(let v): Int64(v)
        case .uint16(let v): Int64(v)
        case .int32(let v): Int64(v)
        case .uint32(let v): Int64(v)
        case .int64(let v): v
        case .uint64(let v): Int64(exactly: v)
        default: nil
        }
    }

    /// The value as text, when it is a long string.
    public var stringValue: String? {
        if case .longString(let s) = self { return s }
        return nil
    }
}

/// An ordered AMQP field table (the order of entries is kept, as it goes on the wire).
public struct AMQPTable: Sendable, Hashable, ExpressibleByDictionaryLiteral, CustomStringConvertible {
    /// One key and its value.
    public struct Entry: Sendable, Hashable {
        public var key: String
        public var value: AMQPFieldValue
        public init(key: String, value: AMQPFieldValue) {
            self.key = key
            self.value = value
        }
    }

    /// The entries, in wire order.
    public var entries: [Entry]

    /// Creates a table from entries.
    public init(_ entries: [Entry] = []) {
        self.entries = entries
    }

    public init(dictionaryLiteral elements: (String, AMQPFieldValue)...) {
        self.entries = elements.map { Entry(key: $0.0, value: $0.1) }
    }

    /// The value of the first entry with this key.
    public subscript(key: String) -> AMQPFieldValue? {
        entries.first { $0.key == key }?.value
    }

    /// Whether the table has no entries.
    public var isEmpty: Bool { entries.isEmpty }

    public var description: String {
        "{" + entries.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
    }
}
