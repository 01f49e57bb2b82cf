import Primitives
import SystemSupport
import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing
import TestSupport
@testable import ImageServices

@Suite("file:// images")
struct FileImageServiceTests {
    let context = ImageRequestContext(requestID: "req-test", logger: Logger(label: "test"))

    /// A source folder (allowed) and a destination folder, both on the same file system.
    struct Fixture {
        let sources: TemporaryDirectory
        let destination: TemporaryDirectory
        let service: FileImageService

        init(allowSources: Bool = true) throws {
            sources = try TemporaryDirectory(prefix: "file-src")
            destination = try TemporaryDirectory(prefix: "file-dst")
            service = FileImageService(policy: FilePathPolicy(allowedPaths: allowSources ? [sources.path] : []))
        }

        func staging(in directory: String? = nil) throws -> StagingFile {
            StagingFile(in: try DirectoryHandle(path: directory ?? destination.path), finalName: "disk")
        }

        func remove() {
            sources.remove()
            destination.remove()
        }
    }

    func fetch(_ fixture: Fixture, _ href: String, into staging: StagingFile? = nil, algorithms: Set<HashAlgorithm> = [.sha256]) async throws -> (FetchedImage, StagingFile) {
        let staging = try staging ?? fixture.staging()
        let request = ImageFetchRequest(reference: try ImageReference(href), destination: staging, digestAlgorithms: algorithms, context: context)
        return (try await fixture.service.fetch(request), staging)
    }

    func inode(_ path: String) throws -> UInt64 {
        (try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as! NSNumber).uint64Value
    }

