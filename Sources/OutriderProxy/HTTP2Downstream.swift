import Glibc
import OutriderConfig
import OutriderCore
import OutriderHTTP
import OutriderHTTP1
import OutriderHTTP2
import OutriderPosix
import OutriderTLS

/// A client connection speaking HTTP/2: h2 chosen by ALPN, or h2c by prior knowledge. The
/// frames are nghttp2's (`HTTP2Session`); each request stream runs as one HTTP/1.1 exchange on
/// a socket-less `DownstreamConnection` (`HTTP2StreamBridge` is its peer). So routing, filters,
/// limits, retries, timeouts, metrics and the access log are the same code for both protocols,
/// and the strict HTTP/1.1 parser sees every request an HTTP/2 client makes.
///
/// Taken over from the `DownstreamConnection` that accepted the socket, with its epoll
/// registration, its TLS session and whatever it had read.
final class HTTP2DownstreamConnection: SocketConnection, HTTP2SessionDelegate, ResumableWork {
    var listener: ListenerHandler?
    var liveIndex = -1
    private(set) var peer = PeerAddress()
    private var session: HTTP2Session?
    private var bridges = StreamTable<HTTP2StreamBridge>()
    private var freeBridges: [HTTP2StreamBridge] = []
    /// Streams whose HEADERS arrived in the bytes `session.receive` is working through: their
    /// exchanges start once it returns, so a stream the client resets in the same read (rapid
    /// reset, CVE-2023-44487) costs no routing, upstream connection or log line.
    private var pendingStarts: [(stream: Int32, bridge: HTTP2StreamBridge)] = []
    /// Streams whose exchange waits for the client to open the stream's window (see
    /// `startPendingExchanges`).
    private var windowWaitCount = 0
    private var clientIdentity: [UInt8]?
    private var originalDestination: AddressBox?
    private var gaugeMetrics: WorkerMetrics
    private var gaugeIndex = -1
    private var isClosed = false
    /// Close once the output (a GOAWAY) is written.
    private var closingAfterFlush = false
    private var draining = false
    private var failureCounted = false
    /// The deadline is the send-timeout sweep's (streams are open), not the idle timeout's.
    private var sweepArmed = false
    /// Successful writes to the socket; the sweep compares it to `writeMark` to see the
    /// connection itself stalled (its client reads nothing at all).
    private var writeProgress = 0
    private var writeMark = 0
    private var outputStalledSince: Int64 = 0
    /// Response heads being parsed from a stream's exchange (complete in one `deliver`).
    let responseTable: HeaderTable
    /// Response heads and trailers for nghttp2.
    let responseBlock = HTTP2HeaderBlock(entryCapacity: 24, storageCapacity: 2048)

    override init(worker: Worker) {
        gaugeMetrics = worker.routing.metrics
        responseTable = HeaderTable(capacity: worker.runtime.maxHeaders + 64)
        super.init(worker: worker)
        flushesLast = true
    }

    var isOutbound: Bool { listener?.listener.config.direction == .outbound }
    var streamCount: Int { bridges.count }

    func adopt(fd: Int32, peer: PeerAddress, listener: ListenerHandler, tls: TLSEngine?, tlsOut: ByteBuffer?,
               input: ByteBuffer?, output: ByteBuffer?, clientIdentity: [UInt8]?, originalDestination: AddressBox?,
               readable: Bool, writable: Bool, hangupSeen: Bool, gaugeMetrics: WorkerMetrics, gaugeIndex: Int) {
        self.fd = fd
        self.peer = peer
        self.listener = listener
        self.tls = tls
        self.tlsOut = tlsOut
        inBuffer = input
        outBuffer = output
        self.clientIdentity = clientIdentity
        self.originalDestination = originalDestination
        self.readable = readable
        self.writable = writable
        self.hangupSeen = hangupSeen
        self.gaugeMetrics = gaugeMetrics
        self.gaugeIndex = gaugeIndex
        var configuration = HTTP2Configuration()
        let limits = listener.listener.config.limits
        configuration.maxConcurrentStreams = UInt32(clamping: limits.h2MaxConcurrentStreams)
        configuration.maxHeaderListSize = UInt32(clamping: limits.maxHeaderBytes)
        do {
            let session = try HTTP2Session(role: .server, configuration: configuration, allocator: worker.http2Allocator)
            session.delegate = self
            self.session = session
        } catch {
            OperationalLog.error("http2 session not created", ["listener": listener.listener.config.name, "error": error.description])
        }
    }

    func start() {
        guard session != nil else { close(); return }
        armIdleDeadline()
        processInput()
        pumpOutput()
    }

