/// A part of an image an inspector needs, gathered from the stream as it passes, whatever the
/// chunk boundaries (oslo.utils' `CaptureRegion` and `EndCaptureRegion`, kept byte for byte: the
/// differential test holds our verdicts to theirs, quirks included).
final class CaptureRegion {
    /// Where the region starts in the stream (for a region at the end: where its data starts now);
    /// never negative (sizes read from headers are clamped to `Int64.max`).
    private(set) var offset: Int64
    /// How many bytes it wants; a VHDX metadata region is cut short once its entry is found.
    var length: Int
    /// Complete with at least this many bytes (for structures of variable length).
    let minimumLength: Int?
    /// Captures the last `length` bytes of the stream, complete only once the stream ended.
    let isAtEnd: Bool
    private(set) var data: [UInt8] = []
    private var streamEnded = false

    /// The region of `length` bytes at `offset`.
    init(offset: Int64, length: Int, minimumLength: Int? = nil) {
        self.offset = offset
        self.length = length
        self.minimumLength = minimumLength
        isAtEnd = false
    }

    /// The last `length` bytes of the stream.
    init(lastBytes length: Int) {
        offset = Int64(length)
        self.length = length
        minimumLength = nil
        isAtEnd = true
    }

    var isComplete: Bool {
        let enough = minimumLength.map { data.count >= $0 } ?? (data.count == length)
        return isAtEnd ? enough && streamEnded : enough
    }

    /// Offers `chunk`, which ends at stream position `position`.
    func capture(_ chunk: ArraySlice<UInt8>, endingAt position: Int64) {
        if isAtEnd {
            if chunk.count >= length {
                data = Array(chunk.suffix(length))
            } else {
                data.append(contentsOf: chunk)
                if data.count > length { data.removeFirst(data.count - length) }
            }
            offset = position - Int64(data.count)
            return
        }
        let start = position - Int64(chunk.count)
        // oslo.utils' test, quirk included: a region created after its start went by captures
        // from where the stream is now.
        guard (start <= offset && offset <= position) || (offset <= start && start - offset <= Int64(length)) else { return }
        let gap = start < offset ? Int(offset - start) : 0
        if gap < chunk.count { data.append(contentsOf: chunk.dropFirst(gap)) }
        if data.count > length { data.removeLast(data.count - length) }
    }

    /// The stream ended: a region at the end is complete now.
    func streamDidEnd() { streamEnded = true }
}
