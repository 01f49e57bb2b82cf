import Primitives
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Logging

/// One http(s) download into a staging file, robust to a network that fails:
///
/// - the body is streamed to a ``DownloadSink`` that writes and hashes on its own thread;
/// - connection resets, stalls (no byte for the stall timeout), truncated bodies, 5xx and 429 are
///   retried with exponential back-off, at most `retries` times;
/// - a retry resumes with `Range: bytes=N-` and `If-Range` (the ETag, else `Last-Modified`), and
///   the answer is checked strictly: `206` whose `Content-Range` starts at N, with the same total
///   and the same ETag; anything else (a `200`, a server that ignores ranges, no validator, a
///   changed ETag) restarts from zero — two versions of an image are never spliced;
/// - a body longer or shorter than its `Content-Length`, or empty, is refused;
/// - the whole thing is bounded by an overall deadline.
struct ResumableDownload {
    let transport: HTTPTransport
    /// What to GET (for Glance, the image's `/file` URL rather than the reference).
    let url: ParsedHTTPURL
    /// Headers for every attempt (Glance's `X-Auth-Token`).
    var headers: HTTPHeaders = [:]
    let request: ImageFetchRequest

    private var settings: HTTPClientSettings { transport.settings }
    private var reference: ImageReference { request.reference }

    /// What the first full answer said about the entity; later answers must agree.
    private struct Entity {
        var total: Int64?
        var entityTag: String?
        var lastModified: String?
        var metadata: ImageMetadata

        /// `If-Range` wants a strong validator: an ETag that is not weak, else the date.
        var ifRangeValidator: String? {
            if let entityTag, !entityTag.hasPrefix("W/") { return entityTag }
            return lastModified
        }

        /// Whether a `206` to a resume is the same entity: it must carry the validator the resume
        /// was based on, unchanged, and nothing that says otherwise (a changed ETag, or a changed
        /// date where the date was the validator). A server that ignored `If-Range` and sent
        /// another version's bytes is caught here, even one that drops the ETag.
        func continues(in headers: HTTPHeaders) -> Bool {
            let tag = headers.first(name: "ETag"), date = headers.first(name: "Last-Modified")
            if let entityTag, !entityTag.hasPrefix("W/") { return tag == entityTag }
            guard let lastModified else { return false }
            return date == lastModified && (tag == nil || tag == entityTag)
        }
    }

    /// A failure worth another attempt.
    private struct Transient: Error {
        var reason: String
        var status: Int?
    }

    func run() async throws -> FetchedImage {
        let output = try request.destination.create()
        let sink = try DownloadSink(file: output, algorithms: request.digestAlgorithms, reservation: request.diskReservation)
        // The overall deadline counts from the first request's connection slot, not from the
        // time spent waiting for it; every later attempt keeps it (their waits count).
        let deadline = RequestDeadline.download(DownloadDeadline(settings.overallTimeout))
        var entity: Entity? = nil
        var bytesTransferred: Int64 = 0
        var attempt = 0
        do {
            while true {
                attempt += 1
                do {
                    try await transfer(url, into: sink, entity: &entity, received: &bytesTransferred, deadline: deadline)
                    break
                } catch let transient as Transient {
                    guard attempt <= settings.retries else {
                        throw IronicError(.temporaryFailure, "Failed to download image \(reference.redacted) after \(attempt) attempts: \(transient.reason).",
                                          retryable: true, upstreamHTTPStatus: transient.status)
                    }
                    let delay = settings.retryDelay(attempt: attempt)
                    request.context.logger.warning("download interrupted; retrying", metadata: [
                        "href": "\(reference.redacted)", "reason": "\(transient.reason)", "attempt": "\(attempt)",
                        "written": "\(sink.written)", "retry_in_seconds": "\(delay.seconds)",
                    ])
                    try await Task.sleep(for: delay)
                }
            }
            let digests = try await sink.finish()
            let size = sink.written
            guard size > 0 else {
                throw IronicError.downloadFailed(reference.redacted, "image contains no data.")
            }
            return FetchedImage(size: size, digests: digests, transfer: .download, bytesTransferred: bytesTransferred,
                                metadata: entity?.metadata ?? ImageMetadata(size: size))
        } catch {
            sink.abandon()
            throw DiskSpace.explainingFull(error, in: request.destination.directory.path)
        }
    }

