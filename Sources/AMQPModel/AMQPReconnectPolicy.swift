import Primitives
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How long to wait before each reconnection attempt: exponential back-off, capped, with jitter
/// so that many workers that lost the same broker do not come back in lockstep.
public struct AMQPReconnectPolicy: Sendable, Hashable {
    /// The delay before the first retry.
    public var initialDelay: Duration
    /// The longest delay between two attempts.
    public var maximumDelay: Duration
    /// The growth factor per failed attempt.
    public var multiplier: Double
    /// The fraction of the delay that is random: 0.5 means the delay is between 50 % and 100 %
    /// of the exponential value.
    public var jitter: Double

    /// Creates a policy.
    public init(initialDelay: Duration = .milliseconds(250), maximumDelay: Duration = .seconds(15), multiplier: Double = 2, jitter: Double = 0.5) {
        self.initialDelay = initialDelay
        self.maximumDelay = maximumDelay
        self.multiplier = multiplier
        self.jitter = min(max(jitter, 0), 1)
    }

    /// The delay before attempt `attempt` (1 for the first retry), given a random draw in 0...1.
    public func delay(beforeAttempt attempt: Int, random: Double) -> Duration {
        let initial = initialDelay.seconds
        let capped = min(maximumDelay.seconds, initial * pow(multiplier, Double(min(max(attempt - 1, 0), 64))))
        let factor = 1 - jitter * min(max(random, 0), 1)
        return .nanoseconds(Int64(capped * factor * 1_000_000_000))
    }
}
