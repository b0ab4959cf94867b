/// One problem found in a config file, at a 1-based line and column of that file.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    /// `FILE:LINE:COL: message` — the shape editors and CI logs turn into clickable links.
    public var description: String { "\(file):\(line):\(column): \(message)" }
}

/// Every problem found in one load. The loader reports them all at once, in file order, so a
/// user fixes a config in one round instead of one error per run.
public struct ConfigErrors: Error, Sendable, Equatable, CustomStringConvertible {
    public var errors: [ConfigError]

    public init(_ errors: [ConfigError]) { self.errors = errors }

    /// One `FILE:LINE:COL: message` line per error.
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
