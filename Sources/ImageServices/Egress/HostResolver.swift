import NIOConcurrencyHelpers
import SystemSupport

#if canImport(Glibc)
import Glibc
#endif

/// Resolves host names for the egress policy with the system's resolver (`getaddrinfo`, the one
/// swift-nio would use), off the cooperative pool: a resolver that times out blocks its thread
/// for seconds.
///
/// IP literals are read as the system reads them, in every spelling it accepts (`2852039166`,
/// `0xa9.0xfe.0xa9.0xfe`, `[::ffff:169.254.169.254]`): those are the addresses a connection would
/// go to.
enum HostResolver {
    /// The name did not resolve.
    struct Failure: Error, CustomStringConvertible {
        var host: String
        /// What the resolver said.
        var reason: String
        var description: String { reason }

        init(host: String, reason: String) {
            self.host = host
            self.reason = reason
        }

        /// From `getaddrinfo`'s code (`EAI_NONAME`, `EAI_AGAIN`, …).
        init(host: String, code: Int32) {
            self.init(host: host, reason: "the host name cannot be resolved (\(String(cString: gai_strerror(code))))")
        }
    }

    /// Every address `host` (a URL's host, brackets and all) resolves to, without duplicates.
    /// Waits at most `timeout`, and not at all once the caller is cancelled: `getaddrinfo` cannot
    /// be interrupted, so a lookup that outlives its caller finishes on its thread, unheard.
    static func addresses(of host: String, timeout: Duration = .seconds(60)) async throws -> [IPAddress] {
        let name = unbracketed(host)
        let answer = FirstAnswer<[IPAddress]>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[IPAddress], any Error>) in
                answer.wait(with: continuation)
                let timer = Task {
                    try await Task.sleep(for: timeout)
                    answer.give(.failure(Failure(host: name, reason: "the host name did not resolve within \(Int(timeout.components.seconds)) s")))
                }
                Task.detached {
                    let result: Result<[IPAddress], any Error>
                    do {
                        result = .success(try await BlockingWork.run { _ in try resolve(name) })
                    } catch {
                        result = .failure(error)
                    }
                    timer.cancel()
                    answer.give(result)
                }
            }
        } onCancel: {
            answer.give(.failure(CancellationError()))
        }
    }

    /// A URL host as the resolver wants it: `[fe80::1%25eth0]` → `fe80::1%eth0`.
    static func unbracketed(_ host: String) -> String {
        guard host.hasPrefix("["), host.hasSuffix("]") else { return host }
        let inner = host.dropFirst().dropLast()
        return String(inner).replacing("%25", with: "%")
    }

    /// Whether `host` is an IP literal in some spelling (nothing for DNS to answer).
    static func isLiteral(_ host: String) -> Bool {
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>? = nil
        defer { if let result { freeaddrinfo(result) } }
        return getaddrinfo(unbracketed(host), nil, &hints, &result) == 0
    }

    /// The first of several possible answers, handed to the one waiting continuation; later ones
    /// are dropped (a lookup that ends after its timeout, a timer after the lookup).
    final class FirstAnswer<Value: Sendable>: Sendable {
        private enum State {
            case empty
            case waiting(CheckedContinuation<Value, any Error>)
            case given(Result<Value, any Error>)
            case done
        }
        private let state = NIOLockedValueBox(State.empty)

        func wait(with continuation: CheckedContinuation<Value, any Error>) {
            let early = state.withLockedValue { state -> Result<Value, any Error>? in
                if case .given(let result) = state {
                    state = .done
                    return result
                }
                state = .waiting(continuation)
                return nil
            }
            if let early { continuation.resume(with: early) }
        }

        func give(_ result: Result<Value, any Error>) {
            let waiting = state.withLockedValue { state -> CheckedContinuation<Value, any Error>? in
                switch state {
                case .empty:
                    state = .given(result)
                    return nil
                case .waiting(let continuation):
                    state = .done
                    return continuation
                case .given, .done:
                    return nil
                }
            }
            waiting?.resume(with: result)
        }
    }

    private static func resolve(_ name: String) throws(Failure) -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>? = nil
        let code = getaddrinfo(name, nil, &hints, &result)
        guard code == 0, let first = result else { throw Failure(host: name, code: code) }
        defer { freeaddrinfo(first) }
        var addresses: [IPAddress] = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            if let address = Self.address(current.pointee), !addresses.contains(address) { addresses.append(address) }
            entry = current.pointee.ai_next
        }
        guard !addresses.isEmpty else { throw Failure(host: name, code: EAI_NONAME) }
        return addresses
    }

    private static func address(_ info: addrinfo) -> IPAddress? {
        guard let socketAddress = info.ai_addr else { return nil }
        switch info.ai_family {
        case AF_INET:
            return socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                withUnsafeBytes(of: v4.pointee.sin_addr) { IPAddress(bytes: Array($0)) }
            }
        case AF_INET6:
            return socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                withUnsafeBytes(of: v6.pointee.sin6_addr) { IPAddress(bytes: Array($0)) }
            }
        default:
            return nil
        }
    }
}
