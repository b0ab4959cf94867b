import Testing
import OutriderCore
import OutriderHTTP
@testable import OutriderHTTP1

// Shared harness: every codec is fed the same bytes in one buffer, one byte at a time, and
// split in two at every index, and the observable results are compared (DESIGN §6).

let defaultLimits = HeadLimits(maxHeaderBytes: 65536, maxHeaders: 100)

/// The bytes of a string; write line ends explicitly as "\r\n".
func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// How the bytes reach the codec.
enum Feed: CustomStringConvertible, Sendable {
    case whole
    case byteAtATime
    case split(Int)

    func chunks(_ count: Int) -> [Range<Int>] {
        switch self {
        case .whole: return [0..<count]
        case .byteAtATime: return (0..<count).map { $0..<($0 + 1) }
        case .split(let index): return [0..<index, index..<count]
        }
    }

    var description: String {
        switch self {
        case .whole: return "whole"
        case .byteAtATime: return "byte-at-a-time"
        case .split(let index): return "split at \(index)"
        }
    }

    /// Whole, byte-at-a-time, and every two-way split (sampled for inputs over `maxSplits`).
    static func all(_ count: Int, maxSplits: Int = 2048) -> [Feed] {
        var feeds: [Feed] = [.whole, .byteAtATime]
        if count <= maxSplits {
            feeds += (1..<max(count, 1)).map { Feed.split($0) }
        } else {
            var points = Set(stride(from: 1, to: count, by: max(1, count / 256)))
            for edge in [1, 2, count - 2, count - 1] where edge > 0 && edge < count { points.insert(edge) }
            feeds += points.sorted().map { Feed.split($0) }
        }
        return feeds
    }
}

struct HeaderSnapshot: Equatable, CustomStringConvertible {
    var name: String
    var value: String
    var kind: HeaderKind
    var nameStart: Int32
    var valueStart: Int32
    var description: String { "\(name): \(value) [\(kind)]" }
}

/// Everything observable about a parsed head.
struct HeadSnapshot: Equatable, CustomStringConvertible {
    var status: ParseStatus
    var method: MethodKind?
    var methodText: String?
    var target: String?
    var minorVersion: UInt8?
    var statusCode: Int?
    var headers: [HeaderSnapshot] = []
    var contentLength: Int64?
    var isChunked: Bool?
    var keepAlive: Bool?
    var connectionClose: Bool?
    var connectionUpgrade: Bool?
    var expectContinue: Bool?
    var teTrailers: Bool?
    var headStart: Int32?
    var headEnd: Int32?
    var hostIndex: Int32?
    var upgradeIndex: Int32?
    var requestIDIndex: Int32?
    var traceparentIndex: Int32?
    var forwardedForIndex: Int32?

    var description: String {
        guard status == .complete else { return "\(status)" }
        var text = "complete \(methodText ?? "-") \(target ?? "-") HTTP/1.\(minorVersion ?? 9) status=\(statusCode ?? 0)"
        text += " cl=\(contentLength ?? -2) chunked=\(isChunked ?? false) keepAlive=\(keepAlive ?? false)"
        text += " head=\(headStart ?? -1)..<\(headEnd ?? -1) headers=\(headers)"
        return text
    }

    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

func text(_ buffer: ByteBuffer, _ start: Int32, _ count: Int32) -> String {
    String(decoding: UnsafeBufferPointer(start: buffer.base + Int(start), count: Int(count)), as: UTF8.self)
}

/// Parses `input` fed as `feed` and returns what the parser reported.
func parseHead(_ input: [UInt8], kind: HeadParser.Kind = .request, limits: HeadLimits = defaultLimits,
               feed: Feed = .whole) -> HeadSnapshot {
    let buffer = ByteBuffer(capacity: input.count + 16)
    var parser = HeadParser(kind: kind, limits: limits)
    let table = HeaderTable(capacity: max(limits.maxHeaders, 1))
    var head = MessageHead()
    var status = ParseStatus.needMore
    input.withUnsafeBufferPointer { source in
        for chunk in feed.chunks(input.count) {
            if !chunk.isEmpty { buffer.append(source.baseAddress! + chunk.lowerBound, count: chunk.count) }
            status = parser.parse(buffer, headers: table, head: &head)
            if status != .needMore { break }
        }
    }
    return snapshotOf(status, buffer: buffer, table: table, head: head, kind: kind)
}

/// What a parse (or a written head) left in `head` and `table`.
func snapshotOf(_ status: ParseStatus, buffer: ByteBuffer, table: HeaderTable, head: MessageHead,
                kind: HeadParser.Kind = .request) -> HeadSnapshot {
    guard status == .complete else { return HeadSnapshot(status: status) }
    var snapshot = HeadSnapshot(status: status)
    if kind == .request {
        snapshot.method = head.method
        snapshot.methodText = text(buffer, head.methodStart, head.methodLength)
        snapshot.target = text(buffer, head.targetStart, head.targetLength)
    } else {
        snapshot.statusCode = head.status
    }
    snapshot.minorVersion = head.minorVersion
    snapshot.headers = (0..<table.count).map { index in
        let entry = table[index]
        return HeaderSnapshot(name: text(buffer, entry.nameStart, entry.nameLength),
                              value: text(buffer, entry.valueStart, entry.valueLength),
                              kind: entry.kind, nameStart: entry.nameStart, valueStart: entry.valueStart)
    }
    snapshot.contentLength = head.contentLength
    snapshot.isChunked = head.isChunked
    snapshot.keepAlive = head.keepAlive
    snapshot.connectionClose = head.connectionClose
    snapshot.connectionUpgrade = head.connectionUpgrade
    snapshot.expectContinue = head.expectContinue
    snapshot.teTrailers = head.teTrailers
    snapshot.headStart = head.headStart
    snapshot.headEnd = head.headEnd
    snapshot.hostIndex = head.hostIndex
    snapshot.upgradeIndex = head.upgradeIndex
    snapshot.requestIDIndex = head.requestIDIndex
    snapshot.traceparentIndex = head.traceparentIndex
    snapshot.forwardedForIndex = head.forwardedForIndex
    return snapshot
}

/// Parses `input` every way and checks that all agree with the whole-buffer parse; returns it.
@discardableResult
func parseEveryWay(_ input: [UInt8], kind: HeadParser.Kind = .request, limits: HeadLimits = defaultLimits,
                   maxSplits: Int = 2048, sourceLocation: SourceLocation = #_sourceLocation) -> HeadSnapshot {
    let reference = parseHead(input, kind: kind, limits: limits, feed: .whole)
    var mismatches = 0
    for feed in Feed.all(input.count, maxSplits: maxSplits).dropFirst() {
        let other = parseHead(input, kind: kind, limits: limits, feed: feed)
        if other != reference {
            mismatches += 1
            if mismatches <= 3 {
                Issue.record("\(feed) gave \(other), whole gave \(reference)", sourceLocation: sourceLocation)
            }
        }
    }
    if mismatches > 3 { Issue.record("\(mismatches) feeds disagreed in all", sourceLocation: sourceLocation) }
    return reference
}

// MARK: chunked decoder

struct ChunkedOutcome: Equatable, CustomStringConvertible {
    enum End: Equatable { case end, failed, needMore }
    var end: End
    var payload: [UInt8]
    var trailers: [String]
    /// Bytes after the body (pipelined data), when it ended.
    var rest: [UInt8]

