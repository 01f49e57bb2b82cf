import Primitives
import OsloJSON
import SystemSupport
import ImageServices
import Logging
import NIOConcurrencyHelpers
import OsloMessaging

/// The worker's RPC methods (contract §3): `fetch_image`, `validate_image`, `show_image` and
/// `delete_images`, API version 1.0.
///
/// Every fetch sends `.start` and throttled `.progress`, and ends with `.end` or `.error`: that
/// outcome event is returned with the reply, and the RPC server records it in its journal,
/// publishes it and only then acknowledges the request.
public struct WorkerEndpoint: RPCEndpoint {
    public let version = RPCVersion(major: 1, minor: 0)
    public let methods: Set<String> = ["fetch_image", "validate_image", "show_image", "delete_images", "clean_up_cache"]

    private let fetcher: ImageFetcher
    private let store: NodeImageStore
    private let events: ImageEventPublisher
    private let progressInterval: Duration
    private let logger: Logger

    /// Creates the endpoint.
    public init(fetcher: ImageFetcher, store: NodeImageStore, events: ImageEventPublisher, progressInterval: Duration, logger: Logger) {
        self.fetcher = fetcher
        self.store = store
        self.events = events
        self.progressInterval = progressInterval
        self.logger = logger
    }

    public func dispatch(_ request: RPCRequest, delivery: RequestDelivery) async throws -> RPCOutcome {
        let task = TaskIdentity(requestID: request.context.requestID, uniqueID: request.uniqueID,
                                nodeUUID: request.args["node_uuid"]?.stringValue.flatMap(UUIDText.canonical))
        var logger = self.logger
        logger[metadataKey: "request_id"] = "\(task.requestID)"
        logger[metadataKey: "task_id"] = "\(task.taskID)"
        if let node = task.nodeUUID { logger[metadataKey: "node_uuid"] = "\(node)" }
        if let global = request.context.globalRequestID { logger[metadataKey: "global_request_id"] = "\(global)" }
        let context = ImageRequestContext(requestID: task.requestID, authToken: request.context.authToken, projectID: request.context.projectID,
                                          roles: request.context.roles, isAdmin: request.context.isAdmin, logger: logger)
        switch request.method {
        case "fetch_image":
            return try await fetchImage(request, task: task, attempt: delivery.attempt, context: context)
        case "validate_image":
            return RPCOutcome(reply: try await validateImage(request, task: task, context: context))
        case "show_image":
            return RPCOutcome(reply: await showImage(request, context: context))
        case "delete_images":
            return RPCOutcome(reply: await deleteImages(request, logger: logger))
        case "clean_up_cache":
            return RPCOutcome(reply: await cleanUpCache(request, logger: logger))
        default:
            return RPCOutcome(reply: .failure(.noSuchMethod(request.method)))
        }
    }

    public func refused(_ refusal: RPCRefusal, delivery: RequestDelivery) -> OsloNotification? {
        let task = TaskIdentity(requestID: refusal.context.requestID, uniqueID: refusal.uniqueID, nodeUUID: refusal.nodeUUID)
        let code = IronicError.Code(name: refusal.failure.className, httpStatus: Int(refusal.failure.kwargs["code"]?.integerValue ?? 400))
        return events.failed(task, imageSource: nil, role: nil, error: IronicError(code, refusal.failure.message), context: refusal.context)
    }

    public func gaveUp(_ request: RPCRequest, attempts: Int, delivery: RequestDelivery) -> RPCOutcome {
        let task = TaskIdentity(requestID: request.context.requestID, uniqueID: request.uniqueID,
                                nodeUUID: request.args["node_uuid"]?.stringValue.flatMap(UUIDText.canonical))
        let error = IronicError(.imageDownloadFailed, "The \(request.method) task was started \(attempts) times and never finished "
                                + "(the worker running it stopped each time); giving up on it.")
        let imageSource = request.args["instance_info"]?.objectValue?["image_source"]?.stringValue.map(ImageReference.redact)
        return RPCOutcome(reply: .failure(Self.remote(error)),
                          notification: events.failed(task, imageSource: imageSource, role: nil, error: error, context: request.context))
    }

