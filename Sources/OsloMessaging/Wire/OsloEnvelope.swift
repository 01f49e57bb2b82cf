import OsloJSON
/// oslo.messaging's message envelope, format 2.0: `{"oslo.version": "2.0", "oslo.message": "<the
/// real message as a JSON string>"}`. Receivers also accept the bare inner dict (format 1.0).
public enum OsloEnvelope {
    /// The envelope version we write and the highest we read.
    public static let version = "2.0"

    /// Why a body is not an oslo message.
    public struct DecodingError: Error, Sendable, Hashable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// The body of `message` wrapped in the 2.0 envelope, as Python's `json.dumps` writes it.
    public static func wrap(_ message: JSONObject) -> [UInt8] {
        let inner = JSONWriter().string(.object(message))
        return JSONWriter().bytes(.object(["oslo.version": .string(version), "oslo.message": .string(inner)]))
    }

    /// The inner message of a body: unwrapped when enveloped, as it is otherwise.
    public static func unwrap(_ body: [UInt8], parser: JSONParser = JSONParser()) throws(DecodingError) -> JSONObject {
        let outer: JSONValue
        do {
            outer = try parser.parse(body)
        } catch {
            throw DecodingError(reason: "the body is not valid JSON (\(error))")
        }
        guard let object = outer.objectValue else {
            throw DecodingError(reason: "the body is \(outer.typeDescription), not a JSON object")
        }
        guard let envelopeVersion = object["oslo.version"] else { return object }
        guard let versionText = envelopeVersion.stringValue, isCompatible(versionText) else {
            throw DecodingError(reason: "unsupported oslo envelope version \(JSONWriter().string(envelopeVersion)) (this worker reads \(version))")
        }
        guard let innerText = object["oslo.message"]?.stringValue else {
            throw DecodingError(reason: "the envelope's oslo.message is missing or not a string")
        }
        let inner: JSONValue
        do {
            inner = try parser.parse(innerText)
        } catch {
            throw DecodingError(reason: "oslo.message is not valid JSON (\(error))")
        }
        guard let innerObject = inner.objectValue else {
            throw DecodingError(reason: "oslo.message is \(inner.typeDescription), not a JSON object")
        }
        return innerObject
    }

    /// oslo's `version_is_compatible('2.0', v)`: same major, minor not above ours.
    static func isCompatible(_ text: String) -> Bool {
        guard let version = RPCVersion(text), let ours = RPCVersion(Self.version) else { return false }
        return version.major == ours.major && version.minor <= ours.minor
    }
}
