import Glibc
import OutriderCore
import OutriderHTTP2
import OutriderPosix
import OutriderTLS

/// What a read into a connection's input buffer gave.
enum ReadOutcome {
    case data          // bytes were added
    case wouldBlock    // nothing more for now
    case closed        // the peer closed its side
    case failed        // reset or another error
    case full          // no room left in the buffer
}

/// The far end of a connection without a socket of its own: an HTTP/2 stream that carries one
/// HTTP/1.1 exchange. What the connection would read comes from `fill`, what it would write
/// goes to `deliver`; everything else (parsing, routing, filters, retries, the upstream) runs
/// as on a socket.
class VirtualPeer {
    /// Moves up to `limit` readable bytes into `buffer`: `.data`, or `.wouldBlock` when none.
    func fill(_ buffer: ByteBuffer, limit: Int) -> ReadOutcome { .wouldBlock }
    /// Takes what it can of `buffer` (consuming it); what it leaves waits for room.
    func deliver(_ buffer: ByteBuffer) {}
    /// Response body bytes the peer should be given now (its flow control and buffer limits);
    /// at 0 or below the connection reads no more from its upstream until the peer makes room.
    func outputRoom() -> Int { .max }
    /// The connection closed and forgot this peer.
    func connectionClosed() {}
    /// Where a proxied response's head goes as fields, for a peer that would only turn the
    /// HTTP/1.1 text back into fields (an HTTP/2 stream); nil: the head is written to the output.
    var responseFields: HTTP2HeaderBlock? { nil }
    /// The head in `responseFields` is complete. What follows in the output is the body:
    /// chunked when `chunked`, else `length` bytes; nothing when `bodyless`.
    func responseFieldsReady(bodyless: Bool, chunked: Bool, length: Int64) {}
}

/// A non-blocking TCP connection registered edge-triggered: `readable`/`writable` remember what
/// epoll said so the owner can stop and resume without touching the registration. Buffers are
/// taken from the worker's pool only while bytes are in them.
class SocketConnection: LoopHandler {
    /// Strong and `let`: the compiler borrows it for each use. Held `unowned(unsafe)`, the
    /// worker was retained and released around every call on it (15 times per h2c request).
    let worker: Worker
    final var fd: Int32 = -1
    final var inBuffer: ByteBuffer?
    final var outBuffer: ByteBuffer?
    final var readable = false
    final var writable = false
    final var peerClosed = false
    /// epoll reported EPOLLRDHUP: a FIN is queued behind the data, so a short read does not
    /// mean "drained" — keep reading until read returns 0.
    final var hangupSeen = false
    final var flushQueued = false
    /// A connection many exchanges write into (an HTTP/2 connection's streams): flushed after
    /// the others at the end of a loop iteration, so that what they deliver there goes out
    /// in the same write (`Worker.endOfIteration`).
    final var flushesLast = false
    /// Set when a write failed: the connection is going away.
    final var writeFailed = false
    final var lastError: Int32 = 0
    /// TLS on this connection (terminated or originated); nil for cleartext. The buffers above
    /// then hold plaintext.
    final var tls: TLSEngine?
    /// Ciphertext taken from the engine that the socket has not accepted yet.
    final var tlsOut: ByteBuffer?
    /// The TLS handshake or a record failed (`tls?.failureReason` says why).
    final var tlsFailed = false
    /// Set on a connection carried by an HTTP/2 stream (no socket; `fd` is `virtualDescriptor`).
    final var virtualPeer: VirtualPeer?
    static let virtualDescriptor: Int32 = .max

    /// The worker's buffer pool (strong `let`, as `worker`, so that taking and returning a
    /// buffer costs no retain/release of the pool).
    let buffers: BufferPool

    init(worker: Worker) {
        self.worker = worker
        self.buffers = worker.buffers
        super.init()
    }

    /// Reads once into the input buffer (taking one from the pool if needed), at most `limit`
    /// bytes. A short read means the socket is drained, so no extra read is spent to see EAGAIN.
    final func readIntoInput(limit: Int = .max) -> ReadOutcome {
        let buffer: ByteBuffer
        if let existing = inBuffer {
            buffer = existing
            if buffer.writableBytes == 0 {
                if buffer.readerIndex == 0 { return .full }
                compactInput()
            }
        } else {
            buffer = buffers.acquire()
            inBuffer = buffer
        }
        let room = min(buffer.writableBytes, max(1, limit))
        if let virtualPeer {
            let outcome = virtualPeer.fill(buffer, limit: room)
            if outcome != .data {
                readable = false
                releaseInputIfEmpty()
            }
            return outcome
        }
        if let tls {
            let outcome = readTLS(tls, into: buffer, limit: room)
            if outcome == .wouldBlock || outcome == .closed { releaseInputIfEmpty() }
            return outcome
        }
        let count = Sys.receive(fd, buffer.writePointer, room)
        if count > 0 {
            buffer.writerIndex += count
            if count < room && !hangupSeen { readable = false }
            return .data
        }
        if count == 0 {
            readable = false
            peerClosed = true
            releaseInputIfEmpty()
            return .closed
        }
        if count == Sys.wouldBlock {
            readable = false
            releaseInputIfEmpty()
            return .wouldBlock
        }
        readable = false
        lastError = Int32(-count)
        return .failed
    }

