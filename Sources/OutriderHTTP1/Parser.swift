import Glibc
import OutriderCore
import OutriderHTTP

/// Why a message was refused; the proxy maps it to its local reply.
public enum ParseFailure: UInt8, Sendable, Error {
    case badRequest          // 400
    case notImplemented      // 501: a transfer-coding other than exactly "chunked"
    case uriTooLong          // 414
    case headersTooLarge     // 431
    case invalidResponse     // the upstream's message is malformed (502)

    public var replyReason: LocalReplyReason {
        switch self {
        case .badRequest: return .badRequest
        case .notImplemented: return .notImplemented
        case .uriTooLong: return .uriTooLong
        case .headersTooLarge: return .headersTooLarge
        case .invalidResponse: return .upstreamProtocol
        }
    }
}

public enum ParseStatus: Equatable, Sendable {
    case needMore
    case complete
    case failed(ParseFailure)
}

/// What the proxy needs to know about a message's head. Offsets point into the buffer the
/// head was parsed from; header details live in the `HeaderTable`.
public struct MessageHead: Sendable {
    public var headStart: Int32 = 0
    /// Offset just past the blank line that ends the head.
    public var headEnd: Int32 = 0
    public var minorVersion: UInt8 = 1

    // Request line.
    public var method: MethodKind = .get
    public var methodStart: Int32 = 0
    public var methodLength: Int32 = 0
    public var targetStart: Int32 = 0
    public var targetLength: Int32 = 0

    // Status line.
    public var status: Int = 0

    // Framing and connection management.
    public var contentLength: Int64 = -1
    public var isChunked = false
    public var connectionClose = false
    public var connectionKeepAlive = false
    public var connectionUpgrade = false
    public var expectContinue = false
    public var teTrailers = false
    /// Connection names a header other than close/keep-alive/upgrade: such headers are
    /// marked `.listedInConnection` once the head is complete.
    public var connectionListsOthers = false
    public var hostIndex: Int32 = -1
    public var upgradeIndex: Int32 = -1
    public var requestIDIndex: Int32 = -1
    public var traceparentIndex: Int32 = -1
    public var forwardedForIndex: Int32 = -1

    public init() {}

    public var keepAlive: Bool {
        minorVersion == 1 ? !connectionClose : (connectionKeepAlive && !connectionClose)
    }
}

/// Limits on a head: bytes from its first byte to the end of the blank line, and the number of
/// header fields.
public struct HeadLimits: Sendable {
    public var maxHeaderBytes: Int
    public var maxHeaders: Int
    public static let maxTargetBytes = 8192
    public init(maxHeaderBytes: Int, maxHeaders: Int) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaders = maxHeaders
    }
}

/// A resumable parser for one HTTP/1.x head (request or response). Feed it the same buffer as
/// bytes arrive; it resumes where it stopped and never copies. Lines must end in CRLF.
public struct HeadParser: Sendable {
    public enum Kind: Sendable { case request, response }
    private enum State: Sendable { case firstLine, headers, done }

    public let kind: Kind
    public var limits: HeadLimits
    private var state: State = .firstLine
    private var lineStart = 0
    private var scanOffset = 0
    private var headStart = 0
    private var beginOffset = 0
    private var began = false

    public init(kind: Kind, limits: HeadLimits) {
        self.kind = kind
        self.limits = limits
    }

    /// Starts a new head at `offset` (normally the buffer's reader index).
    public mutating func begin(at offset: Int) {
        state = .firstLine
        lineStart = offset
        scanOffset = offset
        headStart = offset
        beginOffset = offset
        began = true
    }

    public var isInProgress: Bool { began && state != .done }
    /// True once at least one byte of the head (not counting leading blank lines) was seen.
    public func hasPartialHead(_ buffer: ByteBuffer) -> Bool { began && buffer.writerIndex > headStart }

    /// Offsets shift down by `delta` after the buffer was compacted.
    public mutating func rebase(by delta: Int, head: inout MessageHead, headers: HeaderTable) {
        lineStart -= delta
        scanOffset -= delta
        headStart -= delta
        beginOffset -= delta
        let shift = Int32(delta)
        head.headStart -= shift
        head.methodStart -= shift
        head.targetStart -= shift
        headers.rebase(by: shift)
    }

