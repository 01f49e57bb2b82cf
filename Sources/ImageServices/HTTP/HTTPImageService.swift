import SystemSupport
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Logging

/// `http://` and `https://` images.
///
/// - **validate/show**: HEAD, as Ironic does (non-200 refused; a 403 on a URL ending in `/` is a
///   directory); a server that refuses HEAD (405, 501) is asked for one byte with a ranged GET.
///   Size from `Content-Length`, `updated_at` from `Last-Modified`, `no_cache` from
///   `Cache-Control: no-store`, and the `ETag`.
/// - **fetch**: a streamed GET into the staging file, hashed in the same pass, retried with
///   back-off on transient failures and resumed with `Range` + `If-Range` when that is safe
///   (see ``ResumableDownload``).
public struct HTTPImageService: ImageService {
    public let name = "http"
    public let schemes = ["http", "https"]
    public let caching = ImageCaching.revalidate
    /// An http(s) image needs a checksum (Ironic's rule), unless the operator turns that off.
    public let checksumAuthority = ChecksumAuthority.request(required: true)
    public let transport: HTTPTransport

    /// Creates the service.
    public init(transport: HTTPTransport) {
        self.transport = transport
    }

    /// What a HEAD (or its ranged-GET stand-in) told.
    struct Probe {
        var metadata: ImageMetadata
        var entityTag: String?
        var isDirectory: Bool
    }

    public func validate(_ reference: ImageReference, context: ImageRequestContext) async throws -> ImageMetadata {
        try await probe(reference, context: context, allowDirectory: true).metadata
    }

    public func show(_ reference: ImageReference, context: ImageRequestContext) async throws -> ImageMetadata {
        let probe = try await probe(reference, context: context, allowDirectory: false)
        guard probe.metadata.size != nil else {
            throw IronicError.validationFailed(reference.redacted, "Cannot determine image size as there is no Content-Length header specified in response to HEAD request.")
        }
        return probe.metadata
    }

    public func fetch(_ request: ImageFetchRequest) async throws -> FetchedImage {
        try await ResumableDownload(transport: transport, url: try ParsedHTTPURL(request.reference.original), request: request).run()
    }

    /// The body of a small resource (a checksum file), at most `limit` bytes, as text.
    public func checksumFileText(_ reference: ImageReference, context: ImageRequestContext, limit: Int) async throws -> String {
        let url = try ParsedHTTPURL(reference.original)
        let exchange = HTTPExchange(transport: transport, reference: reference)
        do {
            let response = try await exchange.send(.GET, url, deadline: .afterSlot(transport.settings.connectTimeout + transport.settings.stallTimeout),
                                                   onQueued: context.onQueued)
            defer { response.slot.release() }
            guard response.response.status == .ok else {
                throw IronicError.validationFailed(reference.redacted, "Got HTTP code \(response.response.status.code) instead of 200 in response to GET request.")
            }
            let body = try await response.response.body.collect(upTo: limit)
            return String(buffer: body)
        } catch let error as IronicError {
            throw error
        } catch let error as NIOTooManyBytesError {
            _ = error
            throw IronicError.downloadFailed(reference.redacted, "the checksum file is larger than \(limit) bytes.")
        } catch {
            let verdict = HTTPErrors.classify(error)
            throw IronicError.downloadFailed(reference.redacted, verdict.reason, retryable: verdict.transient)
        }
    }

