import CFuzzerShim
import OutriderCore
import OutriderHTTP
import OutriderHTTP1

// libFuzzer target for the HTTP/1 response path (DESIGN §5–6): what an upstream sends, read
// the way the proxy reads it (Sources/OutriderProxy/Upstream.swift). The input is a stream of
// responses on one connection. Each head is parsed by HeadParser(kind: .response) four ways —
// in one buffer, one byte at a time, split in two, in pieces — which must agree exactly, and
// the head must satisfy the invariants in `checkHeadInvariants`. Then its body is skipped the
// way the proxy frames it: none for 1xx (another head follows), 204 and 304; a chunked body
// through ChunkedDecoder (whole, byte-at-a-time, piecewise with partial consumption: must
// agree); Content-Length bytes; 101 and read-until-close end the walk. The next head is
// parsed by the same parser on the same buffer (as on a kept-alive connection, and after a
// 100 Continue) and must match a fresh parse of the same bytes. At most 8 heads.
//
// Buffers are exactly as large as their content plus one byte, and their unwritten tail is
// ASan-poisoned before every parser and decoder call: a read past what was received is a report.
// Any disagreement is a `precondition` failure: a crash, which libFuzzer keeps.
//
// This lives outside main.swift on purpose: closures in main.swift top-level code are
// main-actor isolated and trap when C calls them (DESIGN §5).

/// Below the input size limit (-max_len=16384) so the head-size checks are reachable; few
/// fields, so the field-count check is reachable too. (The proxy's defaults are larger.)
let fuzzLimits = HeadLimits(maxHeaderBytes: 12288, maxHeaders: 32)

/// Hands the command line to libFuzzer (or to CFuzzerShim's replaying fallback). The callback is
/// referenced in the file that defines it: referencing a `@_cdecl` function as a C function
/// pointer from another file emits a second definition of its symbol.
func runFuzzDriver() -> Int32 {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    walkResponses(UnsafeBufferPointer(start: data, count: size))
    return 0
}

@inline(__always) func poisonTail(_ buffer: ByteBuffer) {
    outrider_fuzz_unpoison(buffer.base, buffer.capacity)
    outrider_fuzz_poison(buffer.base + buffer.writerIndex, buffer.capacity - buffer.writerIndex)
}

@inline(__always) func unpoison(_ buffer: ByteBuffer) {
    outrider_fuzz_unpoison(buffer.base, buffer.capacity)
}

// MARK: the connection

func walkResponses(_ input: UnsafeBufferPointer<UInt8>) {
    let buffer = ByteBuffer(capacity: input.count + 1)
    defer { unpoison(buffer) }
    buffer.append(input.baseAddress!, count: input.count)
    var parser = HeadParser(kind: .response, limits: fuzzLimits)
    let table = HeaderTable(capacity: fuzzLimits.maxHeaders)
    var head = MessageHead()
    var offset = 0
    for _ in 0..<8 {
        let fresh = checkResponseHead(UnsafeBufferPointer(rebasing: input[offset...]))
        poisonTail(buffer)
        let status = parser.parse(buffer, headers: table, head: &head)
        let reused = HeadResult(status: status, head: head, table: table, origin: offset)
        precondition(reused == fresh, """
            a head parsed by the connection's parser at \(offset) differs from the same bytes alone: \
            \(reused.status) vs \(fresh.status)
            """)
        guard status == .complete else { return }

        let headEnd = offset + Int(fresh.headEnd)
        let next: Int
        switch fresh.statusCode {
        case 101:
            return   // a tunnel from here on
        case 100..<200, 204, 304:
            next = headEnd
        default:
            if fresh.isChunked {
                guard headEnd < input.count else { return }
                let decoded = checkChunked(UnsafeBufferPointer(rebasing: input[headEnd...]))
                guard decoded.ended else { return }
                next = input.count - decoded.restCount
            } else if fresh.contentLength >= 0 {
                guard fresh.contentLength < Int64(input.count - headEnd) else { return }
                next = headEnd + Int(fresh.contentLength)
            } else {
                return   // delimited by the close
            }
        }
        guard next < input.count else { return }
        buffer.consume(next - buffer.readerIndex)
        precondition(buffer.readerIndex == next)
        offset = next
    }
}

// MARK: response head

struct FieldResult: Equatable {
    var nameStart: Int32
    var nameLength: Int32
    var valueStart: Int32
    var valueLength: Int32
    var kind: UInt8
}

/// Everything observable about one parse; offsets are relative to `origin`.
struct HeadResult: Equatable {
    var status: ParseStatus
    var statusCode = 0
    var minorVersion: UInt8 = 0
    var contentLength: Int64 = 0
    var isChunked = false
    var keepAlive = false
    var connectionClose = false
    var connectionKeepAlive = false
    var connectionUpgrade = false
    var connectionListsOthers = false
    var expectContinue = false
    var teTrailers = false
    var headStart: Int32 = 0
    var headEnd: Int32 = 0
    var hostIndex: Int32 = 0
    var upgradeIndex: Int32 = 0
    var requestIDIndex: Int32 = 0
    var traceparentIndex: Int32 = 0
    var forwardedForIndex: Int32 = 0
    var fields: [FieldResult] = []

