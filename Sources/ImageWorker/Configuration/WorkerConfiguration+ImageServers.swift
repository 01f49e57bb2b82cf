import AMQPModel
import Foundation
import ImageServices
import Logging
import OsloMessaging

/// The options of image servers, Glance and Keystone: TLS, timeouts, credentials, proxies.
extension WorkerConfiguration {
    /// Settings for image servers.
    static func httpSettings(_ sources: ConfigurationSources) throws(ConfigurationError) -> HTTPClientSettings {
        typealias O = WorkerOptions
        var verification = HTTPClientSettings.Verification.system
        let verifyText = sources.string(O.verifyCA)
        if let verify = ConfigurationSources.parseBool(verifyText) {
            verification = verify ? .system : .none
        } else {
            guard FileAccess.isReadable(verifyText) else {
                throw ConfigurationError(O.verifyCA, "'\(verifyText)' is neither true, false nor a readable CA file")
            }
            verification = .caFile(verifyText)
        }
        let connectTimeout = try sources.integer(O.connectionTimeout)
        var credentials = HTTPCredentials()
        let strategy = sources.string(O.imageServerAuthStrategy)
        switch strategy {
        case "noauth": break
        case "http_basic":
            guard let user = sources.optionalString(O.imageServerUser) else {
                throw ConfigurationError(O.imageServerUser, "http_basic needs a user")
            }
            guard let password = sources.optionalString(O.imageServerPassword) else {
                throw ConfigurationError(O.imageServerPassword, "http_basic needs a password")
            }
            credentials.everyServer = (user, password)
        default:
            throw ConfigurationError(O.imageServerAuthStrategy, "'\(strategy)' is neither noauth nor http_basic")
        }
        if let netrc = try readableFile(sources, O.netrcFile) {
            do {
                credentials.perHost = try NetrcFile(path: netrc)
            } catch {
                throw ConfigurationError(O.netrcFile, error.message)
            }
        }
        let certificate = try readableFile(sources, O.clientCertFile)
        let key = try readableFile(sources, O.clientKeyFile)
        if (certificate == nil) != (key == nil) {
            throw ConfigurationError(O.clientKeyFile, "http_client_cert_file and http_client_key_file must be given together")
        }
        let proxies: ProxySettings
        do {
            proxies = try ProxySettings.fromEnvironment(sources.environment, http: sources.optionalString(O.httpProxy),
                                                        https: sources.optionalString(O.httpsProxy), noProxy: sources.optionalString(O.noProxy))
        } catch {
            throw ConfigurationError(O.httpProxy, error.message)
        }
        return HTTPClientSettings(
            verification: verification, clientCertificateFile: certificate, clientKeyFile: key,
            connectTimeout: .seconds(connectTimeout),
            stallTimeout: .seconds(try sources.integer(O.downloadStallTimeout, default: connectTimeout)),
            overallTimeout: .seconds(try sources.integer(O.downloadTimeout)),
            retries: try sources.integer(O.downloadRetries),
            proxies: proxies, credentials: credentials,
            maximumConnectionsPerHost: try sources.integer(O.maxConnectionsPerHost, default: try sources.integer(O.maxConcurrentDownloads)),
            egress: try egressPolicy(sources))
    }

    /// Where image downloads may connect (§5.1). `allowed_*` set empty means unset (any).
    static func egressPolicy(_ sources: ConfigurationSources) throws(ConfigurationError) -> EgressPolicy {
        typealias O = WorkerOptions
        func networks(_ option: ConfigurationOption, default fallback: [String]) throws(ConfigurationError) -> [IPNetwork] {
            var parsed: [IPNetwork] = []
            for text in sources.list(option, default: fallback) {
                guard let network = IPNetwork(text) else { throw ConfigurationError(option, "'\(text)' is not an IP network (CIDR) or address") }
                parsed.append(network)
            }
            return parsed
        }
        func ports(_ option: ConfigurationOption) throws(ConfigurationError) -> Set<Int> {
            var parsed = Set<Int>()
            for text in sources.list(option, default: []) {
                let bounds = text.split(separator: "-", maxSplits: 1).map { Int($0.trimmingCharacters(in: .whitespaces)) }
                guard let low = bounds.first ?? nil, let high = bounds.last ?? nil, 1 <= low, low <= high, high <= 65535 else {
                    throw ConfigurationError(option, "'\(text)' is not a port (1-65535) or a range of them")
                }
                parsed.formUnion(low...high)
            }
            return parsed
        }
        let allowedNetworks = try networks(O.allowedNetworks, default: [])
        let allowedPorts = try ports(O.allowedPorts)
        return EgressPolicy(
            disallowedNetworks: try networks(O.disallowedNetworks, default: EgressPolicy.defaultDisallowedNetworks),
            allowedNetworks: allowedNetworks.isEmpty ? nil : allowedNetworks,
            disallowedPorts: try ports(O.disallowedPorts), allowedPorts: allowedPorts.isEmpty ? nil : allowedPorts)
    }

