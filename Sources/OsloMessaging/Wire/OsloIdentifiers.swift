import Foundation

/// Identifiers as oslo.messaging makes them: `uuid4().hex` (32 lowercase hex digits) for
/// `_msg_id`, `_unique_id` and queue suffixes, and dashed UUIDs for notification `message_id`s.
public enum OsloIdentifiers {
    /// A random (version 4) UUID as 32 lowercase hex digits.
    public static func uuid4Hex() -> String {
        uuid4().replacingOccurrences(of: "-", with: "")
    }

    /// A random (version 4) UUID in the dashed form (`8-4-4-4-12`), lower case.
    public static func uuid4() -> String {
        UUID().uuidString.lowercased()
    }
}
