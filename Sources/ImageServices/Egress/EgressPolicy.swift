/// Where the worker may connect for image data (`../shared/spec/wire-contract.md` §5.1): every
/// http(s) connection made for a reference (the image, kernel, ramdisk, checksum files, each
/// redirect hop) is checked after name resolution, and goes to the address that was checked.
///
/// A host is refused when any of its addresses is refused (the system's resolver decides which
/// one a client would pick, so every one must pass), or when its port is. Operator-configured
/// endpoints (Glance, Keystone, proxies) are not checked.
public struct EgressPolicy: Sendable, Hashable {
    /// Refused destinations (`[image_worker] disallowed_networks`).
    public var disallowedNetworks: [IPNetwork]
    /// When set, the only networks allowed (`[image_worker] allowed_networks`).
    public var allowedNetworks: [IPNetwork]?
    /// Refused ports (`[image_worker] disallowed_ports`).
    public var disallowedPorts: Set<Int>
    /// When set, the only ports allowed (`[image_worker] allowed_ports`).
    public var allowedPorts: Set<Int>?

    /// The contract's default refused networks: loopback, link-local and the metadata services,
    /// unspecified, multicast.
    public static let defaultDisallowedNetworks = [
        "127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "::/128", "224.0.0.0/4", "ff00::/8", "fd00:ec2::254/128",
    ]

    /// Creates a policy; the defaults are the contract's.
    public init(disallowedNetworks: [IPNetwork] = Self.defaultDisallowedNetworks.compactMap(IPNetwork.init),
                allowedNetworks: [IPNetwork]? = nil, disallowedPorts: Set<Int> = [], allowedPorts: Set<Int>? = nil) {
        self.disallowedNetworks = disallowedNetworks
        self.allowedNetworks = allowedNetworks
        self.disallowedPorts = disallowedPorts
        self.allowedPorts = allowedPorts
    }

    /// Why a destination was not allowed.
    public enum Refusal: Error, Sendable, Equatable {
        /// The port or an address is refused by the policy.
        case notAllowed
        /// The name did not resolve (`reason` says how): nothing to check, nothing to connect to.
        case unresolvable(reason: String)
        /// The caller was cancelled while the name was being looked up.
        case cancelled
    }

    /// Whether the policy lets connections go to `port`.
    public func permits(port: Int) -> Bool {
        !disallowedPorts.contains(port) && (allowedPorts?.contains(port) ?? true)
    }

    /// Whether the policy lets connections go to `address`.
    public func permits(_ address: IPAddress) -> Bool {
        if disallowedNetworks.contains(where: { $0.contains(address) }) { return false }
        guard let allowedNetworks else { return true }
        return allowedNetworks.contains { $0.contains(address) }
    }

    /// Checks `host:port` and returns the addresses to connect to, in the resolver's order (the
    /// next one is tried when connecting to one fails). The port is checked before the name is
    /// looked up, so a refused port costs no lookup.
    /// The lookup waits at most `lookupTimeout`, and ends when the caller is cancelled
    /// (``Refusal/cancelled``).
    public func destinations(host: String, port: Int, lookupTimeout: Duration = .seconds(60)) async throws(Refusal) -> [IPAddress] {
        guard permits(port: port) else { throw .notAllowed }
        // An address in its standard spelling needs no lookup (nor a thread hop for one).
        if let literal = IPAddress(HostResolver.unbracketed(host)) {
            guard permits(literal) else { throw .notAllowed }
            return [literal]
        }
        let addresses: [IPAddress]
        do {
            addresses = try await HostResolver.addresses(of: host, timeout: lookupTimeout)
        } catch let failure as HostResolver.Failure {
            throw .unresolvable(reason: failure.description)
        } catch is CancellationError {
            throw .cancelled
        } catch {
            throw .unresolvable(reason: "the host name cannot be resolved (\(error))")
        }
        guard !addresses.isEmpty, addresses.allSatisfy(permits) else { throw .notAllowed }
        return addresses
    }
}
