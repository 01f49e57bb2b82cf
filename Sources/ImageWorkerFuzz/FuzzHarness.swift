import AMQPModel
import ImageCompression
import ImageFormats
import ImageServices
import ImageWorker
import OsloJSON
import OsloMessaging
import Primitives

/// One parser of hostile bytes, with the invariants it must keep whatever it is fed. A broken
/// invariant stops the process (`fatalError`), which libFuzzer reports as a crash with the input
/// that caused it.
struct FuzzHarness: Sendable {
    /// The name `deploy/fuzz.sh` and the corpus folder (`Tests/Fuzz/corpus/<name>`) use.
    var name: String
    var run: @Sendable ([UInt8]) -> Void

    /// Every harness, by name.
    static let all: [FuzzHarness] = [
        FuzzHarness(name: "json", run: json),
        FuzzHarness(name: "oslo-request", run: osloRequest),
        FuzzHarness(name: "transport-url", run: { transportURL(text($0)) }),
        FuzzHarness(name: "image-reference", run: { imageReference(text($0)) }),
        FuzzHarness(name: "checksum-file", run: { checksumFile(text($0)) }),
        FuzzHarness(name: "ini", run: { ini(text($0)) }),
        FuzzHarness(name: "netrc", run: { netrc(text($0)) }),
        FuzzHarness(name: "http-date", run: { httpDate(text($0)) }),
        FuzzHarness(name: "content-range", run: { contentRange(text($0)) }),
        FuzzHarness(name: "format-inspector", run: formatInspector),
        FuzzHarness(name: "decompressors", run: decompressors),
    ]

    static func named(_ name: String) -> FuzzHarness? {
        all.first { $0.name == name }
    }

    /// Text parsers get the bytes as UTF-8, invalid sequences repaired, as the worker reads text.
    private static func text(_ bytes: [UInt8]) -> String {
        String(decoding: bytes, as: UTF8.self)
    }

    private static func check(_ condition: Bool, _ invariant: @autoclosure () -> String) {
        if !condition { fatalError("invariant broken: \(invariant())") }
    }

    // MARK: Harnesses

    /// The disk image format inspector: the verdict does not depend on how the stream is cut; a
    /// safe verdict has a format, no problem and a virtual size; the stream's length is counted.
    static func formatInspector(_ bytes: [UInt8]) {
        let whole = FormatDetector()
        whole.feed(bytes)
        let verdict = whole.finish()
        let pieces = FormatDetector()
        var start = 0
        while start < bytes.count {
            pieces.feed(Array(bytes[start..<min(start + 777, bytes.count)]))
            start += 777
        }
        check(pieces.finish() == verdict, "the verdict depends on how the stream is cut")
        check(verdict.streamLength == Int64(bytes.count), "the stream's length is miscounted")
        if verdict.isSafe { check(verdict.format != nil && verdict.problem == nil && verdict.virtualSize != nil, "a safe verdict without a format or size") }
    }