    @Test("same file system: a hard link sharing the inode, with the digest of the content")
    func hardLink() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let source = try fixture.sources.write(Array("abc".utf8), to: "image.img")
        let (fetched, staging) = try await fetch(fixture, "file://" + source, algorithms: [.sha256, .md5])
        try staging.commit()
        #expect(fetched.transfer == .hardlink)
        #expect(fetched.bytesTransferred == 0)
        #expect(fetched.size == 3)
        #expect(fetched.digests[.sha256] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(fetched.digests[.md5] == "900150983cd24fb0d6963f7d28e17f72")
        #expect(fetched.metadata.noCache)
        #expect(try inode(staging.finalPath) == inode(source))
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.destination.path) == ["disk"])
    }

    @Test("another file system: a copy with the same bytes")
    func copyAcrossFileSystems() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let shm = "/dev/shm/image-worker-test-\(uniqueHex())"
        try FileManager.default.createDirectory(atPath: shm, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: shm) }
        let bytes = randomBytes(3_000_000)
        let source = try fixture.sources.write(bytes, to: "big.img")
        let (fetched, staging) = try await fetch(fixture, "file://" + source, into: try fixture.staging(in: shm))
        try staging.commit()
        #expect(fetched.transfer == .copy)
        #expect(fetched.bytesTransferred == 3_000_000)
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: staging.finalPath))) == bytes)
        #expect(try inode(staging.finalPath) != inode(source))
    }

    @Test("an unchanged source is not hashed again; a changed one is, whatever its size")
    func digestMemo() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let shm = "/dev/shm/image-worker-test-\(uniqueHex())"
        try FileManager.default.createDirectory(atPath: shm, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: shm) }
        let source = try fixture.sources.write(Array("abc".utf8), to: "image.img")
        // Settled files only: one modified within the last seconds is always read again.
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -60)], ofItemAtPath: source)
        let phases = Phases()
        func fetchOnce(_ directory: String? = nil) async throws -> FetchedImage {
            let staging = try fixture.staging(in: directory)
            let request = ImageFetchRequest(reference: try ImageReference("file://" + source), destination: staging, digestAlgorithms: [.sha256],
                                            context: context, progress: { phases.add($0.phase) })
            let fetched = try await fixture.service.fetch(request)
            try staging.commit()
            return fetched
        }
        #expect(try await fetchOnce().digests[.sha256] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(phases.take().contains(.verify), "the first fetch reads the source")
        #expect(try await fetchOnce().digests[.sha256] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(!phases.take().contains(.verify), "an unchanged source is not read again")
        let copied = try await fetchOnce(shm)
        #expect(copied.transfer == .copy)
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: shm + "/disk"))) == Array("abc".utf8), "a copy with known digests still copies")
        // Same size, new content (the write changes the modification time): read again, each time
        // while it is that fresh.
        try Data("abd".utf8).write(to: URL(fileURLWithPath: source))
        for _ in 0..<2 {
            #expect(try await fetchOnce().digests[.sha256] == "a52d159f262b2c6ddb724a61840befc36eb30c88877a4030b65cbe86298449c9")
            #expect(phases.take().contains(.verify))
        }
    }

    @Test("a percent-encoded name and a literal name with spaces and non-ASCII both work")
    func namesWithSpaces() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let source = try fixture.sources.write([1, 2, 3], to: "mon image é.img")
        let encoded = source.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed)!
        #expect(encoded != source)
        for href in ["file://" + source, "file://" + encoded, "file://localhost" + source] {
            let (fetched, staging) = try await fetch(fixture, href)
            staging.discard()
            #expect(fetched.size == 3)
        }
    }

    @Test("hostile references are refused before anything is written", arguments: [
        ("file:///etc/passwd", "The path /etc is not permitted in file URLs"),
        ("file:///dev/zero", "The path /dev is not permitted in file URLs"),
        ("file:///proc/self/environ", "The path /proc is not permitted in file URLs"),
        ("file://otherhost/srv/x.img", "host 'otherhost' is not supported"),
        ("file:relative/x.img", "need an absolute path"),
    ])
    func hostile(href: String, expected: String) async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        await #expect {
            _ = try await fetch(fixture, href)
        } throws: { error in
            let error = error as? IronicError
            return error?.code == .imageRefValidationFailed && error?.message.contains(expected) == true
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.destination.path).isEmpty)
    }

    @Test("symlinks are followed only to where the policy allows")
    func symlinks() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let outside = try TemporaryDirectory(prefix: "file-outside")
        defer { outside.remove() }
        let secret = try outside.write(Array("secret".utf8), to: "secret.img")
        try FileManager.default.createSymbolicLink(atPath: fixture.sources.appending("to-etc"), withDestinationPath: "/etc/hostname")
        try FileManager.default.createSymbolicLink(atPath: fixture.sources.appending("to-outside"), withDestinationPath: secret)
        let inside = try fixture.sources.write([7], to: "real.img")
        try FileManager.default.createSymbolicLink(atPath: fixture.sources.appending("to-inside"), withDestinationPath: inside)

        await #expect { _ = try await fetch(fixture, "file://" + fixture.sources.appending("to-etc")) } throws: {
            ($0 as? IronicError)?.message.contains("/etc is not permitted") == true
        }
        await #expect { _ = try await fetch(fixture, "file://" + fixture.sources.appending("to-outside")) } throws: {
            ($0 as? IronicError)?.message.contains("is not allowed for image source file URLs") == true
        }
        let (fetched, staging) = try await fetch(fixture, "file://" + fixture.sources.appending("to-inside"))
        try staging.commit()
        #expect(try inode(staging.finalPath) == inode(inside))
        #expect(fetched.size == 1)
    }

    @Test("an allowed folder that is itself a symlink allows the files in its target")
    func allowedFolderIsALink() async throws {
        let target = try TemporaryDirectory(prefix: "file-target")
        let links = try TemporaryDirectory(prefix: "file-links")
        let destination = try TemporaryDirectory(prefix: "file-dst")
        defer { target.remove(); links.remove(); destination.remove() }
        let allowed = links.appending("ironic")
        try FileManager.default.createSymbolicLink(atPath: allowed, withDestinationPath: target.path)
        let source = try target.write([4, 2], to: "image.img")
        let service = FileImageService(policy: FilePathPolicy(allowedPaths: [allowed]))
        let staging = StagingFile(in: try DirectoryHandle(path: destination.path), finalName: "disk")
        let request = ImageFetchRequest(reference: try ImageReference("file://\(allowed)/image.img"), destination: staging,
                                        digestAlgorithms: [.sha256], context: context)
        let fetched = try await service.fetch(request)
        staging.discard()
        #expect(fetched.size == 2)
        // The target folder as written is not in the allow list, so it stays closed.
        let direct = ImageFetchRequest(reference: try ImageReference("file://" + source), destination: staging, digestAlgorithms: [.sha256], context: context)
        await #expect { _ = try await service.fetch(direct) } throws: {
            ($0 as? IronicError)?.message.contains("is not allowed for image source file URLs") == true
        }
    }

    @Test("the worker's own folders are closed to file://, even below an allowed path, directly or through a symlink")
    func workerFoldersClosed() async throws {
        let root = try TemporaryDirectory(prefix: "file-worker")
        let destination = try TemporaryDirectory(prefix: "file-dst")
        defer { root.remove(); destination.remove() }
        // An allowlist that contains the worker's state, as `/var/lib/ironic` would contain an
        // `instance_master_path` under it.
        let masters = root.appending("master_images")
        try FileManager.default.createDirectory(atPath: masters, withIntermediateDirectories: true)
        let privateImage = try root.write([9, 9, 9], to: "master_images/private-glance-image")
        let open = try root.write([1], to: "open.img")
        let link = root.appending("innocent.img")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: privateImage)
        let service = FileImageService(policy: FilePathPolicy(allowedPaths: [root.path], workerPaths: [masters]))
        func refusal(_ path: String) async throws -> String? {
            let staging = StagingFile(in: try DirectoryHandle(path: destination.path), finalName: "disk")
            defer { staging.discard() }
            do {
                let request = ImageFetchRequest(reference: try ImageReference("file://" + path), destination: staging, digestAlgorithms: [.sha256], context: context)
                _ = try await service.fetch(request)
                return nil
            } catch {
                return (error as? IronicError)?.message
            }
        }
        #expect(try await refusal(open) == nil, "the rest of the allowed folder stays open")
        for path in [privateImage, link, masters + "/missing", root.path + "/master_images/../master_images/private-glance-image"] {
            let message = try await refusal(path)
            #expect(message?.contains("is not allowed for image source file URLs") == true, "\(path): \(message ?? "fetched")")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: destination.path).isEmpty)
    }

    @Test("only regular files: directories, FIFOs and missing files are refused")
    func notRegularFiles() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let folder = fixture.sources.appending("folder")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let fifo = fixture.sources.appending("fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        for (path, expected) in [(folder, "not a regular file"), (fifo, "not a regular file"), (fixture.sources.appending("missing"), "Specified image file not found.")] {
            await #expect {
                _ = try await fetch(fixture, "file://" + path)
            } throws: { ($0 as? IronicError)?.message.contains(expected) == true }
        }
    }

    @Test("an empty allow list turns file:// off")
    func emptyAllowList() async throws {
        let fixture = try Fixture(allowSources: false)
        defer { fixture.remove() }
        let source = try fixture.sources.write([1], to: "x.img")
        await #expect { _ = try await fetch(fixture, "file://" + source) } throws: {
            ($0 as? IronicError)?.message.contains("is not allowed for image source file URLs") == true
        }
    }

    @Test("outside the allow list, a file that exists and one that does not get the same refusal (no existence oracle)")
    func noExistenceOracle() async throws {
        let fixture = try Fixture(allowSources: false)
        defer { fixture.remove() }
        let existing = try fixture.sources.write([1], to: "x.img")
        for path in [existing, fixture.sources.appending("missing.img"), fixture.sources.appending("missing/deeper.img")] {
            await #expect { _ = try await fetch(fixture, "file://" + path) } throws: {
                let error = $0 as? IronicError
                return error?.code == .imageRefValidationFailed && error?.message.contains("is not allowed for image source file URLs") == true
            }
        }
    }

    @Test("show reports size, modification time and no_cache")
    func show() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let source = try fixture.sources.write(Array(repeating: 0, count: 1234), to: "s.img")
        let metadata = try await fixture.service.show(try ImageReference("file://" + source), context: context)
        #expect(metadata.size == 1234)
        #expect(metadata.noCache)
        let modified = try FileManager.default.attributesOfItem(atPath: source)[.modificationDate] as! Date
        #expect(abs(Double(metadata.updatedAtMicroseconds ?? 0) / 1e6 - modified.timeIntervalSince1970) < 1)
    }
}

