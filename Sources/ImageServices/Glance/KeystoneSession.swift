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
        let project = credentials.projectID.map { KeystonePasswordRequest.Project(id: $0) }
            ?? KeystonePasswordRequest.Project(name: credentials.projectName ?? "", domain: .init(name: credentials.projectDomainName))
        let body = KeystonePasswordRequest(auth: .init(
            identity: .init(password: .init(user: .init(name: credentials.username, domain: .init(name: credentials.userDomainName),
                                                         password: credentials.password))),
            scope: .init(project: project)))
        var request = HTTPClientRequest(url: base + "/auth/tokens")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: Array(try JSONEncoder().encode(body))))
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
        let token = (try? JSONDecoder().decode(KeystoneTokenResponse.self, from: Data(data.readableBytesView)))?.token
        let projectID = token?.project?.id
        var endpoint: String? = nil
        for service in token?.catalog ?? [] where service.type == "image" {
            for candidate in service.endpoints ?? [] {
                guard candidate.interface == credentials.interface else { continue }
                if let region = credentials.regionName, (candidate.regionID ?? candidate.region) != region { continue }
                endpoint = candidate.url
                break
            }
        }
        let expires = token?.expiresAt.flatMap { ISO8601DateFormatter.withFractions.date(from: $0) ?? ISO8601DateFormatter().date(from: $0) }
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
