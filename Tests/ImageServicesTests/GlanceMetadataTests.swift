import Foundation
import Testing
@testable import ImageServices

@Suite("Glance records: the checksum follows instance_info's rules")
struct GlanceMetadataTests {
    let id = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
    let sha512 = String(repeating: "ab", count: 64)
    let md5 = String(repeating: "cd", count: 16)

    func metadata(_ fields: String) throws(IronicError) -> ImageMetadata {
        let json = #"{"id": "\#(id)", "status": "active", "size": 3\#(fields.isEmpty ? "" : ", " + fields)}"#
        let record = try! JSONDecoder().decode(GlanceImageRecord.self, from: Data(json.utf8))
        return try GlanceImageService.metadata(record, id: id)
    }

    @Test("os_hash_algo and os_hash_value win over the md5 checksum; the md5 alone is used; none is none")
    func accepted() throws {
        #expect(try metadata(#""os_hash_algo": "sha512", "os_hash_value": "\#(sha512)", "checksum": "\#(md5)""#).checksum
                == ImageChecksum(algorithm: .sha512, value: sha512))
        #expect(try metadata(#""checksum": "\#(md5)""#).checksum == ImageChecksum(algorithm: .md5, value: md5))
        #expect(try metadata(#""os_hash_algo": null, "os_hash_value": null, "checksum": null"#).checksum == nil)
    }

    @Test("an algorithm nobody supports is refused, not replaced by the md5 or by no verification")
    func unknownAlgorithm() {
        #expect { _ = try metadata(#""os_hash_algo": "whirlpool", "os_hash_value": "\#(sha512)", "checksum": "\#(md5)""#) } throws: {
            let error = $0 as? IronicError
            return error?.code == .imageChecksumAlgorithmFailure && error?.message.contains("whirlpool") == true
        }
        #expect { _ = try metadata(#""os_hash_algo": "whirlpool", "os_hash_value": "\#(sha512)""#) } throws: {
            ($0 as? IronicError)?.code == .imageChecksumAlgorithmFailure
        }
    }

    @Test("a malformed value makes the image unacceptable")
    func malformedValue() {
        for fields in [#""os_hash_algo": "sha512", "os_hash_value": "not-hex", "checksum": "\#(md5)""#,
                       #""os_hash_value": "\#(sha512)""#,
                       #""checksum": "abc""#] {
            do {
                _ = try metadata(fields)
                Issue.record("accepted: \(fields)")
            } catch {
                #expect(error.code == .imageUnacceptable, "\(fields)")
                #expect(error.message.hasPrefix("Image \(id) is unacceptable"))
            }
        }
    }
}
