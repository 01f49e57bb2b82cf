import Primitives
import SystemSupport

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

/// Several digests of the same bytes computed in one pass, all through libcrypto
/// (``OpenSSLDigest``). A request asks for one digest; the cache and `file://` memos may ask for
/// more, and each costs a full pass of the CPU over the bytes.
public struct MultiDigest: Sendable {
    // An array updated in place, not a dictionary: updating a dictionary's value while iterating
    // its keys copies the storage, and with it every digest context, on each chunk.
    private var digests: [(algorithm: HashAlgorithm, digest: OpenSSLDigest)]

    /// Starts digests for `algorithms`; `ImageChecksumAlgorithmFailure` when the host's libcrypto
    /// refuses one (md5 under a FIPS-only configuration).
    public init(_ algorithms: Set<HashAlgorithm>) throws(IronicError) {
        var digests: [(algorithm: HashAlgorithm, digest: OpenSSLDigest)] = []
        for algorithm in HashAlgorithm.allCases where algorithms.contains(algorithm) {
            guard let digest = OpenSSLDigest(algorithm) else {
                throw IronicError(.imageChecksumAlgorithmFailure, "The \(algorithm) digest is not available from this host's OpenSSL (a FIPS-only configuration refuses md5).")
            }
            digests.append((algorithm, digest))
        }
        self.digests = digests
    }

    /// Feeds bytes to every digest.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        for index in digests.indices { digests[index].digest.update(bytes) }
    }

    /// Feeds bytes to every digest.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// One SHA-1 or SHA-256 digest of `bytes`, as bytes (for keys and name-based UUIDs).
    public static func bytes(_ algorithm: HashAlgorithm, of bytes: [UInt8]) -> [UInt8] {
        precondition(algorithm == .sha1 || algorithm == .sha256, "keys use sha1 or sha256, which every libcrypto has")
        guard var digest = OpenSSLDigest(algorithm) else {
            preconditionFailure("libcrypto could not allocate a \(algorithm) context (out of memory)")
        }
        bytes.withUnsafeBytes { digest.update($0) }
        return digest.finalize()
    }

    /// The lower-case hex digests.
    public func finalize() -> [HashAlgorithm: String] {
        Dictionary(uniqueKeysWithValues: digests.map { ($0.algorithm, Hex.lowercase($0.digest.finalize())) })
    }
}