    /// Counters move to a reloaded configuration's metrics (as `DownstreamConnection` does).
    func adoptRouting(_ next: WorkerRouting) {
        guard gaugeIndex >= 0, let listener, listener.routing === next, gaugeMetrics !== next.metrics else { return }
        gaugeMetrics.subtract(gaugeMetrics.layout.downstreamActive + gaugeIndex)
        gaugeMetrics = next.metrics
        gaugeIndex = listener.listener.index
        gaugeMetrics.add(gaugeMetrics.layout.downstreamActive + gaugeIndex)
    }

    // MARK: lifecycle

    /// SPEC §9: GOAWAY; streams in flight finish, then the connection closes.
    func beginDrain() {
        guard !draining, !isClosed, let session else { return }
        draining = true
        session.goAway()
        pumpOutput()
        closeIfFinished()
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        pendingStarts.removeAll()
        // The client is gone: every stream's exchange ends (logged as 499 when unanswered).
        session?.delegate = nil
        session = nil
        let open = bridges.allValues
        bridges.removeAll()
        for bridge in open { bridge.abandon() }
        // Bridges hold their connection strongly: letting them go ends the cycle.
        freeBridges.removeAll()
        if gaugeIndex >= 0 {
            gaugeMetrics.subtract(gaugeMetrics.layout.downstreamActive + gaugeIndex)
            gaugeIndex = -1
        }
        closeSocket()
        worker.retire(self)
    }

    private func fail(_ failure: HTTP2SessionFailure) {
        guard !failureCounted else { return }
        failureCounted = true
        if let listener {
            routing.metrics.add(routing.metrics.layout.http2Closed
                                + listener.listener.index * MetricsLayout.http2CloseReasons.count + failure.kind.metricsIndex)
        }
        // Floods close thousands of connections a second: one line per second per worker,
        // with how many were left out (the metric counts every one).
        if failure.kind != .badPreface, let leftOut = worker.connectionCloseLog.admit(now: worker.loop.now) {
            OperationalLog.info("http2 connection closed", ["listener": listener?.listener.config.name ?? "",
                                                             "client": peer.description, "reason": failure.description,
                                                             "similar_lines_left_out": String(leftOut)])
        }
        closingAfterFlush = true
        readable = false
        pumpOutput()
        if pendingOutput > 0 {
            worker.queueFlush(self)
        } else if !flushQueued {
            close()
        }
    }

    private var routing: WorkerRouting { listener?.routing ?? worker.routing }

    private func armIdleDeadline() {
        guard let listener, !closingAfterFlush, !isClosed else { return }
        if bridges.isEmpty {
            sweepArmed = false
            worker.loop.setDeadline(self, worker.loop.now + listener.listener.idleTimeout)
        } else if !sweepArmed {
            sweepArmed = true
            worker.loop.setDeadline(self, worker.loop.now + sendTimeoutSweepInterval(listener))
        }
    }

    /// The send timeout is the listener's `idle` (nginx's `send_timeout` is 60 s, as `idle`'s
    /// default); streams are looked at every quarter of it, so a stalled one is reset between
    /// 1 and 1.5 times it after its last progress.
    private func sendTimeoutSweepInterval(_ listener: ListenerHandler) -> Int64 {
        max(listener.listener.idleTimeout / 4, 50_000_000)
    }

    /// Send timeout: a stream with response bytes it could not send and no write progress for
    /// the listener's `idle` is reset (CANCEL); a connection whose socket took nothing for as
    /// long, with output waiting, is closed.
    private func sweepStalledStreams(now: Int64) {
        guard let listener, let session else { return }
        let timeout = listener.listener.idleTimeout
        if pendingOutput > 0 {
            if outputStalledSince == 0 || writeProgress != writeMark {
                writeMark = writeProgress
                outputStalledSince = now
            } else if now - outputStalledSince >= timeout {
                if let leftOut = worker.connectionCloseLog.admit(now: now) {
                    OperationalLog.info("http2 connection closed", ["listener": listener.listener.config.name,
                                                                     "client": peer.description,
                                                                     "reason": "send timeout: the client read nothing",
                                                                     "similar_lines_left_out": String(leftOut)])
                }
                close()
                return
            }
        } else {
            outputStalledSince = 0
        }
        var timedOut: [HTTP2StreamBridge] = []
        for (_, bridge) in bridges {
            // A stream waiting for its window was stamped when it began to wait.
            if bridge.waitsForWindow {
                if now - bridge.stalledSince >= timeout { timedOut.append(bridge) }
                continue
            }
            guard bridge.hasUnsentResponse else {
                bridge.stalledSince = 0
                continue
            }
            let sent = session.sentBytes(stream: bridge.stream)
            if bridge.stalledSince == 0 || sent != bridge.sentMark {
                bridge.sentMark = sent
                bridge.stalledSince = now
            } else if now - bridge.stalledSince >= timeout {
                timedOut.append(bridge)
            }
        }
        for bridge in timedOut { bridge.sendTimedOut() }
        pumpOutput()
    }

