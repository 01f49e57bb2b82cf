import OsloJSON
import ImageServices
import OsloMessaging

/// The `instance_info` fields a fetch uses, type-checked: a wrong type is `InvalidParameterValue`
/// naming the field, never a crash or a silent default.
public struct InstanceInfo: Sendable, Hashable {
    public var imageSource: String
    public var kernel: String?
    public var ramdisk: String?
    public var imageChecksum: String?
    public var osHashAlgorithm: String?
    public var osHashValue: String?
    public var diskFormat: String?
    public var imageType: ImageType?
    public var isWholeDisk: Bool?

    /// An image with an optional checksum (what `image-worker fetch` takes on its command line).
    public init(imageSource: String, imageChecksum: String? = nil, kernel: String? = nil, ramdisk: String? = nil, imageType: ImageType? = nil) {
        self.imageSource = imageSource
        self.imageChecksum = imageChecksum
        self.kernel = kernel
        self.ramdisk = ramdisk
        self.imageType = imageType
    }

    /// Reads the fields from `instance_info`.
    public init(_ object: JSONObject) throws(IronicError) {
        guard let source = try Self.string(object, "image_source"), !source.isEmpty else {
            throw IronicError.missingParameter("instance_info is missing image_source.")
        }
        imageSource = source
        kernel = try Self.string(object, "kernel")
        ramdisk = try Self.string(object, "ramdisk")
        imageChecksum = try Self.string(object, "image_checksum")
        osHashAlgorithm = try Self.string(object, "image_os_hash_algo")
        osHashValue = try Self.string(object, "image_os_hash_value")
        diskFormat = try Self.string(object, "image_disk_format")
        if let typeText = try Self.string(object, "image_type") {
            guard let type = ImageType(rawValue: typeText) else {
                throw IronicError.invalidParameter("instance_info.image_type must be 'whole-disk' or 'partition', not '\(typeText.prefix(40))'.")
            }
            imageType = type
        }
        switch object["is_whole_disk"] {
        case nil, .null?: isWholeDisk = nil
        case .bool(let value)?: isWholeDisk = value
        case .string(let text)?:
            guard let value = ConfigurationSources.parseBool(text) else {
                throw IronicError.invalidParameter("instance_info.is_whole_disk must be a boolean, not '\(text.prefix(40))'.")
            }
            isWholeDisk = value
        case let other?:
            throw IronicError.invalidParameter("instance_info.is_whole_disk must be a boolean, not \(other.typeDescription).")
        }
    }

    private static func string(_ object: JSONObject, _ key: String) throws(IronicError) -> String? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let text)?: return text.isEmpty ? nil : text
        case let other?: throw IronicError.invalidParameter("instance_info.\(key) must be a string, not \(other.typeDescription).")
        }
    }

    /// Ironic's whole-disk/partition decision: `image_type` if given, else `is_whole_disk`, else
    /// (for Glance) partition when the image's properties hold both `kernel_id` and `ramdisk_id`,
    /// else partition when `kernel` and `ramdisk` are both given, whole disk otherwise.
    public func decideImageType(glanceProperties: [String: String]? = nil) -> ImageType {
        if let imageType { return imageType }
        if let isWholeDisk { return isWholeDisk ? .wholeDisk : .partition }
        if let properties = glanceProperties, properties["kernel_id"] != nil, properties["ramdisk_id"] != nil { return .partition }
        return kernel != nil && ramdisk != nil ? .partition : .wholeDisk
    }
}
