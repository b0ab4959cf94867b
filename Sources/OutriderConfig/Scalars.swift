#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Parsers and printers for the scalar notations of the config file and the command line:
// durations (`250ms`), sizes (`64KiB`) and addresses (`HOST:PORT`). Printing picks the
// largest unit that is exact, so what `print-config` shows parses back to the same value.

enum DurationNotation {
    static let units: [(suffix: String, milliseconds: Int64)] = [
        ("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000),
    ]

    /// A whole number and one unit (`ms`, `s`, `m`, `h`); a bare `0` is zero. No fractions,
    /// signs or compound forms like `1m30s`: one obvious spelling per value.
    static func parse(_ text: String) -> Duration? {
        if text == "0" { return .zero }
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let suffix = text.dropFirst(digits.count)
        guard !digits.isEmpty, digits.count <= 18, let count = Int64(digits),
              let unit = units.first(where: { $0.suffix == suffix }) else { return nil }
        let (milliseconds, overflow) = count.multipliedReportingOverflow(by: unit.milliseconds)
        guard !overflow else { return nil }
        return .milliseconds(milliseconds)
    }

    static func milliseconds(of duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000 + attoseconds / 1_000_000_000_000_000
    }

    /// `0s`, or the largest unit that divides the value exactly.
    static func format(_ duration: Duration) -> String {
        let total = milliseconds(of: duration)
        if total == 0 { return "0s" }
        for unit in units.reversed() where total % unit.milliseconds == 0 {
            return "\(total / unit.milliseconds)\(unit.suffix)"
        }
        return "\(total)ms"
    }
}

enum SizeNotation {
    static let kibibyte: Int64 = 1_024
    static let mebibyte: Int64 = 1_024 * 1_024
    static let gibibyte: Int64 = 1_024 * 1_024 * 1_024

    /// Binary units are what users of nginx/Envoy mean by "64k"; decimal ones are accepted so a
    /// `10KB` is not an error, but taken literally (10 000 bytes).
    static let units: [(suffix: String, bytes: Int64)] = [
        ("", 1), ("B", 1),
        ("KiB", kibibyte), ("MiB", mebibyte), ("GiB", gibibyte),
        ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000),
    ]

    static func parse(_ text: String) -> Int64? {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let suffix = text.dropFirst(digits.count)
        guard !digits.isEmpty, digits.count <= 19, let count = Int64(digits),
              let unit = units.first(where: { $0.suffix == suffix }) else { return nil }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: unit.bytes)
        return overflow ? nil : bytes
    }

    /// `0`, or the largest binary unit that divides the value exactly, else plain bytes.
    static func format(_ bytes: Int64) -> String {
        guard bytes != 0 else { return "0" }
        for (suffix, unit) in [("GiB", gibibyte), ("MiB", mebibyte), ("KiB", kibibyte)]
        where bytes % unit == 0 {
            return "\(bytes / unit)\(suffix)"
        }
        return "\(bytes)"
    }
}

enum AddressNotation {
    enum Failure: Error, Equatable {
        case malformed
        case badPort
        case badHost
    }

