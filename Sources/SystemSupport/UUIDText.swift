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
        var dashed = text
        if text.utf8.count == 32 {
            for offset in [20, 16, 12, 8] { dashed.insert("-", at: dashed.index(dashed.startIndex, offsetBy: offset)) }
        }
        guard dashed.utf8.count == 36, let uuid = UUID(uuidString: dashed) else { return nil }
        return uuid.uuidString.lowercased()
    }

    /// A new random UUID, canonical.
    public static func random() -> String {
        UUID().uuidString.lowercased()
    }
}
