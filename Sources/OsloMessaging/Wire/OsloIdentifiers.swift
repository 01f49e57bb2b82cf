import Crypto
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

    /// A name-based (version 5, SHA-1) UUID in the dashed form, lower case: the same `name`
    /// always gives the same UUID (RFC 9562 §5.5). Foundation has no name-based UUIDs.
    public static func uuid5(_ name: String, namespace: UUID = imageWorkerNamespace) -> String {
        var hasher = Insecure.SHA1()
        withUnsafeBytes(of: namespace.uuid) { hasher.update(bufferPointer: $0) }
        hasher.update(data: Array(name.utf8))
        var bytes = Array(hasher.finalize().prefix(16))
        bytes[6] = (bytes[6] & 0x0F) | 0x50  // version 5
        bytes[8] = (bytes[8] & 0x3F) | 0x80  // RFC 9562 variant
        let uuid = UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                               bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
        return uuid.uuidString.lowercased()
    }

    /// ``uuid5(_:namespace:)`` as 32 lowercase hex digits (the shape of oslo's `_unique_id`).
    public static func uuid5Hex(_ name: String, namespace: UUID = imageWorkerNamespace) -> String {
        uuid5(name, namespace: namespace).replacingOccurrences(of: "-", with: "")
    }

    /// The namespace of the worker's name-based UUIDs.
    public static let imageWorkerNamespace = UUID(uuidString: "6f0c2b9e-5d1a-4c4e-9a57-3e1d2f8b7a10")!
}
