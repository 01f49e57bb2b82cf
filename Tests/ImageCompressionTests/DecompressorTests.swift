import Foundation
import Testing
import TestSupport
@testable import ImageCompression

/// The decompressors on streams written by the real tools (`zstd`, `gzip`, `xz`, `bzip2`), fed in
/// pieces of several sizes: what comes out must be the bytes that went in.
@Suite("decompression")
struct DecompressorTests {
    /// Compresses `bytes` with the compression's own command-line tool.
    static func compress(_ bytes: [UInt8], _ compression: ImageCompression) throws -> [UInt8] {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let input = try directory.write(bytes, to: "input")
        let tool = switch compression {
        case .zstd: "zstd -q -c"
        case .gzip: "gzip -c"
        case .xz: "xz -c"
        case .bzip2: "bzip2 -c"
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "\(tool) \"$0\" > \"$0.out\"", input]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(tool) failed")
        return Array(try Data(contentsOf: URL(fileURLWithPath: input + ".out")))
    }

    /// Decompresses `bytes` fed in pieces of `piece` bytes.
    static func decompress(_ bytes: [UInt8], _ compression: ImageCompression, piece: Int) throws -> [UInt8] {
        let decompressor = try compression.makeDecompressor()
        var output: [UInt8] = []
        var start = 0
        while start < bytes.count {
            let end = min(start + piece, bytes.count)
            try bytes[start..<end].withUnsafeBytes { try decompressor.decompress($0) { output.append(contentsOf: $0) } }
            start = end
        }
        try decompressor.finish { output.append(contentsOf: $0) }
        return output
    }

    /// Random bytes with a run of zeros several output buffers long in the middle.
    static let content: [UInt8] = randomBytes(700_000) + [UInt8](repeating: 0, count: 3 << 20) + randomBytes(300_001)

    @Test("each compression's magic is detected, and other content is not", arguments: ImageCompression.allCases)
    func detectsMagic(_ compression: ImageCompression) throws {
        let compressed = try Self.compress([1, 2, 3], compression)
        #expect(ImageCompression.detect(compressed.prefix(ImageCompression.magicLength)) == compression)
        #expect(ImageCompression.detect([0x51, 0x46, 0x49, 0xFB, 0, 0]) == nil)  // qcow2
        #expect(ImageCompression.detect([UInt8](repeating: 0, count: 6)) == nil)
    }

    @Test("a stream decompresses to what was compressed, however it is cut", arguments: ImageCompression.allCases)
    func roundTrips(_ compression: ImageCompression) throws {
        let compressed = try Self.compress(Self.content, compression)
        for piece in [1 << 20, 65_536, 4093] {
            let output = try Self.decompress(compressed, compression, piece: piece)
            #expect(output.count == Self.content.count, "piece \(piece)")
            #expect(output == Self.content, "piece \(piece)")
        }
    }

    @Test("streams one after another decompress as one", arguments: ImageCompression.allCases)
    func concatenated(_ compression: ImageCompression) throws {
        let first = randomBytes(100_000), second = [UInt8](repeating: 7, count: 2 << 20)
        let compressed = try Self.compress(first, compression) + Self.compress(second, compression)
        #expect(try Self.decompress(compressed, compression, piece: 10_000) == first + second)
    }

    @Test("a stream cut short is an error at its end, not a shorter image", arguments: ImageCompression.allCases)
    func truncated(_ compression: ImageCompression) throws {
        let compressed = try Self.compress(Self.content, compression)
        #expect(throws: DecompressionError.self) { try Self.decompress(Array(compressed.prefix(compressed.count * 2 / 3)), compression, piece: 65_536) }
    }

    @Test("corrupt content is an error", arguments: ImageCompression.allCases)
    func corrupt(_ compression: ImageCompression) throws {
        var compressed = try Self.compress(randomBytes(200_000), compression)
        for index in stride(from: compressed.count / 3, to: compressed.count / 3 + 64, by: 1) { compressed[index] ^= 0x5A }
        #expect(throws: DecompressionError.self) { try Self.decompress(compressed, compression, piece: 65_536) }
    }

    @Test("zstd's frame header declares the size when zstd wrote it, and gzip's is not trusted")
    func declaredSize() throws {
        let zstd = try Self.compress(Self.content, .zstd)
        try zstd.withUnsafeBytes { #expect(ImageCompression.declaredSize(of: .zstd, head: UnsafeRawBufferPointer(rebasing: $0[..<18])) == UInt64(Self.content.count)) }
        let gzip = try Self.compress(Self.content, .gzip)
        try gzip.withUnsafeBytes { #expect(ImageCompression.declaredSize(of: .gzip, head: $0) == nil) }
    }
}
