import Foundation

/// `Last-Modified` and other HTTP dates, in the three formats HTTP/1.1 allows (and Ironic tries):
/// RFC 1123 (`Tue, 15 Nov 2014 08:12:31 GMT`), RFC 850 (`Tuesday, 15-Nov-14 08:12:31 GMT`) and
/// asctime (`Tue Nov 15 08:12:31 2014`).
public enum HTTPDate {
    /// Microseconds since the epoch, or nil when the text matches no format.
    public static func parse(_ text: String) -> Int64? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        for format in ["EEE, dd MMM yyyy HH:mm:ss 'GMT'", "EEEE, dd-MMM-yy HH:mm:ss 'GMT'", "EEE MMM d HH:mm:ss yyyy"] {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = format
            // Two-digit years (RFC 850) belong to the last hundred years.
            formatter.twoDigitStartDate = Date(timeIntervalSince1970: 0)
            if let date = formatter.date(from: trimmed.replacingOccurrences(of: "  ", with: " ")) {
                return Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
            }
        }
        return nil
    }
}