    override func outputProgressed() {
        writeProgress &+= 1
        pumpOutput()
    }

    override func deadlineReached(now: Int64) {
        if closingAfterFlush || isClosed { close(); return }
        if !bridges.isEmpty {
            sweepArmed = false
            sweepStalledStreams(now: now)
            armIdleDeadline()
            return
        }
        guard let session else { return }
        // Idle: say so politely, then close once the GOAWAY is out.
        session.goAway()
        closingAfterFlush = true
        pumpOutput()
        worker.loop.setDeadline(self, now + 1_000_000_000)
    }

    private func closeIfFinished() {
        guard !isClosed, let session else { return }
        if (session.isFinished || closingAfterFlush) && pendingOutput == 0 && !session.pendingOutput {
            close()
        }
    }

    // MARK: input

    override func handleEvents(_ events: UInt32) {
        if events & (Epoll.error | Epoll.hangup) != 0 && events & Epoll.input == 0 {
            close()
            return
        }
        if events & Epoll.readHangup != 0 { hangupSeen = true }
        if events & (Epoll.input | Epoll.readHangup) != 0 { readable = true }
        if events & Epoll.output != 0 {
            writable = true
            if pendingOutput > 0 { flush() } else { pumpOutput() }
        }
        if readable && !closingAfterFlush { processInput() }
    }

    /// Bytes handed to nghttp2 per turn. A client that never lets its socket run dry (a flood
    /// of frames, a fast upload) gets this much, then the worker's other connections get their
    /// turn and this one is resumed in the next iteration (`Worker.resumeLater`).
    private static let readBudget = 64 * 1024
    private var resumeQueued = false

    func resumeWork() {
        resumeQueued = false
        if readable && !closingAfterFlush && !isClosed {
            processInput()
        }
    }

    private func processInput() {
        var fed = 0
        while fd >= 0 && !isClosed && !closingAfterFlush {
            if let buffer = inBuffer, buffer.readableBytes > 0, let session {
                fed += buffer.readableBytes
                let result = session.receive(buffer.readPointer, buffer.readableBytes)
                buffer.consume(buffer.readableBytes)
                startPendingExchanges()
                if case .fatal(let failure) = result {
                    fail(failure)
                    return
                }
                continue
            }
            releaseInputIfEmpty()
            guard readable else { break }
            if fed >= Self.readBudget {
                if !resumeQueued {
                    resumeQueued = true
                    worker.resumeLater(self)
                }
                break
            }
            switch readIntoInput(limit: Self.readBudget) {
            case .data, .full:
                continue
            case .wouldBlock:
                break
            case .closed, .failed:
                // HTTP/2 clients do not half-close: the connection is over.
                close()
                return
            }
            break
        }
        pumpOutput()
    }

    // MARK: output

    /// Moves the session's frames into the output buffer and schedules the write.
    func pumpOutput() {
        guard !isClosed, fd >= 0, let session else { return }
        if session.pendingOutput {
            let out = output()
            if out.writableBytes < 16 * 1024 && out.readerIndex > 0 { out.compact() }
            let count = session.takeOutput(into: out.writePointer, capacity: out.writableBytes)
            out.writerIndex += count
            releaseOutputIfEmpty()
            // nghttp2 ends some sessions on its own (a protocol error, too many SETTINGS
            // entries): known once its GOAWAY went out.
            if count > 0 { worker.queueFlush(self) }
            if let failure = session.failure, !failureCounted {
                fail(failure)
                return
            }
            if count > 0 { return }
        }
        closeIfFinished()
    }

    override func outputIdle() { pumpOutput() }
    override func writeError() { close() }

    // MARK: streams (HTTP2SessionDelegate, called during `receive` and `takeOutput`)

