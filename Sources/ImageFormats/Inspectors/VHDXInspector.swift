/// Microsoft's VHDX: "vhdxfile" at the start; the region table at 192 KiB names the metadata
/// region, whose table names the "Virtual Disk Size" item (all little-endian, GUID-keyed).
final class VHDXInspector: FormatInspector {
    private static let metadataRegion = "8B7CA206-4790-4B9A-B8FE-575F050F886E"
    private static let virtualDiskSize = "2FA54224-CD1B-4876-B211-5DBED83BF4B8"
    private static let metadataTableMaximum = 32 * 2048

    init() {
        super.init(.vhdx)
        try! addRegion("ident", CaptureRegion(offset: 0, length: 32))
        try! addRegion("header", CaptureRegion(offset: 192 << 10, length: 64 << 10))
        addSafetyCheck(.null)
    }

    override func postProcess() throws {
        if region("header")!.isComplete && !hasRegion("metadata") {
            if let metadata = try findMetadataRegion() { try addRegion("metadata", metadata) }
        } else if hasRegion("metadata") && !hasRegion("vds") {
            if let size = try findMetadataEntry(Self.virtualDiskSize) { try addRegion("vds", size) }
        }
    }

    override func formatMatches() throws -> Bool { region("ident")!.data.hasPrefix(Array("vhdxfile".utf8)) }

    /// A Microsoft GUID as text (the first three fields little-endian).
    static func guid(_ bytes: ArraySlice<UInt8>) -> String {
        let b = Array(bytes)
        let groups = [[b[3], b[2], b[1], b[0]], [b[5], b[4]], [b[7], b[6]], [b[8], b[9]], Array(b[10..<16])]
        return groups.map { $0.map { String($0, radix: 16, uppercase: true).leftPadded(to: 2) }.joined() }.joined(separator: "-")
    }

    private func findMetadataRegion() throws -> CaptureRegion? {
        let header = region("header")!.data
        guard try header.integer(UInt32.self, at: 0) == 0x6967_6572 else {
            throw ImageFormatError("Region signature not found at \(String(region("header")!.offset, radix: 16))")
        }
        let count = Int(try header.integer(UInt32.self, at: 8))
        guard count < 2048 else { throw ImageFormatError("Region count is {int(count)} (limit 2047)") }
        for index in 0..<count {
            let start = 16 + index * 32
            guard start + 32 <= header.count else { throw ImageFormatError("truncated region table") }
            if Self.guid(header[start..<(start + 16)]) == Self.metadataRegion {
                // Only the table is needed: a header and up to 2047 entries of 32 bytes.
                return CaptureRegion(offset: Int64(clamping: try header.integer(UInt64.self, at: start + 16)), length: 2048 * 32)
            }
        }
        return nil
    }

    private func findMetadataEntry(_ wanted: String) throws -> CaptureRegion? {
        let metadata = region("metadata")!
        let buffer = metadata.data
        guard buffer.count >= 32 else { return nil }
        guard buffer.hasPrefix(Array("metadata".utf8)) else {
            throw ImageFormatError("Invalid signature for metadata region")
        }
        let count = Int(try buffer.integer(UInt16.self, at: 10))
        guard buffer.count >= 32 + count * 32 else { return nil }
        guard count < 2048 else { throw ImageFormatError("Metadata item count is {int(count)} (limit 2047)") }
        for index in 0..<count {
            let start = 32 + index * 32
            if Self.guid(buffer[start..<(start + 16)]) == wanted {
                let itemOffset = try buffer.integer(UInt32.self, at: start + 16)
                let itemLength = min(Int(try buffer.integer(UInt32.self, at: start + 20)), Self.metadataTableMaximum)
                metadata.length = buffer.count
                // Saturating: an offset past any stream is a region never reached (Python's integers do not wrap).
                let (offset, overflow) = metadata.offset.addingReportingOverflow(Int64(itemOffset))
                return CaptureRegion(offset: overflow ? .max : offset, length: itemLength)
            }
        }
        return nil
    }

    override func virtualSize(streamLength: Int64) throws -> Int64 {
        guard let size = region("vds"), size.isComplete else { return 0 }
        // struct.unpack('<Q') of the whole item: anything but 8 bytes is an error.
        guard size.data.count == 8 else { throw ImageFormatError("virtual disk size item of \(size.data.count) bytes") }
        return Int64(clamping: try size.data.integer(UInt64.self, at: 0))
    }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
