// The files an auth filter names — `keys_file`, `htpasswd`, `jwks_file` — read once at load
// (and again on reload), so a bad line is a config error with the config's FILE:LINE:COL and
// the file's own line number, never a surprise at request time. Parsers here are pure: text
// in, entries and per-line problems out; the loader reads the file and reports.

/// One problem on one (1-based) line of a credentials file.
struct LineProblem: Equatable, CustomStringConvertible {
    var line: Int
    var message: String
    var description: String { "line \(line): \(message)" }
}

enum CredentialFiles {
    /// Credentials files are hand-kept lists, not data sets; a limit keeps a `/dev/zero`
    /// typo from exhausting memory.
    static let sizeLimit = 16 << 20

    /// The file's lines with their 1-based numbers, whitespace trimmed, blank lines and `#`
    /// comments dropped. "\r\n" is one `Character`, so CRLF files split the same way.
    static func contentLines(_ text: String) -> [(number: Int, text: Substring)] {
        var lines: [(number: Int, text: Substring)] = []
        for (index, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = raw.trimmed()
            if line.isEmpty || line.hasPrefix("#") { continue }
            lines.append((index + 1, line))
        }
        return lines
    }

    static func hasControlCharacters<S: StringProtocol>(_ text: S) -> Bool {
        text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }
}

extension Substring {
    func trimmed() -> Substring {
        var result = self
        while let first = result.first, first.isWhitespace { result.removeFirst() }
        while let last = result.last, last.isWhitespace { result.removeLast() }
        return result
    }
}

// MARK: keys_file

enum APIKeysFile {
    static let sha256Prefix = "sha256:"

    /// Lines `NAME:KEY` or `NAME:sha256:HEX` (the SHA-256 of the key, 64 hex digits).
    static func parse(_ text: String) -> (keys: [APIKeyEntry], problems: [LineProblem]) {
        var keys: [APIKeyEntry] = []
        var lineOfName: [String: Int] = [:]
        var lineOfSecret: [SecretKey: (name: String, line: Int)] = [:]
        var problems: [LineProblem] = []
        for (number, line) in CredentialFiles.contentLines(text) {
            func problem(_ message: String) { problems.append(LineProblem(line: number, message: message)) }
            guard let colon = line.firstIndex(of: ":") else {
                problem("expected NAME:KEY or NAME:sha256:HEX")
                continue
            }
            let name = String(line[..<colon].trimmed())
            let value = line[line.index(after: colon)...].trimmed()
            guard isValidName(name) else {
                problem(name.isEmpty ? "empty name; expected NAME:KEY or NAME:sha256:HEX"
                                     : "invalid name: use letters, digits, '.', '_', '@' and '-' (the line is not shown: it may hold a key)")
                continue
            }
            let secret: APIKeyEntry.Secret
            if value.hasPrefix(sha256Prefix) {
                let digest = value.dropFirst(sha256Prefix.count).trimmed()
                guard let bytes = Hex.decode(digest), bytes.count == 32 else {
                    problem("invalid sha256 digest for '\(name)': expected 64 hex digits (printf %s KEY | sha256sum)")
                    continue
                }
                secret = .sha256(bytes)
            } else {
                guard !value.isEmpty else {
                    problem("empty key for '\(name)'")
                    continue
                }
                // A key travels in a header value: control characters could never match.
                guard !CredentialFiles.hasControlCharacters(value) else {
                    problem("the key for '\(name)' contains control characters")
                    continue
                }
                secret = .plain(Array(value.utf8))
            }
            if let first = lineOfName[name] {
                problem("duplicate name '\(name)' (first on line \(first))")
                continue
            }
            // Two names sharing one key would make the identity depend on file order.
            let secretKey = SecretKey(secret)
            if let first = lineOfSecret[secretKey] {
                problem("the key for '\(name)' is the same as the key for '\(first.name)' (line \(first.line))")
                continue
            }
            lineOfName[name] = number
            lineOfSecret[secretKey] = (name, number)
            keys.append(APIKeyEntry(name: name, secret: secret))
        }
        return (keys, problems)
    }

