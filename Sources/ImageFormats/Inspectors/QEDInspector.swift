/// QEMU's QED: recognized only to be refused (nobody supports it, and it cannot be checked).
final class QEDInspector: FormatInspector {
    init() {
        super.init(.qed)
        try! addRegion("header", CaptureRegion(offset: 0, length: 512))
        addSafetyCheck(.banned)
    }

    override func formatMatches() throws -> Bool {
        let header = region("header")!
        return header.isComplete && header.data.hasPrefix([0x51, 0x45, 0x44, 0x00])
    }
}
