import Primitives
import Foundation
import SystemSupport

/// A checksum file (`SHA256SUMS`, `*.sha256`, …), read as Ironic and IPA read them:
/// - a file of one line without a space is the bare checksum;
/// - otherwise the first line (comments `#` skipped) naming the image: GNU text mode
///   `hash  name`, GNU binary mode `hash *name`, or BSD `ALGO (name) = hash`.
///
/// The name is matched literally — unlike Ironic, which puts it unescaped into a regex, so a
/// name holding `.`, `+` or `(` could match the wrong line. Comparison of the hash ignores case.
public enum ChecksumFile {
    /// The name a checksum file knows an image by: the last segment of its URL's path, decoded.
    public static func fileName(of reference: ImageReference) -> String {
        let path = reference.urlComponents?.path ?? reference.original
        let last = path.split(separator: "/").last.map(String.init) ?? ""
        return PercentEncoding.decode(last) ?? last
    }

    /// The checksum for `fileName`, with its algorithm from its length (or the BSD line's name).
    public static func checksum(in text: String, for fileName: String, reference: String, allowMD5: Bool) throws(IronicError) -> ImageChecksum {
        let lines = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !lines.isEmpty else {
            throw IronicError(.imageDownloadFailed, "Failed to download image \(reference), reason: Checksum file empty.")
        }
        if lines.count == 1, !lines[0].contains(" "), !lines[0].contains("\t") {
            return try parse(hex: lines[0], algorithmName: nil, reference: reference, allowMD5: allowMD5)
        }
        for line in lines where !line.hasPrefix("#") {
            if let found = gnuLine(line, fileName) { return try parse(hex: found, algorithmName: nil, reference: reference, allowMD5: allowMD5) }
            if let (algorithm, found) = bsdLine(line, fileName) { return try parse(hex: found, algorithmName: algorithm, reference: reference, allowMD5: allowMD5) }
        }
        throw IronicError(.imageDownloadFailed, "Failed to download image \(reference), reason: Checksum file does not contain name \(fileName)")
    }

    /// `hash  name` or `hash *name`: the hash, when the rest of the line is exactly the name.
    private static func gnuLine(_ line: String, _ fileName: String) -> String? {
        guard let space = line.firstIndex(where: { $0 == " " || $0 == "\t" }) else { return nil }
        let hash = String(line[..<space])
        var rest = line[space...].drop(while: { $0 == " " || $0 == "\t" })
        if rest.hasPrefix("*") { rest = rest.dropFirst() }
        let name = rest.hasPrefix("./") ? rest.dropFirst(2) : rest
        return name == fileName ? hash : nil
    }

    /// `SHA256 (name) = hash`.
    private static func bsdLine(_ line: String, _ fileName: String) -> (String, String)? {
        guard let open = line.firstIndex(of: "("), let equals = line.lastIndex(of: "="), open < equals else { return nil }
        let beforeEquals = line[..<equals].trimmingCharacters(in: .whitespaces)
        guard beforeEquals.hasSuffix(")") else { return nil }
        let name = beforeEquals[beforeEquals.index(after: beforeEquals.firstIndex(of: "(")!)..<beforeEquals.index(before: beforeEquals.endIndex)]
        guard name == fileName || name == "./" + fileName else { return nil }
        let algorithm = line[..<open].trimmingCharacters(in: .whitespaces)
        let hash = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
        return (algorithm, hash)
    }

    private static func parse(hex: String, algorithmName: String?, reference: String, allowMD5: Bool) throws(IronicError) -> ImageChecksum {
        let algorithm: HashAlgorithm?
        if let algorithmName {
            algorithm = HashAlgorithm(name: algorithmName)
        } else {
            switch hex.count {
            case 32: algorithm = .md5
            case 64: algorithm = .sha256
            case 128: algorithm = .sha512
            default: algorithm = nil
            }
        }
        guard let algorithm, hex.count == algorithm.hexLength, Hex.isDigits(hex) else {
            throw IronicError(.imageDownloadFailed, "Failed to download image \(reference), reason: Invalid checksum file (No valid checksum found)")
        }
        if algorithm == .md5 && !allowMD5 {
            throw IronicError(.imageChecksumAlgorithmFailure, "MD5 image checksums are not allowed ([agent] allow_md5_checksum = false); the checksum file of \(reference) gives md5.")
        }
        return try ImageChecksum(algorithm: algorithm, value: hex)
    }
}