@Suite("path policy")
struct FilePathPolicyTests {
    @Test("blocked prefixes respect path boundaries")
    func boundaries() {
        let policy = FilePathPolicy(allowedPaths: ["/"])
        #expect(throws: IronicError.self) { try policy.check("/dev", reference: "r") }
        #expect(throws: IronicError.self) { try policy.check("/etc/x", reference: "r") }
        #expect(throws: Never.self) { try policy.check("/devices/x", reference: "r") }
        #expect(throws: Never.self) { try policy.check("/etcetera", reference: "r") }
    }

    @Test("allowed prefixes respect path boundaries and are normalised")
    func allowed() {
        let policy = FilePathPolicy(allowedPaths: ["/srv/images/", "/var/lib/ironic"])
        #expect(policy.allowedPaths == ["/srv/images", "/var/lib/ironic"])
        #expect(throws: Never.self) { try policy.check("/srv/images/a.img", reference: "r") }
        #expect(throws: IronicError.self) { try policy.check("/srv/images-other/a.img", reference: "r") }
    }

    @Test("normalising removes dots, double dots and repeated slashes")
    func normalise() {
        #expect(FilePathPolicy.normalize("/srv//a/./b/../c/") == "/srv/a/c")
        #expect(FilePathPolicy.normalize("/../../etc") == "/etc")
    }
}

