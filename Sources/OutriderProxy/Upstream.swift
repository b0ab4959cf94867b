import Glibc
import OutriderCore
import OutriderHTTP
import OutriderHTTP1
import OutriderPosix
import OutriderTLS

/// A connection to one endpoint. Carries one exchange at a time for a `DownstreamConnection`,
/// then waits in the worker's pool for the next.
final class UpstreamConnection: SocketConnection {
    enum State { case closed, connecting, active, pooled }

    private(set) var state: State = .closed
    private var downstream: DownstreamConnection?
    private var cluster: ClusterRuntime?
    private(set) var endpointIndex = -1
    private var reused = false
    private var parser = HeadParser(kind: .response, limits: HeadLimits(maxHeaderBytes: 65536, maxHeaders: 100))
    private var response = MessageHead()
    private var headers: HeaderTable?
    /// A complete head is waiting for room in the client's output.
    private var headPending = false
    private var headDone = false
    private var tunnel = false
    private var receivedAnyByte = false
    private var paused = false
    private var closeAfterFlush = false
    /// Counted in the open-connections gauge of its endpoint (and its cluster's circuit breaker).
    private var countedOpen = false
    /// The endpoint's DNS generation when this connected: a pooled connection to an address
    /// DNS no longer returns is not reused.
    private(set) var addressGeneration: UInt64 = 0

    /// Changes on every close: tells a client connection keeping this one (transparent mode)
    /// that it is not the same connection any more.
    private(set) var serial: UInt64 = 0
    /// The configuration this connection was made under (its pool, counters, endpoints).
    private(set) var routing: WorkerRouting?

    private var endpointLabel: String {
        guard let runtime = routing?.runtime, endpointIndex >= 0, endpointIndex < runtime.endpoints.count else { return "?" }
        return runtime.endpoints[endpointIndex].labelString
    }

    var isReusable: Bool { fd >= 0 && state == .pooled && !peerClosed && (inBuffer?.readableBytes ?? 0) == 0 }

    func attach(_ downstream: DownstreamConnection, cluster: ClusterRuntime, routing: WorkerRouting, reused: Bool) {
        self.downstream = downstream
        self.cluster = cluster
        self.routing = routing
        self.reused = reused
        headPending = false
        headDone = false
        tunnel = false
        receivedAnyByte = false
        paused = false
        closeAfterFlush = false
        parser = HeadParser(kind: .response, limits: HeadLimits(maxHeaderBytes: routing.runtime.maxHeaderBytes, maxHeaders: routing.runtime.maxHeaders))
        if state == .pooled {
            state = .active
            worker.loop.setDeadline(self, 0)
        }
    }

    func detach() {
        downstream = nil
    }

    /// Starts a non-blocking connect with the request head queued. Returns false when it failed
    /// at once (the downstream was told).
    func connect(to endpoint: EndpointRuntime, requestHead: ByteBuffer) -> Bool {
        endpointIndex = endpoint.index
        guard let (address, generation) = routing?.nextAddress(endpoint) else {
            fail(.upstreamConnect, connectFailure: true)
            return false
        }
        return open(address, generation: generation, serverName: endpoint.host, label: endpoint.labelString, requestHead: requestHead)
    }

    /// Transparent mode: straight to the address the client had asked for (SO_ORIGINAL_DST);
    /// no endpoint of the cluster, so no per-endpoint counters or pool.
    func connect(originalDestination address: SocketAddress, requestHead: ByteBuffer) -> Bool {
        endpointIndex = -1
        let host = address.ipString
        return open(address, generation: 0, serverName: host, label: address.description, requestHead: requestHead)
    }

