import Testing
import OutriderCore
import OutriderHTTP
@testable import OutriderHTTP1

/// A head written field by field through `beginWritten`/`recordWritten…` (how an HTTP/2 request
/// becomes an exchange's head) must leave exactly what parsing the same text leaves: the same
/// table, the same head, and the same refusal for every field a client could send.
@Suite("Written heads: the same result as parsing the text")
struct WrittenHeadTests {
    /// Writes `method SP target SP HTTP/1.1`, the fields and the blank line both ways.
    func bothWays(_ method: String, _ target: String, _ fields: [(String, String)],
                  limits: HeadLimits = defaultLimits) -> (written: HeadSnapshot, parsed: HeadSnapshot) {
        var text = "\(method) \(target) HTTP/1.1\r\n"
        for (name, value) in fields { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        let parsed = parseHead(bytes(text), limits: limits)

        let buffer = ByteBuffer(capacity: text.utf8.count + 64)
        _ = buffer.append(UInt8(ascii: "x"))   // a head need not start at offset 0
        let table = HeaderTable(capacity: max(limits.maxHeaders, 1))
        var head = MessageHead()
        var writer = HeadParser(kind: .request, limits: limits)
        let base = UnsafePointer(buffer.base)
        writer.beginWritten(at: buffer.writerIndex, headers: table, head: &head)
        let methodStart = buffer.writerIndex
        put(buffer, method)
        put(buffer, " ")
        let targetStart = buffer.writerIndex
        put(buffer, target)
        put(buffer, " HTTP/1.1\r\n")
        var status = writer.recordWrittenRequestLine(base, methodStart: methodStart, methodLength: method.utf8.count,
                                                     targetStart: targetStart, targetLength: target.utf8.count, head: &head)
        for (name, value) in fields where status == .needMore {
            let nameStart = buffer.writerIndex
            put(buffer, name)
            put(buffer, ": ")
            let valueStart = buffer.writerIndex
            put(buffer, value)
            put(buffer, "\r\n")
            status = writer.recordWrittenField(base, nameStart: nameStart, nameLength: name.utf8.count, valueStart: valueStart,
                                               valueLength: value.utf8.count,
                                               kind: HeaderKind.classifyToken(base + nameStart, name.utf8.count),
                                               headers: table, head: &head)
        }
        put(buffer, "\r\n")
        if status == .needMore { status = writer.finishWritten(base, headEnd: buffer.writerIndex, headers: table, head: &head) }
        var written = snapshotOf(status, buffer: buffer, table: table, head: head)
        // Offsets differ by the byte the written buffer skipped.
        if written.status == .complete {
            written.headStart = written.headStart.map { $0 - 1 }
            written.headEnd = written.headEnd.map { $0 - 1 }
            written.headers = written.headers.map {
                var header = $0
                header.nameStart -= 1
                header.valueStart -= 1
                return header
            }
        }
        return (written, parsed)
    }

    static let cases: [(String, String, [(String, String)])] = [
        ("GET", "/", [("host", "example.com")]),
        ("GET", "/a?b=c", [("host", "example.com:8443"), ("user-agent", "h2load nghttp2/1.52.0"), ("accept", "*/*"),
                           ("x-request-id", "abc"), ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                           ("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "198.51.100.2"), ("connection", "close")]),
        ("POST", "/upload", [("host", "h"), ("content-length", "12"), ("connection", "close")]),
        ("POST", "/upload", [("host", "h"), ("transfer-encoding", "chunked"), ("te", "trailers"), ("connection", "close")]),
        ("PUT", "/", [("host", "h"), ("content-length", "0"), ("expect", "100-continue")]),
        ("GET", "/", [("host", "h"), ("connection", "close, x-private"), ("x-private", "1"), ("x-obs", "caf\u{e9}")]),
        ("GET", "/", [("host", "h"), ("x-padded", " \t value \t ")]),
        ("GET", "*", [("host", "h")]),
        ("M-SEARCH", "/", [("host", "h")]),
        // Refused, as parsing refuses them.
        ("GET", "/", []),                                                      // no host
        ("GET", "/", [("host", "a b")]),                                       // host with a space
        ("GET", "/", [("host", "a/b")]),
        ("GET", "/", [("host", "h"), ("host", "h")]),                          // two hosts
        ("GET", "/", [("host", "")]),
        ("POST", "/", [("host", "h"), ("content-length", "1x")]),
        ("POST", "/", [("host", "h"), ("content-length", "1"), ("content-length", "2")]),
        ("POST", "/", [("host", "h"), ("content-length", "1234567890123456789")]),
        ("POST", "/", [("host", "h"), ("transfer-encoding", "gzip")]),
        ("POST", "/", [("host", "h"), ("transfer-encoding", "chunked"), ("content-length", "3")]),
        ("GET", "/", [("host", "h"), ("x-control", "a\u{01}b")]),
        ("GET", "/", [("host", "h"), ("x-delete", "a\u{7f}b")]),
        ("GET", "/", [("host", "h"), ("x-long-control", "abcdefghijklmnop\u{0b}")]),
        ("GET", "/a b", [("host", "h")]),
        ("GET", "/a\u{7f}", [("host", "h")]),
        ("G(T", "/", [("host", "h")]),
        ("GET", "/" + String(repeating: "a", count: 9000), [("host", "h")]),   // 414
    ]

    @Test func sameAsParsing() {
        for (method, target, fields) in Self.cases {
            let (written, parsed) = bothWays(method, target, fields)
            #expect(written == parsed, "\(method) \(target.prefix(40)) \(fields)")
        }
    }

    @Test func refusalsAreTheParsers() {
        #expect(bothWays("GET", "/", [("host", "a b")]).written.status == .failed(.badRequest))
        #expect(bothWays("GET", "/", [("host", "h"), ("x-control", "a\u{01}b")]).written.status == .failed(.badRequest))
        #expect(bothWays("POST", "/", [("host", "h"), ("transfer-encoding", "gzip")]).written.status == .failed(.notImplemented))
        #expect(bothWays("GET", "/" + String(repeating: "a", count: 9000), [("host", "h")]).written.status == .failed(.uriTooLong))
    }

    @Test func limits() {
        let many = [("host", "h")] + (0..<10).map { ("x-\($0)", "v") }
        let fewer = HeadLimits(maxHeaders: 8)
        let (writtenCount, parsedCount) = bothWays("GET", "/", many, limits: fewer)
        #expect(writtenCount.status == .failed(.headersTooLarge))
        #expect(writtenCount == parsedCount)
        let small = HeadLimits(maxHeaderBytes: 100, maxHeaders: 100)
        let (writtenSize, parsedSize) = bothWays("GET", "/", [("host", "h"), ("x-big", String(repeating: "v", count: 120))], limits: small)
        #expect(writtenSize.status == .failed(.headersTooLarge))
        #expect(writtenSize == parsedSize)
    }
}

private func put(_ buffer: ByteBuffer, _ text: String) {
    let bytes = Array(text.utf8)
    if !bytes.isEmpty { _ = buffer.append(bytes, count: bytes.count) }
}

private extension HeadLimits {
    init(maxHeaders: Int) { self.init(maxHeaderBytes: 65536, maxHeaders: maxHeaders) }
}
