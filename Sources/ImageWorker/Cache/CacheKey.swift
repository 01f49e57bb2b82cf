import Primitives
import ImageServices
import SystemSupport

/// The name of an image's master copy, as Ironic names it: the Glance UUID for Glance images,
/// else `uuid5(NAMESPACE_URL, href)` — so no part of a URL (or its credentials) reaches a file name,
/// and a long URL never hits a file-name limit.
enum CacheKey {
    /// RFC 4122's namespace for URLs, `6ba7b811-9dad-11d1-80b4-00c04fd430c8`.
    private static let urlNamespace: [UInt8] = [0x6B, 0xA7, 0xB8, 0x11, 0x9D, 0xAD, 0x11, 0xD1, 0x80, 0xB4, 0x00, 0xC0, 0x4F, 0xD4, 0x30, 0xC8]

    static func key(for reference: ImageReference, service: any ImageService, variant: String? = nil) -> String {
        let key = service.cacheKey(for: reference) ?? uuid5(name: reference.original)
        return variant.map { "\(key)_\(Self.variant($0))" } ?? key
    }

    /// The suffix for transform settings: the first 12 hex digits of their SHA-1 (the settings
    /// themselves are kept in the master's record).
    static func variant(_ settings: String) -> String {
        String(Hex.lowercase(MultiDigest.bytes(.sha1, of: Array(settings.utf8))).prefix(12))
    }

    /// A name-based (SHA-1) UUID, as Python's `uuid.uuid5(uuid.NAMESPACE_URL, name)`.
    static func uuid5(name: String) -> String {
        var bytes = Array(MultiDigest.bytes(.sha1, of: urlNamespace + Array(name.utf8)).prefix(16))
        bytes[6] = bytes[6] & 0x0F | 0x50
        bytes[8] = bytes[8] & 0x3F | 0x80
        return UUIDText.canonical(Hex.lowercase(bytes))!
    }
}