    /// Settings for Glance and, with a password, Keystone.
    static func glanceSettings(_ sources: ConfigurationSources, http: HTTPClientSettings) throws(ConfigurationError) -> (GlanceSettings, HTTPClientSettings) {
        typealias O = WorkerOptions
        let authType = sources.string(O.glanceAuthType).lowercased()
        let authentication: GlanceSettings.Authentication
        switch authType {
        case "none", "noauth":
            authentication = .none
        case "token", "admin_token":
            guard let token = sources.optionalString(O.glanceToken) else {
                throw ConfigurationError(O.glanceToken, "auth_type = token needs a token")
            }
            authentication = .token(token)
        case "password", "v3password":
            func required(_ option: ConfigurationOption) throws(ConfigurationError) -> String {
                guard let value = sources.optionalString(option) else {
                    throw ConfigurationError(option, "auth_type = password needs \(option.name)")
                }
                return value
            }
            let projectName = sources.optionalString(O.glanceProjectName)
            let projectID = sources.optionalString(O.glanceProjectID)
            guard projectName != nil || projectID != nil else {
                throw ConfigurationError(O.glanceProjectName, "auth_type = password needs project_name or project_id")
            }
            authentication = .password(GlanceSettings.KeystonePassword(
                authURL: try required(O.glanceAuthURL), username: try required(O.glanceUsername), password: try required(O.glancePassword),
                userDomainName: sources.optionalString(O.glanceUserDomain) ?? "Default", projectName: projectName, projectID: projectID,
                projectDomainName: sources.optionalString(O.glanceProjectDomain) ?? "Default", regionName: sources.optionalString(O.glanceRegion),
                interface: sources.list(O.glanceValidInterfaces, default: [sources.string(O.glanceInterface)]).first ?? "public"))
        default:
            throw ConfigurationError(O.glanceAuthType, "'\(authType)' is not one of none, token, password")
        }
        let endpoint = sources.optionalString(O.glanceEndpoint)
        if let endpoint, !(endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://")) {
            throw ConfigurationError(O.glanceEndpoint, "'\(endpoint)' is not an http(s) URL")
        }
        let glance = GlanceSettings(
            endpointOverride: endpoint, authentication: authentication, projectID: sources.optionalString(O.glanceProjectID),
            retries: try sources.integer(O.glanceRetries), adminBypassesProjectCheck: try sources.bool(O.adminBypass),
            allowAccessViaAuthToken: try sources.bool(O.accessViaAuthToken))
        var glanceHTTP = http
        glanceHTTP.credentials = HTTPCredentials()
        glanceHTTP.egress = nil  // Glance and Keystone are the operator's endpoints (§5.1)
        glanceHTTP.clientCertificateFile = try readableFile(sources, O.glanceCertFile)
        glanceHTTP.clientKeyFile = try readableFile(sources, O.glanceKeyFile)
        if try sources.bool(O.glanceInsecure) {
            glanceHTTP.verification = .none
        } else if let caFile = try readableFile(sources, O.glanceCAFile) {
            glanceHTTP.verification = .caFile(caFile)
        } else {
            glanceHTTP.verification = .system
        }
        return (glance, glanceHTTP)
    }

    static func readableFile(_ sources: ConfigurationSources, _ option: ConfigurationOption) throws(ConfigurationError) -> String? {
        guard let path = sources.optionalString(option) else { return nil }
        guard FileAccess.isReadable(path) else {
            throw ConfigurationError(option, "'\(path)' cannot be read")
        }
        return path
    }
}
