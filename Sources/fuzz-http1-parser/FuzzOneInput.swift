import CFuzzerShim
import OutriderCore
import OutriderHTTP
import OutriderHTTP1

// libFuzzer target for the HTTP/1 request codecs (DESIGN §5–6). Each input is parsed as a
// request head three ways — in one buffer, one byte at a time, and split in two — and the
// results must agree exactly. When the head is complete, the bytes after it go through the
// chunked decoder (whole, byte-at-a-time, split, piecewise consumption: must agree), the target
// through the path normalizer (invariants, idempotence), and a pipelined second head is parsed
// by the same parser and must match a fresh parse. Any disagreement is a `precondition`
// failure: a crash, which libFuzzer saves as a finding.
//
// This lives outside main.swift on purpose: closures in main.swift top-level code are
// main-actor isolated and trap when C calls them (DESIGN §5).

/// Below the 8 KiB + 64 first-line limit on purpose, so the head-size checks are reachable
/// with inputs under -max_len=16384; few fields, so the field-count check is reachable too.
let fuzzLimits = HeadLimits(maxHeaderBytes: 12288, maxHeaders: 32)

/// Hands the command line to libFuzzer (or to CFuzzerShim's replaying fallback). The callback
/// is referenced here, in the file that defines it: referencing a `@_cdecl` function as a C
/// function pointer from another file emits a second definition of its symbol.
func runFuzzDriver() -> Int32 {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    checkRequestHead(input)
    if input[0] == UInt8(ascii: "/") { checkNormalizer(input) }
    return 0
}

