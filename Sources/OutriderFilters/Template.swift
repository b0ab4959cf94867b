import OutriderCore

/// A header value template compiled once at load: literal bytes and request-time variables
/// (SPEC §6). Rendering appends to a buffer without allocating.
public struct HeaderTemplate: Sendable {
    public enum Part: Sendable {
        case literal(ByteString)
        case clientIP, clientPort, requestID, host, scheme, method, path, identity
        case jwtClaim(String)
    }

    public let parts: [Part]

    /// Nil when the text names an unknown variable (the config loader reports those first).
    public init?(_ text: String) {
        var parts: [Part] = []
        var literal: [UInt8] = []
        let bytes = Array(text.utf8)
        var index = 0
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: "$"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "{") else {
                literal.append(bytes[index])
                index += 1
                continue
            }
            guard let close = bytes[(index + 2)...].firstIndex(of: UInt8(ascii: "}")) else { return nil }
            let name = String(decoding: bytes[(index + 2)..<close], as: UTF8.self)
            if !literal.isEmpty { parts.append(.literal(ByteString(bytes: literal))); literal = [] }
            switch name {
            case "client_ip": parts.append(.clientIP)
            case "client_port": parts.append(.clientPort)
            case "request_id": parts.append(.requestID)
            case "host": parts.append(.host)
            case "scheme": parts.append(.scheme)
            case "method": parts.append(.method)
            case "path": parts.append(.path)
            case "identity": parts.append(.identity)
            default:
                guard name.hasPrefix("jwt.claim."), name.count > "jwt.claim.".count else { return nil }
                parts.append(.jwtClaim(String(name.dropFirst("jwt.claim.".count))))
            }
            index = close + 1
        }
        if !literal.isEmpty { parts.append(.literal(ByteString(bytes: literal))) }
        self.parts = parts
    }

    /// Appends the rendered value to `out`; values that came from the client are already
    /// validated header bytes.
    public func render(_ context: FilterContext, into out: ByteBuffer) {
        for part in parts {
            switch part {
            case .literal(let bytes): out.append(bytes)
            case .clientIP: appendScratch(context, context.clientIPRange, out)
            case .clientPort: out.appendDecimal(Int64(context.clientPort))
            case .requestID: appendScratch(context, context.requestIDRange, out)
            case .host:
                let (pointer, count) = context.headBytes(context.hostRange)
                out.append(pointer, count: count)
            case .scheme: out.append(context.isTLS ? "https" : "http")
            case .method:
                let (pointer, count) = context.headBytes(context.methodRange)
                out.append(pointer, count: count)
            case .path: appendScratch(context, context.pathRange, out)
            case .identity:
                if let identity = context.identity { appendScratch(context, identity, out) }
            case .jwtClaim(let name):
                if let token = context.verifiedToken, let value = token.claimString(name) {
                    appendSafeHeaderValue(value, out)
                }
            }
        }
    }

    private func appendScratch(_ context: FilterContext, _ range: Range<Int>, _ out: ByteBuffer) {
        out.append(from: context.scratch, offset: range.lowerBound, count: range.count)
    }
}

/// Appends a value from a token or an auth service, dropping bytes a header value may not
/// carry (CR, LF, NUL and other controls) so nothing can be injected into the head.
public func appendSafeHeaderValue(_ value: String, _ out: ByteBuffer) {
    for byte in value.utf8 where byte == 0x09 || (byte >= 0x20 && byte != 0x7F) {
        out.append(byte)
    }
}
