import Testing
import OutriderCore
import OutriderHTTP
@testable import OutriderHTTP1

@Suite("Response parser")
struct ResponseParserTests {
    @Test func okWithContentLength() {
        let input = bytes("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
        let head = parseEveryWay(input, kind: .response)
        #expect(head.status == .complete)
        #expect(head.statusCode == 200)
        #expect(head.minorVersion == 1)
        #expect(head.contentLength == 5)
        #expect(head.isChunked == false)
        #expect(head.keepAlive == true)
        #expect(head.headEnd == Int32(input.count - 5))
        #expect(head.header("content-type") == "text/plain")
    }

    @Test func chunkedResponse() {
        let head = parseEveryWay(bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), kind: .response)
        #expect(head.status == .complete)
        #expect(head.isChunked == true)
        #expect(head.contentLength == -1)
        #expect(head.headers.map(\.kind) == [.transferEncoding, .trailer])
    }

    @Test(arguments: [
        ("HTTP/1.1 100 Continue\r\n\r\n", 100),
        ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 101),
        ("HTTP/1.1 204 No Content\r\n\r\n", 204),
        ("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", 304),
        ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 404),
        ("HTTP/1.1 418 I'm a teapot\r\n\r\n", 418),
        ("HTTP/1.1 500 Internal Server Error\r\n\r\n", 500),
        ("HTTP/1.1 503  Service  Unavailable \r\n\r\n", 503),
        ("HTTP/1.1 599 Custom\r\n\r\n", 599),
        ("HTTP/1.1 999 Whatever\r\n\r\n", 999),
        ("HTTP/1.1 200\r\n\r\n", 200),          // no reason phrase, no space
        ("HTTP/1.1 200 \r\n\r\n", 200),         // empty reason phrase
        ("HTTP/1.1 200 \tOK\r\n\r\n", 200),     // HTAB inside the reason
        ("HTTP/1.0 200 OK\r\n\r\n", 200),
    ])
    func statusCodesAndReasons(_ response: String, _ code: Int) {
        let head = parseEveryWay(bytes(response), kind: .response)
        #expect(head.status == .complete)
        #expect(head.statusCode == code)
    }

    @Test func reasonWithObsText() {
        let input = bytes("HTTP/1.1 200 ") + [0xC3, 0x89, 0x74, 0xE9] + bytes("\r\n\r\n")
        let head = parseEveryWay(input, kind: .response)
        #expect(head.status == .complete)
        #expect(head.statusCode == 200)
    }

    @Test func http10ResponseAndConnection() {
        let plain = parseEveryWay(bytes("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"), kind: .response)
        #expect(plain.minorVersion == 0)
        #expect(plain.keepAlive == false)
        let kept = parseEveryWay(bytes("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"), kind: .response)
        #expect(kept.keepAlive == true)
        let closed = parseEveryWay(bytes("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"), kind: .response)
        #expect(closed.keepAlive == false)
        #expect(closed.connectionClose == true)
    }

    @Test func upgradeResponse() {
        let head = parseEveryWay(bytes("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), kind: .response)
        #expect(head.connectionUpgrade == true)
        #expect(head.upgradeIndex == 0)
    }

    @Test func responsesNeedNoHost() {
        let head = parseEveryWay(bytes("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n"), kind: .response)
        #expect(head.status == .complete)
        #expect(head.hostIndex == -1)
    }

    @Test(arguments: [
        ("two-digit status", "HTTP/1.1 20 OK\r\n\r\n"),
        ("four-digit status", "HTTP/1.1 2000 OK\r\n\r\n"),
        ("status below 100", "HTTP/1.1 099 Odd\r\n\r\n"),
        ("status 000", "HTTP/1.1 000 Zero\r\n\r\n"),
        ("letters in status", "HTTP/1.1 2OO OK\r\n\r\n"),
        ("HTTP/2 version", "HTTP/2 200 OK\r\n\r\n"),
        ("HTTP/2.0 version", "HTTP/2.0 200 OK\r\n\r\n"),
        ("HTTP/1.2 version", "HTTP/1.2 200 OK\r\n\r\n"),
        ("lower-case version", "http/1.1 200 OK\r\n\r\n"),
        ("double space before status", "HTTP/1.1  200 OK\r\n\r\n"),
        ("tab before status", "HTTP/1.1\t200 OK\r\n\r\n"),
        ("tab after status", "HTTP/1.1 200\tOK\r\n\r\n"),
        ("no status", "HTTP/1.1\r\n\r\n"),
        ("leading space", " HTTP/1.1 200 OK\r\n\r\n"),
        ("blank line before status line", "\r\nHTTP/1.1 200 OK\r\n\r\n"),
        ("bare LF status line", "HTTP/1.1 200 OK\n\r\n"),
        ("bare LF ends the head", "HTTP/1.1 200 OK\r\n\n"),
        ("bare CR in reason", "HTTP/1.1 200 O\rK\r\n\r\n"),
        ("NUL in reason", "HTTP/1.1 200 O\u{0}K\r\n\r\n"),
        ("DEL in reason", "HTTP/1.1 200 O\u{7F}K\r\n\r\n"),
        ("CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("two differing CLs", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n"),
        ("CL with sign", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"),
        ("TE gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
        ("TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        ("obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n"),
        ("space before colon", "HTTP/1.1 200 OK\r\nServer : x\r\n\r\n"),
        ("empty field name", "HTTP/1.1 200 OK\r\n: x\r\n\r\n"),
        ("NUL in field value", "HTTP/1.1 200 OK\r\nX-A: \u{0}\r\n\r\n"),
        ("HTTP/0.9-style body", "<html>hello</html>\r\n\r\n"),
        ("a request instead", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ])
    func invalidResponses(_ name: String, _ response: String) {
        let refused = HeadSnapshot(status: .failed(.invalidResponse))
        #expect(parseHead(bytes(response), kind: .response, feed: .whole) == refused, "\(name)")
        #expect(parseHead(bytes(response), kind: .response, feed: .byteAtATime) == refused, "\(name)")
        for index in 1..<response.utf8.count {
            #expect(parseHead(bytes(response), kind: .response, feed: .split(index)) == refused, "\(name) split at \(index)")
        }
    }

    @Test func responseLimitsAreInvalidResponse() {
        let refused = HeadSnapshot(status: .failed(.invalidResponse))
        let big = bytes("HTTP/1.1 200 OK\r\nX-Big: " + String(repeating: "z", count: 70_000) + "\r\n\r\n")
        #expect(parseHead(big, kind: .response) == refused)
        #expect(parseHead(big, kind: .response, feed: .byteAtATime) == refused)
        let many = bytes("HTTP/1.1 200 OK\r\n" + (0..<101).map { "X-\($0): v\r\n" }.joined() + "\r\n")
        #expect(parseHead(many, kind: .response) == refused)
        #expect(parseHead(many, kind: .response, feed: .byteAtATime) == refused)
        let longLine = bytes("HTTP/1.1 200 " + String(repeating: "r", count: 70_000) + "\r\n\r\n")
        #expect(parseHead(longLine, kind: .response) == refused)
        #expect(parseHead(longLine, kind: .response, feed: .byteAtATime) == refused)
    }
}
