import Primitives
import SystemSupport

/// A reference to an image as a conductor gives it (`image_source`, `kernel`, `ramdisk`): a bare
/// Glance UUID, or a URL whose scheme picks the image service.
public struct ImageReference: Sendable, Hashable, CustomStringConvertible {
    /// The reference exactly as given; it may hold credentials, so it is never logged or echoed.
    public let original: String
    /// The lower-cased scheme; `glance` for a bare UUID.
    public let scheme: String
    /// The reference without credentials: user-info removed, secret-looking query values `***`.
    public let redacted: String

    /// The longest reference accepted, in bytes (signed object-store URLs stay well below it).
    public static let maximumLength = 8192

    /// Parses a reference. A string without a scheme must be a UUID (Ironic: "Scheme-less image
    /// href is not a UUID.").
    public init(_ text: String) throws(IronicError) {
        guard !text.isEmpty else { throw IronicError.missingParameter("An image reference is empty.") }
        guard text.utf8.count <= Self.maximumLength else {
            // Not even a prefix is echoed: it could end inside credentials.
            throw IronicError(.invalidImageRef, "Invalid image href: a \(Self.scheme(of: String(text.prefix(32))) ?? "scheme-less") reference of "
                              + "\(text.utf8.count) bytes; at most \(Self.maximumLength) are accepted.")
        }
        guard !text.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
            throw IronicError(.invalidImageRef, "Invalid image href \(Self.redact(text)): it contains control characters.")
        }
        original = text
        if let scheme = Self.scheme(of: text) {
            self.scheme = scheme
            redacted = Self.redact(text)
        } else if UUIDText.isUUID(text) {
            scheme = "glance"
            redacted = text
        } else {
            throw IronicError.validationFailed(Self.redact(text), "Scheme-less image href is not a UUID.")
        }
    }

    /// The URL scheme, per RFC 3986 (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`), lower-cased.
    static func scheme(of text: String) -> String? {
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let candidate = text[..<colon].unicodeScalars
        guard let first = candidate.first, first.isASCII, first.properties.isAlphabetic else { return nil }
        for scalar in candidate {
            let allowed = scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || "+-.".unicodeScalars.contains(scalar))
            guard allowed else { return nil }
        }
        return String(text[..<colon]).lowercased()
    }

    /// The parts of a URL reference: `scheme://[userinfo@]authority/path?query#fragment`.
    public var urlComponents: URLComponentsLite? {
        URLComponentsLite(original)
    }

    public var description: String { redacted }

    /// Query parameter names whose values are secrets (signed URLs, tokens, keys, passwords):
    /// a name containing any of these, in any case, or starting `x-amz-`.
    static let secretParameterMarkers = ["sig", "token", "key", "secret", "pass", "pwd", "auth", "credential"]

    /// `text` without credentials: user-info removed, secret-looking query values `***`, a
    /// fragment `***` (it is never sent to a server, so it means nothing to a fetch but may carry
    /// a token).
    ///
    /// A credential can also hide where the URL parser does not look for one (see
    /// ``credentialEnd(in:)``); then everything up to the last `@` is masked.
    public static func redact(_ text: String) -> String {
        let components = URLComponentsLite(text)
        if let at = credentialEnd(in: text, components) {
            // The scheme is kept only when an authority (`//`) follows it.
            let kept = components.flatMap { $0.authority == nil ? nil : $0.scheme }
            // The rest holds no `@`: redacted as a reference to the same scheme, minus its prefix.
            let prefix = (kept ?? "x") + "://"
            let rest = redact(prefix + text[text.index(after: at)...]).dropFirst(prefix.count)
            return (kept.map { $0 + "://" } ?? "") + "***@" + rest
        }
        guard let components else { return text }
        var result = components.scheme + ":"
        if let authority = components.authority {
            result += "//" + authority.host
        }
        result += components.path
        if let query = components.query {
            let items = query.split(separator: "&", omittingEmptySubsequences: false).map { item -> String in
                let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = String(parts[0])
                let lowered = name.lowercased()
                let secret = lowered.hasPrefix("x-amz-") || secretParameterMarkers.contains { lowered.contains($0) }
                guard parts.count == 2 else { return maskNestedCredential(String(item)) }
                if secret { return "\(name)=***" }
                return "\(name)=\(maskNestedCredential(String(parts[1])))"
            }
            result += "?" + items.joined(separator: "&")
        }
        if let fragment = components.fragment { result += fragment.isEmpty ? "#" : "#***" }
        return result
    }

    /// A URL inside a query item or value (`?next=https://user:pass@host/`, `?next=//u:p@host/`)
    /// with everything from its authority's start to its last `@` masked: `https://***@host/`.
    /// One level, no recursion, so a hostile query costs linear time (found by the
    /// image-reference fuzz harness; a percent-encoded URL is not recognised).
    static func maskNestedCredential(_ value: String) -> String {
        guard let at = value.lastIndex(of: "@") else { return value }
        var index = value.startIndex
        while index < at {
            let next = value.index(after: index)
            if value[index] == "/", next < at, value[next] == "/" {
                return value[...next] + "***" + value[at...]
            }
            index = next
        }
        return value
    }

    /// The last `@` of `text` when it ends a credential the URL parser would not remove:
    /// - text without a scheme (`user:pass@host/…`, `user@host`);
    /// - `scheme:rest` without `//` whose rest is not a path (`user:pass@host/…` reads as the
    ///   scheme `user`; `file:/srv/disk@2.img` is a path);
    /// - an authority without user-info followed by an `@` before what reads as `host[:port]`: a
    ///   password or token with `/`, `?` or `#` in it ends the authority early
    ///   (`http://svc:Ab3/xyz@host/…`, `http://dG9r/ZW4=@host/…`). An `@` in a query value
    ///   (`?email=a@b`) is the value's, and an OCI digest (`repo@sha256:…`) is no host. A path
    ///   with an `@` before a host-like name (`/v1@2x.img`) is masked too: the text cannot tell
    ///   it from a token with a `/`, and a reference must never show a credential.
    static func credentialEnd(in text: String, _ components: URLComponentsLite?) -> String.Index? {
        guard let at = text.lastIndex(of: "@") else { return nil }
        guard let components else { return at }
        guard let authority = components.authority else {
            let rest = text[text.index(after: text.firstIndex(of: ":")!)...]
            return rest.hasPrefix("/") ? nil : at
        }
        guard authority.userInfo == nil else { return nil }  // the parser removes it
        let fragmentStart = text.firstIndex(of: "#")
        if let queryStart = text[..<(fragmentStart ?? text.endIndex)].firstIndex(of: "?"), at > queryStart, fragmentStart.map({ at < $0 }) ?? true {
            let item = text[text.index(after: queryStart)..<at].split(separator: "&", omittingEmptySubsequences: false).last ?? ""
            if item.contains("=") { return nil }
        }
        let host = text[text.index(after: at)...].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        return !host.isEmpty && isHostAndPort(String(host)) ? at : nil
    }

    /// Whether `authority` (without user-info) is `host[:port]`: a registered name or an IPv4
    /// address, or an IPv6 literal in brackets (a zone id after `%25` included), then digits
    /// after a `:`.
    static func isHostAndPort(_ authority: String) -> Bool {
        var host = Substring(authority)
        var port: Substring = ""
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            let after = host[host.index(after: close)...]
            guard after.isEmpty || after.hasPrefix(":") else { return false }
            port = after.dropFirst()
            host = host[host.index(after: host.startIndex)..<close]
            guard host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ":.%-_~".contains($0)) }) else { return false }
        } else {
            if let colon = host.firstIndex(of: ":") {
                port = host[host.index(after: colon)...]
                host = host[..<colon]
            }
            let allowed = "-._~%!$&'()*+,;="
            guard host.unicodeScalars.allSatisfy({ $0.properties.isAlphabetic || ("0"..."9").contains($0) || allowed.unicodeScalars.contains($0) }) else { return false }
        }
        return port.allSatisfy { $0.isASCII && $0.isNumber }
    }
}

