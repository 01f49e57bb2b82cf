import OsloJSON
/// An exception as oslo.messaging sends it back to a caller: the `failure` of a reply, which is a
/// JSON *string* `{"class", "module", "message", "tb", "args", "kwargs"}`. A Python caller
/// re-raises it as `<module>.<class>` when the module is allowed (Ironic allows
/// `ironic.common.exception`), with `kwargs["code"]` as the HTTP status.
public struct RemoteFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// The exception class name (`ImageRefValidationFailed`, `NoSuchMethod`, …).
    public var className: String
    /// The Python module of the class.
    public var module: String
    /// The exception's message.
    public var message: String
    /// The traceback lines; always empty here (no stack traces leave the worker).
    public var traceback: [String]
    /// The exception's positional arguments.
    public var args: [JSONValue]
    /// The exception's keyword arguments.
    public var kwargs: JSONObject

    /// Ironic's exceptions module.
    public static let ironicModule = "ironic.common.exception"
    /// oslo.messaging's dispatcher module (`NoSuchMethod`, `UnsupportedVersion`).
    public static let dispatcherModule = "oslo_messaging.rpc.dispatcher"

    /// Creates a failure; `args` defaults to `[message]`.
    public init(className: String, module: String, message: String, traceback: [String] = [], args: [JSONValue]? = nil, kwargs: JSONObject = JSONObject()) {
        self.className = className
        self.module = module
        self.message = message
        self.traceback = traceback
        self.args = args ?? [.string(message)]
        self.kwargs = kwargs
    }

    /// An Ironic exception: module `ironic.common.exception`, `kwargs = {"code": httpStatus}`.
    public static func ironic(_ className: String, message: String, httpStatus: Int) -> RemoteFailure {
        RemoteFailure(className: className, module: ironicModule, message: message, kwargs: ["code": .integer(Int64(httpStatus))])
    }

    /// oslo's `NoSuchMethod` for an unknown (or private) method. A hostile name is cut to 200
    /// characters, so that it cannot inflate the reply, the error event and the logs.
    public static func noSuchMethod(_ method: String) -> RemoteFailure {
        let shown = method.count > 200 ? method.prefix(200) + "… (\(method.utf8.count) bytes)" : method
        return RemoteFailure(className: "NoSuchMethod", module: dispatcherModule, message: "Endpoint does not support RPC method \(shown)",
                             args: [.string(shown)], kwargs: JSONObject())
    }

    /// oslo's `UnsupportedVersion` for a version the endpoint does not serve.
    public static func unsupportedVersion(_ version: String, method: String?) -> RemoteFailure {
        RemoteFailure(className: "UnsupportedVersion", module: dispatcherModule,
                      message: "Endpoint does not support RPC version \(version). Attempted method: \(method ?? "")",
                      args: [.string(version)], kwargs: ["method": .string(orNull: method)])
    }

    /// The failure as the JSON object oslo writes.
    public var jsonObject: JSONObject {
        [
            "class": .string(className),
            "module": .string(module),
            "message": .string(message),
            "tb": .array(traceback.map(JSONValue.string)),
            "args": .array(args),
            "kwargs": .object(kwargs),
        ]
    }

    /// The JSON string that goes into a reply's `failure`.
    public var jsonString: String {
        JSONWriter().string(.object(jsonObject))
    }

    /// Reads a failure from a reply's `failure` string.
    public init(jsonString: String) throws {
        guard let object = try JSONParser().parse(jsonString).objectValue else {
            throw OsloEnvelope.DecodingError(reason: "a reply's failure is not a serialized exception")
        }
        try self.init(jsonObject: object)
    }

    /// Reads a failure from ``jsonObject``'s form.
    public init(jsonObject object: JSONObject) throws {
        guard let className = object["class"]?.stringValue, let module = object["module"]?.stringValue else {
            throw OsloEnvelope.DecodingError(reason: "a reply's failure is not a serialized exception")
        }
        self.init(
            className: className, module: module, message: object["message"]?.stringValue ?? "",
            traceback: object["tb"]?.arrayValue?.compactMap(\.stringValue) ?? [],
            args: object["args"]?.arrayValue ?? [], kwargs: object["kwargs"]?.objectValue ?? JSONObject())
    }

    public var description: String { "\(module).\(className): \(message)" }
}
