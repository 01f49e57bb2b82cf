import ImageServices

/// Ironic's checksum rules, as configured.
public struct ChecksumPolicy: Sendable {
    /// `[agent] allow_md5_checksum`.
    public var allowMD5: Bool
    /// `[image_worker] require_http_checksum`: an image whose service requires a checksum
    /// (``ImageServices/ChecksumAuthority/request(required:)``) is refused without one.
    public var requireChecksums: Bool
    /// `[conductor] disable_support_for_checksum_files`.
    public var checksumFilesDisabled: Bool

    public init(allowMD5: Bool = true, requireChecksums: Bool = true, checksumFilesDisabled: Bool = false) {
        self.allowMD5 = allowMD5
        self.requireChecksums = requireChecksums
        self.checksumFilesDisabled = checksumFilesDisabled
    }
}
