import ImageServices
import SystemSupport

/// The place stage: once every image of a node is staged and verified, each is renamed over its
/// final name (one atomic step each); if anything failed, every staging file goes. A node's files
/// are complete or absent, never partial.
enum ImagePlacement {
    /// Renames every staged image into place and describes it.
    static func place(_ staged: [StagedImage]) async throws -> [ResolvedImage] {
        var images: [ResolvedImage] = []
        for image in staged {
            do {
                try await image.staging.commitOffPool()
            } catch {
                throw RoleError(role: image.plan.role, reference: image.plan.reference.redacted,
                                error: IronicError(.imageDownloadFailed, "Cannot move image \(image.plan.reference.redacted) into place: \(error)."))
            }
            images.append(resolved(image, path: image.staging.finalPath))
        }
        return images
    }

    /// Removes the role files (`disk`, `kernel`, `ramdisk`) of roles not in `roles` from a node
    /// folder, off the pool (unlinking a large image takes a while).
    static func removeOthers(than roles: Set<ImageRole>, in directory: DirectoryHandle) async throws {
        let stale = ImageRole.allCases.filter { !roles.contains($0) }.map(\.fileName)
        guard !stale.isEmpty else { return }
        do {
            try await BlockingWork.run { _ in for name in stale { try directory.remove(name) } }
        } catch {
            throw RoleError(role: .image, reference: "(node folder)",
                            error: IronicError(.imageDownloadFailed, "Cannot remove an earlier image from \(directory.path): \(error)."))
        }
    }

    /// Removes every staging file (those already committed are gone already).
    static func discard(_ staged: [StagedImage]) async {
        for image in staged { await image.staging.discardOffPool() }
    }

    /// The result's description of a placed image.
    static func resolved(_ image: StagedImage, path: String) -> ResolvedImage {
        ResolvedImage(role: image.plan.role, reference: image.plan.reference, serviceName: image.plan.service.name,
                      metadata: image.fetched.metadata, path: path, fetched: image.fetched, checksum: image.checksum,
                      verified: image.verified, cache: image.cache, duration: ContinuousClock.now - image.started,
                      inspection: image.inspection, source: image.source)
    }
}
