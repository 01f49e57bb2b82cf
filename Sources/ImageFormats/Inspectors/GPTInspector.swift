/// A disk with an MBR or a GPT's protective MBR (signature 0xaa55 at 510, not a FAT boot sector).
/// Refused: a boot flag other than 0x00/0x80, a protective (0xee) entry that does not start at
/// CHS 0/2/0 and LBA 1 or is not alone, or no partition at all.
final class GPTInspector: FormatInspector {
    private static let partitionTableStart = 446
    private static let fixedDiskMedia: UInt8 = 0xF8

    init() {
        super.init(.gpt)
        try! addRegion("mbr", CaptureRegion(offset: 0, length: 512))
        addSafetyCheck(SafetyCheck(name: "mbr") { [unowned self] in try checkPartitions() })
    }

    /// A FAT file system's boot sector has the same signature; two FATs on fixed-disk media give it away.
    private var looksLikeFAT: Bool {
        let sector = region("mbr")!.data
        return sector[0x10] == 2 && sector[0x15] == Self.fixedDiskMedia
    }

    override func formatMatches() throws -> Bool {
        guard region("mbr")!.isComplete else { return false }
        return try region("mbr")!.data.integer(UInt16.self, at: 510) == 0xAA55 && !looksLikeFAT
    }

    private func checkPartitions() throws {
        let sector = region("mbr")!.data
        var used: [Int] = []
        var protective = false
        for index in 0..<4 {
            let entry = Array(sector[(Self.partitionTableStart + 16 * index)..<(Self.partitionTableStart + 16 * (index + 1))])
            guard entry[0] == 0x00 || entry[0] == 0x80 else { throw SafetyViolation("MBR PTE \(index) has invalid boot flag") }
            let type = entry[4]
            if type != 0 { used.append(index) }
            if type == 0xEE {
                protective = true
                guard entry[1] == 0x00, entry[2] == 0x02, entry[3] == 0x00 else { throw SafetyViolation("GPT MBR has invalid start CHS") }
                guard try entry.integer(UInt32.self, at: 8) == 1 else { throw SafetyViolation("GPT MBR has invalid start LBA") }
            }
        }
        if protective && used != [0] { throw SafetyViolation("GPT MBR defines invalid extra partitions") }
        if used.isEmpty { throw SafetyViolation("GPT MBR has no partitions defined") }
    }
}
