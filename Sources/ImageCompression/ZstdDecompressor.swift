import CCompression

/// zstd through libzstd's streaming API (`ZSTD_decompressStream`). The window is libzstd's
/// default limit (128 MiB, `ZSTD_WINDOWLOG_LIMIT_DEFAULT`): a frame that asks for more is refused
/// rather than allowed to take the memory.
final class ZstdDecompressor: StreamDecompressor {
    private let stream: OpaquePointer
    private let buffer: UnsafeMutableRawBufferPointer
    /// libzstd's hint from the last call: 0 once a frame is complete.
    private var pending = 0

    init() throws(DecompressionError) {
        guard let stream = ZSTD_createDStream() else { throw DecompressionError(.zstd, "libzstd could not allocate a decoder") }
        self.stream = stream
        buffer = .allocate(byteCount: decompressedChunkSize, alignment: 4096)
    }

    deinit {
        ZSTD_freeDStream(stream)
        buffer.deallocate()
    }

    func decompress(_ input: UnsafeRawBufferPointer, output: (UnsafeRawBufferPointer) throws -> Void) throws {
        var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var full = false
        // When the output buffer came back full, libzstd may hold more: call again even with no input left.
        while source.pos < source.size || full {
            var destination = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
            let consumed = source.pos
            let result = ZSTD_decompressStream(stream, &destination, &source)
            if ZSTD_isError(result) != 0 {
                throw DecompressionError(.zstd, String(cString: ZSTD_getErrorName(result)))
            }
            // A call that found nothing to do (a frame ended exactly as the buffer filled) says
            // what the next frame would need: it does not make the stream unfinished.
            if destination.pos > 0 || source.pos > consumed { pending = result }
            full = destination.pos == destination.size
            if destination.pos > 0 { try output(UnsafeRawBufferPointer(rebasing: buffer[..<destination.pos])) }
        }
    }

    func finish(output: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard pending == 0 else { throw DecompressionError(.zstd, "the stream ends inside a frame (truncated)") }
    }

    /// The decompressed size a zstd frame header declares, when it does (`zstd` writes it for a
    /// file it compressed whole; streamed input has none): a bomb can be refused before any work.
    static func declaredSize(_ head: UnsafeRawBufferPointer) -> UInt64? {
        let size = ZSTD_getFrameContentSize(head.baseAddress, head.count)
        // ZSTD_CONTENTSIZE_UNKNOWN and ZSTD_CONTENTSIZE_ERROR are (0ULL - 1) and (0ULL - 2).
        return size >= UInt64.max - 1 ? nil : size
    }
}

extension ImageCompression {
    /// The decompressed size the content's header declares, when the format has one that can be
    /// trusted as a lower bound (zstd's frame content size); nil otherwise. gzip's ISIZE is the
    /// size modulo 2^32 and is not used.
    public static func declaredSize(of compression: ImageCompression, head: UnsafeRawBufferPointer) -> UInt64? {
        compression == .zstd ? ZstdDecompressor.declaredSize(head) : nil
    }
}