    private func open(_ address: SocketAddress, generation: UInt64, serverName: String, label: String,
                      requestHead: ByteBuffer) -> Bool {
        let socket = Sys.socket(family: address.family)
        guard socket >= 0 else {
            fail(.upstreamConnect, connectFailure: true)
            return false
        }
        fd = Int32(socket)
        _ = Sys.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        if let cluster, let context = cluster.tlsContext {
            do {
                tls = try TLSEngine(client: context, serverName: cluster.tlsServerName ?? serverName)
            } catch {
                OperationalLog.error("tls session not created", ["endpoint": label, "error": error.description])
                Sys.close(fd)
                fd = -1
                fail(.upstreamConnect, connectFailure: true)
                return false
            }
        }
        let result = Sys.connect(fd, address)
        if result != 0 && result != -Int(EINPROGRESS) {
            lastError = Int32(-result)
            Sys.close(fd)
            fd = -1
            fail(.upstreamConnect, connectFailure: true)
            return false
        }
        if worker.loop.register(fd, self) < 0 {
            Sys.close(fd)
            fd = -1
            fail(.upstreamConnect, connectFailure: true)
            return false
        }
        state = .connecting
        countedOpen = true
        addressGeneration = generation
        if let routing, endpointIndex >= 0 { routing.metrics.add(routing.metrics.layout.upstreamActive + endpointIndex) }
        if let cluster { cluster.shared.add(cluster: cluster.index, .connections, 1) }
        output().append(from: requestHead, offset: requestHead.readerIndex, count: requestHead.readableBytes)
        worker.loop.setDeadline(self, worker.loop.now + (cluster?.connectTimeout ?? 1_000_000_000))
        return true
    }

    /// A try carried by a stream of an HTTP/2 connection (`peer`): no socket of its own; the
    /// request head is parsed back into HEADERS by the stream, the response comes back as
    /// HTTP/1.1 bytes. `ready`: the connection is up, the request goes at once.
    func connectVirtual(_ peer: HTTP2UpstreamStream, endpoint: EndpointRuntime, requestHead: ByteBuffer, ready: Bool) {
        endpointIndex = endpoint.index
        fd = SocketConnection.virtualDescriptor
        virtualPeer = peer
        peer.exchange = self
        state = ready ? .active : .connecting
        readable = false
        writable = true
        output().append(from: requestHead, offset: requestHead.readerIndex, count: requestHead.readableBytes)
        worker.queueFlush(self)
    }

    /// The HTTP/2 connection is up (and its TLS handshake done).
    func virtualConnected() {
        guard state == .connecting else { return }
        state = .active
        downstream?.upstreamConnected()
    }

    /// The stream has response bytes for us.
    func virtualInputArrived() {
        guard state == .active else { return }
        readable = true
        processResponse()
    }

    /// The stream or its connection failed.
    func virtualFailed(_ reason: LocalReplyReason, connectFailure: Bool) {
        guard state != .closed else { return }
        fail(reason, connectFailure: connectFailure)
    }

    /// REFUSED_STREAM: the app did not process the request.
    func virtualRefused() {
        guard state != .closed else { return }
        let owner = downstream
        downstream = nil
        close()
        owner?.upstreamRefusedStream()
    }

    /// Queues a request head on an already-connected (pooled) connection.
    func sendRequest(_ requestHead: ByteBuffer) {
        output().append(from: requestHead, offset: requestHead.readerIndex, count: requestHead.readableBytes)
        worker.queueFlush(self)
    }

    override func handleEvents(_ events: UInt32) {
        if events & Epoll.readHangup != 0 { hangupSeen = true }
        switch state {
        case .closed:
            return
        case .pooled:
            // An idle connection that becomes readable was closed by the app (or sent junk).
            close()
            return
        case .connecting:
            if events & (Epoll.output | Epoll.error | Epoll.hangup) != 0 {
                let error = Sys.socketError(fd)
                if error != 0 || events & Epoll.error != 0 {
                    lastError = error
                    fail(.upstreamConnect, connectFailure: true)
                    return
                }
                state = .active
                writable = true
                // connect_timeout covers the TLS handshake too: its deadline stays until then.
                if tls == nil { worker.loop.setDeadline(self, 0) }
                flush()
                if state != .active { return }
                downstream?.upstreamConnected()
                if state != .active { return }
            }
            if events & (Epoll.input | Epoll.readHangup) != 0 {
                readable = true
                processResponse()
            }
        case .active:
            if events & Epoll.output != 0 {
                writable = true
                if pendingOutput > 0 { flush() }
            }
            if events & (Epoll.input | Epoll.readHangup | Epoll.error | Epoll.hangup) != 0 {
                readable = true
                processResponse()
            }
        }
    }