@Suite("staging files")
struct StagingFileTests {
    @Test("commit replaces the final name atomically; discard leaves nothing")
    func commitAndDiscard() throws {
        let folder = try TemporaryDirectory(prefix: "staging")
        defer { folder.remove() }
        try folder.write([1], to: "disk")
        let directory = try DirectoryHandle(path: folder.path)
        let staging = StagingFile(in: directory, finalName: "disk")
        let output = try staging.create()
        _ = [UInt8]([2, 2]).withUnsafeBytes { write(output.rawValue, $0.baseAddress, 2) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).count == 2)
        try staging.commit()
        #expect(try Data(contentsOf: URL(fileURLWithPath: folder.appending("disk"))) == Data([2, 2]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["disk"])
        let other = StagingFile(in: directory, finalName: "kernel")
        _ = try other.create()
        other.discard()
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["disk"])
    }

    @Test("committing a second link to the same inode leaves no temporary name behind")
    func sameInode() throws {
        let folder = try TemporaryDirectory(prefix: "staging")
        defer { folder.remove() }
        let source = try folder.write([9], to: "source")
        let directory = try DirectoryHandle(path: folder.path)
        let fd = open(source, O_RDONLY)
        let descriptor = OwnedDescriptor(fd)
        for _ in 0..<2 {
            let staging = StagingFile(in: directory, finalName: "disk")
            try staging.link(from: descriptor)
            try staging.commit()
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == ["disk", "source"])
    }

    @Test("removing a tree never follows symlinks out of it")
    func removeTree() throws {
        let folder = try TemporaryDirectory(prefix: "tree")
        let outside = try TemporaryDirectory(prefix: "outside")
        defer { folder.remove(); outside.remove() }
        let kept = try outside.write([1], to: "keep")
        try folder.write([1], to: "node/disk")
        try FileManager.default.createSymbolicLink(atPath: folder.appending("node/escape"), withDestinationPath: outside.path)
        let directory = try DirectoryHandle(path: folder.path)
        try directory.removeTree("node")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
        #expect(FileManager.default.fileExists(atPath: kept))
    }
}

/// The progress phases a fetch reported.
private final class Phases: Sendable {
    private let seen = NIOLockedValueBox<[TransferProgress.Phase]>([])
    func add(_ phase: TransferProgress.Phase) { seen.withLockedValue { $0.append(phase) } }
    func take() -> [TransferProgress.Phase] { seen.withLockedValue { seen in defer { seen = [] }; return seen } }
}