    private struct SecretKey: Hashable {
        var isDigest: Bool
        var bytes: [UInt8]
        init(_ secret: APIKeyEntry.Secret) {
            switch secret {
            case .plain(let bytes): self.isDigest = false; self.bytes = bytes
            case .sha256(let bytes): self.isDigest = true; self.bytes = bytes
            }
        }
    }

    /// `[A-Za-z0-9._@-]+`: the identity sent to the app and written to logs.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: "@") || byte == UInt8(ascii: "-")
        }
    }
}

// MARK: htpasswd

enum HtpasswdFile {
    static let bcryptPrefixes = ["$2y$", "$2b$", "$2a$"]
    static let shaPrefix = "{SHA}"
    static let unsupportedScheme = "unsupported hash scheme; use bcrypt (htpasswd -B) or {SHA}"

    /// Lines `user:hash`, hash bcrypt (`$2y$`/`$2b$`/`$2a$`, 60 characters) or `{SHA}` (the
    /// base64 of a 20-byte SHA-1). MD5 (`$apr1$`), crypt and plain text are refused.
    static func parse(_ text: String) -> (entries: [HtpasswdEntry], problems: [LineProblem]) {
        var entries: [HtpasswdEntry] = []
        var lineOfUser: [String: Int] = [:]
        var problems: [LineProblem] = []
        for (number, line) in CredentialFiles.contentLines(text) {
            func problem(_ message: String) { problems.append(LineProblem(line: number, message: message)) }
            guard let colon = line.firstIndex(of: ":") else {
                problem("expected user:hash")
                continue
            }
            let user = String(line[..<colon])
            let hash = String(line[line.index(after: colon)...])
            guard !user.isEmpty else {
                problem("empty user name; expected user:hash")
                continue
            }
            // The user name reaches the app as x-auth-request-user: it must be a header value.
            guard !CredentialFiles.hasControlCharacters(user) else {
                problem("invalid user name: control characters")
                continue
            }
            if bcryptPrefixes.contains(where: hash.hasPrefix) {
                guard isWellFormedBcrypt(hash) else {
                    problem("malformed bcrypt hash for '\(user)': expected 60 characters, $2y$COST$ and 53 of [./A-Za-z0-9]")
                    continue
                }
            } else if hash.hasPrefix(shaPrefix) {
                guard Base64.decode(hash.dropFirst(shaPrefix.count))?.count == 20 else {
                    problem("malformed {SHA} hash for '\(user)': expected the base64 of 20 bytes")
                    continue
                }
            } else {
                problem(unsupportedScheme)
                continue
            }
            if let first = lineOfUser[user] {
                problem("duplicate user '\(user)' (first on line \(first))")
                continue
            }
            lineOfUser[user] = number
            entries.append(HtpasswdEntry(user: user, hash: hash))
        }
        return (entries, problems)
    }

    /// `$2y$NN$` with a cost from 04 to 31, then 22 characters of salt and 31 of hash in
    /// bcrypt's base64 alphabet.
    static func isWellFormedBcrypt(_ hash: String) -> Bool {
        let bytes = Array(hash.utf8)
        guard bytes.count == 60, bytes[6] == UInt8(ascii: "$"),
              let cost = Int(String(decoding: bytes[4..<6], as: UTF8.self)), (4...31).contains(cost),
              bytes[4...5].allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return false }
        return bytes[7...].allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "/")
        }
    }
}

// MARK: jwks_file

enum JWKSFile {
    /// The key type (`kty`) each JWS algorithm needs (RFC 7518, RFC 8037).
    static func keyType(ofAlgorithm algorithm: String) -> String? {
        if algorithm.hasPrefix("HS") { return "oct" }
        if algorithm.hasPrefix("RS") || algorithm.hasPrefix("PS") { return "RSA" }
        if algorithm.hasPrefix("ES") { return "EC" }
        if algorithm == "EdDSA" { return "OKP" }
        return nil
    }

