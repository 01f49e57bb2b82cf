import Primitives
import AMQPModel
import CFileSystem

#if canImport(Glibc)
import Glibc
#endif

/// An `eventfd(2)` that async code signals to wake the connection thread out of `poll(2)`.
final class WakeupEvent: Sendable {
    let descriptor: Int32

    init() {
        descriptor = iw_eventfd()
        precondition(descriptor >= 0, "eventfd failed: errno \(errno)")
    }

    deinit {
        close(descriptor)
    }

    /// Wakes the thread (now, or the next time it polls).
    func signal() {
        var one: UInt64 = 1
        _ = write(descriptor, &one, MemoryLayout<UInt64>.size)
    }

    /// Clears pending signals.
    func drain() {
        var value: UInt64 = 0
        _ = read(descriptor, &value, MemoryLayout<UInt64>.size)
    }

    /// Waits until the wakeup is signalled or `socket` (if any) is readable, at most `timeout`;
    /// returns whether either happened (false: the time ran out).
    @discardableResult
    func wait(socket: Int32?, timeout: Duration) -> Bool {
        var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
        if let socket { descriptors.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0)) }
        let milliseconds = Int32(clamping: Int64(timeout.seconds * 1000))
        let ready = poll(&descriptors, nfds_t(descriptors.count), milliseconds)
        if descriptors[0].revents != 0 { drain() }
        return ready != 0
    }
}
