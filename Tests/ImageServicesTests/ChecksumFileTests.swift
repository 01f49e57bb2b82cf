import Foundation
import Testing
@testable import ImageServices

@Suite("checksum files")
struct ChecksumFileTests {
    let sha256 = String(repeating: "a1", count: 32)
    let other = String(repeating: "b2", count: 32)

    func find(_ text: String, _ name: String = "image.qcow2") throws -> ImageChecksum {
        try ChecksumFile.checksum(in: text, for: name, reference: "https://h/SUMS", allowMD5: true)
    }

    @Test("GNU text and binary mode lines, and ./ prefixes")
    func gnu() throws {
        #expect(try find("\(other)  other.img\n\(sha256)  image.qcow2\n").value == sha256)
        #expect(try find("\(other) *other.img\n\(sha256) *image.qcow2\n").value == sha256)
        #expect(try find("\(sha256)  ./image.qcow2").value == sha256)
    }

    @Test("BSD lines name the algorithm")
    func bsd() throws {
        let sha512 = String(repeating: "c3", count: 64)
        let found = try find("SHA256 (other.img) = \(other)\nSHA512 (image.qcow2) = \(sha512)\n")
        #expect(found.algorithm == .sha512)
        #expect(found.value == sha512)
    }

    @Test("the name is matched literally, never as a pattern")
    func regexCharacters() throws {
        let name = "img+v1.(final)[x].qcow2"
        let text = "\(other)  imgXv1X(final)[x]Xqcow2\n\(other)  img+v1.(final)[x].qcow2.bak\n\(sha256)  \(name)\n"
        #expect(try find(text, name).value == sha256)
        #expect(throws: IronicError.self) { try find("\(other)  imgXv1.qcow2\n", "img.v1.qcow2") }
    }

    @Test("upper-case hex is read in any case")
    func upperCase() throws {
        #expect(try find("\(sha256.uppercased())  image.qcow2").value == sha256)
    }

    @Test("only ASCII hex digits make a checksum (full-width digits are digits to Swift, not to a hash)")
    func asciiHexOnly() {
        let fullWidth = String(sha256.dropLast()) + "\u{FF11}"
        #expect(throws: IronicError.self) { _ = try find("\(fullWidth)  image.qcow2") }
        #expect(throws: IronicError.self) { _ = try ImageChecksum(algorithm: .sha256, value: fullWidth) }
    }

    @Test("a single bare hash is the checksum; comments are skipped")
    func bareAndComments() throws {
        #expect(try find(sha256 + "\n").value == sha256)
        #expect(try find("# \(other)  image.qcow2\n\(sha256)  image.qcow2").value == sha256)
    }

    @Test("empty files, missing names and junk are refused with Ironic's messages", arguments: [
        ("", "Checksum file empty."),
        ("\n \n", "Checksum file empty."),
        ("foobar", "Invalid checksum file (No valid checksum found)"),
        ("aaaa  other.img\nbbbb  more.img", "Checksum file does not contain name image.qcow2"),
    ])
    func refused(text: String, expected: String) {
        #expect { _ = try find(text) } throws: { ($0 as? IronicError)?.message.contains(expected) == true }
    }

    @Test("md5 entries obey allow_md5_checksum")
    func md5() {
        let md5 = String(repeating: "d4", count: 16)
        #expect(throws: Never.self) { _ = try ChecksumFile.checksum(in: "\(md5)  image.qcow2", for: "image.qcow2", reference: "r", allowMD5: true) }
        #expect { _ = try ChecksumFile.checksum(in: "\(md5)  image.qcow2", for: "image.qcow2", reference: "r", allowMD5: false) } throws: {
            ($0 as? IronicError)?.code == .imageChecksumAlgorithmFailure
        }
    }

    @Test("an image is named by the last segment of its URL path, decoded")
    func fileName() throws {
        #expect(ChecksumFile.fileName(of: try ImageReference("https://h/a/b/my%20image.qcow2?sig=x")) == "my image.qcow2")
    }
}

@Suite("HTTP helpers")
struct HTTPHelperTests {
    @Test("Last-Modified in its three formats", arguments: [
        "Tue, 15 Nov 2014 08:12:31 GMT", "Tuesday, 15-Nov-14 08:12:31 GMT", "Tue Nov 15 08:12:31 2014",
        "tue, 15 NOV 2014 08:12:31 gmt", "Tue,\t15 Nov 2014  08:12:31 GMT ", "TUESDAY, 15-nov-14 08:12:31 GMT",
    ])
    func dates(text: String) {
        #expect(HTTPDate.parse(text) == 1_416_039_151_000_000)
    }

