import OutriderCore
import OutriderHTTP1

/// How a message body is delimited on the wire.
enum BodyFraming: Equatable {
    case none
    case length(Int64)
    case chunked
    case untilClose
}

/// Moves one message body from an input buffer to an output buffer, re-framing it: what the
/// far side receives is always serialized by us (chunk sizes re-written, extensions dropped),
/// never the sender's raw framing.
struct BodyPump {
    enum Outcome: Equatable {
        case done
        case needInput
        case outputFull
        case failed
    }

    private(set) var input: BodyFraming = .none
    /// Re-encode as chunked (otherwise the bytes go out raw: content-length or until close).
    private(set) var chunkedOutput = false
    private var remaining: Int64 = 0
    private var decoder = ChunkedDecoder()
    private var wroteLastChunk = false
    private(set) var isDone = true
    /// Body bytes taken from the input (payload only, no framing).
    private(set) var transferred: Int64 = 0
    /// The last `.failed` was a framing error in the input (a bad chunk line), not an input
    /// that ended early: an upstream's invalid answer rather than a reset.
    private(set) var malformed = false

    /// Bytes a length-delimited body relayed without re-encoding still needs; 0 otherwise.
    var directRemaining: Int64 {
        guard !isDone, !chunkedOutput, case .length = input else { return 0 }
        return remaining
    }

    /// Counts body bytes that went straight from the sender's socket to the output buffer.
    mutating func advanceDirect(_ count: Int64) {
        remaining -= count
        transferred += count
        if remaining == 0 { isDone = true }
    }

    /// Room kept for a chunk-size line, a trailer line and the final CRLFs.
    private static let framingReserve = ChunkedDecoder.maxLineBytes + 64

    mutating func start(input: BodyFraming, chunkedOutput: Bool) {
        self.input = input
        self.chunkedOutput = chunkedOutput
        decoder = ChunkedDecoder()
        wroteLastChunk = false
        transferred = 0
        malformed = false
        switch input {
        case .none: isDone = true
        case .length(let count): remaining = count; isDone = count == 0
        case .chunked, .untilClose: isDone = false
        }
    }

    /// Pumps what is there. `inputClosed`: the sender closed (ends an until-close body).
    mutating func pump(from source: ByteBuffer?, to output: ByteBuffer, inputClosed: Bool) -> Outcome {
        if isDone { return .done }
        switch input {
        case .none:
            isDone = true
            return .done
        case .length:
            guard let source, source.readableBytes > 0 else { return inputClosed ? .failed : .needInput }
            let count = Int(min(Int64(source.readableBytes), remaining, Int64(output.writableBytes)))
            if count == 0 { return .outputFull }
            output.append(source.readPointer, count: count)
            source.consume(count)
            remaining -= Int64(count)
            transferred += Int64(count)
            if remaining == 0 { isDone = true; return .done }
            return source.readableBytes > 0 ? .outputFull : .needInput
        case .untilClose:
            if let source, source.readableBytes > 0 {
                let taken = copyPiece(source, source.readerIndex, source.readableBytes, output)
                source.consume(taken)
                if source.readableBytes > 0 { return .outputFull }
            }
            if inputClosed {
                if chunkedOutput {
                    guard output.writableBytes >= 5 else { return .outputFull }
                    output.append("0\r\n\r\n")
                }
                isDone = true
                return .done
            }
            return .needInput
        case .chunked:
            guard let source else { return inputClosed ? .failed : .needInput }
            while true {
                if output.writableBytes < Self.framingReserve { return .outputFull }
                switch decoder.next(source) {
                case .needMore:
                    return inputClosed ? .failed : .needInput
                case .failed:
                    malformed = true
                    return .failed
                case .data(let offset, let count):
                    let taken = copyPiece(source, offset, count, output)
                    if taken == 0 { return .outputFull }
                    decoder.consumeData(source, taken)
                case .trailer(let offset, let count):
                    if chunkedOutput {
                        if !wroteLastChunk { output.append("0\r\n"); wroteLastChunk = true }
                        output.append(source.base + offset, count: count)
                        output.append("\r\n")
                    }
                case .end:
                    if chunkedOutput {
                        if !wroteLastChunk { output.append("0\r\n"); wroteLastChunk = true }
                        output.append("\r\n")
                    }
                    isDone = true
                    return .done
                }
            }
        }
    }

    /// Copies up to `count` payload bytes at `offset`, framed as a chunk when re-encoding;
    /// returns how many it copied (0: no room). The caller consumes them from the source.
    private mutating func copyPiece(_ source: ByteBuffer, _ offset: Int, _ count: Int, _ output: ByteBuffer) -> Int {
        var room = output.writableBytes
        if chunkedOutput { room -= 24 }
        let take = min(count, room)
        if take <= 0 { return 0 }
        if chunkedOutput {
            output.appendHex(UInt64(take))
            output.append("\r\n")
        }
        output.append(source.base + offset, count: take)
        if chunkedOutput { output.append("\r\n") }
        transferred += Int64(take)
        return take
    }
}
