import Primitives
import AsyncHTTPClient
import Foundation
import SystemSupport
import NIOCore
import NIOHTTP1

/// One HTTP request with its redirects followed by hand: at most `maximumRedirects` hops, only
/// to http and https (never `file://` or anything else), each hop's destination checked by the
/// egress policy (§5.1) and the connection made to the address checked, and credentials sent
/// only where they belong:
/// - the caller's headers that carry credentials (`Authorization`, `X-Auth-Token`, `Cookie`,
///   `Proxy-Authorization`) only to the first request's origin (scheme, host and port);
/// - the reference's user-info, `[deploy] image_server_*` and netrc entries (the reference
///   host's `machine` entry, else `default`) only to the reference's own origin;
/// - nothing at all once a redirect went from https to http.
struct HTTPExchange {
    /// A response, and the URL it finally came from.
    struct Response {
        var response: HTTPClientResponse
        var url: ParsedHTTPURL
        /// The origin slot the response holds: released by the caller once done with the body.
        var slot: OriginConnectionSlots.Slot
        /// The absolute deadline the exchange ran under.
        var deadline: NIODeadline
    }

    /// Request headers that carry credentials: kept only for the first request's origin.
    static let credentialHeaders = ["Authorization", "X-Auth-Token", "Cookie", "Proxy-Authorization"]

    let transport: HTTPTransport
    /// The reference as the caller gave it, for messages.
    let reference: ImageReference

    /// Sends `method` to `url` and follows redirects. Each hop waits for a slot of its origin
    /// first (`onQueued` is called when it has to); `deadline` counts from the first hop's slot.
    func send(_ method: HTTPMethod, _ url: ParsedHTTPURL, headers: HTTPHeaders = [:], deadline: RequestDeadline,
              onQueued: () -> Void = {}) async throws -> Response {
        var current = url
        var deadline = deadline
        var hops = 0
        var downgraded = false
        let maximum = transport.settings.maximumRedirects
        while true {
            var request = HTTPClientRequest(url: current.withoutUserInfo)
            request.method = method
            request.headers = headers
            if current.origin != url.origin || downgraded {
                for name in Self.credentialHeaders { request.headers.remove(name: name) }
            }
            request.headers.replaceOrAdd(name: "User-Agent", value: "image-worker")
            if !downgraded, let (user, password) = credentials(for: current) {
                let token = Data("\(user):\(password)".utf8).base64EncodedString()
                request.headers.replaceOrAdd(name: "Authorization", value: "Basic \(token)")
            }
            let addresses = try await permittedAddresses(current)
            let answer = try await transport.execute(request, to: current, pinnedTo: addresses, deadline: deadline, onQueued: onQueued)
            let response = answer.response
            deadline = .at(answer.deadline)
            guard [301, 302, 303, 307, 308].contains(response.status.code), let location = response.headers.first(name: "Location") else {
                return Response(response: response, url: current, slot: answer.slot, deadline: answer.deadline)
            }
            answer.slot.release()  // the next hop takes a slot of its own origin
            hops += 1
            guard hops <= maximum else {
                throw IronicError.validationFailed(reference.redacted, "more than \(maximum) redirects.")
            }
            guard let next = current.resolving(location) else {
                throw IronicError.validationFailed(reference.redacted, "a redirect to '\(ImageReference.redact(location))' cannot be followed.")
            }
            guard next.scheme == "http" || next.scheme == "https" else {
                throw IronicError.validationFailed(reference.redacted, "a redirect to a \(next.scheme):// URL is not allowed (only http and https).")
            }
            if current.scheme == "https" && next.scheme == "http" { downgraded = true }
            current = next
        }
    }

    /// The addresses a hop may connect to, checked by the egress policy; nil when the hop is not
    /// checked (no policy for this transport, or the hop goes through a proxy, which decides).
    private func permittedAddresses(_ url: ParsedHTTPURL) async throws -> [IPAddress]? {
        guard let policy = transport.settings.egress, !transport.usesProxy(url) else { return nil }
        do {
            return try await policy.destinations(host: url.host, port: url.port, lookupTimeout: transport.settings.connectTimeout)
        } catch .notAllowed {
            // The same words whether or not anything listens there, and no connection attempted.
            throw IronicError.validationFailed(reference.redacted, "\(url.origin) is not an allowed destination.")
        } catch .unresolvable(let reason) {
            throw HostResolver.Failure(host: url.host, reason: reason)
        } catch .cancelled {
            throw CancellationError()
        }
    }

    /// Basic-auth credentials for a hop (see the type's comment for where each kind may go).
    private func credentials(for url: ParsedHTTPURL) -> (user: String, password: String)? {
        guard let original = try? ParsedHTTPURL(reference.original), original.origin == url.origin else { return nil }
        if let user = url.user ?? original.user { return (user, url.password ?? original.password ?? "") }
        let configured = transport.settings.credentials
        return configured.perHost?.credentials(forMachine: url.host) ?? configured.perHost?.defaultCredentials ?? configured.everyServer
    }
}

/// An http(s) URL, split into what requests need.
struct ParsedHTTPURL: Sendable, Hashable, CustomStringConvertible {
    var scheme: String
    var user: String?
    var password: String?
    var host: String
    var port: Int
    /// Path and query, as written.
    var pathAndQuery: String

