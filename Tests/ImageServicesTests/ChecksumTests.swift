import Crypto
import Foundation
import Testing
@testable import ImageServices

@Suite("checksums")
struct ChecksumTests {
    let sha256 = String(repeating: "ab", count: 32)
    let sha512 = String(repeating: "cd", count: 64)
    let md5 = String(repeating: "ef", count: 16)

    @Test("os_hash fields win over image_checksum")
    func osHashWins() throws {
        let source = try ChecksumSource.parse(imageChecksum: md5, osHashAlgorithm: "sha512", osHashValue: sha512, allowMD5: false)
        #expect(source == .value(try ImageChecksum(algorithm: .sha512, value: sha512)))
    }

    @Test("bare hex is md5, sha256 or sha512 by its length")
    func bareHex() throws {
        #expect(try ChecksumSource.parse(imageChecksum: md5, osHashAlgorithm: nil, osHashValue: nil, allowMD5: true) == .value(try ImageChecksum(algorithm: .md5, value: md5)))
        #expect(try ChecksumSource.parse(imageChecksum: sha256, osHashAlgorithm: nil, osHashValue: nil, allowMD5: true) == .value(try ImageChecksum(algorithm: .sha256, value: sha256)))
        #expect(try ChecksumSource.parse(imageChecksum: sha512, osHashAlgorithm: nil, osHashValue: nil, allowMD5: true) == .value(try ImageChecksum(algorithm: .sha512, value: sha512)))
    }

    @Test("algo:hex, any case, is normalised to lower case")
    func algoPrefixed() throws {
        let source = try ChecksumSource.parse(imageChecksum: "SHA256:\(sha256.uppercased())", osHashAlgorithm: nil, osHashValue: nil, allowMD5: true)
        #expect(source == .value(try ImageChecksum(algorithm: .sha256, value: sha256)))
    }

    @Test("an http(s) value is a checksum file URL")
    func checksumFile() throws {
        let source = try ChecksumSource.parse(imageChecksum: "https://h/SHA256SUMS", osHashAlgorithm: nil, osHashValue: nil, allowMD5: true)
        #expect(source == .checksumFile(try ImageReference("https://h/SHA256SUMS")))
    }

    @Test("md5 is refused when [agent] allow_md5_checksum is false")
    func md5Refused() {
        #expect {
            _ = try ChecksumSource.parse(imageChecksum: md5, osHashAlgorithm: nil, osHashValue: nil, allowMD5: false)
        } throws: { ($0 as? IronicError)?.code == .imageChecksumAlgorithmFailure }
        #expect {
            _ = try ChecksumSource.parse(imageChecksum: nil, osHashAlgorithm: "md5", osHashValue: md5, allowMD5: false)
        } throws: { ($0 as? IronicError)?.code == .imageChecksumAlgorithmFailure }
    }

    @Test("malformed checksums name the problem", arguments: [
        ("abc", IronicError.Code.invalidParameterValue),
        ("sha256:abc", .invalidParameterValue),
        ("whirlpool:\(String(repeating: "a", count: 64))", .imageChecksumAlgorithmFailure),
        ("sha256:", .imageChecksumError),
        ("sha256:\(String(repeating: "z", count: 64))", .invalidParameterValue),
    ])
    func malformed(text: String, code: IronicError.Code) {
        #expect {
            _ = try ChecksumSource.parse(imageChecksum: text, osHashAlgorithm: nil, osHashValue: nil, allowMD5: true)
        } throws: { ($0 as? IronicError)?.code == code }
    }

    @Test("no checksum at all is .none; a hash value without its algorithm is missing")
    func absent() throws {
        #expect(try ChecksumSource.parse(imageChecksum: "  ", osHashAlgorithm: nil, osHashValue: nil, allowMD5: true) == ChecksumSource.none)
        #expect {
            _ = try ChecksumSource.parse(imageChecksum: nil, osHashAlgorithm: nil, osHashValue: sha256, allowMD5: true)
        } throws: { ($0 as? IronicError)?.code == .missingParameterValue }
    }

    @Test("several digests in one pass match the standard test vectors")
    func multiDigest() throws {
        var digest = try MultiDigest([.md5, .sha1, .sha256, .sha512])
        digest.update(Array("ab".utf8))
        digest.update(Array("c".utf8))
        let result = digest.finalize()
        #expect(result[.md5] == "900150983cd24fb0d6963f7d28e17f72")
        #expect(result[.sha1] == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(result[.sha256] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(result[.sha512] == "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
        #expect(result[.sha384] == nil)
    }

    @Test("SHA-384 and SHA-512 (through OpenSSL) match the test vectors and swift-crypto, and copies are independent")
    func openSSLDigests() throws {
        var digest = try MultiDigest([.sha384, .sha512])
        digest.update(Array("ab".utf8))
        var copy = digest
        digest.update(Array("c".utf8))
        copy.update(Array("X".utf8))
        let result = digest.finalize()
        #expect(result[.sha384] == "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7")
        #expect(result[.sha512] == "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
        #expect(digest.finalize() == result, "finalize leaves the running digest as it was")
        let abX = Array("abX".utf8)
        #expect(copy.finalize()[.sha512] == SHA512.hash(data: abX).map { String(format: "%02x", $0) }.joined())
        #expect(copy.finalize()[.sha384] == SHA384.hash(data: abX).map { String(format: "%02x", $0) }.joined())
        var large = try MultiDigest([.sha512])
        let megabytes = [UInt8](repeating: 0x5a, count: 3 << 20)
        megabytes.withUnsafeBytes { large.update($0) }
        #expect(large.finalize()[.sha512] == SHA512.hash(data: megabytes).map { String(format: "%02x", $0) }.joined())
    }

    @Test("algorithm names are read the way hashlib spells them")
    func algorithmNames() {
        #expect(HashAlgorithm(name: "SHA-256") == .sha256)
        #expect(HashAlgorithm(name: "sha_512") == .sha512)
        #expect(HashAlgorithm(name: "crc32") == nil)
    }
}
