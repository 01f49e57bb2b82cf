import Foundation
import Logging
import Testing
import TestSupport
import ImageServices

/// The README's "Adding an image service" example, compiled and run: a service for `demo://NAME`
/// that serves files from one folder by delegating to the file service.
struct DemoImageService: ImageService {
    let name = "demo"
    let schemes = ["demo"]
    let folder: String
    let files: FileImageService

    init(folder: String) {
        self.folder = folder
        files = FileImageService(policy: FilePathPolicy(allowedPaths: [folder]))
    }

    private func fileReference(_ reference: ImageReference) throws -> ImageReference {
        let name = reference.original.dropFirst("demo://".count)
        guard !name.isEmpty, !name.contains("/") else { throw IronicError(.invalidImageRef, "Invalid image href \(reference.redacted).") }
        return try ImageReference("file://\(folder)/\(name)")
    }

    func show(_ reference: ImageReference, context: ImageRequestContext) async throws -> ImageMetadata {
        try await files.show(fileReference(reference), context: context)
    }

    func fetch(_ request: ImageFetchRequest) async throws -> FetchedImage {
        var request = request
        request.reference = try fileReference(request.reference)
        return try await files.fetch(request)
    }
}

@Suite("adding an image service (the README's example)")
struct ServiceExtensionExampleTests {
    @Test("a registered service serves its scheme; no other code changed")
    func demo() async throws {
        let folder = try TemporaryDirectory(prefix: "demo")
        let destination = try TemporaryDirectory(prefix: "demo-dst")
        defer { folder.remove(); destination.remove() }
        try folder.write([1, 2, 3, 4], to: "base.img")
        var registry = ImageServiceRegistry()
        registry.register(DemoImageService(folder: folder.path))
        let reference = try ImageReference("demo://base.img")
        let service = try registry.service(for: reference)
        let context = ImageRequestContext(requestID: "req-demo", logger: Logger(label: "demo"))
        #expect(try await service.show(reference, context: context).size == 4)
        let staging = StagingFile(in: try DirectoryHandle(path: destination.path), finalName: "disk")
        let fetched = try await service.fetch(ImageFetchRequest(reference: reference, destination: staging, digestAlgorithms: [.sha256], context: context))
        try staging.commit()
        #expect(fetched.size == 4)
        await #expect { _ = try await service.show(try ImageReference("demo://../x"), context: context) } throws: {
            ($0 as? IronicError)?.code == .invalidImageRef
        }
    }
}
