import Primitives
import SystemSupport
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Logging

/// Glance images: a bare UUID or `glance://…/<uuid>`, through Glance's v2 API.
///
/// As Ironic's `GlanceImageService`:
/// - `show` needs the image `active` (`ImageUnacceptable` otherwise) and visible to the worker:
///   public or community; private and owned by the worker's project; shared with that project as a
///   member; or any image for an admin caller when `ignore_project_check_for_admin_tasks` is on.
///   Anything else is `ImageNotFound`, even when Glance returned it.
/// - the request context's token is used when the caller sent one; else the configured
///   authentication (none, a fixed token, or Keystone v3 password with the catalog's endpoint and
///   a new token on a 401).
/// - 5xx answers and connection errors are retried `[glance] num_retries` times.
/// - the download (`/v2/images/{id}/file`) is verified by the worker against `os_hash_value`
///   (or the md5 `checksum`) from `show`; a resumable download like any http(s) image.
public struct GlanceImageService: ImageService {
    public let name = "glance"
    public let schemes = ["glance"]
    public let caching = ImageCaching.immutable
    /// Glance's `os_hash_value` (or `checksum`) is what the download must hash to.
    public let checksumAuthority = ChecksumAuthority.service
    /// An image's properties say whether it is a partition image, with its kernel and ramdisk.
    public let describesImages = true
    public let settings: GlanceSettings
    private let transport: HTTPTransport
    private let keystone: KeystoneSession?

    /// Creates the service; `transport` carries Glance's (and Keystone's) TLS settings.
    public init(settings: GlanceSettings, transport: HTTPTransport) {
        self.settings = settings
        self.transport = transport
        if case .password(let credentials) = settings.authentication {
            keystone = KeystoneSession(credentials: credentials, transport: transport)
        } else {
            keystone = nil
        }
    }

    public func show(_ reference: ImageReference, context: ImageRequestContext) async throws -> ImageMetadata {
        try await image(reference, context: context).metadata
    }

    public func fetch(_ request: ImageFetchRequest) async throws -> FetchedImage {
        let image = try await image(request.reference, context: request.context)
        var renewed = false
        while true {
            let access = try await access(context: request.context, renew: renewed)
            var headers = HTTPHeaders()
            if let token = access.token { headers.add(name: "X-Auth-Token", value: token) }
            headers.add(name: "X-Openstack-Request-Id", value: request.context.requestID)
            let url = try ParsedHTTPURL("\(access.endpoint)/v2/images/\(image.id)/file")
            do {
                var fetched = try await ResumableDownload(transport: transport, url: url, headers: headers, request: request).run()
                fetched.metadata = image.metadata
                return fetched
            } catch let error as IronicError where error.upstreamHTTPStatus != nil {
                switch error.upstreamHTTPStatus! {
                case 204: throw IronicError.downloadFailed(request.reference.redacted, "image contains no data.")
                case 401 where !renewed && keystone != nil:
                    renewed = true
                    continue
                case 401, 403: throw IronicError(.imageNotAuthorized, "Not authorized for image \(image.id).")
                case 404: throw IronicError(.imageNotFound, "Image \(image.id) could not be found.")
                default: throw error
                }
            }
        }
    }

    // MARK: The image record

    struct GlanceImage {
        var id: String
        var metadata: ImageMetadata
    }

    /// A Glance image's master copy is named by its UUID: one id, one content.
    public func cacheKey(for reference: ImageReference) -> String? {
        try? Self.imageID(reference)
    }

    /// The image id in a reference: a bare UUID, or the last path segment of `glance://…`.
    public static func imageID(_ reference: ImageReference) throws(IronicError) -> String {
        if let id = UUIDText.canonical(reference.original) { return id }
        let last = reference.original.split(separator: "/").last.map(String.init) ?? ""
        guard let id = UUIDText.canonical(last) else {
            throw IronicError(.invalidImageRef, "Invalid image href \(reference.redacted).")
        }
        return id
    }

    func image(_ reference: ImageReference, context: ImageRequestContext) async throws -> GlanceImage {
        let id = try Self.imageID(reference)
        let (record, access) = try await getJSON("/v2/images/\(id)", as: GlanceImageRecord.self, imageID: id, context: context)
        guard record.status == "active" else {
            throw IronicError(.imageUnacceptable, "Image \(id) is unacceptable: The image is required to be in an active state.")
        }
        try await checkVisible(record, id: id, access: access, context: context)
        return GlanceImage(id: id, metadata: try Self.metadata(record, id: id))
    }

    /// Ironic's `is_image_available`.
    private func checkVisible(_ record: GlanceImageRecord, id: String, access: Access, context: ImageRequestContext) async throws {
        if settings.allowAccessViaAuthToken && context.authToken != nil { return }
        let visibility = record.visibility ?? ""
        if visibility == "public" || visibility == "community" { return }
        if context.isAdmin && settings.adminBypassesProjectCheck { return }
        if let project = access.projectID {
            if visibility == "private", record.owner == project { return }
            if visibility == "shared" {
                let (list, _) = try await getJSON("/v2/images/\(id)/members", as: GlanceMembers.self, imageID: id, context: context)
                if (list.members ?? []).contains(where: { $0.memberID == project && $0.status != "rejected" }) { return }
            }
        }
        context.logger.info("a Glance image is not visible to this worker", metadata: ["image_id": "\(id)", "visibility": "\(visibility)"])
        throw IronicError(.imageNotFound, "Image \(id) could not be found.")
    }

