/// VMware's VMDK, monolithicSparse and streamOptimized only: a "KDMV" sparse header (or, for a
/// descriptor file, text), then a text descriptor at sector 1 whose `createType` and extent lines
/// are checked. Refused: other create types (monolithicFlat and friends read other files), an
/// extent line naming a path, any line the descriptor grammar does not have, and a footer
/// (streamOptimized) that disagrees with the header.
final class VMDKInspector: FormatInspector {
    private static let descriptorOffset: Int64 = 0x200
    private static let descriptorMaximum = (1 << 20) - 1
    private static let grainDirectoryAtEnd = UInt64.max
    private static let minimumSparseHeader = 64
    private static let markerEndOfStream: UInt32 = 0
    private static let markerFooter: UInt32 = 3
    private static let supportedTypes: Set<String> = ["monolithicsparse", "streamoptimized"]

    private var descriptorText: String?
    private var createType: String?

    init() {
        super.init(.vmdk)
        try! addRegion("header", CaptureRegion(offset: 0, length: 512, minimumLength: Self.minimumSparseHeader))
        // Older variants start with the descriptor; replaced once a sparse header says where it is.
        try! addRegion("descriptor", CaptureRegion(offset: 0, length: Self.descriptorMaximum, minimumLength: 4))
        addSafetyCheck(SafetyCheck(name: "descriptor") { [unowned self] in try checkDescriptor() })
    }

    private struct SparseHeader: Equatable {
        var signature: [UInt8], version: UInt32, descriptorSector: UInt64, descriptorSectors: UInt64, grainDirectory: UInt64
    }

    private func sparseHeader(_ name: String, at offset: Int = 0) throws -> SparseHeader {
        let data = region(name)!.data
        guard data.count >= offset + Self.minimumSparseHeader else { throw ImageFormatError("truncated sparse header") }
        return SparseHeader(signature: Array(data[offset..<(offset + 4)]), version: try data.integer(UInt32.self, at: offset + 4),
                            descriptorSector: try data.integer(UInt64.self, at: offset + 28),
                            descriptorSectors: try data.integer(UInt64.self, at: offset + 36),
                            grainDirectory: try data.integer(UInt64.self, at: offset + 56))
    }

    /// Python's `str.isprintable() or str.isspace()` over ASCII.
    private static func isText(_ bytes: [UInt8]) -> Bool {
        bytes.allSatisfy { (0x20...0x7E).contains($0) || (0x09...0x0D).contains($0) || (0x1C...0x1F).contains($0) }
    }

    override func postProcess() throws {
        guard let headerRegion = region("header"), headerRegion.isComplete else { return }
        let header = try sparseHeader("header")
        guard header.signature == Array("KDMV".utf8) else {
            // All text so far and no sparse signature: a descriptor file, still to be checked.
            if Self.isText(headerRegion.data) {
                deleteRegion("header")
                return
            }
            throw ImageFormatError("Signature KDMV not found")
        }
        guard (1...3).contains(header.version) else { throw ImageFormatError("Unsupported format version") }
        if header.grainDirectory == Self.grainDirectoryAtEnd && !hasRegion("footer") {
            // The footer takes precedence over the header; it is checked against it.
            try addRegion("footer", CaptureRegion(lastBytes: 1536))
            addSafetyCheck(SafetyCheck(name: "footer") { [unowned self] in try checkFooter() })
        }
        let (offset, overflow) = header.descriptorSector.multipliedReportingOverflow(by: 512)
        guard !overflow, offset == UInt64(Self.descriptorOffset) else { throw ImageFormatError("Wrong descriptor location") }
        let (bytes, tooMany) = header.descriptorSectors.multipliedReportingOverflow(by: 512)
        let size = tooMany ? Self.descriptorMaximum : Int(min(bytes, UInt64(Self.descriptorMaximum)))
        if region("descriptor")!.offset == 0 {
            deleteRegion("descriptor")
            try addRegion("descriptor", CaptureRegion(offset: Self.descriptorOffset, length: size))
        }
    }