    /// A structural check: a JSON object whose `keys` is a non-empty array of objects, each
    /// with a string `kty`, at least one of them usable by one of `algorithms` (when given).
    /// Returns nil when it passes, else what is wrong. Key material is checked by the filter.
    static func check(_ text: String, algorithms: [String]) -> String? {
        let document: JSONValue
        switch JSONValue.parse(text) {
        case .failure(let problem): return "not valid JSON: \(problem.message) at byte \(problem.offset)"
        case .success(let value): document = value
        }
        guard case .object(let members) = document else { return "expected a JSON object with a \"keys\" array" }
        guard let keysValue = members.first(where: { $0.key == "keys" })?.value,
              case .array(let keys) = keysValue else {
            return "expected a JSON object with a \"keys\" array"
        }
        guard !keys.isEmpty else { return "the \"keys\" array is empty" }
        var types: [String] = []
        for (index, key) in keys.enumerated() {
            guard case .object(let fields) = key,
                  let kty = fields.first(where: { $0.key == "kty" })?.value, case .string(let type) = kty else {
                return "keys[\(index)] is not an object with a string \"kty\""
            }
            if !types.contains(type) { types.append(type) }
        }
        let wanted = algorithms.compactMap(keyType(ofAlgorithm:))
        if !algorithms.isEmpty, !types.contains(where: wanted.contains) {
            return "no key fits algorithms \(algorithms.joined(separator: ", ")) (key types found: \(types.joined(separator: ", ")))"
        }
        return nil
    }
}

// MARK: Encodings

enum Hex {
    static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard !digits.isEmpty, digits.count % 2 == 0 else { return nil }
        func value(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }
}

enum Base64 {
    /// Standard alphabet, padded (what `htpasswd -s` writes). Nil on anything else.
    static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        let characters = Array(text.utf8)
        guard !characters.isEmpty, characters.count % 4 == 0 else { return nil }
        func value(_ byte: UInt8) -> UInt32? {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): return UInt32(byte - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): return UInt32(byte - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(byte - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): return 62
            case UInt8(ascii: "/"): return 63
            default: return nil
            }
        }
        var bytes: [UInt8] = []
        var index = 0
        while index < characters.count {
            let isLast = index + 4 == characters.count
            let padding = isLast ? characters[index...].reversed().prefix { $0 == UInt8(ascii: "=") }.count : 0
            guard padding <= 2 else { return nil }
            var group: UInt32 = 0
            for offset in 0..<4 {
                let character = characters[index + offset]
                if offset >= 4 - padding {
                    group <<= 6
                } else {
                    guard let sextet = value(character) else { return nil }
                    group = group << 6 | sextet
                }
            }
            bytes.append(UInt8(truncatingIfNeeded: group >> 16))
            if padding < 2 { bytes.append(UInt8(truncatingIfNeeded: group >> 8)) }
            if padding < 1 { bytes.append(UInt8(truncatingIfNeeded: group)) }
            index += 4
        }
        return bytes
    }
}

// MARK: A small JSON reader

