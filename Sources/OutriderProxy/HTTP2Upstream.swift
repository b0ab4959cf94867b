import Glibc
import OutriderCore
import OutriderHTTP
import OutriderHTTP1
import OutriderHTTP2
import OutriderPosix
import OutriderTLS

/// A connection to an HTTP/2 endpoint (cluster `protocol: h2c`, or `h2`: TLS with ALPN h2),
/// shared by this worker's exchanges to that endpoint: each try is a stream. The exchange talks
/// to a socket-less `UpstreamConnection` whose peer is an `HTTP2UpstreamStream`, so retries,
/// timeouts, outlier detection and metrics are the HTTP/1.1 code.
final class HTTP2UpstreamConnection: SocketConnection, HTTP2SessionDelegate {
    enum State { case connecting, ready, closed }

    private(set) var state = State.connecting
    let routing: WorkerRouting
    let cluster: ClusterRuntime
    let endpointIndex: Int
    private let label: String
    private var session: HTTP2Session?
    private var streams = StreamTable<HTTP2UpstreamStream>()
    /// Streams whose request head has not been submitted yet.
    private var unsubmitted: [HTTP2UpstreamStream] = []
    private var freeStreams: [HTTP2UpstreamStream] = []
    private var tcpConnected = false
    private var handshakeJustCompleted = false
    /// No new streams: a reload replaced the configuration, or the peer sent GOAWAY.
    private var retiring = false
    /// Close at the next flush (never inside the session's own callbacks).
    private var closeRequested = false
    private var countedOpen = false
    /// Counted in the idle-connections gauge of its endpoint: ready, no stream on it.
    private var countedIdle = false
    let requestBlock = HTTP2HeaderBlock(entryCapacity: 24, storageCapacity: 2048)
    let scheme: StaticString

    init(worker: Worker, routing: WorkerRouting, cluster: ClusterRuntime, endpoint: EndpointRuntime) {
        self.routing = routing
        self.cluster = cluster
        endpointIndex = endpoint.index
        label = endpoint.labelString
        scheme = cluster.tlsConfig == nil ? "http" : "https"
        super.init(worker: worker)
        flushesLast = true
    }

    var isReady: Bool { state == .ready }

    var acceptsStream: Bool {
        guard state != .closed, !retiring, !closeRequested, let session, session.acceptsNewStreams else { return false }
        // 100 until the app's SETTINGS say otherwise (RFC 9113 §6.5.2's advice), and never more:
        // past it, another connection shares the load.
        return streams.count + unsubmitted.count < min(session.peerMaxConcurrentStreams, 100)
    }

    // MARK: lifecycle

    func open(_ address: SocketAddress, serverName: String) -> Bool {
        let socket = Sys.socket(family: address.family)
        guard socket >= 0 else { return false }
        fd = Int32(socket)
        _ = Sys.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        if let context = cluster.tlsContext {
            do {
                tls = try TLSEngine(client: context, serverName: serverName)
            } catch {
                OperationalLog.error("tls session not created", ["endpoint": label, "error": error.description])
                Sys.close(fd)
                fd = -1
                return false
            }
        }
        do {
            let session = try HTTP2Session(role: .client, allocator: worker.http2Allocator)
            session.delegate = self
            self.session = session
        } catch {
            OperationalLog.error("http2 session not created", ["endpoint": label, "error": error.description])
            Sys.close(fd)
            fd = -1
            tls = nil
            return false
        }
        let result = Sys.connect(fd, address)
        if result != 0 && result != -Int(EINPROGRESS) || worker.loop.register(fd, self) < 0 {
            if result != 0 && result != -Int(EINPROGRESS) {
                OperationalLog.warning("upstream connect failed", ["endpoint": label, "error": errnoText(Int32(-result))])
            }
            Sys.close(fd)
            fd = -1
            tls = nil
            session = nil
            routing.metrics.add(routing.metrics.layout.connectFailures + endpointIndex)
            return false
        }
        countedOpen = true
        routing.metrics.add(routing.metrics.layout.upstreamActive + endpointIndex)
        cluster.shared.add(cluster: cluster.index, .connections, 1)
        worker.loop.setDeadline(self, worker.loop.now + cluster.connectTimeout)
        pumpOutput()
        return true
    }