    func http2Session(_ session: HTTP2Session, didReceiveHeaders headers: HTTP2HeaderBlock, stream: Int32, endStream: Bool) {
        guard let listener else { return }
        if draining {
            session.resetStream(stream: stream, code: .refusedStream)
            return
        }
        if headers.method == .connect || headers.protocolValue != nil {
            // CONNECT tunnels and RFC 8441 WebSockets are HTTP/1.1-only here.
            replyDirectly(stream, .notImplemented)
            return
        }
        let bridge = freeBridges.popLast() ?? HTTP2StreamBridge(connection: self)
        let input = buffers.acquire()
        let table = worker.acquireHeaderTable()
        var head = MessageHead()
        guard let status = bridge.begin(stream: stream, headers: headers, endStream: endStream, into: input,
                                        limits: DownstreamConnection.virtualHeadLimits(listener.listener), table: table, head: &head) else {
            buffers.release(input)
            worker.releaseHeaderTable(table)
            freeBridges.append(bridge)
            replyDirectly(stream, bridge.refusal)
            return
        }
        let exchange = worker.makeVirtualDownstream()
        bridges[stream] = bridge
        bridge.exchange = exchange
        exchange.inBuffer = input
        exchange.openVirtual(bridge, peer: peer, listener: listener, viaTLS: tls != nil || listener.listener.terminatesTLS,
                             clientIdentity: clientIdentity, originalDestination: originalDestination,
                             writtenHead: (status, table, head))
        armIdleDeadline()
        pendingStarts.append((stream, bridge))
    }

    /// Starts the exchanges of the streams opened by the bytes just received and still open.
    ///
    /// A stream whose window the client keeps shut (INITIAL_WINDOW_SIZE 0) could not take one
    /// byte of its response: its request waits here until a WINDOW_UPDATE or SETTINGS opens
    /// the window, or the send timeout resets it. Forwarded at once, each such stream had the
    /// app write its whole response into the kernel (on loopback nginx's socket buffer takes
    /// 1 MiB at once): the zero-window attack of `scripts/flood.sh h2` (800 streams of a
    /// 1 MiB file) cost the app 800 MiB of copying in one burst, and every other client of
    /// the app waited behind it (legit p99 ~1 s with p50 unchanged). The response head waits
    /// too; a client that wants it before opening the window gets it once it does.
    private func startPendingExchanges() {
        guard !pendingStarts.isEmpty else { return }
        var index = 0
        while index < pendingStarts.count {
            let (stream, bridge) = pendingStarts[index]
            index += 1
            guard !isClosed, bridges[stream] === bridge, let session else { continue }
            if session.sendWindowIsShut(stream: stream) {
                if !bridge.waitsForWindow {
                    bridge.waitsForWindow = true
                    bridge.stalledSince = worker.loop.now
                    windowWaitCount += 1
                }
            } else {
                if bridge.waitsForWindow {
                    bridge.waitsForWindow = false
                    windowWaitCount -= 1
                }
                bridge.startExchange()
            }
        }
        pendingStarts.removeAll(keepingCapacity: true)
    }

    func http2Session(_ session: HTTP2Session, sendWindowChanged stream: Int32) {
        guard windowWaitCount > 0 else { return }
        // Started after `receive` returns, as new streams are.
        if stream != 0 {
            if let bridge = bridges[stream], bridge.waitsForWindow { pendingStarts.append((stream, bridge)) }
            return
        }
        for (id, bridge) in bridges where bridge.waitsForWindow { pendingStarts.append((id, bridge)) }
    }

    func http2Session(_ session: HTTP2Session, didReceiveData bytes: UnsafePointer<UInt8>, count: Int, stream: Int32) {
        guard let bridge = bridges[stream] else {
            session.consume(stream: stream, bytes: count)
            return
        }
        bridge.bodyArrived(bytes, count)
    }

    func http2Session(_ session: HTTP2Session, didReceiveTrailers trailers: HTTP2HeaderBlock, stream: Int32) {
        if let bridge = bridges[stream] { bridge.trailersArrived(trailers) }
    }

    func http2Session(_ session: HTTP2Session, didEndStream stream: Int32) {
        if let bridge = bridges[stream] { bridge.requestEnded() }
    }

    func http2Session(_ session: HTTP2Session, didResetStream stream: Int32, errorCode: HTTP2ErrorCode) {
        if let bridge = bridges[stream] { bridge.resetByClient() }
    }

    func http2Session(_ session: HTTP2Session, didCloseStream stream: Int32, errorCode: HTTP2ErrorCode) {
        guard let bridge = bridges.removeValue(forKey: stream) else { return }
        // A stream that ran to its end: the connection does useful work, it leaves probation.
        if errorCode == .noError, bridge.responseEnded { probationEndsAt = 0 }
        if bridge.waitsForWindow {
            bridge.waitsForWindow = false
            windowWaitCount -= 1
        }
        bridge.streamClosed()
        if freeBridges.count < 64 { freeBridges.append(bridge) }
        armIdleDeadline()
        if draining { worker.queueFlush(self) }
    }

    func http2Session(_ session: HTTP2Session, streamWindowOpened stream: Int32) {
        if let bridge = bridges[stream] { bridge.roomOpened() }
    }

