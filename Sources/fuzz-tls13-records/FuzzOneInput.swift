import CFuzzerShim
import OutriderTLS

// libFuzzer target for OutriderTLS's TLS13RecordLayer, the server end of a connection after
// its handshake. A peer layer keyed as the client seals what the input says (records of any
// inner type and size, so the fuzzer reaches what comes after decryption: alerts, KeyUpdates,
// padding, empty records), the input may also corrupt the stream or splice raw bytes into it,
// and the server is fed in pieces of input-chosen sizes and read with input-chosen capacities.
//
// Input layout: byte 0 picks the suite (% 3); then operations, each one byte `op` and one byte
// `n`, with their operands:
//   op % 5 == 0  the peer seals a record: inner type = next byte, content = the next n bytes
//   op % 5 == 1  the peer sends application data: the next n bytes (the expected stream)
//   op % 5 == 2  raw bytes: the next n bytes go to the server as they are
//   op % 5 == 3  flip bit (n % 8) of the last pending peer byte
//   op % 5 == 4  deliver: move min(n + 1, pending) peer bytes to the server, read them with
//                capacity (op >> 3) + 1, and the server writes n bytes back
// Invariants, any failure a `precondition`:
// - the plaintext the server reads is a prefix of the application data the peer sent, as
//   long as only `op 1` and whole deliveries happened (no raw bytes, flips or sealed records
//   of other types — those may legitimately fail the connection, never alter what it reads);
// - after `.failed` or `.closed` it stays so, and `.failed` comes with a reason;
// - the server's own ciphertext is always whole records the peer can open in order.

func runFuzzDriver() -> Int32 {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}

private let clientSecret = [UInt8](repeating: 0x5a, count: 48)
private let serverSecret = [UInt8](repeating: 0xa5, count: 48)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 1 else { return 0 }
    let suite = TLS13CipherSuite.allCases[Int(data[0]) % 3]
    guard let peer = TLS13RecordLayer(suite: suite, readSecret: serverSecret, readSequence: 0,
                                      writeSecret: clientSecret, writeSequence: 0),
          let server = TLS13RecordLayer(suite: suite, readSecret: clientSecret, readSequence: 3,
                                        writeSecret: serverSecret, writeSequence: 0)
    else { preconditionFailure("keying failed") }
    // The peer above reads what the server writes from sequence 0 and the server expects the
    // peer's records from 3 (as after a hand-off with records already counted): the peer
    // starts by sealing three records the server never sees.
    for _ in 0..<3 { _ = peer.seal(type: 23, data, 0) }
    var discard = [UInt8](repeating: 0, count: 256)
    while peer.pendingCiphertextCount > 0 {
        _ = discard.withUnsafeMutableBufferPointer { peer.takeCiphertext(into: $0.baseAddress!, capacity: $0.count) }
    }

    var sentData: [UInt8] = []
    var readData: [UInt8] = []
    var onlyData = true
    var finished: TLSReadResult? = nil
    var readBuffer = [UInt8](repeating: 0, count: 256)
    var position = 1

    func deliver(_ count: Int, capacity: Int) {
        var moved = 0
        while moved < count, peer.pendingCiphertextCount > 0 {
            let step = min(count - moved, discard.count)
            let taken = discard.withUnsafeMutableBufferPointer { peer.takeCiphertext(into: $0.baseAddress!, capacity: step) }
            discard.withUnsafeBufferPointer { _ = server.receiveCiphertext($0.baseAddress!, taken) }
            moved += taken
        }
        read(capacity: capacity)
    }

    func read(capacity: Int) {
        while true {
            let result = readBuffer.withUnsafeMutableBufferPointer {
                server.readPlaintext(into: $0.baseAddress!, capacity: min(capacity, $0.count))
            }
            if let finished {
                precondition(result == finished, "\(finished) became \(result)")
                return
            }
            switch result {
            case .bytes(let count):
                precondition(count > 0 && count <= capacity)
                readData += readBuffer[0..<count]
            case .needMoreInput:
                return
            case .failed:
                precondition(server.failureReason != nil, "failed without a reason")
                finished = .failed
                return
            case .closed:
                finished = .closed
                return
            }
        }
    }

    while position + 1 < size {
        let op = data[position], n = Int(data[position + 1])
        position += 2
        switch op % 5 {
        case 0:
            guard position < size else { break }
            let type = data[position]
            position += 1
            let count = min(n, size - position)
            _ = peer.seal(type: type, data + position, count)
            if type == 23 && count > 0 {
                sentData += UnsafeBufferPointer(start: data + position, count: count)
            } else {
                // Other types and empty records may fail the connection (by design).
                onlyData = false
            }
            position += count
        case 1:
            let count = min(n, size - position)
            if count > 0 {
                precondition(peer.writePlaintext(data + position, count))
                sentData += UnsafeBufferPointer(start: data + position, count: count)
            }
            position += count
        case 2:
            let count = min(n, size - position)
            if count > 0 { _ = server.receiveCiphertext(data + position, count) }
            position += count
            onlyData = false
            read(capacity: 256)
        case 3:
            guard peer.pendingCiphertextCount > 0 else { break }
            // Rebuild the pending ciphertext with one bit flipped in its last byte.
            var pending = [UInt8](repeating: 0, count: peer.pendingCiphertextCount)
            let count = pending.withUnsafeMutableBufferPointer { peer.takeCiphertext(into: $0.baseAddress!, capacity: $0.count) }
            pending[count - 1] ^= UInt8(1) << UInt8(n % 8)
            pending.withUnsafeBufferPointer { _ = server.receiveCiphertext($0.baseAddress!, count) }
            onlyData = false
            read(capacity: 256)
        default:
            deliver(n + 1, capacity: Int(op >> 3) + 1)
            if n > 0, finished == nil, !server.failed {
                var answer = [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: n)
                let written = answer.withUnsafeMutableBufferPointer { server.writePlaintext($0.baseAddress!, n) }
                if written {
                    // The peer must open every record the server wrote.
                    var echoed: [UInt8] = []
                    while server.pendingCiphertextCount > 0 {
                        let taken = discard.withUnsafeMutableBufferPointer { server.takeCiphertext(into: $0.baseAddress!, capacity: $0.count) }
                        discard.withUnsafeBufferPointer { _ = peer.receiveCiphertext($0.baseAddress!, taken) }
                    }
                    while case .bytes(let count) = readBuffer.withUnsafeMutableBufferPointer({
                        peer.readPlaintext(into: $0.baseAddress!, capacity: $0.count)
                    }) {
                        echoed += readBuffer[0..<count]
                    }
                    precondition(echoed == answer || peer.failed, "the peer read \(echoed.count) of \(n) bytes")
                    answer.removeAll()
                }
            }
        }
        if onlyData {
            precondition(readData.count <= sentData.count && readData[...] == sentData[0..<readData.count],
                         "read bytes that were not sent")
            precondition(finished == nil, "a connection of application data only ended: \(server.failureReason ?? "closed")")
        }
    }
    deliver(Int.max, capacity: 256)
    if onlyData {
        precondition(readData == sentData, "read \(readData.count) of \(sentData.count) bytes sent")
    }
    server.releaseIdleMemory()
    return 0
}