    /// A reload replaced the configuration: streams in flight finish, then the connection closes.
    func retire() {
        retiring = true
        if streams.isEmpty && unsubmitted.isEmpty { requestClose() }
    }

    private func requestClose() {
        closeRequested = true
        worker.queueFlush(self)
    }

    /// Closes the connection; streams still on it fail with `reason` — `upstream_protocol`
    /// instead of a reset when the app broke the protocol (the session failed: nghttp2 sent
    /// GOAWAY for what it received).
    func close(failing reason: LocalReplyReason = .upstreamReset, connectFailure: Bool = false) {
        guard state != .closed else { return }
        var reason = reason
        if reason == .upstreamReset, let failure = session?.failure, failure.kind != .internalError {
            reason = .upstreamProtocol
        }
        let wasReady = state == .ready
        state = .closed
        updateIdleGauge()
        routing.forget(self)
        if countedOpen {
            countedOpen = false
            routing.metrics.subtract(routing.metrics.layout.upstreamActive + endpointIndex)
            cluster.shared.add(cluster: cluster.index, .connections, UInt64.max)
        }
        if connectFailure || !wasReady {
            routing.metrics.add(routing.metrics.layout.connectFailures + endpointIndex)
        }
        session?.delegate = nil
        let open = streams.allValues + unsubmitted
        streams.removeAll()
        unsubmitted.removeAll()
        for stream in open {
            // Nothing reached an app that never answered the connection.
            stream.connectionFailed(wasReady ? reason : .upstreamConnect, connectFailure: connectFailure || !wasReady)
        }
        closeSocket()
        session = nil
    }

    override func deadlineReached(now: Int64) {
        switch state {
        case .connecting:
            OperationalLog.warning("upstream connect failed", ["endpoint": label, "error": "no connection within connect_timeout"])
            close(failing: .upstreamConnect, connectFailure: true)
        case .ready:
            if streams.isEmpty && unsubmitted.isEmpty {
                session?.goAway()
                requestClose()
                pumpOutput()
            }
        case .closed:
            break
        }
    }

    private func markReady() {
        guard state == .connecting else { return }
        state = .ready
        armIdleDeadline()
        for stream in unsubmitted { stream.exchange?.virtualConnected() }
        for (_, stream) in streams { stream.exchange?.virtualConnected() }
    }

    private func armIdleDeadline() {
        updateIdleGauge()
        guard state == .ready else { return }
        worker.loop.setDeadline(self, streams.isEmpty && unsubmitted.isEmpty ? worker.loop.now + cluster.poolIdleTimeout : 0)
    }

    /// `/clusters` counts a connection without streams as idle, as it does a pooled HTTP/1.1 one.
    private func updateIdleGauge() {
        let idle = state == .ready && countedOpen && streams.isEmpty && unsubmitted.isEmpty
        guard idle != countedIdle else { return }
        countedIdle = idle
        if idle {
            routing.metrics.add(routing.metrics.layout.upstreamIdle + endpointIndex)
        } else {
            routing.metrics.subtract(routing.metrics.layout.upstreamIdle + endpointIndex)
        }
    }

    override func tlsHandshakeCompleted() {
        handshakeJustCompleted = true
        super.tlsHandshakeCompleted()
    }

    // MARK: events

    override func handleEvents(_ events: UInt32) {
        if events & Epoll.readHangup != 0 { hangupSeen = true }
        if state == .closed { return }
        if !tcpConnected {
            guard events & (Epoll.output | Epoll.error | Epoll.hangup) != 0 else { return }
            let error = Sys.socketError(fd)
            if error != 0 || events & Epoll.error != 0 {
                OperationalLog.warning("upstream connect failed", ["endpoint": label, "error": errnoText(error == 0 ? ECONNREFUSED : error)])
                close(failing: .upstreamConnect, connectFailure: true)
                return
            }
            tcpConnected = true
            writable = true
            if tls == nil { markReady() }
            flush()
            if state == .closed { return }
        } else if events & Epoll.output != 0 {
            writable = true
            if pendingOutput > 0 { flush() } else { pumpOutput() }
        }
        if events & (Epoll.input | Epoll.readHangup | Epoll.error | Epoll.hangup) != 0 {
            readable = true
            processInput()
        }
    }

