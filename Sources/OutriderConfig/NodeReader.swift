import Yams

// Typed, position-aware reading of a composed YAML tree. Every reader reports its own
// problems into the session and returns nil, so loading carries on and one run reports every
// error in the file. Scalars are typed from their text (after `${env:}`/`${file:}`
// substitution), not from YAML's implicit tags: `workers: ${env:WORKERS}` must work, and
// `port: "8080"` is not worth an error.

struct Position: Comparable {
    var line: Int
    var column: Int

    init(_ mark: Mark?) {
        line = mark?.line ?? 1
        column = mark?.column ?? 1
    }

    init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    static func < (lhs: Position, rhs: Position) -> Bool {
        (lhs.line, lhs.column) < (rhs.line, rhs.column)
    }

    var description: String { "\(line):\(column)" }
}

extension Node {
    var position: Position { Position(mark) }

    /// YAML's null: an empty value, `~` or `null`, unquoted. The loader reads it as "not set".
    var isNull: Bool {
        guard case .scalar(let scalar) = self, scalar.style == .plain || scalar.style == .any else {
            return false
        }
        return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    var kindDescription: String {
        switch self {
        case .scalar: return isNull ? "null" : "a scalar"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }
}

/// The keys of one mapping, checked against the keys its section accepts.
struct Fields {
    struct Entry {
        var key: String
        var keyNode: Node
        var value: Node
    }

    /// The mapping itself (or the null standing for it): where "missing key" errors point.
    var node: Node
    var entries: [Entry]

    /// The value under `key`, or nil when absent or null (null means "use the default").
    func value(_ key: String) -> Node? {
        guard let entry = entries.first(where: { $0.key == key }), !entry.value.isNull else { return nil }
        return entry.value
    }

    func keyNode(_ key: String) -> Node? {
        entries.first { $0.key == key }?.keyNode
    }
}

final class LoadSession {
    let file: String
    let baseDirectory: String
    let environment: [String: String]
    private(set) var errors: [(position: Position, message: String)] = []

    static let substitutedFileLimit = 1 << 20

    init(file: String, baseDirectory: String, environment: [String: String]) {
        self.file = file
        self.baseDirectory = baseDirectory
        self.environment = environment
    }

    func report(_ message: String, at position: Position) {
        errors.append((position, message))
    }

    func report(_ message: String, at node: Node) {
        report(message, at: node.position)
    }

    /// All errors in file order; ties keep the order they were found in.
    func sortedErrors() -> [ConfigError] {
        errors.enumerated()
            .sorted { ($0.element.position, $0.offset) < ($1.element.position, $1.offset) }
            .map { ConfigError(file: file, line: $0.element.position.line,
                               column: $0.element.position.column, message: $0.element.message) }
    }

    // MARK: Mappings

    /// Reads `node` as a mapping for `section`, reporting keys outside `supported` (shown to the
    /// user) and `recognized` (keys SPEC names that the caller rejects with its own message).
    /// A null node reads as an empty mapping: every key takes its default.
    func fields(of node: Node, section: String, supported: [String], recognized: [String] = []) -> Fields? {
        if node.isNull { return Fields(node: node, entries: []) }
        guard case .mapping(let mapping) = node else {
            report("expected a mapping for \(section), got \(node.kindDescription)", at: node)
            return nil
        }
        var entries: [Fields.Entry] = []
        for (keyNode, value) in merged(mapping) {
            guard case .scalar(let keyScalar) = keyNode else {
                report("keys in \(section) must be plain strings, got \(keyNode.kindDescription)", at: keyNode)
                continue
            }
            let key = keyScalar.string
            guard supported.contains(key) || recognized.contains(key) else {
                report("unknown key '\(key)' in \(section); expected one of: \(supported.joined(separator: ", "))",
                       at: keyNode)
                continue
            }
            // An explicit key overrides one merged in with `<<`, as YAML merge keys specify.
            if let existing = entries.firstIndex(where: { $0.key == key }) {
                entries[existing] = Fields.Entry(key: key, keyNode: keyNode, value: value)
            } else {
                entries.append(Fields.Entry(key: key, keyNode: keyNode, value: value))
            }
        }
        return Fields(node: node, entries: entries)
    }

    /// The mapping's pairs with YAML merge keys (`<<: *defaults`) expanded in front, so anchors
    /// can share settings between clusters or listeners.
    private func merged(_ mapping: Node.Mapping) -> [(Node, Node)] {
        var inherited: [(Node, Node)] = []
        var own: [(Node, Node)] = []
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key, scalar.string == "<<", scalar.style == .plain else {
                own.append((key, value))
                continue
            }
            let sources: [Node]
            switch value {
            case .mapping: sources = [value]
            case .sequence(let sequence): sources = Array(sequence)
            default: sources = []
            }
            if sources.isEmpty || sources.contains(where: { $0.mapping == nil }) {
                report("a merge key '<<' needs a mapping or a list of mappings, got \(value.kindDescription)", at: value)
                continue
            }
            for source in sources {
                if case .mapping(let sourceMapping) = source { inherited += merged(sourceMapping) }
            }
        }
        return inherited + own
    }

    // MARK: Scalars

    /// The scalar's text with `${env:NAME}` and `${file:PATH}` substituted.
    func text(_ node: Node, key: String, expected: String) -> String? {
        guard case .scalar(let scalar) = node, !node.isNull else {
            report("expected \(expected) for '\(key)', got \(node.kindDescription)", at: node)
            return nil
        }
        return substitute(scalar.string, at: node.position)
    }

    /// Replaces each `${env:NAME}` and `${file:PATH}` once (results are not re-scanned). Other
    /// `${…}` forms are left for the header filter's request-time variables.
    func substitute(_ text: String, at position: Position) -> String? {
        var result = ""
        var rest = text[...]
        var failed = false
        while let open = rest.firstRange(of: "${") {
            result += rest[..<open.lowerBound]
            let afterOpen = rest[open.upperBound...]
            guard let close = afterOpen.firstIndex(of: "}") else {
                rest = rest[open.lowerBound...]
                break
            }
            let reference = afterOpen[..<close]
            let whole = rest[open.lowerBound...close]
            rest = afterOpen[afterOpen.index(after: close)...]
            if reference.hasPrefix("env:") {
                let name = String(reference.dropFirst(4))
                if name.isEmpty {
                    report("'\(whole)' names no environment variable", at: position)
                    failed = true
                } else if let value = environment[name] {
                    result += value
                } else {
                    report("environment variable '\(name)' is not set (referenced as '\(whole)')", at: position)
                    failed = true
                }
            } else if reference.hasPrefix("file:") {
                let path = String(reference.dropFirst(5))
                if path.isEmpty {
                    report("'\(whole)' names no file", at: position)
                    failed = true
                    continue
                }
                let resolved = FilePaths.resolve(path, against: baseDirectory)
                switch FileReader.readText(resolved, limit: Self.substitutedFileLimit) {
                case .success(var contents):
                    // One trailing newline is what `echo secret > file` and editors add; "\r\n"
                    // is one Character in Swift, so a CRLF ending is trimmed whole.
                    if contents.last == "\n" || contents.last == "\r\n" { contents.removeLast() }
                    result += contents
                case .failure(let failure):
                    report("cannot read file '\(resolved)' (referenced as '\(whole)'): \(failure.reason)", at: position)
                    failed = true
                }
            } else {
                result += whole
            }
        }
        result += rest
        return failed ? nil : result
    }

    func string(_ node: Node, key: String) -> String? {
        text(node, key: key, expected: "a string")
    }

    func nonEmptyString(_ node: Node, key: String) -> String? {
        guard let value = string(node, key: key) else { return nil }
        guard !value.isEmpty else {
            report("'\(key)' must not be empty", at: node)
            return nil
        }
        return value
    }

    func bool(_ node: Node, key: String) -> Bool? {
        guard let value = text(node, key: key, expected: "true or false") else { return nil }
        switch value {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default:
            report("invalid value '\(value)' for '\(key)': expected true or false", at: node)
            return nil
        }
    }

    func integer(_ node: Node, key: String, range: ClosedRange<Int>) -> Int? {
        guard let value = text(node, key: key, expected: "a whole number") else { return nil }
        let digits = value.hasPrefix("-") ? value.dropFirst() : value[...]
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            report("invalid value '\(value)' for '\(key)': expected a whole number", at: node)
            return nil
        }
        guard let number = Int(value), range.contains(number) else {
            report("'\(key)' must be between \(range.lowerBound) and \(range.upperBound), got \(value)", at: node)
            return nil
        }
        return number
    }

