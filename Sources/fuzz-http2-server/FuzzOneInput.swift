import CFuzzerShim
import OutriderCore
import OutriderHTTP
import OutriderHTTP2

// libFuzzer target for OutriderHTTP2.HTTP2Session in the server role (DESIGN §5): a client that
// sends the connection preface and then the fuzz input as raw frames, against a server that
// answers every request stream with HEADERS, a small (or, by mode, a 24 KiB) body and trailers,
// and consumes the DATA it gets. Output is drained with `takeOutput` after every `receive` and
// every submit; the run stops at `.fatal` (after flushing, as the proxy does) or once the
// session has failed on its own (its GOAWAY went out: the proxy closes then). Must not crash,
// trip ASan or leak (LeakSanitizer checks every input whose mallocs and frees do not balance).
//
// Input layout: 1 control byte, then the frames.
//   bit 0: submit from inside the delegate callbacks (else queued, submitted after `receive`)
//   bit 1: respond when the request ends (END_STREAM) instead of at its head
//   bit 2: consume DATA inside the callback (else after `receive` returns)
//   bit 3: 24 KiB response bodies (flow control, the send buffer's high-water mark)
//   bit 4: reset every third request (CANCEL) instead of answering it
//   bit 5: announce shutdown after the first piece, GOAWAY after the last
//   bits 6-7: pieces — 0: all at once; 1: one byte at a time; 2: sizes 1-64 from a seed;
//             3: 9 bytes at a time, output taken 100 bytes at a time
// Invariants (any failure a `precondition`):
// - delegate events follow the stream life: one head per stream, on an odd stream number; data
//   and trailers only between the head and the end; one end, one close; nothing after the close;
//   a refused stream (431) was never seen and is never heard of again;
// - received header fields are what the proxy may turn into HTTP/1: names non-empty,
//   lower-case tokens (pseudo-headers only first), values without NUL, CR or LF;
// - once the output is taken, the session keeps no more streams than the delegate has open,
//   plus the refused ones, plus one whose head is still arriving (a stream dropped without a
//   close would pile up);
// - the output is a well-formed sequence of frames starting with the server's SETTINGS, of
//   types a server sends, HEADERS and DATA only on client-initiated (odd) streams.
//
// This lives outside main.swift on purpose: closures in main.swift top-level code are
// main-actor isolated and trap when C calls them (DESIGN §5).

/// Hands the command line to libFuzzer (or to CFuzzerShim's replaying fallback). The callback is
/// referenced in the file that defines it: referencing a `@_cdecl` function as a C function
/// pointer from another file emits a second definition of its symbol.
func runFuzzDriver() -> Int32 {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}

let clientPreface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

/// Small limits, so that the defences are reachable with inputs of at most 16 KiB.
let fuzzConfiguration: HTTP2Configuration = {
    var configuration = HTTP2Configuration()
    configuration.maxConcurrentStreams = 16
    configuration.maxHeaderListSize = 4096
    configuration.resetBurst = 50
    configuration.resetRatePerSecond = 10
    configuration.maxOutboundAcknowledgements = 100
    configuration.streamSendBufferHighWater = 16 * 1024
    configuration.streamPoolLimit = 4
    return configuration
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let control = data[0]
    let wire = clientPreface + Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    runConnection(wire, control: control)
    return 0
}

struct Mode {
    var submitInCallback: Bool
    var respondAtEnd: Bool
    var consumeInCallback: Bool
    var largeBody: Bool
    var resetSome: Bool
    var shutdown: Bool
    var pieces: UInt8

    init(_ control: UInt8) {
        submitInCallback = control & 1 != 0
        respondAtEnd = control & 2 != 0
        consumeInCallback = control & 4 != 0
        largeBody = control & 8 != 0
        resetSome = control & 16 != 0
        shutdown = control & 32 != 0
        pieces = control >> 6
    }
}

