/// How the worker reaches Glance (`[glance]` options, with Ironic's and keystoneauth's names).
public struct GlanceSettings: Sendable, Hashable {
    /// How requests to Glance are authenticated.
    public enum Authentication: Sendable, Hashable {
        /// No token (a Glance without Keystone), `auth_type = none`.
        case none
        /// A fixed token, `auth_type = token` with `token`.
        case token(String)
        /// Keystone v3 password authentication, `auth_type = password`.
        case password(KeystonePassword)
    }

    /// Keystone v3 password credentials and where to find Glance in the catalog.
    public struct KeystonePassword: Sendable, Hashable {
        public var authURL: String
        public var username: String
        public var password: String
        public var userDomainName: String
        public var projectName: String?
        public var projectID: String?
        public var projectDomainName: String
        public var regionName: String?
        /// The catalog interface: `public`, `internal` or `admin`.
        public var interface: String

        public init(authURL: String, username: String, password: String, userDomainName: String = "Default", projectName: String? = nil,
                    projectID: String? = nil, projectDomainName: String = "Default", regionName: String? = nil, interface: String = "public") {
            self.authURL = authURL
            self.username = username
            self.password = password
            self.userDomainName = userDomainName
            self.projectName = projectName
            self.projectID = projectID
            self.projectDomainName = projectDomainName
            self.regionName = regionName
            self.interface = interface
        }
    }

    /// `endpoint_override`: Glance's URL (required unless the Keystone catalog gives it).
    public var endpointOverride: String?
    public var authentication: Authentication
    /// The worker's own project, for `private` images it owns and `shared` images it is a member
    /// of; from Keystone when authenticating with a password, else `[glance] project_id`.
    public var projectID: String?
    /// `num_retries`: retries of a request that met a 5xx or a connection error.
    public var retries: Int
    /// `[DEFAULT] ignore_project_check_for_admin_tasks`: an admin caller sees every image.
    public var adminBypassesProjectCheck: Bool
    /// `[DEFAULT] allow_image_access_via_auth_token`: a caller's token grants access.
    public var allowAccessViaAuthToken: Bool

    /// Creates settings.
    public init(endpointOverride: String? = nil, authentication: Authentication = .none, projectID: String? = nil, retries: Int = 0,
                adminBypassesProjectCheck: Bool = true, allowAccessViaAuthToken: Bool = false) {
        self.endpointOverride = endpointOverride
        self.authentication = authentication
        self.projectID = projectID
        self.retries = retries
        self.adminBypassesProjectCheck = adminBypassesProjectCheck
        self.allowAccessViaAuthToken = allowAccessViaAuthToken
    }
}
