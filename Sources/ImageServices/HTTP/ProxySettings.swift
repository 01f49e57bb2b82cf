import Primitives
import Foundation
import SystemSupport

/// `http_proxy`, `https_proxy` and `no_proxy`, as curl and Python's requests read them.
public struct ProxySettings: Sendable, Hashable {
    /// A proxy server.
    public struct Proxy: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int
        /// Credentials for the proxy itself (`http://user:pass@proxy:3128`); never logged.
        public var user: String?
        public var password: String?

        public var description: String { "\(host):\(port)" }
    }

    /// The proxy for `http://` URLs.
    public var http: Proxy?
    /// The proxy for `https://` URLs (reached with CONNECT).
    public var https: Proxy?
    /// Hosts reached directly: exact names, domain suffixes (`.example.com` or `example.com`
    /// covers its subdomains), `host:port`, or `*` for all.
    public var noProxy: [String]

    /// Creates settings.
    public init(http: Proxy? = nil, https: Proxy? = nil, noProxy: [String] = []) {
        self.http = http
        self.https = https
        self.noProxy = noProxy
    }

    /// Reads the usual variables (lower case first, as curl does), with explicit values winning.
    public static func fromEnvironment(_ environment: [String: String], http: String? = nil, https: String? = nil, noProxy: String? = nil) throws(IronicError) -> ProxySettings {
        func value(_ name: String) -> String? {
            let found = environment[name] ?? environment[name.uppercased()]
            return found.flatMap { $0.isEmpty ? nil : $0 }
        }
        return ProxySettings(
            http: try (http ?? value("http_proxy")).map(parseProxy),
            https: try (https ?? value("https_proxy")).map(parseProxy),
            noProxy: (noProxy ?? value("no_proxy") ?? "").split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty })
    }

    /// Parses `http://[user:pass@]host[:port]` (or a bare `host:port`).
    public static func parseProxy(_ text: String) throws(IronicError) -> Proxy {
        var rest = Substring(text)
        if let scheme = rest.firstRange(of: "://") { rest = rest[scheme.upperBound...] }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        var user: String? = nil
        var password: String? = nil
        if let at = rest.lastIndex(of: "@") {
            let info = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = info.firstIndex(of: ":") {
                user = PercentEncoding.decode(info[..<colon])
                password = PercentEncoding.decode(info[info.index(after: colon)...])
            } else {
                user = PercentEncoding.decode(info)
            }
        }
        var host = String(rest)
        var port = 80
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            host = String(rest[..<colon])
            guard let parsed = Int(rest[rest.index(after: colon)...]), (1...65535).contains(parsed) else {
                throw IronicError.invalidParameter("The proxy '\(ImageReference.redact(text))' has an invalid port.")
            }
            port = parsed
        }
        host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        guard !host.isEmpty else { throw IronicError.invalidParameter("The proxy '\(ImageReference.redact(text))' names no host.") }
        return Proxy(host: host, port: port, user: user, password: password)
    }

    /// The proxy to use for a URL, or nil to go directly.
    public func proxy(scheme: String, host: String, port: Int) -> Proxy? {
        let lowered = host.lowercased()
        for entry in noProxy {
            if entry == "*" { return nil }
            var name = Substring(entry)
            if let colon = name.lastIndex(of: ":"), let entryPort = Int(name[name.index(after: colon)...]) {
                guard entryPort == port else { continue }
                name = name[..<colon]
            }
            let domain = name.hasPrefix(".") ? name.dropFirst() : name
            if lowered == domain || lowered.hasSuffix("." + domain) { return nil }
        }
        return scheme == "https" ? https : http
    }
}
