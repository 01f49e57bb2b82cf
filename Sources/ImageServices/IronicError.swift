/// An error the worker reports: its ``Code`` is the Ironic exception class name (so a conductor
/// re-raises it as its own class), with the HTTP status Ironic attaches to that class, a message
/// that names the (redacted) reference and what went wrong, and whether retrying may help.
///
/// Messages never carry secrets or stack traces.
public struct IronicError: Error, Sendable, Hashable, CustomStringConvertible {
    /// An Ironic exception class and its HTTP status (contract §7).
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        /// The exception class name.
        public let name: String
        /// The HTTP status Ironic gives it (`kwargs["code"]`).
        public let httpStatus: Int

        /// A code by name (for failures that come from elsewhere, like oslo's `NoSuchMethod`).
        public init(name: String, httpStatus: Int) {
            self.name = name
            self.httpStatus = httpStatus
        }

        public static let invalidImageRef = Code(name: "InvalidImageRef", httpStatus: 400)
        public static let imageRefValidationFailed = Code(name: "ImageRefValidationFailed", httpStatus: 500)
        public static let imageNotFound = Code(name: "ImageNotFound", httpStatus: 404)
        public static let imageNotAuthorized = Code(name: "ImageNotAuthorized", httpStatus: 403)
        public static let imageUnacceptable = Code(name: "ImageUnacceptable", httpStatus: 500)
        public static let imageDownloadFailed = Code(name: "ImageDownloadFailed", httpStatus: 500)
        public static let imageChecksumError = Code(name: "ImageChecksumError", httpStatus: 500)
        public static let imageChecksumAlgorithmFailure = Code(name: "ImageChecksumAlgorithmFailure", httpStatus: 500)
        public static let insufficientDiskSpace = Code(name: "InsufficientDiskSpace", httpStatus: 500)
        public static let invalidParameterValue = Code(name: "InvalidParameterValue", httpStatus: 400)
        public static let missingParameterValue = Code(name: "MissingParameterValue", httpStatus: 400)
        public static let temporaryFailure = Code(name: "TemporaryFailure", httpStatus: 503)

        public var description: String { name }
    }

    /// The Ironic exception class.
    public var code: Code
    /// What went wrong, with which reference.
    public var message: String
    /// Whether trying again later may succeed (connection resets, 5xx, timeouts).
    public var retryable: Bool
    /// The status an upstream server answered with, when one did.
    public var upstreamHTTPStatus: Int?

    /// Creates an error.
    public init(_ code: Code, _ message: String, retryable: Bool = false, upstreamHTTPStatus: Int? = nil) {
        self.code = code
        self.message = message
        self.retryable = retryable
        self.upstreamHTTPStatus = upstreamHTTPStatus
    }

    public var description: String { "\(code.name): \(message)" }
}

extension IronicError {
    /// Ironic's `ImageRefValidationFailed`: "Validation of image href X failed, reason: Y".
    public static func validationFailed(_ reference: String, _ reason: String, retryable: Bool = false) -> IronicError {
        IronicError(.imageRefValidationFailed, "Validation of image href \(reference) failed, reason: \(reason)", retryable: retryable)
    }

    /// Ironic's `ImageDownloadFailed`: "Failed to download image X, reason: Y".
    public static func downloadFailed(_ reference: String, _ reason: String, retryable: Bool = false) -> IronicError {
        IronicError(.imageDownloadFailed, "Failed to download image \(reference), reason: \(reason)", retryable: retryable)
    }

    /// Ironic's `InvalidParameterValue`.
    public static func invalidParameter(_ message: String) -> IronicError {
        IronicError(.invalidParameterValue, message)
    }

    /// Ironic's `MissingParameterValue`.
    public static func missingParameter(_ message: String) -> IronicError {
        IronicError(.missingParameterValue, message)
    }
}
