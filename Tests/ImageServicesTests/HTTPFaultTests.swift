import Crypto
import Foundation
import Logging
import NIOHTTP1
import Synchronization
import Testing
import TestSupport
@testable import ImageServices

/// Downloads that meet a failing network, against the scripted ``FaultServer``.
@Suite("http downloads that meet faults")
struct HTTPFaultTests {
    let context = ImageRequestContext(requestID: "req-fault", logger: Logger(label: "fault"))
    static let image: [UInt8] = [UInt8](unsafeUninitializedCapacity: 3 << 20) { buffer, count in
        for index in 0..<buffer.count { buffer[index] = UInt8(truncatingIfNeeded: index &* 7 &+ index >> 11) }
        count = buffer.count
    }
    static let imageSHA256 = SHA256.hash(data: image).map { String(format: "%02x", $0) }.joined()

    func settings(stall: Duration = .seconds(5), retries: Int = 3) -> HTTPClientSettings {
        HTTPClientSettings(connectTimeout: .seconds(5), stallTimeout: stall, overallTimeout: .seconds(60), retries: retries,
                           initialRetryDelay: .milliseconds(50), maximumRetryDelay: .milliseconds(200))
    }

    /// Fetches `path` from `server` into a fresh folder; returns the result and the folder.
    func fetch(_ server: FaultServer, _ path: String = "/image.img", settings: HTTPClientSettings? = nil,
               announcedSize: Int64? = nil) async throws -> (FetchedImage, TemporaryDirectory, StagingFile) {
        return try await withCleanup { cleanup in
            let folder = try TemporaryDirectory(prefix: "fault")
            let transport = try HTTPTransport(settings: settings ?? self.settings())
            cleanup.add { await transport.shutdown() }
            let staging = StagingFile(in: try DirectoryHandle(path: folder.path), finalName: "disk")
            let request = ImageFetchRequest(reference: try ImageReference(server.url + path), destination: staging, digestAlgorithms: [.sha256], context: context,
                                            announcedSize: announcedSize)
            do {
                let fetched = try await HTTPImageService(transport: transport).fetch(request)
                return (fetched, folder, staging)
            } catch {
                staging.discard()
                #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty, "a failed download left files behind")
                folder.remove()
                throw error
            }
        }
    }

    static func range(_ seen: FaultServer.Seen) -> Int? {
        guard let value = seen.headers.first(name: "Range"), value.hasPrefix("bytes="), value.hasSuffix("-") else { return nil }
        return Int(value.dropFirst(6).dropLast())
    }

