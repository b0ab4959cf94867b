import CFuzzerShim
import OutriderCore
import OutriderHTTP
import OutriderHTTP1

// libFuzzer target for OutriderHTTP1's ChunkedDecoder (DESIGN §5–6), driven the way a
// connection drives it: bytes arrive in pieces of random size into a fixed buffer that is
// compacted when full, data is consumed in random amounts, and the decoder is asked for the
// next event after every step.
//
// Input layout: 4 control bytes, then the body the decoder reads.
//   byte 0, bits 0-1: buffer — 0/2: as large as the body (never compacted); 1: the smallest
//                     that must work (maxLineBytes + 2, plus bits 2-3 × 61), compacted before
//                     an append that does not fit; 3: 8 KiB, compacted.
//   byte 0, bits 4-7: largest piece is 2^n bytes (n capped at 14).
//   byte 1:           data consumption — 0: everything at once; else at most byte1 % 64 + 1
//                     bytes per `consumeData`, and (bit 7) a zero-byte consume first each time.
//   bytes 1-3:        seed of the piece sizes.
// Invariants, any failure a `precondition` (a crash libFuzzer keeps):
// - no read or write past what was appended: the buffer's unwritten tail is ASan-poisoned
//   before every decoder call, and the buffer is exactly its capacity (ASan's redzone after it);
// - 0 <= readerIndex <= writerIndex after every call; the decoder never consumes more than it
//   was given, and what it consumed never shrinks;
// - `.data` is non-empty, starts at the reader index and ends within the written bytes;
// - `.trailer` is a `token ":" field-value` line of at most maxTrailerBytes, inside the buffer;
// - `.needMore` only while less than a full line (maxLineBytes + 2) is buffered: a decoder that
//   asks for more with a full buffer would stall a connection;
// - `.end` leaves `isDone` set, and asking again gives `.end` and consumes nothing;
// - the events' content (payload, trailers, end or failure, bytes left after the end) is the
//   same as when the whole body is decoded from one buffer at once.
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

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 4 else { return 0 }
    let control = (data[0], data[1], data[2], data[3])
    let body = UnsafeBufferPointer(start: data + 4, count: size - 4)

    let whole = decode(body, plan: FeedPlan.whole(body.count))
    let pieces = decode(body, plan: FeedPlan(control: control, bodyCount: body.count))
    precondition(whole == pieces, """
        whole and piecewise decodes disagree: ended \(whole.ended)/\(pieces.ended), \
        failed \(whole.failed)/\(pieces.failed), payload \(whole.payload.count)/\(pieces.payload.count) bytes, \
        trailers \(whole.trailers.count)/\(pieces.trailers.count), rest \(whole.restCount)/\(pieces.restCount)
        """)
    return 0
}

/// How the body is fed and consumed.
struct FeedPlan {
    var capacity: Int
    var compacts: Bool
    /// 0: everything in one piece.
    var maxPiece: Int
    /// 0: consume each `.data` whole.
    var consumeLimit: Int
    var zeroConsumeFirst: Bool
    var seed: UInt32

    static func whole(_ count: Int) -> FeedPlan {
        FeedPlan(capacity: count + 1, compacts: false, maxPiece: 0, consumeLimit: 0,
                 zeroConsumeFirst: false, seed: 1)
    }

    init(capacity: Int, compacts: Bool, maxPiece: Int, consumeLimit: Int, zeroConsumeFirst: Bool, seed: UInt32) {
        self.capacity = capacity
        self.compacts = compacts
        self.maxPiece = maxPiece
        self.consumeLimit = consumeLimit
        self.zeroConsumeFirst = zeroConsumeFirst
        self.seed = seed
    }

    init(control: (UInt8, UInt8, UInt8, UInt8), bodyCount: Int) {
        let minimum = ChunkedDecoder.maxLineBytes + 2
        switch control.0 & 3 {
        case 1:
            capacity = minimum + Int(control.0 >> 2 & 3) * 61
            compacts = true
        case 3:
            capacity = 8192
            compacts = true
        default:
            capacity = bodyCount + 1
            compacts = false
        }
        maxPiece = 1 << min(Int(control.0 >> 4), 14)
        consumeLimit = control.1 == 0 ? 0 : Int(control.1 % 64) + 1
        zeroConsumeFirst = control.1 & 0x80 != 0
        seed = UInt32(control.1) << 16 | UInt32(control.2) << 8 | UInt32(control.3) | 1
    }
}

