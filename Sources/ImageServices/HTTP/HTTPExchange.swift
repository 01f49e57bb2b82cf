import Primitives
import AsyncHTTPClient
import Foundation
import SystemSupport
import NIOCore
import NIOHTTP1

/// One HTTP request with its redirects followed by hand: at most `maximumRedirects` hops, only
/// to http and https (never `file://` or anything else), and credentials sent only to the host
/// they belong to (as Python's requests does).
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
        let maximum = transport.settings.maximumRedirects
        while true {
            var request = HTTPClientRequest(url: current.withoutUserInfo)
            request.method = method
            request.headers = headers
            request.headers.replaceOrAdd(name: "User-Agent", value: "image-worker")
            if let (user, password) = credentials(for: current) {
                let token = Data("\(user):\(password)".utf8).base64EncodedString()
                request.headers.replaceOrAdd(name: "Authorization", value: "Basic \(token)")
            }
            let answer = try await transport.execute(request, to: current, deadline: deadline, onQueued: onQueued)
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
            current = next
        }
    }

    /// Credentials go only to the host of the original reference (user-info, the every-server
    /// pair) or to the host a netrc entry names.
    private func credentials(for url: ParsedHTTPURL) -> (user: String, password: String)? {
        let original = try? ParsedHTTPURL(reference.original)
        let sameHost = original.map { $0.host == url.host && $0.port == url.port } ?? false
        if sameHost, let user = url.user ?? original?.user { return (user, url.password ?? original?.password ?? "") }
        if let entry = transport.settings.credentials.perHost?.credentials(for: url.host) { return entry }
        if sameHost, let pair = transport.settings.credentials.everyServer { return pair }
        return nil
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
        if hostPort.hasPrefix("["), let close = hostPort.firstIndex(of: "]") {
            let after = hostPort[hostPort.index(after: close)...]
            if after.hasPrefix(":"), let parsed = Int(after.dropFirst()) { port = parsed }
            hostPort = hostPort[...close]
        } else if let colon = hostPort.lastIndex(of: ":") {
            guard let parsed = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(parsed) else {
                throw IronicError(.invalidImageRef, "Invalid image href \(ImageReference.redact(text)): bad port.")
            }
            port = parsed
            hostPort = hostPort[..<colon]
        }
        guard !hostPort.isEmpty else { throw IronicError(.invalidImageRef, "Invalid image href \(ImageReference.redact(text)): no host.") }
        host = String(hostPort).lowercased()
        self.port = port
        pathAndQuery = (components.path.isEmpty ? "/" : components.path) + (components.query.map { "?" + $0 } ?? "")
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
