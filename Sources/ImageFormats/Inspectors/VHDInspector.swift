/// Microsoft's VHD (qemu's `vpc`): a big-endian 512-byte footer copy at the start, "conectix",
/// the virtual size at 40.
final class VHDInspector: FormatInspector {
    init() {
        super.init(.vhd)
        try! addRegion("header", CaptureRegion(offset: 0, length: 512))
        addSafetyCheck(.null)
    }

    override func formatMatches() throws -> Bool { region("header")!.data.hasPrefix(Array("conectix".utf8)) }

    override func virtualSize(streamLength: Int64) throws -> Int64 {
        guard region("header")!.isComplete, try formatMatches() else { return 0 }
        return Int64(clamping: try region("header")!.data.integer(UInt64.self, at: 40, bigEndian: true))
    }
}
