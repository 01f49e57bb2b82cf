import OsloJSON
import SystemSupport
import Foundation
import ImageFormats
import ImageServices

#if canImport(Glibc)
import Glibc
#endif

/// What the worker knows about a master copy, kept beside it as `<key>.json`: where it came from
/// (redacted), the validators that tell whether it is still current, its size and its digests —
/// so that a hit reports its checksum without reading the image again.
struct CacheRecord: Codable, Hashable, Sendable {
    var source: String
    var service: String
    var entityTag: String?
    var lastModified: String?
    var updatedAtMicroseconds: Int64?
    var diskFormat: String?
    var size: Int64
    /// Lower-case hex by algorithm name.
    var digests: [String: String]
    var fetchedAtMicroseconds: Int64
    /// The transform stages' settings the master was made under (``CacheKey``'s suffix), if any.
    var variant: String? = nil
    /// What was served, when the transforms changed the bytes (the master is then the
    /// decompressed or converted image): what a hit is verified against, and its `source`.
    var served: Served? = nil

    /// The image as served, before the transforms changed it.
    struct Served: Codable, Hashable, Sendable {
        var diskFormat: String?
        var compression: String?
        var size: Int64
        /// Lower-case hex by algorithm name.
        var digests: [String: String]

        /// `source`, with every digest the download computed (`digests`, by algorithm name).
        init(_ source: ImageSource, digests: [String: String]) {
            diskFormat = source.diskFormat?.rawValue
            compression = source.compression
            size = source.size
            self.digests = digests.merging([source.checksum.algorithm.rawValue: source.checksum.value]) { _, verified in verified }
        }
    }

    /// The digest for an algorithm, if recorded.
    func digest(_ algorithm: HashAlgorithm) -> String? { digests[algorithm.rawValue] }

    /// The metadata a hit reports.
    var metadata: ImageMetadata {
        ImageMetadata(size: size, updatedAtMicroseconds: updatedAtMicroseconds, diskFormat: diskFormat,
                      entityTag: entityTag, lastModified: lastModified)
    }

    /// Whether a master with this record is still the image the service now describes:
    /// Glance images never change; others must show the same ETag, else the same Last-Modified
    /// (without either, nothing says it is current, and it is fetched again, as Ironic does).
    func isCurrent(for current: ImageMetadata?, caching: ImageCaching) -> Bool {
        switch caching {
        case .immutable: return true
        case .never: return false
        case .revalidate:
            guard let current else { return false }
            if let recorded = entityTag, let now = current.entityTag { return recorded == now }
            if let recorded = lastModified, let now = current.lastModified { return recorded == now }
            return false
        }
    }

    static func read(from directory: DirectoryHandle, key: String) -> CacheRecord? {
        let path = "\(directory.path)/\(key).json"
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(CacheRecord.self, from: data)
    }

    /// Writes the record under a temporary name and renames it into place.
    func write(to directory: DirectoryHandle, key: String) throws {
        // 0600: a record names the image's source and its owner's project.
        let staging = StagingFile(in: directory, finalName: "\(key).json", mode: 0o600)
        let output = try staging.create()
        let data = try JSONEncoder().encode(self)
        do {
            try data.withUnsafeBytes { bytes in
                guard Glibc.write(output.rawValue, bytes.baseAddress, bytes.count) == bytes.count else {
                    throw SystemCallError(call: "write", subject: staging.temporaryName, errno: errno)
                }
            }
            try output.sync()
            try staging.commit()
        } catch {
            staging.discard()
            throw error
        }
    }
}
