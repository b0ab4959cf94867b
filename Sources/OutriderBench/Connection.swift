import Glibc
import OutriderCore
import OutriderPosix
import OutriderTLS

/// One connection to the target, the part every protocol shares: the non-blocking connect, the
/// TLS handshake and ciphertext plumbing, the pause after a failed connect, reconnecting, and
/// the open-loop bookkeeping the thread's timer uses. `HTTP1Connection` and `HTTP2Connection`
/// add the protocol through the hooks at the end. Everything is allocated when the connection
/// is created (the TLS engine and the HTTP/2 session once per TCP connection): the steady state
/// allocates nothing.
class BenchConnection: LoopHandler {
    enum Phase { case closed, connecting, handshaking, ready }

    unowned(unsafe) let worker: BenchWorker
    let localIndex: Int32
    let globalIndex: Int

    var fd: Int32 = -1
    var phase: Phase = .closed
    var writable = false
    var hangupSeen = false
    /// Waiting out the pause after a failed connect.
    var backingOff = false

    var tls: TLSEngine?
    /// Ciphertext taken from the engine that the socket has not accepted yet (TLS only).
    let cipherOut: ByteBuffer?

    /// Requests issued on this connection and not answered (nor failed) yet.
    var inFlight = 0

    // Open loop.
    var sequence: Int64 = 0
    var nextIntended: Int64 = 0
    /// The time of this connection's entry in the thread's timer heap; 0 = none.
    var scheduledAt: Int64 = 0

    init(worker: BenchWorker, localIndex: Int, globalIndex: Int) {
        self.worker = worker
        self.localIndex = Int32(localIndex)
        self.globalIndex = globalIndex
        cipherOut = worker.plan.tlsContext == nil ? nil : ByteBuffer(capacity: 17 * 1024 + 512)
        super.init()
        if let schedule = worker.plan.schedule {
            nextIntended = schedule.intendedTime(start: worker.plan.startTime, connection: globalIndex, request: 0)
        }
    }

    // MARK: protocol hooks

    /// The transport is up (TCP connected, TLS handshake done): set the protocol up. A reason
    /// when the connection cannot be used (counted as a failed connect).
    func startProtocol() -> String? { nil }
    /// Cleartext bytes are readable (ready phase).
    func readCleartext() {}
    /// The TLS engine holds received records: decrypt and process them. False when the
    /// connection went away.
    func drainPlaintext(_ tls: TLSEngine) -> Bool { true }
    /// The socket became writable again (ready phase). False when the connection went away.
    func writeReady() -> Bool { true }
    /// The deadline set in the ready phase came.
    func readyDeadline(now: Int64) {}
    /// Issues the requests that are due and writes them.
    func pump() {}
    /// The target closed the connection (read returned 0 or close_notify).
    func peerClosed() {
        if inFlight > 0 {
            fail(.read, count: inFlight)
        } else {
            closeAndReconnect(failedKind: nil)
        }
    }
    /// Forgets the protocol's state as the socket closes (`inFlight` is already settled).
    func resetProtocolState() {}

    // MARK: connecting

    func connect() {
        if slot >= 0 { worker.loop.forget(self) }
        backingOff = false
        let plan = worker.plan
        let created = Sys.socket(family: plan.address.family)
        if created < 0 {
            connectFailed(errnoText(Int32(-created)))
            return
        }
        fd = Int32(created)
        Sys.setNoDelay(fd)
        let result = Sys.connect(fd, plan.address)
        if result != 0 && result != -Int(EINPROGRESS) {
            connectFailed(errnoText(Int32(-result)))
            return
        }
        if worker.loop.register(fd, self) < 0 {
            connectFailed("epoll registration failed")
            return
        }
        phase = .connecting
        worker.loop.setDeadline(self, Sys.monotonicNanoseconds() + plan.options.timeoutNanos)
    }

    private func connected() {
        writable = true
        guard let context = worker.plan.tlsContext else {
            becomeReady()
            return
        }
        do {
            tls = try TLSEngine(client: context, serverName: worker.plan.options.url.host)
        } catch {
            connectFailed(error.description)
            return
        }
        phase = .handshaking
        // The ClientHello.
        if tls!.advanceHandshake() == .failed {
            connectFailed(tls!.failureReason ?? "TLS handshake failed")
            return
        }
        _ = flushCipher()
    }

    private func becomeReady() {
        if let reason = startProtocol() {
            connectFailed(reason)
            return
        }
        phase = .ready
        worker.loop.setDeadline(self, 0)
        worker.connectionSucceeded()
        pump()
    }

