import Foundation
import Primitives

/// An expected digest of an image.
public struct ImageChecksum: Sendable, Hashable, CustomStringConvertible {
    public var algorithm: HashAlgorithm
    /// Lower-case hex.
    public var value: String

    /// Creates a checksum; `value` is lower-cased and must be hex of the algorithm's length.
    public init(algorithm: HashAlgorithm, value: String) throws(IronicError) {
        let lowered = value.lowercased()
        guard !lowered.isEmpty else {
            throw IronicError(.imageChecksumError, "The \(algorithm) checksum is empty.")
        }
        guard lowered.count == algorithm.hexLength, Hex.isDigits(lowered) else {
            throw IronicError.invalidParameter("The \(algorithm) checksum '\(value.prefix(160))' is not \(algorithm.hexLength) hex digits.")
        }
        self.algorithm = algorithm
        self.value = lowered
    }

    public var description: String { "\(algorithm):\(value)" }
}

/// Where an image's expected checksum comes from, by Ironic's rules (contract §3.1).
public enum ChecksumSource: Sendable, Hashable {
    /// A value to verify against.
    case value(ImageChecksum)
    /// The URL of a checksum file to look the image's name up in.
    case checksumFile(ImageReference)
    /// None given.
    case none

    /// Applies Ironic's rules to the fields of `instance_info`:
    /// - `image_os_hash_algo` + `image_os_hash_value` win over `image_checksum`;
    /// - `image_checksum` may be `algo:hex`, bare hex (md5/sha256/sha512 by length 32/64/128), or an
    ///   http(s) URL of a checksum file;
    /// - md5 is refused with `ImageChecksumAlgorithmFailure` when `allowMD5` is false.
    public static func parse(imageChecksum: String?, osHashAlgorithm: String?, osHashValue: String?, allowMD5: Bool) throws(IronicError) -> ChecksumSource {
        if let osHashValue, !osHashValue.isEmpty {
            guard let algorithmName = osHashAlgorithm, !algorithmName.isEmpty else {
                throw IronicError.missingParameter("image_os_hash_value is given without image_os_hash_algo.")
            }
            guard let algorithm = HashAlgorithm(name: algorithmName) else {
                throw IronicError(.imageChecksumAlgorithmFailure, "The image checksum algorithm '\(algorithmName.prefix(40))' is not supported (use md5, sha1, sha256, sha384 or sha512).")
            }
            return .value(try checked(ImageChecksum(algorithm: algorithm, value: osHashValue), allowMD5: allowMD5))
        }
        guard let text = imageChecksum?.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty else { return .none }
        let lowered = text.lowercased()
        if lowered.hasPrefix("http://") || lowered.hasPrefix("https://") {
            return .checksumFile(try ImageReference(text))
        }
        if let colon = text.firstIndex(of: ":") {
            let name = String(text[..<colon])
            let value = String(text[text.index(after: colon)...])
            guard let algorithm = HashAlgorithm(name: name) else {
                throw IronicError(.imageChecksumAlgorithmFailure, "The image checksum algorithm '\(name.prefix(40))' is not supported (use md5, sha1, sha256, sha384 or sha512).")
            }
            return .value(try checked(ImageChecksum(algorithm: algorithm, value: value), allowMD5: allowMD5))
        }
        let algorithm: HashAlgorithm
        switch text.count {
        case 32: algorithm = .md5
        case 64: algorithm = .sha256
        case 128: algorithm = .sha512
        default:
            throw IronicError.invalidParameter("image_checksum '\(text.prefix(160))' is neither algo:hex, a hex digest of 32, 64 or 128 digits, nor an http(s) URL.")
        }
        return .value(try checked(ImageChecksum(algorithm: algorithm, value: text), allowMD5: allowMD5))
    }

    private static func checked(_ checksum: ImageChecksum, allowMD5: Bool) throws(IronicError) -> ImageChecksum {
        if checksum.algorithm == .md5 && !allowMD5 {
            throw IronicError(.imageChecksumAlgorithmFailure, "MD5 image checksums are not allowed ([agent] allow_md5_checksum = false); give a sha256 or sha512 checksum.")
        }
        return checksum
    }
}
