import Glibc
import OutriderBalancing
import OutriderConfig
import OutriderCore
import OutriderFilters
import OutriderHTTP
import OutriderHTTP1
import OutriderHTTP2
import OutriderPosix
import OutriderTLS

/// A client connection speaking HTTP/1.x: parses each request head, routes it, forwards it to
/// an upstream connection, relays the response, and logs the exchange. One exchange at a time;
/// pipelined requests wait in the input buffer and are answered in order.
final class DownstreamConnection: SocketConnection {
    enum Phase {
        case waitingHead
        /// Routed; a filter is waiting for work done off the loop (the head stays buffered).
        case filtering
        /// Routed; waiting for the upstream connection.
        case connecting
        /// Routed; a try failed and the next waits for its backoff (SPEC §7).
        case retryWait
        /// Request going up, response coming back.
        case forwarding
        /// Bytes both ways after a 101 or a CONNECT 2xx.
        case tunnel
        /// A last response is being written; close once it is out.
        case closingAfterFlush
        case closed
    }

    var listener: ListenerHandler?
    var liveIndex = -1
    private(set) var peer = PeerAddress()
    /// Carried by an HTTP/2 stream (one exchange, no socket): not a connection of its listener.
    private(set) var isVirtual = false
    /// The client reached us over TLS (x-forwarded-proto); kept apart from `tls` because an
    /// HTTP/2 stream's exchange has no engine of its own.
    private var viaTLS = false
    /// The exchange came over HTTP/2 (the access log's `proto`).
    private var isHTTP2 = false
    /// The first bytes may still turn this connection into HTTP/2: the h2c preface on a
    /// cleartext listener offering h2c, or ALPN h2 on TLS.
    private var http2Candidate = false
    private var alpnH2 = false
    /// A TLS keep-alive connection went idle: one second later its TLS buffers are given back
    /// (the idle deadline then runs on).
    private var idleShrinkDue = false
    private var phase: Phase = .closed
    private var requestsServed = 0

    private var parser = HeadParser(kind: .request, limits: HeadLimits(maxHeaderBytes: 65536, maxHeaders: 100))
    private var head = MessageHead()
    private var headers: HeaderTable?
    /// The head in `head`/`headers` was recorded as written (`openVirtual`): what parsing it
    /// would have said, until it is acted on.
    private var writtenHeadStatus: ParseStatus?
    private var headStartedAt: Int64 = 0

    // The exchange in progress.
    private var route: RouteRuntime?
    private(set) var upstream: UpstreamConnection?
    private var endpoint: EndpointRuntime?
    private var requestHead: ByteBuffer?          // serialized for the upstream; kept for a retry
    private var requestBody = BodyPump()
    private var responseBody = BodyPump()
    private var requestMethod: MethodKind = .get
    private var requestMinorVersion: UInt8 = 1
    private var expectContinue = false
    private var keepAlive = true
    private var isUpgradeRequest = false
    private var responseStarted = false
    private var responseStatus = 0
    private var requestStartedAt: Int64 = 0
    private var upstreamStartedAt: Int64 = 0
    private var upstreamHeadersAt: Int64 = 0
    private var responseDeadline: Int64 = 0
    private var attempts = 0
    private var firstEndpointIndex = -1
    /// Positions (in the cluster) of the endpoints tried so far, for the first 64.
    private var triedPositions: UInt64 = 0
    /// What ring_hash and maglev pick by, computed once per request.
    private var balancingHashValue: UInt64 = 0
    /// The request body as sent upstream (re-framed), kept for a retry while it fits in
    /// `max_replay_body`.
    private var replay: ByteBuffer?
    private var replayable = false
    /// End of the current try (`per_try_timeout`); 0 = none.
    private var tryDeadline: Int64 = 0
    private var retryAt: Int64 = 0
    /// The pooled connection the app had closed while idle was tried again once already.
    private var staleRetried = false
    /// Held in the cluster's circuit-breaker counts and this worker's in-flight counts.
    private var countedClusterRequest = false
    private var countedPending = false
    private var activeEndpoint = -1
    /// Tells a queued retry whether it still belongs to the exchange that asked for it.
    private(set) var exchangeSerial: UInt64 = 0
    private var bytesOut: Int64 = 0
    private var errorReason: LocalReplyReason?
    /// The client went away after its response had begun (the status stays what was sent).
    private var clientClosedMidResponse = false
    private var exchangeActive = false
    private var waitingForOutputRoom = false
    /// The client half-closed its side of a tunnel: its FIN went on to the upstream, whose
    /// answer still flows back until it closes too (or the tunnel idles out).
    private var tunnelClientDone = false
    private var lingering = false

    // Filter chain state for the request in the chain (SPEC §4–6).
    private var filterContext: FilterContext?
    private var filtersActive = false
    private var pendingFraming: BodyFraming = .none
    private var pendingHostOffset = 0
    private var pendingHostLength = 0

    // Access-log fields copied out of the head (the head itself is released early).
    private var meta: ByteBuffer?
    private var metaMethod = 0..<0
    private var metaAuthority = 0..<0
    private var metaPath = 0..<0
    private var metaRequestID = 0..<0
    private var metaUserAgent = 0..<0
    private var metaReferer = 0..<0

    /// The configuration the current exchange runs on (the worker's latest when it began).
    private var routing: WorkerRouting
    override init(worker: Worker) {
        routing = worker.routing
        gaugeMetrics = worker.routing.metrics
        super.init(worker: worker)
    }

    /// Where this connection is counted in `outrider_downstream_connections_active`.
    private var gaugeMetrics: WorkerMetrics
    private var gaugeIndex = -1

    /// The worker switched to a reloaded configuration: the connection's gauge moves to the
    /// new counters (its listener's handler already points at the new listener runtime).
    func adoptRouting(_ next: WorkerRouting) {
        guard gaugeIndex >= 0, let listener, listener.routing === next, gaugeMetrics !== next.metrics else { return }
        gaugeMetrics.subtract(gaugeMetrics.layout.downstreamActive + gaugeIndex)
        gaugeMetrics = next.metrics
        gaugeIndex = listener.listener.index
        gaugeMetrics.add(gaugeMetrics.layout.downstreamActive + gaugeIndex)
        if !exchangeActive { routing = next }
    }

    /// The verified client certificate's identity on an mTLS listener (URI SAN, DNS SAN or CN).
    private var clientIdentity: [UInt8]?

    var inTunnel: Bool { phase == .tunnel }
    /// Transparent mode: where the client's connection was going before iptables redirected it
    /// here; nil when the listener does not use `original_destination` or it was not redirected.
    /// Boxed: a sockaddr_storage is 128 bytes, and only transparent listeners have one; every
    /// idle connection would otherwise carry it.
    private var originalDestinationBox: AddressBox?
    private var originalDestination: SocketAddress? { originalDestinationBox?.address }
    /// The upstream connection to `originalDestination`, kept between requests, and its serial
    /// when it was kept (a different serial: it was closed and may serve someone else now).
    private var keptUpstream: UpstreamConnection?
    private var keptUpstreamSerial: UInt64 = 0

    /// Accepted on an outbound listener (the app's own calls).
    var isOutbound: Bool { listener?.listener.config.direction == .outbound }

    /// This connection's listener is draining. The worker's flag first: the listener is loaded
    /// (a retain and a release) only while the worker drains.
    private var listenerDraining: Bool { worker.draining && worker.isDraining(listener?.listener) }

    override func tlsHandshakeCompleted() {
        clientIdentity = tls?.peerIdentity.map { Array($0.utf8) }
        if let tls, tls.negotiatedALPNIsH2 {
            alpnH2 = true
            http2Candidate = true
        }
        // What the connection needs of the handshake has been read: a TLS 1.3 connection can
        // leave OpenSSL's per-connection state behind.
        tls?.leaveOpenSSLAfterHandshake()
        super.tlsHandshakeCompleted()
    }

    var isIdleBetweenRequests: Bool {
        !isVirtual && phase == .waitingHead && !exchangeActive && !(parser.isInProgress && (inBuffer?.readableBytes ?? 0) > 0)
    }

    // MARK: lifecycle

    func open(fd: Int32, peer: PeerAddress, listener: ListenerHandler) {
        self.fd = fd
        self.peer = peer
        self.listener = listener
        let limits = listener.listener.limits
        parser = HeadParser(kind: .request, limits: HeadLimits(maxHeaderBytes: limits.maxHeaderBytes, maxHeaders: limits.maxHeaders))
        writtenHeadStatus = nil
        phase = .waitingHead
        requestsServed = 0
        exchangeActive = false
        lingering = false
        routing = listener.routing
        gaugeMetrics = routing.metrics
        gaugeIndex = listener.listener.index
        gaugeMetrics.add(gaugeMetrics.layout.downstreamTotal + gaugeIndex)
        gaugeMetrics.add(gaugeMetrics.layout.downstreamActive + gaugeIndex)
        readable = false
        writable = false
        clientIdentity = nil
        idleShrinkDue = false
        isVirtual = false
        isHTTP2 = false
        alpnH2 = false
        let protocols = listener.listener.config.protocols
        http2Candidate = protocols.contains(.h2c) && !listener.listener.terminatesTLS
        viaTLS = listener.listener.terminatesTLS
        originalDestinationBox = nil
        if listener.listener.config.originalDestination,
           let destination = Sys.originalDestination(fd, ipv6: peer.isIPv6),
           let local = Sys.localAddress(fd), !destination.peer.sameEndpoint(as: local.peer) {
            originalDestinationBox = AddressBox(destination)
        }
        if let context = listener.listener.tlsContext {
            do {
                tls = try TLSEngine(server: context)
            } catch {
                OperationalLog.error("tls session not created", ["listener": listener.listener.config.name, "error": error.description])
                tls = nil
            }
        }
    }

    /// An exchange carried by an HTTP/2 stream: `peer` reads the request from the stream and
    /// takes the response; the head is already in the input buffer when `startVirtual` runs.
    /// `writtenHead`: the request head its writer recorded (`HeadParser.beginWritten`), with what
    /// parsing the text would have said; the head is acted on without being parsed again.
    func openVirtual(_ virtualPeer: VirtualPeer, peer: PeerAddress, listener: ListenerHandler, viaTLS: Bool,
                     clientIdentity: [UInt8]?, originalDestination: AddressBox?,
                     writtenHead: (status: ParseStatus, table: HeaderTable, head: MessageHead)) {
        fd = SocketConnection.virtualDescriptor
        self.virtualPeer = virtualPeer
        self.peer = peer
        self.listener = listener
        parser = HeadParser(kind: .request, limits: Self.virtualHeadLimits(listener.listener))
        if let table = headers.take() { worker.releaseHeaderTable(table) }
        headers = writtenHead.table
        head = writtenHead.head
        writtenHeadStatus = writtenHead.status
        phase = .waitingHead
        requestsServed = 0
        exchangeActive = false
        lingering = false
        routing = listener.routing
        gaugeMetrics = routing.metrics
        gaugeIndex = -1
        readable = false
        writable = true
        isVirtual = true
        isHTTP2 = true
        idleShrinkDue = false
        http2Candidate = false
        alpnH2 = false
        self.viaTLS = viaTLS
        self.clientIdentity = clientIdentity
        originalDestinationBox = originalDestination
    }

    /// The head limits of an exchange carried by an HTTP/2 stream: its head is written by the
    /// proxy, which adds a few fields and bytes to what the client sent.
    static func virtualHeadLimits(_ listener: ListenerRuntime) -> HeadLimits {
        HeadLimits(maxHeaderBytes: listener.limits.maxHeaderBytes + 4096, maxHeaders: listener.limits.maxHeaders + 8)
    }

