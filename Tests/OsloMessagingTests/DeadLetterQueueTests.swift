import AMQPModel
import OsloJSON
import Testing
@testable import OsloMessaging

@Suite("dead-letter copies")
struct DeadLetterQueueTests {
    let queue = DeadLetterQueue(name: "image-worker.dead", quorum: false)

    func delivery(_ properties: AMQPMessageProperties, routingKey: String = "ironic.image_worker") -> AMQPDelivery {
        AMQPDelivery(body: Array("{}".utf8), properties: properties, exchange: "ironic", routingKey: routingKey,
                     consumerTag: "c", deliveryTag: 1, redelivered: false, connectionGeneration: 1)
    }

    @Test("the copy keeps the body and properties, and says where it came from and why")
    func ordinary() {
        let message = queue.message(for: delivery(AMQPMessageProperties(contentType: "application/json", headers: ["x-trace": .longString("t")])),
                                    reason: DeadLetterReason(code: "InvalidParameterValue", message: "bad"))
        #expect(message.validationProblem == nil)
        #expect(message.exchange == "image-worker.dead")
        #expect(message.body == Array("{}".utf8))
        #expect(message.properties.contentType == "application/json")
        #expect(message.properties.deliveryMode == 2)
        let headers = message.properties.headers?.entries ?? []
        #expect(headers.first { $0.key == "x-trace" }?.value == .longString("t"))
        #expect(headers.first { $0.key == "x-image-worker-error-code" }?.value == .longString("InvalidParameterValue"))
        #expect(!headers.contains { $0.key == "x-image-worker-cut" })
    }

    /// What librabbitmq hands over for 255 bytes of invalid UTF-8: each byte repaired to U+FFFD,
    /// 765 bytes of text.
    @Test("text repaired past 255 bytes is cut, so the copy can be published; the headers say what was cut")
    func repairedText() {
        let repaired = String(repeating: "\u{FFFD}", count: 255)
        let longKey = "k" + repaired
        let properties = AMQPMessageProperties(contentType: repaired, headers: [longKey: .table([longKey: .int32(1)])], type: repaired)
        let message = queue.message(for: delivery(properties, routingKey: repaired), reason: DeadLetterReason(code: "InvalidParameterValue", message: "bad"))
        #expect(message.validationProblem == nil, "a copy the broker cannot take would be dropped")
        #expect(message.properties.contentType == String(repeating: "\u{FFFD}", count: 85))
        #expect(message.properties.type?.utf8.count == 255)
        #expect(message.routingKey.utf8.count <= 255)
        let headers = message.properties.headers?.entries ?? []
        #expect(headers.first { $0.key == "x-image-worker-cut" }?.value == .longString("content type, header name, routing key, type"))
        #expect(headers.first { $0.key == "x-image-worker-original-routing-key" }?.value == .longString(repaired), "the original is kept in a long string")
    }

    @Test("a call's per-message TTL does not make the copy expire; it is kept in a header")
    func expiration() {
        let message = queue.message(for: delivery(AMQPMessageProperties(contentType: "application/json", expiration: "60000")),
                                    reason: DeadLetterReason(code: "InvalidParameterValue", message: "bad"))
        #expect(message.properties.expiration == nil)
        #expect(message.properties.headers?.entries.first { $0.key == "x-image-worker-original-expiration" }?.value == .longString("60000"))
    }

    @Test("short-string prefixes are cut between characters")
    func prefixes() {
        #expect(AMQPOutgoingMessage.shortStringPrefix(String(repeating: "a", count: 300)) == String(repeating: "a", count: 255))
        #expect(AMQPOutgoingMessage.shortStringPrefix(String(repeating: "é", count: 200)) == String(repeating: "é", count: 127))
        #expect(AMQPOutgoingMessage.shortStringPrefix("short") == "short")
    }

    @Test("the caller's token is not kept in the copy; a body that does not parse is kept as it is")
    func secrets() throws {
        let request: JSONObject = ["method": "fetch_image", "args": ["node_uuid": "n1"], "_context_auth_token": "SECRET-TOKEN",
                                   "_context_request_id": "req-1", "_unique_id": "u1"]
        var original = delivery(AMQPMessageProperties(contentType: "application/json"))
        original.body = OsloEnvelope.wrap(request)
        let message = queue.message(for: original, reason: DeadLetterReason(code: "InvalidParameterValue", message: "bad"))
        #expect(!String(decoding: message.body, as: UTF8.self).contains("SECRET-TOKEN"))
        let copied = try OsloEnvelope.unwrap(message.body)
        #expect(copied["_context_auth_token"] == .string("***"))
        #expect(copied["_context_request_id"] == .string("req-1"))
        #expect(copied["method"] == .string("fetch_image"))
        #expect(copied["_unique_id"] == .string("u1"))
        #expect(message.properties.headers?.entries.first { $0.key == "x-image-worker-redacted" }?.value == .longString("_context_auth_token"))

        // A key given twice: both values go (a parser may take either).
        var repeated = original
        repeated.body = Array(#"{"method": "m", "args": {}, "_context_auth_token": "FIRST-SECRET", "_context_auth_token": "SECOND-SECRET"}"#.utf8)
        let copy = String(decoding: queue.message(for: repeated, reason: DeadLetterReason(code: "InvalidParameterValue", message: "bad")).body, as: UTF8.self)
        #expect(!copy.contains("FIRST-SECRET") && !copy.contains("SECOND-SECRET"))

        var malformed = original
        malformed.body = Array(#"{"method": "fetch_image", "_context_auth_token": "SECRET"#.utf8)
        #expect(queue.message(for: malformed, reason: DeadLetterReason(code: "InvalidParameterValue", message: "bad")).body == malformed.body)
    }
}
