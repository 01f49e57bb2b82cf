import OsloJSON
import ImageServices
import OsloMessaging
import Synchronization

/// The ids that tie a task's logs, events and reply together.
public struct TaskIdentity: Sendable, Hashable {
    /// The caller's `request_id`, or a generated `req-<uuid>`.
    public var requestID: String
    /// The request's `_unique_id`, or a generated one.
    public var taskID: String
    /// The node, when known.
    public var nodeUUID: String?

    /// Ids for a request.
    public init(requestID: String?, uniqueID: String?, nodeUUID: String?) {
        self.requestID = requestID ?? "req-\(OsloIdentifiers.uuid4())"
        self.taskID = uniqueID ?? OsloIdentifiers.uuid4Hex()
        self.nodeUUID = nodeUUID
    }
}

/// Makes the `baremetal.image.fetch.*` notifications of contract §4, each an `ImageFetchPayload`
/// versioned object. `.start` and `.progress` are published here (waiting for the broker's
/// confirm); `.end` and `.error` are outcomes, returned to the RPC server, which records them
/// before it publishes them.
public struct ImageEventPublisher: Sendable {
    private let transport: any OsloTransport
    private let publisherID: String

    /// Creates a publisher that sends as `publisherID` (`image-worker.<host>`).
    public init(transport: any OsloTransport, publisherID: String) {
        self.transport = transport
        self.publisherID = publisherID
    }

    /// `baremetal.image.fetch.start`.
    public func started(_ task: TaskIdentity, imageSource: String?, attempt: Int, context: RPCContext) async throws {
        try await publish("baremetal.image.fetch.start", .info, context: context, data: [
            "node_uuid": .string(orNull: task.nodeUUID),
            "request_id": .string(task.requestID),
            "task_id": .string(task.taskID),
            "image_source": .string(orNull: imageSource),
            "attempt": .integer(Int64(attempt)),
        ])
    }

    /// `baremetal.image.fetch.progress`.
    public func progress(_ task: TaskIdentity, role: ImageRole, progress: TransferProgress, rateBytesPerSecond: Int64, context: RPCContext) async throws {
        try await publish("baremetal.image.fetch.progress", .info, context: context, data: [
            "node_uuid": .string(orNull: task.nodeUUID),
            "request_id": .string(task.requestID),
            "task_id": .string(task.taskID),
            "role": .string(role.rawValue),
            "phase": .string(progress.phase.rawValue),
            "bytes": .integer(progress.bytes),
            "total": .integer(orNull: progress.total),
            "rate_bps": .integer(rateBytesPerSecond),
        ])
    }

    /// `baremetal.image.fetch.end`, whose data is the task's result (not published: the RPC
    /// server publishes outcomes once they are recorded).
    public func ended(result: JSONObject, context: RPCContext) -> OsloNotification {
        notification("baremetal.image.fetch.end", .info, context: context, data: result)
    }

    /// `baremetal.image.fetch.error` (not published, as ``ended(result:context:)``).
    public func failed(_ task: TaskIdentity, imageSource: String?, role: ImageRole?, error: IronicError, context: RPCContext) -> OsloNotification {
        notification("baremetal.image.fetch.error", .error, context: context, data: [
            "node_uuid": .string(orNull: task.nodeUUID),
            "request_id": .string(task.requestID),
            "task_id": .string(task.taskID),
            "image_source": .string(orNull: imageSource),
            "role": .string(orNull: role?.rawValue),
            "error": .object([
                "code": .string(error.code.name),
                "message": .string(error.message),
                "http_status": .integer(Int64(error.upstreamHTTPStatus ?? error.code.httpStatus)),
                "retryable": .bool(error.retryable),
            ]),
        ])
    }

    private func publish(_ eventType: String, _ priority: OsloNotification.Priority, context: RPCContext, data: JSONObject) async throws {
        try await transport.sendNotification(notification(eventType, priority, context: context, data: data))
    }

    private func notification(_ eventType: String, _ priority: OsloNotification.Priority, context: RPCContext, data: JSONObject) -> OsloNotification {
        let payload: JSONValue = [
            "ironic_object.name": "ImageFetchPayload",
            "ironic_object.namespace": "ironic",
            "ironic_object.version": "1.0",
            "ironic_object.data": .object(data),
        ]
        return OsloNotification(publisherID: publisherID, eventType: eventType, priority: priority, payload: payload,
                                context: context.redactedFields)
    }
}
