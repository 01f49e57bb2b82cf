/// VirtualBox's VDI: a little-endian 512-byte header, magic 0xbeda107f at 0x40, the virtual size at
/// 0x170.
final class VDIInspector: FormatInspector {
    init() {
        super.init(.vdi)
        try! addRegion("header", CaptureRegion(offset: 0, length: 512))
        addSafetyCheck(.null)
    }

    override func formatMatches() throws -> Bool {
        let header = region("header")!
        guard header.isComplete else { return false }
        return try header.data.integer(UInt32.self, at: 0x40) == 0xBEDA_107F
    }

    override func virtualSize(streamLength: Int64) throws -> Int64 {
        guard region("header")!.isComplete, try formatMatches() else { return 0 }
        return Int64(clamping: try region("header")!.data.integer(UInt64.self, at: 0x170))
    }
}