    init(status: ParseStatus) { self.status = status }

    init(status: ParseStatus, head: MessageHead, table: HeaderTable, origin: Int) {
        self.status = status
        guard status == .complete else { return }
        let shift = Int32(origin)
        statusCode = head.status
        minorVersion = head.minorVersion
        contentLength = head.contentLength
        isChunked = head.isChunked
        keepAlive = head.keepAlive
        connectionClose = head.connectionClose
        connectionKeepAlive = head.connectionKeepAlive
        connectionUpgrade = head.connectionUpgrade
        connectionListsOthers = head.connectionListsOthers
        expectContinue = head.expectContinue
        teTrailers = head.teTrailers
        headStart = head.headStart - shift
        headEnd = head.headEnd - shift
        hostIndex = head.hostIndex
        upgradeIndex = head.upgradeIndex
        requestIDIndex = head.requestIDIndex
        traceparentIndex = head.traceparentIndex
        forwardedForIndex = head.forwardedForIndex
        fields = (0..<table.count).map { index in
            let entry = table[index]
            return FieldResult(nameStart: entry.nameStart - shift, nameLength: entry.nameLength,
                               valueStart: entry.valueStart - shift, valueLength: entry.valueLength,
                               kind: entry.kind.rawValue)
        }
    }
}

/// Feeds `input` into a fresh buffer in the pieces `cuts` describes (each the end of a piece;
/// `step` > 0 feeds `step` bytes at a time) and parses after each piece.
func parseResponse(_ input: UnsafeBufferPointer<UInt8>, cuts: [Int], step: Int = 0) -> HeadResult {
    let buffer = ByteBuffer(capacity: input.count + 1)
    defer { unpoison(buffer) }
    var parser = HeadParser(kind: .response, limits: fuzzLimits)
    let table = HeaderTable(capacity: fuzzLimits.maxHeaders)
    var head = MessageHead()
    var status = ParseStatus.needMore
    var fed = 0
    func feed(upTo end: Int) -> Bool {
        if end > fed {
            unpoison(buffer)
            buffer.append(input.baseAddress! + fed, count: end - fed)
            fed = end
        }
        poisonTail(buffer)
        status = parser.parse(buffer, headers: table, head: &head)
        return status == .needMore
    }
    if step > 0 {
        var end = 0
        while end < input.count {
            end = min(end + step, input.count)
            if !feed(upTo: end) { break }
        }
    } else {
        for cut in cuts where !feed(upTo: cut) { break }
    }
    if case .failed(let failure) = status {
        precondition(failure == .invalidResponse, "a response refused as \(failure), not invalidResponse")
    }
    unpoison(buffer)
    if status == .complete { checkHeadInvariants(buffer, head, table) }
    return HeadResult(status: status, head: head, table: table, origin: 0)
}

/// Parses `input` (non-empty) as a response head four ways; they must agree. Returns the result.
func checkResponseHead(_ input: UnsafeBufferPointer<UInt8>) -> HeadResult {
    let whole = parseResponse(input, cuts: [input.count])
    let bytewise = parseResponse(input, cuts: [], step: 1)
    precondition(whole == bytewise, "whole and byte-at-a-time parses disagree: \(whole.status) vs \(bytewise.status)")
    let cut = Int(input[input.count / 2]) % input.count
    let split = parseResponse(input, cuts: [cut, input.count])
    precondition(whole == split, "whole and split-at-\(cut) parses disagree: \(whole.status) vs \(split.status)")
    if input.count > 64 {
        let pieces = parseResponse(input, cuts: [], step: 7 + Int(input[0] % 32))
        precondition(whole == pieces, "whole and multi-piece parses disagree: \(whole.status) vs \(pieces.status)")
    }
    return whole
}