    // MARK: fetch_image

    private func fetchImage(_ request: RPCRequest, task: TaskIdentity, attempt: Int, context: ImageRequestContext) async throws -> RPCOutcome {
        let imageSource = request.args["instance_info"]?.objectValue?["image_source"]?.stringValue.map(ImageReference.redact)
        let arguments: FetchImageArguments
        do {
            arguments = try FetchImageArguments(request.args)
        } catch {
            return fail(task, imageSource: imageSource, role: nil, error: error, request: request, logger: context.logger)
        }
        // One node at a time: a second request for the node waits here, before its `.start`.
        return try await store.withNodeLock(arguments.nodeUUID) {
            try await fetchImage(arguments, request: request, task: task, imageSource: imageSource, attempt: attempt, context: context)
        }
    }

    private func fetchImage(_ arguments: FetchImageArguments, request: RPCRequest, task: TaskIdentity, imageSource: String?, attempt: Int,
                            context: ImageRequestContext) async throws -> RPCOutcome {
        try await events.started(task, imageSource: imageSource, attempt: attempt, context: request.context)
        context.logger.info("fetching images", metadata: ["image_source": "\(imageSource ?? "-")", "attempt": "\(attempt)"])
        do {
            let images = try await withProgressEvents(task, context: request.context) { progress in
                try await fetcher.fetch(arguments, into: store, context: context, progress: progress)
            }
            let result = images.resultJSON(requestID: task.requestID, taskID: task.taskID)
            for image in images.images { if let fetched = image.fetched { WorkerMetrics.imagePlaced(fetched) } }
            context.logger.info("fetched images", metadata: [
                "image_type": "\(images.imageType.rawValue)",
                "transfers": "\(images.images.map { "\($0.role.rawValue)=\($0.fetched?.transfer.rawValue ?? "-")" }.joined(separator: ","))",
            ])
            return RPCOutcome(reply: .success(.object(result)), notification: events.ended(result: result, context: request.context))
        } catch let error as RoleError {
            return fail(task, imageSource: imageSource, role: error.role, error: error.error, request: request, logger: context.logger)
        }
    }

    // MARK: validate_image

    private func validateImage(_ request: RPCRequest, task: TaskIdentity, context: ImageRequestContext) async throws -> Result<JSONValue, RemoteFailure> {
        do {
            let arguments = try FetchImageArguments(request.args)
            let images = try await fetcher.validate(arguments, context: context)
            return .success(.object(images.resultJSON(requestID: task.requestID, taskID: task.taskID)))
        } catch let error as RoleError {
            return .failure(Self.remote(error.error))
        } catch let error as IronicError {
            return .failure(Self.remote(error))
        }
    }

    // MARK: show_image

    private func showImage(_ request: RPCRequest, context: ImageRequestContext) async -> Result<JSONValue, RemoteFailure> {
        do {
            guard let href = request.args["image_href"]?.stringValue else {
                throw IronicError.missingParameter("show_image needs image_href (a string).")
            }
            let reference = try ImageReference(href)
            let service = try fetcher.registry.service(for: reference)
            let metadata: ImageMetadata
            do {
                metadata = try await service.show(reference, context: context)
            } catch let error as IronicError {
                throw error
            } catch {
                throw IronicError.validationFailed(reference.redacted, "\(error)")
            }
            return .success(.object(metadata.json))
        } catch let error as IronicError {
            return .failure(Self.remote(error))
        } catch {
            return .failure(Self.remote(.validationFailed("(unknown)", "\(error)")))
        }
    }

    // MARK: delete_images