    /// A reply made here, for a stream no exchange was started for.
    private func replyDirectly(_ stream: Int32, _ reason: LocalReplyReason) {
        guard let session else { return }
        let block = responseBlock
        block.removeAll()
        block.appendStatus(reason.status)
        block.append("content-type", "text/plain")
        block.append("x-outrider-error", reason.token)
        let message = reason.message
        do {
            try session.submitResponse(stream: stream, headers: block, endStream: false)
            try session.submitData(stream: stream, message.utf8Start, message.utf8CodeUnitCount, endStream: true)
        } catch {
            session.resetStream(stream: stream, code: .internalError)
        }
        worker.queueFlush(self)
    }

    // MARK: used by the stream bridges

    func credit(_ stream: Int32, _ count: Int) {
        guard let session, count > 0 else { return }
        session.consume(stream: stream, bytes: count)
        worker.queueFlush(self)
    }

    func submitResponse(_ stream: Int32, endStream: Bool) -> Bool {
        guard let session else { return false }
        do {
            try session.submitResponse(stream: stream, headers: responseBlock, endStream: endStream)
        } catch {
            session.resetStream(stream: stream, code: .internalError)
            return false
        }
        worker.queueFlush(self)
        return true
    }

    /// False: the stream's send buffer is full (wait for `roomOpened`), or the stream failed
    /// (`failed` set).
    func submitData(_ stream: Int32, _ bytes: UnsafePointer<UInt8>, _ count: Int, endStream: Bool, failed: inout Bool) -> Bool {
        guard let session else { failed = true; return false }
        worker.queueFlush(self)
        do {
            return try session.submitData(stream: stream, bytes, count, endStream: endStream)
        } catch {
            session.resetStream(stream: stream, code: .internalError)
            failed = true
            return false
        }
    }

    func submitTrailers(_ stream: Int32, _ trailers: HTTP2HeaderBlock) {
        guard let session else { return }
        do {
            try session.submitTrailers(stream: stream, trailers: trailers)
        } catch {
            session.resetStream(stream: stream, code: .internalError)
        }
        worker.queueFlush(self)
    }

    func reset(_ stream: Int32, _ code: HTTP2ErrorCode) {
        session?.resetStream(stream: stream, code: code)
        worker.queueFlush(self)
    }

    func sendRoom(_ stream: Int32) -> Int {
        session?.sendRoom(stream: stream) ?? 0
    }

    func bufferedSendBytes(_ stream: Int32) -> Int {
        session?.bufferedSendBytes(stream: stream) ?? 0
    }
}

/// One request stream of an `HTTP2DownstreamConnection`, seen by its exchange as an HTTP/1.1
/// client: the request head is written as HTTP/1.1 once, DATA frames follow as the body
/// (chunked when the client gave no content-length) and trailers as chunked trailers; the
/// exchange's HTTP/1.1 response is parsed back into HEADERS, DATA and trailers.
///
/// Flow control: DATA is credited back to the client only as the exchange takes it, so a slow
/// upstream holds the client to its stream window (64 KiB); response bytes stay in the
/// exchange's output while the stream's send buffer is full, which stops the exchange reading
/// its upstream.
final class HTTP2StreamBridge: VirtualPeer {
    /// Strong: a `let` the compiler can borrow costs no retain per use, where an unowned one
    /// is retained around every call (the connection drops its bridges when it closes).
    let connection: HTTP2DownstreamConnection
    var stream: Int32 = 0
    var exchange: DownstreamConnection?
    /// Why `begin` refused the request.
    private(set) var refusal: LocalReplyReason = .badRequest

    // Request side.
    private var body = HTTP2BodyRelay()
    private var declaredLength: Int64 = -1
    private var receivedLength: Int64 = 0
    private var requestIsHead = false
    private var clientReset = false
    /// The exchange runs (see `HTTP2DownstreamConnection.pendingStarts`); until then request
    /// bytes only gather in `body`.
    private var started = false

    // Response side.
    private enum ResponseState { case head, length(Int64), chunked, done }
    private var responseState = ResponseState.head
    /// The whole response was handed to the session.
    var responseEnded: Bool {
        if case .done = responseState { return true }
        return false
    }
    private var decoder = ChunkedDecoder()
    private var waitingForRoom = false
    /// The request waits for the client to open the stream's window before it is forwarded
    /// (`HTTP2DownstreamConnection.startPendingExchanges`).
    var waitsForWindow = false
    /// Send timeout: when the stream was first seen with bytes it could not send
    /// (`hasUnsentResponse`) and no write progress since (0: not stalled), and its sent-bytes
    /// count then.
    var stalledSince: Int64 = 0
    var sentMark = 0
    private var trailerCount = 0
    private var trailerBlock: HTTP2HeaderBlock?

