import CCompression

/// xz through liblzma's stream decoder, streams one after another (`LZMA_CONCATENATED`). Its
/// memory is limited: a header asking for a larger dictionary than ``memoryLimit`` is refused.
final class XZDecompressor: StreamDecompressor {
    /// What the decoder may allocate: `xz -9`'s 64 MiB dictionary needs 65 MiB.
    static let memoryLimit: UInt64 = 256 << 20
    private let stream = UnsafeMutablePointer<lzma_stream>.allocate(capacity: 1)
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: decompressedChunkSize, alignment: 4096)

    init() throws(DecompressionError) {
        // A zeroed lzma_stream is LZMA_STREAM_INIT.
        stream.initialize(to: lzma_stream())
        let status = lzma_stream_decoder(stream, Self.memoryLimit, iw_lzma_concatenated())
        // Every property is set: a throw here still runs deinit, which ends and frees the stream
        // (ending a stream whose start failed is a no-op in the library).
        guard status == LZMA_OK else {
            throw DecompressionError(.xz, "liblzma could not start a decoder (\(Self.describe(status)))")
        }
    }

    deinit {
        lzma_end(stream)
        stream.deallocate()
        buffer.deallocate()
    }

    func decompress(_ input: UnsafeRawBufferPointer, output: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let base = input.baseAddress, input.count > 0 else { return }
        stream.pointee.next_in = base.assumingMemoryBound(to: UInt8.self)
        stream.pointee.avail_in = input.count
        defer { stream.pointee.next_in = nil }
        _ = try run(LZMA_RUN, output: output)
    }

    func finish(output: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard try run(LZMA_FINISH, output: output) else {
            throw DecompressionError(.xz, "the stream ends inside a block (truncated)")
        }
    }

    /// Codes until the input is used and the output drained; true when the stream ended.
    private func run(_ action: lzma_action, output: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        while true {
            stream.pointee.next_out = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
            stream.pointee.avail_out = buffer.count
            let status = lzma_code(stream, action)
            let produced = buffer.count - stream.pointee.avail_out
            if produced > 0 { try output(UnsafeRawBufferPointer(rebasing: buffer[..<produced])) }
            switch status {
            case LZMA_STREAM_END: return true
            case LZMA_OK: break
            case LZMA_BUF_ERROR where produced == 0: return false
            default: throw DecompressionError(.xz, Self.describe(status))
            }
            if stream.pointee.avail_in == 0 && produced < buffer.count && action == LZMA_RUN { return false }
        }
    }

    private static func describe(_ status: lzma_ret) -> String {
        switch status {
        case LZMA_MEM_ERROR: "out of memory"
        case LZMA_MEMLIMIT_ERROR: "it needs more than the \(memoryLimit >> 20) MiB of memory a decoder may use"
        case LZMA_FORMAT_ERROR: "not an .xz stream"
        case LZMA_OPTIONS_ERROR: "unsupported options"
        case LZMA_DATA_ERROR: "corrupt data"
        case LZMA_BUF_ERROR: "truncated"
        default: "liblzma status \(status.rawValue)"
        }
    }
}