    func probe(_ reference: ImageReference, context: ImageRequestContext, allowDirectory: Bool) async throws -> Probe {
        let url = try ParsedHTTPURL(reference.original)
        let exchange = HTTPExchange(transport: transport, reference: reference)
        let deadline = RequestDeadline.afterSlot(transport.settings.connectTimeout + transport.settings.stallTimeout)
        do {
            var answer = try await exchange.send(.HEAD, url, deadline: deadline, onQueued: context.onQueued)
            var method = "HEAD"
            if [405, 501].contains(answer.response.status.code) {
                context.logger.debug("the server refuses HEAD; asking for one byte", metadata: ["status": "\(answer.response.status.code)"])
                answer.slot.release()
                answer = try await exchange.send(.GET, url, headers: ["Range": "bytes=0-0"], deadline: .at(answer.deadline))
                method = "GET"
            }
            defer { answer.slot.release() }
            let status = answer.response.status.code
            // Ironic looks at the reference as written, not where redirects led.
            if status == 403, allowDirectory, url.path.hasSuffix("/") {
                context.logger.warning("HEAD answered 403 on a URL ending in '/': taking it as a directory", metadata: ["href": "\(reference.redacted)"])
                return Probe(metadata: ImageMetadata(), entityTag: nil, isDirectory: true)
            }
            guard status == 200 || (method == "GET" && status == 206) else {
                throw IronicError.validationFailed(reference.redacted, "Got HTTP code \(status) instead of 200 in response to \(method) request.")
            }
            return Probe(metadata: Self.metadata(answer.response.headers, status: status), entityTag: answer.response.headers.first(name: "ETag"), isDirectory: false)
        } catch let error as IronicError {
            throw error
        } catch {
            // A transport failure the classification calls transient (a reset, a timeout) says so in
            // the error event, as a download's does.
            let verdict = HTTPErrors.classify(error)
            throw IronicError.validationFailed(reference.redacted, verdict.reason, retryable: verdict.transient)
        }
    }

    /// Metadata from response headers (a 206's size comes from `Content-Range`'s total).
    static func metadata(_ headers: HTTPHeaders, status: UInt) -> ImageMetadata {
        var size: Int64? = nil
        if status == 206 {
            // Its Content-Length is the range's (1 for the `bytes=0-0` probe), never the image's.
            size = headers.first(name: "Content-Range").flatMap(ContentRange.init)?.total
        } else if let length = headers.first(name: "Content-Length").flatMap({ Int64($0.trimmingCharacters(in: .whitespaces)) }) {
            size = length
        }
        let cacheControl = headers[canonicalForm: "Cache-Control"].map { $0.lowercased() }
        let lastModified = headers.first(name: "Last-Modified")
        return ImageMetadata(size: size, updatedAtMicroseconds: lastModified.flatMap(HTTPDate.parse),
                             noCache: cacheControl.contains { $0.trimmingCharacters(in: .whitespaces) == "no-store" },
                             entityTag: headers.first(name: "ETag"), lastModified: lastModified)
    }
}

/// `Content-Range: bytes START-END/TOTAL`.
public struct ContentRange: Hashable, Sendable {
    /// The first byte's offset.
    public var start: Int64
    /// The last byte's offset (inclusive).
    public var end: Int64
    /// The whole size, when the server knows it (`*` otherwise).
    public var total: Int64?

    /// Parses a `Content-Range` header's value; nil when it is not a satisfied byte range.
    public init?(_ text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("bytes ") else { return nil }
        let spec = trimmed.dropFirst(6)
        let parts = spec.split(separator: "/", maxSplits: 1)
        guard parts.count == 2 else { return nil }
        let bounds = parts[0].split(separator: "-", maxSplits: 1)
        // Digits only (`Int64` would take a sign), and a complete length past the last byte
        // (RFC 9110 §14.4): `bytes 0-1/-23` is no range (found by the content-range fuzz harness).
        let digits = { (text: Substring) in !text.isEmpty && text.allSatisfy { $0.isASCII && $0.isNumber } }
        guard bounds.count == 2, digits(bounds[0]), digits(bounds[1]), let start = Int64(bounds[0]), let end = Int64(bounds[1]), start <= end else { return nil }
        self.start = start
        self.end = end
        if parts[1] == "*" {
            total = nil
        } else {
            guard digits(parts[1]), let total = Int64(parts[1]), total > end else { return nil }
            self.total = total
        }
    }
}