    private func processInput() {
        while fd >= 0 && state != .closed {
            if let buffer = inBuffer, buffer.readableBytes > 0, let session {
                let result = session.receive(buffer.readPointer, buffer.readableBytes)
                buffer.consume(buffer.readableBytes)
                if case .fatal(let failure) = result {
                    OperationalLog.warning("upstream http2 connection failed", ["endpoint": label, "error": failure.description])
                    pumpOutput()
                    close(failing: .upstreamProtocol)
                    return
                }
                continue
            }
            releaseInputIfEmpty()
            guard readable else { break }
            let outcome = readIntoInput()
            if handshakeJustCompleted {
                handshakeJustCompleted = false
                guard let tls, tls.negotiatedALPNIsH2 else {
                    OperationalLog.warning("upstream tls handshake failed", ["endpoint": label, "error": "the server did not agree to h2 (ALPN)"])
                    close(failing: .upstreamConnect, connectFailure: true)
                    return
                }
                markReady()
            }
            switch outcome {
            case .data, .full:
                continue
            case .wouldBlock:
                break
            case .closed, .failed:
                if tlsFailed, let tls, tls.handshakeState != .complete {
                    OperationalLog.warning("upstream tls handshake failed", ["endpoint": label, "error": tls.failureReason ?? "unknown"])
                    close(failing: .upstreamConnect, connectFailure: true)
                } else {
                    close(failing: .upstreamReset)
                }
                return
            }
            break
        }
        pumpOutput()
    }

    func pumpOutput() {
        guard state != .closed, fd >= 0, let session else { return }
        // The session failed (a protocol error in what the app sent): once its GOAWAY is out,
        // the connection closes and its streams fail, rather than wait for the app to close.
        if session.failure != nil { closeRequested = true }
        if closeRequested && !session.pendingOutput && pendingOutput == 0 {
            close()
            return
        }
        guard session.pendingOutput else { return }
        let out = output()
        if out.writableBytes < 16 * 1024 && out.readerIndex > 0 { out.compact() }
        let count = session.takeOutput(into: out.writePointer, capacity: out.writableBytes)
        out.writerIndex += count
        releaseOutputIfEmpty()
        if session.failure != nil { closeRequested = true }
        if count > 0 { worker.queueFlush(self) } else if closeRequested && pendingOutput == 0 { close() }
    }

    override func outputProgressed() { pumpOutput() }
    override func outputIdle() { pumpOutput() }

    override func writeError() {
        if tlsFailed, let tls, tls.handshakeState != .complete {
            OperationalLog.warning("upstream tls handshake failed", ["endpoint": label, "error": tls.failureReason ?? "unknown"])
            close(failing: .upstreamConnect, connectFailure: true)
            return
        }
        close(failing: .upstreamReset)
    }

    // MARK: streams

    func makeStream() -> HTTP2UpstreamStream {
        let stream = freeStreams.popLast() ?? HTTP2UpstreamStream(connection: self)
        stream.prepare()
        unsubmitted.append(stream)
        armIdleDeadline()
        return stream
    }

    /// Submits `requestBlock` for `stream`; nil when the session takes no new stream.
    func submit(_ stream: HTTP2UpstreamStream, endStream: Bool) -> Int32? {
        guard let session, state != .closed else { return nil }
        let id: Int32
        do {
            id = try session.submitRequest(headers: requestBlock, endStream: endStream)
        } catch {
            return nil
        }
        if let position = unsubmitted.firstIndex(where: { $0 === stream }) { unsubmitted.remove(at: position) }
        streams[id] = stream
        worker.queueFlush(self)
        return id
    }

    func submitData(_ id: Int32, _ bytes: UnsafePointer<UInt8>, _ count: Int, endStream: Bool, failed: inout Bool) -> Bool {
        guard let session else { failed = true; return false }
        worker.queueFlush(self)
        do {
            return try session.submitData(stream: id, bytes, count, endStream: endStream)
        } catch {
            failed = true
            return false
        }
    }