    @Test("a connection dropped mid-body resumes with Range and If-Range; the digest matches and less than the image is sent again")
    func resumesAfterDrop() async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { index, seen in
                let etag = "\"v1\""
                if let start = Self.range(seen) {
                    guard seen.headers.first(name: "If-Range") == etag else { return .init(body: Self.image) }
                    return .init(status: .partialContent, headers: [("ETag", etag), ("Content-Range", "bytes \(start)-\(Self.image.count - 1)/\(Self.image.count)")],
                                 body: Array(Self.image[start...]))
                }
                return .init(headers: [("ETag", etag)], body: Self.image, cutAfter: index == 0 ? 1_000_000 : nil)
            }
            cleanup.add { await server.stop() }
            let (fetched, folder, staging) = try await fetch(server)
            defer { folder.remove() }
            #expect(fetched.digests[.sha256] == Self.imageSHA256)
            #expect(fetched.size == Int64(Self.image.count))
            #expect(server.requests.count == 2)
            // The resume starts where the file ends: at most the 1,000,000 bytes sent before the cut
            // (async-http-client drops what it buffered but had not handed over when the peer closed).
            let resumedAt = try #require(Self.range(server.requests[1]))
            #expect(resumedAt > 0 && resumedAt <= 1_000_000)
            #expect(server.bodyBytesSent < 2 * Self.image.count, "the resume sent the whole image again")
            #expect(server.bodyBytesSent == 1_000_000 + Self.image.count - resumedAt)
            try staging.commit()
            #expect(try Array(Data(contentsOf: URL(fileURLWithPath: staging.finalPath))) == Self.image)
        }
    }

    @Test("a server that ignores Range answers 200 again: the download restarts from zero and is still right")
    func ignoresRange() async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { index, _ in
                .init(headers: [("ETag", "\"v1\"")], body: Self.image, cutAfter: index == 0 ? 500_000 : nil)
            }
            cleanup.add { await server.stop() }
            let (fetched, folder, _) = try await fetch(server)
            defer { folder.remove() }
            #expect(fetched.digests[.sha256] == Self.imageSHA256)
            #expect(fetched.size == Int64(Self.image.count))
            #expect(server.requests.count == 2)
        }
    }

    @Test("an ETag that changes between attempts means starting over with the new version, never splicing")
    func changedETag() async throws {
        try await withCleanup { cleanup in
            let newImage = Self.image.map { $0 ^ 0x5A }
            let newSHA = SHA256.hash(data: newImage).map { String(format: "%02x", $0) }.joined()
            // A compliant server: If-Range with the old ETag gets the new entity whole (200).
            let compliant = try await FaultServer { index, _ in
                index == 0 ? .init(headers: [("ETag", "\"v1\"")], body: Self.image, cutAfter: 700_000)
                           : .init(headers: [("ETag", "\"v2\"")], body: newImage)
            }
            cleanup.add { await compliant.stop() }
            let (fetched, folder, _) = try await fetch(compliant)
            folder.remove()
            #expect(fetched.digests[.sha256] == newSHA)
            // A broken server: answers the resume with 206 of the new version.
            let broken = try await FaultServer { index, seen in
                if index == 0 { return .init(headers: [("ETag", "\"v1\"")], body: Self.image, cutAfter: 700_000) }
                if let start = Self.range(seen) {
                    return .init(status: .partialContent, headers: [("ETag", "\"v2\""), ("Content-Range", "bytes \(start)-\(newImage.count - 1)/\(newImage.count)")],
                                 body: Array(newImage[start...]))
                }
                return .init(headers: [("ETag", "\"v2\"")], body: newImage)
            }
            cleanup.add { await broken.stop() }
            let (again, folder2, _) = try await fetch(broken)
            folder2.remove()
            #expect(again.digests[.sha256] == newSHA, "two versions were spliced")
            #expect(broken.requests.count == 3)
        }
    }

    @Test("a 206 that does not carry the resume's validator unchanged is not spliced: no ETag, or another Last-Modified", arguments: [
        [("Last-Modified", "Wed, 02 Dec 2026 10:00:00 GMT")],  // ETag dropped (the resume was by ETag)
        [("ETag", "\"v1\""), ("Last-Modified", "Wed, 02 Dec 2026 11:00:00 GMT")],  // kept ETag, fine: the ETag decides
    ])
    func resumeValidators(partialHeaders: [(String, String)]) async throws {
        // The version served in full is new; the 206 comes from a server that ignored If-Range.
        let newImage = Self.image.map { $0 ^ 0x5A }
        let newSHA = SHA256.hash(data: newImage).map { String(format: "%02x", $0) }.joined()
        let keepsETag = partialHeaders.contains { $0.0 == "ETag" }
        try await withCleanup { cleanup in
            let server = try await FaultServer { index, seen in
                if index == 0 {
                    return .init(headers: [("ETag", "\"v1\""), ("Last-Modified", "Wed, 02 Dec 2026 10:00:00 GMT")], body: Self.image, cutAfter: 700_000)
                }
                if let start = Self.range(seen) {
                    let body = keepsETag ? Array(Self.image[start...]) : Array(newImage[start...])
                    return .init(status: .partialContent, headers: partialHeaders + [("Content-Range", "bytes \(start)-\(Self.image.count - 1)/\(Self.image.count)")],
                                 body: body)
                }
                return .init(headers: [("ETag", "\"v2\"")], body: newImage)
            }
            cleanup.add { await server.stop() }
            let (fetched, folder, _) = try await fetch(server)
            folder.remove()
            #expect(fetched.digests[.sha256] == (keepsETag ? Self.imageSHA256 : newSHA), "two versions were spliced")
        }
    }

    @Test("resumed by date (no ETag): a 206 whose Last-Modified changed starts over")
    func resumeByDate() async throws {
        let newImage = Self.image.map { $0 ^ 0x33 }
        let newSHA = SHA256.hash(data: newImage).map { String(format: "%02x", $0) }.joined()
        try await withCleanup { cleanup in
            let server = try await FaultServer { index, seen in
                if index == 0 { return .init(headers: [("Last-Modified", "Wed, 02 Dec 2026 10:00:00 GMT")], body: Self.image, cutAfter: 700_000) }
                if let start = Self.range(seen) {
                    return .init(status: .partialContent, headers: [("Last-Modified", "Wed, 02 Dec 2026 12:00:00 GMT"),
                                                                    ("Content-Range", "bytes \(start)-\(newImage.count - 1)/\(newImage.count)")],
                                 body: Array(newImage[start...]))
                }
                return .init(headers: [("Last-Modified", "Wed, 02 Dec 2026 12:00:00 GMT")], body: newImage)
            }
            cleanup.add { await server.stop() }
            let (fetched, folder, _) = try await fetch(server)
            folder.remove()
            #expect(fetched.digests[.sha256] == newSHA, "two versions were spliced")
            #expect(server.requests.count == 3, "the cut, the refused 206, the full new version")
        }
    }

    @Test("a stall past the stall timeout is retried, then reported as a retryable TemporaryFailure")
    func stall() async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { _, _ in .init(body: Self.image, cutAfter: 100_000, closeAtCut: false) }
            cleanup.add { await server.stop() }
            await #expect {
                _ = try await fetch(server, settings: settings(stall: .milliseconds(500), retries: 2))
            } throws: { error in
                let error = error as? IronicError
                return error?.code == .temporaryFailure && error?.retryable == true && error?.message.contains("stall") == true
            }
            #expect(server.requests.count == 3)
        }
    }

    @Test("a Content-Length that promises more than is ever sent ends in a failure, nothing kept")
    func lyingContentLength() async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { _, seen in
                let start = Self.range(seen) ?? 0
                var headers = [("Content-Length", "5000000")]
                if start > 0 { headers.append(("Content-Range", "bytes \(start)-4999999/5000000")) }
                return .init(status: start > 0 ? .partialContent : .ok, headers: headers + [("ETag", "\"v\"")], body: Array(Self.image.prefix(200_000)), cutAfter: 200_000)
            }
            cleanup.add { await server.stop() }
            await #expect {
                _ = try await fetch(server, settings: settings(retries: 2))
            } throws: { error in
                let error = error as? IronicError
                return error?.code == .temporaryFailure && error?.retryable == true && error?.message.contains("after 3 attempts") == true
            }
        }
    }

    @Test("a body without a length of its own stops at the size announced before it (HEAD's), so it cannot fill the disk")
    func boundedByAnnouncedSize() async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { _, _ in .init(headers: [("Transfer-Encoding", "chunked")], body: Self.image) }
            cleanup.add { await server.stop() }
            let (whole, folder, _) = try await fetch(server)
            folder.remove()
            #expect(whole.size == Int64(Self.image.count), "chunked without an announced size: read to its end")
            await #expect {
                _ = try await fetch(server, announcedSize: 1 << 20)
            } throws: { ($0 as? IronicError)?.message.contains("more than the 1048576 bytes it announced") == true }
        }
    }

    @Test("a body with its own Content-Length above the size announced before it (HEAD's) is refused before a byte is stored")
    func longerThanAnnounced() async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { _, _ in .init(headers: [("Content-Length", "\(Self.image.count)")], body: Self.image) }
            cleanup.add { await server.stop() }
            await #expect {
                _ = try await fetch(server, announcedSize: 1 << 20)
            } throws: { error in
                let error = error as? IronicError
                return error?.code == .imageDownloadFailed && error?.message.contains("more than the 1048576 bytes it announced (\(Self.image.count))") == true
            }
        }
    }

    @Test("an empty body is refused: the image contains no data")
    func emptyBody() async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { _, _ in .init(body: []) }
            cleanup.add { await server.stop() }
            await #expect {
                _ = try await fetch(server)
            } throws: { ($0 as? IronicError)?.message.contains("image contains no data") == true }
        }
    }

    @Test("5xx answers are retried; a 4xx is not", arguments: [(503, true), (404, false)])
    func serverErrors(status: Int, retried: Bool) async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { index, _ in
                index == 0 ? .init(status: HTTPResponseStatus(statusCode: status), body: Array("no".utf8)) : .init(body: Self.image)
            }
            cleanup.add { await server.stop() }
            if retried {
                let (fetched, folder, _) = try await fetch(server)
                folder.remove()
                #expect(fetched.digests[.sha256] == Self.imageSHA256)
            } else {
                await #expect {
                    _ = try await fetch(server)
                } throws: { error in
                    let error = error as? IronicError
                    return error?.code == .imageRefValidationFailed && error?.message.contains("Got HTTP code 404 instead of 200 in response to GET request.") == true
                }
                #expect(server.requests.count == 1)
            }
        }
    }

    @Test("a HEAD that fails in transit is ImageRefValidationFailed marked retryable; a 404 is not retryable",
          arguments: [(true, true), (false, false)])
    func probeFailuresSayWhetherRetryable(closeWithoutAnswer: Bool, retryable: Bool) async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { _, _ in
                closeWithoutAnswer ? .init(closeWithoutAnswer: true) : .init(status: .notFound)
            }
            cleanup.add { await server.stop() }
            let transport = try HTTPTransport(settings: settings())
            cleanup.add { await transport.shutdown() }
            await #expect {
                _ = try await HTTPImageService(transport: transport).show(try ImageReference(server.url + "/image.img"), context: context)
            } throws: { error in
                let error = error as? IronicError
                return error?.code == .imageRefValidationFailed && error?.retryable == retryable
            }
            #expect(server.requests.first?.method == .HEAD)
        }
    }

    @Test("a HEAD that waits for a connection says so through the context (the task's phase: queued), then goes out")
    func probeWaitingForItsSlotReportsQueued() async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { _, _ in .init(headers: [("Content-Length", "5")]) }
            cleanup.add { await server.stop() }
            var oneConnection = settings()
            oneConnection.maximumConnectionsPerHost = 1
            let transport = try HTTPTransport(settings: oneConnection)
            cleanup.add { await transport.shutdown() }
            let reference = try ImageReference(server.url + "/image.img")
            let held = try await transport.slots.acquire(try ParsedHTTPURL(reference.original).origin)
            let queued = Atomic<Int>(0)
            var waiting = context
            waiting.onQueued = { queued.add(1, ordering: .relaxed) }
            let shown = Task { [waiting] in try await HTTPImageService(transport: transport).show(reference, context: waiting) }
            let deadline = ContinuousClock.now + .seconds(30)
            while queued.load(ordering: .relaxed) == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            #expect(queued.load(ordering: .relaxed) == 1, "the HEAD waited for the held slot and said so")
            #expect(server.requests.isEmpty, "nothing was sent while the slot was held")
            held.release()
            #expect(try await shown.value.size == 5)
            #expect(server.requests.map(\.method) == [.HEAD])
        }
    }

    @Test("a redirect to file:// is refused")
    func redirectToFile() async throws {
        try await withCleanup { cleanup in
            let server = try await FaultServer { _, _ in .init(status: .found, headers: [("Location", "file:///etc/passwd")]) }
            cleanup.add { await server.stop() }
            await #expect {
                _ = try await fetch(server)
            } throws: { ($0 as? IronicError)?.message.contains("redirect to a file:// URL is not allowed") == true }
        }
    }
}