/// The pieces of a URL, split without interpretation (no percent-decoding, no normalisation).
public struct URLComponentsLite: Sendable, Hashable {
    /// `user[:password]@host[:port]`, split.
    public struct Authority: Sendable, Hashable {
        public var userInfo: String?
        /// `host[:port]`, without user-info.
        public var host: String
    }

    public var scheme: String
    public var authority: Authority?
    public var path: String
    public var query: String?
    public var fragment: String?

    /// Splits `text`; nil when it has no scheme.
    public init?(_ text: String) {
        guard let scheme = ImageReference.scheme(of: text) else { return nil }
        self.scheme = scheme
        var rest = Substring(text)[text.index(after: text.firstIndex(of: ":")!)...]
        if let hash = rest.firstIndex(of: "#") {
            fragment = String(rest[rest.index(after: hash)...])
            rest = rest[..<hash]
        }
        if let question = rest.firstIndex(of: "?") {
            query = String(rest[rest.index(after: question)...])
            rest = rest[..<question]
        }
        if rest.hasPrefix("//") {
            rest = rest.dropFirst(2)
            let end = rest.firstIndex(of: "/") ?? rest.endIndex
            let authorityText = rest[..<end]
            if let at = authorityText.lastIndex(of: "@") {
                authority = Authority(userInfo: String(authorityText[..<at]), host: String(authorityText[authorityText.index(after: at)...]))
            } else {
                authority = Authority(userInfo: nil, host: String(authorityText))
            }
            rest = rest[end...]
        }
        path = String(rest)
    }
}