    func submitTrailers(_ id: Int32, _ trailers: HTTP2HeaderBlock) -> Bool {
        guard let session else { return false }
        worker.queueFlush(self)
        do {
            try session.submitTrailers(stream: id, trailers: trailers)
            return true
        } catch {
            return false
        }
    }

    func credit(_ id: Int32, _ count: Int) {
        guard let session, count > 0 else { return }
        session.consume(stream: id, bytes: count)
        worker.queueFlush(self)
    }

    /// The exchange is done with `stream` (a stream still open is reset with CANCEL).
    func release(_ stream: HTTP2UpstreamStream, resetting: Bool) {
        if stream.id != 0 {
            if streams[stream.id] === stream { streams.removeValue(forKey: stream.id) }
            if resetting { session?.resetStream(stream: stream.id, code: .cancel) }
            worker.queueFlush(self)
        } else if let position = unsubmitted.firstIndex(where: { $0 === stream }) {
            unsubmitted.remove(at: position)
        }
        if freeStreams.count < 64 { freeStreams.append(stream) }
        updateIdleGauge()
        if streams.isEmpty && unsubmitted.isEmpty {
            if retiring { requestClose() } else { armIdleDeadline() }
        }
    }

    // MARK: HTTP2SessionDelegate

    func http2Session(_ session: HTTP2Session, didReceiveHeaders headers: HTTP2HeaderBlock, stream: Int32, endStream: Bool) {
        if let owner = streams[stream] { owner.responseHead(headers, endStream: endStream) }
    }

    func http2Session(_ session: HTTP2Session, didReceiveData bytes: UnsafePointer<UInt8>, count: Int, stream: Int32) {
        if let owner = streams[stream] {
            owner.responseData(bytes, count)
        } else {
            session.consume(stream: stream, bytes: count)
        }
    }

    func http2Session(_ session: HTTP2Session, didReceiveTrailers trailers: HTTP2HeaderBlock, stream: Int32) {
        if let owner = streams[stream] { owner.responseTrailers(trailers) }
    }

    func http2Session(_ session: HTTP2Session, didEndStream stream: Int32) {
        if let owner = streams[stream] { owner.responseEnded() }
    }

    func http2Session(_ session: HTTP2Session, didCloseStream stream: Int32, errorCode: HTTP2ErrorCode) {
        guard let owner = streams.removeValue(forKey: stream) else { return }
        owner.streamClosed(errorCode)
        updateIdleGauge()
        if streams.isEmpty && unsubmitted.isEmpty {
            if retiring { requestClose() } else { armIdleDeadline() }
        }
    }

    func http2Session(_ session: HTTP2Session, didResetStream stream: Int32, errorCode: HTTP2ErrorCode) {
        streams[stream]?.resetByApp = true
    }

    func http2Session(_ session: HTTP2Session, didReceiveGoAway lastStreamID: Int32, errorCode: HTTP2ErrorCode) {
        // Streams above lastStreamID are closed by nghttp2 with REFUSED_STREAM (retried).
        retiring = true
        if streams.isEmpty && unsubmitted.isEmpty { requestClose() }
    }

    func http2Session(_ session: HTTP2Session, streamWindowOpened stream: Int32) {
        if let owner = streams[stream] { owner.roomOpened() }
    }
}

/// One try on an `HTTP2UpstreamConnection`, seen by its exchange as an HTTP/1.1 connection:
/// the request the exchange serialized is parsed back into HEADERS, DATA and trailers; the
/// response is written as HTTP/1.1 (chunked when the app gave no content-length, its trailers
/// as chunked trailers) for the exchange's parser. DATA is credited to the app as the exchange
/// takes it.
final class HTTP2UpstreamStream: VirtualPeer {
    unowned(unsafe) let connection: HTTP2UpstreamConnection
    var exchange: UpstreamConnection?
    private(set) var id: Int32 = 0

    // Request side (exchange → app).
    private enum RequestState { case head, length(Int64), chunked, done }
    private var requestState = RequestState.head
    private var requestDecoder = ChunkedDecoder()
    private var requestTrailers = 0
    private var trailerBlock: HTTP2HeaderBlock?
    private var waitingForRoom = false
    private var requestIsHead = false

