import SystemSupport
import Foundation
import NIOCore
import Testing
import TestSupport
@testable import ImageServices

#if canImport(Glibc)
import Glibc
#endif

@Suite("download sink: writer and hasher threads")
struct DownloadSinkTests {
    func openFile(_ path: String) throws -> OwnedDescriptor {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        return OwnedDescriptor(fd)
    }

    @Test("chunks of every size are written in order and hashed once each, through a queue smaller than the data")
    func writesAndHashes() async throws {
        let directory = try TemporaryDirectory(prefix: "sink")
        defer { directory.remove() }
        let path = directory.appending("image")
        let sink = try DownloadSink(file: try openFile(path), algorithms: [.sha256, .md5], capacityBytes: 256 << 10, capacityBuffers: 3)
        var expected = try MultiDigest([.sha256, .md5])
        var data: [UInt8] = []
        var generator = SystemRandomNumberGenerator()
        for index in 0..<300 {
            let chunk = (0..<Int.random(in: 1...40_000, using: &generator)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
            data += chunk
            expected.update(chunk)
            try await sink.write(ByteBuffer(bytes: chunk))
        }
        let digests = try await sink.finish()
        #expect(digests == expected.finalize())
        #expect(sink.written == Int64(data.count))
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: path))) == data)
    }

    @Test("after abandon, writes fail instead of waiting for threads that are gone, and drain returns")
    func abandonReleasesEveryone() async throws {
        let directory = try TemporaryDirectory(prefix: "sink")
        defer { directory.remove() }
        let sink = try DownloadSink(file: try openFile(directory.appending("image")), algorithms: [.sha256], capacityBytes: 1 << 10, capacityBuffers: 1)
        try await sink.write(ByteBuffer(bytes: [UInt8](repeating: 1, count: 1 << 10)))
        sink.abandon()
        await #expect(throws: CancellationError.self) {
            for _ in 0..<4 { try await sink.write(ByteBuffer(bytes: [UInt8](repeating: 2, count: 1 << 10))) }
        }
        try await sink.drain()
    }
}
