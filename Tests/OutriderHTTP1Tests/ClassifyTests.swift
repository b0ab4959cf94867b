import Testing
@testable import OutriderCore
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

/// The parser's word-at-a-time `classifyToken` must agree with `classify` on every token name:
/// each known name in three casings, and every one-byte change of it to any tchar.
struct ClassifyTokenTests {
    private func both(_ bytes: [UInt8]) -> (HeaderKind, HeaderKind) {
        bytes.withUnsafeBufferPointer { buffer in
            let pointer = buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!
            return (HeaderKind.classify(pointer, buffer.count), HeaderKind.classifyToken(pointer, buffer.count))
        }
    }

    @Test func agreesWithClassifyOnKnownNamesAndEveryOneByteVariant() {
        let tchars = (0..<256).map { UInt8($0) }.filter { isTokenByte($0) }
        for (name, kind) in knownHeaders {
            for spelled in [name, capitalized(name), name.uppercased()] {
                #expect(both(Array(spelled.utf8)) == (kind, kind), "\(spelled)")
                let bytes = Array(spelled.utf8)
                for position in bytes.indices {
                    for replacement in tchars {
                        var variant = bytes
                        variant[position] = replacement
                        let (expected, actual) = both(variant)
                        #expect(expected == actual, "\(String(decoding: variant, as: UTF8.self))")
                    }
                }
            }
        }
    }
}

struct RandomHexTests {
    @Test func hexDigitsOfKnownValues() {
        for value: UInt32 in [0, 1, 0x9, 0xA, 0xF, 0x1234_5678, 0x89AB_CDEF, 0xFFFF_FFFF, 0xDEAD_BEEF, 0x0F0F_A0A0] {
            let word = hexDigits(value).littleEndian
            let text = withUnsafeBytes(of: word) { String(decoding: $0, as: UTF8.self) }
            let expected = String(value, radix: 16)
            #expect(text == String(repeating: "0", count: 8 - expected.count) + expected)
        }
    }

    @Test func uuidAndTraceIDShapes() {
        var random = FastRandom(seed: 42)
        let buffer = ByteBuffer(capacity: 256)
        let hex = Set("0123456789abcdef")
        for _ in 0..<1000 {
            buffer.clear()
            appendUUIDv4(buffer, &random)
            let uuid = String(decoding: UnsafeBufferPointer(start: buffer.readPointer, count: buffer.readableBytes), as: UTF8.self)
            let parts = uuid.split(separator: "-", omittingEmptySubsequences: false)
            #expect(parts.map(\.count) == [8, 4, 4, 4, 12], "\(uuid)")
            #expect(uuid.filter { $0 != "-" }.allSatisfy { hex.contains($0) })
            #expect(parts[2].first == "4")                        // version 4
            #expect("89ab".contains(parts[3].first!))             // RFC 4122 variant
            for count in [1, 3, 4, 8, 16, 17] {
                buffer.clear()
                appendRandomHex(buffer, &random, byteCount: count)
                #expect(buffer.readableBytes == count * 2)
                let text = String(decoding: UnsafeBufferPointer(start: buffer.readPointer, count: buffer.readableBytes), as: UTF8.self)
                #expect(text.allSatisfy { hex.contains($0) }, "\(text)")
            }
        }
    }
}

struct ControlByteWordTests {
    private func expected(_ word: UInt64) -> Bool {
        withUnsafeBytes(of: word) { bytes in bytes.contains { $0 < 0x20 || $0 == 0x7F } }
    }

    @Test func everyByteAtEveryPosition() {
        for background: UInt8 in [0x61, 0x20, 0x80, 0xFF, 0x7E, 0x21] {
            for position in 0..<8 {
                for value in 0..<256 {
                    var bytes = [UInt8](repeating: background, count: 8)
                    bytes[position] = UInt8(value)
                    let word = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                    #expect(hasControlByte(word) == expected(word), "\(bytes)")
                }
            }
        }
    }

    @Test func randomWords() {
        var random = FastRandom(seed: 7)
        for _ in 0..<200_000 {
            // Bias towards the interesting edges: 0x1F/0x20, 0x7E/0x7F/0x80.
            var word: UInt64 = 0
            let edges: [UInt8] = [0x00, 0x09, 0x1F, 0x20, 0x21, 0x7E, 0x7F, 0x80, 0xFF]
            var bits = random.next()
            for index in 0..<8 {
                let pick = UInt8(truncatingIfNeeded: bits)
                let byte = pick & 1 == 0 ? edges[Int(pick >> 1) % edges.count] : UInt8(truncatingIfNeeded: random.next())
                word |= UInt64(byte) << UInt64(index * 8)
                bits >>= 8
            }
            #expect(hasControlByte(word) == expected(word))
        }
    }
}

@Suite("Host bytes")
struct HostByteTests {
    /// The bitmap against RFC 3986's sets spelled out: unreserved, sub-delims, "%", ":", "[", "]".
    @Test func everyByte() {
        let allowed = Set(Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%:[]".utf8))
        for value in 0...255 {
            let byte = UInt8(value)
            #expect(isHostByte(byte) == allowed.contains(byte), "byte \(value)")
        }
    }
}