    /// What Ironic reads of a Glance record. The checksum follows the rules of `instance_info`'s
    /// (`os_hash_algo`/`os_hash_value`, else the md5 `checksum`): an algorithm nobody supports or
    /// a malformed value is refused, never replaced by a weaker digest or by no verification.
    /// Whether md5 is acceptable is the fetch's policy (`[agent] allow_md5_checksum`).
    static func metadata(_ record: GlanceImageRecord, id: String) throws(IronicError) -> ImageMetadata {
        let checksum: ImageChecksum?
        do {
            // `md5:` first, so the md5 `checksum` is read as a value, never as a checksum file's URL.
            let md5 = record.checksum.flatMap { $0.isEmpty ? nil : "md5:" + $0 }
            switch try ChecksumSource.parse(imageChecksum: md5, osHashAlgorithm: record.osHashAlgorithm,
                                            osHashValue: record.osHashValue, allowMD5: true) {
            case .value(let value): checksum = value
            case .none, .checksumFile: checksum = nil
            }
        } catch where error.code == .imageChecksumAlgorithmFailure {
            throw IronicError(error.code, "Glance image \(id): \(error.message)")
        } catch {
            throw IronicError(.imageUnacceptable, "Image \(id) is unacceptable: its checksum cannot be used: \(error.message)")
        }
        let updated = record.updatedAt.flatMap { ISO8601DateFormatter().date(from: $0) }
        return ImageMetadata(size: record.size, updatedAtMicroseconds: updated.map { Int64($0.timeIntervalSince1970 * 1_000_000) },
                             diskFormat: record.diskFormat, checksum: checksum, properties: record.properties, noCache: false)
    }

    // MARK: Requests

    struct Access {
        var endpoint: String
        var token: String?
        var projectID: String?
    }

    /// Where and as whom to ask: the caller's token when it sent one, else the configured identity.
    private func access(context: ImageRequestContext, renew: Bool) async throws -> Access {
        var endpoint = settings.endpointOverride
        var token: String? = nil
        var project = settings.projectID
        switch settings.authentication {
        case .none: break
        case .token(let fixed): token = fixed
        case .password:
            let session = try await keystone!.token(renew: renew)
            token = session.value
            project = session.projectID ?? project
            endpoint = endpoint ?? session.imageEndpoint
        }
        if let callerToken = context.authToken { token = callerToken }
        guard var endpoint else {
            throw IronicError.invalidParameter("[glance] endpoint_override is not set and no Keystone catalog gives Glance's endpoint.")
        }
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        if endpoint.hasSuffix("/v2") { endpoint.removeLast(3) }
        return Access(endpoint: endpoint, token: token, projectID: project)
    }

    /// GET a JSON object, with retries on 5xx and connection errors and one re-authentication on 401.
    private func getJSON<Record: Decodable>(_ path: String, as type: Record.Type, imageID: String,
                                            context: ImageRequestContext) async throws -> (Record, Access) {
        var attempt = 0
        var renewed = false
        while true {
            let access = try await access(context: context, renew: renewed)
            var request = HTTPClientRequest(url: access.endpoint + path)
            if let token = access.token { request.headers.add(name: "X-Auth-Token", value: token) }
            request.headers.add(name: "X-Openstack-Request-Id", value: context.requestID)
            request.headers.add(name: "Accept", value: "application/json")
            let url = try ParsedHTTPURL(access.endpoint + path)
            let status: UInt
            let body: ByteBuffer
            do {
                let (response, collected) = try await transport.collect(request, to: url, timeout: transport.settings.connectTimeout + transport.settings.stallTimeout,
                                                                         limit: 16 << 20)
                status = response.status.code
                body = collected
            } catch {
                attempt += 1
                guard attempt <= settings.retries else {
                    throw IronicError(.temporaryFailure, "Glance at \(access.endpoint) cannot be reached: \(HTTPErrors.describe(error)).", retryable: true)
                }
                try await Task.sleep(for: .seconds(1))
                continue
            }
            switch status {
            case 200:
                guard let record = try? JSONDecoder().decode(Record.self, from: Data(body.readableBytesView)) else {
                    throw IronicError(.imageDownloadFailed, "Glance answered \(path) with something that is not the JSON object it should be.")
                }
                return (record, access)
            case 401 where !renewed && keystone != nil:
                renewed = true
            case 401, 403:
                throw IronicError(.imageNotAuthorized, "Not authorized for image \(imageID).")
            case 404:
                throw IronicError(.imageNotFound, "Image \(imageID) could not be found.")
            case 500...599:
                attempt += 1
                guard attempt <= settings.retries else {
                    throw IronicError(.temporaryFailure, "Glance answered HTTP \(status) for image \(imageID).", retryable: true, upstreamHTTPStatus: Int(status))
                }
                try await Task.sleep(for: .seconds(1))
            default:
                throw IronicError(.imageRefValidationFailed, "Validation of image href \(imageID) failed, reason: Glance answered HTTP \(status).",
                                  upstreamHTTPStatus: Int(status))
            }
        }
    }
}