    func startVirtual() {
        worker.loop.attach(self)
        headStartedAt = worker.loop.now
        worker.loop.setDeadline(self, worker.loop.now + listener!.listener.headerReadTimeout)
        readable = true
        processInput()
    }

    /// More of the request arrived on the stream.
    func virtualInputArrived() {
        guard phase != .closed else { return }
        readable = true
        processInput()
    }

    func start() {
        let result = worker.loop.register(fd, self)
        if result < 0 {
            Sys.close(fd)
            fd = -1
            phase = .closed
            worker.recycle(self)
            return
        }
        headStartedAt = worker.loop.now
        // A new connection waits behind the clients already served, within a time budget
        // per loop turn (EventLoop.probationBudget), until it has had an answer (or for
        // `probation` at most).
        probationEndsAt = worker.loop.now + Self.probation
        worker.loop.setDeadline(self, worker.loop.now + listener!.listener.headerReadTimeout)
        // Data often arrives with the handshake's last ACK: try at once.
        readable = true
        processInput()
    }

    func close() {
        guard phase != .closed else { return }
        if exchangeActive {
            // Unanswered: 499. Answered in part: the status sent stays, and the log says the
            // client left (a cut body must not look like a complete 200). A tunnel's client
            // closing is how tunnels end.
            if responseStatus == 0 {
                responseStatus = 499
            } else if errorReason == nil && phase != .tunnel {
                clientClosedMidResponse = true
            }
            finishExchange(reusableUpstream: false)
        }
        phase = .closed
        if let kept = keptUpstream {
            keptUpstream = nil
            if kept.serial == keptUpstreamSerial { kept.close() }
        }
        if gaugeIndex >= 0 {
            gaugeMetrics.subtract(gaugeMetrics.layout.downstreamActive + gaugeIndex)
            gaugeIndex = -1
        }
        routing = listener?.routing ?? worker.routing
        endFilters()
        filterContext?.serial &+= 1
        if let table = headers.take() { worker.releaseHeaderTable(table) }
        writtenHeadStatus = nil
        closeSocket()
        worker.recycle(self)
    }

    override func handleEvents(_ events: UInt32) {
        if events & (Epoll.error | Epoll.hangup) != 0 {
            // The peer reset or fully closed: nothing more can be delivered. While the exchange
            // waits (filters, connect, backoff, the upstream's answer) no read would notice:
            // end it now rather than hold the upstream until its answer or a timeout.
            if events & Epoll.input == 0 || phase == .waitingHead && !parser.isInProgress
                || phase == .filtering || phase == .connecting || phase == .retryWait
                || phase == .forwarding && requestBody.isDone {
                close()
                return
            }
        }
        if events & Epoll.readHangup != 0 { hangupSeen = true }
        if events & (Epoll.input | Epoll.readHangup) != 0 { readable = true }
        if events & Epoll.output != 0 {
            writable = true
            if pendingOutput > 0 { flush() }
        }
        if readable { processInput() }
    }

    private static let idleShrinkDelay: Int64 = 1_000_000_000
    static let probation: Int64 = 10_000_000_000

    override func deadlineReached(now: Int64) {
        switch phase {
        case .waitingHead:
            if idleShrinkDue {
                idleShrinkDue = false
                if !(parser.isInProgress && (inBuffer?.readableBytes ?? 0) > 0), let listenerRuntime = listener?.listener {
                    tls?.releaseIdleMemory()
                    worker.loop.setDeadline(self, now + listenerRuntime.idleTimeout - Self.idleShrinkDelay)
                    return
                }
            }
            if parser.isInProgress, let buffer = inBuffer, parser.hasPartialHead(buffer) {
                startExchangeForLocalReply()
                sendLocalReply(.headerTimeout, close: true)
            } else {
                close()
            }
        case .filtering:
            // Work off the loop took longer than the route allows.
            sendLocalReply(.authUnavailable, close: true)
        case .retryWait:
            if responseDeadline != 0 && now >= responseDeadline {
                sendLocalReply(.upstreamTimeout, close: !requestBody.isDone)
            } else if now >= retryAt {
                dispatch()
            } else {
                armDeadline()
            }
        case .connecting, .forwarding:
            if !responseStarted && responseDeadline != 0 && now >= responseDeadline {
                abortUpstream()
                sendLocalReply(.upstreamTimeout, close: !requestBody.isDone)
            } else if !responseStarted && tryDeadline != 0 && now >= tryDeadline {
                tryTimedOut()
            } else if !responseStarted && (responseDeadline != 0 || tryDeadline != 0) {
                let due = responseDeadline == 0 ? tryDeadline : (tryDeadline == 0 ? responseDeadline : min(responseDeadline, tryDeadline))
                worker.loop.setDeadline(self, due)
            } else if isVirtual && waitingForOutputRoom {
                // An HTTP/2 stream whose client takes nothing: its send timeout (the stream's
                // connection watches write progress) resets it, with CANCEL and the client
                // to blame, rather than this timer calling it an upstream timeout.
                armDeadline()
            } else {
                // No progress for `idle` while streaming: give up on both sides.
                errorReason = errorReason ?? .upstreamTimeout
                close()
            }
        case .tunnel:
            close()
        case .closingAfterFlush, .closed:
            close()
        }
    }

    override func outputProgressed() {
        if pendingOutput == 0 && phase == .closingAfterFlush {
            lingerOrClose()
            return
        }
        if waitingForOutputRoom, let upstream {
            waitingForOutputRoom = false
            upstream.resumeResponse()
        }
        if phase == .tunnel, let upstream {
            upstream.resumeResponse()
            if readable || (inBuffer?.readableBytes ?? 0) > 0 { processInput() }
        }
    }

    override func outputIdle() {
        if phase == .closingAfterFlush { lingerOrClose(); return }
        // An HTTP/2 stream made room (its window opened or its connection's buffers drained)
        // while nothing of ours was waiting: the upstream may read again.
        if isVirtual && waitingForOutputRoom, let upstream {
            waitingForOutputRoom = false
            upstream.resumeResponse()
        }
    }

    /// The last response is out. Closing a socket with unread input makes the kernel send a
    /// reset, which can destroy that response before the client reads it (a 413 sent while
    /// the body still arrives). So: half-close, discard what still comes for up to 2 s, then
    /// close (nginx's lingering close).
    private func lingerOrClose() {
        if peerClosed || lingering || isVirtual { close(); return }
        // Nothing can still be on its way when the request was read whole and we answered it
        // normally: close at once (the common `Connection: close` request costs no extra
        // wake-up). Local replies may have left a body or garbage unread: those linger.
        let inputPending = readable || (inBuffer?.readableBytes ?? 0) > 0
        if !inputPending && errorReason == nil && requestBody.isDone { close(); return }
        lingering = true
        shutdownSending()
        worker.loop.setDeadline(self, worker.loop.now + 2_000_000_000)
        readable = true
        processInput()
    }

    override func writeError() {
        close()
    }

    override func compactInput() {
        guard let buffer = inBuffer else { return }
        let delta = buffer.readerIndex
        if parser.isInProgress, let headers {
            parser.rebase(by: delta, head: &head, headers: headers)
        }
        buffer.compact()
    }

    // MARK: input

    /// Reads and acts on client bytes as far as the current phase allows.
    private func processInput() {
        while fd >= 0 {
            switch phase {
            case .waitingHead:
                if let buffer = inBuffer, buffer.readableBytes > 0, parseAvailableHead() { continue }
                if phase != .waitingHead { continue }
                guard readable else { return }
                switch readIntoInput() {
                case .data:
                    if let buffer = inBuffer, buffer.readableBytes > 0 && !parser.isInProgress && requestsServed > 0 {
                        // The first byte of a later request starts its header_read clock.
                        headStartedAt = worker.loop.now
                        worker.loop.setDeadline(self, headStartedAt + listener!.listener.headerReadTimeout)
                    }
                case .wouldBlock: return
                case .full:
                    startExchangeForLocalReply()
                    sendLocalReply(.headersTooLarge, close: true)
                    return
                case .closed:
                    // A client may half-close after its last request: what is still being
                    // written to it (a response finished this iteration) is delivered first.
                    // A partial head that follows it is dropped, not the response.
                    if pendingOutput > 0 {
                        phase = .closingAfterFlush
                    } else {
                        close()
                    }
                    return
                case .failed:
                    close()
                    return
                }
            case .connecting, .filtering, .retryWait:
                return
            case .forwarding:
                guard !requestBody.isDone else {
                    // Pipelined bytes wait; only notice a close.
                    return
                }
                if !pumpRequestBody() { return }
            case .tunnel:
                pumpTunnelUp()
                return
            case .closingAfterFlush, .closed:
                // Discard what a closing client still sends.
                inBuffer?.clear()
                while readable && fd >= 0 {
                    let outcome = readIntoInput()
                    inBuffer?.clear()
                    if outcome == .closed || outcome == .failed {
                        if pendingOutput == 0 { close() }
                        return
                    }
                }
                releaseInputIfEmpty()
                return
            }
        }
    }

    /// Parses the buffered head; true when it was complete and has been acted on.
    private func parseAvailableHead() -> Bool {
        guard let buffer = inBuffer else { return false }
        if http2Candidate {
            switch http2Start(buffer) {
            case .http2:
                handOverToHTTP2()
                return true
            case .undecided:
                return false
            case .http1:
                http2Candidate = false
                if listener?.listener.config.protocols.contains(.http1) == false {
                    close()
                    return true
                }
            }
        }
        if let status = writtenHeadStatus, let table = headers {
            writtenHeadStatus = nil
            if case .failed(let failure) = status {
                startExchangeForLocalReply()
                sendLocalReply(failure.replyReason, close: true)
            } else {
                handleRequestHead(buffer, table)
            }
            return true
        }
        if !parser.isInProgress {
            parser.begin(at: buffer.readerIndex)
            if headers == nil { headers = worker.acquireHeaderTable() }
        }
        let table = headers ?? worker.acquireHeaderTable()
        headers = table
        switch parser.parse(buffer, headers: table, head: &head) {
        case .needMore:
            return false
        case .failed(let failure):
            startExchangeForLocalReply()
            sendLocalReply(failure.replyReason, close: true)
            return true
        case .complete:
            handleRequestHead(buffer, table)
            return true
        }
    }

    private enum HTTP2Start { case http2, http1, undecided }

    /// ALPN chose h2, or the buffered bytes are (so far) the h2c connection preface.
    private func http2Start(_ buffer: ByteBuffer) -> HTTP2Start {
        if alpnH2 { return .http2 }
        if requestsServed > 0 || parser.isInProgress { return .http1 }
        let preface: StaticString = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        let count = min(buffer.readableBytes, preface.utf8CodeUnitCount)
        let bytes = buffer.readPointer
        for index in 0..<count where bytes[index] != preface.utf8Start[index] { return .http1 }
        return count == preface.utf8CodeUnitCount ? .http2 : .undecided
    }

