/// Identifiers as oslo.messaging makes them: `uuid4().hex` (32 lowercase hex digits) for
/// `_msg_id`, `_unique_id` and queue suffixes, and dashed UUIDs for notification `message_id`s.
public enum OsloIdentifiers {
    /// A random (version 4) UUID as 32 lowercase hex digits.
    public static func uuid4Hex() -> String {
        hex(randomUUIDBytes())
    }

    /// A random (version 4) UUID in the dashed form (`8-4-4-4-12`).
    public static func uuid4() -> String {
        let text = hex(randomUUIDBytes())
        var result = ""
        result.reserveCapacity(36)
        for (index, character) in text.enumerated() {
            if [8, 12, 16, 20].contains(index) { result.append("-") }
            result.append(character)
        }
        return result
    }

    private static func randomUUIDBytes() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = bytes[6] & 0x0F | 0x40
        bytes[8] = bytes[8] & 0x3F | 0x80
        return bytes
    }

    private static let digits = Array("0123456789abcdef")

    private static func hex(_ bytes: [UInt8]) -> String {
        var text = ""
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0xF)])
        }
        return text
    }
}
