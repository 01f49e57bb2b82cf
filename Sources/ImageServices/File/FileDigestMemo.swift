import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// The digests of `file://` sources this process has read, keyed by what identifies a file's
/// contents without reading it: device, inode, size and modification time (to the nanosecond).
/// A source fetched again unchanged — a hundred nodes deploying one image — is linked or copied
/// without being hashed again.
///
/// The trust is the hard link's: whoever can write the source can change what nodes get (and
/// could set the modification time back), so `file_url_allowed_paths` must be folders only
/// trusted users write. The memo is bounded (the oldest entries go first) and lives in memory.
public final class FileDigestMemo: Sendable {
    struct Key: Hashable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modifiedSeconds: Int64
        var modifiedNanoseconds: Int64

        init(_ info: stat) {
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
            size = Int64(info.st_size)
            modifiedSeconds = Int64(info.st_mtim.tv_sec)
            modifiedNanoseconds = Int64(info.st_mtim.tv_nsec)
        }
    }

    private struct State {
        var digests: [Key: [HashAlgorithm: String]] = [:]
        var order: [Key] = []
    }

    private let capacity: Int
    private let state = NIOLockedValueBox(State())

    /// A memo of at most `capacity` files.
    public init(capacity: Int = 4096) {
        self.capacity = max(1, capacity)
    }

    /// The digests recorded for the file as `info` describes it, if every one of `algorithms` is.
    func digests(for info: stat, algorithms: Set<HashAlgorithm>) -> [HashAlgorithm: String]? {
        let key = Key(info)
        return state.withLockedValue { state in
            guard let known = state.digests[key], algorithms.allSatisfy({ known[$0] != nil }) else { return nil }
            return known.filter { algorithms.contains($0.key) }
        }
    }

    /// Records digests computed from the file as `info` describes it (taken before the read, and
    /// checked unchanged after it by the caller). A file modified in the last two seconds is not
    /// recorded: file times are coarse (a timer tick), so a same-size rewrite within the tick
    /// would keep the same key — git's "racy clean" rule.
    func record(_ digests: [HashAlgorithm: String], for info: stat) {
        guard Int64(time(nil)) - Int64(info.st_mtim.tv_sec) >= 2 else { return }
        let key = Key(info)
        state.withLockedValue { state in
            if state.digests[key] == nil {
                state.order.append(key)
                if state.order.count > capacity {
                    state.digests[state.order.removeFirst()] = nil
                }
            }
            state.digests[key, default: [:]].merge(digests) { _, new in new }
        }
    }
}