    public mutating func parse(_ buffer: ByteBuffer, headers: HeaderTable, head: inout MessageHead) -> ParseStatus {
        if !began { begin(at: buffer.readerIndex) }
        let base = UnsafePointer(buffer.base)
        let end = buffer.writerIndex
        while state != .done {
            let remaining = end - scanOffset
            guard remaining > 0,
                  let found = memchr(base + scanOffset, 0x0A, remaining) else {
                scanOffset = end
                return checkIncompleteLine(base: base, end: end)
            }
            let lineFeed = UnsafePointer<UInt8>(found.assumingMemoryBound(to: UInt8.self)) - base
            // A line that runs past a limit is judged on what came before the limit, so the
            // answer is the same however the bytes were split (the first violation in byte
            // order wins).
            if lineFeed - headStart >= limits.maxHeaderBytes
                || (state == .firstLine && kind == .request && lineFeed - lineStart > HeadLimits.maxTargetBytes) {
                if let failure = lineViolation(base, lineStart, lineFeed) { return fail(failure) }
            }
            // Every line ends in CRLF: a bare LF is refused.
            guard lineFeed > lineStart, base[lineFeed - 1] == 0x0D else { return fail(.badRequest) }
            let lineEnd = lineFeed - 1
            let status: ParseStatus
            switch state {
            case .firstLine:
                if lineEnd == lineStart {
                    // RFC 9112 §2.2: ignore blank lines before the request line.
                    if kind == .request && lineFeed - beginOffset < 64 {
                        status = .needMore
                    } else {
                        status = fail(.badRequest)
                    }
                    headStart = lineFeed + 1
                } else {
                    head = MessageHead()
                    headers.reset()
                    head.headStart = Int32(lineStart)
                    headStart = lineStart
                    status = kind == .request
                        ? parseRequestLine(base, lineStart, lineEnd, &head)
                        : parseStatusLine(base, lineStart, lineEnd, &head)
                    if status == .needMore { state = .headers }
                }
            case .headers:
                if lineEnd == lineStart {
                    head.headEnd = Int32(lineFeed + 1)
                    state = .done
                    status = finishHead(base, headers: headers, head: &head)
                } else {
                    status = parseHeaderLine(base, lineStart, lineEnd, headers: headers, head: &head)
                }
            case .done:
                status = .complete
            }
            if case .failed = status { return status }
            lineStart = lineFeed + 1
            scanOffset = lineStart
            if lineStart - headStart > limits.maxHeaderBytes { return fail(kind == .request ? .headersTooLarge : .invalidResponse) }
            if status == .complete { began = false; return .complete }
        }
        began = false
        return .complete
    }

    private mutating func fail(_ failure: ParseFailure) -> ParseStatus {
        state = .done
        began = false
        if kind == .response { return .failed(.invalidResponse) }
        return .failed(failure)
    }

    /// Limits that can be judged before a line is complete.
    private mutating func checkIncompleteLine(base: UnsafePointer<UInt8>, end: Int) -> ParseStatus {
        let pending = end - lineStart
        let overHead = end - headStart > limits.maxHeaderBytes
        let overTarget = state == .firstLine && kind == .request && pending > HeadLimits.maxTargetBytes + 64
        if overHead || overTarget {
            return fail(lineViolation(base, lineStart, end) ?? (overHead ? .headersTooLarge : .uriTooLong))
        }
        return .needMore
    }

