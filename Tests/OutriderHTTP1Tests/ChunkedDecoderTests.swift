import Testing
import OutriderCore
import OutriderHTTP
@testable import OutriderHTTP1

@Suite("Chunked decoder")
struct ChunkedDecoderTests {
    @Test func simpleBody() {
        let outcome = decodeEveryWay(bytes("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
        #expect(outcome == ChunkedOutcome(end: .end, payload: bytes("hello world"), trailers: [], rest: []))
    }

    @Test func emptyBody() {
        #expect(decodeEveryWay(bytes("0\r\n\r\n")) == ChunkedOutcome(end: .end, payload: [], trailers: [], rest: []))
        #expect(decodeEveryWay(bytes("000\r\n\r\n")).end == .end, "leading zeros")
    }

    @Test func hexSizesBothCases() {
        let payload = Array(repeating: UInt8(ascii: "q"), count: 0x1aF)
        let input = bytes("1aF\r\n") + payload + bytes("\r\nA\r\n0123456789\r\n0\r\n\r\n")
        let outcome = decodeEveryWay(input)
        #expect(outcome.end == .end)
        #expect(outcome.payload == payload + bytes("0123456789"))
    }

    @Test func payloadMayContainCRLFAndBinary() {
        let data: [UInt8] = [0x0D, 0x0A, 0x00, 0xFF, 0x30, 0x0D, 0x0A, 0x0D, 0x0A]
        let input = bytes("9\r\n") + data + bytes("\r\n0\r\n\r\n")
        #expect(decodeEveryWay(input) == ChunkedOutcome(end: .end, payload: data, trailers: [], rest: []))
    }

    @Test func extensionsAreAcceptedAndDropped() {
        let input = bytes("5;name=value\r\nhello\r\n6 ; a=\"quoted ; value\" ;b\r\n world\r\n3\t;x\r\n!!!\r\n0;last=1\r\n\r\n")
        // trailing whitespace after the size is tolerated (h11, nginx and Node do too)
        #expect(decodeEveryWay(bytes("5 \r\nhello\r\n2\t\r\n!!\r\n0 \r\n\r\n")).payload == bytes("hello!!"))
        let outcome = decodeEveryWay(input)
        #expect(outcome == ChunkedOutcome(end: .end, payload: bytes("hello world!!!"), trailers: [], rest: []))
    }

    @Test func trailersAndPipelinedRest() {
        let input = bytes("4\r\nWiki\r\n0\r\nExpires: never\r\ngrpc-status: 0\r\nX-Empty:\r\n\r\nGET /next HTTP/1.1\r\n")
        let outcome = decodeEveryWay(input)
        #expect(outcome == ChunkedOutcome(end: .end, payload: bytes("Wiki"), trailers: ["Expires: never", "grpc-status: 0", "X-Empty:"],
                                          rest: bytes("GET /next HTTP/1.1\r\n")))
    }

    @Test func sizeLineOfExactly4KiBIsAccepted() {
        // 4096 bytes before CRLF: "1;" and 4094 bytes of extension. Fed whole.
        let line = bytes("1;") + Array(repeating: UInt8(ascii: "e"), count: ChunkedDecoder.maxLineBytes - 2)
        let outcome = decodeChunked(line + bytes("\r\nX\r\n0\r\n\r\n"))
        #expect(outcome.end == .end)
        #expect(outcome.payload == bytes("X"))
    }

    @Test func incompleteBodyNeedsMore() {
        let full = bytes("5\r\nhello\r\n0\r\nA: b\r\n\r\n")
        for length in 0..<full.count {
            #expect(decodeChunked(Array(full[0..<length])).end == .needMore, "prefix of \(length)")
            #expect(decodeChunked(Array(full[0..<length]), feed: .byteAtATime).end == .needMore, "prefix of \(length)")
        }
    }