    init(connection: HTTP2DownstreamConnection) {
        self.connection = connection
    }

    private var worker: Worker { connection.worker }

    /// Writes the request head as HTTP/1.1 into `out`, recording each part in `table` and
    /// `head` as it is written (with the checks the exchange's parser would make of the text,
    /// which then has nothing to parse). Nil (with `refusal`) when the request cannot be one;
    /// else what the parser would have said: `.complete`, or the failure to answer with.
    func begin(stream: Int32, headers: HTTP2HeaderBlock, endStream: Bool, into out: ByteBuffer, limits: HeadLimits,
               table: HeaderTable, head: inout MessageHead) -> ParseStatus? {
        self.stream = stream
        started = false
        body.start(chunked: false, ended: endStream)
        declaredLength = -1
        receivedLength = 0
        clientReset = false
        responseState = .head
        decoder = ChunkedDecoder()
        waitingForRoom = false
        stalledSince = 0
        sentMark = 0
        requestIsHead = headers.method == .head
        refusal = .badRequest
        guard let method = headers.methodBytes, let path = headers.path, path.count > 0,
              path[0] == UInt8(ascii: "/") || (path.count == 1 && path[0] == UInt8(ascii: "*")) else { return nil }
        // Room: the head as written plus what is added below; over it, 431 as HTTP/1.1 would.
        refusal = .headersTooLarge
        guard headers.listSize + 256 < out.writableBytes else { return nil }
        var writer = HeadParser(kind: .request, limits: limits)
        let base = UnsafePointer(out.base)
        writer.beginWritten(at: out.writerIndex, headers: table, head: &head)
        let methodStart = out.writerIndex
        out.append(method.baseAddress!, count: method.count)
        out.append(UInt8(ascii: " "))
        let targetStart = out.writerIndex
        out.append(path.baseAddress!, count: path.count)
        out.append(" HTTP/1.1\r\n")
        var status = writer.recordWrittenRequestLine(base, methodStart: methodStart, methodLength: method.count,
                                                     targetStart: targetStart, targetLength: path.count, head: &head)
        @inline(__always) func field(_ name: UnsafePointer<UInt8>, _ nameCount: Int, _ kind: HeaderKind,
                                     _ value: UnsafePointer<UInt8>, _ valueCount: Int) {
            guard status == .needMore else { return }
            let nameStart = out.writerIndex
            out.append(name, count: nameCount)
            out.append(": ")
            let valueStart = out.writerIndex
            out.append(value, count: valueCount)
            out.append("\r\n")
            status = writer.recordWrittenField(base, nameStart: nameStart, nameLength: nameCount, valueStart: valueStart,
                                               valueLength: valueCount, kind: kind, headers: table, head: &head)
        }
        @inline(__always) func field(_ name: StaticString, _ kind: HeaderKind, _ value: StaticString) {
            field(name.utf8Start, name.utf8CodeUnitCount, kind, value.utf8Start, value.utf8CodeUnitCount)
        }
        let authority = headers.authority
        if let authority {
            let name: StaticString = "host"
            field(name.utf8Start, 4, .host, authority.baseAddress ?? name.utf8Start, authority.count)
        }
        var cookies = 0
        for index in 0..<headers.count {
            let entry = headers[index]
            guard entry.pseudo == .none else { continue }
            let name = headers.name(at: index)
            let value = headers.value(at: index)
            switch entry.kind {
            case .host:
                if authority != nil { continue }
            case .expect:
                // Nothing waits for a 100 here: the body comes as the window allows.
                continue
            case .contentLength:
                guard let length = parseContentLength(value) else { refusal = .badRequest; return nil }
                declaredLength = length
            default:
                if name.count == 6 && equalsLowercase(name.baseAddress!, 6, "cookie") {
                    cookies += 1
                    continue
                }
            }
            field(name.baseAddress!, name.count, entry.kind, value.baseAddress ?? name.baseAddress!, value.count)
        }
        if cookies > 0 && status == .needMore {
            // RFC 9113 §8.2.3: split cookie fields are one header for HTTP/1.1.
            let nameStart = out.writerIndex
            out.append("cookie: ")
            let valueStart = out.writerIndex
            var first = true
            for index in 0..<headers.count where headers[index].pseudo == .none {
                let name = headers.name(at: index)
                guard name.count == 6 && equalsLowercase(name.baseAddress!, 6, "cookie") else { continue }
                if !first { out.append("; ") }
                first = false
                let value = headers.value(at: index)
                out.append(value.baseAddress ?? name.baseAddress!, count: value.count)
            }
            let valueLength = out.writerIndex - valueStart
            out.append("\r\n")
            status = writer.recordWrittenField(base, nameStart: nameStart, nameLength: 6, valueStart: valueStart,
                                               valueLength: valueLength, kind: HeaderKind.classifyToken(base + nameStart, 6),
                                               headers: table, head: &head)
        }
        if declaredLength < 0 {
            if !endStream {
                body.chunked = true
                field("transfer-encoding", .transferEncoding, "chunked")
            } else if headers.method == .post || headers.method == .put || headers.method == .patch {
                field("content-length", .contentLength, "0")
            }
        } else if endStream && declaredLength != 0 {
            refusal = .badRequest
            return nil
        }
        // One exchange per stream: the exchange ends with its response.
        field("connection", .connection, "close")
        out.append("\r\n")
        guard out.writableBytes > 0 else {
            refusal = .headersTooLarge
            return nil
        }
        guard status == .needMore else { return status }
        return writer.finishWritten(base, headEnd: out.writerIndex, headers: table, head: &head)
    }

