import OutriderCore
import OutriderHTTP
import OutriderHTTP1

enum Payloads {
    /// A browser-like GET with 8 header fields.
    static let browserRequest: StaticString = """
        GET /static/app/v2/index.html?lang=en&theme=dark HTTP/1.1\r\n\
        Host: www.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
        Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
        Accept-Language: en-US,en;q=0.5\r\n\
        Accept-Encoding: gzip, deflate, br, zstd\r\n\
        Connection: keep-alive\r\n\
        Cookie: session=8f2c1e0a9b7d4c3e; theme=dark; consent=yes\r\n\
        Upgrade-Insecure-Requests: 1\r\n\
        \r\n
        """

    /// The same request for the round trips (keep-alive is HTTP/1.1's default).
    static let proxiedRequest: StaticString = browserRequest

    /// Dot-segments, a repeated slash, unreserved escapes to decode (%7E, %41, %2D) and
    /// reserved / non-ASCII ones to keep in upper case (%e2%82%ac, %3a), plus a query.
    static let messyPath: StaticString = "/api/v1/./users/../accounts//%7Ejane/%41%2Dbills/%e2%82%ac/./x%3ay/../summary?from=2024-01-01&to=2024-12-31"

    /// Three chunks (one with an extension) and two trailer fields.
    static let chunkedBody: StaticString = """
        1a\r\nabcdefghijklmnopqrstuvwxyz\r\n\
        10;name=value\r\n0123456789abcdef\r\n\
        5\r\nhello\r\n\
        0\r\n\
        Expires: Wed, 21 Oct 2015 07:28:00 GMT\r\n\
        X-Checksum: 9f86d081884c7d65\r\n\
        \r\n
        """

    static func buffer(_ text: StaticString, capacity: Int = 4096) -> ByteBuffer {
        let buffer = ByteBuffer(capacity: capacity)
        precondition(buffer.append(text))
        return buffer
    }
}

/// Reused state for the head parser benchmark.
final class HeadParseFixture: @unchecked Sendable {
    let buffer = Payloads.buffer(Payloads.browserRequest)
    let headers = HeaderTable(capacity: 100)
    var parser = HeadParser(kind: .request, limits: HeadLimits(maxHeaderBytes: 64 * 1024, maxHeaders: 100))
    var head = MessageHead()

    init() {
        // Check once, outside the measurement, that the payload is what we think it is.
        precondition(parseOnce() == 8, "expected a complete head with 8 header fields")
    }

    @inline(__always)
    func parseOnce() -> Int {
        parser.begin(at: buffer.readerIndex)
        let status = parser.parse(buffer, headers: headers, head: &head)
        guard status == .complete else { fatalError("parse: \(status)") }
        return headers.count
    }
}

final class NormalizeFixture: @unchecked Sendable {
    let target: UnsafeMutablePointer<UInt8>
    let count: Int
    let output = ByteBuffer(capacity: 4096)
    static let expected = "/api/v1/accounts/~jane/A-bills/%E2%82%AC/summary?from=2024-01-01&to=2024-12-31"

    init() {
        (target, count) = Loopback.bytes(Payloads.messyPath)
        let result = normalizeOnce()
        let text = String(decoding: UnsafeBufferPointer(start: output.base, count: result), as: UTF8.self)
        precondition(text == Self.expected, "unexpected normalization: \(text)")
    }

    @inline(__always)
    func normalizeOnce() -> Int {
        output.clear()
        guard let result = PathNormalizer.normalize(target, count, into: output) else { fatalError("path refused") }
        return result.pathLength + result.queryLength
    }
}

final class ChunkedFixture: @unchecked Sendable {
    let buffer = Payloads.buffer(Payloads.chunkedBody)
    /// The bytes stay in place; a fully consumed buffer resets its indices to 0, so each pass
    /// sets them back.
    let bodyLength = Payloads.chunkedBody.utf8CodeUnitCount

    init() {
        precondition(decodeOnce() == (26 + 16 + 5) * 16 + 2, "unexpected chunked decode")
    }

    /// Returns data bytes × 16 + trailer fields, so both are checked.
    @inline(__always)
    func decodeOnce() -> Int {
        buffer.readerIndex = 0
        buffer.writerIndex = bodyLength
        var decoder = ChunkedDecoder()
        var dataBytes = 0
        var trailers = 0
        while true {
            switch decoder.next(buffer) {
            case .data(_, let count):
                dataBytes += count
                decoder.consumeData(buffer, count)
            case .trailer:
                trailers += 1
            case .end:
                return dataBytes * 16 + trailers
            case .needMore, .failed:
                fatalError("chunked decode failed")
            }
        }
    }
}