    /// The socket, its TLS session and the bytes read so far go to an HTTP/2 connection; this
    /// object is recycled without closing anything.
    private func handOverToHTTP2() {
        guard let listener else { close(); return }
        let connection = worker.makeHTTP2Downstream()
        worker.loop.transfer(self, to: connection)
        connection.adopt(fd: fd, peer: peer, listener: listener, tls: tls, tlsOut: tlsOut, input: inBuffer, output: outBuffer,
                         clientIdentity: clientIdentity, originalDestination: originalDestinationBox,
                         readable: readable, writable: writable, hangupSeen: hangupSeen,
                         gaugeMetrics: gaugeMetrics, gaugeIndex: gaugeIndex)
        fd = -1
        tls = nil
        tlsOut = nil
        inBuffer = nil
        outBuffer = nil
        readable = false
        writable = false
        hangupSeen = false
        gaugeIndex = -1
        originalDestinationBox = nil
        if let table = headers.take() { worker.releaseHeaderTable(table) }
        phase = .closed
        // Recycled as a free object: the listener still counts the connection (it moved).
        self.listener = nil
        // Only after the HTTP/2 connection has handled the bytes read so far: a stream they
        // open takes a free exchange object, and this one, recycled first, was taken while its
        // own `processInput` was still on the stack, which then went on to parse the stream's
        // request as its own and forwarded it at once (a zero-window stream 1 reached the app;
        // a stream 1 reset in the same bytes did too).
        connection.start()
        worker.recycle(self)
    }

    // MARK: request head

    private func handleRequestHead(_ buffer: ByteBuffer, _ table: HeaderTable) {
        let now = worker.loop.now
        beginExchange(now: now)
        let base = UnsafePointer(buffer.base)
        requestMethod = head.method
        requestMinorVersion = head.minorVersion
        keepAlive = head.keepAlive
        expectContinue = head.expectContinue && head.minorVersion == 1
        isUpgradeRequest = head.connectionUpgrade && head.upgradeIndex >= 0
        let listenerRuntime = listener!.listener

        // Authority: the Host header, or the authority of an absolute-form target.
        var hostPointer = base
        var hostLength = 0
        if head.hostIndex >= 0 {
            let entry = table[Int(head.hostIndex)]
            hostPointer = base + Int(entry.valueStart)
            hostLength = Int(entry.valueLength)
        }
        var target = base + Int(head.targetStart)
        var targetLength = Int(head.targetLength)
        if head.method != .connect, targetLength > 0, target[0] != UInt8(ascii: "/"), target[0] != UInt8(ascii: "*") {
            guard let split = splitAbsoluteForm(target, targetLength) else {
                recordMeta(buffer, table, pathPointer: target, pathLength: min(targetLength, 2048))
                sendLocalReply(.badRequest, close: true)
                return
            }
            hostPointer = target + split.authorityStart
            hostLength = split.authorityLength
            target += split.pathStart
            targetLength -= split.pathStart
        }
        if head.method == .connect {
            // RFC 9112 §3.2.3: CONNECT takes the authority-form, host ":" port, and nothing
            // else; it becomes the Host the app sees.
            guard isAuthorityForm(target, targetLength) else {
                recordMeta(buffer, table, pathPointer: target, pathLength: min(targetLength, 2048))
                sendLocalReply(.badRequest, close: true)
                return
            }
            hostPointer = target
            hostLength = targetLength
        }

        // Normalized path (SPEC §2): what routing, filters and the upstream all see.
        let scratch = worker.pathScratch
        scratch.clear()
        var pathLength = 0
        var queryLength = 0
        if head.method == .connect || (targetLength == 1 && target[0] == UInt8(ascii: "*") && head.method == .options) {
            scratch.append(target, count: targetLength)
            pathLength = targetLength
        } else if targetLength == 0 || target[0] == UInt8(ascii: "?") {
            // An absolute-form target without a path ("http://h", "http://h?q"): the path is
            // "/" (RFC 9110 §4.2.3); the query comes as it came.
            scratch.append(UInt8(ascii: "/"))
            pathLength = 1
            for offset in 0..<targetLength where target[offset] == UInt8(ascii: "#") {
                recordMeta(buffer, table, pathPointer: target, pathLength: min(targetLength, 2048), hostPointer: hostPointer, hostLength: hostLength)
                sendLocalReply(.badRequest, close: true)
                return
            }
            scratch.append(target, count: targetLength)
            queryLength = targetLength
        } else {
            guard let result = PathNormalizer.normalize(target, targetLength, into: scratch) else {
                recordMeta(buffer, table, pathPointer: target, pathLength: min(targetLength, 2048), hostPointer: hostPointer, hostLength: hostLength)
                sendLocalReply(.badRequest, close: true)
                return
            }
            pathLength = result.pathLength
            queryLength = result.queryLength
        }
        recordMeta(buffer, table, pathPointer: scratch.readPointer, pathLength: min(pathLength + queryLength, 2048),
                   hostPointer: hostPointer, hostLength: hostLength)

        // Framing of the request body.
        let bodyFraming: BodyFraming
        if head.isChunked {
            bodyFraming = .chunked
        } else if head.contentLength > 0 {
            bodyFraming = .length(head.contentLength)
        } else {
            bodyFraming = .none
        }
        let maxBody = listenerRuntime.limits.maxRequestBody
        if maxBody > 0, head.contentLength > maxBody {
            sendLocalReply(.bodyTooLarge, close: true)
            return
        }

        // Route: first match wins.
        let routePath = UnsafePointer(scratch.readPointer)
        let hostWithoutPort = hostLength - portSuffixLength(hostPointer, hostLength)
        var matched: RouteRuntime?
        for candidate in listenerRuntime.routes {
            if head.method != .connect && !candidate.matchesPath(routePath, pathLength) { continue }
            if head.method == .connect && candidate.pathPrefix.count != 1 { continue }
            if !candidate.matchesHost(hostPointer, hostWithoutPort) { continue }
            if !candidate.methods.isEmpty {
                let methodPointer = base + Int(head.methodStart)
                var allowed = false
                for method in candidate.methods where method.equals(methodPointer, count: Int(head.methodLength)) {
                    allowed = true
                    break
                }
                if !allowed { continue }
            }
            if !candidate.headers.isEmpty && !headersMatch(candidate, base, table) { continue }
            matched = candidate
            break
        }
        guard let matched else {
            sendLocalReply(.noRoute, close: bodyFraming != .none)
            return
        }
        route = matched
        if bodyFraming == .chunked {
            // Whatever of a chunked body already arrived with the head is checked before the
            // upstream hears of the request: a malformed or oversized body sent in one piece
            // (every smuggling attempt) never reaches the app, not even as a head.
            switch prescanChunkedBody(buffer, from: Int(head.headEnd), maxBody: maxBody) {
            case .invalid:
                sendLocalReply(.badRequest, close: true)
                return
            case .tooLarge:
                sendLocalReply(.bodyTooLarge, close: true)
                return
            case .acceptable:
                break
            }
        }
        pendingFraming = bodyFraming
        pendingHostOffset = hostPointer - base
        pendingHostLength = hostLength
        if matched.filters.isEmpty {
            forwardRequest(buffer, table, path: scratch.readPointer, pathLength: pathLength, queryLength: queryLength)
            return
        }
        let context = prepareFilterContext(buffer, table, path: scratch.readPointer, pathLength: pathLength,
                                           queryLength: queryLength, now: now)
        guard runFilters(context, from: 0) else { return }
        forwardRequest(buffer, table, path: UnsafePointer(context.scratch.base) + context.pathRange.lowerBound,
                       pathLength: pathLength, queryLength: queryLength)
    }

    /// Serializes the request for the upstream and dispatches it.
    private func forwardRequest(_ buffer: ByteBuffer, _ table: HeaderTable, path: UnsafePointer<UInt8>,
                                pathLength: Int, queryLength: Int) {
        guard let route, let listenerRuntime = listener?.listener else { return }
        let base = UnsafePointer(buffer.base)
        // Serialize what goes upstream (kept until the response starts, for a retry).
        let out = buffers.acquire()
        requestHead = out
        serializeRequestHead(out, base: base, table: table, route: route, listenerRuntime: listenerRuntime,
                             path: path, pathLength: pathLength, queryLength: queryLength,
                             host: base + pendingHostOffset, hostLength: pendingHostLength, bodyFraming: pendingFraming)
        if route.cluster.balancesByHash, let key = route.cluster.policy.hashKey {
            balancingHashValue = balancingHash(key, base: base, table: table)
        }
        // The client's head is no longer needed.
        buffer.consume(Int(head.headEnd) - buffer.readerIndex)
        worker.releaseHeaderTable(table)
        headers = nil
        requestBody.start(input: pendingFraming, chunkedOutput: pendingFraming == .chunked)
        if route.timeout > 0 {
            responseDeadline = worker.loop.now + route.timeout
        }
        let cluster = route.cluster
        let shared = routing.runtime.shared
        if shared.load(cluster: cluster.index, .activeRequests) >= cluster.policy.maxRequests {
            sendLocalReply(.overflow, close: pendingFraming != .none)
            return
        }
        shared.add(cluster: cluster.index, .activeRequests, 1)
        countedClusterRequest = true
        routing.retryBudgets[route.metricsIndex].recordRequest(now: worker.loop.now)
        // Only a try that may be repeated after its body went out needs the body kept.
        // An HTTP/2 app may refuse a stream after its body went: any method is tried again then.
        if pendingFraming != .none {
            let retry = route.retry
            let refusalRetried = cluster.isHTTP2 && (retry.onRefusedStream || retry.onConnectFailure)
            replayable = retry.attempts > 1 && retry.maxReplayBody > 0
                && (refusalRetried || requestMethod.isIdempotent
                    && (retry.onReset || retry.onGatewayError || retry.onServerError || !retry.retriableStatusCodes.isEmpty
                        || retry.perTryTimeout > 0))
        } else {
            replayable = false
        }
        dispatch()
    }

    /// ring_hash / maglev: the hash of the configured key; a request without the key gets a
    /// random one (it goes anywhere, as in Envoy).
    private func balancingHash(_ key: CompiledHashKey, base: UnsafePointer<UInt8>, table: HeaderTable) -> UInt64 {
        switch key {
        case .clientIP:
            let scratch = worker.hashScratch
            scratch.clear()
            peer.appendIP(to: scratch)
            return OutriderBalancing.balancingHash(scratch.readPointer, scratch.readableBytes)
        case .header(let name):
            for index in 0..<table.count {
                let entry = table[index]
                if name.equalsIgnoringCase(base + Int(entry.nameStart), count: Int(entry.nameLength)) {
                    return OutriderBalancing.balancingHash(base + Int(entry.valueStart), Int(entry.valueLength))
                }
            }
        case .cookie(let name):
            for index in 0..<table.count {
                let entry = table[index]
                guard equalsLowercase(base + Int(entry.nameStart), Int(entry.nameLength), "cookie") else { continue }
                if let value = cookieValue(named: name, in: base + Int(entry.valueStart), Int(entry.valueLength)) {
                    return OutriderBalancing.balancingHash(value.pointer, value.count)
                }
            }
        }
        return worker.random.next()
    }

    // MARK: filters

    private func prepareFilterContext(_ buffer: ByteBuffer, _ table: HeaderTable, path: UnsafePointer<UInt8>,
                                      pathLength: Int, queryLength: Int, now: Int64) -> FilterContext {
        let scratch = buffers.acquire()
        let context: FilterContext
        if let existing = filterContext {
            context = existing
            context.reset(scratch: scratch)
        } else {
            context = FilterContext(worker: worker.filterState, scratch: scratch)
            context.onResume = { [unowned(unsafe) self] in self.resumeFilters() }
            filterContext = context
            context.reset(scratch: scratch)
        }
        filtersActive = true
        context.headBase = UnsafePointer(buffer.base)
        context.headers = table
        context.method = head.method
        context.methodRange = Int(head.methodStart)..<Int(head.methodStart + head.methodLength)
        context.hostRange = pendingHostOffset..<(pendingHostOffset + pendingHostLength)
        context.pathRange = context.store(path, pathLength)
        context.queryRange = context.store(path + pathLength, queryLength)
        let ipStart = scratch.writerIndex
        peer.appendIP(to: scratch)
        context.clientIPRange = ipStart..<scratch.writerIndex
        context.clientPort = peer.port
        if let meta { context.requestIDRange = context.store(UnsafePointer(meta.base) + metaRequestID.lowerBound, metaRequestID.count) }
        context.monotonicNow = now
        context.unixNow = Sys.wallClockNanoseconds() / 1_000_000_000
        return context
    }

