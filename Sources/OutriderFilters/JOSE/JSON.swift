// A small strict JSON parser (RFC 8259) for JOSE headers, JWT claims and JWK sets.
//
// Strict where parsers commonly differ, so that what Outrider reads is what the issuer meant:
// duplicate member names are refused (after unescaping), strings must be valid UTF-8 with no
// lone surrogates, no comments, trailing commas, NaN/Infinity, leading zeros or leading `+`,
// only the four JSON whitespace bytes, no byte-order mark. Limits: 1 MiB of input, 32 levels
// of nested arrays/objects.

public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The value as a Double, and exactly as an Int64 when it is integral and fits
    /// (`12`, `1.0`, `1e3`; not `1.5`, not `1e300`).
    case number(Double, Int64?)
    case string(String)
    case array([JSONValue])
    /// Members in document order; names are unique.
    case object([(String, JSONValue)])

    public static let maxInputBytes = 1 << 20
    public static let maxDepth = 32

    public static func parse(_ bytes: UnsafeRawBufferPointer) -> JSONValue? {
        guard bytes.count <= maxInputBytes, bytes.count > 0 else { return nil }
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        guard let value = parser.parseValue(depth: 0) else { return nil }
        parser.skipWhitespace()
        return parser.index == bytes.count ? value : nil
    }

    public static func parse(_ bytes: [UInt8]) -> JSONValue? {
        bytes.withUnsafeBytes { parse($0) }
    }

    public static func parse(_ text: String) -> JSONValue? {
        var text = text
        return text.withUTF8 { parse(UnsafeRawBufferPointer($0)) }
    }

    /// The member named `key` of an object; nil for a missing member or a non-object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        for (name, value) in members where name == key { return value }
        return nil
    }

    public var string: String? { if case .string(let value) = self { return value }; return nil }
    public var int64: Int64? { if case .number(_, let exact) = self { return exact }; return nil }
    public var double: Double? { if case .number(let value, _) = self { return value }; return nil }
    public var bool: Bool? { if case .bool(let value) = self { return value }; return nil }
    public var array: [JSONValue]? { if case .array(let value) = self { return value }; return nil }
    public var object: [(String, JSONValue)]? { if case .object(let value) = self { return value }; return nil }
    public var isNull: Bool { if case .null = self { return true }; return false }

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.number(let a, let ai), .number(let b, let bi)): return a == b && ai == bi
        case (.string(let a), .string(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)):
            guard a.count == b.count else { return false }
            for (x, y) in zip(a, b) where x.0 != y.0 || x.1 != y.1 { return false }
            return true
        default: return false
        }
    }
}

private struct JSONParser {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inline(__always) var atEnd: Bool { index >= bytes.count }
    @inline(__always) var peek: UInt8 { bytes[index] }

    mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    mutating func expectLiteral(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - index >= count else { return false }
        let start = literal.utf8Start
        for offset in 0..<count where bytes[index + offset] != start[offset] { return false }
        index += count
        return true
    }

    mutating func parseValue(depth: Int) -> JSONValue? {
        guard !atEnd else { return nil }
        switch peek {
        case UInt8(ascii: "{"): return parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return parseString().map(JSONValue.string)
        case UInt8(ascii: "t"): return expectLiteral("true") ? .bool(true) : nil
        case UInt8(ascii: "f"): return expectLiteral("false") ? .bool(false) : nil
        case UInt8(ascii: "n"): return expectLiteral("null") ? .null : nil
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return parseNumber()
        default: return nil
        }
    }

    mutating func parseObject(depth: Int) -> JSONValue? {
        guard depth <= JSONValue.maxDepth else { return nil }
        index += 1  // {
        var members: [(String, JSONValue)] = []
        var names: Set<String>? = nil  // used once the object is large enough for linear search to hurt
        skipWhitespace()
        if !atEnd && peek == UInt8(ascii: "}") { index += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard !atEnd, peek == UInt8(ascii: "\""), let name = parseString() else { return nil }
            if var seen = names {
                guard seen.insert(name).inserted else { return nil }
                names = seen
            } else {
                for (existing, _) in members where existing == name { return nil }
                if members.count >= 16 { names = Set(members.map(\.0) + [name]) }
            }
            skipWhitespace()
            guard !atEnd, peek == UInt8(ascii: ":") else { return nil }
            index += 1
            skipWhitespace()
            guard let value = parseValue(depth: depth) else { return nil }
            members.append((name, value))
            skipWhitespace()
            guard !atEnd else { return nil }
            if peek == UInt8(ascii: ",") { index += 1; continue }
            if peek == UInt8(ascii: "}") { index += 1; return .object(members) }
            return nil
        }
    }

    mutating func parseArray(depth: Int) -> JSONValue? {
        guard depth <= JSONValue.maxDepth else { return nil }
        index += 1  // [
        var elements: [JSONValue] = []
        skipWhitespace()
        if !atEnd && peek == UInt8(ascii: "]") { index += 1; return .array(elements) }
        while true {
            skipWhitespace()
            guard let value = parseValue(depth: depth) else { return nil }
            elements.append(value)
            skipWhitespace()
            guard !atEnd else { return nil }
            if peek == UInt8(ascii: ",") { index += 1; continue }
            if peek == UInt8(ascii: "]") { index += 1; return .array(elements) }
            return nil
        }
    }