// MARK: request head

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
    var method: UInt8 = 0
    var methodStart: Int32 = 0
    var methodLength: Int32 = 0
    var targetStart: Int32 = 0
    var targetLength: Int32 = 0
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
        method = head.method.rawValue
        methodStart = head.methodStart - shift
        methodLength = head.methodLength
        targetStart = head.targetStart - shift
        targetLength = head.targetLength
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
func parseRequest(_ input: UnsafeBufferPointer<UInt8>, cuts: [Int], step: Int = 0) -> HeadResult {
    let buffer = ByteBuffer(capacity: input.count + 1)
    var parser = HeadParser(kind: .request, limits: fuzzLimits)
    let table = HeaderTable(capacity: fuzzLimits.maxHeaders)
    var head = MessageHead()
    var status = ParseStatus.needMore
    var fed = 0
    func feed(upTo end: Int) -> Bool {
        if end > fed {
            buffer.append(input.baseAddress! + fed, count: end - fed)
            fed = end
        }
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
    if status == .complete { checkHeadInvariants(buffer, head, table) }
    return HeadResult(status: status, head: head, table: table, origin: 0)
}

func checkRequestHead(_ input: UnsafeBufferPointer<UInt8>) {
    let whole = parseRequest(input, cuts: [input.count])
    let bytewise = parseRequest(input, cuts: [], step: 1)
    precondition(whole == bytewise, "whole and byte-at-a-time parses disagree: \(whole.status) vs \(bytewise.status)")
    let cut = Int(input[input.count / 2]) % input.count
    let split = parseRequest(input, cuts: [cut, input.count])
    precondition(whole == split, "whole and split-at-\(cut) parses disagree: \(whole.status) vs \(split.status)")
    if input.count > 64 {
        let chunked = parseRequest(input, cuts: [], step: 7 + Int(input[0] % 32))
        precondition(whole == chunked, "whole and multi-piece parses disagree: \(whole.status) vs \(chunked.status)")
    }
    guard whole.status == .complete else { return }

    let headEnd = Int(whole.headEnd)
    precondition(headEnd > 0 && headEnd <= input.count)
    let rest = UnsafeBufferPointer(rebasing: input[headEnd...])
    if !rest.isEmpty { checkChunked(rest) }

    // The target through the normalizer, as the proxy does for origin-form targets.
    let target = UnsafeBufferPointer(rebasing: input[Int(whole.targetStart)..<Int(whole.targetStart + whole.targetLength)])
    if target[0] == UInt8(ascii: "/") { checkNormalizer(target) }

    // Pipelining: skip a Content-Length body and parse the next head with the same parser.
    if !whole.isChunked, whole.contentLength >= 0, whole.contentLength < Int64(rest.count) {
        checkPipelined(input, next: headEnd + Int(whole.contentLength))
    }
}

func checkHeadInvariants(_ buffer: ByteBuffer, _ head: MessageHead, _ table: HeaderTable) {
    let base = buffer.base
    precondition(head.headStart >= 0 && head.headStart < head.headEnd && Int(head.headEnd) <= buffer.writerIndex)
    precondition(base[Int(head.headEnd) - 1] == 0x0A && base[Int(head.headEnd) - 2] == 0x0D
        && base[Int(head.headEnd) - 3] == 0x0A && base[Int(head.headEnd) - 4] == 0x0D, "head must end in CRLF CRLF")
    precondition(head.methodLength > 0 && head.methodLength <= 32)
    for offset in 0..<Int(head.methodLength) { precondition(isTokenByte(base[Int(head.methodStart) + offset])) }
    precondition(head.targetLength > 0 && Int(head.targetLength) <= HeadLimits.maxTargetBytes)
    for offset in 0..<Int(head.targetLength) { precondition(isTargetByte(base[Int(head.targetStart) + offset])) }
    precondition(head.minorVersion <= 1)
    precondition(!(head.isChunked && head.contentLength >= 0), "chunked and Content-Length together")
    precondition(head.minorVersion == 0 || head.hostIndex >= 0, "HTTP/1.1 without Host")
    precondition(!(head.minorVersion == 0 && head.isChunked), "chunked HTTP/1.0 request")
    precondition(table.count <= fuzzLimits.maxHeaders)
    var hosts = 0
    for index in 0..<table.count {
        let entry = table[index]
        precondition(entry.nameLength > 0 && entry.nameStart >= head.headStart)
        precondition(Int(entry.valueStart + entry.valueLength) <= Int(head.headEnd) - 2)
        for offset in 0..<Int(entry.nameLength) { precondition(isTokenByte(base[Int(entry.nameStart) + offset])) }
        for offset in 0..<Int(entry.valueLength) {
            precondition(isFieldValueByte(base[Int(entry.valueStart) + offset]), "control byte in a field value")
        }
        if entry.valueLength > 0 {
            let first = base[Int(entry.valueStart)], last = base[Int(entry.valueStart + entry.valueLength) - 1]
            precondition(first != 0x20 && first != 0x09 && last != 0x20 && last != 0x09, "untrimmed field value")
        }
        let kind = HeaderKind.classify(base + Int(entry.nameStart), Int(entry.nameLength))
        precondition(entry.kind == kind || (entry.kind == .listedInConnection && (kind == .other || kind == .trailer)))
        if kind == .host { hosts += 1; precondition(entry.valueLength > 0, "empty Host") }
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

func checkPipelined(_ input: UnsafeBufferPointer<UInt8>, next: Int) {
    let buffer = ByteBuffer(capacity: input.count + 1)
    buffer.append(input.baseAddress!, count: input.count)
    var parser = HeadParser(kind: .request, limits: fuzzLimits)
    let table = HeaderTable(capacity: fuzzLimits.maxHeaders)
    var head = MessageHead()
    precondition(parser.parse(buffer, headers: table, head: &head) == .complete)
    buffer.consume(next)
    precondition(buffer.readerIndex == next)
    let status = parser.parse(buffer, headers: table, head: &head)
    let reused = HeadResult(status: status, head: head, table: table, origin: next)
    let fresh = parseRequest(UnsafeBufferPointer(rebasing: input[next...]), cuts: [input.count - next])
    precondition(reused == fresh, "a pipelined head parses differently from the same bytes alone: \(reused.status) vs \(fresh.status)")
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
    var decoder = ChunkedDecoder()
    var result = ChunkedResult()
    var fed = 0
    while fed < input.count {
        let end = step > 0 ? min(fed + step, input.count) : input.count
        buffer.append(input.baseAddress! + fed, count: end - fed)
        fed = end
        events: while true {
            switch decoder.next(buffer) {
            case .needMore:
                break events
            case .data(let offset, let count):
                precondition(count > 0 && offset == buffer.readerIndex && offset + count <= buffer.writerIndex)
                let take = consumeStep > 0 ? min(count, consumeStep) : count
                result.payload.append(contentsOf: UnsafeBufferPointer(start: buffer.base + offset, count: take))
                decoder.consumeData(buffer, take)
            case .trailer(let offset, let count):
                precondition(count > 0 && count <= ChunkedDecoder.maxTrailerBytes)
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

func checkChunked(_ input: UnsafeBufferPointer<UInt8>) {
    let whole = decodeChunked(input, step: 0, consumeStep: 0)
    let bytewise = decodeChunked(input, step: 1, consumeStep: 0)
    precondition(whole == bytewise, "chunked: whole and byte-at-a-time disagree (ended \(whole.ended)/\(bytewise.ended), failed \(whole.failed)/\(bytewise.failed))")
    let pieces = decodeChunked(input, step: 1 + Int(input[input.count / 2] % 64), consumeStep: 3)
    precondition(whole == pieces, "chunked: whole and piecewise disagree (ended \(whole.ended)/\(pieces.ended), failed \(whole.failed)/\(pieces.failed))")
    for trailer in whole.trailers {
        precondition(!trailer.contains(0x0D) && !trailer.contains(0x0A) && !trailer.contains(0), "control byte in a trailer")
    }
}

// MARK: path normalizer

func normalized(_ target: UnsafeBufferPointer<UInt8>) -> (path: [UInt8], query: [UInt8])? {
    let output = ByteBuffer(capacity: target.count + 1)
    guard let result = PathNormalizer.normalize(target.baseAddress!, target.count, into: output) else {
        precondition(output.writerIndex == 0, "a refused target advanced the output")
        return nil
    }
    precondition(output.writerIndex == result.pathLength + result.queryLength)
    precondition(output.writerIndex <= target.count, "normalizing lengthened the target")
    let written = output.readableArray()
    return (Array(written[0..<result.pathLength]), Array(written[result.pathLength...]))
}

func checkNormalizer(_ target: UnsafeBufferPointer<UInt8>) {
    guard let (path, query) = normalized(target) else { return }
    // The query is copied as it came.
    let questionMark = target.firstIndex(of: UInt8(ascii: "?"))
    if let questionMark {
        precondition(query == Array(target[questionMark...]), "query changed")
    } else {
        precondition(query.isEmpty)
    }
    // The path is clean: starts with "/", no empty, "." or ".." segments, no "\" or "#",
    // escapes are upper-case, neither "/" nor "\" nor unreserved.
    precondition(path.first == UInt8(ascii: "/"))
    var segmentStart = 1
    var index = 1
    while index <= path.count {
        if index == path.count || path[index] == UInt8(ascii: "/") {
            let segment = path[segmentStart..<index]
            precondition(!segment.isEmpty || index == path.count, "empty segment")
            precondition(!segment.elementsEqual([0x2E]) && !segment.elementsEqual([0x2E, 0x2E]), "dot segment left")
            segmentStart = index + 1
        }
        index += 1
    }
    for (position, byte) in path.enumerated() {
        precondition(byte != UInt8(ascii: "\\") && byte != UInt8(ascii: "#") && byte != UInt8(ascii: "?"))
        if byte == UInt8(ascii: "%") {
            precondition(position + 2 < path.count, "truncated escape")
            let high = path[position + 1], low = path[position + 2]
            let hex: (UInt8) -> UInt8? = { digit in
                switch digit {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - 0x30
                case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - 0x37
                default: return nil
                }
            }
            guard let highValue = hex(high), let lowValue = hex(low) else { preconditionFailure("escape not upper-case hex") }
            let decoded = highValue << 4 | lowValue
            precondition(decoded != UInt8(ascii: "/") && decoded != UInt8(ascii: "\\"), "encoded slash passed")
            let unreserved = (decoded >= 0x41 && decoded <= 0x5A) || (decoded >= 0x61 && decoded <= 0x7A)
                || (decoded >= 0x30 && decoded <= 0x39) || decoded == 0x2D || decoded == 0x2E || decoded == 0x5F || decoded == 0x7E
            precondition(!unreserved, "unreserved character left encoded")
        }
    }
    // Idempotent.
    let again = (path + query).withUnsafeBufferPointer { normalized($0) }
    precondition(again != nil && again!.path == path && again!.query == query, "normalizing twice changes the result")
}