func runConnection(_ wire: [UInt8], control: UInt8) {
    let mode = Mode(control)
    let session = try! HTTP2Session(role: .server, configuration: fuzzConfiguration)
    let server = FuzzServer(mode: mode)
    session.delegate = server
    defer { withExtendedLifetime(server) {} }   // the session's delegate is unowned
    let output = OutputChecker(capacity: mode.pieces == 3 ? 100 : 16 * 1024)

    output.drain(session, server)
    var offset = 0
    var random = UInt32(truncatingIfNeeded: wire.count) &* 2_654_435_761 | 1
    var first = true
    wire.withUnsafeBufferPointer { bytes in
        while offset < bytes.count {
            let piece: Int
            switch mode.pieces {
            case 0: piece = bytes.count - offset
            case 1: piece = 1
            case 2:
                random ^= random << 13
                random ^= random >> 17
                random ^= random << 5
                piece = 1 + Int(random % 64)
            default: piece = 9
            }
            let count = min(piece, bytes.count - offset)
            let result = session.receive(bytes.baseAddress! + offset, count)
            offset += count
            if case .fatal = result {
                precondition(session.failure != nil, "fatal without a failure")
                output.drain(session, server)
                return
            }
            server.runQueued(session)
            if first && mode.shutdown { session.announceShutdown() }
            first = false
            output.drain(session, server)
            // nghttp2 ended the session on its own (a protocol error): known once its GOAWAY
            // went out; the proxy closes the connection then (HTTP2Downstream.pumpOutput).
            if session.failure != nil { return }
            server.checkStreamCount(session)
        }
        if mode.shutdown {
            session.goAway()
            output.drain(session, server)
        }
    }
    _ = session.isFinished
    _ = session.openStreamCount
}

/// Takes the session's output and checks it is a sequence of well-formed frames.
final class OutputChecker {
    let scratch: UnsafeMutablePointer<UInt8>
    let capacity: Int
    /// The bytes of a frame not complete yet.
    var pending: [UInt8] = []
    var frames = 0

    init(capacity: Int) {
        self.capacity = capacity
        scratch = .allocate(capacity: capacity)
    }

    deinit { scratch.deallocate() }

    /// Takes output until the session has none (or gives nothing), running the server's queued
    /// work in between: taking output can open windows and close streams.
    func drain(_ session: HTTP2Session, _ server: FuzzServer) {
        var rounds = 0
        while true {
            var took = false
            while session.pendingOutput {
                let count = session.takeOutput(into: scratch, capacity: capacity)
                precondition(count >= 0 && count <= capacity)
                if count == 0 { break }
                took = true
                check(UnsafeBufferPointer(start: scratch, count: count))
            }
            rounds += 1
            guard server.hasQueuedWork, rounds < 1000 else { break }
            server.runQueued(session)
            if !took && !session.pendingOutput && !server.hasQueuedWork { break }
        }
    }

    func check(_ bytes: UnsafeBufferPointer<UInt8>) {
        pending.append(contentsOf: bytes)
        var start = 0
        while pending.count - start >= 9 {
            let length = Int(pending[start]) << 16 | Int(pending[start + 1]) << 8 | Int(pending[start + 2])
            guard pending.count - start >= 9 + length else { break }
            let type = pending[start + 3]
            let stream = (UInt32(pending[start + 5]) << 24 | UInt32(pending[start + 6]) << 16
                | UInt32(pending[start + 7]) << 8 | UInt32(pending[start + 8])) & 0x7FFF_FFFF
            if frames == 0 { precondition(type == 4 && stream == 0, "the server's first frame is not SETTINGS") }
            switch type {
            case 0, 1, 9:   // DATA, HEADERS, CONTINUATION
                precondition(stream != 0 && stream & 1 == 1, "frame type \(type) on stream \(stream)")
            case 3:         // RST_STREAM
                precondition(stream != 0 && length == 4, "RST_STREAM on stream \(stream), length \(length)")
            case 4, 6, 7:   // SETTINGS, PING, GOAWAY
                precondition(stream == 0, "frame type \(type) on stream \(stream)")
            case 8:         // WINDOW_UPDATE
                precondition(length == 4, "WINDOW_UPDATE of length \(length)")
            default:
                preconditionFailure("the server sent a frame of type \(type)")
            }
            frames += 1
            start += 9 + length
        }
        pending.removeFirst(start)
    }
}

