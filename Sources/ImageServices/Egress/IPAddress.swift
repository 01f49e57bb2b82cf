#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address. IPv4 addresses are kept as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so
/// that one network list covers both spellings of the same destination.
///
/// Hand-written: swift-nio's `SocketAddress` holds an address but offers no prefix matching, and
/// no listed package parses CIDR networks.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// The 16 bytes, network order.
    public let bytes: [UInt8]

    /// An address from 4 (IPv4) or 16 (IPv6) bytes in network order.
    public init?(bytes: [UInt8]) {
        switch bytes.count {
        case 4: self.init(mapped: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] + bytes)
        case 16: self.init(mapped: bytes)
        default: return nil
        }
    }

    /// An address from its 16 bytes (IPv4 already mapped).
    init(mapped bytes: [UInt8]) {
        precondition(bytes.count == 16, "an IP address is 16 bytes here")
        self.bytes = bytes
    }

    /// Parses a numeric address in its standard spelling (`192.0.2.1`, `2001:db8::1`), as
    /// `inet_pton` reads it. Names and other spellings of IPv4 (`2852039166`) are for
    /// ``HostResolver``, which reads them as the system's resolver does.
    public init?(_ text: String) {
        var v6 = in6_addr()
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(bytes: withUnsafeBytes(of: v4) { Array($0) })
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(bytes: withUnsafeBytes(of: v6) { Array($0) })
        } else {
            return nil
        }
    }

    /// Whether this is an IPv4 address (held IPv4-mapped).
    public var isIPv4: Bool { bytes.prefix(12) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] }

    /// The standard spelling (`192.0.2.1`, `2001:db8::1`).
    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        if isIPv4 {
            var v4 = in_addr()
            withUnsafeMutableBytes(of: &v4) { $0.copyBytes(from: bytes.suffix(4)) }
            _ = inet_ntop(AF_INET, &v4, &buffer, socklen_t(buffer.count))
        } else {
            var v6 = in6_addr()
            withUnsafeMutableBytes(of: &v6) { $0.copyBytes(from: bytes) }
            _ = inet_ntop(AF_INET6, &v6, &buffer, socklen_t(buffer.count))
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
