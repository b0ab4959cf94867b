import Testing
import OutriderCore
import OutriderHTTP
@testable import OutriderHTTP1

/// Realistic requests: whole, byte-at-a-time and every two-way split must give the same head.
@Suite("Request parser: valid requests")
struct RequestParserTests {
    @Test func getWithManyHeaders() {
        let input = bytes(
            "GET /api/v1/users?id=42&sort=asc HTTP/1.1\r\n" +
            "Host: api.example.com:8443\r\n" +
            "User-Agent: curl/8.5.0\r\n" +
            "Accept: */*\r\n" +
            "Accept-Encoding: gzip, deflate, br\r\n" +
            "Accept-Language: en-GB,en;q=0.9\r\n" +
            "Cookie: sid=abc123; theme=dark\r\n" +
            "X-Request-ID: 7f9c2c4e-1b5d-4c9e-9d1a-2f0e6b3a8c11\r\n" +
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n" +
            "tracestate: rojo=00f067aa0ba902b7\r\n" +
            "X-Forwarded-For: 203.0.113.7\r\n" +
            "X-Forwarded-For: 198.51.100.2\r\n" +
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x\r\n" +
            "Cache-Control: no-cache\r\n" +
            "X-Empty:\r\n" +
            "X-Padded: \t value with  inner  spaces \t \r\n" +
            "X-Obs-Text: caf\u{e9}\r\n" +
            "\r\n")
        let head = parseEveryWay(input)
        #expect(head.status == .complete)
        #expect(head.method == .get)
        #expect(head.methodText == "GET")
        #expect(head.target == "/api/v1/users?id=42&sort=asc")
        #expect(head.minorVersion == 1)
        #expect(head.contentLength == -1)
        #expect(head.isChunked == false)
        #expect(head.keepAlive == true)
        #expect(head.headStart == 0)
        #expect(head.headEnd == Int32(input.count))
        #expect(head.headers.count == 16)
        #expect(head.headers.map(\.name) == [
            "Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Cookie", "X-Request-ID",
            "traceparent", "tracestate", "X-Forwarded-For", "X-Forwarded-For", "Authorization",
            "Cache-Control", "X-Empty", "X-Padded", "X-Obs-Text",
        ])
        #expect(head.header("host") == "api.example.com:8443")
        #expect(head.header("accept-encoding") == "gzip, deflate, br")
        #expect(head.header("x-empty") == "")
        #expect(head.header("x-padded") == "value with  inner  spaces")
        #expect(head.header("x-obs-text") == "caf\u{e9}")
        #expect(head.headers.map(\.kind) == [
            .host, .other, .other, .other, .other, .other, .xRequestID, .traceparent, .tracestate,
            .xForwardedFor, .xForwardedFor, .other, .other, .other, .other, .other,
        ])
        #expect(head.hostIndex == 0)
        #expect(head.requestIDIndex == 6)
        #expect(head.traceparentIndex == 7)
        #expect(head.forwardedForIndex == 9, "the first X-Forwarded-For is remembered")
    }

    @Test func postWithContentLengthAndBody() {
        let input = bytes(
            "POST /submit HTTP/1.1\r\n" +
            "Host: example.com\r\n" +
            "Content-Type: application/json\r\n" +
            "Content-Length: 27\r\n" +
            "Expect: 100-continue\r\n" +
            "\r\n" +
            "{\"name\":\"outrider\",\"v\":1}\r\n")
        let head = parseEveryWay(input)
        #expect(head.status == .complete)
        #expect(head.method == .post)
        #expect(head.target == "/submit")
        #expect(head.contentLength == 27)
        #expect(head.isChunked == false)
        #expect(head.expectContinue == true)
        #expect(head.headEnd == Int32(input.count - 27), "the head ends before the body")
    }

    @Test func postChunked() {
        let input = bytes(
            "POST /upload HTTP/1.1\r\n" +
            "Host: example.com\r\n" +
            "Transfer-Encoding: Chunked\r\n" +
            "TE: trailers, deflate\r\n" +
            "Connection: keep-alive, X-Hop\r\n" +
            "X-Hop: 1\r\n" +
            "X-Other: 2\r\n" +
            "\r\n" +
            "5\r\nhello\r\n0\r\n\r\n")
        let head = parseEveryWay(input)
        #expect(head.status == .complete)
        #expect(head.isChunked == true)
        #expect(head.contentLength == -1)
        #expect(head.teTrailers == true)
        #expect(head.headers.map(\.kind) == [.host, .transferEncoding, .te, .connection, .listedInConnection, .other])
        #expect(head.headEnd == Int32(input.count - 15))
    }

    @Test func http10() {
        let head = parseEveryWay(bytes("GET /index.html HTTP/1.0\r\nUser-Agent: old\r\n\r\n"))
        #expect(head.status == .complete)
        #expect(head.minorVersion == 0)
        #expect(head.keepAlive == false, "HTTP/1.0 closes unless it asks for keep-alive")
        #expect(head.hostIndex == -1, "Host is optional in HTTP/1.0")

        let keepAlive = parseEveryWay(bytes("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"))
        #expect(keepAlive.status == .complete)
        #expect(keepAlive.keepAlive == true)
    }

    @Test func http11ConnectionClose() {
        let head = parseEveryWay(bytes("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
        #expect(head.status == .complete)
        #expect(head.keepAlive == false)
        #expect(head.connectionClose == true)
    }

    @Test func absoluteFormTarget() {
        let head = parseEveryWay(bytes("GET http://example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"))
        #expect(head.status == .complete)
        #expect(head.target == "http://example.com:8080/a/b?c=d")
    }

    @Test func asteriskForm() {
        let head = parseEveryWay(bytes("OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n"))
        #expect(head.status == .complete)
        #expect(head.method == .options)
        #expect(head.target == "*")
    }

    @Test func connectAuthorityForm() {
        let head = parseEveryWay(bytes("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"))
        #expect(head.status == .complete)
        #expect(head.method == .connect)
        #expect(head.target == "example.com:443")
    }

    @Test func websocketUpgrade() {
        let head = parseEveryWay(bytes(
            "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
        #expect(head.status == .complete)
        #expect(head.connectionUpgrade == true)
        #expect(head.upgradeIndex == 1)
    }

    @Test func extensionMethodAndTokenCharacters() {
        let head = parseEveryWay(bytes("M-SEARCH!#$%&'*+.^_`|~ * HTTP/1.1\r\nHost: a\r\nX!#$%&'*+-.^_`|~: v\r\n\r\n"))
        #expect(head.status == .complete)
        #expect(head.method == .other)
        #expect(head.methodText == "M-SEARCH!#$%&'*+.^_`|~")
        #expect(head.header("X!#$%&'*+-.^_`|~") == "v")
    }

    @Test func twoIdenticalContentLengthsAreAccepted() {
        let head = parseEveryWay(bytes("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello"))
        #expect(head.status == .complete)
        #expect(head.contentLength == 5)
    }

    @Test func contentLengthEdges() {
        for (value, expected) in [("0", Int64(0)), ("007", 7), ("999999999999999999", 999_999_999_999_999_999)] {
            let head = parseEveryWay(bytes("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \(value)\r\n\r\n"))
            #expect(head.status == .complete, "Content-Length: \(value)")
            #expect(head.contentLength == expected)
        }
        let padded = parseEveryWay(bytes("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t 12 \t\r\n\r\n"))
        #expect(padded.contentLength == 12, "optional whitespace around the value is not part of it")
    }

    @Test func leadingBlankLinesAreIgnored() {
        let input = bytes("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        let head = parseEveryWay(input)
        #expect(head.status == .complete)
        #expect(head.headStart == 4)
        #expect(head.headEnd == Int32(input.count))
    }

    @Test func limitsAtTheirEdgeAreAccepted() {
        // A target of exactly 8 KiB.
        let target = "/" + String(repeating: "a", count: HeadLimits.maxTargetBytes - 1)
        let long = parseEveryWay(bytes("GET \(target) HTTP/1.1\r\nHost: a\r\n\r\n"), maxSplits: 0)
        #expect(long.status == .complete)
        #expect(long.target?.utf8.count == 8192)

        // Exactly maxHeaders fields.
        let exactly = parseEveryWay(bytes("GET / HTTP/1.1\r\n" + (0..<99).map { "X-\($0): \($0)\r\n" }.joined() + "Host: a\r\n\r\n"))
        #expect(exactly.status == .complete)
        #expect(exactly.headers.count == 100)
    }

    @Test func incompleteHeadNeedsMore() {
        let full = bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        for length in 0..<full.count {
            #expect(parseHead(Array(full[0..<length])).status == .needMore, "prefix of \(length) bytes")
            #expect(parseHead(Array(full[0..<length]), feed: .byteAtATime).status == .needMore, "prefix of \(length) bytes")
        }
    }

    /// Pipelining: the second head in the buffer is parsed after the first is consumed, and an
    /// in-progress head survives the buffer being compacted (`rebase`).
    @Test func pipelinedHeadsAndRebase() {
        let first = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
        let second = "POST /two HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n"
        let all = bytes(first + second)
        let buffer = ByteBuffer(capacity: all.count + 16)
        var parser = HeadParser(kind: .request, limits: defaultLimits)
        let table = HeaderTable(capacity: 100)
        var head = MessageHead()
        let split = first.utf8.count + 10
        all.withUnsafeBufferPointer { buffer.append($0.baseAddress!, count: split) }
        #expect(parser.parse(buffer, headers: table, head: &head) == .complete)
        #expect(text(buffer, head.targetStart, head.targetLength) == "/one")
        #expect(head.headEnd == Int32(first.utf8.count))
        buffer.consume(Int(head.headEnd) - buffer.readerIndex)

        #expect(parser.parse(buffer, headers: table, head: &head) == .needMore)
        #expect(parser.isInProgress)
        #expect(parser.hasPartialHead(buffer))
        let delta = buffer.readerIndex
        buffer.compact()
        parser.rebase(by: delta, head: &head, headers: table)
        all.withUnsafeBufferPointer { buffer.append($0.baseAddress! + split, count: all.count - split) }
        #expect(parser.parse(buffer, headers: table, head: &head) == .complete)
        #expect(head.method == .post)
        #expect(text(buffer, head.targetStart, head.targetLength) == "/two")
        #expect(head.headStart == 0)
        #expect(head.headEnd == Int32(second.utf8.count))
        #expect(head.contentLength == 0)
        #expect(table.count == 2)
        #expect(text(buffer, table[0].valueStart, table[0].valueLength) == "b")
    }

    /// Each head starts from a clean `MessageHead`: nothing leaks from the previous message.
    @Test func stateDoesNotLeakBetweenMessages() {
        let all = bytes("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
                        "GET /b HTTP/1.1\r\nHost: b\r\n\r\n")
        let buffer = ByteBuffer(capacity: all.count)
        all.withUnsafeBufferPointer { _ = buffer.append($0.baseAddress!, count: all.count) }
        var parser = HeadParser(kind: .request, limits: defaultLimits)
        let table = HeaderTable(capacity: 100)
        var head = MessageHead()
        #expect(parser.parse(buffer, headers: table, head: &head) == .complete)
        #expect(head.isChunked && head.connectionClose)
        buffer.consume(Int(head.headEnd))
        #expect(parser.parse(buffer, headers: table, head: &head) == .complete)
        #expect(!head.isChunked && !head.connectionClose && head.contentLength == -1)
        #expect(head.hostIndex == 0 && table.count == 1)
    }
}
