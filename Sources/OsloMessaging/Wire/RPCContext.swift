import OsloJSON
/// The request context an oslo client flattens into `_context_<key>` fields: Ironic's
/// `RequestContext.to_dict()` (user, project, roles, request ids, auth token, …).
///
/// The auth token is kept for the one use it has (authenticating to Glance on the caller's behalf)
/// and is left out of everything this type writes or describes.
public struct RPCContext: Sendable, Hashable, CustomStringConvertible {
    /// The context's fields, prefix stripped, in wire order.
    public var fields: JSONObject

    /// Keys whose values are credentials and must never be echoed.
    public static let secretKeys: Set<String> = ["auth_token", "auth_token_info", "password", "trust_id", "service_token", "service_catalog"]

    /// Creates a context from its fields.
    public init(fields: JSONObject = JSONObject()) {
        self.fields = fields
    }

    /// `request_id`, if the caller sent a string.
    public var requestID: String? { fields["request_id"]?.stringValue }

    /// `global_request_id`, if the caller sent a string.
    public var globalRequestID: String? { fields["global_request_id"]?.stringValue }

    /// The caller's Keystone token, if any: for authenticating to Glance only.
    public var authToken: String? { fields["auth_token"]?.stringValue }

    /// The project the caller acts in.
    public var projectID: String? { fields["project_id"]?.stringValue ?? fields["project"]?.stringValue }

    /// Whether the caller acts as an administrator (`is_admin`).
    public var isAdmin: Bool { fields["is_admin"]?.boolValue ?? false }

    /// The caller's roles.
    public var roles: [String] { fields["roles"]?.arrayValue?.compactMap(\.stringValue) ?? [] }

    /// The fields with every secret replaced by `null`, safe to put in a notification.
    public var redactedFields: JSONObject {
        var copy = fields
        for key in Self.secretKeys where copy[key] != nil { copy[key] = .null }
        return copy
    }

    /// A description without secrets.
    public var description: String {
        JSONWriter().string(.object(redactedFields))
    }
}
