import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Times in the two forms the wire uses.
public enum OsloTimestamp {
    /// The current time as microseconds since the Unix epoch.
    public static func nowMicroseconds() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1_000_000).rounded(.down))
    }

    /// Python's `str(datetime.utcnow())`: `2026-11-24 21:42:46.512294` (UTC, a space instead of
    /// `T`, no zone, and no fraction at all when the microseconds are 0), the notification
    /// `timestamp` format.
    public static func notificationFormat(microseconds: Int64) -> String {
        let (parts, micros) = utcParts(microseconds: microseconds)
        var text = "\(parts.date) \(parts.time)"
        if micros != 0 { text += "." + pad(micros, 6) }
        return text
    }

    /// Reads ``notificationFormat(microseconds:)`` back.
    public static func parseNotificationFormat(_ text: String) -> Int64? {
        let parts = text.split(separator: " ")
        guard parts.count == 2 else { return nil }
        let date = parts[0].split(separator: "-").compactMap { Int32($0) }
        let clock = parts[1].split(separator: ".")
        let time = clock[0].split(separator: ":").compactMap { Int32($0) }
        guard date.count == 3, time.count == 3 else { return nil }
        var broken = tm()
        broken.tm_year = date[0] - 1900
        broken.tm_mon = date[1] - 1
        broken.tm_mday = date[2]
        broken.tm_hour = time[0]
        broken.tm_min = time[1]
        broken.tm_sec = time[2]
        let seconds = Int64(timegm(&broken))
        var micros: Int64 = 0
        if clock.count == 2 {
            let fraction = String(clock[1].prefix(6))
            micros = (Int64(fraction) ?? 0) * Int64(pow(10.0, Double(6 - fraction.count)))
        }
        return seconds * 1_000_000 + micros
    }

    /// ISO 8601 with Ironic's `+00:00` suffix and whole seconds: `2026-11-24T21:42:46+00:00`.
    public static func isoFormat(microseconds: Int64) -> String {
        let (parts, _) = utcParts(microseconds: microseconds)
        return "\(parts.date)T\(parts.time)+00:00"
    }

    /// RFC 3339 in UTC with microseconds, for log records: `2026-11-24T21:42:46.512294Z`.
    public static func rfc3339Format(microseconds: Int64) -> String {
        let (parts, micros) = utcParts(microseconds: microseconds)
        return "\(parts.date)T\(parts.time).\(pad(micros, 6))Z"
    }

    private static func utcParts(microseconds: Int64) -> ((date: String, time: String), Int64) {
        let seconds = microseconds >= 0 ? microseconds / 1_000_000 : (microseconds - 999_999) / 1_000_000
        let micros = microseconds - seconds * 1_000_000
        var time = time_t(seconds)
        var broken = tm()
        gmtime_r(&time, &broken)
        let date = "\(pad(Int64(broken.tm_year) + 1900, 4))-\(pad(Int64(broken.tm_mon) + 1, 2))-\(pad(Int64(broken.tm_mday), 2))"
        let clock = "\(pad(Int64(broken.tm_hour), 2)):\(pad(Int64(broken.tm_min), 2)):\(pad(Int64(broken.tm_sec), 2))"
        return ((date, clock), micros)
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let text = String(value)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}
