/// The image services by reference scheme: the one place a new service is plugged in.
public struct ImageServiceRegistry: Sendable {
    private var servicesByScheme: [String: any ImageService] = [:]

    /// An empty registry.
    public init() {}

    /// Registers `service` for each of its schemes (replacing any earlier service for them).
    public mutating func register(_ service: any ImageService) {
        for scheme in service.schemes { servicesByScheme[scheme.lowercased()] = service }
    }

    /// The schemes served, sorted.
    public var schemes: [String] { servicesByScheme.keys.sorted() }

    /// The service for a reference; Ironic's error for a scheme nobody serves.
    public func service(for reference: ImageReference) throws(IronicError) -> any ImageService {
        guard let service = servicesByScheme[reference.scheme] else {
            throw IronicError.validationFailed(reference.redacted, "Image download protocol \(reference.scheme) is not supported.")
        }
        return service
    }
}
