import Crypto
import Testing
import TestSupport
@testable import ImageServices

/// The digest on its own thread equals the digest in line, however the bytes are given, and an
/// abandoned one stops its thread.
@Suite("background digest")
struct BackgroundDigestTests {
    @Test("equals MultiDigest for pieces smaller and larger than its buffers")
    func equalsInline() throws {
        let bytes = randomBytes(3_000_001)
        let background = try BackgroundDigest([.sha256, .sha512], bufferSize: 64 << 10, bufferCount: 2)
        var start = 0
        for piece in [1, 100_000, 65_536, 1_000_000, 7] {
            let end = min(start + piece, bytes.count)
            bytes[start..<end].withUnsafeBytes { background.update($0) }
            start = end
        }
        bytes[start...].withUnsafeBytes { background.update($0) }
        var inline = try MultiDigest([.sha256, .sha512])
        inline.update(bytes)
        #expect(try background.finalize() == inline.finalize())
    }

    @Test("an empty stream, and one dropped without finalize (the thread stops; nothing hangs)")
    func emptyAndAbandoned() throws {
        let empty = try BackgroundDigest([.sha256])
        let inline = try MultiDigest([.sha256])
        #expect(try empty.finalize() == inline.finalize())
        for _ in 0..<20 {
            let abandoned = try BackgroundDigest([.sha256], bufferSize: 4096, bufferCount: 2)
            randomBytes(50_000).withUnsafeBytes { abandoned.update($0) }
        }
    }
}