func checkHeadInvariants(_ buffer: ByteBuffer, _ head: MessageHead, _ table: HeaderTable) {
    let base = buffer.base
    let start = Int(head.headStart), end = Int(head.headEnd)
    precondition(start >= 0 && start < end && end <= buffer.writerIndex)
    precondition(end - start >= 16, "a head shorter than a status line and a blank line")
    precondition(base[end - 1] == 0x0A && base[end - 2] == 0x0D && base[end - 3] == 0x0A && base[end - 4] == 0x0D,
                 "head must end in CRLF CRLF")
    // "HTTP/1.x SP DDD"
    let version: StaticString = "HTTP/1."
    for offset in 0..<7 { precondition(base[start + offset] == version.utf8Start[offset], "not an HTTP/1 status line") }
    precondition(base[start + 7] == 0x30 + head.minorVersion && head.minorVersion <= 1, "minor version")
    precondition(base[start + 8] == 0x20)
    var code = 0
    for offset in 9..<12 {
        let digit = base[start + offset] &- 0x30
        precondition(digit < 10, "non-digit in the status code")
        code = code * 10 + Int(digit)
    }
    precondition(code == head.status && code >= 100 && code <= 999, "status \(head.status) vs \(code)")
    precondition(base[start + 12] == 0x20 || base[start + 12] == 0x0D, "status code longer than 3 digits")
    precondition(!(head.isChunked && head.contentLength >= 0), "chunked and Content-Length together")
    precondition(table.count <= fuzzLimits.maxHeaders)
    precondition(end - start <= fuzzLimits.maxHeaderBytes, "head over maxHeaderBytes")
    var hosts = 0
    for index in 0..<table.count {
        let entry = table[index]
        precondition(entry.nameLength > 0 && Int(entry.nameStart) > start)
        precondition(Int(entry.valueStart + entry.valueLength) <= end - 2)
        for offset in 0..<Int(entry.nameLength) { precondition(isTokenByte(base[Int(entry.nameStart) + offset])) }
        precondition(base[Int(entry.nameStart + entry.nameLength)] == UInt8(ascii: ":"), "name not followed by a colon")
        for offset in 0..<Int(entry.valueLength) {
            precondition(isFieldValueByte(base[Int(entry.valueStart) + offset]), "control byte in a field value")
        }
        if entry.valueLength > 0 {
            let first = base[Int(entry.valueStart)], last = base[Int(entry.valueStart + entry.valueLength) - 1]
            precondition(first != 0x20 && first != 0x09 && last != 0x20 && last != 0x09, "untrimmed field value")
        }
        let kind = HeaderKind.classify(base + Int(entry.nameStart), Int(entry.nameLength))
        precondition(entry.kind == kind || (entry.kind == .listedInConnection && (kind == .other || kind == .trailer)))
        if kind == .host { hosts += 1 }
        if kind == .transferEncoding { precondition(head.isChunked) }
        if kind == .contentLength {
            var value: Int64 = 0
            for offset in 0..<Int(entry.valueLength) {
                let digit = base[Int(entry.valueStart) + offset] &- 0x30
                precondition(digit < 10, "non-digit in an accepted Content-Length")
                value = value * 10 + Int64(digit)
            }
            precondition(value == head.contentLength, "Content-Length values disagree")
        }
    }
    precondition(hosts <= 1, "several Host fields accepted")
}

// MARK: chunked body

struct ChunkedResult: Equatable {
    var ended = false
    var failed = false
    var payload: [UInt8] = []
    var trailers: [[UInt8]] = []
    var restCount = 0
}

func decodeChunked(_ input: UnsafeBufferPointer<UInt8>, step: Int, consumeStep: Int) -> ChunkedResult {
    let buffer = ByteBuffer(capacity: input.count + 1)
    defer { unpoison(buffer) }
    var decoder = ChunkedDecoder()
    var result = ChunkedResult()
    var fed = 0
    while fed < input.count {
        let end = step > 0 ? min(fed + step, input.count) : input.count
        unpoison(buffer)
        buffer.append(input.baseAddress! + fed, count: end - fed)
        fed = end
        events: while true {
            poisonTail(buffer)
            let event = decoder.next(buffer)
            precondition(buffer.readerIndex <= buffer.writerIndex, "the decoder consumed more than it was given")
            switch event {
            case .needMore:
                break events
            case .data(let offset, let count):
                precondition(count > 0 && offset == buffer.readerIndex && offset + count <= buffer.writerIndex)
                let take = consumeStep > 0 ? min(count, consumeStep) : count
                result.payload.append(contentsOf: UnsafeBufferPointer(start: buffer.base + offset, count: take))
                decoder.consumeData(buffer, take)
            case .trailer(let offset, let count):
                precondition(count > 0 && count <= ChunkedDecoder.maxTrailerBytes && offset + count <= buffer.capacity)
                result.trailers.append(Array(UnsafeBufferPointer(start: buffer.base + offset, count: count)))
            case .end:
                precondition(decoder.isDone)
                result.ended = true
                result.restCount = buffer.readableBytes + input.count - fed
                return result
            case .failed:
                result.failed = true
                return result
            }
        }
    }
    return result
}

/// Decodes a chunked body three ways (they must agree) and returns the whole-buffer result.
func checkChunked(_ input: UnsafeBufferPointer<UInt8>) -> ChunkedResult {
    let whole = decodeChunked(input, step: 0, consumeStep: 0)
    let bytewise = decodeChunked(input, step: 1, consumeStep: 0)
    precondition(whole == bytewise, "chunked: whole and byte-at-a-time disagree (ended \(whole.ended)/\(bytewise.ended), failed \(whole.failed)/\(bytewise.failed))")
    let pieces = decodeChunked(input, step: 1 + Int(input[input.count / 2] % 64), consumeStep: 3)
    precondition(whole == pieces, "chunked: whole and piecewise disagree (ended \(whole.ended)/\(pieces.ended), failed \(whole.failed)/\(pieces.failed))")
    for trailer in whole.trailers {
        precondition(!trailer.contains(0x0D) && !trailer.contains(0x0A) && !trailer.contains(0), "control byte in a trailer")
    }
    precondition(whole.restCount <= input.count)
    return whole
}
