import Foundation
import NIOConcurrencyHelpers
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A TCP forwarder from a loopback port of its own to `127.0.0.1:port` that injects faults into
/// the connections through it: frozen, it keeps every socket open and passes nothing either way,
/// as a paused VM or a partition does; it can also drop every connection at once, as a broker
/// that closes them does.
///
/// Fault injection for one connection's test, so that neither freezes nor drops the shared broker
/// the other suites use at the same time, and without `rabbitmqctl` (an Erlang VM start: seconds,
/// many more on a busy machine). Its blocking socket calls run on threads of its own, never on
/// the cooperative pool.
public final class FaultInjectingTCPProxy: Sendable {
    /// The port it listens on (127.0.0.1).
    public let port: Int
    private let listener: Int32
    private let target: sockaddr_in
    private let frozen = Atomic<Bool>(false)
    private let sockets = NIOLockedValueBox<(open: Set<Int32>, closed: Bool)>(([], false))

    /// Listens on an ephemeral loopback port and forwards each connection to `127.0.0.1:targetPort`.
    public init(targetPort: Int) throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw CommandError(message: "socket: errno \(errno)") }
        var address = Self.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(listener, socketAddress, length) == 0 && listen(listener, 16) == 0
                    && getsockname(listener, socketAddress, &length) == 0
            }
        }
        guard bound else {
            Glibc.close(listener)
            throw CommandError(message: "cannot listen on a loopback port: errno \(errno)")
        }
        self.listener = listener
        port = Int(UInt16(bigEndian: address.sin_port))
        target = Self.loopback(port: targetPort)
        Thread.detachNewThread { self.acceptConnections() }
    }

    /// Stops passing bytes (connections stay open).
    public func freeze() { frozen.store(true, ordering: .relaxed) }

    /// Passes bytes again.
    public func thaw() { frozen.store(false, ordering: .relaxed) }

    /// Drops every forwarded connection (both ends see it closed); new ones are still taken.
    ///
    /// Shut down under the lock: a pump pair removes its descriptors under it before closing them,
    /// so a number shut down here is never one the process has since reused for another socket.
    public func dropConnections() {
        sockets.withLockedValue { state in
            for descriptor in state.open { shutdown(descriptor, Int32(SHUT_RDWR)) }
        }
    }

    /// Closes the listener and every forwarded connection.
    public func close() {
        sockets.withLockedValue { state in
            state.closed = true
            for descriptor in state.open { shutdown(descriptor, Int32(SHUT_RDWR)) }
        }
        shutdown(listener, Int32(SHUT_RDWR))
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    private func acceptConnections() {
        defer { Glibc.close(listener) }
        while true {
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                if errno == EINTR { continue }
                return
            }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = target
            let connected = upstream >= 0 && withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            let accepted = connected && sockets.withLockedValue { state -> Bool in
                guard !state.closed else { return false }
                state.open.formUnion([client, upstream])
                return true
            }
            guard accepted else {
                Glibc.close(client)
                if upstream >= 0 { Glibc.close(upstream) }
                continue
            }
            let pairs = Atomic<Int>(2)
            for (from, to) in [(client, upstream), (upstream, client)] {
                Thread.detachNewThread {
                    self.pump(from: from, to: to)
                    // The second pump to end closes both sockets.
                    if pairs.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                        self.sockets.withLockedValue { $0.open.subtract([client, upstream]) }
                        Glibc.close(client)
                        Glibc.close(upstream)
                    }
                }
            }
        }
    }

    /// Copies bytes from one socket to the other until either end closes; holds them while frozen.
    private func pump(from source: Int32, to destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            if frozen.load(ordering: .relaxed) {
                usleep(20_000)
                if sockets.withLockedValue({ $0.closed }) { break }
                continue
            }
            var descriptor = pollfd(fd: source, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 50) >= 0 || errno == EINTR else { break }
            guard descriptor.revents != 0, !frozen.load(ordering: .relaxed) else { continue }
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            var sent = 0
            while sent < count {
                // MSG_NOSIGNAL: the other end may have been shut down (a drop); that ends the pump,
                // it must not raise SIGPIPE in the test process.
                let written = buffer.withUnsafeBytes { send(destination, $0.baseAddress! + sent, count - sent, Int32(MSG_NOSIGNAL)) }
                guard written > 0 else { break }
                sent += written
            }
            guard sent == count else { break }
        }
        shutdown(source, Int32(SHUT_RDWR))
        shutdown(destination, Int32(SHUT_RDWR))
    }
}
