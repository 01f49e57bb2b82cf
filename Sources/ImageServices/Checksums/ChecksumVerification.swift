/// The one place a fetched image is compared with the checksum it must have.
public enum ChecksumVerification {
    /// Throws `ImageChecksumError` when `fetched` does not have the `expected` digest (case-insensitive),
    /// `ImageChecksumAlgorithmFailure` when the service did not compute it; returns the digest that
    /// was checked (or, without an expectation, the sha256 computed).
    @discardableResult
    public static func verify(_ fetched: FetchedImage, expected: ImageChecksum?, reference: ImageReference, serviceName: String) throws(IronicError) -> ImageChecksum {
        let algorithm = expected?.algorithm ?? .sha256
        guard let actual = fetched.digests[algorithm]?.lowercased() else {
            throw IronicError(.imageChecksumAlgorithmFailure, "The \(serviceName) service did not compute the \(algorithm) digest of \(reference.redacted).")
        }
        if let expected, actual != expected.value {
            throw IronicError(.imageChecksumError, "The checksum of image \(reference.redacted) does not match: expected \(expected.algorithm) \(expected.value), got \(actual).")
        }
        return try ImageChecksum(algorithm: algorithm, value: actual)
    }
}
