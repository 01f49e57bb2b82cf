#if canImport(Glibc)
import Glibc
#endif

/// The machine's fully qualified name, as Python's `socket.getfqdn()` gives Ironic its default `host`.
enum HostName {
    static func fullyQualified() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let short = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var hints = addrinfo()
        hints.ai_flags = AI_CANONNAME
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(short, nil, &hints, &result) == 0, let first = result else { return short }
        defer { freeaddrinfo(result) }
        guard let canonical = first.pointee.ai_canonname else { return short }
        let name = String(cString: canonical)
        return name.isEmpty ? short : name
    }
}

/// This process's id, for connection names.
enum ProcessIdentity {
    static var current: Int32 { getpid() }
}

/// File checks for configuration.
enum FileAccess {
    static func isReadable(_ path: String) -> Bool {
        access(path, R_OK) == 0
    }
}

/// Path shape checks for configuration.
enum FilePathNormalisation {
    /// No `.`, `..` or empty components (a single trailing slash aside).
    static func isNormalised(_ path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        if path == "/" { return true }
        return parts.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }
}
