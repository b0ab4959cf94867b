import Glibc
import OutriderCore
import OutriderHTTP

/// Decodes a chunked body (RFC 9112 §7.1) from a buffer without copying: it hands back where
/// the data is and the caller consumes it. Lines are consumed only when complete, so a caller
/// feeding one byte at a time sees the same events as one feeding everything at once.
public struct ChunkedDecoder: Sendable {
    public enum Event: Equatable, Sendable {
        case needMore
        /// `count` data bytes at `offset`; consume them (or fewer) with `consumeData`.
        case data(offset: Int, count: Int)
        /// A validated trailer field line (without CRLF) at `offset`.
        case trailer(offset: Int, count: Int)
        /// The last chunk and the trailer section are complete.
        case end
        case failed
    }

    private enum State: Sendable { case size, data, dataCR, trailers, done }

    public static let maxLineBytes = 4096
    public static let maxTrailerBytes = 16384

    private var state: State = .size
    private var remaining: Int64 = 0
    private var trailerBytes = 0

    public init() {}

    public var isDone: Bool { state == .done }

    /// Looks at `buffer`'s readable bytes and returns the next event. `.data` does not consume;
    /// every other event consumes what it describes.
    public mutating func next(_ buffer: ByteBuffer) -> Event {
        while true {
            let start = buffer.readerIndex
            let available = buffer.writerIndex - start
            switch state {
            case .size:
                // A line may hold maxLineBytes before its CRLF.
                guard let lineEnd = findLine(buffer) else { return available >= Self.maxLineBytes + 2 ? fail() : .needMore }
                if lineEnd - start > Self.maxLineBytes { return fail() }
                guard let size = parseSizeLine(buffer.base, start, lineEnd) else { return fail() }
                buffer.consume(lineEnd + 2 - start)
                if size == 0 {
                    state = .trailers
                } else {
                    remaining = size
                    state = .data
                }
            case .data:
                guard available > 0 else { return .needMore }
                return .data(offset: start, count: Int(min(Int64(available), remaining)))
            case .dataCR:
                guard available >= 2 else { return .needMore }
                guard buffer[start] == 0x0D, buffer[start + 1] == 0x0A else { return fail() }
                buffer.consume(2)
                state = .size
            case .trailers:
                guard let lineEnd = findLine(buffer) else {
                    return available >= Self.maxLineBytes + 2 ? fail() : .needMore
                }
                let length = lineEnd - start
                if length < 0 || buffer[lineEnd] != 0x0D || length > Self.maxLineBytes { return fail() }
                if length == 0 {
                    buffer.consume(2)
                    state = .done
                    return .end
                }
                trailerBytes += length + 2
                guard trailerBytes <= Self.maxTrailerBytes, validTrailerLine(buffer.base, start, lineEnd) else { return fail() }
                buffer.consume(length + 2)
                // The event's offset refers to bytes just consumed; they stay in place until
                // the caller's next read into this buffer.
                return .trailer(offset: start, count: length)
            case .done:
                return .end
            }
        }
    }

    /// Marks `count` data bytes (from a `.data` event) as handled.
    public mutating func consumeData(_ buffer: ByteBuffer, _ count: Int) {
        buffer.consume(count)
        remaining -= Int64(count)
        if remaining == 0 { state = .dataCR }
    }

    private mutating func fail() -> Event {
        state = .done
        return .failed
    }

    /// Offset of the CR of the first CRLF; nil when no complete line is there yet. A bare LF
    /// or CR fails later in validation.
    private func findLine(_ buffer: ByteBuffer) -> Int? {
        let start = buffer.readerIndex
        let count = min(buffer.writerIndex - start, Self.maxLineBytes + 2)
        guard count > 0, let found = memchr(buffer.base + start, 0x0A, count) else { return nil }
        let lineFeed = UnsafeMutablePointer<UInt8>(found.assumingMemoryBound(to: UInt8.self)) - buffer.base
        return lineFeed - 1   // may equal start-1 for a bare LF at the start; callers validate
    }

    /// `1*HEXDIG [ chunk-ext ] CRLF`, at most 15 hex digits (fits Int64 with room). After the
    /// size comes optional whitespace (RFC 9112 §7.1.1's BWS, and trailing whitespace as other
    /// servers accept it), then nothing or a `;` that starts the extensions: "5 junk" is not a
    /// size line.
    private func parseSizeLine(_ base: UnsafeMutablePointer<UInt8>, _ start: Int, _ lineEnd: Int) -> Int64? {
        guard lineEnd >= start, base[lineEnd] == 0x0D else { return nil }
        var index = start
        var size: Int64 = 0
        var digits = 0
        while index < lineEnd, let value = hexValue(base[index]) {
            size = size << 4 | Int64(value)
            digits += 1
            index += 1
        }
        guard digits > 0, digits <= 15 else { return nil }
        while index < lineEnd && (base[index] == 0x20 || base[index] == 0x09) { index += 1 }
        // Extensions are validated for shape (no control bytes) and then dropped.
        if index < lineEnd {
            guard base[index] == UInt8(ascii: ";") else { return nil }
            while index < lineEnd {
                guard isFieldValueByte(base[index]) else { return nil }
                index += 1
            }
        }
        return size
    }

    private func validTrailerLine(_ base: UnsafeMutablePointer<UInt8>, _ start: Int, _ lineEnd: Int) -> Bool {
        guard base[lineEnd] == 0x0D else { return false }
        var index = start
        while index < lineEnd && isTokenByte(base[index]) { index += 1 }
        guard index > start, index < lineEnd, base[index] == UInt8(ascii: ":") else { return false }
        index += 1
        while index < lineEnd {
            guard isFieldValueByte(base[index]) else { return false }
            index += 1
        }
        return true
    }
}

@inline(__always)
func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}
