import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A Keystone v3 token for the worker's own identity, with Glance's endpoint from its service
/// catalog, fetched when first needed and again when Glance says it expired (401).
actor KeystoneSession {
    struct Token: Sendable {
        var value: String
        var projectID: String?
        var imageEndpoint: String?
        var expiresAt: Date?
    }

    private let credentials: GlanceSettings.KeystonePassword
    private let transport: HTTPTransport
    private var current: Token?

    init(credentials: GlanceSettings.KeystonePassword, transport: HTTPTransport) {
        self.credentials = credentials
        self.transport = transport
    }

    /// A valid token (a new one when `renew`, when none is held, or when it expires within a minute).
    func token(renew: Bool = false) async throws -> Token {
        if !renew, let current, (current.expiresAt.map { $0.timeIntervalSinceNow > 60 } ?? true) { return current }
        let token = try await authenticate()
        current = token
        return token
    }

    private func authenticate() async throws -> Token {
        var base = credentials.authURL
        while base.hasSuffix("/") { base.removeLast() }
        if !base.hasSuffix("/v3") { base += "/v3" }
        let reference = try ImageReference(base + "/auth/tokens")
        let project: [String: Any]
        if let projectID = credentials.projectID {
            project = ["id": projectID]
        } else {
            project = ["name": credentials.projectName ?? "", "domain": ["name": credentials.projectDomainName]]
        }
        let body: [String: Any] = ["auth": [
            "identity": ["methods": ["password"], "password": ["user": [
                "name": credentials.username, "domain": ["name": credentials.userDomainName], "password": credentials.password,
            ]]],
            "scope": ["project": project],
        ]]
        var request = HTTPClientRequest(url: base + "/auth/tokens")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: Array(try JSONSerialization.data(withJSONObject: body))))
        let url = try ParsedHTTPURL(reference.original)
        let response: HTTPClientResponse
        let data: ByteBuffer
        do {
            (response, data) = try await transport.collect(request, to: url, timeout: .seconds(60), limit: 8 << 20)
        } catch {
            throw IronicError(.temporaryFailure, "Keystone at \(base) cannot be reached: \(HTTPErrors.describe(error)).", retryable: true)
        }
        guard response.status.code == 201 || response.status.code == 200, let subject = response.headers.first(name: "X-Subject-Token") else {
            throw IronicError(.imageNotAuthorized, "Keystone at \(base) refused the [glance] credentials (HTTP \(response.status.code)).")
        }
        let json = (try? JSONSerialization.jsonObject(with: Data(data.readableBytesView))) as? [String: Any]
        let token = json?["token"] as? [String: Any]
        let projectID = (token?["project"] as? [String: Any])?["id"] as? String
        var endpoint: String? = nil
        for service in (token?["catalog"] as? [[String: Any]]) ?? [] where service["type"] as? String == "image" {
            for candidate in (service["endpoints"] as? [[String: Any]]) ?? [] {
                guard candidate["interface"] as? String == credentials.interface else { continue }
                if let region = credentials.regionName, (candidate["region_id"] as? String ?? candidate["region"] as? String) != region { continue }
                endpoint = candidate["url"] as? String
                break
            }
        }
        let expires = (token?["expires_at"] as? String).flatMap { ISO8601DateFormatter.withFractions.date(from: $0) ?? ISO8601DateFormatter().date(from: $0) }
        return Token(value: subject, projectID: projectID, imageEndpoint: endpoint, expiresAt: expires)
    }
}

extension ISO8601DateFormatter {
    /// `2026-11-24T21:40:50.000000Z` as Keystone writes it.
    static var withFractions: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }
}
