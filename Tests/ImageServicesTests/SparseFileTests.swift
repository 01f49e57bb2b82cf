import Crypto
import Foundation
import SystemSupport
import Testing
import TestSupport
@testable import ImageServices
#if canImport(Glibc)
import Glibc
#endif

/// Writing and hashing sparse files: the holes the writer leaves must read as the zeros written,
/// and the digest that skips them must equal the digest of every byte.
@Suite("sparse files")
struct SparseFileTests {
    /// Data, zeros several blocks long, data not aligned to a block, and trailing zeros.
    static let content: [UInt8] = randomBytes(10_000) + [UInt8](repeating: 0, count: 3 << 20) + randomBytes(5_000)
        + [UInt8](repeating: 0, count: 70_000) + [1] + [UInt8](repeating: 0, count: 2 << 20)

    static func sha256(_ bytes: [UInt8]) -> String { SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

    @Test("the writer leaves zero blocks as holes, the file reads back whole, and the sparse digest is the plain one")
    func writeAndHash() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.appending("sparse.img")
        let output = OwnedDescriptor(open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644))
        let writer = SparseFileWriter(descriptor: output.rawValue, bufferSize: 64 << 10)
        var start = 0
        for piece in [1, 4095, 70_001, 1 << 20, 13] {  // pieces of odd sizes, then the rest
            let end = min(start + piece, Self.content.count)
            try Self.content[start..<end].withUnsafeBytes { try writer.write($0) }
            start = end
        }
        try Self.content[start...].withUnsafeBytes { try writer.write($0) }
        try writer.finish()
        #expect(writer.size == Int64(Self.content.count))

        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: path))) == Self.content)
        let status = try output.status()
        #expect(Int(status.st_blocks) * 512 < 1 << 20, "the zeros took space: \(status.st_blocks) blocks")

        let input = OwnedDescriptor(open(path, O_RDONLY | O_CLOEXEC))
        let digests = try SparseFileDigest.digests(of: input, algorithms: [.sha256], cancellation: BlockingWork.CancellationFlag())
        #expect(digests[.sha256] == Self.sha256(Self.content))
    }

    @Test("a file that is all hole, and an empty one, hash as their zeros")
    func allHole() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        for size in [0, 5 << 20] {
            let path = directory.appending("hole-\(size)")
            let file = OwnedDescriptor(open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644))
            #expect(ftruncate(file.rawValue, off_t(size)) == 0)
            let digests = try SparseFileDigest.digests(of: file, algorithms: [.sha256], cancellation: BlockingWork.CancellationFlag())
            #expect(digests[.sha256] == Self.sha256([UInt8](repeating: 0, count: size)))
        }
    }
}
