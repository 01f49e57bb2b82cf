import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

/// What the worker makes of the errors async-http-client and swift-nio throw: words for messages
/// (no URLs: the client's own errors carry none) and whether trying again may help.
///
/// Decided by type and case, never by matching an error's text. Transient: the network or the
/// server failed for now (timeouts, resets, refused or truncated connections, a pool that was
/// busy). Permanent: the request, the answer or the configuration is wrong and would be wrong
/// again (protocol violations, TLS refusals, bad URLs, size limits).
enum HTTPErrors {
    /// An error's verdict: transient or not, and why.
    struct Verdict: Equatable {
        var transient: Bool
        var reason: String

        static func transient(_ reason: String) -> Verdict { Verdict(transient: true, reason: reason) }
        static func permanent(_ reason: String) -> Verdict { Verdict(transient: false, reason: reason) }
    }

    static func describe(_ error: any Error) -> String { classify(error).reason }

    /// Whether no connection could be made (so the server never saw the request, and another
    /// address of the same host may be tried).
    static func isConnectFailure(_ error: any Error) -> Bool {
        switch error {
        case is NIOConnectionError: return true
        case let client as HTTPClientError: return client == .connectTimeout
        case let channel as ChannelError:
            if case .connectTimeout = channel { return true }
            return false
        case let io as IOError: return [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EADDRNOTAVAIL, ETIMEDOUT].contains(io.errnoCode)
        default: return false
        }
    }

    static func isTransient(_ error: any Error) -> Bool { classify(error).transient }

    /// The verdict on any error a request can throw.
    static func classify(_ error: any Error) -> Verdict {
        switch error {
        case let client as HTTPClientError: return classify(client)
        case let parser as HTTPParserError: return classify(parser)
        case let channel as ChannelError: return classify(channel)
        case let io as IOError: return classify(errno: io.errnoCode, "\(io)")
        case let connection as NIOConnectionError: return classify(connection)
        // A name that does not resolve may be a resolver's hiccup (NIO cannot tell EAI_AGAIN from
        // a name that does not exist): retried, a few times, as python-requests' callers do.
        case is SocketAddressError.UnknownHost: return .transient("the host name cannot be resolved")
        case let failure as HostResolver.Failure: return .transient(failure.reason)
        case let address as SocketAddressError: return .permanent("the server's address cannot be used (\(address))")
        case let ssl as NIOSSLError: return classify(ssl)
        case let ssl as any NIOSSLErrorDescribable: return .permanent(ssl.sslDescription)
        case is NIOTooManyBytesError: return .permanent("the answer is larger than allowed")
        case is CancellationError: return .permanent("cancelled")
        default: return .permanent("\(error)")
        }
    }

    /// Every `HTTPClientError` async-http-client 1.x defines.
    static func classify(_ error: HTTPClientError) -> Verdict {
        switch error {
        // The server or the network, for now.
        case .connectTimeout: return .transient("connection timed out")
        case .tlsHandshakeTimeout: return .transient("the TLS handshake timed out")
        case .socksHandshakeTimeout, .httpProxyHandshakeTimeout: return .transient("the proxy handshake timed out")
        case .readTimeout: return .transient("no data received within the stall timeout")
        case .writeTimeout: return .transient("the request could not be sent within the timeout")
        case .remoteConnectionClosed: return .transient("the server closed the connection")
        case .uncleanShutdown: return .transient("the TLS connection closed without a proper end")
        case .bodyLengthMismatch: return .transient("the body ended before its Content-Length")
        case .requestStreamCancelled: return .transient("the server stopped reading the request")
        case .getConnectionFromPoolTimeout: return .transient("no connection to the server became free in time")
        case .invalidProxyResponse: return .transient("the proxy could not reach the server")
        // Not a network failure: handled by the caller (the overall deadline, cancellation).
        case .deadlineExceeded: return .permanent("the download took longer than its deadline")
        case .cancelled: return .permanent("the request was cancelled")
        case .alreadyShutdown: return .permanent("the HTTP client is shut down (the worker is stopping)")
        // The request, the answer or the configuration is wrong.
        case .proxyAuthenticationRequired: return .permanent("the proxy wants credentials")
        case .invalidURL, .emptyHost, .emptyScheme, .missingSocketPath: return .permanent("the URL cannot be requested")
        case .redirectLimitReached, .redirectCycleDetected: return .permanent("too many redirects")
        case .identityCodingIncorrectlyPresent, .contentLengthMissing,
             .traceRequestWithBody, .writeAfterRequestSent:
            return .permanent("the request cannot be sent as it is (\(error))")
        case .invalidRedirectConfiguration, .invalidHTTPVersionConfiguration, .invalidDNSOverridesConfiguration,
             .invalidLocalAddress, .invalidProxyConfiguration:
            return .permanent("the HTTP client is misconfigured (\(error))")
        default:
            // unsupportedScheme, invalidHeaderFieldNames/Values, serverOfferedUnsupportedApplicationProtocol,
            // internalStateFailure: errors with values, all about the request or the client; and the
            // deprecated incompatibleHeaders, chunkedSpecifiedMultipleTimes and httpEndReceivedAfterHeadWith1xx,
            // no longer thrown.
            return .permanent("\(error)")
        }
    }

