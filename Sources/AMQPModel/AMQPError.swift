/// An error from the AMQP layer: a stable ``Code``, a message, and the AMQP reply code when the
/// broker closed the channel or the connection (406 PRECONDITION_FAILED, 404 NOT_FOUND, …).
///
/// The message never carries credentials: endpoints are described without their password.
public struct AMQPError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate let name: String
        /// A TCP or TLS connection, the AMQP handshake or the login failed.
        public static let connectionFailed = Code(name: "connectionFailed")
        /// An established connection broke (socket error, missed heartbeats, broker went away).
        public static let connectionLost = Code(name: "connectionLost")
        /// The broker closed the channel or the connection (see ``AMQPError/replyCode``).
        public static let brokerClosed = Code(name: "brokerClosed")
        /// The broker refused a published message (`basic.nack`), or returned one it could not route.
        public static let publishNacked = Code(name: "publishNacked")
        /// The connection was closed by its owner; no more commands are accepted.
        public static let closed = Code(name: "closed")
        /// A value given to the AMQP layer cannot be used (a malformed transport URL, …).
        public static let invalidArgument = Code(name: "invalidArgument")
        public var description: String { name }
    }

    /// What kind of failure this is.
    public var code: Code
    /// A human-readable account of what failed.
    public var message: String
    /// The AMQP reply code the broker sent with `channel.close` or `connection.close`, if any.
    public var replyCode: UInt16?
    /// librabbitmq's status code (`amqp_status_enum`), when the failure came from the library.
    public var libraryStatus: Int32?

    /// Creates an error.
    public init(_ code: Code, _ message: String, replyCode: UInt16? = nil, libraryStatus: Int32? = nil) {
        self.code = code
        self.message = message
        self.replyCode = replyCode
        self.libraryStatus = libraryStatus
    }

    /// AMQP reply code 406: a declaration with other flags than the existing entity.
    public static let preconditionFailed: UInt16 = 406
    /// AMQP reply code 404: no such queue or exchange.
    public static let notFound: UInt16 = 404
    /// AMQP reply code 403: access refused.
    public static let accessRefused: UInt16 = 403

    public var description: String {
        var text = "AMQP \(code): \(message)"
        if let replyCode { text += " (reply code \(replyCode))" }
        return text
    }
}
