import OsloJSON
import AMQPModel
import Testing
@testable import OsloMessaging

@Suite("oslo wire format against captured bytes")
struct WireFormatTests {
    @Test("a captured cast decodes, and re-encodes to the same 924 bytes")
    func castRoundTrip() throws {
        let body = Array(CapturedWire.cast.utf8)
        #expect(body.count == 924)
        let request = try RPCRequest.decode(body: body, contentType: "application/json")
        #expect(request.method == "change_node_power_state")
        #expect(request.args["node_id"] == "1be26c0b-03f2-4d2e-ae87-c02d7f33c123")
        #expect(request.args["timeout"] == .null)
        #expect(request.version == RPCVersion(major: 1, minor: 39))
        #expect(request.isCall == false)
        #expect(request.uniqueID == "a39aef3b83a045ef8d8dcf0c47fae295")
        #expect(request.context.requestID == "req-7a1c3b7e-0c4e-4c55-9d0e-111111111111")
        #expect(request.context.authToken == "SECRET-TOKEN")
        #expect(request.context.roles == ["admin"])
        #expect(request.encodedBody() == body)
    }

    @Test("a call decodes with its reply queue, message id and timeout, and re-encodes byte for byte")
    func callRoundTrip() throws {
        let body = Array(CapturedWire.call.utf8)
        let request = try RPCRequest.decode(body: body, contentType: "application/json; charset=utf-8")
        #expect(request.isCall)
        #expect(request.messageID == "e210356ac4ad4426a29d392ce67a1c40")
        #expect(request.replyQueue == "reply_a09c124229e741e1b8e5612d27833307")
        #expect(request.callMonitorTimeout == nil)
        #expect(request.version == RPCVersion(major: 1, minor: 49))
        #expect(request.encodedBody() == body)
    }

    @Test("a reply encodes exactly as the captured one")
    func reply() throws {
        let captured = Array(CapturedWire.reply.utf8)
        let decoded = try RPCReply.decode(body: captured)
        #expect(decoded.ending)
        #expect(decoded.failure == nil)
        #expect(decoded.messageID == "e210356ac4ad4426a29d392ce67a1c40")
        let rebuilt = RPCReply(result: decoded.result, messageID: decoded.messageID, uniqueID: "6afc1b32838e44a59b9dde40f3e8fc8c")
        #expect(rebuilt.encodedBody() == captured)
    }

    @Test("a heartbeat has result and failure null and ending false")
    func heartbeat() throws {
        let message = RPCReply.heartbeat(messageID: "m1").encodedMessage
        #expect(message.keys == ["result", "failure", "ending", "_msg_id", "_unique_id"])
        #expect(message["result"] == .null)
        #expect(message["failure"] == .null)
        #expect(message["ending"] == false)
    }

    @Test("a failure reply carries the exception as a JSON string, readable back with its traceback")
    func failureReply() throws {
        let body = Array(CapturedWire.failureReply.utf8)
        let reply = try RPCReply.decode(body: body)
        let failure = try #require(reply.failure)
        #expect(failure.className == "NodeLocked")
        #expect(failure.module == "ironic.common.exception")
        #expect(failure.kwargs["code"] == 409)
        #expect(failure.traceback.count == 3)
        let rebuilt = RPCReply(failure: failure, messageID: reply.messageID, uniqueID: reply.uniqueID)
        #expect(rebuilt.encodedBody() == body)
    }

    @Test("an Ironic failure serializes as Python does: tb empty, args [message], kwargs {code}")
    func ironicFailure() {
        let message = "Validation of image href file:///etc/passwd failed, reason: Security: Path /etc/passwd is not allowed for image source file URLs"
        let failure = RemoteFailure.ironic("ImageRefValidationFailed", message: message, httpStatus: 500)
        #expect(failure.jsonString == CapturedWire.imageRefValidationFailure)
    }

    @Test("a notification encodes as the captured one, with oslo's timestamp format")
    func notification() throws {
        let captured = Array(CapturedWire.notification.utf8)
        let inner = try OsloEnvelope.unwrap(captured)
        var context = JSONObject()
        for field in inner where field.key.hasPrefix("_context_") { context[String(field.key.dropFirst(9))] = field.value }
        // 2026-11-24 21:42:46.512294 UTC
        let micros: Int64 = 1_795_556_566_512_294
        #expect(OsloTimestamp.notificationFormat(microseconds: micros) == "2026-11-24 21:42:46.512294")
        let notification = OsloNotification(
            publisherID: "ironic-conductor.cond-1", eventType: "baremetal.node.power_set.start", priority: .info,
            payload: try #require(inner["payload"]), context: context,
            messageID: "05796bcc-12c6-4eb0-a106-2bc1326d7704", uniqueID: "9809df17b3ab4a609906cdea7113f6b0",
            timestampMicroseconds: micros)
        #expect(notification.encodedBody() == captured)
        #expect(notification.routingKey(topic: "ironic_versioned_notifications") == "ironic_versioned_notifications.info")
        #expect(OsloNotification.Priority.warn.routingSuffix == "warn")
    }

