import Testing
import OutriderCore
import OutriderHTTP
@testable import OutriderHTTP1

// Defects found by these tests and fixed; each stays as a regression test. The rule behind
// most of them: the answer must not depend on how the bytes were split, so a line that runs
// past a limit is judged on its bytes before the limit (the first violation in byte order wins).

/// `GET / HTTP/1.1`, Host, one padding field, blank line: exactly `size` bytes.
private func headOfSize(_ size: Int) -> [UInt8] {
    let fixed = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: \r\n\r\n".utf8.count
    return bytes("GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + String(repeating: "p", count: size - fixed) + "\r\n\r\n")
}

@Suite("Parser regressions")
struct RegressionTests {
    /// max_header_bytes counts up to the end of the blank line, however the head arrives.
    @Test(arguments: [254, 255, 256, 257, 258, 259])
    func headSizeLimitCountsTheBlankLine(_ size: Int) {
        let limits = HeadLimits(maxHeaderBytes: 256, maxHeaders: 100)
        let input = headOfSize(size)
        #expect(input.count == size)
        let expected: ParseStatus = size <= 256 ? .complete : .failed(.headersTooLarge)
        for feed in Feed.all(input.count) {
            let status = parseHead(input, limits: limits, feed: feed).status
            #expect(status == expected, "\(size)-byte head, \(feed)")
            if status != expected { break }
        }
    }

    /// A request line over a small max_header_bytes with a short target is 431, not 414.
    @Test func shortTargetOverSmallHeadLimitIs431EveryWay() {
        let limits = HeadLimits(maxHeaderBytes: 256, maxHeaders: 100)
        let input = bytes("GET /" + String(repeating: "a", count: 300) + " HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(parseHead(input, limits: limits, feed: .whole).status == .failed(.headersTooLarge))
        #expect(parseHead(input, limits: limits, feed: .byteAtATime).status == .failed(.headersTooLarge))
        #expect(parseHead(input, limits: limits, feed: .split(100)).status == .failed(.headersTooLarge))
    }

    /// A malformed request line longer than 8 KiB with a short target is 400 every way.
    @Test(arguments: ["junk after the version", "8 KiB method", "control byte in the target"])
    func longMalformedRequestLineIs400EveryWay(_ shape: String) {
        let request = switch shape {
        case "junk after the version":
            "GET /" + String(repeating: "a", count: 100) + " HTTP/1.1 " + String(repeating: "x", count: 8300) + "\r\nHost: a\r\n\r\n"
        case "8 KiB method":
            "GET" + String(repeating: "X", count: 8300) + " / HTTP/1.1\r\nHost: a\r\n\r\n"
        default:
            "GET /a\u{1}" + String(repeating: "b", count: 8300) + " HTTP/1.1\r\nHost: a\r\n\r\n"
        }
        let input = bytes(request)
        #expect(parseHead(input, feed: .whole).status == .failed(.badRequest))
        #expect(parseHead(input, feed: .byteAtATime).status == .failed(.badRequest))
        #expect(parseHead(input, feed: .split(4000)).status == .failed(.badRequest))
    }

    /// A target over 8 KiB is 414 every way, also when the head limit is larger.
    @Test func longTargetIs414EveryWay() {
        let input = bytes("GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: a\r\n\r\n")
        for feed in [Feed.whole, .byteAtATime, .split(8200)] {
            #expect(parseHead(input, feed: feed).status == .failed(.uriTooLong), "\(feed)")
        }
    }

    /// A field line crossing max_header_bytes with a NUL before the limit is 400 every way;
    /// with the NUL after the limit, 431 every way.
    @Test func invalidFieldLineCrossingTheLimitAgrees() {
        let limits = HeadLimits(maxHeaderBytes: 256, maxHeaders: 100)
        let early = bytes("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\u{0}" + String(repeating: "z", count: 400) + "\r\n\r\n")
        let late = bytes("GET / HTTP/1.1\r\nHost: a\r\nX-A: a" + String(repeating: "z", count: 400) + "\u{0}\r\n\r\n")
        for feed in [Feed.whole, .byteAtATime, .split(100)] {
            #expect(parseHead(early, limits: limits, feed: feed).status == .failed(.badRequest), "\(feed)")
            #expect(parseHead(late, limits: limits, feed: feed).status == .failed(.headersTooLarge), "\(feed)")
        }
    }

    /// Chunk-size and trailer lines of up to 4096 bytes are accepted however they arrive.
    @Test(arguments: [4094, 4095, 4096, 4097])
    func chunkLineLimitIndependentOfSegmentation(_ lineLength: Int) {
        let line = bytes("1;") + Array(repeating: UInt8(ascii: "e"), count: lineLength - 2)
        let input = line + bytes("\r\nX\r\n0\r\n\r\n")
        let expected: ChunkedOutcome.End = lineLength <= ChunkedDecoder.maxLineBytes ? .end : .failed
        #expect(decodeChunked(input, feed: .whole).end == expected)
        #expect(decodeChunked(input, feed: .byteAtATime).end == expected)
        #expect(decodeChunked(input, feed: .split(2)).end == expected)
        let trailer = bytes("0\r\nX-T: ") + Array(repeating: UInt8(ascii: "t"), count: lineLength - 5) + bytes("\r\n\r\n")
        #expect(decodeChunked(trailer, feed: .whole).end == decodeChunked(trailer, feed: .byteAtATime).end)
    }

    /// A bare LF never ends the trailer section.
    @Test(arguments: ["0\r\nX\n", "0\r\n\0\n", "5\r\nhello\r\n0\r\nA: b\r\nZ\n"])
    func bareLFEndingTheTrailerSectionIsRefused(_ body: String) {
        #expect(decodeChunked(bytes(body)).end == .failed, "\(body.debugDescription)")
        #expect(decodeChunked(bytes(body), feed: .byteAtATime).end == .failed, "\(body.debugDescription)")
    }

    /// Host must be uri-host [":" port].
    @Test(arguments: ["a b", "a/b", "a@b", "a?b", "a#b", "a\\b"])
    func malformedHostIsRefused(_ host: String) {
        let input = bytes("GET / HTTP/1.1\r\nHost: \(host)\r\n\r\n")
        #expect(parseHead(input, feed: .whole).status == .failed(.badRequest))
    }

    @Test(arguments: ["example.com", "example.com:8080", "[::1]:8080", "10.0.0.1", "xn--bcher-kva.example"])
    func wellFormedHostIsAccepted(_ host: String) {
        let input = bytes("GET / HTTP/1.1\r\nHost: \(host)\r\n\r\n")
        #expect(parseHead(input, feed: .whole).status == .complete)
    }

    /// Path-parameter dot-segments ("..;", ".;") are refused.
    @Test(arguments: ["/a/..;/b", "/..;/x", "/a/.;/b", "/a/%2e%2e;x/b"])
    func pathParameterDotSegmentsAreRefused(_ path: String) {
        let out = ByteBuffer(capacity: 256)
        let input = bytes(path)
        let result = input.withUnsafeBufferPointer { PathNormalizer.normalize($0.baseAddress!, $0.count, into: out) }
        #expect(result == nil, "\(path)")
    }
}
