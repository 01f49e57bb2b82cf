import Primitives

import Foundation

/// oslo.messaging's `transport_url`, parsed:
/// `rabbit://user:pass@host1:5672,user:pass@host2:5672/vhost?ssl=1`.
///
/// - `rabbit://` and `amqp://` mean the same; `amqps://` turns TLS on.
/// - Several comma-separated hosts are tried in turn on (re)connection.
/// - User, password and virtual host are percent-decoded; an empty path means the vhost `/`.
/// - A host without credentials takes the previous host's (oslo falls back to one pair too).
/// - The query carries oslo option overrides (`ssl=1`, `amqp_durable_queues=true`, …); they are
///   kept in ``options`` for the caller to apply.
public struct TransportURL: Sendable, Hashable, CustomStringConvertible {
    /// The brokers, in the order given.
    public var endpoints: [AMQPEndpoint]
    /// The query's options, in the order given (oslo option name → value).
    public var options: [(name: String, value: String)] {
        get { optionPairs.map { ($0.name, $0.value) } }
        set { optionPairs = newValue.map { OptionPair(name: $0.name, value: $0.value) } }
    }
    private var optionPairs: [OptionPair]

    private struct OptionPair: Sendable, Hashable {
        var name: String
        var value: String
    }

    /// Parses a transport URL; the error names what is wrong without echoing the password.
    public init(parsing text: String) throws(AMQPError) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let schemeEnd = trimmed.firstRange(of: "://") else {
            throw AMQPError(.invalidArgument, "transport_url must look like rabbit://user:password@host:5672/vhost")
        }
        let scheme = trimmed[..<schemeEnd.lowerBound].lowercased()
        let driver = scheme.split(separator: "+").first.map(String.init) ?? scheme
        let schemeTLS: Bool
        switch driver {
        case "rabbit", "amqp", "kombu": schemeTLS = false
        case "amqps", "rabbits": schemeTLS = true
        default:
            throw AMQPError(.invalidArgument, "transport_url scheme '\(scheme)' is not supported (use rabbit:// or amqp://)")
        }
        var rest = trimmed[schemeEnd.upperBound...]
        var query = Substring("")
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        if let fragment = query.firstIndex(of: "#") { query = query[..<fragment] }
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var pairs: [OptionPair] = []
        for item in query.split(separator: "&") where !item.isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = try Self.percentDecode(String(parts[0]), what: "query option name")
            let value = parts.count > 1 ? try Self.percentDecode(String(parts[1]), what: "query option value") : ""
            pairs.append(OptionPair(name: name, value: value))
        }
        self.optionPairs = pairs
        let sslOption = pairs.last { $0.name == "ssl" }.map { ["1", "true", "yes", "on"].contains($0.value.lowercased()) }
        let useTLS = sslOption ?? schemeTLS

        let vhostText = try Self.percentDecode(String(path), what: "virtual host")
        let virtualHost = vhostText.isEmpty ? "/" : vhostText

        var endpoints: [AMQPEndpoint] = []
        var lastCredentials: (String, String)? = nil
        for hostText in rest.split(separator: ",", omittingEmptySubsequences: true) {
            var username: String? = nil
            var password: String? = nil
            var hostPort = Substring(hostText)
            if let at = hostText.lastIndex(of: "@") {
                let userInfo = hostText[..<at]
                hostPort = hostText[hostText.index(after: at)...]
                if let colon = userInfo.firstIndex(of: ":") {
                    username = try Self.percentDecode(String(userInfo[..<colon]), what: "user name")
                    password = try Self.percentDecode(String(userInfo[userInfo.index(after: colon)...]), what: "password")
                } else {
                    username = try Self.percentDecode(String(userInfo), what: "user name")
                }
            }
            var host: String
            var portText: Substring? = nil
            if hostPort.hasPrefix("[") {
                guard let close = hostPort.firstIndex(of: "]") else {
                    throw AMQPError(.invalidArgument, "transport_url has an unterminated IPv6 address '\(hostPort)'")
                }
                host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
                let after = hostPort[hostPort.index(after: close)...]
                if after.hasPrefix(":") { portText = after.dropFirst() }
            } else if let colon = hostPort.firstIndex(of: ":") {
                host = String(hostPort[..<colon])
                portText = hostPort[hostPort.index(after: colon)...]
            } else {
                host = String(hostPort)
            }
            if host.isEmpty { host = "localhost" }
            var port = 5672
            if let portText, !portText.isEmpty {
                guard let parsed = Int(portText), (1...65535).contains(parsed) else {
                    throw AMQPError(.invalidArgument, "transport_url has an invalid port '\(portText)' for host \(host)")
                }
                port = parsed
            }
            if let username {
                lastCredentials = (username, password ?? lastCredentials?.1 ?? "guest")
            }
            let credentials = lastCredentials ?? ("guest", "guest")
            endpoints.append(AMQPEndpoint(host: host, port: port, username: credentials.0, password: credentials.1, virtualHost: virtualHost, useTLS: useTLS))
        }
        if endpoints.isEmpty {
            endpoints.append(AMQPEndpoint(host: "localhost", virtualHost: virtualHost, useTLS: useTLS))
        }
        self.endpoints = endpoints
    }

    /// The value of a query option, if given (the last one wins).
    public func option(_ name: String) -> String? {
        optionPairs.last { $0.name == name }?.value
    }

    /// The URL with passwords masked, safe to log.
    public var description: String {
        let hosts = endpoints.map { e in
            let hostPart = e.host.contains(":") ? "[\(e.host)]" : e.host
            return "\(e.username):***@\(hostPart):\(e.port)"
        }.joined(separator: ",")
        let vhost = endpoints.first.map { $0.virtualHost == "/" ? "" : $0.virtualHost } ?? ""
        return "rabbit://\(hosts)/\(vhost)"
    }

    public static func == (lhs: TransportURL, rhs: TransportURL) -> Bool {
        lhs.endpoints == rhs.endpoints && lhs.optionPairs == rhs.optionPairs
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(endpoints)
        hasher.combine(optionPairs)
    }

    private static func percentDecode(_ text: String, what: String) throws(AMQPError) -> String {
        guard let bytes = PercentEncoding.decodedBytes(text) else {
            throw AMQPError(.invalidArgument, "transport_url has a malformed percent escape in its \(what)")
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw AMQPError(.invalidArgument, "transport_url's \(what) is not valid UTF-8 once decoded")
        }
        return decoded
    }
}
