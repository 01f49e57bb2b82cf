/// TLS settings, as oslo's `[oslo_messaging_rabbit] ssl_*` options give them.
public struct AMQPTLSConfiguration: Sendable, Hashable {
    /// A PEM file of certificate authorities to verify the broker against.
    public var caFile: String?
    /// A PEM client certificate, for brokers that ask for one.
    public var certificateFile: String?
    /// The client certificate's PEM private key.
    public var keyFile: String?
    /// Verify the broker's certificate chain.
    public var verifyPeer: Bool
    /// Verify that the broker's certificate names the host connected to (DNS names only, so use
    /// `localhost` rather than `127.0.0.1` with a certificate for localhost).
    public var verifyHostname: Bool

    /// Creates TLS settings; verification is on unless turned off.
    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, verifyPeer: Bool = true, verifyHostname: Bool = true) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.verifyPeer = verifyPeer
        self.verifyHostname = verifyHostname
    }
}

/// Everything an ``AMQPConnection`` needs to connect and stay connected.
public struct AMQPConfiguration: Sendable {
    /// Brokers to try, in turn.
    public var endpoints: [AMQPEndpoint]
    /// TLS settings for endpoints that use TLS.
    public var tls: AMQPTLSConfiguration
    /// The heartbeat to negotiate, in seconds (oslo's `heartbeat_timeout_threshold`, 60).
    public var heartbeatSeconds: Int
    /// The largest frame to negotiate (oslo/py-amqp use 131072).
    public var frameMax: Int
    /// How long a TCP connect, TLS handshake and AMQP login may take.
    public var connectTimeout: Duration
    /// How long a synchronous AMQP method (a declare, a consume) may wait for the broker.
    public var rpcTimeout: Duration
    /// Back-off between reconnection attempts.
    public var reconnect: AMQPReconnectPolicy
    /// Put the channel in confirm mode: every publish then waits for the broker's `basic.ack`.
    public var publisherConfirms: Bool
    /// A name for the connection, shown by the broker's management tools.
    public var connectionName: String
    /// The prefix of the connection's metrics (swift-metrics): `<prefix>_broker_reconnects_total`
    /// and `<prefix>_broker_connected`, both labelled with the connection's label (`connection`),
    /// the latter also with the broker (`node`, `host:port`).
    public var metricsPrefix: String

    /// Creates a configuration.
    public init(
        endpoints: [AMQPEndpoint],
        tls: AMQPTLSConfiguration = AMQPTLSConfiguration(),
        heartbeatSeconds: Int = 60,
        frameMax: Int = 131_072,
        connectTimeout: Duration = .seconds(10),
        rpcTimeout: Duration = .seconds(30),
        reconnect: AMQPReconnectPolicy = AMQPReconnectPolicy(),
        publisherConfirms: Bool = true,
        connectionName: String = "image-worker",
        metricsPrefix: String = "amqp"
    ) {
        self.endpoints = endpoints
        self.tls = tls
        self.heartbeatSeconds = heartbeatSeconds
        self.frameMax = frameMax
        self.connectTimeout = connectTimeout
        self.rpcTimeout = rpcTimeout
        self.reconnect = reconnect
        self.publisherConfirms = publisherConfirms
        self.connectionName = connectionName
        self.metricsPrefix = metricsPrefix
    }
}
