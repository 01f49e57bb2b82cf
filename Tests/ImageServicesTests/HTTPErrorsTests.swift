import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Testing
@testable import ImageServices

#if canImport(Glibc)
import Glibc
#endif

/// Every error async-http-client and swift-nio can throw at a download, with its verdict: a
/// transient one is retried, a permanent one ends the task.
private let transientErrors: [(any Error & Sendable, String)] = [
        (HTTPClientError.connectTimeout, "connectTimeout"),
        (HTTPClientError.tlsHandshakeTimeout, "tlsHandshakeTimeout"),
        (HTTPClientError.socksHandshakeTimeout, "socksHandshakeTimeout"),
        (HTTPClientError.httpProxyHandshakeTimeout, "httpProxyHandshakeTimeout"),
        (HTTPClientError.readTimeout, "readTimeout"),
        (HTTPClientError.writeTimeout, "writeTimeout"),
        (HTTPClientError.remoteConnectionClosed, "remoteConnectionClosed"),
        (HTTPClientError.uncleanShutdown, "uncleanShutdown"),
        (HTTPClientError.bodyLengthMismatch, "bodyLengthMismatch"),
        (HTTPClientError.requestStreamCancelled, "requestStreamCancelled"),
        (HTTPClientError.getConnectionFromPoolTimeout, "getConnectionFromPoolTimeout (the issue's case: its text says 'Connection')"),
        (HTTPClientError.invalidProxyResponse, "invalidProxyResponse"),
        (HTTPParserError.invalidEOFState, "HTTPParserError.invalidEOFState"),
        (HTTPParserError.closedConnection, "HTTPParserError.closedConnection"),
        (ChannelError.connectTimeout(.seconds(1)), "ChannelError.connectTimeout"),
        (ChannelError.ioOnClosedChannel, "ChannelError.ioOnClosedChannel"),
        (ChannelError.alreadyClosed, "ChannelError.alreadyClosed"),
        (ChannelError.outputClosed, "ChannelError.outputClosed"),
        (ChannelError.inputClosed, "ChannelError.inputClosed"),
        (ChannelError.eof, "ChannelError.eof"),
        (ChannelError.writeHostUnreachable, "ChannelError.writeHostUnreachable"),
        (IOError(errnoCode: ECONNREFUSED, reason: "connect"), "ECONNREFUSED"),
        (IOError(errnoCode: ECONNRESET, reason: "read"), "ECONNRESET"),
        (IOError(errnoCode: ECONNABORTED, reason: "read"), "ECONNABORTED"),
        (IOError(errnoCode: EPIPE, reason: "write"), "EPIPE"),
        (IOError(errnoCode: ETIMEDOUT, reason: "read"), "ETIMEDOUT"),
        (IOError(errnoCode: EHOSTUNREACH, reason: "connect"), "EHOSTUNREACH"),
        (IOError(errnoCode: ENETUNREACH, reason: "connect"), "ENETUNREACH"),
        (IOError(errnoCode: EMFILE, reason: "socket"), "EMFILE"),
        (NIOSSLError.uncleanShutdown, "NIOSSLError.uncleanShutdown"),
    ]