    /// A connect (or TLS handshake) failed: count it, close, and try again after a pause.
    func connectFailed(_ reason: String) {
        worker.connectionFailed(reason)
        closeSocket()
        guard !worker.stopping else { return }
        backingOff = true
        worker.loop.attach(self)
        worker.loop.setDeadline(self, Sys.monotonicNanoseconds() + BenchWorker.reconnectPauseNanos)
    }

    // MARK: events

    override func handleEvents(_ events: UInt32) {
        if phase == .connecting {
            if events & (Epoll.error | Epoll.hangup) != 0 || (events & Epoll.output != 0 && Sys.socketError(fd) != 0) {
                let code = Sys.socketError(fd)
                connectFailed(code != 0 ? errnoText(code) : "connection closed while connecting")
                return
            }
            guard events & Epoll.output != 0 else { return }
            connected()
            if fd < 0 { return }
        }
        if events & Epoll.output != 0 {
            writable = true
            if phase == .handshaking {
                if !flushCipher() { return }
            } else if phase == .ready {
                if !writeReady() { return }
            }
        }
        if events & (Epoll.input | Epoll.readHangup | Epoll.hangup | Epoll.error) != 0 {
            if events & Epoll.readHangup != 0 { hangupSeen = true }
            if tls != nil { readTLS() } else if phase == .ready { readCleartext() }
        }
    }

    override func deadlineReached(now: Int64) {
        switch phase {
        case .closed:
            if backingOff && !worker.stopping { connect() }
        case .connecting, .handshaking:
            connectFailed("timed out after \(worker.plan.options.timeoutNanos / 1_000_000) ms")
        case .ready:
            readyDeadline(now: now)
        }
    }

    // MARK: TLS

    private func readTLS() {
        guard let tls else { return }
        let scratch = worker.cipherScratch
        while fd >= 0 {
            let count = Sys.receive(fd, scratch.base, scratch.capacity)
            if count > 0 {
                tls.receiveCiphertext(scratch.base, count)
                if phase == .handshaking {
                    let state = tls.advanceHandshake()
                    if !flushCipher() { return }
                    if state == .failed {
                        connectFailed(tls.failureReason ?? "TLS handshake failed")
                        return
                    }
                    if state == .complete {
                        becomeReady()
                        if fd < 0 { return }
                    }
                }
                if phase == .ready {
                    if !drainPlaintext(tls) { return }
                }
                if count < scratch.capacity && !hangupSeen { break }
                continue
            }
            if count == 0 {
                if phase == .handshaking {
                    connectFailed("connection closed during the TLS handshake")
                } else {
                    peerClosed()
                }
                return
            }
            if count == Sys.wouldBlock { break }
            if phase == .handshaking {
                connectFailed(errnoText(Int32(-count)))
            } else {
                fail(.read, count: max(inFlight, 1))
            }
            return
        }
        if phase == .ready { pump() }
    }

    /// Sends the engine's ciphertext. False when the connection went away.
    func flushCipher() -> Bool {
        guard let tls, let out = cipherOut else { return true }
        while true {
            if out.isEmpty {
                if tls.pendingCiphertextCount == 0 { return true }
                out.clear()
                out.writerIndex += tls.takeCiphertext(into: out.writePointer, capacity: out.capacity)
                if out.isEmpty { return true }
            }
            guard writable else { return true }
            let sent = Sys.send(fd, out.readPointer, out.readableBytes)
            if sent > 0 {
                out.consume(sent)
                continue
            }
            if sent == Sys.wouldBlock {
                writable = false
                return true
            }
            if phase == .handshaking {
                connectFailed(errnoText(Int32(-sent)))
            } else {
                fail(.write, count: max(inFlight, 1))
            }
            return false
        }
    }

    // MARK: failing and closing

    /// Counts `count` errors of `kind` (the requests this connection loses) and starts over.
    func fail(_ kind: ErrorKind, count: Int) {
        closeAndReconnect(failedKind: kind, count: count)
    }

    func closeAndReconnect(failedKind: ErrorKind?, count: Int = 0) {
        if let failedKind { worker.countError(failedKind, count) }
        closeSocket()
        worker.requestsAbandoned()
        if !worker.stopping { connect() }
    }

    /// Closes the socket and forgets every request in flight (already counted by the caller).
    func closeSocket() {
        if fd >= 0 {
            worker.loop.forget(self)
            Sys.close(fd)
            fd = -1
        } else if slot >= 0 {
            worker.loop.forget(self)
        }
        phase = .closed
        writable = false
        hangupSeen = false
        worker.inFlight -= inFlight
        inFlight = 0
        resetProtocolState()
        tls = nil
        cipherOut?.clear()
    }
}