    var description: String {
        "\(end) payload=\(String(decoding: payload, as: UTF8.self).debugDescription) trailers=\(trailers) rest=\(rest.count)B"
    }
}

/// Decodes `input` fed as `feed`. `consumeStep` > 0 consumes data events that many bytes at a time.
func decodeChunked(_ input: [UInt8], feed: Feed = .whole, consumeStep: Int = 0) -> ChunkedOutcome {
    let buffer = ByteBuffer(capacity: input.count + 16)
    var decoder = ChunkedDecoder()
    var outcome = ChunkedOutcome(end: .needMore, payload: [], trailers: [], rest: [])
    let chunks = feed.chunks(input.count)
    input.withUnsafeBufferPointer { source in
        for (position, chunk) in chunks.enumerated() {
            if !chunk.isEmpty { buffer.append(source.baseAddress! + chunk.lowerBound, count: chunk.count) }
            events: while true {
                switch decoder.next(buffer) {
                case .needMore:
                    break events
                case .data(let offset, let count):
                    let take = consumeStep > 0 ? min(count, consumeStep) : count
                    outcome.payload += UnsafeBufferPointer(start: buffer.base + offset, count: take)
                    decoder.consumeData(buffer, take)
                case .trailer(let offset, let count):
                    outcome.trailers.append(String(decoding: UnsafeBufferPointer(start: buffer.base + offset, count: count), as: UTF8.self))
                case .end:
                    outcome.end = .end
                    outcome.rest = buffer.readableArray()
                    for later in chunks[(position + 1)...] { outcome.rest += input[later] }
                    return
                case .failed:
                    outcome.end = .failed
                    return
                }
            }
        }
    }
    return outcome
}

@discardableResult
func decodeEveryWay(_ input: [UInt8], maxSplits: Int = 2048, sourceLocation: SourceLocation = #_sourceLocation) -> ChunkedOutcome {
    let reference = decodeChunked(input)
    var feeds = Feed.all(input.count, maxSplits: maxSplits).map { ($0, 0) }
    feeds.append((.whole, 1))
    feeds.append((.byteAtATime, 3))
    var mismatches = 0
    for (feed, step) in feeds.dropFirst() {
        let other = decodeChunked(input, feed: feed, consumeStep: step)
        if other != reference {
            mismatches += 1
            if mismatches <= 3 {
                Issue.record("\(feed) (consume step \(step)) gave \(other), whole gave \(reference)", sourceLocation: sourceLocation)
            }
        }
    }
    if mismatches > 3 { Issue.record("\(mismatches) feeds disagreed in all", sourceLocation: sourceLocation) }
    return reference
}

// MARK: path normalizer

struct Normalized: Equatable, CustomStringConvertible {
    var path: String
    var query: String
    var description: String { path + query }
}

func normalize(_ target: String) -> Normalized? {
    let input = Array(target.utf8)
    let output = ByteBuffer(capacity: input.count + 1)
    let result = input.withUnsafeBufferPointer { source in
        PathNormalizer.normalize(source.baseAddress ?? UnsafePointer(bitPattern: 1)!, input.count, into: output)
    }
    guard let result else {
        #expect(output.writerIndex == 0, "a refused target must not advance the output")
        return nil
    }
    #expect(output.writerIndex == result.pathLength + result.queryLength)
    let written = output.readableArray()
    return Normalized(path: String(decoding: written[0..<result.pathLength], as: UTF8.self),
                      query: String(decoding: written[result.pathLength...], as: UTF8.self))
}