    /// swift-nio's HTTP/1 parser: a connection that closed mid-message is truncation (transient);
    /// everything else is a server that does not speak HTTP properly.
    static func classify(_ error: HTTPParserError) -> Verdict {
        switch error {
        case .invalidEOFState, .closedConnection: return .transient("the connection closed in the middle of the answer")
        default: return .permanent("the server's answer is not valid HTTP (\(error))")
        }
    }

    static func classify(_ error: ChannelError) -> Verdict {
        switch error {
        case .connectTimeout: return .transient("connection timed out")
        case .ioOnClosedChannel, .alreadyClosed, .outputClosed, .inputClosed, .eof: return .transient("the connection closed")
        case .writeHostUnreachable: return .transient("the host is unreachable")
        case .connectPending, .operationUnsupported, .writeMessageTooLarge, .unknownLocalAddress, .badMulticastGroupAddressFamily,
             .badInterfaceAddressFamily, .illegalMulticastAddress, .multicastNotSupported, .inappropriateOperationForState,
             .unremovableHandler:
            return .permanent("network channel error (\(error))")
        }
    }

    /// A failed system call on a socket.
    static func classify(errno code: Int32, _ text: String) -> Verdict {
        switch code {
        case ECONNREFUSED: return .transient("connection refused")
        case ECONNRESET, ECONNABORTED, EPIPE: return .transient("the connection was reset")
        case ETIMEDOUT: return .transient("connection timed out")
        case EHOSTUNREACH, ENETUNREACH, ENETDOWN, EHOSTDOWN: return .transient("the host is unreachable")
        case EAGAIN, EINTR, ENOBUFS, ENOMEM, EMFILE, ENFILE: return .transient("the system is short of resources (\(text))")
        default: return .permanent(text)
        }
    }

    /// Connecting failed: the name did not resolve (perhaps a resolver's hiccup), or the
    /// addresses refused or could not be reached: the server is down, for now.
    static func classify(_ error: NIOConnectionError) -> Verdict {
        if error.connectionErrors.isEmpty, error.dnsAError != nil || error.dnsAAAAError != nil {
            return .transient("the host name cannot be resolved")
        }
        let verdicts = error.connectionErrors.map { classify($0.error) }
        if let transient = verdicts.first(where: \.transient) { return transient }
        return verdicts.first ?? .transient("the connection failed")
    }

    static func classify(_ error: NIOSSLError) -> Verdict {
        switch error {
        case .uncleanShutdown: return .transient("the TLS connection closed without a proper end")
        case .handshakeFailed(let reason): return .permanent("TLS handshake failed: \(BoringSSLError.reasons(of: reason))")
        default: return .permanent("TLS: \(error)")
        }
    }
}

/// NIOSSL errors, described without pulling NIOSSL into every file.
protocol NIOSSLErrorDescribable: Error {
    var sslDescription: String { get }
}
