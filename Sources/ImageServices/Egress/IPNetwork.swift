/// An IP network in CIDR notation (`169.254.0.0/16`, `fe80::/10`); a bare address is a network of
/// one. IPv4 networks match IPv4-mapped IPv6 addresses too (see ``IPAddress``).
public struct IPNetwork: Sendable, Hashable, CustomStringConvertible {
    /// The network's first address.
    public let address: IPAddress
    /// The prefix length over the 128 bits of the (mapped) address.
    public let prefixLength: Int
    public let description: String

    /// Parses `address[/prefix]`; nil when either part is malformed.
    public init?(_ text: String) {
        let trimmed = text.trimmingWhitespace
        let parts = trimmed.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else { return nil }
        // The width is the spelling's: `::ffff:169.254.169.254/128` is an IPv6 network.
        let width = parts[0].contains(":") ? 128 : 32
        var length = width
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...width).contains(parsed), parts[1].allSatisfy(\.isASCII) else { return nil }
            length = parsed
        }
        prefixLength = length + (128 - width)
        // The network's first address: host bits cleared (`10.1.2.3/8` is `10.0.0.0/8`).
        self.address = IPAddress(mapped: Self.masked(address.bytes, prefixLength))
        description = trimmed
    }

    /// Whether `candidate` lies in this network.
    public func contains(_ candidate: IPAddress) -> Bool {
        Self.masked(candidate.bytes, prefixLength) == address.bytes
    }

    private static func masked(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let bits = min(8, max(0, length - index * 8))
            return bits == 8 ? byte : byte & ~(UInt8.max >> bits)
        }
    }
}

private extension String {
    var trimmingWhitespace: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
