import COpenSSL

/// A TLS failure with OpenSSL's own words (its error queue, drained) and what we were doing.
public struct TLSError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ context: String) {
        let reasons = drainOpenSSLErrors()
        description = reasons.isEmpty ? context : "\(context): \(reasons.joined(separator: "; "))"
    }
}

/// Empties this thread's OpenSSL error queue and returns its entries as text, oldest first.
/// Every failed call leaves entries there; a later unrelated call must not see them.
public func drainOpenSSLErrors() -> [String] {
    var reasons: [String] = []
    while true {
        let code = ERR_get_error()
        if code == 0 { break }
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &text, text.count)
        reasons.append(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return reasons
}
