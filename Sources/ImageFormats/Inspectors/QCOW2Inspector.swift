/// QEMU's qcow2 (and the old qcow v1, recognized and refused): a big-endian header at the start.
///
///     0  magic "QFI\xfb"   4  version   8  backing file offset   24  virtual size
///     72 incompatible features (8 bytes, v3)
///
/// Refused: a backing file (CVE-2024-44082: it names a host file `qemu-img` would read), an
/// external data file, and incompatible features this port does not know.
final class QCOW2Inspector: FormatInspector {
    private static let magic: [UInt8] = [0x51, 0x46, 0x49, 0xFB]
    private static let featuresOffset = 0x48
    private static let featuresLength = 8
    /// The highest incompatible-feature bit known (bits 0–3: dirty, corrupt, data file, compression).
    private static let highestKnownFeatureBit = 4
    private static let dataFileBit = 3

    private var header: (magic: [UInt8], version: UInt32, size: UInt64)?

    init() {
        super.init(.qcow2)
        try! addRegion("header", CaptureRegion(offset: 0, length: 512))
        addSafetyCheck(SafetyCheck(name: "backing_file") { [unowned self] in try checkBackingFile() })
        addSafetyCheck(SafetyCheck(name: "data_file") { [unowned self] in try checkDataFile() })
        addSafetyCheck(SafetyCheck(name: "unknown_features") { [unowned self] in try checkUnknownFeatures() })
    }

    private var data: [UInt8] { region("header")!.data }

    override func regionCompleted(_ name: String) throws {
        let parsed = (magic: Array(data.prefix(4)), version: try data.integer(UInt32.self, at: 4, bigEndian: true),
                      size: try data.integer(UInt64.self, at: 24, bigEndian: true))
        header = parsed.magic == Self.magic ? parsed : nil
    }

    override func virtualSize(streamLength: Int64) throws -> Int64 { Int64(clamping: header?.size ?? 0) }

    override func formatMatches() throws -> Bool {
        region("header")!.isComplete && header?.magic == Self.magic
    }

    private func checkBackingFile() throws {
        if try data.integer(UInt64.self, at: 8, bigEndian: true) != 0 { throw SafetyViolation("Image has a backing file") }
    }

    private func checkUnknownFeatures() throws {
        let version = header?.version
        if version == 2 { return }  // no feature bits before version 3
        guard version == 3 else { throw SafetyViolation("Unsupported qcow2 version") }
        let features = Array(data[Self.featuresOffset..<(Self.featuresOffset + Self.featuresLength)])
        let highestByte = Self.highestKnownFeatureBit / 8
        // Big-endian: features[i] holds bits of byte number 7 - i.
        for (index, byteNumber) in (0..<Self.featuresLength).reversed().enumerated() {
            let allowed: UInt8 = byteNumber == highestByte ? UInt8((1 << (Self.highestKnownFeatureBit % 8)) - 1) : byteNumber > highestByte ? 0 : 0xFF
            if features[index] & ~allowed != 0 { throw SafetyViolation("Unknown QCOW2 features found") }
        }
    }

    private func checkDataFile() throws {
        let features = Array(data[Self.featuresOffset..<(Self.featuresOffset + Self.featuresLength)])
        // oslo.utils reads bit 2 (0x04) of the last byte: the external data file bit.
        let byte = Self.featuresLength - 1 - Self.dataFileBit / 8
        let bit: UInt8 = 1 << (Self.dataFileBit - 1)
        if features[byte] & bit != 0 { throw SafetyViolation("Image has data_file set") }
    }
}
