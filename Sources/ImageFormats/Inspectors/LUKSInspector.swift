/// LUKS: "LUKS\xba\xbe", a big-endian header; only version 1 is accepted. (oslo.utils can also
/// decrypt the first block with a passphrase to inspect what is inside; the worker is never given
/// one, so that path is not ported.)
final class LUKSInspector: FormatInspector {
    init() {
        super.init(.luks)
        try! addRegion("header", CaptureRegion(offset: 0, length: 592))
        addSafetyCheck(SafetyCheck(name: "version") { [unowned self] in
            let version = try header.integer(UInt16.self, at: 6, bigEndian: true)
            guard version == 1 else { throw SafetyViolation("LUKS version \(version) is not supported") }
        })
        // Without a passphrase oslo.utils' check passes (and logs); kept so the names match.
        addSafetyCheck(SafetyCheck(name: "passphrase") {})
        addSafetyCheck(SafetyCheck(name: "inner_safety") {})
    }

    private var header: [UInt8] {
        get throws {
            let data = region("header")!.data
            guard data.count >= 168 else { throw ImageFormatError("truncated LUKS header") }
            return data
        }
    }

    override func formatMatches() throws -> Bool { region("header")!.data.hasPrefix([0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE]) }

    /// The stream less the payload offset.
    override func virtualSize(streamLength: Int64) throws -> Int64 {
        streamLength - Int64(try header.integer(UInt32.self, at: 104, bigEndian: true)) * 512
    }
}