/// Just enough JSON (RFC 8259) to check a JWKS document's shape without Foundation.
indirect enum JSONValue: Equatable {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case let (.object(a), .object(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case let (.array(a), .array(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.number(a), .number(b)): return a == b
        case let (.bool(a), .bool(b)): return a == b
        case (.null, .null): return true
        default: return false
        }
    }

    struct Problem: Error {
        var message: String
        var offset: Int
    }

    static func parse(_ text: String) -> Result<JSONValue, Problem> {
        var reader = JSONReader(bytes: Array(text.utf8))
        do {
            reader.skipWhitespace()
            let value = try reader.value(depth: 0)
            reader.skipWhitespace()
            guard reader.index == reader.bytes.count else { throw Problem(message: "unexpected data after the document", offset: reader.index) }
            return .success(value)
        } catch let problem as Problem {
            return .failure(problem)
        } catch {
            return .failure(Problem(message: "\(error)", offset: reader.index))
        }
    }
}

private struct JSONReader {
    let bytes: [UInt8]
    var index = 0
    static let maxDepth = 64

    init(bytes: [UInt8]) { self.bytes = bytes }

    func fail(_ message: String) -> JSONValue.Problem { JSONValue.Problem(message: message, offset: index) }

    mutating func skipWhitespace() {
        while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
    }

    mutating func expect(_ literal: String) throws {
        let expected = Array(literal.utf8)
        guard index + expected.count <= bytes.count, Array(bytes[index..<index + expected.count]) == expected else {
            throw fail("expected \(literal)")
        }
        index += expected.count
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < Self.maxDepth else { throw fail("nested too deeply") }
        guard index < bytes.count else { throw fail("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            index += 1
            var members: [(key: String, value: JSONValue)] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
                let key = try string()
                skipWhitespace()
                try expect(":")
                skipWhitespace()
                members.append((key, try value(depth: depth + 1)))
                skipWhitespace()
                guard index < bytes.count else { throw fail("unexpected end") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
                throw fail("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            index += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
            while true {
                skipWhitespace()
                items.append(try value(depth: depth + 1))
                skipWhitespace()
                guard index < bytes.count else { throw fail("unexpected end") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
                throw fail("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"):
            try expect("true"); return .bool(true)
        case UInt8(ascii: "f"):
            try expect("false"); return .bool(false)
        case UInt8(ascii: "n"):
            try expect("null"); return .null
        default:
            return .number(try number())
        }
    }

    mutating func string() throws -> String {
        index += 1   // the opening quote
        var start = index
        var raw: [UInt8] = []
        while true {
            guard index < bytes.count else { throw fail("unterminated string") }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                raw += bytes[start..<index]
                index += 1
                break
            }
            if byte < 0x20 { throw fail("control character in a string") }
            if byte == UInt8(ascii: "\\") {
                raw += bytes[start..<index]
                index += 1
                guard index < bytes.count else { throw fail("unterminated string") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): raw.append(escape)
                case UInt8(ascii: "b"): raw.append(0x08)
                case UInt8(ascii: "f"): raw.append(0x0C)
                case UInt8(ascii: "n"): raw.append(0x0A)
                case UInt8(ascii: "r"): raw.append(0x0D)
                case UInt8(ascii: "t"): raw.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800...0xDBFF).contains(code) {
                        try expect("\\u")
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("invalid surrogate pair") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw fail("invalid \\u escape") }
                    raw += Array(String(scalar).utf8)
                default:
                    throw fail("invalid escape")
                }
                start = index
                continue
            }
            index += 1
        }
        guard let text = String(validating: raw, as: UTF8.self) else { throw fail("invalid UTF-8 in a string") }
        return text
    }

    mutating func hex4() throws -> UInt32 {
        guard index + 4 <= bytes.count, let bytes = Hex.decode(String(decoding: bytes[index..<index + 4], as: UTF8.self)) else {
            throw fail("invalid \\u escape")
        }
        index += 4
        return UInt32(bytes[0]) << 8 | UInt32(bytes[1])
    }

    mutating func number() throws -> String {
        let start = index
        func digits() -> Int {
            let first = index
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") { index += 1 }
            return index - first
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        let integerStart = index
        let integerDigits = digits()
        guard integerDigits > 0 else { throw fail("unexpected character") }
        if integerDigits > 1, bytes[integerStart] == UInt8(ascii: "0") { throw fail("leading zero in a number") }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard digits() > 0 else { throw fail("expected digits after '.'") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard digits() > 0 else { throw fail("expected digits in the exponent") }
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }
}
