import Primitives
import Foundation
import ImageServices
import ImageWorker
import NIOConcurrencyHelpers

/// Shows transfer progress on standard error: a redrawn bar on a terminal, a plain line every few
/// seconds otherwise (logs and CI output stay readable).
final class ProgressDisplay: Sendable {
    private let isTerminal = isatty(STDERR_FILENO) == 1
    private let state = NIOLockedValueBox(State())
    private let started = ContinuousClock.now

    private struct State {
        var lastDraw: ContinuousClock.Instant?
        var drewBar = false
    }

    /// Reports progress; cheap to call for every chunk.
    func report(_ role: ImageRole, _ progress: TransferProgress) {
        let now = ContinuousClock.now
        let interval: Duration = isTerminal ? .milliseconds(100) : .seconds(5)
        let shouldDraw = state.withLockedValue { state -> Bool in
            if let last = state.lastDraw, now - last < interval, progress.bytes != progress.total { return false }
            state.lastDraw = now
            state.drewBar = isTerminal
            return true
        }
        guard shouldDraw else { return }
        let elapsed = max((now - started).seconds, 0.001)
        let rate = Double(progress.bytes) / elapsed
        var text = "\(role.fileName) \(progress.phase.rawValue): \(Self.size(progress.bytes))"
        if let total = progress.total, total > 0 {
            let fraction = min(Double(progress.bytes) / Double(total), 1)
            text += " of \(Self.size(total)) (\(Int(fraction * 100))%)"
            if isTerminal {
                let width = 30
                let filled = Int(fraction * Double(width))
                text = "[\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] " + text
            }
        }
        text += ", \(Self.size(Int64(rate)))/s"
        let line = isTerminal ? "\r\u{1B}[K" + text : text + "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Ends the bar's line (on a terminal).
    func finish() {
        if state.withLockedValue({ $0.drewBar }) { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    static func size(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }
}
