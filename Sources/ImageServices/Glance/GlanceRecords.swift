import Foundation

/// A Glance v2 image record (`GET /v2/images/{id}`): the fields Ironic reads, and every other
/// key (Glance's free-form properties: `kernel_id`, `ramdisk_id`, …) as text.
struct GlanceImageRecord: Decodable, Sendable {
    var status: String?
    var visibility: String?
    var owner: String?
    var size: Int64?
    var diskFormat: String?
    var checksum: String?
    var osHashAlgorithm: String?
    var osHashValue: String?
    var updatedAt: String?
    /// Every key Glance does not define itself, as text: strings as they are, anything else as
    /// compact JSON with sorted keys (`null`s are left out).
    var properties: [String: String]

    /// The keys Glance defines; the rest are properties.
    static let standardKeys: Set<String> = [
        "size", "disk_format", "owner", "container_format", "checksum", "id", "name", "created_at", "updated_at", "deleted_at",
        "deleted", "status", "min_disk", "min_ram", "tags", "visibility", "protected", "file", "schema", "os_hash_algo", "os_hash_value",
    ]

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        func text(_ key: String) -> String? { try? container.decodeIfPresent(String.self, forKey: AnyKey(key)) }
        status = text("status")
        visibility = text("visibility")
        owner = text("owner")
        diskFormat = text("disk_format")
        checksum = text("checksum")
        osHashAlgorithm = text("os_hash_algo")
        osHashValue = text("os_hash_value")
        updatedAt = text("updated_at")
        size = try? container.decodeIfPresent(Int64.self, forKey: AnyKey("size"))
        var properties: [String: String] = [:]
        for key in container.allKeys where !Self.standardKeys.contains(key.stringValue) {
            switch try container.decode(AnyJSON.self, forKey: key) {
            case .null: continue
            case .string(let value): properties[key.stringValue] = value
            case let other: properties[key.stringValue] = other.compactText
            }
        }
        self.properties = properties
    }
}

/// `GET /v2/images/{id}/members`.
struct GlanceMembers: Decodable, Sendable {
    struct Member: Decodable, Sendable {
        var memberID: String?
        var status: String?
        enum CodingKeys: String, CodingKey {
            case memberID = "member_id"
            case status
        }
    }

    var members: [Member]?
}

/// The parts of a Keystone v3 token response (`POST /v3/auth/tokens`) the worker reads.
struct KeystoneTokenResponse: Decodable, Sendable {
    struct Token: Decodable, Sendable {
        var expiresAt: String?
        var project: Project?
        var catalog: [Service]?
        enum CodingKeys: String, CodingKey {
            case expiresAt = "expires_at"
            case project, catalog
        }
    }

    struct Project: Decodable, Sendable {
        var id: String?
    }

    struct Service: Decodable, Sendable {
        var type: String?
        var endpoints: [Endpoint]?
    }

    struct Endpoint: Decodable, Sendable {
        var interface: String?
        var region: String?
        var regionID: String?
        var url: String?
        enum CodingKeys: String, CodingKey {
            case interface, region, url
            case regionID = "region_id"
        }
    }

    var token: Token
}

/// The body of a Keystone v3 password authentication request.
struct KeystonePasswordRequest: Encodable, Sendable {
    struct Auth: Encodable, Sendable {
        var identity: Identity
        var scope: Scope
    }

    struct Identity: Encodable, Sendable {
        var methods = ["password"]
        var password: Password
    }

    struct Password: Encodable, Sendable {
        var user: User
    }

    struct User: Encodable, Sendable {
        var name: String
        var domain: Named
        var password: String
    }

    struct Scope: Encodable, Sendable {
        var project: Project
    }

    /// A project by id, or by name within a domain.
    struct Project: Encodable, Sendable {
        var id: String?
        var name: String?
        var domain: Named?
    }

    struct Named: Encodable, Sendable {
        var name: String
    }

    var auth: Auth
}

/// Any JSON value, to read the free-form parts of a record and write them back as text.
enum AnyJSON: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case integer(Int64)
    case string(String)
    case array([AnyJSON])
    case object([String: AnyJSON])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int64.self) { self = .integer(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([AnyJSON].self) { self = .array(value) }
        else { self = .object(try container.decode([String: AnyJSON].self)) }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// The value as compact JSON with sorted keys (a number as its digits).
    var compactText: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}

/// A coding key for any name (records with free-form keys).
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ name: String) { stringValue = name }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