    /// Runs the route's filters from `index`; true when the request may go on.
    private func runFilters(_ context: FilterContext, from index: Int) -> Bool {
        guard let route else { return false }
        var position = index
        while position < route.filters.count {
            switch route.filters[position].decodeHeaders(context) {
            case .proceed:
                position += 1
                context.filterState = 0
            case .pause:
                context.pausedAt = position
                phase = .filtering
                armDeadline()
                return false
            case .respond:
                sendFilterReply(context)
                return false
            }
        }
        return true
    }

    /// Work a filter started off the loop has finished: go on with the chain.
    private func resumeFilters() {
        guard phase == .filtering, let context = filterContext, let buffer = inBuffer, let table = headers else { return }
        phase = .waitingHead
        guard runFilters(context, from: context.pausedAt) else { return }
        let pathLength = context.pathRange.count
        forwardRequest(buffer, table, path: UnsafePointer(context.scratch.base) + context.pathRange.lowerBound,
                       pathLength: pathLength, queryLength: context.queryRange.count)
    }

    /// Releases what the chain held for the request that just ended.
    private func endFilters() {
        guard filtersActive, let context = filterContext else { return }
        filtersActive = false
        context.headers = nil
        buffers.release(context.scratch)
        context.serial &+= 1
    }

    /// Picks an endpoint with the cluster's policy (preferring one not tried yet) and hands the
    /// request to a pooled or new upstream connection.
    private func dispatch() {
        guard let route, let requestHead else { return }
        let cluster = route.cluster
        if let originalDestination {
            dispatch(to: originalDestination, cluster: cluster, requestHead: requestHead)
            return
        }
        let now = worker.loop.now
        let shared = routing.runtime.shared
        let snapshot = routing.snapshots[cluster.index]
        snapshot.refreshIfNeeded(shared, now: now)
        let chosen = snapshot.pick(hash: balancingHashValue, tried: triedPositions, random: &worker.random,
                                   activeRequests: routing.activeRequests)
        if chosen.position < 64 { triedPositions |= 1 << UInt64(chosen.position) }
        endpoint = chosen
        attempts += 1
        if firstEndpointIndex < 0 { firstEndpointIndex = chosen.index }
        upstreamStartedAt = now
        tryDeadline = route.retry.perTryTimeout > 0 ? now + route.retry.perTryTimeout : 0
        phase = .connecting
        routing.activeRequests[chosen.index] += 1
        activeEndpoint = chosen.index
        armDeadline()

        if cluster.isHTTP2 {
            dispatchHTTP2(to: chosen, cluster: cluster, requestHead: requestHead)
            return
        }
        if let pooled = routing.takeIdleUpstream(chosen) {
            sendOnOpenConnection(pooled, cluster: cluster, requestHead: requestHead)
            return
        }
        guard let connection = newConnection(cluster) else { return }
        if !connection.connect(to: chosen, requestHead: requestHead) {
            // Failed synchronously; `upstreamFailed` already ran.
            return
        }
        sendReplay(to: connection)
    }

    /// An HTTP/2 cluster: the try is a stream on a shared connection to the endpoint.
    private func dispatchHTTP2(to endpoint: EndpointRuntime, cluster: ClusterRuntime, requestHead: ByteBuffer) {
        guard let connection = routing.http2Connection(to: endpoint, cluster: cluster, worker: worker) else {
            if cluster.shared.load(cluster: cluster.index, .connections) >= cluster.policy.maxConnections {
                endTry()
                sendLocalReply(.overflow, close: !requestBody.isDone)
            } else {
                upstreamFailed(.upstreamConnect, connectFailure: true, reusedConnection: false)
            }
            return
        }
        let virtual = worker.makeUpstream()
        upstream = virtual
        virtual.attach(self, cluster: cluster, routing: routing, reused: false)
        let ready = connection.isReady
        virtual.connectVirtual(connection.makeStream(), endpoint: endpoint, requestHead: requestHead, ready: ready)
        sendReplay(to: virtual)
        if ready { upstreamConnected() }
    }

    private func sendOnOpenConnection(_ connection: UpstreamConnection, cluster: ClusterRuntime, requestHead: ByteBuffer) {
        upstream = connection
        connection.attach(self, cluster: cluster, routing: routing, reused: true)
        connection.sendRequest(requestHead)
        sendReplay(to: connection)
        upstreamConnected()
    }

    /// A connection to open for this try, counted as pending in the cluster's circuit breaker;
    /// nil (and a 503 `overflow` sent) when the cluster is at `max_connections` or
    /// `max_pending`.
    private func newConnection(_ cluster: ClusterRuntime) -> UpstreamConnection? {
        let shared = cluster.shared
        if shared.load(cluster: cluster.index, .connections) >= cluster.policy.maxConnections
            || shared.load(cluster: cluster.index, .pendingRequests) >= cluster.policy.maxPending {
            endTry()
            sendLocalReply(.overflow, close: !requestBody.isDone)
            return nil
        }
        shared.add(cluster: cluster.index, .pendingRequests, 1)
        countedPending = true
        let connection = worker.makeUpstream()
        upstream = connection
        connection.attach(self, cluster: cluster, routing: routing, reused: false)
        return connection
    }

    /// Transparent mode: the request goes where the client was going, on the connection kept
    /// from its previous request when there is one.
    private func dispatch(to destination: SocketAddress, cluster: ClusterRuntime, requestHead: ByteBuffer) {
        let now = worker.loop.now
        endpoint = nil
        attempts += 1
        upstreamStartedAt = now
        tryDeadline = route.map { $0.retry.perTryTimeout > 0 ? now + $0.retry.perTryTimeout : 0 } ?? 0
        phase = .connecting
        armDeadline()
        if let kept = keptUpstream {
            keptUpstream = nil
            if kept.serial == keptUpstreamSerial && kept.isReusable {
                sendOnOpenConnection(kept, cluster: cluster, requestHead: requestHead)
                return
            }
            if kept.serial == keptUpstreamSerial { kept.close() }
        }
        guard let connection = newConnection(cluster) else { return }
        if !connection.connect(originalDestination: destination, requestHead: requestHead) { return }
        sendReplay(to: connection)
    }

    /// A retry re-sends what of the body the failed try had sent.
    private func sendReplay(to connection: UpstreamConnection) {
        guard let replay, replay.readableBytes > 0 else { return }
        connection.output().append(from: replay, offset: replay.readerIndex, count: replay.readableBytes)
        worker.queueFlush(connection)
    }

    /// The try on `activeEndpoint` is over: its in-flight and pending counts are given back.
    private func endTry() {
        if activeEndpoint >= 0 {
            routing.activeRequests[activeEndpoint] -= 1
            activeEndpoint = -1
        }
        if countedPending, let route {
            countedPending = false
            routing.runtime.shared.add(cluster: route.cluster.index, .pendingRequests, UInt64.max)
        }
    }

    /// Whether one more try is allowed (SPEC §7): tries left, the body replayable, a
    /// non-idempotent request only when nothing was sent, and the retry budget not spent.
    private func mayRetry(afterSending: Bool) -> Bool {
        guard let route, requestHead != nil, exchangeActive, !responseStarted else { return false }
        let retry = route.retry
        if attempts - (staleRetried ? 1 : 0) >= retry.attempts { return false }
        if afterSending && !requestMethod.isIdempotent { return false }
        if requestBody.transferred > 0 || (afterSending && requestBody.input != .none) {
            guard replayable, let replay, let head = requestHead,
                  head.readableBytes + replay.readableBytes + 16 * 1024 <= buffers.bufferCapacity else {
                return requestBody.transferred == 0 && !afterSending
            }
        }
        if !routing.retryBudgets[route.metricsIndex].tryAcquireRetry(now: worker.loop.now) {
            let metrics = routing.metrics
            metrics.add(metrics.layout.retryBudgetExhausted + route.cluster.index)
            return false
        }
        return true
    }

    /// Waits the backoff (full jitter), then tries again; a zero wait runs at the end of this
    /// loop iteration, outside the failing connection's call stack.
    private func scheduleRetry(_ reason: RetryReason, backoff: Bool = true) {
        guard let route else { return }
        let metrics = routing.metrics
        metrics.add(metrics.layout.retries + route.cluster.index * MetricsLayout.retryReasons.count + reason.rawValue)
        let retry = route.retry
        let delay = backoff ? FullJitterBackoff.delay(retry: max(1, attempts), baseNanos: retry.backoffBase,
                                                      maxNanos: retry.backoffMax, random: &worker.random) : 0
        phase = .retryWait
        retryAt = worker.loop.now + delay
        if delay < 1_000_000 {
            worker.queueRetry(self)
        }
        armDeadline()
    }

    /// Run by the worker for a zero-wait retry queued in this iteration.
    func runQueuedRetry(serial: UInt64) {
        guard serial == exchangeSerial, phase == .retryWait, exchangeActive else { return }
        dispatch()
    }

    private func tryTimedOut() {
        abortUpstream()
        endTry()
        if let route, let endpoint {
            OutlierDetector.record(success: false, endpoint: endpoint, cluster: route.cluster,
                                   shared: routing.runtime.shared, now: worker.loop.now)
        }
        if let route, route.retry.retriesTimeout, mayRetry(afterSending: true) {
            scheduleRetry(.perTryTimeout)
            return
        }
        sendLocalReply(.upstreamTimeout, close: !requestBody.isDone)
    }

    /// The upstream connection is established (or was pooled): send the body.
    func upstreamConnected() {
        guard phase == .connecting else { return }
        if countedPending, let route {
            countedPending = false
            routing.runtime.shared.add(cluster: route.cluster.index, .pendingRequests, UInt64.max)
        }
        phase = .forwarding
        if expectContinue && !requestBody.isDone {
            // We answer the client's Expect ourselves once the upstream is there (as Envoy
            // does); the upstream never sees the Expect header.
            output().append("HTTP/1.1 100 Continue\r\n\r\n")
            expectContinue = false
            worker.queueFlush(self)
        }
        if !requestBody.isDone {
            readable = true
            processInput()
        }
    }

    /// Moves request body bytes to the upstream. Returns true when it should be called again.
    private func pumpRequestBody() -> Bool {
        guard let upstream else { return false }
        while true {
            let out = upstream.output()
            let before = out.readableBytes
            let outcome = requestBody.pump(from: inBuffer, to: out, inputClosed: peerClosed)
            let maxBody = listener!.listener.limits.maxRequestBody
            if maxBody > 0 && requestBody.transferred > maxBody {
                abortUpstream()
                sendLocalReply(.bodyTooLarge, close: true)
                return false
            }
            if out.readableBytes != before {
                if replayable { keepForReplay(out, count: out.readableBytes - before) }
                worker.queueFlush(upstream)
            } else {
                upstream.releaseOutputIfEmpty()
            }
            switch outcome {
            case .done:
                releaseInputIfEmpty()
                return false
            case .outputFull:
                // Resumed by the upstream's outputProgressed.
                return false
            case .failed:
                abortUpstream()
                if !responseStarted {
                    sendLocalReply(.badRequest, close: true)
                } else {
                    close()
                }
                return false
            case .needInput:
                releaseInputIfEmpty()
                guard readable else { return false }
                switch readIntoInput() {
                case .data: continue
                case .wouldBlock: return false
                case .full: continue
                case .closed:
                    continue   // the pump reports the truncated body
                case .failed:
                    close()
                    return false
                }
            }
        }
    }