    /// A plain decimal like `10` or `0.2`: no sign, exponent or more than 9 fractional digits,
    /// so that what `print-config` writes back (`DecimalNotation`) reads as the same number.
    func decimal(_ node: Node, key: String, range: ClosedRange<Double>) -> Double? {
        guard let value = text(node, key: key, expected: "a number") else { return nil }
        let parts = value.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let isPlainDecimal = parts.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }
            && (parts.count < 2 || parts[1].count <= 9)
        guard isPlainDecimal, let number = Double(value) else {
            report("invalid value '\(value)' for '\(key)': expected a number like 10 or 0.2", at: node)
            return nil
        }
        guard range.contains(number) else {
            report("'\(key)' must be between \(DecimalNotation.format(range.lowerBound)) and \(DecimalNotation.format(range.upperBound)), got \(value)",
                   at: node)
            return nil
        }
        return number
    }

    func duration(_ node: Node, key: String, allowZero: Bool = true) -> Duration? {
        guard let value = text(node, key: key, expected: "a duration") else { return nil }
        guard let duration = DurationNotation.parse(value) else {
            report("invalid duration '\(value)' for '\(key)': expected a whole number with a unit ms, s, m or h, like 250ms or 5s",
                   at: node)
            return nil
        }
        if !allowZero && duration == .zero {
            report("'\(key)' must be greater than zero", at: node)
            return nil
        }
        return duration
    }

    func size(_ node: Node, key: String, range: ClosedRange<Int64>) -> Int64? {
        guard let value = text(node, key: key, expected: "a size") else { return nil }
        guard let bytes = SizeNotation.parse(value) else {
            report("invalid size '\(value)' for '\(key)': expected a whole number of bytes with an optional unit B, KiB, MiB, GiB, KB, MB or GB, like 64KiB",
                   at: node)
            return nil
        }
        guard range.contains(bytes) else {
            report("'\(key)' must be between \(SizeNotation.format(range.lowerBound)) and \(SizeNotation.format(range.upperBound)), got \(value)",
                   at: node)
            return nil
        }
        return bytes
    }

    /// `requireIPLiteral`: addresses we bind to must be IP literals (no DNS at bind time).
    func address(_ node: Node, key: String, requireIPLiteral: Bool) -> ConfigAddress? {
        guard let value = text(node, key: key, expected: "an address HOST:PORT") else { return nil }
        switch AddressNotation.parse(value) {
        case .success(let address):
            if requireIPLiteral && !IPLiteral.isLiteral(address.host) {
                report("invalid address '\(value)' for '\(key)': the host must be an IP address, like 0.0.0.0 or [::]",
                       at: node)
                return nil
            }
            return address
        case .failure(.badPort):
            report("invalid address '\(value)' for '\(key)': the port must be between 1 and 65535", at: node)
        case .failure(.badHost):
            report("invalid address '\(value)' for '\(key)': the host is not a valid IP address or DNS name", at: node)
        case .failure(.malformed):
            report("invalid address '\(value)' for '\(key)': expected HOST:PORT or [IPv6]:PORT", at: node)
        }
        return nil
    }

    func choice<Choice: RawRepresentable>(_ node: Node, key: String, among choices: [Choice]) -> Choice?
    where Choice.RawValue == String {
        guard let value = text(node, key: key, expected: "one of \(choices.map(\.rawValue).joined(separator: ", "))") else {
            return nil
        }
        guard let choice = choices.first(where: { $0.rawValue == value }) else {
            report("invalid value '\(value)' for '\(key)'; expected one of: \(choices.map(\.rawValue).joined(separator: ", "))",
                   at: node)
            return nil
        }
        return choice
    }

    func list(_ node: Node, key: String) -> [Node]? {
        guard case .sequence(let sequence) = node else {
            report("expected a list for '\(key)', got \(node.kindDescription)", at: node)
            return nil
        }
        return Array(sequence)
    }
}