    /// Reads up to `count` bytes into `buffer` (not the input buffer), with the same
    /// readiness bookkeeping as `readIntoInput`.
    final func read(into buffer: ByteBuffer, count limit: Int) -> ReadOutcome {
        if let tls { return readTLS(tls, into: buffer, limit: limit) }
        if let virtualPeer {
            let outcome = virtualPeer.fill(buffer, limit: min(limit, buffer.writableBytes))
            if outcome != .data { readable = false }
            return outcome
        }
        let room = min(limit, buffer.writableBytes)
        if room == 0 { return .full }
        let count = Sys.receive(fd, buffer.writePointer, room)
        if count > 0 {
            buffer.writerIndex += count
            if count < room && !hangupSeen { readable = false }
            return .data
        }
        readable = false
        if count == 0 { peerClosed = true; return .closed }
        if count == Sys.wouldBlock { return .wouldBlock }
        lastError = Int32(-count)
        return .failed
    }

    /// Ciphertext from the socket through the engine into `buffer` as plaintext; advances the
    /// handshake on the way. Reads until the engine has plaintext or the socket is drained, so
    /// `readable` stays true while the engine may hold more records.
    private final func readTLS(_ tls: TLSEngine, into buffer: ByteBuffer, limit: Int) -> ReadOutcome {
        while true {
            switch tls.handshakeState {
            case .complete:
                let room = min(limit, buffer.writableBytes)
                if room == 0 { return .full }
                let result = tls.readPlaintext(into: buffer.writePointer, capacity: room)
                // Reading can produce records too (a TLS 1.3 key update's answer, an alert).
                if tls.pendingCiphertextCount > 0 { worker.queueFlush(self) }
                switch result {
                case .bytes(let count):
                    buffer.writerIndex += count
                    readable = true
                    return .data
                case .closed:
                    readable = false
                    peerClosed = true
                    return .closed
                case .failed:
                    readable = false
                    tlsFailed = true
                    return .failed
                case .needMoreInput:
                    break
                }
            case .failed:
                readable = false
                tlsFailed = true
                return .failed
            case .inProgress:
                break
            }
            let scratch = worker.tlsScratch
            let count = Sys.receive(fd, scratch.base, scratch.capacity)
            if count > 0 {
                tls.receiveCiphertext(scratch.base, count)
                if tls.handshakeState == .inProgress {
                    let state = tls.advanceHandshake()
                    // The handshake's own answer (and a failure's alert) goes out at once.
                    _ = sendTLSCiphertext(reportFailure: false)
                    if state == .failed || writeFailed {
                        readable = false
                        tlsFailed = state == .failed
                        return .failed
                    }
                    if state == .complete { tlsHandshakeCompleted() }
                }
                continue
            }
            readable = false
            if count == 0 { peerClosed = true; return .closed }
            if count == Sys.wouldBlock { return .wouldBlock }
            lastError = Int32(-count)
            return .failed
        }
    }

    /// Moves the engine's ciphertext to the socket. Returns the bytes sent, or -1 after a
    /// failed send (reported through `writeError` only when `reportFailure`).
    private final func sendTLSCiphertext(reportFailure: Bool) -> Int {
        guard let tls, fd >= 0, !writeFailed else { return -1 }
        var sent = 0
        while true {
            if tlsOut?.isEmpty ?? true {
                if tls.pendingCiphertextCount == 0 {
                    if let out = tlsOut { buffers.release(out); tlsOut = nil }
                    return sent
                }
                let out = tlsOut ?? buffers.acquire()
                tlsOut = out
                out.clear()
                out.writerIndex += tls.takeCiphertext(into: out.writePointer, capacity: out.writableBytes)
            }
            let out = tlsOut!
            let count = Sys.send(fd, out.readPointer, out.readableBytes)
            if count > 0 {
                out.consume(count)
                sent += count
                continue
            }
            if count == Sys.wouldBlock {
                writable = false
                return sent
            }
            writeFailed = true
            lastError = Int32(-count)
            if reportFailure { writeError() }
            return -1
        }
    }