/// The application: answers every request, consumes every byte, checks the event order.
final class FuzzServer: HTTP2SessionDelegate {
    struct Record {
        var ended = false
        var closed = false
        var refused = false
        var responded = false
        var bodyLeft = 0
        var trailersSent = false
        var bytesReceived = 0
    }

    let mode: Mode
    var records: [Int32: Record] = [:]
    var requests = 0
    var refusedCount = 0
    var queuedResponses: [Int32] = []
    var queuedBodies: [Int32] = []
    var queuedConsumes: [(stream: Int32, bytes: Int)] = []
    let responseHead = HTTP2HeaderBlock(entryCapacity: 4, storageCapacity: 128)
    let trailers = HTTP2HeaderBlock(entryCapacity: 4, storageCapacity: 128)
    let body = [UInt8](repeating: UInt8(ascii: "x"), count: 4096)

    init(mode: Mode) {
        self.mode = mode
        responseHead.appendStatus(200)
        responseHead.append("content-type", "text/plain")
        trailers.append("grpc-status", "0")
        trailers.append("x-trailer", "done")
    }

    var hasQueuedWork: Bool { !queuedResponses.isEmpty || !queuedBodies.isEmpty || !queuedConsumes.isEmpty }

    func runQueued(_ session: HTTP2Session) {
        let consumes = queuedConsumes
        queuedConsumes.removeAll()
        for (stream, bytes) in consumes { session.consume(stream: stream, bytes: bytes) }
        let responses = queuedResponses
        queuedResponses.removeAll()
        for stream in responses { respond(session, stream) }
        let bodies = queuedBodies
        queuedBodies.removeAll()
        for stream in bodies { pumpBody(session, stream) }
    }

    /// The session's streams, once its output was taken (a stream refused by nghttp2 — invalid
    /// headers — stays until its RST_STREAM goes out): those the delegate has open, the refused
    /// ones (answered by the session; their close is not reported), and one whose head block is
    /// still arriving.
    func checkStreamCount(_ session: HTTP2Session) {
        let open = records.values.filter { !$0.closed }.count
        precondition(session.openStreamCount <= open + refusedCount + 1,
                     "the session holds \(session.openStreamCount) streams, the delegate has \(open) open, \(refusedCount) refused")
    }

    func known(_ stream: Int32, _ event: String) -> Record {
        guard let record = records[stream] else { preconditionFailure("\(event) on stream \(stream) before its head") }
        precondition(!record.closed, "\(event) on stream \(stream) after its close")
        precondition(!record.refused, "\(event) on refused stream \(stream)")
        return record
    }

    func checkFields(_ headers: HTTP2HeaderBlock) {
        var regularSeen = false
        for index in 0..<headers.count {
            let name = headers.name(at: index), value = headers.value(at: index)
            precondition(!name.isEmpty, "empty field name")
            if name[0] == UInt8(ascii: ":") {
                precondition(!regularSeen, "a pseudo-header after a regular field")
            } else {
                regularSeen = true
                for byte in name {
                    precondition(isTokenByte(byte) && !(byte >= 0x41 && byte <= 0x5A), "field name byte \(byte)")
                }
            }
            for byte in value { precondition(byte != 0 && byte != 0x0D && byte != 0x0A, "NUL, CR or LF in a field value") }
        }
        _ = (headers.path, headers.authority, headers.scheme, headers.methodBytes, headers.protocolValue, headers.method)
        _ = headers.firstValue(named: "content-length")
    }