struct ChunkedResult: Equatable {
    var ended = false
    var failed = false
    var payload: [UInt8] = []
    var trailers: [[UInt8]] = []
    /// Body bytes after the end of the chunked body (buffered or not yet fed).
    var restCount = 0
}

/// The buffer's unwritten tail made unreadable for the decoder (ASan), and readable again for
/// the harness's own writes.
@inline(__always) func poisonTail(_ buffer: ByteBuffer) {
    outrider_fuzz_unpoison(buffer.base, buffer.capacity)
    outrider_fuzz_poison(buffer.base + buffer.writerIndex, buffer.capacity - buffer.writerIndex)
}

@inline(__always) func unpoison(_ buffer: ByteBuffer) {
    outrider_fuzz_unpoison(buffer.base, buffer.capacity)
}

func decode(_ body: UnsafeBufferPointer<UInt8>, plan: FeedPlan) -> ChunkedResult {
    let buffer = ByteBuffer(capacity: plan.capacity)
    defer { unpoison(buffer) }
    var decoder = ChunkedDecoder()
    var result = ChunkedResult()
    var random = plan.seed
    var fed = 0
    /// Bytes the decoder consumed so far: fed minus buffered.
    var consumed = 0
    var trailerBytes = 0
    var zeroConsumed = false

    func checkIndices() {
        precondition(buffer.readerIndex >= 0 && buffer.readerIndex <= buffer.writerIndex
            && buffer.writerIndex <= buffer.capacity, "reader index past the writer index")
        let nowConsumed = fed - buffer.readableBytes
        precondition(nowConsumed >= consumed && nowConsumed <= fed, "consumed more than given, or went back")
        consumed = nowConsumed
    }

    while true {
        // Every event the buffered bytes give.
        events: while true {
            poisonTail(buffer)
            let event = decoder.next(buffer)
            checkIndices()
            switch event {
            case .needMore:
                precondition(buffer.readableBytes < ChunkedDecoder.maxLineBytes + 2,
                             "needMore with \(buffer.readableBytes) bytes buffered")
                precondition(!decoder.isDone)
                break events
            case .data(let offset, let count):
                precondition(count > 0, "empty data event")
                precondition(offset == buffer.readerIndex && offset + count <= buffer.writerIndex,
                             "data event outside the buffered bytes")
                var take = plan.consumeLimit == 0 ? count : min(count, plan.consumeLimit)
                if plan.zeroConsumeFirst && !zeroConsumed { take = 0 }
                zeroConsumed = take == 0
                result.payload.append(contentsOf: UnsafeBufferPointer(start: buffer.base + offset, count: take))
                decoder.consumeData(buffer, take)
                checkIndices()
            case .trailer(let offset, let count):
                precondition(count > 0 && count <= ChunkedDecoder.maxTrailerBytes && offset >= 0
                             && offset + count <= buffer.capacity, "trailer event outside the buffer")
                trailerBytes += count + 2
                precondition(trailerBytes <= ChunkedDecoder.maxTrailerBytes, "trailer section over its limit")
                let line = Array(UnsafeBufferPointer(start: buffer.base + offset, count: count))
                checkTrailerLine(line)
                result.trailers.append(line)
            case .end:
                precondition(decoder.isDone, "end without isDone")
                poisonTail(buffer)
                let before = buffer.readerIndex
                precondition(decoder.next(buffer) == .end && buffer.readerIndex == before, "a finished decoder moved")
                result.ended = true
                result.restCount = buffer.readableBytes + body.count - fed
                return result
            case .failed:
                result.failed = true
                return result
            }
        }
        if fed == body.count { return result }

        // The next piece, as much of it as fits.
        random ^= random << 13
        random ^= random >> 17
        random ^= random << 5
        let left = body.count - fed
        let piece = plan.maxPiece == 0 ? left : min(1 + Int(random % UInt32(plan.maxPiece)), left)
        unpoison(buffer)
        if plan.compacts && buffer.writableBytes < piece { buffer.compact() }
        let take = min(piece, buffer.writableBytes)
        precondition(take > 0, "the decoder needs more but the buffer is full")
        buffer.append(body.baseAddress! + fed, count: take)
        fed += take
    }
}

/// `token ":" field-value`, no CR, LF or NUL.
func checkTrailerLine(_ line: [UInt8]) {
    guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { preconditionFailure("trailer without a colon") }
    precondition(colon > 0, "trailer with an empty name")
    for byte in line[..<colon] { precondition(isTokenByte(byte), "trailer name byte \(byte)") }
    for byte in line[(colon + 1)...] {
        precondition(byte != 0x0D && byte != 0x0A && byte != 0, "control byte in a trailer")
    }
}