    override func deadlineReached(now: Int64) {
        switch state {
        case .connecting:
            lastError = ETIMEDOUT
            fail(.upstreamConnect, connectFailure: true)
        case .pooled:
            close()
        case .active:
            if let tls, tls.handshakeState != .complete {
                OperationalLog.warning("upstream tls handshake failed", ["endpoint": endpointLabel, "error": "no handshake within connect_timeout"])
                lastError = ETIMEDOUT
                fail(.upstreamConnect, connectFailure: true)
            }
        default:
            break
        }
    }

    override func tlsHandshakeCompleted() {
        if state == .active { worker.loop.setDeadline(self, 0) }
        super.tlsHandshakeCompleted()
    }

    override func outputProgressed() {
        if pendingOutput == 0 && closeAfterFlush {
            shutdownSending()
            closeAfterFlush = false
        }
        downstream?.requestOutputProgressed()
    }

    override func outputIdle() {
        if closeAfterFlush {
            shutdownSending()
            closeAfterFlush = false
        }
    }

    override func writeError() {
        if tlsFailed, let tls, tls.handshakeState != .complete {
            OperationalLog.warning("upstream tls handshake failed", ["endpoint": endpointLabel, "error": tls.failureReason ?? "unknown"])
            fail(.upstreamConnect, connectFailure: true)
            return
        }
        // The app closed or reset while we were sending: handled as a reset of this exchange.
        fail(.upstreamReset, connectFailure: false)
    }

    /// The client drained its output; continue relaying.
    func resumeResponse() {
        guard paused || tunnel else { return }
        paused = false
        processResponse()
    }

    func shutdownAfterFlush() {
        if pendingOutput == 0 { shutdownSending() } else { closeAfterFlush = true }
    }