    @Test("dates agree with Foundation's formatter across four centuries; asctime pads a one-digit day")
    func datesAgreeWithFoundation() throws {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            let seconds = Int64.random(in: -5_000_000_000...8_000_000_000, using: &generator)
            let text = formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
            #expect(HTTPDate.parse(text) == seconds * 1_000_000, "\(text)")
        }
        #expect(HTTPDate.parse("Sun Nov  6 08:49:37 1994") == 784_111_777_000_000)
        #expect(HTTPDate.parse("Thu, 29 Feb 2024 00:00:00 GMT") == 1_709_164_800_000_000)
        #expect(HTTPDate.parse("Thursday, 01-Jan-70 00:00:00 GMT") == 0)
        #expect(HTTPDate.parse("Wednesday, 31-Dec-69 23:59:59 GMT") == 3_155_759_999_000_000)
    }

    @Test("malformed dates are nil", arguments: [
        "", "yesterday", "Tue, 15 Nov 2014 08:12:31 UTC", "Tue, 31 Nov 2014 08:12:31 GMT", "Mon, 29 Feb 2023 00:00:00 GMT",
        "Tue, 15 Nov 2014 24:00:00 GMT", "Tue, 15 Nov 2014 08:12 GMT", "Tue, 15 Foo 2014 08:12:31 GMT", "Tue 15 Nov 2014 08:12:31 GMT",
        "Xyz, 15 Nov 2014 08:12:31 GMT", "Tue, 15 Nov 14 08:12:31 GMT", "Tuesday, 15-Nov-2014 08:12:31 GMT", "Tue Nov 15 08:12:31 14",
        "Tue, 15 Nov 2014 08:12:-1 GMT", "Tue, +5 Nov 2014 08:12:31 GMT",
    ])
    func malformedDates(text: String) {
        #expect(HTTPDate.parse(text) == nil)
    }

    @Test("no_proxy: exact hosts, domain suffixes, ports and *")
    func noProxy() throws {
        let proxy = try ProxySettings.parseProxy("http://user:p%40ss@proxy.example:3128")
        #expect(proxy.host == "proxy.example" && proxy.port == 3128 && proxy.password == "p@ss")
        let settings = ProxySettings(http: proxy, https: proxy, noProxy: ["localhost", ".internal.example", "example.org", "10.0.0.1:8080"])
        #expect(settings.proxy(scheme: "http", host: "images.example.com", port: 80) == proxy)
        #expect(settings.proxy(scheme: "http", host: "localhost", port: 80) == nil)
        #expect(settings.proxy(scheme: "https", host: "a.internal.example", port: 443) == nil)
        #expect(settings.proxy(scheme: "https", host: "mirror.example.org", port: 443) == nil)
        #expect(settings.proxy(scheme: "http", host: "10.0.0.1", port: 8080) == nil)
        #expect(settings.proxy(scheme: "http", host: "10.0.0.1", port: 80) == proxy)
        #expect(ProxySettings(http: proxy, noProxy: ["*"]).proxy(scheme: "http", host: "x", port: 1) == nil)
    }

    @Test("netrc: machine entries, default, and other tokens")
    func netrc() throws {
        let file = try NetrcFile(text: "machine a.example login ua password pa\nmacdef init\ncd /\n\ndefault login ud password pd\n")
        #expect(file.credentials(forMachine: "A.example")! == ("ua", "pa"))
        #expect(file.credentials(forMachine: "b.example") == nil, "a machine without an entry gets nothing from credentials(forMachine:)")
        #expect(file.defaultCredentials! == ("ud", "pd"))
    }

    @Test("Content-Range parsing")
    func contentRange() throws {
        let known = try #require(ContentRange("bytes 10-19/100"))
        #expect(known.start == 10 && known.end == 19 && known.total == 100)
        let unknownTotal = try #require(ContentRange("bytes 10-19/*"))
        #expect(unknownTotal.start == 10 && unknownTotal.end == 19 && unknownTotal.total == nil)
        #expect(ContentRange("bytes 19-10/100") == nil)
        #expect(ContentRange("items 1-2/3") == nil)
        // Found by fuzzing: signs and a complete length that ends before the range.
        #expect(ContentRange("bytes 0-1/-23") == nil)
        #expect(ContentRange("bytes +0-1/100") == nil)
        #expect(ContentRange("bytes 0-99/99") == nil)
        #expect(ContentRange("bytes 0-99/100")?.total == 100)
    }

    @Test("Location headers resolve against the current URL")
    func locations() throws {
        let base = try ParsedHTTPURL("https://u:p@h.example:8443/a/b/image.img?x=1")
        #expect(base.resolving("/c/d")?.withoutUserInfo == "https://h.example:8443/c/d")
        #expect(base.resolving("other.img")?.withoutUserInfo == "https://h.example:8443/a/b/other.img")
        #expect(base.resolving("//cdn.example/z")?.withoutUserInfo == "https://cdn.example/z")
        #expect(base.resolving("http://x.example/y")?.withoutUserInfo == "http://x.example/y")
        #expect(base.resolving("file:///etc/passwd")?.scheme == "file")
        #expect(base.withoutUserInfo == "https://h.example:8443/a/b/image.img?x=1")
    }
}