    // Response side (app → exchange).
    private var responseStarted = false
    /// `body.ended`: the app's END_STREAM came.
    private var body = HTTP2BodyRelay()
    /// The app's content-length and the body bytes seen: a body read whole lets the exchange
    /// end before END_STREAM is processed, and the stream must not be reset for it.
    private var responseLength: Int64 = -1
    private var responseReceived: Int64 = 0
    /// The app sent RST_STREAM (otherwise a reset with an error code was ours: nghttp2 refused
    /// what the app sent on the stream — a bad `:status`, a content-length the DATA broke).
    var resetByApp = false

    init(connection: HTTP2UpstreamConnection) {
        self.connection = connection
    }

    private var worker: Worker { connection.worker }

    func prepare() {
        id = 0
        requestState = .head
        requestDecoder = ChunkedDecoder()
        requestTrailers = 0
        waitingForRoom = false
        requestIsHead = false
        responseStarted = false
        body.start(chunked: false, ended: false)
        responseLength = -1
        responseReceived = 0
        resetByApp = false
    }

    // MARK: request

    override func deliver(_ buffer: ByteBuffer) {
        var failed = false
        while buffer.readableBytes > 0 && !waitingForRoom && !failed {
            switch requestState {
            case .head:
                let table = worker.acquireHeaderTable()
                defer { worker.releaseHeaderTable(table) }
                var parser = HeadParser(kind: .request, limits: HeadLimits(maxHeaderBytes: buffer.capacity, maxHeaders: table.capacity))
                parser.begin(at: buffer.readerIndex)
                var head = MessageHead()
                switch parser.parse(buffer, headers: table, head: &head) {
                case .needMore:
                    return
                case .failed:
                    buffer.consume(buffer.readableBytes)
                    requestState = .done
                    exchange?.virtualFailed(.upstreamProtocol, connectFailure: false)
                    return
                case .complete:
                    let framing: RequestState = head.isChunked ? .chunked : (head.contentLength > 0 ? .length(head.contentLength) : .done)
                    buildRequestHead(head, table, buffer)
                    buffer.consume(Int(head.headEnd) - buffer.readerIndex)
                    let endStream: Bool
                    if case .done = framing { endStream = true } else { endStream = false }
                    guard let submitted = connection.submit(self, endStream: endStream) else {
                        // GOAWAY came first: nothing reached the app.
                        requestState = .done
                        buffer.consume(buffer.readableBytes)
                        exchange?.virtualRefused()
                        return
                    }
                    id = submitted
                    requestState = framing
                    if case .chunked = framing { requestDecoder = ChunkedDecoder() }
                }
            case .length(let remaining):
                let count = Int(min(Int64(buffer.readableBytes), remaining))
                let last = Int64(count) == remaining
                let more = connection.submitData(id, buffer.readPointer, count, endStream: last, failed: &failed)
                buffer.consume(count)
                requestState = last ? .done : .length(remaining - Int64(count))
                if !more && !failed && !last { waitingForRoom = true }
            case .chunked:
                switch requestDecoder.next(buffer) {
                case .needMore:
                    return
                case .failed:
                    failed = true
                case .data(let offset, let count):
                    let more = connection.submitData(id, UnsafePointer(buffer.base + offset), count, endStream: false, failed: &failed)
                    requestDecoder.consumeData(buffer, count)
                    if !more && !failed { waitingForRoom = true }
                case .trailer(let offset, let count):
                    let block = trailerBlock ?? HTTP2HeaderBlock(entryCapacity: 4, storageCapacity: 256)
                    trailerBlock = block
                    if requestTrailers == 0 { block.removeAll() }
                    if appendHeaderLine(block, UnsafePointer(buffer.base + offset), count) { requestTrailers += 1 }
                case .end:
                    if requestTrailers > 0, let block = trailerBlock {
                        failed = !connection.submitTrailers(id, block)
                    } else {
                        _ = connection.submitData(id, buffer.readPointer, 0, endStream: true, failed: &failed)
                    }
                    requestState = .done
                }
            case .done:
                buffer.consume(buffer.readableBytes)
            }
        }
        if failed {
            buffer.consume(buffer.readableBytes)
            requestState = .done
            exchange?.virtualFailed(.upstreamReset, connectFailure: false)
        }
    }

