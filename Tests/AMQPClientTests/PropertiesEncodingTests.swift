import Testing
@testable import AMQPClient
import AMQPModel

@Suite("content-header bytes")
struct PropertiesEncodingTests {
    /// oslo-wire.md §2.1: `f800 10"application/json" 05"utf-8" 00000000 02 00` for casts, replies
    /// and notifications; calls set the expiration flag (0xf900) and add `05"60000"`.
    static let castHeader: [UInt8] = [0xF8, 0x00, 0x10] + Array("application/json".utf8) + [0x05] + Array("utf-8".utf8) + [0, 0, 0, 0, 0x02, 0x00]
    static let callHeader: [UInt8] = [0xF9, 0x00, 0x10] + Array("application/json".utf8) + [0x05] + Array("utf-8".utf8) + [0, 0, 0, 0, 0x02, 0x00, 0x05] + Array("60000".utf8)

    @Test("oslo's cast properties encode to the captured bytes")
    func cast() {
        let properties = AMQPMessageProperties(contentType: "application/json", contentEncoding: "utf-8", headers: [:], deliveryMode: 2, priority: 0)
        #expect(properties.encodedForContentHeader() == Self.castHeader)
    }

    @Test("oslo's call properties (with expiration) encode to the captured bytes")
    func call() {
        let properties = AMQPMessageProperties(contentType: "application/json", contentEncoding: "utf-8", headers: [:], deliveryMode: 2, priority: 0, expiration: "60000")
        #expect(properties.encodedForContentHeader() == Self.callHeader)
    }

    @Test("absent headers and present empty headers differ on the wire")
    func headersFlag() {
        let without = AMQPMessageProperties(contentType: "application/json").encodedForContentHeader()
        let with = AMQPMessageProperties(contentType: "application/json", headers: [:]).encodedForContentHeader()
        #expect(without[0] == 0x80)
        #expect(with[0] == 0xA0)
        #expect(with.count == without.count + 4)
    }

    @Test("queue arguments keep their wire types", arguments: [
        (AMQPFieldValue.int32(1_800_000), "int32"),
        (AMQPFieldValue.longString("quorum"), "longstr"),
    ])
    func argumentTypes(value: AMQPFieldValue, name: String) {
        // Encode a table holding the value inside the headers property and check the type tag.
        let encoded = AMQPMessageProperties(headers: ["k": value]).encodedForContentHeader()
        let tag = encoded[2 + 4 + 1 + 1]  // flags, table length, key length, key
        #expect(tag == (name == "int32" ? UInt8(ascii: "I") : UInt8(ascii: "S")))
    }
}
