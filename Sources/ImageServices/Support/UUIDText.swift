/// UUIDs in text form, as Ironic accepts them (`uuidutils.is_uuid_like`: 32 hex digits, with or
/// without the four dashes, any case).
public enum UUIDText {
    /// Whether `text` is a UUID.
    public static func isUUID(_ text: String) -> Bool {
        canonical(text) != nil
    }

    /// The canonical form (lower case, dashed), or nil when `text` is not a UUID.
    public static func canonical(_ text: String) -> String? {
        let utf8 = Array(text.utf8)
        let hex: [UInt8]
        if utf8.count == 36 {
            for index in [8, 13, 18, 23] where utf8[index] != UInt8(ascii: "-") { return nil }
            hex = utf8.enumerated().filter { ![8, 13, 18, 23].contains($0.offset) }.map(\.element)
        } else if utf8.count == 32 {
            hex = utf8
        } else {
            return nil
        }
        guard hex.allSatisfy({ isHexDigit($0) }) else { return nil }
        let lower = hex.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "F") ? $0 + 32 : $0 }
        var result = ""
        for (index, byte) in lower.enumerated() {
            if [8, 12, 16, 20].contains(index) { result.append("-") }
            result.append(Character(Unicode.Scalar(byte)))
        }
        return result
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
    }
}