    /// Encrypts pending plaintext (once the handshake is done) and sends the ciphertext. New
    /// plaintext goes into the engine only when earlier ciphertext has left, so a slow reader
    /// holds back the producer exactly as on a cleartext connection.
    private final func flushTLS(_ tls: TLSEngine) {
        if tls.handshakeState == .inProgress {
            // A client's first flush produces its ClientHello.
            if tls.advanceHandshake() == .failed {
                tlsFailed = true
                _ = sendTLSCiphertext(reportFailure: false)
                writeFailed = true
                writeError()
                return
            }
        }
        var progressed = false
        while true {
            let sent = sendTLSCiphertext(reportFailure: true)
            if sent < 0 { return }
            if sent > 0 { progressed = true }
            // The socket is full: EPOLLOUT brings us back.
            if !(tlsOut?.isEmpty ?? true) || tls.pendingCiphertextCount > 0 { break }
            guard tls.handshakeState == .complete, let buffer = outBuffer, !buffer.isEmpty else { break }
            let taken = tls.writePlaintext(buffer.readPointer, min(buffer.readableBytes, 64 * 1024))
            if taken < 0 {
                tlsFailed = true
                writeFailed = true
                writeError()
                return
            }
            buffer.consume(taken)
            releaseOutputIfEmpty()
            progressed = true
        }
        if progressed {
            outputProgressed()
        } else if pendingOutput == 0 {
            outputIdle()
        }
    }

    /// Ends our sending side: close_notify first on TLS, then the FIN.
    final func shutdownSending() {
        guard fd >= 0, virtualPeer == nil else { return }
        if let tls, !writeFailed, !tlsFailed, tls.handshakeState == .complete {
            tls.shutdown()
            _ = sendTLSCiphertext(reportFailure: false)
        }
        Sys.shutdownWrite(fd)
    }

    /// The TLS handshake finished: what was queued while it ran can go.
    func tlsHandshakeCompleted() {
        if pendingOutput > 0 { worker.queueFlush(self) }
    }

    /// Subclasses override to fix up offsets into the input buffer before it is compacted.
    func compactInput() { inBuffer?.compact() }

    @inline(__always)
    final func releaseInputIfEmpty() {
        if inBuffer?.isEmpty == true, let buffer = inBuffer.take() { buffers.release(buffer) }
    }

    @inline(__always)
    final func releaseOutputIfEmpty() {
        if outBuffer?.isEmpty == true, let buffer = outBuffer.take() { buffers.release(buffer) }
    }

    /// The output buffer, taken from the pool when there is none.
    @inline(__always)
    final func output() -> ByteBuffer {
        if let buffer = outBuffer { return buffer }
        let buffer = buffers.acquire()
        outBuffer = buffer
        return buffer
    }

    final var pendingOutput: Int {
        let plaintext = outBuffer?.readableBytes ?? 0
        guard let tls else { return plaintext }
        return plaintext + (tlsOut?.readableBytes ?? 0) + tls.pendingCiphertextCount
    }

    /// Writes pending output now. Called at the end of a loop iteration for queued connections
    /// and on EPOLLOUT.
    final func flush() {
        guard fd >= 0, !writeFailed else { return }
        if let virtualPeer {
            flushVirtual(virtualPeer)
            return
        }
        if let tls {
            flushTLS(tls)
            return
        }
        guard let buffer = outBuffer, !buffer.isEmpty else {
            outputIdle()
            return
        }
        let count = Sys.send(fd, buffer.readPointer, buffer.readableBytes)
        if count > 0 {
            buffer.consume(count)
            if buffer.isEmpty {
                releaseOutputIfEmpty()
            } else {
                writable = false
            }
            outputProgressed()
        } else if count == Sys.wouldBlock {
            writable = false
        } else {
            writeFailed = true
            lastError = Int32(-count)
            writeError()
        }
    }

    private final func flushVirtual(_ peer: VirtualPeer) {
        guard let buffer = outBuffer, !buffer.isEmpty else {
            outputIdle()
            return
        }
        let before = buffer.readableBytes
        peer.deliver(buffer)
        let moved = before - buffer.readableBytes
        releaseOutputIfEmpty()
        if moved > 0 {
            outputProgressed()
        } else {
            writable = false
        }
    }

    /// Output was written; producers held back by a full buffer may go on.
    func outputProgressed() {}
    /// A flush found nothing to write.
    func outputIdle() {}
    /// A write failed (the peer reset or closed).
    func writeError() {}