    @Test("timestamps drop the fraction when the microseconds are zero, as Python's str(datetime)")
    func timestampWithoutFraction() {
        #expect(OsloTimestamp.notificationFormat(microseconds: 1_795_556_566_000_000) == "2026-11-24 21:42:46")
        #expect(OsloTimestamp.isoFormat(microseconds: 1_795_556_566_512_294) == "2026-11-24T21:42:46+00:00")
    }

    @Test("oslo message properties set the flags oslo sends: 0xf800, and 0xf900 with an expiration")
    func properties() {
        let cast = AMQPMessageProperties.oslo()
        #expect(cast.contentType == "application/json")
        #expect(cast.contentEncoding == "utf-8")
        #expect(cast.headers == [:])
        #expect(cast.deliveryMode == 2)
        #expect(cast.priority == 0)
        #expect(cast.expiration == nil)
        #expect(AMQPMessageProperties.oslo(expiration: "60000").expiration == "60000")
    }

    @Test("identifiers have oslo's shapes")
    func identifiers() {
        let hex = OsloIdentifiers.uuid4Hex()
        #expect(hex.count == 32)
        #expect(hex.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        let dashed = OsloIdentifiers.uuid4()
        #expect(dashed.split(separator: "-").map(\.count) == [8, 4, 4, 4, 12])
        #expect(dashed[dashed.index(dashed.startIndex, offsetBy: 14)] == "4")
        #expect(OsloIdentifiers.uuid4Hex() != hex)
    }
}

@Suite("Python-compatible JSON")
struct PythonJSONTests {
    @Test("escapes and floats are written as Python's json.dumps writes them")
    func pythonEscapes() throws {
        let value: JSONValue = [
            "name": "nœud-é", "emoji": "😀", "path": "/a/b", "ctl": "\u{01}\t\n", "q": "\"\\",
            "f": [1.5, 1e-07, 1e16, 0.1, 100.0, .double(-0.0), 123456789.123],
        ]
        #expect(JSONWriter().string(value) == CapturedWire.pythonEscapes)
        #expect(try JSONParser().parse(CapturedWire.pythonEscapes) == value)
    }

    @Test("key order and integer/float distinction survive a round trip")
    func orderAndTypes() throws {
        let text = #"{"z": 1, "a": 1.0, "m": [true, false, null], "z2": {"b": "x", "a": -5}}"#
        let value = try JSONParser().parse(text)
        #expect(value.objectValue?.keys == ["z", "a", "m", "z2"])
        #expect(value.objectValue?["z"] == .integer(1))
        #expect(value.objectValue?["a"] == .double(1.0))
        #expect(JSONWriter().string(value) == text)
    }

    @Test("Python's NaN and Infinity tokens are read and written")
    func nonFinite() throws {
        let value = try JSONParser().parse("[NaN, Infinity, -Infinity]")
        #expect(value.arrayValue?[1] == .double(.infinity))
        #expect(JSONWriter().string(value) == "[NaN, Infinity, -Infinity]")
    }

    @Test("malformed and hostile texts are refused with a position", arguments: [
        "{", "{\"a\" 1}", "[1,]", "\"\\x\"", "{\"a\": tru}", "01", "\"\u{01}\"", "[1] 2", "",
        String(repeating: "[", count: 100) + String(repeating: "]", count: 100),
    ])
    func malformed(text: String) {
        #expect(throws: JSONParser.Error.self) { try JSONParser().parse(text) }
    }

    @Test("invalid UTF-8 inside a string is refused")
    func invalidUTF8() {
        #expect(throws: JSONParser.Error.self) { try JSONParser().parse([0x22, 0xff, 0xfe, 0x22]) }
    }

    @Test("duplicate keys: the last one wins on lookup, as in Python")
    func duplicateKeys() throws {
        let value = try JSONParser().parse(#"{"a": 1, "a": 2}"#)
        #expect(value.objectValue?["a"] == 2)
    }

    @Test("surrogate pairs decode to one scalar; lone surrogates become U+FFFD")
    func surrogates() throws {
        #expect(try JSONParser().parse(#""\ud83d\ude00""#) == "😀")
        #expect(try JSONParser().parse(#""\ud83dx""#) == "\u{FFFD}x")
    }
}
