import Foundation

/// UUIDs in text form, as Ironic accepts them (`uuidutils.is_uuid_like`: 32 hex digits, with or
/// without the four dashes, any case), read by Foundation's `UUID`.
public enum UUIDText {
    /// Whether `text` is a UUID.
    public static func isUUID(_ text: String) -> Bool {
        canonical(text) != nil
    }

    /// The canonical form (lower case, dashed), or nil when `text` is not a UUID.
    public static func canonical(_ text: String) -> String? {
        var bytes = Array(text.utf8)
        if bytes.count == 32 {
            // Dashes go in by byte (any text may come here: a node_uuid of 32 bytes that are not 32
            // characters must not be cut in a character's middle), hex digits only.
            guard bytes.allSatisfy({ $0 < 0x80 && Character(Unicode.Scalar($0)).isHexDigit }) else { return nil }
            for offset in [20, 16, 12, 8] { bytes.insert(UInt8(ascii: "-"), at: offset) }
        }
        guard bytes.count == 36, let uuid = UUID(uuidString: String(decoding: bytes, as: UTF8.self)) else { return nil }
        return uuid.uuidString.lowercased()
    }

    /// A new random UUID, canonical.
    public static func random() -> String {
        UUID().uuidString.lowercased()
    }
}