    /// Closes the descriptor and returns buffers to the pool.
    final func closeSocket() {
        guard fd >= 0 else { return }
        if let peer = virtualPeer {
            virtualPeer = nil
            worker.loop.forget(self)
            fd = -1
            if let buffer = inBuffer { buffers.release(buffer); inBuffer = nil }
            if let buffer = outBuffer { buffers.release(buffer); outBuffer = nil }
            readable = false
            writable = false
            peerClosed = false
            hangupSeen = false
            writeFailed = false
            peer.connectionClosed()
            return
        }
        if let tls {
            // close_notify, best effort: the peer learns the end was intended.
            if !writeFailed && !tlsFailed && tls.handshakeState == .complete {
                tls.shutdown()
                _ = sendTLSCiphertext(reportFailure: false)
            }
            self.tls = nil
            if let out = tlsOut { buffers.release(out); tlsOut = nil }
            tlsFailed = false
        }
        worker.loop.forget(self)
        Sys.close(fd)
        fd = -1
        if let buffer = inBuffer { buffers.release(buffer); inBuffer = nil }
        if let buffer = outBuffer { buffers.release(buffer); outBuffer = nil }
        readable = false
        writable = false
        peerClosed = false
        hangupSeen = false
        writeFailed = false
    }
}

/// A worker's accept socket for one listener.
final class ListenerHandler: LoopHandler, ResumableWork {
    private(set) var fd: Int32
    /// Replaced on a reload: new connections and new requests use the new listener settings.
    var listener: ListenerRuntime
    /// The configuration `listener` belongs to: a listener a reload removed keeps the old one
    /// for the requests its open connections still make.
    var routing: WorkerRouting
    unowned(unsafe) let worker: Worker
    private var activeConnections = 0
    private var pausedForLimit = false
    private var backoffUntil: Int64 = 0
    nonisolated(unsafe) private static var lastFDExhaustionLog: Int64 = 0

    init(fd: Int32, listener: ListenerRuntime, routing: WorkerRouting, worker: Worker) {
        self.fd = fd
        self.listener = listener
        self.routing = routing
        self.worker = worker
        super.init()
        // Accepting makes new connections: intake, done after the turn's established work.
        probationEndsAt = .max
    }

    override func handleEvents(_ events: UInt32) { acceptConnections() }

    func resumeWork() {
        resumeQueued = false
        acceptConnections()
    }

    /// Connections accepted per turn. Each is read at once, and on a flooded HTTP/2 listener
    /// each may carry a flood to refuse (~0.3 ms here): a batch of 128 could hold the loop for
    /// tens of ms while established clients wait; the rest are accepted in the next iteration.
    static let acceptBatch = 16
    /// Accepting also stops once the loop iteration has run this long (at least one connection
    /// per turn): each connection is read and handled in the accept loop, so under a flood of
    /// short-lived abusive connections (HTTP/2 SETTINGS/PING floods reconnecting 1,000+ times a
    /// second) a full batch could hold established clients' events back for milliseconds.
    /// Connections waiting in the backlog are taken in the next iterations, after those events.
    static let acceptTurnBudget: Int64 = 300_000
    private var resumeQueued = false

    override func deadlineReached(now: Int64) {
        backoffUntil = 0
        acceptConnections()
    }

    func acceptConnections() {
        guard fd >= 0, backoffUntil == 0 else { return }
        var peerStorage = sockaddr_storage()
        // A bounded batch per event keeps one busy listener from starving the loop; the edge
        // is re-armed by the next connection or by the deadline below.
        var accepted = 0
        while accepted < Self.acceptBatch {
            if accepted > 0 && Sys.monotonicNanoseconds() - worker.loop.now > Self.acceptTurnBudget { break }
            if activeConnections >= listener.maxConnectionsPerWorker {
                pausedForLimit = true
                return
            }
            let result = Sys.accept(fd, &peerStorage)
            if result < 0 {
                let code = Int32(-result)
                if code == EAGAIN { return }
                if code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM {
                    // Out of descriptors: stop accepting briefly instead of spinning.
                    backoffUntil = worker.loop.now + 100_000_000
                    worker.loop.setDeadline(self, backoffUntil)
                    let now = worker.loop.now
                    if now - Self.lastFDExhaustionLog > 1_000_000_000 {
                        Self.lastFDExhaustionLog = now
                        OperationalLog.error("accept paused", ["listener": listener.config.name, "error": errnoText(code)])
                    }
                    return
                }
                // ECONNABORTED and similar concern one connection only.
                continue
            }
            accepted += 1
            activeConnections += 1
            let clientFD = Int32(result)
            _ = Sys.setOption(clientFD, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let connection = worker.makeDownstream(fd: clientFD, peer: PeerAddress(storage: &peerStorage), listener: self)
            connection.start()
        }
        // Batch or time budget spent: come back in the next iteration, after the others' events.
        if !resumeQueued {
            resumeQueued = true
            worker.resumeLater(self)
        }
    }

    func connectionClosed() {
        activeConnections -= 1
        if pausedForLimit && activeConnections < listener.maxConnectionsPerWorker {
            pausedForLimit = false
            acceptConnections()
        }
    }

    func close() {
        guard fd >= 0 else { return }
        worker.loop.unregister(fd, self)
        Sys.close(fd)
        fd = -1
    }
}
