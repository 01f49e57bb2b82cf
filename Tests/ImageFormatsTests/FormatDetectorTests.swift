import Testing
@testable import ImageFormats

/// The inspector on images built byte by byte here; `Tests/Formats/differential.py` holds it to
/// oslo.utils' own inspector on images made by qemu-img, sgdisk and xorriso.
@Suite("format inspection")
struct FormatDetectorTests {
    /// A qcow2 v3 header (big-endian) of `size` virtual bytes, padded to `length`.
    static func qcow2(size: UInt64 = 1 << 30, backingFileOffset: UInt64 = 0, incompatible: UInt64 = 0, version: UInt32 = 3,
                      length: Int = 64 << 10) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.bigEndian) { bytes.replaceSubrange(offset..<(offset + $0.count), with: $0) }
        }
        bytes.replaceSubrange(0..<4, with: [0x51, 0x46, 0x49, 0xFB])
        put(version, at: 4)
        put(backingFileOffset, at: 8)
        put(UInt32(16), at: 20)
        put(size, at: 24)
        put(incompatible, at: 0x48)
        return bytes
    }

    /// A GPT's protective MBR: one 0xee entry from CHS 0/2/0, LBA 1, and the signature.
    static func writeProtectiveMBR(into disk: inout [UInt8]) {
        disk[510] = 0x55
        disk[511] = 0xAA
        disk[446 + 4] = 0xEE
        disk[446 + 2] = 0x02
        disk[446 + 8] = 1
    }

    /// Inspects `bytes` fed in pieces of `piece` bytes (the verdict may not depend on it).
    static func inspect(_ bytes: [UInt8], piece: Int = 1000) -> FormatInspection {
        let detector = FormatDetector()
        var start = 0
        while start < bytes.count {
            detector.feed(Array(bytes[start..<min(start + piece, bytes.count)]))
            start += piece
        }
        return detector.finish()
    }

    @Test("a qcow2 is detected with its virtual size, however the stream is cut", arguments: [1, 511, 4096, 70_000])
    func qcow2(piece: Int) {
        let inspection = Self.inspect(Self.qcow2(), piece: piece)
        #expect(inspection.format == .qcow2)
        #expect(inspection.virtualSize == 1 << 30)
        #expect(inspection.isSafe, "\(inspection.reasons)")
        #expect(inspection.streamLength == 64 << 10)
    }

    @Test("a qcow2 with a backing file, an external data file or an unknown feature is refused, by name")
    func hostileQcow2() {
        #expect(Self.inspect(Self.qcow2(backingFileOffset: 0x200)).failures.map(\.check) == ["backing_file"])
        #expect(Self.inspect(Self.qcow2(incompatible: 0x04)).failures.map(\.check) == ["data_file"])
        #expect(Self.inspect(Self.qcow2(incompatible: 1 << 20)).failures.map(\.check) == ["unknown_features"])
        #expect(Self.inspect(Self.qcow2(version: 1)).failures.map(\.check) == ["unknown_features"])
        #expect(Self.inspect(Self.qcow2(version: 2, length: 4096 * 64)).isSafe)
    }

    @Test("bytes no format claims are raw, with the stream's length as virtual size")
    func raw() {
        let bytes = [UInt8](repeating: 0x5A, count: 300_000)
        let inspection = Self.inspect(bytes)
        #expect(inspection.format == .raw)
        #expect(inspection.virtualSize == 300_000)
        #expect(inspection.isSafe)
        let tiny = Self.inspect([1, 2, 3])
        #expect(tiny.format == .raw && tiny.isSafe)
        #expect(Self.inspect([]).format == .raw)
    }

    @Test("an MBR disk is gpt; a bad boot flag, or a protective entry beside another, is refused; a FAT boot sector is not a disk")
    func mbr() {
        var disk = [UInt8](repeating: 0, count: 1 << 20)
        Self.writeProtectiveMBR(into: &disk)
        #expect(Self.inspect(disk).format == .gpt)
        #expect(Self.inspect(disk).isSafe)
        var twoEntries = disk
        twoEntries[446 + 16 + 4] = 0x83
        #expect(Self.inspect(twoEntries).failures.map(\.reason) == ["GPT MBR defines invalid extra partitions"])
        var badFlag = disk
        badFlag[446] = 0x7F
        #expect(Self.inspect(badFlag).failures.map(\.check) == ["mbr"])
        var fat = disk
        fat[0x10] = 2
        fat[0x15] = 0xF8
        #expect(Self.inspect(fat).format == .raw)
    }

    @Test("qed is recognized and always refused")
    func qed() {
        var bytes = [UInt8](repeating: 0, count: 8192)
        bytes.replaceSubrange(0..<4, with: [0x51, 0x45, 0x44, 0x00])
        let inspection = Self.inspect(bytes)
        #expect(inspection.format == .qed)
        #expect(inspection.failures.map(\.check) == ["banned"])
    }

    @Test("two formats in one image are refused (a qcow2 header on an MBR), but an ISO with a GPT is an iso")
    func multiple() {
        var both = Self.qcow2(length: 64 << 10)
        both[510] = 0x55
        both[511] = 0xAA
        both[446 + 4] = 0x83
        let inspection = Self.inspect(both)
        #expect(inspection.format == nil)
        #expect(inspection.problem == "Multiple formats detected: qcow2,gpt")
        #expect(!inspection.isSafe)

        var hybrid = [UInt8](repeating: 0, count: 64 << 10)
        Self.writeProtectiveMBR(into: &hybrid)
        hybrid[32 << 10] = 1
        hybrid.replaceSubrange((32 << 10) + 1..<(32 << 10) + 6, with: Array("CD001".utf8))
        hybrid.replaceSubrange((32 << 10) + 80..<(32 << 10) + 84, with: [16, 0, 0, 0])  // 16 blocks
        hybrid.replaceSubrange((32 << 10) + 128..<(32 << 10) + 130, with: [0, 8])  // of 2048 bytes
        let iso = Self.inspect(hybrid)
        #expect(iso.format == .iso)
        #expect(iso.virtualSize == Int64(32_768))
        #expect(iso.isSafe)
    }

    @Test("a VMDK descriptor file naming a path, or of a flat create type, is refused")
    func vmdkDescriptorFiles() {
        func descriptor(_ type: String, extent: String) -> [UInt8] {
            Array("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"\(type)\"\n\n# Extent description\n\(extent)\n\nddb.virtualHWVersion = \"4\"\n".utf8)
        }
        #expect(Self.inspect(descriptor("monolithicFlat", extent: "RW 2048 FLAT \"disk-flat.vmdk\" 0")).failures.map(\.reason) == ["Unsupported subformat"])
        #expect(Self.inspect(descriptor("monolithicSparse", extent: "RW 2048 SPARSE \"/etc/shadow\"")).failures.map(\.reason) == ["Invalid extent filenames found"])
        #expect(Self.inspect(descriptor("monolithicSparse", extent: "RW 2048 SPARSE \"disk.vmdk\"")).format == .vmdk)
        // As Characters "\r\n" is one, which must not hide an extent line inside a comment.
        let crlf = Array("# Disk DescriptorFile\r\nversion=1\r\ncreateType=\"monolithicSparse\"\r\n#x\r\nRW 2048 FLAT \"/etc/shadow\" 0\r\n".utf8)
        #expect(Self.inspect(crlf).failures.map(\.reason) == ["Invalid extent filenames found"])
    }

    @Test("a size past Int64 in a header is clamped, never negative")
    func hugeSizes() {
        let inspection = Self.inspect(Self.qcow2(size: .max))
        #expect(inspection.format == .qcow2 && inspection.virtualSize == .max)
    }
}
