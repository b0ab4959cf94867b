import Testing
import OutriderCore
import OutriderHTTP
@testable import OutriderHTTP1

private func classifyHeader(_ name: String) -> HeaderKind {
    var name = name
    return name.withUTF8 { HeaderKind.classify($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
}

private func classifyMethod(_ name: String) -> MethodKind {
    var name = name
    return name.withUTF8 { MethodKind.classify($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
}

/// "content-length" → "Content-Length".
private func capitalized(_ text: String) -> String {
    var startOfWord = true
    return String(text.map { character -> Character in
        defer { startOfWord = !character.isLetter && !character.isNumber }
        return startOfWord ? Character(character.uppercased()) : Character(character.lowercased())
    })
}

/// Upper-cases every other letter: "content-length" → "CoNtEnT-LeNgTh".
private func alternatingCase(_ text: String, startUpper: Bool) -> String {
    var upper = startUpper
    return String(text.map { character -> Character in
        defer { if character.isLetter { upper.toggle() } }
        return upper ? Character(character.uppercased()) : character
    })
}

let knownHeaders: [(String, HeaderKind)] = [
    ("host", .host), ("content-length", .contentLength), ("transfer-encoding", .transferEncoding),
    ("connection", .connection), ("keep-alive", .keepAlive), ("proxy-connection", .proxyConnection),
    ("te", .te), ("upgrade", .upgrade), ("expect", .expect), ("trailer", .trailer),
    ("x-request-id", .xRequestID), ("traceparent", .traceparent), ("tracestate", .tracestate),
    ("x-forwarded-for", .xForwardedFor), ("x-forwarded-proto", .xForwardedProto),
    ("x-forwarded-host", .xForwardedHost),
]

@Suite("Header and method classification")
struct ClassifyTests {
    @Test func everyKnownHeaderInAnyCase() {
        for (name, kind) in knownHeaders {
            for variant in [name, name.uppercased(), alternatingCase(name, startUpper: true),
                            alternatingCase(name, startUpper: false), capitalized(name)] {
                #expect(classifyHeader(variant) == kind, "\(variant)")
            }
        }
        #expect(Set(knownHeaders.map(\.1.rawValue)).count == knownHeaders.count, "each kind listed once")
    }

    @Test func nearMissesAreOther() {
        for (name, _) in knownHeaders {
            #expect(classifyHeader(name + "s") == .other, "\(name)s")
            #expect(classifyHeader(String(name.dropLast())) == .other, "\(name.dropLast())")
            #expect(classifyHeader(String(name.dropFirst())) == .other, "\(name.dropFirst())")
            // Same length, one byte changed.
            var changed = Array(name.utf8)
            changed[changed.count / 2] = UInt8(ascii: "z") == changed[changed.count / 2] ? UInt8(ascii: "y") : UInt8(ascii: "z")
            #expect(classifyHeader(String(decoding: changed, as: UTF8.self)) == .other)
        }
        for other in ["", "x", "hosts", "content_length", "content-lengt", "transfer-encodings", "Host ", " host",
                      "x-forwarded-port", "x-real-ip", "set-cookie", "accept", "cookie", "authorization"] {
            #expect(classifyHeader(other) == .other, "\(other.debugDescription)")
        }
        // Only ASCII letters fold: bytes that differ by 0x20 elsewhere must not match.
        #expect(classifyHeader("x\u{0D}request-id") == .other)
        #expect(classifyHeader("x-request\u{0D}id") == .other)
    }

    @Test func hopByHopKinds() {
        let hopByHop: Set<HeaderKind> = [.connection, .keepAlive, .proxyConnection, .te, .upgrade, .transferEncoding,
                                         .contentLength, .listedInConnection]
        for (_, kind) in knownHeaders {
            #expect(kind.isHopByHop == hopByHop.contains(kind), "\(kind)")
        }
        #expect(HeaderKind.listedInConnection.isHopByHop)
        #expect(!HeaderKind.other.isHopByHop)
    }

    @Test func everyKnownMethod() {
        let methods: [(String, MethodKind)] = [
            ("GET", .get), ("HEAD", .head), ("POST", .post), ("PUT", .put), ("DELETE", .delete),
            ("OPTIONS", .options), ("PATCH", .patch), ("CONNECT", .connect), ("TRACE", .trace),
        ]
        for (name, kind) in methods {
            #expect(classifyMethod(name) == kind, "\(name)")
            // Methods are case-sensitive (RFC 9110 §9.1): any other case is an extension method.
            for variant in [name.lowercased(), capitalized(name.lowercased()), alternatingCase(name.lowercased(), startUpper: false)]
            where variant != name {
                #expect(classifyMethod(variant) == .other, "\(variant)")
            }
        }
        for other in ["", "G", "GETS", "PROPFIND", "M-SEARCH", "PRI", "POS", "DELET", "OPTION", "CONNECTS"] {
            #expect(classifyMethod(other) == .other, "\(other)")
        }
        #expect(MethodKind.get.isIdempotent && MethodKind.put.isIdempotent && MethodKind.delete.isIdempotent)
        #expect(!MethodKind.post.isIdempotent && !MethodKind.patch.isIdempotent && !MethodKind.other.isIdempotent)
    }

    @Test func characterClasses() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for byte in UInt8.min...UInt8.max {
            #expect(isTokenByte(byte) == tchar.contains(byte), "token \(byte)")
            #expect(isFieldValueByte(byte) == (byte == 0x09 || (byte >= 0x20 && byte != 0x7F)), "field value \(byte)")
            #expect(isTargetByte(byte) == (byte > 0x20 && byte < 0x7F), "target \(byte)")
        }
    }
}