    private func processResponse() {
        while state == .active, let downstream {
            if paused { return }
            if !headDone {
                if let buffer = inBuffer, buffer.readableBytes > 0 {
                    receivedAnyByte = true
                    if !headPending {
                        if headers == nil { headers = worker.acquireHeaderTable() }
                        switch parser.parse(buffer, headers: headers!, head: &response) {
                        case .needMore:
                            break
                        case .failed:
                            fail(.upstreamProtocol, connectFailure: false)
                            return
                        case .complete:
                            headPending = true
                        }
                    }
                    if headPending {
                        let interim = response.status < 200 && response.status != 101
                        guard downstream.responseHead(&response, headers!, buffer) else {
                            paused = true
                            return
                        }
                        headPending = false
                        if interim { continue }
                        headDone = true
                        if let table = headers.take() { worker.releaseHeaderTable(table) }
                        tunnel = downstream.inTunnel
                        continue
                    }
                }
            } else if tunnel {
                if let buffer = inBuffer, buffer.readableBytes > 0 {
                    if !downstream.tunnelDown(buffer) { paused = true; return }
                }
                if peerClosed {
                    downstream.upstreamFailed(.upstreamReset, connectFailure: false, reusedConnection: false)
                    close()
                    return
                }
            } else {
                let outcome = downstream.pumpResponseBody(inBuffer, upstreamClosed: peerClosed)
                switch outcome {
                case .done:
                    let reusable = response.keepAlive && !peerClosed && (inBuffer?.readableBytes ?? 0) == 0
                    releaseInputIfEmpty()
                    downstream.responseComplete(upstreamReusable: reusable)
                    return
                case .outputFull:
                    paused = true
                    return
                case .failed:
                    // A bad chunk line is an invalid answer; a body cut short is a reset.
                    fail(downstream.responseBodyMalformed ? .upstreamProtocol : .upstreamReset, connectFailure: false)
                    return
                case .needInput:
                    break
                }
            }
            // Need more bytes from the app.
            if peerClosed {
                if !headDone {
                    fail(receivedAnyByte ? .upstreamProtocol : .upstreamReset, connectFailure: false)
                    return
                }
                continue
            }
            guard readable else { return }
            var readLimit = headDone ? Int.max : downstream.responseHeadReadLimit
            if headDone && !tunnel {
                readLimit = downstream.responseBodyReadLimit
                if readLimit <= 0 {
                    // The client's HTTP/2 stream has no room: the app's bytes stay in its
                    // socket until the stream drains.
                    downstream.awaitOutputRoom()
                    releaseInputIfEmpty()
                    paused = true
                    return
                }
            }
            if headDone && !tunnel && (inBuffer?.readableBytes ?? 0) == 0 {
                // A length-delimited body goes from the app's socket straight into the
                // client's output buffer: no copy through our input buffer.
                switch downstream.readResponseBodyDirectly(from: self, limit: readLimit) {
                case .none: break
                case .some(.data), .some(.full): continue
                case .some(.wouldBlock): return
                case .some(.closed): continue
                case .some(.failed):
                    fail(.upstreamReset, connectFailure: false)
                    return
                }
            }
            switch readIntoInput(limit: readLimit) {
            case .data: continue
            case .wouldBlock: return
            case .full:
                if !headDone { fail(.upstreamProtocol, connectFailure: false); return }
                continue
            case .closed:
                continue
            case .failed:
                if tlsFailed {
                    // A refused handshake (unverified certificate, wrong name) is a failure to
                    // connect: another endpoint may be tried.
                    if let tls, tls.handshakeState != .complete {
                        OperationalLog.warning("upstream tls handshake failed", [
                            "endpoint": endpointLabel, "error": tls.failureReason ?? "unknown",
                        ])
                        fail(.upstreamConnect, connectFailure: true)
                        return
                    }
                }
                fail(.upstreamReset, connectFailure: false)
                return
            }
        }
    }

    /// The exchange ended: back to the pool when the app keeps the connection open.
    /// `keptByClient`: a transparent-mode connection stays with its client connection (the
    /// next request goes to the same original destination) instead of an endpoint pool.
    func exchangeFinished(reusable: Bool, keptByClient: Bool = false) {
        downstream = nil
        if let table = headers.take() { worker.releaseHeaderTable(table) }
        if virtualPeer != nil {
            // A stream lives for one exchange; its connection stays.
            close()
            return
        }
        guard reusable, state == .active, let cluster, pendingOutput == 0,
              keptByClient || worker.returnToPool(self, cluster: cluster) else {
            close()
            return
        }
        state = .pooled
        releaseInputIfEmpty()
        worker.loop.setDeadline(self, worker.loop.now + cluster.poolIdleTimeout)
    }

    private func fail(_ reason: LocalReplyReason, connectFailure: Bool) {
        let owner = downstream
        let wasReused = reused
        downstream = nil
        close()
        owner?.upstreamFailed(reason, connectFailure: connectFailure, reusedConnection: wasReused)
    }

    func close() {
        guard state != .closed || fd >= 0 else { return }
        if state == .pooled { routing?.removeFromPool(self) }
        if countedOpen {
            countedOpen = false
            if let routing, endpointIndex >= 0 { routing.metrics.subtract(routing.metrics.layout.upstreamActive + endpointIndex) }
            if let cluster { cluster.shared.add(cluster: cluster.index, .connections, UInt64.max) }
        }
        state = .closed
        serial &+= 1
        downstream = nil
        if let table = headers.take() { worker.releaseHeaderTable(table) }
        closeSocket()
        endpointIndex = -1
        worker.recycle(self)
    }
}
