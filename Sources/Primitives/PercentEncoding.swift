/// Percent-decoding (`%2F` → `/`), as URLs' user-info, paths and queries need it: the one decoder
/// every module uses. Written by hand because Foundation's `removingPercentEncoding` cannot tell a
/// malformed escape from bytes that are not UTF-8 (`transport_url`'s messages name which), nor
/// give the bytes themselves.
public enum PercentEncoding {
    /// `text` with every `%XX` decoded; nil when an escape is malformed or the bytes are not UTF-8.
    public static func decode(_ text: some StringProtocol) -> String? {
        decodedBytes(text).flatMap { String(validating: $0, as: UTF8.self) }
    }

    /// The bytes `text` stands for once every `%XX` is decoded; nil when an escape is malformed.
    public static func decodedBytes(_ text: some StringProtocol) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        var index = 0
        while index < utf8.count {
            if utf8[index] == UInt8(ascii: "%") {
                guard index + 2 < utf8.count, let high = value(utf8[index + 1]), let low = value(utf8[index + 2]) else { return nil }
                bytes.append(high << 4 | low)
                index += 3
            } else {
                bytes.append(utf8[index])
                index += 1
            }
        }
        return bytes
    }

    private static func value(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