    /// At the opening quote. Validates UTF-8 as it goes.
    mutating func parseString() -> String? {
        index += 1  // "
        let start = index
        // Fast path: no escapes.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let string = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                index += 1
                return string
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { return nil }
            if byte < 0x80 { index += 1 } else {
                guard let length = utf8SequenceLength(at: index) else { return nil }
                index += length
            }
        }
        guard index < bytes.count else { return nil }
        // Slow path: copy what we have and decode escapes.
        var output = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                index += 1
                return String(decoding: output, as: UTF8.self)
            }
            if byte < 0x20 { return nil }
            if byte == UInt8(ascii: "\\") {
                index += 1
                guard index < bytes.count else { return nil }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): output.append(0x22)
                case UInt8(ascii: "\\"): output.append(0x5C)
                case UInt8(ascii: "/"): output.append(0x2F)
                case UInt8(ascii: "b"): output.append(0x08)
                case UInt8(ascii: "f"): output.append(0x0C)
                case UInt8(ascii: "n"): output.append(0x0A)
                case UInt8(ascii: "r"): output.append(0x0D)
                case UInt8(ascii: "t"): output.append(0x09)
                case UInt8(ascii: "u"):
                    guard var scalar = parseHex4() else { return nil }
                    if scalar >= 0xD800 && scalar <= 0xDBFF {
                        // A high surrogate must be followed by an escaped low surrogate.
                        guard bytes.count - index >= 6, bytes[index] == UInt8(ascii: "\\"),
                              bytes[index + 1] == UInt8(ascii: "u") else { return nil }
                        index += 2
                        guard let low = parseHex4(), low >= 0xDC00 && low <= 0xDFFF else { return nil }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
                        return nil  // lone low surrogate
                    }
                    appendUTF8(scalar, to: &output)
                default: return nil
                }
                continue
            }
            if byte < 0x80 {
                output.append(byte)
                index += 1
            } else {
                guard let length = utf8SequenceLength(at: index) else { return nil }
                output.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[index..<index + length]))
                index += length
            }
        }
        return nil
    }

    mutating func parseHex4() -> UInt32? {
        guard bytes.count - index >= 4 else { return nil }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    /// The length of the well-formed UTF-8 sequence starting at `at` (a byte ≥ 0x80), or nil
    /// (Unicode Table 3-7: no overlongs, no surrogates, nothing above U+10FFFF).
    func utf8SequenceLength(at position: Int) -> Int? {
        let lead = bytes[position]
        let remaining = bytes.count - position
        @inline(__always) func continuation(_ offset: Int, _ low: UInt8 = 0x80, _ high: UInt8 = 0xBF) -> Bool {
            let byte = bytes[position + offset]
            return byte >= low && byte <= high
        }
        switch lead {
        case 0xC2...0xDF:
            return remaining >= 2 && continuation(1) ? 2 : nil
        case 0xE0:
            return remaining >= 3 && continuation(1, 0xA0) && continuation(2) ? 3 : nil
        case 0xE1...0xEC, 0xEE...0xEF:
            return remaining >= 3 && continuation(1) && continuation(2) ? 3 : nil
        case 0xED:
            return remaining >= 3 && continuation(1, 0x80, 0x9F) && continuation(2) ? 3 : nil
        case 0xF0:
            return remaining >= 4 && continuation(1, 0x90) && continuation(2) && continuation(3) ? 4 : nil
        case 0xF1...0xF3:
            return remaining >= 4 && continuation(1) && continuation(2) && continuation(3) ? 4 : nil
        case 0xF4:
            return remaining >= 4 && continuation(1, 0x80, 0x8F) && continuation(2) && continuation(3) ? 4 : nil
        default:
            return nil
        }
    }

    func appendUTF8(_ scalar: UInt32, to output: inout [UInt8]) {
        switch scalar {
        case 0..<0x80:
            output.append(UInt8(scalar))
        case 0x80..<0x800:
            output.append(UInt8(0xC0 | scalar >> 6))
            output.append(UInt8(0x80 | scalar & 0x3F))
        case 0x800..<0x10000:
            output.append(UInt8(0xE0 | scalar >> 12))
            output.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            output.append(UInt8(0x80 | scalar & 0x3F))
        default:
            output.append(UInt8(0xF0 | scalar >> 18))
            output.append(UInt8(0x80 | scalar >> 12 & 0x3F))
            output.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            output.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    /// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
    mutating func parseNumber() -> JSONValue? {
        let start = index
        var negative = false
        if peek == UInt8(ascii: "-") { negative = true; index += 1 }
        guard !atEnd, isDigit(peek) else { return nil }
        // Integer part, accumulated exactly while it fits (as a negative number, so Int64.min fits).
        var exact: Int64? = 0
        if peek == UInt8(ascii: "0") {
            index += 1
            if !atEnd && isDigit(peek) { return nil }  // leading zero
        } else {
            while !atEnd && isDigit(peek) {
                let digit = Int64(peek - UInt8(ascii: "0"))
                if let current = exact {
                    let (times10, o1) = current.multipliedReportingOverflow(by: 10)
                    let (next, o2) = times10.subtractingReportingOverflow(digit)
                    exact = o1 || o2 ? nil : next
                }
                index += 1
            }
        }
        var integral = true
        if !atEnd && peek == UInt8(ascii: ".") {
            index += 1
            guard !atEnd, isDigit(peek) else { return nil }
            while !atEnd && isDigit(peek) { index += 1 }
            integral = false
        }
        if !atEnd && (peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E")) {
            index += 1
            if !atEnd && (peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-")) { index += 1 }
            guard !atEnd, isDigit(peek) else { return nil }
            while !atEnd && isDigit(peek) { index += 1 }
            integral = false
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let double = Double(text), double.isFinite else { return nil }
        if integral, let negated = exact {
            if negative { return .number(double, negated) }
            return .number(double, negated == Int64.min ? nil : -negated)
        }
        // 1.0, 1e3: integral values exactly representable, within ±2^53.
        if double == double.rounded(.towardZero) && abs(double) <= 9_007_199_254_740_992 {
            return .number(double, Int64(double))
        }
        return .number(double, nil)
    }

    @inline(__always) func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }
}
