/// `Last-Modified` and other HTTP dates, in the three formats HTTP/1.1 allows (and Ironic tries):
/// RFC 1123 (`Tue, 15 Nov 2014 08:12:31 GMT`), RFC 850 (`Tuesday, 15-Nov-14 08:12:31 GMT`) and
/// asctime (`Tue Nov 15 08:12:31 2014`).
///
/// Parsed by hand: Foundation's `DateFormatter` builds an ICU formatter for each pattern, which
/// made date parsing a tenth of the worker's CPU on cache hits (one `Last-Modified` per task), and
/// neither swift-nio nor async-http-client exposes a parser.
public enum HTTPDate {
    /// Microseconds since the epoch, or nil when the text matches no format.
    public static func parse(_ text: String) -> Int64? {
        // Servers vary in case and spacing; Foundation's formatter, used before, accepted both.
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map { normalised(String($0)) }
        let fields: (day: Substring, month: Substring, year: Int, time: Substring)
        switch parts.count {
        case 6 where parts[0].hasSuffix(",") && shortWeekdays.contains(String(parts[0].dropLast())) && parts[5] == "GMT":
            guard parts[3].count == 4, let year = number(parts[3][...]) else { return nil }
            fields = (parts[1][...], parts[2][...], year, parts[4][...])
        case 4 where parts[0].hasSuffix(",") && longWeekdays.contains(String(parts[0].dropLast())) && parts[3] == "GMT":
            let date = parts[1].split(separator: "-", omittingEmptySubsequences: false)
            guard date.count == 3, date[2].count == 2, let shortYear = number(date[2]) else { return nil }
            // Two-digit years (RFC 850) belong to 1970–2069.
            fields = (date[0], date[1], shortYear < 70 ? 2000 + shortYear : 1900 + shortYear, parts[2][...])
        case 5 where shortWeekdays.contains(parts[0]):
            guard parts[4].count == 4, let year = number(parts[4][...]) else { return nil }
            fields = (parts[2][...], parts[1][...], year, parts[3][...])
        default:
            return nil
        }
        guard let month = months.firstIndex(of: String(fields.month)).map({ $0 + 1 }),
              fields.day.count <= 2, let day = number(fields.day), day >= 1, day <= daysIn(month: month, year: fields.year)
        else { return nil }
        let clock = fields.time.split(separator: ":", omittingEmptySubsequences: false)
        guard clock.count == 3, clock.allSatisfy({ $0.count == 2 }),
              let hour = number(clock[0]), let minute = number(clock[1]), let second = number(clock[2]),
              (0...23).contains(hour), (0...59).contains(minute), (0...59).contains(second)
        else { return nil }
        let seconds = Int64(daysSinceEpoch(year: fields.year, month: month, day: day)) * 86_400
            + Int64(hour * 3_600 + minute * 60 + second)
        return seconds * 1_000_000
    }

    /// `tue,` → `Tue,`, `gmt` → `GMT`, `15-NOV-14` → `15-Nov-14`: names as the tables spell them.
    private static func normalised(_ word: String) -> String {
        if word.uppercased() == "GMT" { return "GMT" }
        var result = ""
        var previousIsLetter = false
        for character in word {
            result += previousIsLetter ? character.lowercased() : character.uppercased()
            previousIsLetter = character.isLetter
        }
        return result
    }

    /// Decimal digits only (`Int("+5")` would take a sign).
    private static func number(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int(text)
    }

    private static let shortWeekdays: Set<String> = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    private static let longWeekdays: Set<String> = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
    /// days_from_civil).
    private static func daysSinceEpoch(year: Int, month: Int, day: Int) -> Int {
        let shifted = month <= 2 ? year - 1 : year
        let era = (shifted >= 0 ? shifted : shifted - 399) / 400
        let yearOfEra = shifted - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