    func http2Session(_ session: HTTP2Session, didReceiveHeaders headers: HTTP2HeaderBlock, stream: Int32, endStream: Bool) {
        precondition(stream > 0 && stream & 1 == 1, "a request head on stream \(stream)")
        precondition(records[stream] == nil, "a second head on stream \(stream)")
        checkFields(headers)
        records[stream] = Record()
        requests += 1
        if mode.resetSome && requests % 3 == 0 {
            session.resetStream(stream: stream, code: .cancel)
            return
        }
        if !mode.respondAtEnd { answer(session, stream) }
    }

    func http2Session(_ session: HTTP2Session, didReceiveData bytes: UnsafePointer<UInt8>, count: Int, stream: Int32) {
        var record = known(stream, "DATA")
        precondition(!record.ended, "DATA on stream \(stream) after its end")
        precondition(count >= 0)
        var sum: UInt8 = 0
        for index in 0..<count { sum &+= bytes[index] }   // every byte readable (ASan)
        _ = sum
        record.bytesReceived += count
        records[stream] = record
        if mode.consumeInCallback {
            session.consume(stream: stream, bytes: count)
        } else {
            queuedConsumes.append((stream, count))
        }
    }

    func http2Session(_ session: HTTP2Session, didReceiveTrailers trailers: HTTP2HeaderBlock, stream: Int32) {
        let record = known(stream, "trailers")
        precondition(!record.ended, "trailers on stream \(stream) after its end")
        checkFields(trailers)
    }

    func http2Session(_ session: HTTP2Session, didEndStream stream: Int32) {
        var record = known(stream, "end")
        precondition(!record.ended, "a second end on stream \(stream)")
        record.ended = true
        records[stream] = record
        if mode.respondAtEnd && !record.responded { answer(session, stream) }
    }

    func http2Session(_ session: HTTP2Session, didResetStream stream: Int32, errorCode: HTTP2ErrorCode) {
        _ = known(stream, "reset")
    }

    func http2Session(_ session: HTTP2Session, didCloseStream stream: Int32, errorCode: HTTP2ErrorCode) {
        var record = known(stream, "close")
        record.closed = true
        records[stream] = record
    }

    func http2Session(_ session: HTTP2Session, didReceiveGoAway lastStreamID: Int32, errorCode: HTTP2ErrorCode) {}

    func http2Session(_ session: HTTP2Session, streamWindowOpened stream: Int32) {
        _ = known(stream, "window opened")
        if mode.submitInCallback { pumpBody(session, stream) } else { queuedBodies.append(stream) }
    }

    func http2Session(_ session: HTTP2Session, didRefuseStream stream: Int32, reason: LocalReplyReason) {
        precondition(records[stream] == nil, "refused stream \(stream) was seen before")
        var record = Record()
        record.refused = true
        records[stream] = record
        refusedCount += 1
    }

    func answer(_ session: HTTP2Session, _ stream: Int32) {
        if mode.submitInCallback { respond(session, stream) } else { queuedResponses.append(stream) }
    }

    func respond(_ session: HTTP2Session, _ stream: Int32) {
        guard var record = records[stream], !record.closed, !record.refused, !record.responded else { return }
        record.responded = true
        record.bodyLeft = mode.largeBody ? 24 * 1024 : 5
        records[stream] = record
        do {
            try session.submitResponse(stream: stream, headers: responseHead, endStream: false)
        } catch {
            return
        }
        pumpBody(session, stream)
    }

    func pumpBody(_ session: HTTP2Session, _ stream: Int32) {
        guard var record = records[stream], !record.closed, record.responded, !record.trailersSent else { return }
        defer { records[stream] = record }
        while record.bodyLeft > 0 {
            let chunk = min(record.bodyLeft, body.count)
            let belowHighWater: Bool
            do {
                belowHighWater = try body.withUnsafeBufferPointer {
                    try session.submitData(stream: stream, $0.baseAddress!, chunk, endStream: false)
                }
            } catch {
                record.trailersSent = true   // the stream is gone or its body was ended
                return
            }
            record.bodyLeft -= chunk
            if !belowHighWater { return }   // streamWindowOpened continues
        }
        do {
            try session.submitTrailers(stream: stream, trailers: trailers)
        } catch {}
        record.trailersSent = true
    }
}
