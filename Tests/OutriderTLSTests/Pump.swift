// Moves ciphertext between two engines in memory, the way two connected sockets would.
import OutriderTLS

/// Moves all of `source`'s pending ciphertext into `destination`, `chunk` bytes at a time; with
/// `advancing`, the destination advances its handshake after every chunk (as a connection
/// does after every socket read). Returns the bytes moved.
@discardableResult
func transfer(from source: TLSEngine, to destination: TLSEngine, chunk: Int = 64 * 1024,
              advancing: Bool = false) -> Int {
    var buffer = [UInt8](repeating: 0, count: max(chunk, 1))
    var moved = 0
    while source.pendingCiphertextCount > 0 {
        let count = buffer.withUnsafeMutableBufferPointer {
            source.takeCiphertext(into: $0.baseAddress!, capacity: $0.count)
        }
        precondition(count > 0, "pending ciphertext but none taken")
        buffer.withUnsafeBufferPointer { destination.receiveCiphertext($0.baseAddress!, count) }
        if advancing, destination.handshakeState == .inProgress { _ = destination.advanceHandshake() }
        moved += count
    }
    return moved
}

/// Runs both handshakes until neither side has anything left to send.
@discardableResult
func handshake(client: TLSEngine, server: TLSEngine, chunk: Int = 64 * 1024)
    -> (client: TLSHandshakeState, server: TLSHandshakeState) {
    _ = client.advanceHandshake()
    for _ in 0..<100 {
        let sent = transfer(from: client, to: server, chunk: chunk, advancing: true)
        _ = server.advanceHandshake()
        let received = transfer(from: server, to: client, chunk: chunk, advancing: true)
        _ = client.advanceHandshake()
        if sent == 0, received == 0, client.pendingCiphertextCount == 0 { break }
    }
    return (client.handshakeState, server.handshakeState)
}

/// Reads everything `engine` can decrypt now; stops at `.needMoreInput`, `.closed`, `.failed`.
func readAll(_ engine: TLSEngine, bufferSize: Int = 4096) -> (bytes: [UInt8], end: TLSReadResult) {
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: bufferSize)
    while true {
        let outcome = buffer.withUnsafeMutableBufferPointer {
            engine.readPlaintext(into: $0.baseAddress!, capacity: $0.count)
        }
        guard case .bytes(let count) = outcome else { return (result, outcome) }
        result.append(contentsOf: buffer[0..<count])
    }
}

/// Writes `bytes` in pieces of `pieceSize`, moving the ciphertext after each piece, and returns
/// what the receiver decrypted.
func send(_ bytes: [UInt8], from sender: TLSEngine, to receiver: TLSEngine, pieceSize: Int = 16 * 1024,
          chunk: Int = 64 * 1024) -> [UInt8] {
    var received: [UInt8] = []
    var offset = 0
    while offset < bytes.count {
        let end = min(offset + pieceSize, bytes.count)
        let taken = bytes.withUnsafeBufferPointer { sender.writePlaintext($0.baseAddress! + offset, end - offset) }
        precondition(taken == end - offset, "write took \(taken) of \(end - offset)")
        offset = end
        transfer(from: sender, to: receiver, chunk: chunk)
        received += readAll(receiver).bytes
        // The receiver may answer (key updates); deliver it like a socket would.
        transfer(from: receiver, to: sender)
    }
    return received
}

func write(_ text: String, from sender: TLSEngine) -> Int {
    let bytes = Array(text.utf8)
    return bytes.withUnsafeBufferPointer { sender.writePlaintext($0.baseAddress!, $0.count) }
}

func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }
