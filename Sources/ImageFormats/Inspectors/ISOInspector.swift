/// ISO 9660 and UDF: after 32 KiB of system area, a volume descriptor whose identifier is "CD001",
/// "NSR02" or "NSR03"; a primary one (type 1) gives the size as blocks × block size.
final class ISOInspector: FormatInspector {
    private static let identifiers = ["CD001", "NSR02", "NSR03"].map { Array($0.utf8) }

    init() {
        super.init(.iso)
        try! addRegion("system_area", CaptureRegion(offset: 0, length: 32 << 10))
        try! addRegion("header", CaptureRegion(offset: 32 << 10, length: 2 << 10))
        addSafetyCheck(.null)
    }

    override func formatMatches() throws -> Bool {
        guard isComplete else { return false }
        return Self.identifiers.contains(Array(region("header")!.data[1..<6]))
    }

    override func virtualSize(streamLength: Int64) throws -> Int64 {
        guard isComplete, try formatMatches() else { return 0 }
        let header = region("header")!.data
        guard header[0] == 1 else { return 0 }  // not a primary volume descriptor
        // Both fields are stored little- then big-endian; the little-endian half is read.
        let blockSize = try header.integer(UInt16.self, at: 128)
        let blocks = try header.integer(UInt32.self, at: 80)
        return Int64(blocks) * Int64(blockSize)
    }
}
