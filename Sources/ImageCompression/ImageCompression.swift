/// A compression a disk image may arrive in, known by the magic its content starts with
/// (contract §3.3 step 2). Ironic's conductor decompresses zstd only; the worker does all four.
public enum ImageCompression: String, Sendable, CaseIterable {
    case zstd, gzip, xz, bzip2

    /// The longest magic: how many bytes of the content ``detect(_:)`` needs.
    public static let magicLength = 6

    /// The magic each compression's content starts with.
    public var magic: [UInt8] {
        switch self {
        case .zstd: [0x28, 0xB5, 0x2F, 0xFD]
        case .gzip: [0x1F, 0x8B]
        case .xz: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]
        case .bzip2: [0x42, 0x5A, 0x68]  // "BZh"
        }
    }

    /// The compression whose magic `head` (the content's first bytes) starts with, if any.
    public static func detect(_ head: some Collection<UInt8>) -> ImageCompression? {
        allCases.first { head.starts(with: $0.magic) }
    }

    /// A decompressor for one stream of this compression.
    public func makeDecompressor() throws(DecompressionError) -> any StreamDecompressor {
        switch self {
        case .zstd: try ZstdDecompressor()
        case .gzip: try GzipDecompressor()
        case .xz: try XZDecompressor()
        case .bzip2: try Bzip2Decompressor()
        }
    }
}

/// Decompresses one stream given in pieces, handing out what it makes as it goes, so that an
/// image of any size passes through a fixed amount of memory. Concatenated streams (a `pigz`
/// or `pbzip2` file, several zstd frames or xz streams) decompress as one.
public protocol StreamDecompressor: AnyObject {
    /// Decompresses the next piece of the stream; `output` gets each decompressed piece (valid
    /// only during the call) and may throw to stop.
    func decompress(_ input: UnsafeRawBufferPointer, output: (UnsafeRawBufferPointer) throws -> Void) throws
    /// Ends the stream, handing out what is left; throws ``DecompressionError`` when it was cut short.
    func finish(output: (UnsafeRawBufferPointer) throws -> Void) throws
}

/// Content that does not decompress: corrupt, cut short, or asking for more memory than allowed.
public struct DecompressionError: Error, CustomStringConvertible, Sendable {
    public var compression: ImageCompression
    public var reason: String

    public init(_ compression: ImageCompression, _ reason: String) {
        self.compression = compression
        self.reason = reason
    }

    public var description: String { "its \(compression.rawValue) content does not decompress: \(reason)" }
}

/// The size of each piece a decompressor hands out.
let decompressedChunkSize = 1 << 20