    @Test(arguments: [
        ("non-hex size", "g\r\nhello\r\n0\r\n\r\n"),
        ("size with 0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("negative size", "-5\r\nhello\r\n0\r\n\r\n"),
        ("size with plus sign", "+5\r\nhello\r\n0\r\n\r\n"),
        ("empty size line", "\r\nhello\r\n0\r\n\r\n"),
        ("leading space before size", " 5\r\nhello\r\n0\r\n\r\n"),
        ("size then garbage", "5x\r\nhello\r\n0\r\n\r\n"),
        ("size, space, garbage", "5 junk\r\nhello\r\n0\r\n\r\n"),
        ("size, space, digit", "5 5\r\nhello\r\n0\r\n\r\n"),
        ("size, tab, garbage", "5\tx=1\r\nhello\r\n0\r\n\r\n"),
        ("last chunk, space, garbage", "5\r\nhello\r\n0 x\r\n\r\n"),
        ("16 hex digits", "0000000000000005\r\nhello\r\n0\r\n\r\n"),
        ("size overflowing Int64", "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("missing CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n"),
        ("LF only after data", "5\r\nhello\n0\r\n\r\n"),
        ("CR only after data", "5\r\nhello\r0\r\n\r\n"),
        ("data longer than size", "3\r\nhello\r\n0\r\n\r\n"),
        ("bare LF after size", "5\nhello\r\n0\r\n\r\n"),
        ("bare LF after last chunk", "5\r\nhello\r\n0\n\r\n"),
        ("bare LF as size line", "\nhello\r\n0\r\n\r\n"),
        ("bare CR inside the size line", "5\r;x\r\nhello\r\n0\r\n\r\n"),
        ("NUL in extension", "5;a\u{0}\r\nhello\r\n0\r\n\r\n"),
        ("DEL in extension", "5;a\u{7F}\r\nhello\r\n0\r\n\r\n"),
        ("trailer obs-fold", "0\r\nA: b\r\n c\r\n\r\n"),
        ("trailer space before colon", "0\r\nA : b\r\n\r\n"),
        ("trailer without colon", "0\r\nAb\r\n\r\n"),
        ("trailer with empty name", "0\r\n: b\r\n\r\n"),
        ("trailer NUL in value", "0\r\nA: \u{0}\r\n\r\n"),
        ("trailer bare LF", "0\r\nA: b\n\r\n"),
        ("trailer bare CR", "0\r\nA: b\rc\r\n\r\n"),
        ("bare LF ends the trailer section", "0\r\n\n"),
        ("bare LF ends the trailer section after a field", "0\r\nA: b\r\n\n"),
    ])
    func refused(_ name: String, _ input: String) {
        decodeEveryWay(bytes(input))
        #expect(decodeChunked(bytes(input)).end == .failed, "\(name)")
    }

    @Test func sizeLineOver4KiBIsRefused() {
        let line = bytes("1;") + Array(repeating: UInt8(ascii: "e"), count: ChunkedDecoder.maxLineBytes)
        let input = line + bytes("\r\nX\r\n0\r\n\r\n")
        #expect(decodeChunked(input).end == .failed)
        #expect(decodeChunked(input, feed: .byteAtATime).end == .failed)
        // Without a line end in sight, refused once 4 KiB are buffered.
        let endless = bytes("1;") + Array(repeating: UInt8(ascii: "e"), count: 10_000)
        #expect(decodeChunked(endless).end == .failed)
        #expect(decodeChunked(endless, feed: .byteAtATime).end == .failed)
    }

    @Test func trailerSectionOverLimitIsRefused() {
        let field = "X-T: " + String(repeating: "t", count: 1000) + "\r\n"
        let input = bytes("0\r\n" + String(repeating: field, count: 17) + "\r\n")
        #expect(decodeChunked(input).end == .failed)
        #expect(decodeChunked(input, feed: .byteAtATime).end == .failed)
        let fits = bytes("0\r\n" + String(repeating: field, count: 16) + "\r\n")
        #expect(decodeEveryWay(fits, maxSplits: 0).trailers.count == 16)
    }

    @Test func largeChunkConsumedPiecewise() {
        let payload = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let input = bytes("11170\r\n") + payload + bytes("\r\n0\r\n\r\n")
        #expect(decodeChunked(input).payload == payload)
        #expect(decodeChunked(input, consumeStep: 4096).payload == payload)
        #expect(decodeChunked(input, feed: .split(3000)).payload == payload)
    }
}
