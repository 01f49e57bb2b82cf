import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// The space promised to the writes in progress, per file system, so that concurrent downloads do
/// not each count the same free bytes: `statvfs` alone says what is free now, not what the
/// downloads already under way will still write. A new reservation is granted only from what is
/// free less what every other reservation on that file system has yet to write.
///
/// A reservation is for the size announced beforehand (HEAD's `Content-Length`, Glance's `size`,
/// the source file's size), and a write past it fails; without an announced size it starts empty
/// and grows as bytes arrive, each growth checked the same way. Reservations only count within
/// this process; other processes on the host show up in `statvfs` as soon as they write.
public final class DiskSpaceLedger: @unchecked Sendable {
    // @unchecked: `entries` and `nextID` are only touched with `lock` held.

    /// The ledger every download and copy of this process reserves through.
    public static let shared = DiskSpaceLedger()

    /// How far a reservation without an announced size grows at a time (less when less is free).
    public static let growthStep: Int64 = 64 << 20

    private let lock = ConditionLock()
    private var entries: [Int: Entry] = [:]
    private var nextID = 0
    private let available: @Sendable (DirectoryHandle) throws -> Int64

    private struct Entry {
        var device: UInt64
        var reserved: Int64
        var written: Int64
        /// What the bytes reserved for are yet to take on the disk.
        var outstanding: Int64 { max(reserved - written, 0) }
    }

    /// A ledger asking `available` (by default `statvfs`) what a file system has free.
    public init(available: @escaping @Sendable (DirectoryHandle) throws -> Int64 = { try DiskSpace.available(at: $0) }) {
        self.available = available
    }

    /// What a new reservation on the file system of `directory` could have: the free space less
    /// what the reservations there have yet to write. Blocking (`statvfs`, which waits for the
    /// server on a network file system): call it off the cooperative pool.
    public func unreserved(in directory: DirectoryHandle) throws -> Int64 {
        let device = try Self.device(of: directory)
        let free = try available(directory)
        return lock.withLock { free - outstanding(on: device, except: nil) }
    }

    /// Reserves `bytes` on the file system of `directory` for a file that must not grow past
    /// `limit` (nil: it grows as bytes arrive). Throws Ironic's `InsufficientDiskSpace` when they
    /// are not free. Blocking, like ``unreserved(in:)``.
    public func reserve(_ bytes: Int64, limit: Int64?, in directory: DirectoryHandle) throws -> DiskReservation {
        let device = try Self.device(of: directory)
        let free = try available(directory)
        let id: Int? = lock.withLock {
            guard free - outstanding(on: device, except: nil) >= bytes else { return nil }
            nextID += 1
            entries[nextID] = Entry(device: device, reserved: bytes, written: 0)
            return nextID
        }
        guard let id else {
            throw DiskSpace.insufficient(directory.path, required: bytes, available: max(try unreserved(in: directory), 0))
        }
        return DiskReservation(ledger: self, id: id, directory: directory, limit: limit)
    }

    /// Records that the file now ends at `end`; grows the reservation when `end` is past it.
    func cover(_ id: Int, upTo end: Int64, directory: DirectoryHandle, limit: Int64?) throws {
        let covered: Bool = lock.withLock {
            guard let entry = entries[id], end > entry.reserved else {
                entries[id]?.written = end
                return true
            }
            return false
        }
        if covered { return }
        if let limit, end > limit { throw DiskReservation.Overrun(limit: limit) }
        let free = try available(directory)
        let shortage: (needed: Int64, free: Int64)? = lock.withLock {
            guard var entry = entries[id] else { return nil }
            // statvfs already counts what this file holds; it is about to take `needed` more.
            let others = free - outstanding(on: entry.device, except: id)
            let needed = end - entry.written
            guard others >= needed else { return (needed, others) }
            entry.reserved = end + min(Self.growthStep, others - needed)
            entry.written = end
            entries[id] = entry
            return nil
        }
        if let shortage {
            throw DiskSpace.insufficient(directory.path, required: shortage.needed, available: max(shortage.free, 0))
        }
    }

    /// Gives a reservation's outstanding bytes back.
    func release(_ id: Int) {
        _ = lock.withLock { entries.removeValue(forKey: id) }
    }

    /// The sum of what the reservations on `device` have yet to write (call with the lock held).
    private func outstanding(on device: UInt64, except excluded: Int?) -> Int64 {
        entries.reduce(0) { $1.key != excluded && $1.value.device == device ? $0 + $1.value.outstanding : $0 }
    }

    private static func device(of directory: DirectoryHandle) throws(SystemCallError) -> UInt64 {
        var info = stat()
        _ = try SystemCallError.check(fstat(directory.descriptor.rawValue, &info), "stat", directory.path)
        return UInt64(info.st_dev)
    }
}

/// Space reserved for one file being written (see ``DiskSpaceLedger``); given back when released
/// or when the reservation is gone.
public final class DiskReservation: Sendable {
    private let ledger: DiskSpaceLedger
    private let id: Int
    private let directory: DirectoryHandle
    /// The size announced for the file: writing past it fails with ``Overrun``.
    public let limit: Int64?

    /// A write past the announced size.
    public struct Overrun: Error, CustomStringConvertible {
        public var limit: Int64
        public var description: String { "the image is larger than the \(limit) bytes announced for it" }
    }

    fileprivate init(ledger: DiskSpaceLedger, id: Int, directory: DirectoryHandle, limit: Int64?) {
        self.ledger = ledger
        self.id = id
        self.directory = directory
        self.limit = limit
    }

    deinit { ledger.release(id) }

    /// Call before writing up to offset `end` of the file (after a truncation, with the new end):
    /// throws ``Overrun`` past the limit, and `InsufficientDiskSpace` when the reservation must
    /// grow and the space is not free. Blocking when it grows (`statvfs`).
    public func cover(upTo end: Int64) throws {
        try ledger.cover(id, upTo: end, directory: directory, limit: limit)
    }

    /// Gives the outstanding bytes back now (the file is complete or gone).
    public func release() { ledger.release(id) }
}