    /// Parses an absolute http(s) URL.
    init(_ text: String) throws(IronicError) {
        guard let components = URLComponentsLite(text), let authority = components.authority, ["http", "https"].contains(components.scheme) else {
            throw IronicError(.invalidImageRef, "Invalid image href \(ImageReference.redact(text)).")
        }
        scheme = components.scheme
        if let info = authority.userInfo {
            let parts = info.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            user = PercentEncoding.decode(parts[0])
            password = parts.count > 1 ? PercentEncoding.decode(parts[1]) : nil
        }
        var hostPort = Substring(authority.host)
        var port = scheme == "https" ? 443 : 80
        func parsePort(_ digits: Substring) throws(IronicError) -> Int {
            guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let parsed = Int(digits), (1...65535).contains(parsed) else {
                throw IronicError(.invalidImageRef, "Invalid image href \(ImageReference.redact(text)): bad port.")
            }
            return parsed
        }
        if hostPort.hasPrefix("["), let close = hostPort.firstIndex(of: "]") {
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw IronicError(.invalidImageRef, "Invalid image href \(ImageReference.redact(text)): bad port.") }
                port = try parsePort(after.dropFirst())
            }
            hostPort = hostPort[...close]
        } else if let colon = hostPort.lastIndex(of: ":") {
            port = try parsePort(hostPort[hostPort.index(after: colon)...])
            hostPort = hostPort[..<colon]
        }
        guard !hostPort.isEmpty else { throw IronicError(.invalidImageRef, "Invalid image href \(ImageReference.redact(text)): no host.") }
        // Only plain host names (letters, digits, '-', '.', '_') or a bracketed IPv6 literal: the
        // host checked by the egress policy must be, byte for byte, the one the HTTP client
        // connects to, which a name that URL parsing rewrites (IDNA, percent-decoding) is not.
        guard Self.isPlainHost(hostPort) else {
            throw IronicError(.invalidImageRef, "Invalid image href \(ImageReference.redact(text)): the host must be an ASCII name or an IP address.")
        }
        host = String(hostPort).lowercased()
        self.port = port
        pathAndQuery = (components.path.isEmpty ? "/" : components.path) + (components.query.map { "?" + $0 } ?? "")
    }

    /// `host` is letters, digits, `-`, `.` and `_`, or `[` IPv6 literal (hex, `:`, `.`, a `%25` zone) `]`.
    static func isPlainHost(_ host: Substring) -> Bool {
        func isNameByte(_ byte: UInt8) -> Bool {
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x2D || byte == 0x2E || byte == 0x5F
        }
        if host.hasPrefix("[") {
            guard host.hasSuffix("]"), host.count > 2 else { return false }
            let inner = host.dropFirst().dropLast()
            let parts = inner.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts[0].utf8.allSatisfy({ $0 == 0x3A || $0 == 0x2E || ($0 < 0x80 && Character(Unicode.Scalar($0)).isHexDigit) }) else { return false }
            guard parts.count == 2 else { return true }
            return parts[1].hasPrefix("25") && parts[1].dropFirst(2).utf8.allSatisfy(isNameByte) && parts[1].count > 2
        }
        return host.utf8.allSatisfy(isNameByte)
    }

    private init(scheme: String, host: String, port: Int, pathAndQuery: String) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.pathAndQuery = pathAndQuery
    }

    private var defaultPort: Int { scheme == "https" ? 443 : 80 }

    /// `scheme://host:port`: what connection slots are counted by.
    var origin: String { "\(scheme)://\(host):\(port)" }

    /// The URL without credentials (what is requested and logged).
    var withoutUserInfo: String {
        "\(scheme)://\(host)\(port == defaultPort ? "" : ":\(port)")\(pathAndQuery)"
    }

    /// The path without the query.
    var path: String { String(pathAndQuery.prefix { $0 != "?" }) }

    /// The last path component, percent-decoded (a checksum file names images by it).
    var fileName: String {
        let last = path.split(separator: "/").last.map(String.init) ?? ""
        return PercentEncoding.decode(last) ?? last
    }

    /// A `Location` header resolved against this URL (absolute, scheme-relative, absolute-path or
    /// relative); nil when it cannot be a URL.
    func resolving(_ location: String) -> ParsedHTTPURL? {
        if let scheme = ImageReference.scheme(of: location), location.dropFirst(scheme.count).hasPrefix("://") {
            if scheme == "http" || scheme == "https" { return try? ParsedHTTPURL(location) }
            return ParsedHTTPURL(scheme: scheme, host: "", port: 0, pathAndQuery: "")
        }
        if location.hasPrefix("//") { return try? ParsedHTTPURL("\(scheme):\(location)") }
        if location.hasPrefix("/") { return ParsedHTTPURL(scheme: scheme, host: host, port: port, pathAndQuery: location) }
        let directory = path.hasSuffix("/") ? path : String(path[...(path.lastIndex(of: "/") ?? path.startIndex)])
        return ParsedHTTPURL(scheme: scheme, host: host, port: port, pathAndQuery: directory + location)
    }

    var description: String { withoutUserInfo }
}
