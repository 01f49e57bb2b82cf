import Crypto

/// A digest algorithm Ironic accepts for image checksums (hashlib names).
public enum HashAlgorithm: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case md5, sha1, sha256, sha384, sha512

    /// Parses a hashlib-style name (`sha256`, `SHA-256`, `sha_256`), case-insensitively.
    public init?(name: String) {
        let normalised = name.lowercased().filter { $0 != "-" && $0 != "_" }
        guard let algorithm = HashAlgorithm(rawValue: normalised) else { return nil }
        self = algorithm
    }

    /// The number of hex digits in a digest.
    public var hexLength: Int {
        switch self {
        case .md5: 32
        case .sha1: 40
        case .sha256: 64
        case .sha384: 96
        case .sha512: 128
        }
    }

    public var description: String { rawValue }
}

/// Several digests of the same bytes computed in one pass. SHA-384 and SHA-512 go through
/// OpenSSL (``OpenSSLDigest``, faster on AMD CPUs), unless it cannot start them.
public struct MultiDigest: Sendable {
    private var md5: Insecure.MD5?
    private var sha1: Insecure.SHA1?
    private var sha256: SHA256?
    private var sha384: SHA384?
    private var sha512: SHA512?
    // Stored fields, not a dictionary: updating a dictionary's value while iterating its keys
    // copies the storage, and with it every digest context, on each chunk.
    private var openSSL384: OpenSSLDigest?
    private var openSSL512: OpenSSLDigest?

    /// Starts digests for `algorithms`.
    public init(_ algorithms: Set<HashAlgorithm>) {
        if algorithms.contains(.sha384) { openSSL384 = OpenSSLDigest(.sha384) }
        if algorithms.contains(.sha512) { openSSL512 = OpenSSLDigest(.sha512) }
        if algorithms.contains(.md5) { md5 = Insecure.MD5() }
        if algorithms.contains(.sha1) { sha1 = Insecure.SHA1() }
        if algorithms.contains(.sha256) { sha256 = SHA256() }
        if algorithms.contains(.sha384), openSSL384 == nil { sha384 = SHA384() }
        if algorithms.contains(.sha512), openSSL512 == nil { sha512 = SHA512() }
    }

    /// Feeds bytes to every digest.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        md5?.update(bufferPointer: bytes)
        sha1?.update(bufferPointer: bytes)
        sha256?.update(bufferPointer: bytes)
        sha384?.update(bufferPointer: bytes)
        sha512?.update(bufferPointer: bytes)
        openSSL384?.update(bytes)
        openSSL512?.update(bytes)
    }

    /// Feeds bytes to every digest.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The lower-case hex digests.
    public func finalize() -> [HashAlgorithm: String] {
        var result: [HashAlgorithm: String] = [:]
        if let md5 { result[.md5] = hex(md5.finalize()) }
        if let sha1 { result[.sha1] = hex(sha1.finalize()) }
        if let sha256 { result[.sha256] = hex(sha256.finalize()) }
        if let sha384 { result[.sha384] = hex(sha384.finalize()) }
        if let sha512 { result[.sha512] = hex(sha512.finalize()) }
        if let openSSL384 { result[.sha384] = hex(openSSL384.finalize()) }
        if let openSSL512 { result[.sha512] = hex(openSSL512.finalize()) }
        return result
    }

    private func hex<Bytes: Sequence<UInt8>>(_ digest: Bytes) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(128)
        for byte in digest {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