    /// Copies the body bytes just queued for the upstream (the last `count` of `out`); a body
    /// past `max_replay_body` stops being replayable and its copy is dropped.
    private func keepForReplay(_ out: ByteBuffer, count: Int) {
        guard let route else { return }
        if replay == nil { replay = buffers.acquire() }
        guard let replay, requestBody.transferred <= route.retry.maxReplayBody, count <= replay.writableBytes else {
            replayable = false
            if let replay { buffers.release(replay); self.replay = nil }
            return
        }
        replay.append(UnsafePointer(out.base + out.writerIndex - count), count: count)
    }

    /// The upstream drained some request bytes; continue the body.
    func requestOutputProgressed() {
        if phase == .forwarding && !requestBody.isDone {
            readable = true
            processInput()
        } else if phase == .tunnel {
            readable = true
            processInput()
        }
    }

    // MARK: response

    /// Called by the upstream with a complete response head in its input buffer. Returns false
    /// when the client's output has no room yet (the upstream waits for `resumeResponse`).
    func responseHead(_ response: inout MessageHead, _ table: HeaderTable, _ source: ByteBuffer) -> Bool {
        let status = response.status
        // An HTTP/2 stream takes the head as fields: no HTTP/1.1 text for it to parse again.
        let fields = virtualPeer?.responseFields
        if fields == nil {
            let out = output()
            let needed = Int(response.headEnd - response.headStart) + 1024
            if out.writableBytes < needed {
                if out.readerIndex > 0 && out.capacity - out.readableBytes >= needed {
                    out.compact()
                } else {
                    waitingForOutputRoom = true
                    return false
                }
            }
        }
        if status >= 100 && status < 200 && status != 101 {
            // Interim responses are not relayed (Expect is answered by us).
            source.consume(Int(response.headEnd) - source.readerIndex)
            return true
        }
        if let route, let endpoint {
            let isGatewayError = status == 502 || status == 503 || status == 504
            if route.cluster.detectsOutliers {
                OutlierDetector.record(success: !isGatewayError, endpoint: endpoint, cluster: route.cluster,
                                       shared: routing.runtime.shared, now: worker.loop.now)
            }
            if route.retry.retriesStatus(status), mayRetry(afterSending: true) {
                let retry = route.retry
                // The answer is dropped with its connection; the client never sees it.
                routing.metrics.recordUpstream(endpoint: endpoint.index, status: status)
                abortUpstream()
                endTry()
                let reason: RetryReason = retry.onGatewayError && isGatewayError ? .gatewayError
                    : (retry.onServerError && status >= 500 ? .serverError : .retriableStatusCode)
                scheduleRetry(reason)
                return true
            }
        }
        responseStarted = true
        responseStatus = status
        tryDeadline = 0
        upstreamHeadersAt = worker.loop.now
        if let endpoint { routing.metrics.recordUpstream(endpoint: endpoint.index, status: status) }
        responseDeadline = 0
        if requestHead != nil, let buffer = requestHead.take() { buffers.release(buffer) }

        let tunnel = (status == 101 && isUpgradeRequest) || (requestMethod == .connect && status >= 200 && status < 300)
        let bodyless = requestMethod == .head || status == 204 || status == 304 || (status >= 100 && status < 200) || tunnel
        var framing: BodyFraming = .none
        if !bodyless {
            if response.isChunked { framing = .chunked }
            else if response.contentLength >= 0 { framing = .length(response.contentLength) }
            else { framing = .untilClose }
        }
        let clientIsHTTP11 = requestMinorVersion == 1
        let chunkedToClient = clientIsHTTP11 && (framing == .chunked || framing == .untilClose)
        if !clientIsHTTP11 && (framing == .chunked || framing == .untilClose) { keepAlive = false }
        if listenerDraining { keepAlive = false }
        if !requestBody.isDone { keepAlive = false }

        let base = UnsafePointer(source.base)
        let filters = filtersActive ? route?.filters : nil
        if let fields, let virtualPeer {
            respondWithFields(fields, virtualPeer, status: status, response: response, table: table, base: base,
                              filters: filters, bodyless: bodyless, chunked: chunkedToClient)
            source.consume(Int(response.headEnd) - source.readerIndex)
            responseBody.start(input: framing, chunkedOutput: chunkedToClient)
            return true
        }
        let out = output()
        appendStatusLine(out, base: base, response: response)
        for index in 0..<table.count {
            let entry = table[index]
            guard forwardsResponseField(entry, base, filters) else { continue }
            out.append(base + Int(entry.nameStart), count: Int(entry.nameLength))
            out.append(": ")
            out.append(base + Int(entry.valueStart), count: Int(entry.valueLength))
            out.append("\r\n")
        }
        if let meta, !metaRequestID.isEmpty {
            out.append("x-request-id: ")
            out.append(meta.base + metaRequestID.lowerBound, count: metaRequestID.count)
            out.append("\r\n")
        }
        if let filters, let context = filterContext {
            for filter in filters { filter.encodeHeaders(context) }
            appendFilterResponseLines(out, context)
        }
        if tunnel {
            if status == 101, response.upgradeIndex >= 0 {
                let entry = table[Int(response.upgradeIndex)]
                out.append("connection: upgrade\r\nupgrade: ")
                out.append(base + Int(entry.valueStart), count: Int(entry.valueLength))
                out.append("\r\n")
            }
        } else {
            if response.contentLength >= 0 && !response.isChunked && status != 204 && !(status >= 100 && status < 200) {
                out.append("content-length: ")
                out.appendDecimal(response.contentLength)
                out.append("\r\n")
            } else if chunkedToClient {
                out.append("transfer-encoding: chunked\r\n")
            }
            if !keepAlive {
                out.append("connection: close\r\n")
            } else if !clientIsHTTP11 {
                out.append("connection: keep-alive\r\n")
            }
        }
        out.append("\r\n")
        source.consume(Int(response.headEnd) - source.readerIndex)
        worker.queueFlush(self)
        if tunnel {
            phase = .tunnel
            armDeadline()
            responseBody.start(input: .none, chunkedOutput: false)
            // Bytes (or a half-close) the client sent after its request, before this answer,
            // were left waiting and no new readiness event will announce them: they are
            // pumped once this head is written (outputProgressed), not from inside the
            // upstream's read.
        } else {
            responseBody.start(input: framing, chunkedOutput: chunkedToClient)
        }
        return true
    }

    /// Whether an upstream response field goes on to the client: not hop-by-hop, not the
    /// upstream's `x-request-id` (ours replaces it), not removed by a filter.
    @inline(__always)
    private func forwardsResponseField(_ entry: HeaderEntry, _ base: UnsafePointer<UInt8>, _ filters: [any HTTPFilter]?) -> Bool {
        if entry.kind.isHopByHop || entry.kind == .xRequestID { return false }
        if let filters, filtersRemove(filters, base + Int(entry.nameStart), Int(entry.nameLength)) { return false }
        return true
    }

    /// `responseHead` for an HTTP/2 stream: the same fields, written as fields.
    private func respondWithFields(_ fields: HTTP2HeaderBlock, _ peer: VirtualPeer, status: Int, response: MessageHead,
                                   table: HeaderTable, base: UnsafePointer<UInt8>, filters: [any HTTPFilter]?,
                                   bodyless: Bool, chunked: Bool) {
        fields.removeAll()
        fields.appendStatus(status)
        for index in 0..<table.count {
            let entry = table[index]
            guard forwardsResponseField(entry, base, filters) else { continue }
            fields.append(name: base + Int(entry.nameStart), nameCount: Int(entry.nameLength),
                          value: base + Int(entry.valueStart), valueCount: Int(entry.valueLength))
        }
        if let meta, !metaRequestID.isEmpty {
            fields.append("x-request-id", uniqueValue: UnsafeBufferPointer(start: meta.base + metaRequestID.lowerBound, count: metaRequestID.count))
        }
        if let filters, let context = filterContext {
            for filter in filters { filter.encodeHeaders(context) }
            for lines in context.responseHeaderLines { appendHeaderLines(fields, context.scratch, lines) }
            if let lines = context.rateLimitLines { appendHeaderLines(fields, context.scratch, lines) }
        }
        let hasLength = response.contentLength >= 0 && !response.isChunked && status != 204
        if hasLength { fields.append("content-length", decimal: response.contentLength) }
        peer.responseFieldsReady(bodyless: bodyless, chunked: chunked, length: hasLength ? response.contentLength : 0)
    }

    /// Moves response body bytes from the upstream's input to the client. Returns the outcome
    /// so the upstream knows whether to keep reading.
    func pumpResponseBody(_ source: ByteBuffer?, upstreamClosed: Bool) -> BodyPump.Outcome {
        let out = output()
        let before = out.readableBytes
        let outcome = responseBody.pump(from: source, to: out, inputClosed: upstreamClosed)
        bytesOut += Int64(out.readableBytes - before)
        if out.readableBytes != before || outcome == .done { worker.queueFlush(self) }
        switch outcome {
        case .outputFull:
            waitingForOutputRoom = true
            armDeadline()
        case .needInput:
            armDeadline()
        case .done, .failed:
            break
        }
        return outcome
    }

    /// The response body failed on bad framing (not on an early close): an invalid answer.
    var responseBodyMalformed: Bool { responseBody.malformed }

    /// Smallest room worth a read for an HTTP/2 stream's body (a chunk's framing fits).
    static let minimumStreamRoom = 64

    /// At most this much of the response body should be read from the upstream now: on an
    /// HTTP/2 stream, the room its flow control and its connection's buffer limit leave (less
    /// what waits in our output); unbounded on a socket, whose kernel buffer is the limit.
    /// At 0 the upstream stops reading (`awaitOutputRoom`) until the stream makes room, so a
    /// stream whose client takes nothing holds a few KiB here, not three full buffers.
    var responseBodyReadLimit: Int {
        guard let virtualPeer else { return .max }
        let room = virtualPeer.outputRoom() - (outBuffer?.readableBytes ?? 0)
        return room < Self.minimumStreamRoom ? 0 : room
    }

    /// A response head is read in pieces of this size at most: on an HTTP/2 stream, body bytes
    /// read with the head would go out past the stream's room.
    var responseHeadReadLimit: Int { virtualPeer == nil ? .max : 16 * 1024 }

    /// The upstream stops reading until `outputProgressed`/`outputIdle` (the stream made room).
    func awaitOutputRoom() {
        waitingForOutputRoom = true
        armDeadline()
    }

    /// For a length-delimited body relayed as it is: reads from the upstream socket into the
    /// client's output buffer. Nil when the body is framed otherwise (the caller copies).
    func readResponseBodyDirectly(from upstream: UpstreamConnection, limit: Int = .max) -> ReadOutcome? {
        let remaining = min(responseBody.directRemaining, Int64(limit))
        guard remaining > 0 else { return nil }
        let out = output()
        if out.writableBytes < 4096 {
            if out.readerIndex > 0 && out.capacity - out.readableBytes >= 4096 { out.compact() } else { return nil }
        }
        let before = out.readableBytes
        let outcome = upstream.read(into: out, count: Int(min(Int64(Int.max), remaining)))
        let moved = out.readableBytes - before
        if moved > 0 {
            responseBody.advanceDirect(Int64(moved))
            bytesOut += Int64(moved)
            worker.queueFlush(self)
            armDeadline()
        }
        return outcome
    }