    /// One attempt: a request (ranged when resuming), its checks, and the body into the sink.
    /// Adds the bytes received to `received`, also when the attempt fails.
    private func transfer(_ url: ParsedHTTPURL, into sink: DownloadSink, entity: inout Entity?, received: inout Int64, deadline: RequestDeadline) async throws {
        try await sink.drain()
        let offset = sink.written
        var headers = self.headers
        let resuming = offset > 0 && entity?.ifRangeValidator != nil
        if offset > 0 && !resuming {
            request.context.logger.notice("no validator to resume safely; starting over", metadata: ["href": "\(reference.redacted)"])
            try await sink.restart()
        }
        if resuming, let validator = entity?.ifRangeValidator {
            headers.add(name: "Range", value: "bytes=\(offset)-")
            headers.add(name: "If-Range", value: validator)
        }

        let answer: HTTPExchange.Response
        do {
            answer = try await HTTPExchange(transport: transport, reference: reference).send(.GET, url, headers: headers, deadline: deadline) {
                request.progress(TransferProgress(phase: .queued, bytes: offset, total: entity?.total))
            }
        } catch let error as IronicError {
            throw error
        } catch {
            throw try classify(error)
        }
        defer { answer.slot.release() }
        let response = answer.response
        let status = Int(response.status.code)
        switch status {
        case 200:
            if sink.written > 0 {
                request.context.logger.notice("the server sent the whole image again; starting over", metadata: ["href": "\(reference.redacted)"])
                try await sink.restart()
            }
            entity = Entity(total: response.headers.first(name: "Content-Length").flatMap { Int64($0) },
                            entityTag: response.headers.first(name: "ETag"), lastModified: response.headers.first(name: "Last-Modified"),
                            metadata: HTTPImageService.metadata(response.headers, status: 200))
        case 206 where resuming:
            guard let range = response.headers.first(name: "Content-Range").flatMap(ContentRange.init), range.start == offset,
                  range.total == entity?.total || entity?.total == nil,
                  entity?.continues(in: response.headers) == true
            else {
                // Not the continuation of what we have: never splice; start over.
                request.context.logger.notice("the resumed answer does not continue the image; starting over", metadata: ["href": "\(reference.redacted)"])
                try await sink.restart()
                entity = nil
                throw Transient(reason: "the server answered a resume with another range or version", status: nil)
            }
        case 416 where resuming:
            // The resource no longer has that many bytes: it changed.
            try await sink.restart()
            entity = nil
            throw Transient(reason: "the server has no bytes from \(offset) on any more", status: status)
        case 429, 500...599:
            throw Transient(reason: "HTTP \(status)", status: status)
        default:
            throw IronicError(.imageRefValidationFailed,
                              "Validation of image href \(reference.redacted) failed, reason: Got HTTP code \(status) instead of 200 in response to GET request.",
                              upstreamHTTPStatus: status)
        }

        // Where this answer's first byte goes: 0 for a full answer, the resume offset for a 206.
        let base: Int64 = status == 200 ? 0 : offset
        let expectedEnd = entity?.total
        if let announced = request.announcedSize, let expectedEnd, expectedEnd > announced {
            throw IronicError.downloadFailed(reference.redacted, "the server sent more than the \(announced) bytes it announced (\(expectedEnd)).")
        }
        var position = base
        do {
            for try await chunk in response.body {
                guard chunk.readableBytes > 0 else { continue }
                position += Int64(chunk.readableBytes)
                received += Int64(chunk.readableBytes)
                if let expectedEnd, position > expectedEnd {
                    throw IronicError.downloadFailed(reference.redacted, "the server sent more bytes than its Content-Length (\(expectedEnd)).")
                }
                // The size announced before (which space was reserved for) bounds the body, with
                // or without a length of its own: a body without end cannot fill the disk, and
                // one longer than announced is not what was described.
                if let announced = request.announcedSize, position > announced {
                    throw IronicError.downloadFailed(reference.redacted, "the server sent more than the \(announced) bytes it announced.")
                }
                try await sink.write(chunk)
                request.progress(TransferProgress(phase: .download, bytes: position, total: expectedEnd))
            }
        } catch let error as IronicError {
            throw error
        } catch {
            throw try classify(error)
        }
        if let expectedEnd, position < expectedEnd {
            throw Transient(reason: "the body ended after \(position) of \(expectedEnd) bytes", status: nil)
        }
    }

    /// A transport error as a retryable ``Transient`` or a final Ironic error.
    private func classify(_ error: any Error) throws -> any Error {
        if error is CancellationError { throw error }
        if let overrun = error as? DiskReservation.Overrun { return IronicError.downloadFailed(reference.redacted, "\(overrun).") }
        if case let full as IronicError = DiskSpace.explainingFull(error, in: request.destination.directory.path) { return full }
        if let client = error as? HTTPClientError, client == .deadlineExceeded {
            return IronicError(.temporaryFailure, "Failed to download image \(reference.redacted): it took longer than \(Int(settings.overallTimeout.seconds)) s.", retryable: true)
        }
        if HTTPErrors.isTransient(error) { return Transient(reason: HTTPErrors.describe(error), status: nil) }
        return IronicError.downloadFailed(reference.redacted, HTTPErrors.describe(error))
    }
}