    /// HEADERS from the HTTP/1.1 head the exchange serialized: pseudo-headers from the request
    /// line and Host; connection-specific fields stay behind (RFC 9113 §8.2.2).
    private func buildRequestHead(_ head: MessageHead, _ table: HeaderTable, _ buffer: ByteBuffer) {
        let block = connection.requestBlock
        block.removeAll()
        let base = UnsafePointer(buffer.base)
        requestIsHead = head.method == .head
        block.append(":method", bytes: UnsafeBufferPointer(start: base + Int(head.methodStart), count: Int(head.methodLength)))
        block.append(":scheme", bytes: UnsafeBufferPointer(start: connection.scheme.utf8Start, count: connection.scheme.utf8CodeUnitCount))
        if head.hostIndex >= 0 {
            let entry = table[Int(head.hostIndex)]
            block.append(":authority", bytes: UnsafeBufferPointer(start: base + Int(entry.valueStart), count: Int(entry.valueLength)))
        }
        block.append(":path", bytes: UnsafeBufferPointer(start: base + Int(head.targetStart), count: Int(head.targetLength)))
        for index in 0..<table.count {
            let entry = table[index]
            switch entry.kind {
            case .host, .connection, .keepAlive, .proxyConnection, .transferEncoding, .upgrade, .expect, .listedInConnection:
                continue
            default:
                block.append(name: UnsafeBufferPointer(start: base + Int(entry.nameStart), count: Int(entry.nameLength)),
                             value: UnsafeBufferPointer(start: base + Int(entry.valueStart), count: Int(entry.valueLength)))
            }
        }
    }

    func roomOpened() {
        guard waitingForRoom, let exchange else { return }
        waitingForRoom = false
        worker.queueFlush(exchange)
    }

    // MARK: response

    func responseHead(_ headers: HTTP2HeaderBlock, endStream: Bool) {
        let status = headers.status
        guard status >= 200, let exchange else { return }   // interim answers are not relayed
        let out = exchange.inBuffer ?? exchange.buffers.acquire()
        exchange.inBuffer = out
        guard headers.listSize + 128 < out.writableBytes else {
            exchange.virtualFailed(.upstreamProtocol, connectFailure: false)
            return
        }
        responseStarted = true
        out.append("HTTP/1.1 ")
        out.appendDecimal(Int64(status))
        out.append(" ")
        out.append(reasonPhrase(status))
        out.append("\r\n")
        var hasLength = false
        for index in 0..<headers.count {
            let entry = headers[index]
            guard entry.pseudo == .none else { continue }
            let name = headers.name(at: index)
            let value = headers.value(at: index)
            if entry.kind == .contentLength {
                hasLength = true
                responseLength = parseContentLength(value) ?? -1
            }
            out.append(name.baseAddress!, count: name.count)
            out.append(": ")
            out.append(value.baseAddress!, count: value.count)
            out.append("\r\n")
        }
        if endStream {
            if !hasLength && !requestIsHead && status != 204 && status != 304 { out.append("content-length: 0\r\n") }
            body.ended = true
        } else if !hasLength {
            body.chunked = true
            out.append("transfer-encoding: chunked\r\n")
        }
        out.append("\r\n")
        exchange.virtualInputArrived()
    }

    func responseData(_ bytes: UnsafePointer<UInt8>, _ count: Int) {
        guard let exchange, responseStarted else {
            connection.credit(id, count)
            return
        }
        responseReceived += Int64(count)
        guard body.append(bytes, count, pool: worker.buffers) else {
            // Beyond the stream window we announced: the app broke flow control.
            exchange.virtualFailed(.upstreamProtocol, connectFailure: false)
            return
        }
        exchange.virtualInputArrived()
    }

    func responseTrailers(_ trailers: HTTP2HeaderBlock) {
        guard exchange != nil else { return }
        body.appendTrailers(trailers, pool: worker.buffers)
    }

    func responseEnded() {
        body.ended = true
        exchange?.virtualInputArrived()
    }

