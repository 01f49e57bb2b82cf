import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
import NIOHTTP1

/// Sets up images on the test glance-api (no Keystone: every request is an admin's, so images
/// can be given any owner and members).
public struct GlanceTestClient: Sendable {
    /// Glance's base URL.
    public let url: String
    /// Where glance-api keeps image data (`<store>/<id>`), to alter it behind Glance's back.
    public let store: String

    /// The test glance-api from deploy/test.sh; skips the test when there is none (fails under CI).
    public init() throws {
        url = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_GLANCE_URL", for: "glance-api")
        store = try IntegrationEnvironment.require("IMAGE_WORKER_TEST_GLANCE_STORE", for: "glance-api's store")
    }

    /// Creates an image record; returns its id.
    public func create(visibility: String = "public", owner: String? = nil, properties: [String: String] = [:], diskFormat: String = "raw") async throws -> String {
        var body: [String: Any] = ["name": "test-\(uniqueHex().prefix(8))", "disk_format": diskFormat, "container_format": "bare", "visibility": visibility]
        if let owner { body["owner"] = owner }
        for (key, value) in properties { body[key] = value }
        let answer = try await send("POST", "/v2/images", json: body)
        guard let id = answer["id"] as? String else { throw CommandError(message: "glance did not create an image: \(answer)") }
        return id
    }

    /// Uploads data (the image becomes active, with os_hash sha512 and an md5 checksum).
    public func upload(_ id: String, _ bytes: [UInt8]) async throws {
        var request = HTTPClientRequest(url: "\(url)/v2/images/\(id)/file")
        request.method = .PUT
        request.headers.add(name: "Content-Type", value: "application/octet-stream")
        request.body = .bytes(ByteBuffer(bytes: bytes))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        guard response.status.code == 204 else { throw CommandError(message: "glance refused the upload: \(response.status)") }
    }

    /// Creates and uploads a public image (or one with the given visibility and owner).
    public func image(_ bytes: [UInt8], visibility: String = "public", owner: String? = nil, properties: [String: String] = [:]) async throws -> String {
        let id = try await create(visibility: visibility, owner: owner, properties: properties)
        try await upload(id, bytes)
        return id
    }

    /// Adds a member to a shared image, with a status.
    public func share(_ id: String, with project: String, status: String = "accepted") async throws {
        _ = try await send("POST", "/v2/images/\(id)/members", json: ["member": project])
        _ = try await send("PUT", "/v2/images/\(id)/members/\(project)", json: ["status": status])
    }

    /// Deletes an image.
    public func delete(_ id: String) async throws {
        _ = try await send("DELETE", "/v2/images/\(id)", json: nil)
    }

    /// The image record.
    public func show(_ id: String) async throws -> [String: Any] {
        try await send("GET", "/v2/images/\(id)", json: nil)
    }

    private func send(_ method: String, _ path: String, json: [String: Any]?) async throws -> [String: Any] {
        var request = HTTPClientRequest(url: url + path)
        request.method = .RAW(value: method)
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: Array(try JSONSerialization.data(withJSONObject: json))))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 1 << 20)
        guard response.status.code < 300 else { throw CommandError(message: "glance \(method) \(path): \(response.status)") }
        return (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
    }
}