    /// The four decompressors on hostile streams (the first byte picks one): never a crash, and
    /// what comes out (its length and an FNV-1a hash, at most 16 MiB of it) and whether the stream
    /// is refused do not depend on how the stream is cut.
    static func decompressors(_ bytes: [UInt8]) {
        guard let selector = bytes.first else { return }
        let compression = ImageCompression.allCases[Int(selector) % ImageCompression.allCases.count]
        let stream = Array(bytes.dropFirst())
        struct Enough: Error {}
        func decompress(piece: Int) -> (count: Int, hash: UInt64, refused: Bool) {
            var count = 0, hash: UInt64 = 0xcbf2_9ce4_8422_2325
            func accept(_ output: UnsafeRawBufferPointer) throws {
                for byte in output.prefix((16 << 20) - count) { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
                count += output.count
                if count >= 16 << 20 { throw Enough() }
            }
            do {
                let decompressor = try compression.makeDecompressor()
                var start = 0
                while start < stream.count {
                    try stream[start..<min(start + piece, stream.count)].withUnsafeBytes { try decompressor.decompress($0, output: accept) }
                    start += piece
                }
                try decompressor.finish(output: accept)
                return (count, hash, false)
            } catch is Enough {
                return (16 << 20, hash, false)
            } catch {
                return (min(count, 16 << 20), hash, true)
            }
        }
        let whole = decompress(piece: max(stream.count, 1))
        let cut = decompress(piece: 61)
        check(whole.refused == cut.refused, "whether the stream is refused depends on how it is cut")
        if !whole.refused { check(whole.count == cut.count && whole.hash == cut.hash, "the output depends on how the stream is cut") }
    }

    /// Python-compatible JSON: whatever parses is written back, and the written text parses to
    /// the same text again (writing is a fixed point).
    static func json(_ bytes: [UInt8]) {
        guard let value = try? JSONParser().parse(bytes) else { return }
        let written = JSONWriter().bytes(value)
        guard let again = try? JSONParser().parse(written) else {
            fatalError("invariant broken: the writer's own output does not parse: \(String(decoding: written, as: UTF8.self).prefix(200))")
        }
        check(JSONWriter().bytes(again) == written, "writing what was read back changes the text")
    }

    /// The oslo envelope and request: decoded or refused, never a crash; a decoded request has a
    /// method and a fingerprint, and its fingerprint does not depend on the order of decoding.
    static func osloRequest(_ bytes: [UInt8]) {
        guard let request = try? RPCRequest.decode(body: bytes, contentType: "application/json") else { return }
        check(!request.method.isEmpty, "a decoded request has a method")
        let again = try? RPCRequest.decode(body: bytes, contentType: "application/json")
        check(again?.fingerprint == request.fingerprint, "decoding the same bytes twice gives the same fingerprint")
    }

    /// `transport_url`: every endpoint has a host and a port in range, and the text shown in
    /// logs never holds a password.
    static func transportURL(_ text: String) {
        guard let url = try? TransportURL(parsing: text) else { return }
        check(!url.endpoints.isEmpty, "a parsed transport URL has an endpoint")
        for endpoint in url.endpoints {
            check((1...65535).contains(endpoint.port), "port \(endpoint.port) in range")
        }
        // The hosts part of the description (the virtual host after it is a name, shown as given).
        let hosts = url.description.dropFirst("rabbit://".count).prefix { $0 != "/" }
        // (A user name is shown decoded: one that holds `:<password>@` itself proves nothing.)
        for endpoint in url.endpoints where !endpoint.password.isEmpty && endpoint.password != "***" && !endpoint.username.contains(endpoint.password) {
            check(!hosts.contains(":\(endpoint.password)@"), "the description of a transport URL shows no password: \(hosts)")
        }
    }

    /// Image references: bounded, and what the URL parser reads as user-info never shows in the
    /// redacted text, nor after a second redaction (an error message holding a redacted
    /// reference is redacted again).
    static func imageReference(_ text: String) {
        let redacted = ImageReference.redact(text)
        let twice = ImageReference.redact(redacted)
        if let components = URLComponentsLite(text), let userInfo = components.authority?.userInfo, userInfo != "***" {
            let shown = "\(components.scheme)://\(userInfo)@"
            check(!redacted.hasPrefix(shown) && !twice.hasPrefix(shown),
                  "the redacted text shows no user-info: user-info \(userInfo.debugDescription), redacted \(redacted.debugDescription), twice \(twice.debugDescription)")
        }
        guard let reference = try? ImageReference(text) else { return }
        check(reference.original.utf8.count <= ImageReference.maximumLength, "an accepted reference is at most \(ImageReference.maximumLength) bytes")
        check(reference.redacted == redacted, "a reference's redacted text is redact(text)")
    }

    /// Checksum files: a checksum found is hex of its algorithm's length.
    static func checksumFile(_ text: String) {
        for name in ["image.img", "disk (1).qcow2", ""] {
            guard let checksum = try? ChecksumFile.checksum(in: text, for: name, reference: "http://example.invalid/" + name, allowMD5: true) else { continue }
            check(checksum.value.count == checksum.algorithm.hexLength, "a \(checksum.algorithm) checksum has \(checksum.algorithm.hexLength) digits")
            check(Hex.isDigits(checksum.value), "a checksum is hex")
        }
    }

    /// ironic.conf-style INI files: parsed or refused with a line number inside the file.
    static func ini(_ text: String) {
        do {
            let file = try INIFile(text: text, file: "fuzz.conf")
            for entry in file.entries {
                check(!entry.name.isEmpty, "an option has a name")
            }
        } catch {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).count
            check(error.line >= 0 && error.line <= lines + 1, "the error's line \(error.line) is in the file (\(lines) lines)")
        }
    }

    /// netrc files: a machine's credentials come from an entry that names it, and every login
    /// and password found is text of the file.
    static func netrc(_ text: String) {
        guard let file = try? NetrcFile(text: text) else { return }
        let machine = file.credentials(forMachine: "example.invalid")
        let found = [machine, file.defaultCredentials].compactMap { $0 }
        if machine != nil {
            check(text.lowercased().contains("example.invalid"), "credentials for a machine the file does not name")
        }
        for (user, password) in found {
            check(text.contains(user) && text.contains(password), "a login or password that is not in the file")
        }
    }

    /// HTTP dates: a date parsed lies in the years a four-digit field can write (0000–9999).
    static func httpDate(_ text: String) {
        guard let microseconds = HTTPDate.parse(text) else { return }
        let seconds = microseconds / 1_000_000
        check(seconds >= -62_167_219_200 && seconds < 253_402_300_800, "a parsed date (\(seconds) s) lies in years 0000–9999")
    }

    /// `Content-Range`: a range parsed starts at or after 0 and ends at or after its start.
    static func contentRange(_ text: String) {
        guard let range = ContentRange(text) else { return }
        check(range.start >= 0 && range.start <= range.end, "0 <= start <= end")
        if let total = range.total { check(total > range.end, "the complete length (\(total)) is past the last byte (\(range.end))") }
    }
}
