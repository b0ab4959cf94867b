// A recording delegate and a pump that moves frames between two sessions in memory, the way a
// connected socket pair would.
import OutriderCore
import OutriderHTTP
import OutriderHTTP2

final class Recorder: HTTP2SessionDelegate {
    struct Head {
        var fields: [(String, String)]
        var status: Int
        var method: MethodKind
        var path: String?
        var authority: String?
        var scheme: String?
        var endStream: Bool
        func value(_ name: String) -> String? { fields.first { $0.0 == name }?.1 }
    }

    var heads: [Int32: Head] = [:]
    var informational: [Int32: [Int]] = [:]
    var bodies: [Int32: [UInt8]] = [:]
    var trailers: [Int32: [(String, String)]] = [:]
    var ended: Set<Int32> = []
    var resets: [Int32: HTTP2ErrorCode] = [:]
    var closed: [Int32: HTTP2ErrorCode] = [:]
    var goAways: [(lastStreamID: Int32, code: HTTP2ErrorCode)] = []
    var windowOpened: [Int32] = []
    var sendWindowChanges: [Int32] = []
    var refused: [Int32: LocalReplyReason] = [:]
    /// Consume every DATA byte as it arrives (a reader that never lags).
    var consumesImmediately = true
    var unconsumed: [Int32: Int] = [:]
    /// Called with each request/response head (a server answers here).
    var onHeaders: ((HTTP2Session, Int32, Head) -> Void)?
    var onEnd: ((HTTP2Session, Int32) -> Void)?
    var onWindowOpened: ((HTTP2Session, Int32) -> Void)?

    func http2Session(_ session: HTTP2Session, didReceiveHeaders headers: HTTP2HeaderBlock, stream: Int32, endStream: Bool) {
        var fields: [(String, String)] = []
        for index in 0..<headers.count {
            fields.append((String(decoding: headers.name(at: index), as: UTF8.self),
                           String(decoding: headers.value(at: index), as: UTF8.self)))
        }
        func text(_ bytes: UnsafeBufferPointer<UInt8>?) -> String? { bytes.map { String(decoding: $0, as: UTF8.self) } }
        let head = Head(fields: fields, status: headers.status, method: headers.method, path: text(headers.path),
                        authority: text(headers.authority), scheme: text(headers.scheme), endStream: endStream)
        if headers.status >= 100 && headers.status < 200 {
            informational[stream, default: []].append(headers.status)
            return
        }
        heads[stream] = head
        onHeaders?(session, stream, head)
    }

    func http2Session(_ session: HTTP2Session, didReceiveData bytes: UnsafePointer<UInt8>, count: Int, stream: Int32) {
        bodies[stream, default: []].append(contentsOf: UnsafeBufferPointer(start: bytes, count: count))
        if consumesImmediately {
            session.consume(stream: stream, bytes: count)
        } else {
            unconsumed[stream, default: 0] += count
        }
    }

    func http2Session(_ session: HTTP2Session, didReceiveTrailers trailers: HTTP2HeaderBlock, stream: Int32) {
        var fields: [(String, String)] = []
        for index in 0..<trailers.count {
            fields.append((String(decoding: trailers.name(at: index), as: UTF8.self),
                           String(decoding: trailers.value(at: index), as: UTF8.self)))
        }
        self.trailers[stream] = fields
    }

    func http2Session(_ session: HTTP2Session, didEndStream stream: Int32) {
        ended.insert(stream)
        onEnd?(session, stream)
    }

    func http2Session(_ session: HTTP2Session, didResetStream stream: Int32, errorCode: HTTP2ErrorCode) {
        resets[stream] = errorCode
    }

    func http2Session(_ session: HTTP2Session, didCloseStream stream: Int32, errorCode: HTTP2ErrorCode) {
        closed[stream] = errorCode
    }

    func http2Session(_ session: HTTP2Session, didReceiveGoAway lastStreamID: Int32, errorCode: HTTP2ErrorCode) {
        goAways.append((lastStreamID, errorCode))
    }

    func http2Session(_ session: HTTP2Session, sendWindowChanged stream: Int32) {
        sendWindowChanges.append(stream)
    }

    func http2Session(_ session: HTTP2Session, streamWindowOpened stream: Int32) {
        windowOpened.append(stream)
        onWindowOpened?(session, stream)
    }

    func http2Session(_ session: HTTP2Session, didRefuseStream stream: Int32, reason: LocalReplyReason) {
        refused[stream] = reason
    }

