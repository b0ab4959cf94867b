import Testing
import OutriderCore
import OutriderHTTP
@testable import OutriderHTTP1

/// One malformed or ambiguous request and the exact refusal SPEC §3 asks for.
struct RefusalCase: Sendable, CustomTestStringConvertible {
    let name: String
    let input: [UInt8]
    let expected: ParseFailure
    let limits: HeadLimits

    init(_ name: String, _ input: String, _ expected: ParseFailure, limits: HeadLimits = defaultLimits) {
        self.init(name, Array(input.utf8), expected, limits: limits)
    }

    init(_ name: String, _ input: [UInt8], _ expected: ParseFailure, limits: HeadLimits = defaultLimits) {
        self.name = name
        self.input = input
        self.expected = expected
        self.limits = limits
    }

    var testDescription: String { "\(name) → \(expected)" }
}

private let get = "GET / HTTP/1.1\r\n"
private let host = "Host: example.com\r\n"

/// `GET / HTTP/1.1` with `header` (raw bytes) inserted between Host and the blank line.
private func withHeaderBytes(_ header: [UInt8]) -> [UInt8] {
    bytes(get + host) + header + bytes("\r\n\r\n")
}

let smugglingCorpus: [RefusalCase] = [
    // Framing: Content-Length and Transfer-Encoding.
    RefusalCase("CL then TE", "POST / HTTP/1.1\r\n\(host)Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", .badRequest),
    RefusalCase("TE then CL", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", .badRequest),
    RefusalCase("TE chunked with CL 0", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", .badRequest),
    RefusalCase("two differing CLs", "POST / HTTP/1.1\r\n\(host)Content-Length: 5\r\nContent-Length: 6\r\n\r\n", .badRequest),
    RefusalCase("two differing CLs, case differs", "POST / HTTP/1.1\r\n\(host)content-length: 0\r\nCONTENT-LENGTH: 10\r\n\r\n", .badRequest),
    RefusalCase("CL with plus sign", "POST / HTTP/1.1\r\n\(host)Content-Length: +5\r\n\r\n", .badRequest),
    RefusalCase("CL with minus sign", "POST / HTTP/1.1\r\n\(host)Content-Length: -5\r\n\r\n", .badRequest),
    RefusalCase("CL with inner space", "POST / HTTP/1.1\r\n\(host)Content-Length: 1 0\r\n\r\n", .badRequest),
    RefusalCase("CL in hex (0x)", "POST / HTTP/1.1\r\n\(host)Content-Length: 0x10\r\n\r\n", .badRequest),
    RefusalCase("CL in hex letters", "POST / HTTP/1.1\r\n\(host)Content-Length: a\r\n\r\n", .badRequest),
    RefusalCase("CL comma list of equal values", "POST / HTTP/1.1\r\n\(host)Content-Length: 5, 5\r\n\r\n", .badRequest),
    RefusalCase("CL comma list of different values", "POST / HTTP/1.1\r\n\(host)Content-Length: 5,6\r\n\r\n", .badRequest),
    RefusalCase("CL overflowing Int64", "POST / HTTP/1.1\r\n\(host)Content-Length: 99999999999999999999\r\n\r\n", .badRequest),
    RefusalCase("CL Int64.max + 1", "POST / HTTP/1.1\r\n\(host)Content-Length: 9223372036854775808\r\n\r\n", .badRequest),
    RefusalCase("CL empty", "POST / HTTP/1.1\r\n\(host)Content-Length:\r\n\r\n", .badRequest),
    RefusalCase("CL decimal point", "POST / HTTP/1.1\r\n\(host)Content-Length: 5.0\r\n\r\n", .badRequest),
    // Transfer-Encoding other than exactly "chunked" → 501; in HTTP/1.0 → 400.
    RefusalCase("TE gzip", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: gzip\r\n\r\n", .notImplemented),
    RefusalCase("TE chunked, gzip", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: chunked, gzip\r\n\r\n", .notImplemented),
    RefusalCase("TE gzip, chunked", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: gzip, chunked\r\n\r\n", .notImplemented),
    RefusalCase("TE identity", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: identity\r\n\r\n", .notImplemented),
    RefusalCase("TE chunked, chunked", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: chunked, chunked\r\n\r\n", .notImplemented),
    RefusalCase("TE chunked with parameter", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: chunked;q=1\r\n\r\n", .notImplemented),
    RefusalCase("TE empty", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding:\r\n\r\n", .notImplemented),
    RefusalCase("TE misspelt xchunked", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: xchunked\r\n\r\n", .notImplemented),
    // Two Transfer-Encoding fields combine to "chunked, chunked" (or "chunked, gzip"): not exactly chunked.
    RefusalCase("two TE headers, both chunked", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", .notImplemented),
    RefusalCase("two TE headers, chunked then gzip", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", .notImplemented),
    RefusalCase("TE chunked in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .badRequest),
    RefusalCase("TE chunked in HTTP/1.0 with Host", "POST / HTTP/1.0\r\n\(host)Transfer-Encoding: chunked\r\n\r\n", .badRequest),
    // Line folding and whitespace.
    RefusalCase("obs-fold with space", get + host + "X-A: a\r\n b\r\n\r\n", .badRequest),
    RefusalCase("obs-fold with tab", get + host + "X-A: a\r\n\tb\r\n\r\n", .badRequest),
    RefusalCase("obs-fold as first field line", get + " Host: example.com\r\n\r\n", .badRequest),
    RefusalCase("space before colon", get + "Host : example.com\r\n\r\n", .badRequest),
    RefusalCase("tab before colon", get + host + "Content-Length\t: 0\r\n\r\n", .badRequest),
    RefusalCase("space before colon in Transfer-Encoding", "POST / HTTP/1.1\r\n\(host)Transfer-Encoding : chunked\r\n\r\n", .badRequest),
    RefusalCase("field line without colon", get + host + "X-A a\r\n\r\n", .badRequest),
    RefusalCase("empty field name", get + host + ": a\r\n\r\n", .badRequest),
    RefusalCase("non-token byte in field name", get + host + "X[A]: a\r\n\r\n", .badRequest),
    RefusalCase("non-ASCII byte in field name", withHeaderBytes(bytes("X-") + [0xC3, 0xA9] + bytes(": a")), .badRequest),
    // Line ends.
    RefusalCase("bare LF ends the request line", "GET / HTTP/1.1\n\(host)\r\n", .badRequest),
    RefusalCase("bare LF ends a field line", get + "Host: example.com\n\r\n", .badRequest),
    RefusalCase("bare LF ends the head", get + host + "\n", .badRequest),
    RefusalCase("bare LF before the request line", "\n" + get + host + "\r\n", .badRequest),
    RefusalCase("bare LF inside a field value", get + host + "X-A: a\nb\r\n\r\n", .badRequest),
    RefusalCase("bare LF inside the target", "GET /a\nb HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("bare CR inside a field value", get + host + "X-A: a\rb\r\n\r\n", .badRequest),
    RefusalCase("bare CR ends the request line", "GET / HTTP/1.1\r\(host)\r\n", .badRequest),
    RefusalCase("bare CR before CRLF", get + host + "X-A: a\r\r\n\r\n", .badRequest),
    RefusalCase("bare CR as blank line", get + host + "\r\r\n", .badRequest),
    RefusalCase("bare CR in the target", "GET /a\rb HTTP/1.1\r\n\(host)\r\n", .badRequest),
    // NUL, control bytes and DEL.
    RefusalCase("NUL in field value", withHeaderBytes(bytes("X-A: a") + [0x00] + bytes("b")), .badRequest),
    RefusalCase("NUL in field name", withHeaderBytes(bytes("X-A") + [0x00] + bytes(": b")), .badRequest),
    RefusalCase("NUL in target", bytes("GET /a") + [0x00] + bytes("b HTTP/1.1\r\n" + host + "\r\n"), .badRequest),
    RefusalCase("NUL in method", bytes("GE") + [0x00] + bytes("T / HTTP/1.1\r\n" + host + "\r\n"), .badRequest),
    RefusalCase("NUL at the start of the head", [0x00] + bytes(get + host + "\r\n"), .badRequest),
    RefusalCase("SOH in field value", withHeaderBytes(bytes("X-A: a") + [0x01]), .badRequest),
    RefusalCase("ESC in field value", withHeaderBytes(bytes("X-A: a") + [0x1B] + bytes("[0m")), .badRequest),
    RefusalCase("vertical tab in field value", withHeaderBytes(bytes("Transfer-Encoding: ") + [0x0B] + bytes("chunked")), .badRequest),
    RefusalCase("form feed in field value", withHeaderBytes(bytes("X-A: a") + [0x0C] + bytes("b")), .badRequest),
    RefusalCase("US in target", bytes("GET /a") + [0x1F] + bytes(" HTTP/1.1\r\n" + host + "\r\n"), .badRequest),
    RefusalCase("DEL in field value", withHeaderBytes(bytes("X-A: a") + [0x7F]), .badRequest),
    RefusalCase("DEL in field name", withHeaderBytes(bytes("X-A") + [0x7F] + bytes(": a")), .badRequest),
    RefusalCase("DEL in target", bytes("GET /a") + [0x7F] + bytes(" HTTP/1.1\r\n" + host + "\r\n"), .badRequest),
    RefusalCase("non-ASCII byte in target", bytes("GET /caf") + [0xC3, 0xA9] + bytes(" HTTP/1.1\r\n" + host + "\r\n"), .badRequest),
    // The request line.
    RefusalCase("double space after method", "GET  / HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("double space before version", "GET /  HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("tab after method", "GET\t/ HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("tab before version", "GET /\tHTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("leading space before method", " GET / HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("trailing space after version", "GET / HTTP/1.1 \r\n\(host)\r\n", .badRequest),
    RefusalCase("space inside the target", "GET /a b HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("HTTP/0.9 (no version)", "GET /\r\n\r\n", .badRequest),
    RefusalCase("HTTP/0.9 with a field", "GET /index.html\r\n\(host)\r\n", .badRequest),
    RefusalCase("HTTP/2.0", "GET / HTTP/2.0\r\n\(host)\r\n", .badRequest),
    RefusalCase("HTTP/1.2", "GET / HTTP/1.2\r\n\(host)\r\n", .badRequest),
    RefusalCase("HTTP/1.10", "GET / HTTP/1.10\r\n\(host)\r\n", .badRequest),
    RefusalCase("HTTP/1", "GET / HTTP/1\r\n\(host)\r\n", .badRequest),
    RefusalCase("lower-case version", "GET / http/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", .badRequest),
    RefusalCase("empty method", " / HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("empty target", "GET  HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("non-token method (parenthesis)", "GE(T / HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("non-token method (slash)", "GET/ / HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("non-token method (quote)", "G\"T / HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("method longer than 32 bytes", String(repeating: "A", count: 33) + " / HTTP/1.1\r\n\(host)\r\n", .badRequest),
    RefusalCase("over 64 bytes of blank lines before the request line", String(repeating: "\r\n", count: 40) + get + host + "\r\n", .badRequest),
    // Host.
    RefusalCase("missing Host in HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", .badRequest),
    RefusalCase("two Host headers", get + "Host: a.example\r\nHost: b.example\r\n\r\n", .badRequest),
    RefusalCase("two identical Host headers", get + host + host + "\r\n", .badRequest),
    RefusalCase("empty Host", get + "Host:\r\n\r\n", .badRequest),
    RefusalCase("Host of whitespace only", get + "Host: \t \r\n\r\n", .badRequest),
    // Sizes.
    RefusalCase("target of 8 KiB + 1", "GET /" + String(repeating: "a", count: HeadLimits.maxTargetBytes) + " HTTP/1.1\r\n\(host)\r\n", .uriTooLong),
    RefusalCase("target of 20 KB", "GET /" + String(repeating: "b", count: 20_000) + " HTTP/1.1\r\n\(host)\r\n", .uriTooLong),
    RefusalCase("head over maxHeaderBytes (one huge field)", get + host + "X-Big: " + String(repeating: "x", count: 70_000) + "\r\n\r\n", .headersTooLarge),
    RefusalCase("head over maxHeaderBytes (many fields)", get + host + String(repeating: "X-Pad: " + String(repeating: "p", count: 1000) + "\r\n", count: 66) + "\r\n", .headersTooLarge,
                limits: HeadLimits(maxHeaderBytes: 65536, maxHeaders: 1000)),
    RefusalCase("head over a small maxHeaderBytes", get + host + "X-A: " + String(repeating: "y", count: 300) + "\r\n\r\n", .headersTooLarge,
                limits: HeadLimits(maxHeaderBytes: 256, maxHeaders: 100)),
    RefusalCase("101 fields with maxHeaders 100", get + host + (0..<100).map { "X-\($0): v\r\n" }.joined() + "\r\n", .headersTooLarge),
    RefusalCase("4 fields with maxHeaders 3", get + host + "A: 1\r\nB: 2\r\nC: 3\r\n\r\n", .headersTooLarge,
                limits: HeadLimits(maxHeaderBytes: 65536, maxHeaders: 3)),
]

@Suite("Request parser: smuggling and strictness corpus")
struct SmugglingCorpusTests {
    @Test func corpusIsLargeEnough() {
        #expect(smugglingCorpus.count >= 40)
        #expect(Set(smugglingCorpus.map(\.name)).count == smugglingCorpus.count, "case names are unique")
        for failure in [ParseFailure.badRequest, .notImplemented, .uriTooLong, .headersTooLarge] {
            #expect(smugglingCorpus.contains { $0.expected == failure }, "the corpus covers \(failure)")
        }
    }

    @Test(arguments: smugglingCorpus)
    func refusedWhole(_ refusal: RefusalCase) {
        #expect(parseHead(refusal.input, limits: refusal.limits, feed: .whole) == HeadSnapshot(status: .failed(refusal.expected)))
    }

    @Test(arguments: smugglingCorpus)
    func refusedByteAtATime(_ refusal: RefusalCase) {
        #expect(parseHead(refusal.input, limits: refusal.limits, feed: .byteAtATime) == HeadSnapshot(status: .failed(refusal.expected)))
    }

    @Test(arguments: smugglingCorpus)
    func refusedWhateverTheSplit(_ refusal: RefusalCase) {
        for feed in Feed.all(refusal.input.count, maxSplits: 512).dropFirst(2) {
            let result = parseHead(refusal.input, limits: refusal.limits, feed: feed)
            #expect(result == HeadSnapshot(status: .failed(refusal.expected)), "\(feed)")
            if result != HeadSnapshot(status: .failed(refusal.expected)) { break }
        }
    }

    /// The proxy maps each refusal to the status SPEC §3 names.
    @Test func failuresMapToReplies() {
        #expect(ParseFailure.badRequest.replyReason.status == 400)
        #expect(ParseFailure.notImplemented.replyReason.status == 501)
        #expect(ParseFailure.uriTooLong.replyReason.status == 414)
        #expect(ParseFailure.headersTooLarge.replyReason.status == 431)
        #expect(ParseFailure.invalidResponse.replyReason.status == 502)
        #expect("\(ParseFailure.invalidResponse.replyReason.token)" == "upstream_protocol")
        #expect("\(ParseFailure.headersTooLarge.replyReason.token)" == "headers_too_large")
    }
}
