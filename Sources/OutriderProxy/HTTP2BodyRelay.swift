import OutriderCore
import OutriderHTTP2

/// One direction of an HTTP/2 stream's body on its way into an HTTP/1.1 exchange, for both
/// stream bridges: DATA payload waits here (a pooled buffer, only while bytes are in it) until
/// the exchange reads it, framed as chunks when `chunked`; after END_STREAM the last chunk
/// carries the trailers. Credit the stream window with what `fill` reports taken.
struct HTTP2BodyRelay {
    /// No content-length: the exchange reads a chunked body (with trailers).
    var chunked = false
    /// END_STREAM arrived.
    var ended = false
    private var endWritten = false
    private var pending: ByteBuffer?
    private var trailerLines: ByteBuffer?

    /// A new stream's body; the previous one's buffers must have been released.
    mutating func start(chunked: Bool, ended: Bool) {
        self.chunked = chunked
        self.ended = ended
        endWritten = false
    }

    /// False when it does not fit: more than a stream window, so the peer broke flow control.
    mutating func append(_ bytes: UnsafePointer<UInt8>, _ count: Int, pool: BufferPool) -> Bool {
        let buffer = pending ?? pool.acquire()
        pending = buffer
        if buffer.writableBytes < count { buffer.compact() }
        guard buffer.writableBytes >= count else { return false }
        buffer.append(bytes, count: count)
        return true
    }

    /// Trailers as HTTP/1.1 trailer lines; only a chunked body can carry them.
    mutating func appendTrailers(_ trailers: HTTP2HeaderBlock, pool: BufferPool) {
        guard chunked else { return }
        let lines = trailerLines ?? pool.acquire()
        trailerLines = lines
        for index in 0..<trailers.count where trailers[index].pseudo == .none {
            let name = trailers.name(at: index)
            let value = trailers.value(at: index)
            guard lines.writableBytes >= name.count + value.count + 8 else { break }
            lines.append(name.baseAddress!, count: name.count)
            lines.append(": ")
            lines.append(value.baseAddress!, count: value.count)
            lines.append("\r\n")
        }
    }

    /// Moves what is waiting into `buffer` (at most `limit` bytes); `taken` is the payload
    /// consumed, to be credited to the stream.
    mutating func fill(_ buffer: ByteBuffer, limit: Int, pool: BufferPool, taken: inout Int) -> ReadOutcome {
        var wrote = false
        if let body = pending, body.readableBytes > 0 {
            let count: Int
            if chunked {
                count = min(body.readableBytes, limit - 32)
                if count > 0 {
                    buffer.appendHex(UInt64(count))
                    buffer.append("\r\n")
                    buffer.append(body.readPointer, count: count)
                    buffer.append("\r\n")
                }
            } else {
                count = min(body.readableBytes, limit)
                if count > 0 { buffer.append(body.readPointer, count: count) }
            }
            if count <= 0 { return .full }
            body.consume(count)
            taken += count
            wrote = true
            if body.isEmpty {
                pool.release(body)
                pending = nil
            }
        }
        if pending == nil && ended && chunked && !endWritten {
            let trailerBytes = trailerLines?.readableBytes ?? 0
            if buffer.writableBytes >= trailerBytes + 8 {
                buffer.append("0\r\n")
                if let lines = trailerLines {
                    buffer.append(lines.readPointer, count: lines.readableBytes)
                    pool.release(lines)
                    trailerLines = nil
                }
                buffer.append("\r\n")
                endWritten = true
                wrote = true
            } else if !wrote {
                return .full
            }
        }
        return wrote ? .data : .wouldBlock
    }

    /// Gives the buffers back; returns the payload bytes that were still waiting.
    @discardableResult
    mutating func release(pool: BufferPool) -> Int {
        let unread = pending?.readableBytes ?? 0
        if let buffer = pending { pool.release(buffer); pending = nil }
        if let buffer = trailerLines { pool.release(buffer); trailerLines = nil }
        return unread
    }
}

/// A content-length value: decimal digits only, at most 18 of them.
func parseContentLength(_ value: UnsafeBufferPointer<UInt8>) -> Int64? {
    guard value.count > 0, value.count <= 18 else { return nil }
    var result: Int64 = 0
    for byte in value {
        let digit = byte &- UInt8(ascii: "0")
        guard digit < 10 else { return nil }
        result = result * 10 + Int64(digit)
    }
    return result
}