    /// The first violation, in byte order, in the line bytes `[start, end)` (complete or not):
    /// a byte that cannot appear there (400), the head passing `maxHeaderBytes` (431), the
    /// target passing 8 KiB (414). A CR is allowed only as the last byte of the range. Nil when
    /// the range holds none of these.
    private func lineViolation(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> ParseFailure? {
        let headLimit = headStart + limits.maxHeaderBytes   // first byte position over the limit
        let tooLarge: ParseFailure = kind == .request ? .headersTooLarge : .invalidResponse
        var index = start
        @inline(__always) func invalidCR(_ position: Int) -> Bool { base[position] == 0x0D && position != end - 1 }
        if state == .firstLine && kind == .request {
            // method SP target SP version
            var part = 0
            var partStart = start
            while index < end {
                if index >= headLimit { return tooLarge }
                let byte = base[index]
                if byte == 0x0D {
                    if invalidCR(index) { return .badRequest }
                    index += 1
                    continue
                }
                switch part {
                case 0:
                    if byte == 0x20 {
                        if index == partStart { return .badRequest }
                        part = 1
                        partStart = index + 1
                    } else if !isTokenByte(byte) || index - partStart >= 32 {
                        return .badRequest
                    }
                case 1:
                    if byte == 0x20 {
                        if index == partStart { return .badRequest }
                        part = 2
                        partStart = index + 1
                    } else if !isTargetByte(byte) {
                        return .badRequest
                    } else if index - partStart >= HeadLimits.maxTargetBytes {
                        return .uriTooLong
                    }
                default:
                    let offset = index - partStart
                    let expected: StaticString = "HTTP/1.x"
                    if offset >= 8 { return .badRequest }
                    if offset < 7 && byte != expected.utf8Start[offset] { return .badRequest }
                    if offset == 7 && byte != UInt8(ascii: "0") && byte != UInt8(ascii: "1") { return .badRequest }
                }
                index += 1
            }
            return nil
        }
        if state == .firstLine { return index < end && end > headLimit ? tooLarge : nil }
        // A header (or trailer) line: token ":" field-value.
        var inValue = false
        if index < end && (base[index] == 0x20 || base[index] == 0x09) { return kind == .request ? .badRequest : .invalidResponse }
        while index < end {
            if index >= headLimit { return tooLarge }
            let byte = base[index]
            if byte == 0x0D {
                if invalidCR(index) { return kind == .request ? .badRequest : .invalidResponse }
            } else if inValue {
                if !isFieldValueByte(byte) { return kind == .request ? .badRequest : .invalidResponse }
            } else if byte == UInt8(ascii: ":") {
                if index == start { return kind == .request ? .badRequest : .invalidResponse }
                inValue = true
            } else if !isTokenByte(byte) {
                return kind == .request ? .badRequest : .invalidResponse
            }
            index += 1
        }
        return nil
    }

    private mutating func parseRequestLine(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ head: inout MessageHead) -> ParseStatus {
        var index = start
        while index < end && isTokenByte(base[index]) { index += 1 }
        let methodEnd = index
        guard methodEnd > start, methodEnd - start <= 32, index < end, base[index] == 0x20 else { return fail(.badRequest) }
        index += 1
        let targetStart = index
        while index < end && isTargetByte(base[index]) { index += 1 }
        let targetEnd = index
        if targetEnd - targetStart > HeadLimits.maxTargetBytes { return fail(.uriTooLong) }
        // HTTP/0.9 (no version) and double spaces land here.
        guard targetEnd > targetStart, index < end, base[index] == 0x20 else { return fail(.badRequest) }
        index += 1
        guard end - index == 8, equalsBytes(base + index, 7, "HTTP/1.") else { return fail(.badRequest) }
        switch base[index + 7] {
        case UInt8(ascii: "1"): head.minorVersion = 1
        case UInt8(ascii: "0"): head.minorVersion = 0
        default: return fail(.badRequest)
        }
        recordRequestLine(base, methodStart: start, methodEnd: methodEnd, targetStart: targetStart, targetEnd: targetEnd, &head)
        return .needMore
    }

    private func recordRequestLine(_ base: UnsafePointer<UInt8>, methodStart: Int, methodEnd: Int, targetStart: Int, targetEnd: Int,
                                   _ head: inout MessageHead) {
        head.methodStart = Int32(methodStart)
        head.methodLength = Int32(methodEnd - methodStart)
        head.method = MethodKind.classify(base + methodStart, methodEnd - methodStart)
        head.targetStart = Int32(targetStart)
        head.targetLength = Int32(targetEnd - targetStart)
    }

    private mutating func parseStatusLine(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ head: inout MessageHead) -> ParseStatus {
        // "HTTP/1.x SP DDD [SP reason]"
        guard end - start >= 12, equalsBytes(base + start, 7, "HTTP/1.") else { return fail(.invalidResponse) }
        switch base[start + 7] {
        case UInt8(ascii: "1"): head.minorVersion = 1
        case UInt8(ascii: "0"): head.minorVersion = 0
        default: return fail(.invalidResponse)
        }
        guard base[start + 8] == 0x20 else { return fail(.invalidResponse) }
        var status = 0
        for offset in 9..<12 {
            let digit = base[start + offset] &- 0x30
            guard digit < 10 else { return fail(.invalidResponse) }
            status = status * 10 + Int(digit)
        }
        guard status >= 100 else { return fail(.invalidResponse) }
        var index = start + 12
        if index < end {
            guard base[index] == 0x20 else { return fail(.invalidResponse) }
            index += 1
            while index < end {
                guard isFieldValueByte(base[index]) else { return fail(.invalidResponse) }
                index += 1
            }
        }
        head.status = status
        return .needMore
    }

    private mutating func parseHeaderLine(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int, headers: HeaderTable, head: inout MessageHead) -> ParseStatus {
        // obs-fold (a line starting with whitespace) and whitespace before the colon are refused.
        var index = start
        while index < end && isTokenByte(base[index]) { index += 1 }
        guard index > start, index < end, base[index] == UInt8(ascii: ":") else { return fail(.badRequest) }
        let nameEnd = index
        guard let value = trimmedFieldValue(base, nameEnd + 1, end) else { return fail(.badRequest) }
        return recordField(base, start, nameEnd, value.start, value.end, kind: HeaderKind.classifyToken(base + start, nameEnd - start),
                           headers: headers, head: &head)
    }

    /// Adds a syntactically valid field to the table and gives it its meaning for the head.
    private mutating func recordField(_ base: UnsafePointer<UInt8>, _ start: Int, _ nameEnd: Int, _ valueStart: Int, _ valueEnd: Int,
                                      kind: HeaderKind, headers: HeaderTable, head: inout MessageHead) -> ParseStatus {
        guard headers.count < limits.maxHeaders else { return fail(self.kind == .request ? .headersTooLarge : .invalidResponse) }
        let entryIndex = Int32(headers.count)
        _ = headers.append(HeaderEntry(nameStart: Int32(start), nameLength: Int32(nameEnd - start),
                                       valueStart: Int32(valueStart), valueLength: Int32(valueEnd - valueStart), kind: kind))
        let value = base + valueStart
        let valueLength = valueEnd - valueStart
        switch kind {
        case .host:
            guard head.hostIndex < 0, valueLength > 0 else { return fail(.badRequest) }
            if self.kind == .request {
                // RFC 9112 §3.2: uri-host [ ":" port ] — no spaces, slashes, "@", "?" or "#".
                for offset in 0..<valueLength where !isHostByte(value[offset]) { return fail(.badRequest) }
            }
            head.hostIndex = entryIndex
        case .contentLength:
            guard valueLength > 0, valueLength <= 18 else { return fail(.badRequest) }
            var length: Int64 = 0
            for offset in 0..<valueLength {
                let digit = value[offset] &- 0x30
                guard digit < 10 else { return fail(.badRequest) }
                length = length * 10 + Int64(digit)
            }
            guard head.contentLength < 0 || head.contentLength == length else { return fail(.badRequest) }
            head.contentLength = length
        case .transferEncoding:
            guard !head.isChunked, equalsLowercase(value, valueLength, "chunked") else { return fail(.notImplemented) }
            head.isChunked = true
        case .connection:
            // The usual values first, without splitting a list.
            if valueLength == 5 && equalsLowercase(value, 5, "close") {
                head.connectionClose = true
                break
            }
            if valueLength == 10 && equalsLowercase(value, 10, "keep-alive") {
                head.connectionKeepAlive = true
                break
            }
            forEachListItem(value, valueLength) { item, count in
                if equalsLowercase(item, count, "close") { head.connectionClose = true }
                else if equalsLowercase(item, count, "keep-alive") { head.connectionKeepAlive = true }
                else if equalsLowercase(item, count, "upgrade") { head.connectionUpgrade = true }
                else if count > 0 { head.connectionListsOthers = true }
            }
        case .te:
            forEachListItem(value, valueLength) { item, count in
                if equalsLowercase(item, count, "trailers") { head.teTrailers = true }
            }
        case .expect:
            if equalsLowercase(value, valueLength, "100-continue") { head.expectContinue = true }
        case .upgrade: head.upgradeIndex = entryIndex
        case .xRequestID: if head.requestIDIndex < 0 { head.requestIDIndex = entryIndex }
        case .traceparent: if head.traceparentIndex < 0 { head.traceparentIndex = entryIndex }
        case .xForwardedFor: if head.forwardedForIndex < 0 { head.forwardedForIndex = entryIndex }
        default: break
        }
        return .needMore
    }

    // MARK: heads the caller writes

    /// Starts a request head that the caller writes into a buffer itself (an HTTP/2 request
    /// carried as HTTP/1.1): the request line and each field are recorded as they are written,
    /// with the checks and meanings `parse` gives them, so nothing scans the text again.
    /// Names must be lower-case tokens already (as HTTP/2 requires).
    public mutating func beginWritten(at offset: Int, headers: HeaderTable, head: inout MessageHead) {
        head = MessageHead()
        headers.reset()
        head.headStart = Int32(offset)
        headStart = offset
        state = .headers
        began = false
    }

    /// The request line `method SP target SP HTTP/1.1`, written at the given offsets.
    public mutating func recordWrittenRequestLine(_ base: UnsafePointer<UInt8>, methodStart: Int, methodLength: Int,
                                                  targetStart: Int, targetLength: Int, head: inout MessageHead) -> ParseStatus {
        guard methodLength > 0, methodLength <= 32 else { return fail(.badRequest) }
        for index in methodStart..<(methodStart + methodLength) where !isTokenByte(base[index]) { return fail(.badRequest) }
        guard targetLength > 0 else { return fail(.badRequest) }
        if targetLength > HeadLimits.maxTargetBytes { return fail(.uriTooLong) }
        for index in targetStart..<(targetStart + targetLength) where !isTargetByte(base[index]) { return fail(.badRequest) }
        head.minorVersion = 1
        recordRequestLine(base, methodStart: methodStart, methodEnd: methodStart + methodLength, targetStart: targetStart,
                          targetEnd: targetStart + targetLength, &head)
        return .needMore
    }

    /// A field `name: value` written at the given offsets; `kind` is the name's classification.
    public mutating func recordWrittenField(_ base: UnsafePointer<UInt8>, nameStart: Int, nameLength: Int, valueStart: Int,
                                            valueLength: Int, kind: HeaderKind, headers: HeaderTable, head: inout MessageHead) -> ParseStatus {
        guard let value = trimmedFieldValue(base, valueStart, valueStart + valueLength) else { return fail(.badRequest) }
        return recordField(base, nameStart, nameStart + nameLength, value.start, value.end, kind: kind, headers: headers, head: &head)
    }

    /// The head ends just before `headEnd` (after its blank line).
    public mutating func finishWritten(_ base: UnsafePointer<UInt8>, headEnd: Int, headers: HeaderTable, head: inout MessageHead) -> ParseStatus {
        state = .done
        head.headEnd = Int32(headEnd)
        if headEnd - headStart > limits.maxHeaderBytes { return fail(.headersTooLarge) }
        return finishHead(base, headers: headers, head: &head)
    }

    private mutating func finishHead(_ base: UnsafePointer<UInt8>, headers: HeaderTable, head: inout MessageHead) -> ParseStatus {
        if head.isChunked && head.contentLength >= 0 { return fail(.badRequest) }
        if kind == .request {
            if head.minorVersion == 1 && head.hostIndex < 0 { return fail(.badRequest) }
            if head.minorVersion == 0 && head.isChunked { return fail(.badRequest) }
        }
        if head.connectionListsOthers { markConnectionListed(base, headers: headers) }
        return .complete
    }

    /// Marks headers named in `Connection` (RFC 9110 §7.6.1) so they are not forwarded.
    private func markConnectionListed(_ base: UnsafePointer<UInt8>, headers: HeaderTable) {
        for connectionIndex in 0..<headers.count where headers[connectionIndex].kind == .connection {
            let entry = headers[connectionIndex]
            forEachListItem(base + Int(entry.valueStart), Int(entry.valueLength)) { item, count in
                for index in 0..<headers.count {
                    let candidate = headers[index]
                    guard candidate.kind == .other || candidate.kind == .trailer, Int(candidate.nameLength) == count else { continue }
                    var same = true
                    for offset in 0..<count where asciiLowercase(base[Int(candidate.nameStart) + offset]) != asciiLowercase(item[offset]) {
                        same = false
                        break
                    }
                    if same { headers[index].kind = .listedInConnection }
                }
            }
        }
    }
}

/// The field value in `[start, end)` without the whitespace around it; nil when one of its bytes
/// cannot be in a field value.
@inline(__always)
func trimmedFieldValue(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> (start: Int, end: Int)? {
    var valueStart = start
    while valueStart < end && (base[valueStart] == 0x20 || base[valueStart] == 0x09) { valueStart += 1 }
    // Eight bytes at a time while no control byte is in sight (HTAB, rare inside a value, and
    // anything invalid drop to the byte loop, which decides).
    var index = valueStart
    while end - index >= 8 {
        if hasControlByte(UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)) { break }
        index += 8
    }
    while index < end {
        guard isFieldValueByte(base[index]) else { return nil }
        index += 1
    }
    var valueEnd = end
    while valueEnd > valueStart && (base[valueEnd - 1] == 0x20 || base[valueEnd - 1] == 0x09) { valueEnd -= 1 }
    return (valueStart, valueEnd)
}

/// Calls `body` for each comma-separated item with surrounding whitespace trimmed.
@inline(__always)
func forEachListItem(_ value: UnsafePointer<UInt8>, _ count: Int, _ body: (UnsafePointer<UInt8>, Int) -> Void) {
    var index = 0
    while index <= count {
        var itemStart = index
        while index < count && value[index] != UInt8(ascii: ",") { index += 1 }
        var itemEnd = index
        while itemStart < itemEnd && (value[itemStart] == 0x20 || value[itemStart] == 0x09) { itemStart += 1 }
        while itemEnd > itemStart && (value[itemEnd - 1] == 0x20 || value[itemEnd - 1] == 0x09) { itemEnd -= 1 }
        if itemEnd > itemStart { body(value + itemStart, itemEnd - itemStart) }
        index += 1
    }
}

/// Bytes of `uri-host [":" port]`: unreserved, sub-delims, "%", ":" and the IP-literal brackets
/// (a bit per ASCII byte, as `isTokenByte`).
@inlinable @inline(__always)
public func isHostByte(_ byte: UInt8) -> Bool {
    let word: UInt64
    switch byte >> 6 {
    case 0: word = 0x2FFF_7FF2_0000_0000
    case 1: word = 0x47FF_FFFE_AFFF_FFFE
    default: word = 0
    }
    return (word >> UInt64(byte & 63)) & 1 == 1
}

/// Whether any of the eight bytes of `word` is a control byte (below 0x20, or DEL): exact for
/// the word as a whole (the classic has-less-than and has-zero tests, which may misreport
/// which byte, never whether one exists).
@inline(__always)
func hasControlByte(_ word: UInt64) -> Bool {
    let ones: UInt64 = 0x0101_0101_0101_0101
    let highs: UInt64 = 0x8080_8080_8080_8080
    let below0x20 = (word &- ones &* 0x20) & ~word & highs
    let delta = word ^ (ones &* 0x7F)
    let isDEL = (delta &- ones) & ~delta & highs
    return (below0x20 | isDEL) != 0
}