    /// The whole response has been handed to the client's output.
    func responseComplete(upstreamReusable: Bool) {
        finishExchange(reusableUpstream: upstreamReusable && requestBody.isDone)
        if keepAlive && !listenerDraining {
            phase = .waitingHead
            headStartedAt = worker.loop.now
            armDeadline()
            releaseInputIfEmpty()
            if let buffer = inBuffer, buffer.readableBytes > 0 {
                // A pipelined request is already here.
                processInput()
            } else if readable {
                processInput()
            }
        } else {
            phase = .closingAfterFlush
            if pendingOutput == 0 && !flushQueued { close() }
        }
    }

    /// The upstream failed. Before the response started this may be retried or answered with a
    /// local reply; after, the client connection is cut (the response cannot be completed).
    func upstreamFailed(_ reason: LocalReplyReason, connectFailure: Bool, reusedConnection: Bool) {
        let failed = upstream
        upstream = nil
        if let failed { failed.detach() }
        guard exchangeActive else { return }
        endTry()
        let metrics = routing.metrics
        if connectFailure, let endpoint { metrics.add(metrics.layout.connectFailures + endpoint.index) }
        // A pooled connection the app closed while idle says nothing about the endpoint.
        let staleConnection = reusedConnection && !connectFailure && reason == .upstreamReset
        if !staleConnection, let route, let endpoint {
            OutlierDetector.record(success: false, endpoint: endpoint, cluster: route.cluster,
                                   shared: routing.runtime.shared, now: worker.loop.now)
        }
        if responseStarted {
            errorReason = reason
            if phase == .tunnel {
                phase = .closingAfterFlush
                if pendingOutput == 0 { close() }
            } else {
                close()
            }
            return
        }
        // The stale pooled-connection race (SPEC §3 core): tried once more on a fresh
        // connection, whatever the policy, when nothing of the body is lost. Only for an
        // idempotent method: the head did go out, and an app that read a POST and then reset
        // cannot be told from one that had closed the idle connection (SPEC §7: a
        // non-idempotent request is sent again only when nothing was sent).
        if staleConnection && !staleRetried && requestHead != nil && requestMethod.isIdempotent
            && (requestBody.transferred == 0 || (replayable && replay != nil)) {
            staleRetried = true
            scheduleRetry(.reset, backoff: false)
            return
        }
        if let route {
            let retry = route.retry
            let wanted = connectFailure ? retry.onConnectFailure : retry.onReset
            if wanted && mayRetry(afterSending: !connectFailure) {
                scheduleRetry(connectFailure ? .connectFailure : .reset)
                return
            }
        }
        sendLocalReply(reason, close: !requestBody.isDone)
    }

    /// An HTTP/2 upstream refused the stream (REFUSED_STREAM, or above a GOAWAY's last
    /// stream): the app did not process it, so any method may be tried again (SPEC §7).
    func upstreamRefusedStream() {
        let failed = upstream
        upstream = nil
        if let failed { failed.detach() }
        guard exchangeActive else { return }
        endTry()
        // Nothing reached the app: retried whenever a connect failure would be, or when the
        // policy names refused_stream.
        if !responseStarted, let route, route.retry.onRefusedStream || route.retry.onConnectFailure,
           mayRetry(afterSending: false) {
            scheduleRetry(.refusedStream, backoff: false)
            return
        }
        if responseStarted { close(); return }
        sendLocalReply(.upstreamReset, close: !requestBody.isDone)
    }

    // MARK: tunnel

    private func pumpTunnelUp() {
        guard let upstream else { close(); return }
        if tunnelClientDone { return }
        while readable || (inBuffer?.readableBytes ?? 0) > 0 {
            if let buffer = inBuffer, buffer.readableBytes > 0 {
                let out = upstream.output()
                let count = min(buffer.readableBytes, out.writableBytes)
                if count == 0 { worker.queueFlush(upstream); return }
                out.append(buffer.readPointer, count: count)
                buffer.consume(count)
                worker.queueFlush(upstream)
                armDeadline()
                continue
            }
            switch readIntoInput() {
            case .data, .full: continue
            case .wouldBlock: releaseInputIfEmpty(); return
            case .closed:
                // A half-close: what the client sent goes out first, then the upstream gets
                // the FIN; its answer keeps coming back until it closes (upstreamFailed).
                upstream.shutdownAfterFlush()
                tunnelClientDone = true
                return
            case .failed:
                upstream.shutdownAfterFlush()
                phase = .closingAfterFlush
                if pendingOutput == 0 { close() }
                return
            }
        }
    }

    /// Tunnel bytes from the upstream to the client.
    func tunnelDown(_ source: ByteBuffer) -> Bool {
        let out = output()
        let count = min(source.readableBytes, out.writableBytes)
        if count > 0 {
            out.append(source.readPointer, count: count)
            source.consume(count)
            bytesOut += Int64(count)
            worker.queueFlush(self)
            armDeadline()
        }
        if source.readableBytes > 0 {
            waitingForOutputRoom = true
            return false
        }
        return true
    }

    // MARK: exchange bookkeeping

    private func beginExchange(now: Int64) {
        routing = listener?.routing ?? worker.routing
        exchangeActive = true
        requestStartedAt = headStartedAt
        upstreamStartedAt = 0
        upstreamHeadersAt = 0
        responseStarted = false
        responseStatus = 0
        responseDeadline = 0
        attempts = 0
        firstEndpointIndex = -1
        triedPositions = 0
        balancingHashValue = 0
        replayable = false
        tryDeadline = 0
        retryAt = 0
        staleRetried = false
        exchangeSerial &+= 1
        bytesOut = 0
        errorReason = nil
        clientClosedMidResponse = false
        route = nil
        endpoint = nil
        waitingForOutputRoom = false
        tunnelClientDone = false
        requestBody.start(input: .none, chunkedOutput: false)
        responseBody.start(input: .none, chunkedOutput: false)
        if meta == nil { meta = worker.metaBuffers.acquire() }
        meta!.clear()
        metaMethod = 0..<0; metaAuthority = 0..<0; metaPath = 0..<0
        metaRequestID = 0..<0; metaUserAgent = 0..<0; metaReferer = 0..<0
    }

    /// For replies made before a head could be parsed (408, 400, 431).
    private func startExchangeForLocalReply() {
        beginExchange(now: worker.loop.now)
        requestMinorVersion = 1
        keepAlive = false
        if let meta {
            let start = meta.writerIndex
            appendUUIDv4(meta, &worker.random)
            metaRequestID = start..<meta.writerIndex
        }
    }

    private func recordMeta(_ buffer: ByteBuffer, _ table: HeaderTable, pathPointer: UnsafePointer<UInt8>, pathLength: Int,
                            hostPointer: UnsafePointer<UInt8>? = nil, hostLength: Int = 0) {
        guard let meta else { return }
        let base = UnsafePointer(buffer.base)
        var start = meta.writerIndex
        meta.append(base + Int(head.methodStart), count: min(Int(head.methodLength), 32))
        metaMethod = start..<meta.writerIndex
        start = meta.writerIndex
        if let hostPointer { meta.append(hostPointer, count: min(hostLength, 256)) }
        metaAuthority = start..<meta.writerIndex
        start = meta.writerIndex
        meta.append(pathPointer, count: min(pathLength, 2048))
        metaPath = start..<meta.writerIndex
        start = meta.writerIndex
        if head.requestIDIndex >= 0 {
            let entry = table[Int(head.requestIDIndex)]
            if isValidRequestID(base + Int(entry.valueStart), Int(entry.valueLength)) {
                meta.append(base + Int(entry.valueStart), count: Int(entry.valueLength))
            }
        }
        if meta.writerIndex == start { appendUUIDv4(meta, &worker.random) }
        metaRequestID = start..<meta.writerIndex
        if worker.accessLogFormat == .combined {
            for index in 0..<table.count {
                let entry = table[index]
                let name = base + Int(entry.nameStart)
                let isAgent = equalsLowercase(name, Int(entry.nameLength), "user-agent")
                let isReferer = equalsLowercase(name, Int(entry.nameLength), "referer")
                guard isAgent || isReferer else { continue }
                start = meta.writerIndex
                meta.append(base + Int(entry.valueStart), count: min(Int(entry.valueLength), 400))
                if isAgent { metaUserAgent = start..<meta.writerIndex } else { metaReferer = start..<meta.writerIndex }
            }
        }
    }

    /// Ends the exchange: access log, upstream returned to the pool or closed.
    private func finishExchange(reusableUpstream: Bool) {
        guard exchangeActive else { return }
        exchangeActive = false
        requestsServed += 1
        probationEndsAt = 0
        if let connection = upstream {
            upstream = nil
            if originalDestination != nil {
                connection.exchangeFinished(reusable: reusableUpstream, keptByClient: true)
                if connection.isReusable {
                    keptUpstream = connection
                    keptUpstreamSerial = connection.serial
                }
            } else {
                connection.exchangeFinished(reusable: reusableUpstream)
            }
        }
        if requestHead != nil, let buffer = requestHead.take() { buffers.release(buffer) }
        if let buffer = replay { buffers.release(buffer); replay = nil }
        endTry()
        if countedClusterRequest, let route {
            countedClusterRequest = false
            routing.runtime.shared.add(cluster: route.cluster.index, .activeRequests, UInt64.max)
        }
        let metrics = routing.metrics
        let routeIndex = route?.metricsIndex ?? (metrics.layout.unroutedBase + (listener?.listener.index ?? 0))
        metrics.recordRequest(route: routeIndex, status: responseStatus, durationNanos: worker.loop.now - requestStartedAt)
        writeAccessLog()
        endFilters()
        if let meta { worker.metaBuffers.release(meta); self.meta = nil }
        route = nil
    }

    private func abortUpstream() {
        if let connection = upstream {
            upstream = nil
            connection.detach()
            connection.close()
        }
    }

    private func armDeadline() {
        guard let listenerRuntime = listener?.listener else { return }
        let now = worker.loop.now
        switch phase {
        case .waitingHead:
            if requestsServed > 0 && !(parser.isInProgress && (inBuffer?.readableBytes ?? 0) > 0) {
                if tls != nil && listenerRuntime.idleTimeout > 2 * Self.idleShrinkDelay {
                    idleShrinkDue = true
                    worker.loop.setDeadline(self, now + Self.idleShrinkDelay)
                } else {
                    worker.loop.setDeadline(self, now + listenerRuntime.idleTimeout)
                }
            } else {
                worker.loop.setDeadline(self, headStartedAt + listenerRuntime.headerReadTimeout)
            }
        case .filtering:
            let limit = route.map { $0.timeout > 0 ? $0.timeout : listenerRuntime.idleTimeout } ?? listenerRuntime.idleTimeout
            worker.loop.setDeadline(self, now + limit)
        case .connecting, .forwarding:
            var due = now + listenerRuntime.idleTimeout
            if responseDeadline != 0 { due = min(due, responseDeadline) }
            if tryDeadline != 0 && !responseStarted { due = min(due, tryDeadline) }
            worker.loop.setDeadline(self, due)
        case .retryWait:
            worker.loop.setDeadline(self, responseDeadline != 0 ? min(retryAt, responseDeadline) : retryAt)
        case .tunnel, .closingAfterFlush:
            worker.loop.setDeadline(self, now + listenerRuntime.idleTimeout)
        case .closed:
            break
        }
    }

