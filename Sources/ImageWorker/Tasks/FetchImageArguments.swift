import Primitives
import OsloJSON
import SystemSupport
import ImageServices
import OsloMessaging

/// The arguments of `fetch_image` and `validate_image`: a node and its `instance_info`.
public struct FetchImageArguments: Sendable, Hashable {
    /// The node's UUID, canonical (lower case, dashed): it names a folder, so nothing else passes.
    public var nodeUUID: String
    public var instanceInfo: InstanceInfo

    /// Arguments for a node, already checked.
    public init(nodeUUID: String, instanceInfo: InstanceInfo) throws(IronicError) {
        guard let canonical = UUIDText.canonical(nodeUUID) else {
            throw IronicError.invalidParameter("node_uuid '\(Self.printable(nodeUUID))' is not a UUID.")
        }
        self.nodeUUID = canonical
        self.instanceInfo = instanceInfo
    }

    /// Reads and checks the arguments.
    public init(_ args: JSONObject) throws(IronicError) {
        nodeUUID = try Self.nodeUUID(args)
        guard let infoValue = args["instance_info"] else {
            throw IronicError.missingParameter("fetch_image needs instance_info.")
        }
        guard let info = infoValue.objectValue else {
            throw IronicError.invalidParameter("instance_info must be an object, not \(infoValue.typeDescription).")
        }
        instanceInfo = try InstanceInfo(info)
    }

    /// `node_uuid`, checked and made canonical.
    public static func nodeUUID(_ args: JSONObject) throws(IronicError) -> String {
        guard let value = args["node_uuid"] else { throw IronicError.missingParameter("node_uuid is required.") }
        guard let text = value.stringValue else {
            throw IronicError.invalidParameter("node_uuid must be a string, not \(value.typeDescription).")
        }
        guard let canonical = UUIDText.canonical(text) else {
            throw IronicError.invalidParameter("node_uuid '\(printable(text))' is not a UUID.")
        }
        return canonical
    }

    /// A value safe to quote in a message: short, control characters replaced.
    static func printable(_ text: String) -> String {
        let cleaned = String(String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : $0 }))
        return cleaned.count > 80 ? String(cleaned.prefix(80)) + "…" : cleaned
    }
}
