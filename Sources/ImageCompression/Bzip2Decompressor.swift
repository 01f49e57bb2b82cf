import CCompression

/// bzip2 through libbz2's `BZ2_bzDecompress`, streams one after another (as `pbzip2` writes them).
final class Bzip2Decompressor: StreamDecompressor {
    /// On the heap: libbz2 keeps a pointer back to its stream and refuses one that moved.
    private let stream = UnsafeMutablePointer<bz_stream>.allocate(capacity: 1)
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: decompressedChunkSize, alignment: 4096)
    /// Whether the last stream ended (and nothing followed it yet).
    private var ended = false

    init() throws(DecompressionError) {
        stream.initialize(to: bz_stream())
        let status = BZ2_bzDecompressInit(stream, 0, 0)
        // Every property is set: a throw here still runs deinit, which ends and frees the stream
        // (ending a stream whose start failed is a no-op in the library).
        guard status == BZ_OK else {
            throw DecompressionError(.bzip2, "libbz2 could not start a decoder (status \(status))")
        }
    }

    deinit {
        BZ2_bzDecompressEnd(stream)
        stream.deallocate()
        buffer.deallocate()
    }

    func decompress(_ input: UnsafeRawBufferPointer, output: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let base = input.baseAddress, input.count > 0 else { return }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: CChar.self))
        stream.pointee.avail_in = UInt32(input.count)
        defer { stream.pointee.next_in = nil }
        var more = true
        while more {
            if ended {
                guard stream.pointee.avail_in > 0 else { break }
                // Another stream follows the one that ended: a decoder starts afresh for it.
                BZ2_bzDecompressEnd(stream)
                let next = stream.pointee.next_in, left = stream.pointee.avail_in
                stream.pointee = bz_stream()
                guard BZ2_bzDecompressInit(stream, 0, 0) == BZ_OK else { throw DecompressionError(.bzip2, "libbz2 could not start the next stream") }
                stream.pointee.next_in = next
                stream.pointee.avail_in = left
                ended = false
            }
            stream.pointee.next_out = buffer.baseAddress!.assumingMemoryBound(to: CChar.self)
            stream.pointee.avail_out = UInt32(buffer.count)
            let status = BZ2_bzDecompress(stream)
            let produced = buffer.count - Int(stream.pointee.avail_out)
            switch status {
            case BZ_OK: break
            case BZ_STREAM_END: ended = true
            case BZ_DATA_ERROR, BZ_DATA_ERROR_MAGIC: throw DecompressionError(.bzip2, "corrupt data")
            case BZ_MEM_ERROR: throw DecompressionError(.bzip2, "out of memory")
            default: throw DecompressionError(.bzip2, "libbz2 status \(status)")
            }
            if produced > 0 { try output(UnsafeRawBufferPointer(rebasing: buffer[..<produced])) }
            more = stream.pointee.avail_in > 0 || (produced == buffer.count && !ended)
        }
    }

    func finish(output: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard ended else { throw DecompressionError(.bzip2, "the stream ends inside a block (truncated)") }
    }
}