    /// `HOST:PORT`, `[IPv6]:PORT`, or `:PORT` for all IPv4 interfaces. HOST is an IPv4 literal
    /// or a DNS name; a name whose last label is numeric must be a valid IPv4 literal, so that
    /// typos like `127.0.0:80` are caught instead of being looked up in DNS.
    static func parse(_ text: String) -> Result<ConfigAddress, Failure> {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .failure(.malformed) }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return .failure(.malformed) }
            portText = rest.dropFirst()
            guard IPLiteral.bytes(of: String(host)).map({ $0.count == 16 }) == true else {
                return .failure(.badHost)
            }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return .failure(.malformed) }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            // A bare IPv6 literal is ambiguous (which colon starts the port?): require brackets.
            guard !host.contains(":") else { return .failure(.malformed) }
            if !host.isEmpty && !HostName.isValid(host) { return .failure(.badHost) }
        }
        guard !portText.isEmpty, portText.count <= 5,
              portText.allSatisfy({ $0.isASCII && $0.isNumber }),
              let port = Int(portText) else { return .failure(.malformed) }
        guard (1...65_535).contains(port) else { return .failure(.badPort) }
        return .success(ConfigAddress(host: host.isEmpty ? "0.0.0.0" : String(host), port: UInt16(port)))
    }

    /// Two listening sockets on these addresses would overlap. A wildcard host overlaps every
    /// host on its port: with SO_REUSEPORT both binds would succeed and split traffic silently.
    static func bindingsOverlap(_ a: ConfigAddress, _ b: ConfigAddress) -> Bool {
        guard a.port == b.port else { return false }
        let first = IPLiteral.bytes(of: a.host)
        let second = IPLiteral.bytes(of: b.host)
        if first?.allSatisfy({ $0 == 0 }) == true || second?.allSatisfy({ $0 == 0 }) == true { return true }
        if let first, let second { return first == second }
        return a.host.lowercased() == b.host.lowercased()
    }
}

enum IPLiteral {
    /// The 4 or 16 address bytes of an IPv4 or IPv6 literal (no brackets, no zone), else nil.
    static func bytes(of host: String) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 16)
        let family = host.contains(":") ? AF_INET6 : AF_INET
        let converted = buffer.withUnsafeMutableBytes { inet_pton(family, host, $0.baseAddress) }
        guard converted == 1 else { return nil }
        return family == AF_INET6 ? buffer : Array(buffer.prefix(4))
    }

    static func isLiteral(_ host: String) -> Bool { bytes(of: host) != nil }
}

enum HostName {
    /// RFC 1123 names (underscores tolerated, as in many internal zones), at most 253 bytes;
    /// or an IPv4 literal when the last label is numeric.
    static func isValid(_ host: Substring) -> Bool {
        guard !host.isEmpty, host.utf8.count <= 253 else { return false }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        if let last = labels.last, !last.isEmpty, last.allSatisfy({ $0.isASCII && $0.isNumber }) {
            return IPLiteral.bytes(of: String(host))?.count == 4
        }
        return labels.allSatisfy { label in
            guard (1...63).contains(label.utf8.count), label.first != "-", label.last != "-" else {
                return false
            }
            return label.utf8.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                    || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                    || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
            }
        }
    }
}

enum HTTPToken {
    /// RFC 9110 `tchar`: what header names and methods are made of.
    static func isValid(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }
}

extension ConfigLoader {
    /// Parses a `--listen`/`--upstream`/`--admin` flag: `HOST:PORT`, `[v6]:PORT`, or `:PORT`
    /// (all IPv4 interfaces). Port 0 is refused: every address here names a real port.
    public static func parseAddress(_ text: String) -> ConfigAddress? {
        try? AddressNotation.parse(text).get()
    }

    /// `250ms`, `5s`, `1m`, `1h`, or `0`.
    public static func parseDuration(_ text: String) -> Duration? {
        DurationNotation.parse(text)
    }

    /// Bytes: a whole number with an optional unit `B`, `KiB`, `MiB`, `GiB` (binary) or `KB`,
    /// `MB`, `GB` (decimal). Negative, fractional and overflowing values are refused.
    public static func parseSize(_ text: String) -> Int64? {
        SizeNotation.parse(text)
    }
}

enum DecimalNotation {
    /// The shortest plain decimal (at most 9 fractional digits, no exponent) that reads back
    /// as `value`: `100`, `0.5`, `0.001`.
    static func format(_ value: Double) -> String {
        var scale = 1.0
        for digits in 0...9 {
            let scaled = (value * scale).rounded()
            if scaled < 1e18 {
                var text = String(Int64(scaled))
                if digits > 0 {
                    if text.count <= digits { text = String(repeating: "0", count: digits - text.count + 1) + text }
                    text.insert(".", at: text.index(text.endIndex, offsetBy: -digits))
                }
                if Double(text) == value { return text }
            }
            scale *= 10
        }
        return "\(value)"
    }
}
