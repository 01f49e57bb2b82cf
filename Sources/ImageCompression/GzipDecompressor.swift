import CCompression

/// gzip through zlib's `inflate`, members one after another (as `pigz` writes them).
final class GzipDecompressor: StreamDecompressor {
    /// On the heap: zlib keeps a pointer back to its stream and refuses one that moved.
    private let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: decompressedChunkSize, alignment: 4096)
    /// Whether the last member ended (and nothing followed it yet).
    private var ended = false

    init() throws(DecompressionError) {
        stream.initialize(to: z_stream())
        let status = iw_inflate_init_gzip(stream)
        // Every property is set: a throw here still runs deinit, which ends and frees the stream
        // (ending a stream whose start failed is a no-op in the library).
        guard status == Z_OK else {
            throw DecompressionError(.gzip, "zlib could not start inflating (status \(status))")
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
        buffer.deallocate()
    }

    func decompress(_ input: UnsafeRawBufferPointer, output: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let base = input.baseAddress, input.count > 0 else { return }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        defer { stream.pointee.next_in = nil }
        var more = true
        while more {
            if ended {
                guard stream.pointee.avail_in > 0 else { break }
                // Another member follows the one that ended.
                guard inflateReset(stream) == Z_OK else { throw DecompressionError(.gzip, "zlib could not start the next member") }
                ended = false
            }
            stream.pointee.next_out = buffer.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.pointee.avail_out = uInt(buffer.count)
            let status = inflate(stream, Z_NO_FLUSH)
            let produced = buffer.count - Int(stream.pointee.avail_out)
            switch status {
            case Z_OK, Z_BUF_ERROR: break
            case Z_STREAM_END: ended = true
            default: throw DecompressionError(.gzip, stream.pointee.msg.map { String(cString: $0) } ?? "zlib status \(status)")
            }
            if produced > 0 { try output(UnsafeRawBufferPointer(rebasing: buffer[..<produced])) }
            // Go on while input is left, or while the output filled up (inflate may hold more).
            more = stream.pointee.avail_in > 0 || (produced == buffer.count && !ended)
            if status == Z_BUF_ERROR && produced == 0 { break }
        }
    }

    func finish(output: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard ended else { throw DecompressionError(.gzip, "the stream ends inside a member (truncated)") }
    }
}
