import Testing
@testable import OsloMessaging
import OsloJSON

@Suite("request decoding refusals")
struct RequestDecodingTests {
    func decode(_ text: String, contentType: String? = "application/json") throws(RPCRequestDecodingError) -> RPCRequest {
        try RPCRequest.decode(body: Array(text.utf8), contentType: contentType)
    }

    @Test("an un-enveloped inner dict is accepted")
    func bareDict() throws {
        let request = try decode(#"{"method": "fetch_image", "args": {"node_uuid": "x"}, "version": "1.0"}"#)
        #expect(request.method == "fetch_image")
    }

    @Test("a missing version means 1.0")
    func defaultVersion() throws {
        #expect(try decode(#"{"method": "m", "args": {}}"#).version == RPCVersion(major: 1, minor: 0))
    }

    @Test("refusals name the problem and keep the ids that were readable", arguments: [
        (#"not json"#, "application/json", "not valid JSON"),
        (#"{"args": {}, "_msg_id": "m", "_reply_q": "r"}"#, "application/json", "no 'method'"),
        (#"{"method": 5, "args": {}}"#, "application/json", "'method' is a number"),
        (#"{"method": "m"}"#, "application/json", "no 'args'"),
        (#"{"method": "m", "args": [1]}"#, "application/json", "'args' is a list"),
        (#"{"method": "m", "args": {}, "version": 1.5}"#, "application/json", "'version' must be"),
        (#"{"method": "m", "args": {}, "_timeout": "soon"}"#, "application/json", "'_timeout'"),
        (#"{"method": "m", "args": {}, "_msg_id": "m"}"#, "application/json", "both '_msg_id' and '_reply_q'"),
        (#"{"method": "m", "args": {}, "_msg_id": "m", "_reply_q": "r"}"#, "text/plain", "content type 'text/plain'"),
        (#"{"oslo.version": "3.0", "oslo.message": "{}"}"#, "application/json", "unsupported oslo envelope version"),
        (#"{"oslo.version": "2.0", "oslo.message": 5}"#, "application/json", "oslo.message is missing or not a string"),
        (#"[1, 2]"#, "application/json", "a list, not a JSON object"),
    ])
    func refusals(body: String, contentType: String, expected: String) {
        #expect {
            _ = try decode(body, contentType: contentType)
        } throws: { error in
            (error as? RPCRequestDecodingError)?.reason.contains(expected) == true
        }
    }

    @Test("a wrong content type still yields the ids needed to reply")
    func idsOfRefusedCall() {
        do {
            _ = try decode(#"{"method": "fetch_image", "args": {"node_uuid": "n1"}, "_msg_id": "m1", "_reply_q": "reply_x", "_unique_id": "u1", "_context_request_id": "req-1"}"#, contentType: nil)
            Issue.record("a message without content type was accepted")
        } catch {
            #expect(error.messageID == "m1")
            #expect(error.replyQueue == "reply_x")
            #expect(error.uniqueID == "u1")
            #expect(error.method == "fetch_image")
            #expect(error.nodeUUID == "n1")
            #expect(error.context.requestID == "req-1")
        }
    }

    @Test("a reply queue over 255 bytes is refused like a malformed message, and not replied to")
    func overlongReplyQueue() throws {
        let longest = String(repeating: "q", count: 255)
        #expect(try decode(#"{"method": "m", "args": {}, "_msg_id": "a", "_reply_q": "\#(longest)"}"#).replyQueue == longest)
        do {
            _ = try decode(#"{"method": "m", "args": {}, "_msg_id": "a", "_reply_q": "\#(longest)é", "_unique_id": "u1"}"#)
            Issue.record("a 257-byte reply queue was accepted")
        } catch {
            #expect(error.reason == "'_reply_q' is 257 bytes long; an AMQP routing key holds at most 255")
            #expect(error.replyQueue == nil, "no reply is attempted to a queue the broker refuses")
            #expect(error.messageID == "a")
            #expect(error.uniqueID == "u1")
        }
    }

    @Test("a call-monitor timeout of 0 or null means no heartbeats")
    func monitorTimeout() throws {
        #expect(try decode(#"{"method": "m", "args": {}, "_msg_id": "a", "_reply_q": "b", "_timeout": 4}"#).callMonitorTimeout == 4)
        #expect(try decode(#"{"method": "m", "args": {}, "_msg_id": "a", "_reply_q": "b", "_timeout": 0}"#).callMonitorTimeout == nil)
        #expect(try decode(#"{"method": "m", "args": {}, "_msg_id": "a", "_reply_q": "b", "_timeout": null}"#).callMonitorTimeout == nil)
    }

    @Test("the context's secrets are redacted from its description")
    func contextRedaction() throws {
        let request = try decode(#"{"method": "m", "args": {}, "_context_auth_token": "SECRET-TOKEN", "_context_request_id": "req-1"}"#)
        #expect(request.context.authToken == "SECRET-TOKEN")
        #expect(!request.context.description.contains("SECRET-TOKEN"))
        #expect(request.context.redactedFields["auth_token"] == .null)
        #expect(request.context.redactedFields["request_id"] == "req-1")
    }

    @Test("versions: same major, minor not above the endpoint's")
    func versions() {
        let endpoint = RPCVersion(major: 1, minor: 0)
        #expect(endpoint.serves(RPCVersion("1.0")!))
        #expect(!endpoint.serves(RPCVersion("1.1")!))
        #expect(!endpoint.serves(RPCVersion("2.0")!))
        #expect(RPCVersion("1") == RPCVersion(major: 1, minor: 0))
        #expect(RPCVersion("x.1") == nil)
    }
}