    /// Consumes everything held back so far.
    func consumeAll(_ session: HTTP2Session) {
        for (stream, count) in unconsumed where count > 0 { session.consume(stream: stream, bytes: count) }
        unconsumed = [:]
    }
}

/// The type of each whole frame in `bytes` (a server's output: no preface).
func frameTypes(_ bytes: [UInt8]) -> [UInt8] {
    var types: [UInt8] = []
    var offset = 0
    while bytes.count - offset >= 9 {
        let length = Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
        types.append(bytes[offset + 3])
        offset += 9 + length
    }
    return types
}

/// Everything `session` has to send now.
func drainOutput(_ session: HTTP2Session, bufferSize: Int = 16 * 1024) -> [UInt8] {
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: bufferSize)
    while session.pendingOutput {
        let count = buffer.withUnsafeMutableBufferPointer { session.takeOutput(into: $0.baseAddress!, capacity: $0.count) }
        if count == 0 { break }
        output += buffer[0..<count]
    }
    return output
}

/// Feeds `bytes` to `session` in pieces of `chunk`; stops at the first fatal result.
@discardableResult
func feed(_ bytes: [UInt8], to session: HTTP2Session, chunk: Int = 64 * 1024) -> HTTP2ReceiveResult {
    var offset = 0
    while offset < bytes.count {
        let end = min(bytes.count, offset + chunk)
        let result = bytes.withUnsafeBufferPointer { session.receive($0.baseAddress! + offset, end - offset) }
        if case .fatal = result { return result }
        offset = end
    }
    return .ok
}

/// Moves frames both ways until neither side has anything to send (or one fails).
@discardableResult
func pump(_ client: HTTP2Session, _ server: HTTP2Session, chunk: Int = 64 * 1024, outputBufferSize: Int = 16 * 1024,
          rounds: Int = 100_000) -> (client: HTTP2ReceiveResult, server: HTTP2ReceiveResult) {
    for _ in 0..<rounds {
        let toServer = drainOutput(client, bufferSize: outputBufferSize)
        let serverResult = feed(toServer, to: server, chunk: chunk)
        let toClient = drainOutput(server, bufferSize: outputBufferSize)
        let clientResult = feed(toClient, to: client, chunk: chunk)
        if case .fatal = serverResult { return (clientResult, serverResult) }
        if case .fatal = clientResult { return (clientResult, serverResult) }
        if toServer.isEmpty && toClient.isEmpty && !client.pendingOutput && !server.pendingOutput {
            return (clientResult, serverResult)
        }
    }
    return (.ok, .ok)
}

func block(_ fields: [(String, String)]) -> HTTP2HeaderBlock {
    let headers = HTTP2HeaderBlock()
    for (name, value) in fields {
        let nameBytes = Array(name.utf8), valueBytes = Array(value.utf8)
        nameBytes.withUnsafeBufferPointer { namePointer in
            valueBytes.withUnsafeBufferPointer { valuePointer in headers.append(name: namePointer, value: valuePointer) }
        }
    }
    return headers
}

func getRequest(_ path: String = "/", extra: [(String, String)] = []) -> HTTP2HeaderBlock {
    block([(":method", "GET"), (":scheme", "http"), (":authority", "app.test"), (":path", path)] + extra)
}

func postRequest(_ path: String = "/upload", extra: [(String, String)] = []) -> HTTP2HeaderBlock {
    block([(":method", "POST"), (":scheme", "http"), (":authority", "app.test"), (":path", path)] + extra)
}

extension HTTP2Session {
    @discardableResult
    func sendData(stream: Int32, _ bytes: [UInt8], endStream: Bool) throws -> Bool {
        try bytes.withUnsafeBufferPointer {
            try submitData(stream: stream, $0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count, endStream: endStream)
        }
    }
}

/// A raw HTTP/2 frame (for hostile peers that a real session would never produce).
func frame(type: UInt8, flags: UInt8 = 0, stream: Int32 = 0, payload: [UInt8] = []) -> [UInt8] {
    let length = payload.count
    return [UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags,
            UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)]
        + payload
}

let clientPreface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

func pattern(_ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) } }

/// The proxy's own PRNG, seeded, for the randomized tests.
struct SeededRandom: RandomNumberGenerator {
    var fast: FastRandom
    init(seed: UInt64) { fast = FastRandom(seed: seed) }
    mutating func next() -> UInt64 { fast.next() }
}