    private func filtersRemove(_ filters: [any HTTPFilter], _ name: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        for filter in filters where filter.removesResponseHeader(name, count) { return true }
        return false
    }

    private func appendFilterResponseLines(_ out: ByteBuffer, _ context: FilterContext) {
        for lines in context.responseHeaderLines {
            out.append(from: context.scratch, offset: lines.lowerBound, count: lines.count)
        }
        if let lines = context.rateLimitLines {
            out.append(from: context.scratch, offset: lines.lowerBound, count: lines.count)
        }
    }

    /// A filter answered (401, 429, …): its status and headers, plus what earlier filters add
    /// to every answer (rate-limit headers).
    private func sendFilterReply(_ context: FilterContext) {
        let reply = context.reply
        let metrics = routing.metrics
        if !reply.isError {
            // An answer of the proxy's own that is no error (an OIDC redirect, /oauth2/auth's 202).
            let body = reply.body.map { context.bytes($0) }
            sendLocalReply(reply.reason, close: pendingFraming != .none, status: reply.status, body: body, marksError: false) { out in
                out.append(from: context.scratch, offset: reply.headerLines.lowerBound, count: reply.headerLines.count)
            }
            return
        }
        if reply.reason == .rateLimited, let route {
            metrics.add(metrics.layout.rateLimited + route.metricsIndex)
        } else if reply.reason == .unauthenticated || reply.reason == .forbidden || reply.reason == .authUnavailable {
            let method = MetricsLayout.methodIndex(context.deniedMethod)
            let reason = MetricsLayout.reasonIndex(context.deniedReason)
            metrics.add(metrics.layout.authDenied + method * MetricsLayout.authReasons.count + reason)
        }
        let body = reply.body.map { context.bytes($0) }
        sendLocalReply(reply.reason, close: pendingFraming != .none, status: reply.status, body: body) { out in
            out.append(from: context.scratch, offset: reply.headerLines.lowerBound, count: reply.headerLines.count)
        }
    }

    // MARK: local replies

    /// `body`: a body other than the reason's text (its content-type comes in `extraHeaders`).
    func sendLocalReply(_ reason: LocalReplyReason, close closeAfter: Bool, status explicitStatus: Int = 0,
                        body: (UnsafePointer<UInt8>, Int)? = nil, marksError: Bool = true,
                        extraHeaders: ((ByteBuffer) -> Void)? = nil) {
        let out = output()
        if out.writableBytes < 8192 { out.compact() }
        if marksError { errorReason = reason }
        let status = explicitStatus != 0 ? explicitStatus : reason.status
        responseStatus = status
        responseStarted = true
        appendStatusLine(out, status: status)
        extraHeaders?(out)
        if filtersActive, let context = filterContext, let lines = context.rateLimitLines {
            // Every answer on a rate-limited route says where the client stands (SPEC §5).
            out.append(from: context.scratch, offset: lines.lowerBound, count: lines.count)
        }
        let message = reason.message
        let bodyLength = body.map { min($0.1, max(0, out.writableBytes - 1024)) } ?? message.utf8CodeUnitCount
        out.append(body == nil ? "content-type: text/plain\r\ncontent-length: " : "content-length: ")
        out.appendDecimal(Int64(bodyLength))
        if marksError {
            out.append("\r\nx-outrider-error: ")
            out.append(reason.token)
        }
        out.append("\r\n")
        if let meta, !metaRequestID.isEmpty {
            out.append("x-request-id: ")
            out.append(meta.base + metaRequestID.lowerBound, count: metaRequestID.count)
            out.append("\r\n")
        }
        let closing = closeAfter || !keepAlive || listenerDraining
        if closing { out.append("connection: close\r\n") }
        out.append("\r\n")
        if requestMethod != .head || !exchangeActive {
            if let body { out.append(body.0, count: bodyLength) } else { out.append(message) }
        }
        bytesOut += Int64(bodyLength)
        worker.queueFlush(self)
        if let table = headers.take() { worker.releaseHeaderTable(table) }
        if closing {
            keepAlive = false
            finishExchange(reusableUpstream: false)
            phase = .closingAfterFlush
            inBuffer?.clear()
            releaseInputIfEmpty()
            armDeadline()
        } else {
            if let buffer = inBuffer, head.headEnd > 0, Int(head.headEnd) <= buffer.writerIndex, parser.isInProgress == false,
               buffer.readerIndex <= Int(head.headStart) {
                buffer.consume(Int(head.headEnd) - buffer.readerIndex)
            }
            responseComplete(upstreamReusable: false)
        }
    }

    // MARK: access log

    private func writeAccessLog() {
        guard let batch = worker.accessLog, let meta else { return }
        let now = worker.loop.now
        let out = batch.prepareLine(now: now)
        let listenerName = listener?.listener.name
        if worker.accessLogFormat == .combined {
            writeCombined(out, meta)
            return
        }
        out.append("{\"ts\":\"")
        if out.writableBytes >= 24 {
            formatISOTimestamp(Sys.wallClockNanoseconds(), into: out.writePointer)
            out.writerIndex += 24
        }
        out.append("\",\"listener\":\"")
        if let listenerName { out.append(listenerName) }
        out.append("\",\"route\":")
        appendOptionalName(out, route?.name)
        out.append(",\"cluster\":")
        appendOptionalName(out, route?.cluster.name)
        out.append(",\"client\":\"")
        appendPeer(out)
        out.append("\",\"method\":\"")
        appendJSONEscaped(out, meta.base + metaMethod.lowerBound, metaMethod.count)
        out.append("\",\"authority\":\"")
        appendJSONEscaped(out, meta.base + metaAuthority.lowerBound, metaAuthority.count)
        out.append("\",\"path\":\"")
        appendJSONEscaped(out, meta.base + metaPath.lowerBound, metaPath.count)
        out.append(isHTTP2 ? "\",\"proto\":\"HTTP/2\",\"status\":"
                   : (requestMinorVersion == 1 ? "\",\"proto\":\"HTTP/1.1\",\"status\":" : "\",\"proto\":\"HTTP/1.0\",\"status\":"))
        out.appendDecimal(Int64(responseStatus))
        out.append(",\"bytes_in\":")
        out.appendDecimal(requestBody.transferred)
        out.append(",\"bytes_out\":")
        out.appendDecimal(bytesOut)
        out.append(",\"duration_ms\":")
        appendMilliseconds(out, now - requestStartedAt)
        out.append(",\"upstream\":")
        if let endpoint {
            out.append(UInt8(ascii: "\""))
            out.append(endpoint.label)
            out.append(UInt8(ascii: "\""))
        } else if let originalDestination, attempts > 0 {
            let destination = originalDestination.peer
            out.append(destination.isIPv6 ? "\"[" : "\"")
            destination.appendIP(to: out)
            out.append(destination.isIPv6 ? "]:" : ":")
            out.appendDecimal(Int64(destination.port))
            out.append(UInt8(ascii: "\""))
        } else {
            out.append("null")
        }
        out.append(",\"upstream_ms\":")
        if upstreamStartedAt != 0 && upstreamHeadersAt != 0 {
            appendMilliseconds(out, upstreamHeadersAt - upstreamStartedAt)
        } else {
            out.append("null")
        }
        out.append(",\"attempts\":")
        out.appendDecimal(Int64(attempts))
        out.append(",\"request_id\":\"")
        appendJSONEscaped(out, meta.base + metaRequestID.lowerBound, metaRequestID.count)
        out.append("\",\"identity\":")
        if filtersActive, let context = filterContext, let identity = context.identity {
            out.append(UInt8(ascii: "\""))
            let (pointer, count) = context.bytes(identity)
            appendJSONEscaped(out, pointer, count)
            out.append(UInt8(ascii: "\""))
        } else if let clientIdentity {
            // The verified client certificate (mTLS) when no auth filter named anyone.
            out.append(UInt8(ascii: "\""))
            clientIdentity.withUnsafeBytes { appendJSONEscaped(out, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), $0.count) }
            out.append(UInt8(ascii: "\""))
        } else {
            out.append("null")
        }
        out.append(",\"error\":")
        if let errorReason {
            out.append(UInt8(ascii: "\""))
            out.append(errorReason.token)
            out.append(UInt8(ascii: "\""))
        } else if responseStatus == 499 || clientClosedMidResponse {
            out.append("\"client_closed\"")
        } else {
            out.append("null")
        }
        out.append("}\n")
    }

    private func writeCombined(_ out: ByteBuffer, _ meta: ByteBuffer) {
        // client - - [ts] "METHOD PATH PROTO" status bytes "referer" "agent"
        let ip = out.writerIndex
        peer.appendIP(to: out)
        if out.writerIndex == ip { out.append(UInt8(ascii: "-")) }
        out.append(" - - [")
        if out.writableBytes >= 24 {
            formatISOTimestamp(Sys.wallClockNanoseconds(), into: out.writePointer)
            out.writerIndex += 24
        }
        out.append("] \"")
        appendJSONEscaped(out, meta.base + metaMethod.lowerBound, metaMethod.count)
        out.append(UInt8(ascii: " "))
        appendJSONEscaped(out, meta.base + metaPath.lowerBound, metaPath.count)
        out.append(isHTTP2 ? " HTTP/2.0\" " : (requestMinorVersion == 1 ? " HTTP/1.1\" " : " HTTP/1.0\" "))
        out.appendDecimal(Int64(responseStatus))
        out.append(UInt8(ascii: " "))
        out.appendDecimal(bytesOut)
        out.append(" \"")
        if metaReferer.isEmpty { out.append(UInt8(ascii: "-")) } else { appendJSONEscaped(out, meta.base + metaReferer.lowerBound, metaReferer.count) }
        out.append("\" \"")
        if metaUserAgent.isEmpty { out.append(UInt8(ascii: "-")) } else { appendJSONEscaped(out, meta.base + metaUserAgent.lowerBound, metaUserAgent.count) }
        out.append("\"\n")
    }

    private func appendOptionalName(_ out: ByteBuffer, _ name: ByteString?) {
        guard let name else { out.append("null"); return }
        out.append(UInt8(ascii: "\""))
        name.withPointer { appendJSONEscaped(out, $0, $1) }
        out.append(UInt8(ascii: "\""))
    }

    private func appendPeer(_ out: ByteBuffer) {
        if peer.isIPv6 { out.append(UInt8(ascii: "[")) }
        peer.appendIP(to: out)
        if peer.isIPv6 { out.append(UInt8(ascii: "]")) }
        out.append(UInt8(ascii: ":"))
        out.appendDecimal(Int64(peer.port))
    }

    // MARK: serialization

    private func serializeRequestHead(_ out: ByteBuffer, base: UnsafePointer<UInt8>, table: HeaderTable, route: RouteRuntime,
                                      listenerRuntime: ListenerRuntime, path: UnsafePointer<UInt8>, pathLength: Int,
                                      queryLength: Int, host: UnsafePointer<UInt8>, hostLength: Int, bodyFraming: BodyFraming) {
        out.append(base + Int(head.methodStart), count: Int(head.methodLength))
        out.append(UInt8(ascii: " "))
        if head.method == .connect {
            out.append(path, count: pathLength)
        } else if let rewrite = route.rewritePrefix {
            appendRewrittenPath(out, rewrite: rewrite, matchedPrefix: route.pathPrefix.count == 1 ? 0 : route.pathPrefix.count,
                                path: path, pathLength: pathLength)
            out.append(path + pathLength, count: queryLength)
        } else {
            out.append(path, count: pathLength + queryLength)
        }
        out.append(" HTTP/1.1\r\nhost: ")
        if let rewriteHost = route.rewriteHost { out.append(rewriteHost) } else { out.append(host, count: hostLength) }
        out.append("\r\n")

        let forwarded = listenerRuntime.forwardedHeaders
        var traceparentValid = false
        if head.traceparentIndex >= 0 {
            let entry = table[Int(head.traceparentIndex)]
            traceparentValid = isValidTraceparent(base + Int(entry.valueStart), Int(entry.valueLength))
        }
        var forwardedFor: HeaderEntry?
        var extraForwardedFor = false
        for index in 0..<table.count {
            let entry = table[index]
            switch entry.kind {
            case .other, .trailer:
                break
            case .xForwardedFor:
                if forwarded {
                    if forwardedFor == nil { forwardedFor = entry } else { extraForwardedFor = true }
                    continue
                }
            case .xForwardedProto, .xForwardedHost:
                if forwarded { continue }
            case .tracestate:
                if !traceparentValid { continue }
            default:
                // host, framing, hop-by-hop, expect, x-request-id, traceparent: written below.
                continue
            }
            out.append(base + Int(entry.nameStart), count: Int(entry.nameLength))
            out.append(": ")
            out.append(base + Int(entry.valueStart), count: Int(entry.valueLength))
            out.append("\r\n")
        }
        if forwarded {
            out.append("x-forwarded-for: ")
            if let forwardedFor {
                if extraForwardedFor {
                    // Several x-forwarded-for lines: joined in order (RFC 9110 §5.3).
                    for index in 0..<table.count where table[index].kind == .xForwardedFor {
                        let entry = table[index]
                        out.append(base + Int(entry.valueStart), count: Int(entry.valueLength))
                        out.append(", ")
                    }
                } else {
                    out.append(base + Int(forwardedFor.valueStart), count: Int(forwardedFor.valueLength))
                    out.append(", ")
                }
            }
            peer.appendIP(to: out)
            out.append(viaTLS ? "\r\nx-forwarded-proto: https\r\nx-forwarded-host: " : "\r\nx-forwarded-proto: http\r\nx-forwarded-host: ")
            out.append(host, count: hostLength)
            out.append("\r\n")
        }
        if filtersActive, let context = filterContext {
            for lines in context.requestHeaderLines {
                out.append(from: context.scratch, offset: lines.lowerBound, count: lines.count)
            }
        }
        out.append("x-request-id: ")
        if let meta { out.append(meta.base + metaRequestID.lowerBound, count: metaRequestID.count) }
        out.append("\r\ntraceparent: ")
        if traceparentValid {
            let entry = table[Int(head.traceparentIndex)]
            out.append(base + Int(entry.valueStart), count: Int(entry.valueLength))
        } else {
            out.append("00-")
            appendRandomHex(out, &worker.random, byteCount: 16)
            out.append(UInt8(ascii: "-"))
            appendRandomHex(out, &worker.random, byteCount: 8)
            out.append("-01")
        }
        out.append("\r\n")
        if head.teTrailers { out.append("te: trailers\r\n") }
        switch bodyFraming {
        case .length(let count):
            out.append("content-length: ")
            out.appendDecimal(count)
            out.append("\r\n")
        case .chunked:
            out.append("transfer-encoding: chunked\r\n")
        case .none, .untilClose:
            if head.contentLength == 0 { out.append("content-length: 0\r\n") }
        }
        if isUpgradeRequest {
            let entry = table[Int(head.upgradeIndex)]
            out.append("connection: upgrade\r\nupgrade: ")
            out.append(base + Int(entry.valueStart), count: Int(entry.valueLength))
            out.append("\r\n")
        }
        out.append("\r\n")
    }

    private func headersMatch(_ route: RouteRuntime, _ base: UnsafePointer<UInt8>, _ table: HeaderTable) -> Bool {
        for required in route.headers {
            var found = false
            for index in 0..<table.count {
                let entry = table[index]
                if required.name.equalsIgnoringCase(base + Int(entry.nameStart), count: Int(entry.nameLength)),
                   required.value.equals(base + Int(entry.valueStart), count: Int(entry.valueLength)) {
                    found = true
                    break
                }
            }
            if !found { return false }
        }
        return true
    }
}

