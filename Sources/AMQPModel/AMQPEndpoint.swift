/// One broker to connect to: where, as whom, which virtual host, and whether over TLS.
public struct AMQPEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String
    public var virtualHost: String
    public var useTLS: Bool

    /// Creates an endpoint.
    public init(host: String, port: Int = 5672, username: String = "guest", password: String = "guest", virtualHost: String = "/", useTLS: Bool = false) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.virtualHost = virtualHost
        self.useTLS = useTLS
    }

    /// `host:port` (an IPv6 address in brackets): which broker node, for a metric's label.
    public var node: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The endpoint as a URL without its password, safe to log.
    public var description: String {
        let scheme = useTLS ? "amqps" : "amqp"
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let vhost = virtualHost == "/" ? "" : virtualHost
        return "\(scheme)://\(username)@\(hostPart):\(port)/\(vhost)"
    }
}
