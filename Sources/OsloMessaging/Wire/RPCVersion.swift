/// A `"major.minor"` API version, as oslo.messaging targets carry them.
public struct RPCVersion: Sendable, Hashable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    /// Creates a version.
    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// Parses `"1.0"` (a bare `"1"` means `"1.0"`, as oslo reads it).
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let major = Int(parts[0]), major >= 0 else { return nil }
        let minor = parts.count == 2 ? Int(parts[1]) : 0
        guard let minor, minor >= 0 else { return nil }
        self.init(major: major, minor: minor)
    }

    /// Whether an endpoint at this version serves a request for `requested`: same major, and the
    /// requested minor not above ours (oslo's `version_is_compatible`).
    public func serves(_ requested: RPCVersion) -> Bool {
        requested.major == major && requested.minor <= minor
    }

    public var description: String { "\(major).\(minor)" }
}