// MARK: helpers

private enum ChunkedPrescan { case acceptable, invalid, tooLarge }

/// Runs a throw-away decoder over the buffered bytes without consuming them.
final class AddressBox {
    let address: SocketAddress
    init(_ address: SocketAddress) { self.address = address }
}

/// The value of cookie `name` in one `Cookie` header value (`a=1; b=2`).
private func cookieValue(named name: ByteString, in value: UnsafePointer<UInt8>, _ count: Int) -> (pointer: UnsafePointer<UInt8>, count: Int)? {
    var start = 0
    while start < count {
        while start < count && (value[start] == UInt8(ascii: " ") || value[start] == UInt8(ascii: "\t")) { start += 1 }
        var end = start
        while end < count && value[end] != UInt8(ascii: ";") { end += 1 }
        var equals = start
        while equals < end && value[equals] != UInt8(ascii: "=") { equals += 1 }
        if equals < end && equals - start == name.count && name.equals(value + start, count: name.count) {
            return (value + equals + 1, end - equals - 1)
        }
        start = end + 1
    }
    return nil
}

private func prescanChunkedBody(_ buffer: ByteBuffer, from start: Int, maxBody: Int64) -> ChunkedPrescan {
    let savedReader = buffer.readerIndex
    let savedWriter = buffer.writerIndex
    defer {
        buffer.readerIndex = savedReader
        buffer.writerIndex = savedWriter
    }
    buffer.readerIndex = start
    var decoder = ChunkedDecoder()
    var total: Int64 = 0
    while true {
        switch decoder.next(buffer) {
        case .needMore, .end:
            return .acceptable
        case .failed:
            return .invalid
        case .trailer:
            continue
        case .data(_, let count):
            total += Int64(count)
            if maxBody > 0 && total > maxBody { return .tooLarge }
            decoder.consumeData(buffer, count)
        }
    }
}

private func appendStatusLine(_ out: ByteBuffer, base: UnsafePointer<UInt8>, response: MessageHead) {
    // Status line re-serialized as HTTP/1.1 with the upstream's reason phrase.
    let start = Int(response.headStart)
    var lineEnd = start
    while base[lineEnd] != 0x0D { lineEnd += 1 }
    out.append("HTTP/1.1 ")
    out.append(base + start + 9, count: lineEnd - start - 9)
    out.append("\r\n")
}

/// "/v2/" + remainder of the path after the matched prefix; SPEC §2 `rewrite.path_prefix`.
private func appendRewrittenPath(_ out: ByteBuffer, rewrite: ByteString, matchedPrefix: Int,
                                 path: UnsafePointer<UInt8>, pathLength: Int) {
    let remainder = path + matchedPrefix
    let remainderLength = pathLength - matchedPrefix
    if remainderLength == 0 {
        out.append(rewrite)
        return
    }
    rewrite.withPointer { pointer, count in
        var length = count
        while length > 0 && pointer[length - 1] == UInt8(ascii: "/") { length -= 1 }
        out.append(pointer, count: length)
    }
    out.append(remainder, count: remainderLength)
}

/// Length of a ":PORT" suffix on a Host value ("[v6]:port" aware).
private func portSuffixLength(_ host: UnsafePointer<UInt8>, _ count: Int) -> Int {
    var index = count - 1
    while index >= 0 && host[index] >= UInt8(ascii: "0") && host[index] <= UInt8(ascii: "9") { index -= 1 }
    if index >= 0 && index < count - 1 && host[index] == UInt8(ascii: ":") {
        // A bare IPv6 literal without brackets has several colons: not a port.
        if host[0] == UInt8(ascii: "[") { return index > 0 && host[index - 1] == UInt8(ascii: "]") ? count - index : 0 }
        return memchr(host, Int32(UInt8(ascii: ":")), index) == nil ? count - index : 0
    }
    return 0
}

/// "http://authority/path" → offsets of the authority and the path (which may be empty: "/").
private func splitAbsoluteForm(_ target: UnsafePointer<UInt8>, _ count: Int) -> (authorityStart: Int, authorityLength: Int, pathStart: Int)? {
    let schemeLength: Int
    if count >= 7 && equalsLowercase(target, 7, "http://") { schemeLength = 7 }
    else if count >= 8 && equalsLowercase(target, 8, "https://") { schemeLength = 8 }
    else { return nil }
    var index = schemeLength
    while index < count && target[index] != UInt8(ascii: "/") && target[index] != UInt8(ascii: "?") {
        // The authority becomes the Host the app sees: the same bytes as a Host header
        // (no userinfo "@", RFC 9110 §4.2.4; nothing a Host field could not hold).
        guard isHostByte(target[index]) else { return nil }
        index += 1
    }
    let authorityLength = index - schemeLength
    guard authorityLength > 0 else { return nil }
    // The path may be empty ("http://h", "http://h?q"): the caller makes it "/".
    return (schemeLength, authorityLength, index)
}

/// `uri-host ":" port` (RFC 9112 §3.2.3), the only target CONNECT takes.
private func isAuthorityForm(_ target: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    var colon = -1
    for index in 0..<count {
        guard isHostByte(target[index]) else { return false }
        if target[index] == UInt8(ascii: ":") { colon = index }
    }
    let portDigits = count - colon - 1
    guard colon > 0, portDigits >= 1, portDigits <= 5 else { return false }
    for index in (colon + 1)..<count where target[index] < UInt8(ascii: "0") || target[index] > UInt8(ascii: "9") { return false }
    return true
}

private func isValidRequestID(_ value: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    guard count > 0 && count <= 128 else { return false }
    for index in 0..<count where value[index] < 0x21 || value[index] > 0x7E || value[index] == UInt8(ascii: "\"") || value[index] == UInt8(ascii: "\\") {
        return false
    }
    return true
}

/// W3C trace context version 00: "00-<32 hex>-<16 hex>-<2 hex>", ids not all zero.
private func isValidTraceparent(_ value: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    guard count == 55, value[0] == UInt8(ascii: "0"), value[1] == UInt8(ascii: "0"), value[2] == UInt8(ascii: "-"),
          value[35] == UInt8(ascii: "-"), value[52] == UInt8(ascii: "-") else { return false }
    func lowerHex(_ start: Int, _ length: Int) -> (valid: Bool, allZero: Bool) {
        var allZero = true
        for index in start..<(start + length) {
            let byte = value[index]
            let isDigit = byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
            let isLetter = byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f")
            if !isDigit && !isLetter { return (false, false) }
            if byte != UInt8(ascii: "0") { allZero = false }
        }
        return (true, allZero)
    }
    let trace = lowerHex(3, 32)
    let parent = lowerHex(36, 16)
    let flags = lowerHex(53, 2)
    return trace.valid && !trace.allZero && parent.valid && !parent.allZero && flags.valid
}

private func appendMilliseconds(_ out: ByteBuffer, _ nanos: Int64) {
    let micros = max(0, nanos / 1000)
    out.appendDecimal(micros / 1000)
    out.append(UInt8(ascii: "."))
    let fraction = micros % 1000
    if fraction < 100 { out.append(UInt8(ascii: "0")) }
    if fraction < 10 { out.append(UInt8(ascii: "0")) }
    out.appendDecimal(fraction)
}