    func startExchange() {
        guard !started, let exchange else { return }
        started = true
        exchange.startVirtual()
    }

    func bodyArrived(_ bytes: UnsafePointer<UInt8>, _ count: Int) {
        receivedLength += Int64(count)
        guard let exchange, declaredLength < 0 || receivedLength <= declaredLength else {
            // Nobody takes it (the exchange answered and ended), or more than content-length
            // (nghttp2 refuses that too): give the window back and drop it.
            connection.credit(stream, count)
            return
        }
        guard body.append(bytes, count, pool: worker.buffers) else {
            // Beyond the stream window we announced: the client broke flow control.
            connection.reset(stream, .flowControlError)
            exchange.close()
            return
        }
        if started { exchange.virtualInputArrived() }
    }

    func trailersArrived(_ trailers: HTTP2HeaderBlock) {
        guard exchange != nil else { return }
        body.appendTrailers(trailers, pool: worker.buffers)
    }

    func requestEnded() {
        body.ended = true
        if started { exchange?.virtualInputArrived() }
    }

    func resetByClient() {
        clientReset = true
        exchange?.close()
    }

    /// The stream made room (its bytes went out, or its connection's buffers drained): the
    /// exchange may deliver and read more.
    func roomOpened() {
        guard let exchange else { return }
        waitingForRoom = false
        worker.queueFlush(exchange)
    }

    /// Bytes of the response are waiting for the client: in the session's send buffer, or in
    /// the exchange's output because the stream had no room.
    var hasUnsentResponse: Bool {
        waitingForRoom || connection.bufferedSendBytes(stream) > 0
    }

    /// The client took nothing of this stream for the send timeout: RST_STREAM(CANCEL), and the
    /// exchange ends as one whose client went away (its upstream, and its place in the
    /// cluster's circuit breaker, are given back).
    func sendTimedOut() {
        clientReset = true
        connection.reset(stream, .cancel)
        let exchange = self.exchange
        exchange?.close()
    }

    /// The connection closed under the exchange.
    func abandon() {
        clientReset = true
        let exchange = self.exchange
        self.exchange = nil
        exchange?.close()
        releaseBuffers()
    }

    /// The stream is gone (its last frame went out, or a reset).
    func streamClosed() {
        clientReset = true
        let exchange = self.exchange
        self.exchange = nil
        exchange?.close()
        releaseBuffers()
    }

    private func releaseBuffers() {
        body.release(pool: worker.buffers)
    }

    // MARK: VirtualPeer

    override func outputRoom() -> Int {
        connection.sendRoom(stream)
    }

    override func fill(_ buffer: ByteBuffer, limit: Int) -> ReadOutcome {
        var taken = 0
        let outcome = body.fill(buffer, limit: limit, pool: worker.buffers, taken: &taken)
        if taken > 0 { connection.credit(stream, taken) }
        return outcome
    }