    override func regionCompleted(_ name: String) throws {
        guard name == "descriptor" else { return }
        var data = region("descriptor")!.data
        // A sparse file's descriptor is padded with NULs.
        if let end = data.firstIndex(of: 0) { data = Array(data[..<end]) }
        guard data.allSatisfy({ $0 < 0x80 }) else { return }  // not ASCII: left unparsed
        let text = Array(String(decoding: data, as: UTF8.self).lowercased().utf8)
        var type = "formatnotfound"
        let marker = Array("createtype=\"".utf8)
        if let found = text.indices.first(where: { text[$0...].starts(with: marker) }) {
            let start = found + marker.count
            // Python's find() gives -1 without a closing quote, and text[start:-1] then.
            let end = text[start...].firstIndex(of: UInt8(ascii: "\"")) ?? -1
            if end - start < 64 {
                let stop = end < 0 ? text.count + end : end
                type = start < stop ? String(decoding: text[start..<stop], as: UTF8.self) : ""
            }
        }
        descriptorText = String(decoding: text, as: UTF8.self)
        createType = type
    }

    override func formatMatches() throws -> Bool {
        if let header = region("header") { return header.data.hasPrefix(Array("KDMV".utf8)) }
        guard let createType else { throw ImageFormatError("VMDK descriptor was not readable") }
        return createType != "formatnotfound"
    }

    override func virtualSize(streamLength: Int64) throws -> Int64 {
        guard descriptorText?.isEmpty == false, let createType, Self.supportedTypes.contains(createType) else { return 0 }
        guard let header = region("header") else { throw ImageFormatError("no sparse header") }
        let (bytes, overflow) = try header.data.integer(UInt64.self, at: 12).multipliedReportingOverflow(by: 512)
        return overflow || bytes > UInt64(Int64.max) ? .max : Int64(bytes)
    }

    private func checkDescriptor() throws {
        guard let descriptorText, !descriptorText.isEmpty else { throw SafetyViolation("No descriptor found") }
        guard let createType, Self.supportedTypes.contains(createType) else { throw SafetyViolation("Unsupported subformat") }
        var extents: [Substring] = []
        // Split on the byte 0x0A as Python does: as Characters, "\r\n" is one and would not split,
        // so a CRLF descriptor's extent lines would hide inside the comment line before them.
        for rawLine in descriptorText.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = Substring(String(String.UnicodeScalarView(rawLine))).trimmingPythonWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("ddb") { continue }
            if let equals = line.firstIndex(of: "="), !line[..<equals].contains(" ") { continue }  // a header field
            if ["rw", "rdonly", "noaccess"].contains(line.split(separator: " ", omittingEmptySubsequences: false).first ?? "") {
                extents.append(line)
                continue
            }
            throw SafetyViolation("Invalid VMDK descriptor data")
        }
        if extents.contains(where: { $0.contains("/") }) { throw SafetyViolation("Invalid extent filenames found") }
        if extents.isEmpty { throw SafetyViolation("No extents found") }
    }

    private func checkFooter() throws {
        let header = try sparseHeader("header")
        let footer = try sparseHeader("footer", at: 512)
        if header.signature != footer.signature { throw SafetyViolation("Header and footer signature do not match") }
        if header.version != footer.version { throw SafetyViolation("Header and footer versions do not match") }
        if header.descriptorSector != footer.descriptorSector || header.descriptorSectors != footer.descriptorSectors {
            throw SafetyViolation("Footer specifies a different descriptor than header")
        }
        if footer.grainDirectory == Self.grainDirectoryAtEnd { throw SafetyViolation("Footer indicates another footer") }
        let data = region("footer")!.data
        guard data.count >= 512 else { throw ImageFormatError("truncated footer") }
        if try !Self.isMarker(Array(data[..<512]), type: Self.markerFooter, value: nil) { throw SafetyViolation("Footer marker is invalid") }
        if try !Self.isMarker(Array(data.suffix(512)), type: Self.markerEndOfStream, value: 0) { throw SafetyViolation("End-of-stream marker is invalid") }
    }

    /// A stream marker: value (checked when given), size 0, `type`, 496 zero bytes.
    private static func isMarker(_ sector: [UInt8], type: UInt32, value: UInt64?) throws -> Bool {
        let matches = try value.map { try sector.integer(UInt64.self, at: 0) == $0 } ?? true
        return try matches && sector.integer(UInt32.self, at: 8) == 0 && sector.integer(UInt32.self, at: 12) == type
            && sector[16...].allSatisfy { $0 == 0 }
    }
}

extension Substring {
    /// Python's `str.strip()` over ASCII: spaces, \t\n\v\f\r and \x1c-\x1f.
    func trimmingPythonWhitespace() -> Substring {
        let isSpace: (Character) -> Bool = { character in
            guard let ascii = character.asciiValue else { return false }
            return ascii == 0x20 || (0x09...0x0D).contains(ascii) || (0x1C...0x1F).contains(ascii)
        }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return self[first...last]
    }
}