    /// nghttp2 closed the stream (after both ends, or on a reset either way).
    func streamClosed(_ code: HTTP2ErrorCode) {
        // nghttp2 forgot the stream: nothing to reset or credit any more.
        id = 0
        // A complete response may still wait in `body`; the exchange releases us.
        guard let exchange, !body.ended else { return }
        // Closing the exchange runs `connectionClosed`, which releases this stream.
        if code == .refusedStream {
            exchange.virtualRefused()
        } else if !resetByApp && code != .noError {
            exchange.virtualFailed(.upstreamProtocol, connectFailure: false)
        } else {
            exchange.virtualFailed(.upstreamReset, connectFailure: false)
        }
    }

    /// The connection went away under the stream.
    func connectionFailed(_ reason: LocalReplyReason, connectFailure: Bool) {
        id = 0
        exchange?.virtualFailed(reason, connectFailure: connectFailure)
    }

    private func releaseBuffers() {
        body.release(pool: worker.buffers)
    }

    // MARK: VirtualPeer

    override func fill(_ buffer: ByteBuffer, limit: Int) -> ReadOutcome {
        var taken = 0
        let outcome = body.fill(buffer, limit: limit, pool: worker.buffers, taken: &taken)
        if taken > 0 && id != 0 { connection.credit(id, taken) }
        return outcome
    }

    override func connectionClosed() {
        // The exchange ended (answered, failed, or its client went away).
        exchange = nil
        releaseBuffers()
        let unfinished: Bool
        if case .done = requestState {
            unfinished = !body.ended && !(responseLength >= 0 && !requestIsHead && responseReceived >= responseLength)
        } else {
            unfinished = true
        }
        connection.release(self, resetting: id != 0 && unfinished)
        id = 0
    }
}

/// "name: value" (an HTTP/1.1 trailer line) into `block`; names are lower-cased there.
func appendHeaderLine(_ block: HTTP2HeaderBlock, _ line: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    var colon = 0
    while colon < count && line[colon] != UInt8(ascii: ":") { colon += 1 }
    guard colon > 0, colon < count else { return false }
    var valueStart = colon + 1
    while valueStart < count && (line[valueStart] == UInt8(ascii: " ") || line[valueStart] == UInt8(ascii: "\t")) { valueStart += 1 }
    var valueEnd = count
    while valueEnd > valueStart && (line[valueEnd - 1] == UInt8(ascii: " ") || line[valueEnd - 1] == UInt8(ascii: "\t")) { valueEnd -= 1 }
    block.append(name: UnsafeBufferPointer(start: line, count: colon),
                 value: UnsafeBufferPointer(start: line + valueStart, count: valueEnd - valueStart))
    return true
}

/// Appends each "name: value\r\n" line of `range` in `buffer` (lines the proxy wrote itself).
func appendHeaderLines(_ block: HTTP2HeaderBlock, _ buffer: ByteBuffer, _ range: Range<Int>) {
    let base = UnsafePointer(buffer.base)
    var lineStart = range.lowerBound
    var index = lineStart
    while index < range.upperBound {
        if base[index] == 0x0A {
            var lineEnd = index
            if lineEnd > lineStart && base[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            if lineEnd > lineStart { _ = appendHeaderLine(block, base + lineStart, lineEnd - lineStart) }
            lineStart = index + 1
        }
        index += 1
    }
    if lineStart < range.upperBound { _ = appendHeaderLine(block, base + lineStart, range.upperBound - lineStart) }
}

/// The reason phrase an HTTP/1.1 status line carries for an HTTP/2 answer (which has none).
func reasonPhrase(_ status: Int) -> StaticString {
    switch status {
    case 200: return "OK"
    case 201: return "Created"
    case 202: return "Accepted"
    case 204: return "No Content"
    case 206: return "Partial Content"
    case 301: return "Moved Permanently"
    case 302: return "Found"
    case 303: return "See Other"
    case 304: return "Not Modified"
    case 307: return "Temporary Redirect"
    case 308: return "Permanent Redirect"
    case 400: return "Bad Request"
    case 401: return "Unauthorized"
    case 403: return "Forbidden"
    case 404: return "Not Found"
    case 405: return "Method Not Allowed"
    case 409: return "Conflict"
    case 413: return "Content Too Large"
    case 429: return "Too Many Requests"
    case 500: return "Internal Server Error"
    case 502: return "Bad Gateway"
    case 503: return "Service Unavailable"
    case 504: return "Gateway Timeout"
    default: return "Status"
    }
}