    override func deliver(_ buffer: ByteBuffer) {
        var failed = false
        while buffer.readableBytes > 0 && !waitingForRoom && !failed {
            switch responseState {
            case .head:
                let table = connection.responseTable
                table.reset()
                var parser = HeadParser(kind: .response, limits: HeadLimits(maxHeaderBytes: buffer.capacity, maxHeaders: table.capacity))
                parser.begin(at: buffer.readerIndex)
                var head = MessageHead()
                switch parser.parse(buffer, headers: table, head: &head) {
                case .needMore:
                    return
                case .failed:
                    // Our own serialization: cannot happen; never leave the stream hanging.
                    connection.reset(stream, .internalError)
                    responseState = .done
                    buffer.consume(buffer.readableBytes)
                    return
                case .complete:
                    submitHead(head, table, buffer)
                    buffer.consume(Int(head.headEnd) - buffer.readerIndex)
                }
            case .length(let remaining):
                let count = Int(min(Int64(buffer.readableBytes), remaining))
                let last = Int64(count) == remaining
                let more = connection.submitData(stream, buffer.readPointer, count, endStream: last, failed: &failed)
                buffer.consume(count)
                responseState = last ? .done : .length(remaining - Int64(count))
                if !more && !failed && !last { waitingForRoom = true }
            case .chunked:
                switch decoder.next(buffer) {
                case .needMore:
                    return
                case .failed:
                    connection.reset(stream, .internalError)
                    responseState = .done
                    buffer.consume(buffer.readableBytes)
                case .data(let offset, let count):
                    let more = connection.submitData(stream, UnsafePointer(buffer.base + offset), count, endStream: false, failed: &failed)
                    decoder.consumeData(buffer, count)
                    if !more && !failed { waitingForRoom = true }
                case .trailer(let offset, let count):
                    let block = trailerBlock ?? HTTP2HeaderBlock(entryCapacity: 4, storageCapacity: 256)
                    trailerBlock = block
                    if trailerCount == 0 { block.removeAll() }
                    if appendHeaderLine(block, UnsafePointer(buffer.base + offset), count) { trailerCount += 1 }
                case .end:
                    if trailerCount > 0, let block = trailerBlock {
                        connection.submitTrailers(stream, block)
                    } else {
                        _ = connection.submitData(stream, buffer.readPointer, 0, endStream: true, failed: &failed)
                    }
                    responseState = .done
                }
            case .done:
                // Nothing follows a response on a stream.
                buffer.consume(buffer.readableBytes)
            }
        }
    }

    /// HEADERS from the exchange's response head; hop-by-hop fields stay behind.
    private func submitHead(_ head: MessageHead, _ table: HeaderTable, _ buffer: ByteBuffer) {
        let status = head.status
        if status >= 100 && status < 200 { return }   // interim: not relayed
        let block = connection.responseBlock
        block.removeAll()
        block.appendStatus(status)
        let base = UnsafePointer(buffer.base)
        for index in 0..<table.count {
            let entry = table[index]
            switch entry.kind {
            case .connection, .keepAlive, .proxyConnection, .transferEncoding, .upgrade, .te, .listedInConnection:
                continue
            default:
                block.append(name: UnsafeBufferPointer(start: base + Int(entry.nameStart), count: Int(entry.nameLength)),
                             value: UnsafeBufferPointer(start: base + Int(entry.valueStart), count: Int(entry.valueLength)))
            }
        }
        submitResponseFields(bodyless: requestIsHead || status == 204 || status == 304, chunked: head.isChunked,
                             length: head.contentLength)
    }

    /// Submits `connection.responseBlock` as the response's HEADERS; the body (if any) follows.
    private func submitResponseFields(bodyless: Bool, chunked: Bool, length: Int64) {
        trailerCount = 0
        if bodyless || (!chunked && length == 0) {
            responseState = .done
            _ = connection.submitResponse(stream, endStream: true)
        } else if chunked {
            responseState = .chunked
            decoder = ChunkedDecoder()
            if !connection.submitResponse(stream, endStream: false) { responseState = .done }
        } else {
            responseState = .length(max(0, length))
            if !connection.submitResponse(stream, endStream: false) { responseState = .done }
        }
    }

    override var responseFields: HTTP2HeaderBlock? {
        guard case .head = responseState else { return nil }
        return connection.responseBlock
    }

    override func responseFieldsReady(bodyless: Bool, chunked: Bool, length: Int64) {
        submitResponseFields(bodyless: bodyless || requestIsHead, chunked: chunked, length: length)
    }

    override func connectionClosed() {
        exchange = nil
        switch responseState {
        case .done:
            break
        default:
            // The exchange ended before its response did: the client must not take a cut
            // body for a whole one.
            if !clientReset { connection.reset(stream, .internalError) }
            responseState = .done
        }
        // Request bytes still coming are dropped (and credited) from now on.
        connection.credit(stream, body.release(pool: worker.buffers))
    }
}

extension HTTP2SessionFailure.Kind {
    /// Index into `MetricsLayout.http2CloseReasons`.
    var metricsIndex: Int {
        switch self {
        case .badPreface: return 0
        case .protocolError: return 1
        case .flood: return 2
        case .rapidReset: return 3
        case .emptyFrameFlood: return 4
        case .continuationFlood: return 5
        case .internalError: return 6
        }
    }
}