private let permanentErrors: [(any Error & Sendable, String)] = [
        (HTTPClientError.deadlineExceeded, "deadlineExceeded (the caller reports the overall timeout)"),
        (HTTPClientError.cancelled, "cancelled"),
        (HTTPClientError.alreadyShutdown, "alreadyShutdown"),
        (HTTPClientError.proxyAuthenticationRequired, "proxyAuthenticationRequired"),
        (HTTPClientError.invalidURL, "invalidURL"),
        (HTTPClientError.emptyHost, "emptyHost"),
        (HTTPClientError.emptyScheme, "emptyScheme"),
        (HTTPClientError.missingSocketPath, "missingSocketPath"),
        (HTTPClientError.redirectLimitReached, "redirectLimitReached"),
        (HTTPClientError.redirectCycleDetected, "redirectCycleDetected"),
        (HTTPClientError.identityCodingIncorrectlyPresent, "identityCodingIncorrectlyPresent"),
        (HTTPClientError.contentLengthMissing, "contentLengthMissing"),
        (HTTPClientError.traceRequestWithBody, "traceRequestWithBody"),
        (HTTPClientError.writeAfterRequestSent, "writeAfterRequestSent"),
        (HTTPClientError.invalidRedirectConfiguration, "invalidRedirectConfiguration"),
        (HTTPClientError.invalidHTTPVersionConfiguration, "invalidHTTPVersionConfiguration"),
        (HTTPClientError.invalidDNSOverridesConfiguration, "invalidDNSOverridesConfiguration"),
        (HTTPClientError.invalidLocalAddress, "invalidLocalAddress"),
        (HTTPClientError.invalidProxyConfiguration, "invalidProxyConfiguration"),
        (HTTPClientError.unsupportedScheme("ftp"), "unsupportedScheme"),
        (HTTPClientError.invalidHeaderFieldNames(["a b"]), "invalidHeaderFieldNames"),
        (HTTPClientError.invalidHeaderFieldValues(["\n"]), "invalidHeaderFieldValues"),
        (HTTPClientError.serverOfferedUnsupportedApplicationProtocol("h3"), "serverOfferedUnsupportedApplicationProtocol"),
        (HTTPParserError.invalidStatus, "HTTPParserError.invalidStatus"),
        (HTTPParserError.headerOverflow, "HTTPParserError.headerOverflow"),
        (HTTPParserError.invalidChunkSize, "HTTPParserError.invalidChunkSize"),
        (ChannelError.operationUnsupported, "ChannelError.operationUnsupported"),
        (ChannelError.inappropriateOperationForState, "ChannelError.inappropriateOperationForState"),
        (IOError(errnoCode: EACCES, reason: "connect"), "EACCES"),
        (IOError(errnoCode: EINVAL, reason: "connect"), "EINVAL"),
        (SocketAddressError.unsupported, "SocketAddressError.unsupported"),
        (NIOSSLError.failedToLoadCertificate, "NIOSSLError.failedToLoadCertificate"),
        (NIOSSLExtraError.failedToValidateHostname, "NIOSSLExtraError.failedToValidateHostname"),
        (NIOTooManyBytesError(maxBytes: 10), "NIOTooManyBytesError"),
    ]

@Suite("http errors are classified by type")
struct HTTPErrorsTests {
    @Test("transient errors are retried", arguments: transientErrors.indices)
    func transient(_ index: Int) {
        let (error, name) = transientErrors[index]
        let verdict = HTTPErrors.classify(error)
        #expect(verdict.transient, "\(name): \(verdict.reason)")
        #expect(!verdict.reason.isEmpty)
    }

    @Test("permanent errors are not", arguments: permanentErrors.indices)
    func permanent(_ index: Int) {
        let (error, name) = permanentErrors[index]
        let verdict = HTTPErrors.classify(error)
        #expect(!verdict.transient, "\(name): \(verdict.reason)")
        #expect(!verdict.reason.isEmpty)
    }

    @Test("a refused connection, as async-http-client really reports it, is transient")
    func refusedConnection() async throws {
        let transport = try HTTPTransport(settings: HTTPClientSettings(connectTimeout: .seconds(5)))
        let error = await #expect(throws: (any Error).self) {
            _ = try await transport.execute(HTTPClientRequest(url: "http://127.0.0.1:1/x"), to: try ParsedHTTPURL("http://127.0.0.1:1/x"),
                                            deadline: .afterSlot(.seconds(5)))
        }
        await transport.shutdown()
        let verdict = HTTPErrors.classify(try #require(error))
        #expect(verdict.transient, "\(String(reflecting: error!)): \(verdict.reason)")
        #expect(verdict.reason == "connection refused")
    }
}
