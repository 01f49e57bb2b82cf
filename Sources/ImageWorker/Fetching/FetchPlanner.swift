import ImageServices

/// One image to fetch: its role, its reference and the service for its scheme, where its checksum
/// comes from, and what the service said of it while planning.
public struct ImagePlan: Sendable {
    public var role: ImageRole
    public var reference: ImageReference
    public var service: any ImageService
    /// The checksum it must have, if one is known before fetching.
    public var expectedChecksum: ImageChecksum?
    /// What the service said of the image while planning (when it describes images), if asked.
    public var shown: ImageMetadata?
    /// The format the request declares (`image_disk_format`), else the service's (Glance's
    /// `disk_format`): the detected format must agree with it.
    public var declaredFormat: String?
}

/// The plan and resolve stages: Ironic's `instance_info` rules. Each reference goes to the service
/// registered for its scheme; whole disk or partition is decided as Ironic decides it; every
/// image gets its expected checksum from where its service says it comes from (the service
/// itself, or the request — a value, or a checksum file fetched and searched). Services are only
/// asked through ``ImageServices/ImageService``'s capabilities, never by their type.
struct FetchPlanner: Sendable {
    let registry: ImageServiceRegistry
    let checksums: ChecksumPolicy

    /// Every image of the node, the disk first.
    func plan(_ info: InstanceInfo, context: ImageRequestContext) async throws -> (ImageType, [ImagePlan]) {
        let imagePlan = try await diskPlan(info, context: context)
        let properties = imagePlan.shown?.properties
        let imageType = info.decideImageType(glanceProperties: properties)
        guard imageType == .partition else { return (imageType, [imagePlan]) }
        let kernel = info.kernel ?? properties?["kernel_id"]
        let ramdisk = info.ramdisk ?? properties?["ramdisk_id"]
        let missing = [("kernel", kernel), ("ramdisk", ramdisk)].filter { $0.1 == nil }.map(\.0)
        guard let kernel, let ramdisk else {
            throw RoleError(role: .image, reference: imagePlan.reference.redacted,
                            error: .missingParameter("Image \(imagePlan.reference.redacted) is missing the following properties: \(missing.joined(separator: ", "))."))
        }
        var plans = [imagePlan]
        for (role, text) in [(ImageRole.kernel, kernel), (.ramdisk, ramdisk)] {
            // Kernels and ramdisks take no checksum from instance_info (Ironic's rule).
            plans.append(try await self.plan(role, text, context: context) { .none })
        }
        return (imageType, plans)
    }

    /// The disk image's plan alone (what `image-worker fetch --output` needs).
    func diskPlan(_ info: InstanceInfo, context: ImageRequestContext) async throws -> ImagePlan {
        var plan = try await plan(.image, info.imageSource, context: context) {
            try ChecksumSource.parse(imageChecksum: info.imageChecksum, osHashAlgorithm: info.osHashAlgorithm,
                                     osHashValue: info.osHashValue, allowMD5: checksums.allowMD5)
        }
        plan.declaredFormat = info.diskFormat ?? plan.shown?.diskFormat
        return plan
    }

    /// One reference: its service, what the service says of it (when it describes images), and
    /// its expected checksum.
    private func plan(_ role: ImageRole, _ text: String, context: ImageRequestContext,
                      requested: () throws -> ChecksumSource) async throws -> ImagePlan {
        let reference: ImageReference
        let service: any ImageService
        do {
            reference = try ImageReference(text)
            service = try registry.service(for: reference)
        } catch {
            throw RoleError(role: role, reference: ImageReference.redact(text), error: error)
        }
        let shown = service.describesImages
            ? try await RoleError.attributed(to: role, reference) { try await service.show(reference, context: context) } : nil
        let expected = try await expectedChecksum(role, reference, service: service, shown: shown, context: context, requested: requested)
        return ImagePlan(role: role, reference: reference, service: service, expectedChecksum: expected, shown: shown, declaredFormat: nil)
    }

    /// What the image must hash to, from where its service says the checksum comes from.
    private func expectedChecksum(_ role: ImageRole, _ reference: ImageReference, service: any ImageService, shown: ImageMetadata?,
                                  context: ImageRequestContext, requested: () throws -> ChecksumSource) async throws -> ImageChecksum? {
        let required: Bool
        switch service.checksumAuthority {
        case .service:
            // The service's own checksum is held to the same policy as the request's.
            if let checksum = shown?.checksum, checksum.algorithm == .md5, !checksums.allowMD5 {
                throw RoleError(role: role, reference: reference.redacted, error: IronicError(.imageChecksumAlgorithmFailure,
                    "MD5 image checksums are not allowed ([agent] allow_md5_checksum = false), and the \(service.name) image \(reference.redacted) has only an md5 checksum."))
            }
            return shown?.checksum
        case .request(let serviceRequires):
            required = serviceRequires && checksums.requireChecksums && role == .image
        }
        let source: ChecksumSource
        do {
            source = try requested()
        } catch let error as IronicError {
            throw RoleError(role: role, reference: reference.redacted, error: error)
        }
        switch source {
        case .value(let checksum):
            return checksum
        case .checksumFile(let url):
            guard !checksums.checksumFilesDisabled else {
                throw RoleError(role: role, reference: reference.redacted,
                                error: .invalidParameter("Checksum file URLs are disabled ([conductor] disable_support_for_checksum_files); give the checksum itself."))
            }
            return try await RoleError.attributed(to: role, reference) {
                let text = try await registry.service(for: url).checksumFileText(url, context: context, limit: 1 << 20)
                return try ChecksumFile.checksum(in: text, for: ChecksumFile.fileName(of: reference), reference: url.redacted, allowMD5: checksums.allowMD5)
            }
        case .none:
            if required {
                throw RoleError(role: role, reference: reference.redacted, error: .missingParameter(
                    "image_checksum, or image_os_hash_algo and image_os_hash_value, must be given in instance_info for the \(service.name) image \(reference.redacted)."))
            }
            return nil
        }
    }
}