    private func deleteImages(_ request: RPCRequest, logger: Logger) async -> Result<JSONValue, RemoteFailure> {
        do {
            let node = try FetchImageArguments.nodeUUID(request.args)
            let deleted: Bool
            do {
                deleted = try await store.withNodeLock(node) {
                    try await BlockingWork.run { [store] _ in try store.deleteNode(node) }
                }
            } catch {
                throw IronicError(.imageDownloadFailed, "Cannot remove the images of node \(node): \(error).")
            }
            logger.info("deleted node images", metadata: ["deleted": "\(deleted)"])
            return .success(["node_uuid": .string(node), "deleted": .bool(deleted)])
        } catch let error as IronicError {
            return .failure(Self.remote(error))
        } catch {
            return .failure(Self.remote(IronicError(.imageDownloadFailed, "\(error)")))
        }
    }

    // MARK: clean_up_cache

    /// Runs cache eviction now (a fanout cast reaches every worker); `amount` asks for that many
    /// bytes freed beyond the usual size and age limits.
    private func cleanUpCache(_ request: RPCRequest, logger: Logger) async -> Result<JSONValue, RemoteFailure> {
        var amount: Int64? = nil
        if let value = request.args["amount"], !value.isNull {
            guard let bytes = value.integerValue, bytes >= 0 else {
                return .failure(Self.remote(.invalidParameter("clean_up_cache's amount must be a number of bytes, not \(value.typeDescription).")))
            }
            amount = bytes
        }
        guard let cache = fetcher.cache else { return .success(["removed": 0, "freed_bytes": 0]) }
        do {
            let report = try await BlockingWork.run { [amount] _ in try cache.cleanUp(amount: amount) }
            logger.info("cleaned up the image cache", metadata: ["removed": "\(report.removed)", "freed_bytes": "\(report.freedBytes)"])
            return .success(["removed": .integer(Int64(report.removed)), "freed_bytes": .integer(report.freedBytes)])
        } catch {
            return .failure(Self.remote(IronicError(.imageDownloadFailed, "The image cache could not be cleaned up: \(error).")))
        }
    }

    // MARK: Helpers

    private func fail(_ task: TaskIdentity, imageSource: String?, role: ImageRole?, error: IronicError, request: RPCRequest, logger: Logger) -> RPCOutcome {
        logger.warning("image fetch failed", metadata: ["error": "\(error.code.name)", "reason": "\(error.message)", "role": "\(role?.rawValue ?? "-")"])
        return RPCOutcome(reply: .failure(Self.remote(error)),
                          notification: events.failed(task, imageSource: imageSource, role: role, error: error, context: request.context))
    }

    /// The failure a Python caller re-raises as `ironic.common.exception.<Code>`.
    static func remote(_ error: IronicError) -> RemoteFailure {
        .ironic(error.code.name, message: error.message, httpStatus: error.code.httpStatus)
    }

    /// Runs a fetch while a child task sends its latest progress every `progress_interval`: at
    /// most one event an interval, and one each interval while the task waits (a task queued for a
    /// connection keeps saying `queued`).
    private func withProgressEvents<T: Sendable>(_ task: TaskIdentity, context: RPCContext,
                                                 _ body: @escaping @Sendable (@escaping @Sendable (ImageRole, TransferProgress) -> Void) async throws -> T) async throws -> T {
        let latest = LatestProgress()
        let started = ContinuousClock.now
        let events = self.events
        let interval = progressInterval
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                while true {
                    try await Task.sleep(for: interval)
                    guard let (role, progress) = latest.value.withLockedValue({ $0 }) else { continue }
                    let elapsed = (ContinuousClock.now - started).seconds
                    let rate = elapsed > 0 && progress.phase != .queued ? Int64(Double(progress.bytes) / elapsed) : 0
                    try? await events.progress(task, role: role, progress: progress, rateBytesPerSecond: rate, context: context)
                }
            }
            defer { group.cancelAll() }
            let result = try await body { role, progress in latest.value.withLockedValue { $0 = (role, progress) } }
            group.cancelAll()
            while (try? await group.next()) != nil {}
            return result
        }
    }
}

/// The last progress a fetch reported, which the progress events repeat each interval.
private final class LatestProgress: Sendable {
    let value = NIOLockedValueBox<(role: ImageRole, progress: TransferProgress)?>(nil)
}
