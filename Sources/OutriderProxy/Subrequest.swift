import Glibc
import OutriderCore
import OutriderFilters
import OutriderHTTP
import OutriderHTTP1
import OutriderPosix
import OutriderTLS

/// HTTP/1.1 requests from a worker's loop to another service (the external auth service): one
/// connection per request (`connection: close`), the answer read to EOF, bounded.
final class SubrequestClient: OutriderFilters.SubrequestClient {
    unowned(unsafe) let worker: Worker
    /// Addresses resolved at start-up, by "HOST:PORT".
    let addresses: [String: SocketAddress]

    init(worker: Worker, addresses: [String: SocketAddress]) {
        self.worker = worker
        self.addresses = addresses
    }

    func send(head: [UInt8], host: String, port: UInt16, timeoutNanos: Int64,
              completion: @escaping (SubrequestOutcome) -> Void) {
        let key = ConfigKey.address(host: host, port: port)
        guard let address = addresses[key] ?? SocketAddress.literal(host: host, port: port) else {
            let loop = worker.loop
            nonisolated(unsafe) let deferred = completion
            loop.post { deferred(.failed) }
            return
        }
        let connection = SubrequestConnection(worker: worker)
        connection.start(address: address, head: head, deadline: worker.loop.now + timeoutNanos, completion: completion)
    }

    /// To a target resolved by the proxy (the OIDC token endpoint), over TLS for https.
    func send(_ request: [UInt8], to target: SubrequestTarget, timeoutNanos: Int64,
              completion: @escaping (SubrequestOutcome) -> Void) {
        let connection = SubrequestConnection(worker: worker)
        guard let resolved = target.connectHandle as? ResolvedTarget else {
            let loop = worker.loop
            nonisolated(unsafe) let deferred = completion
            loop.post { deferred(.failed) }
            return
        }
        if let context = resolved.tls {
            do {
                connection.tls = try TLSEngine(client: context, serverName: target.host)
            } catch {
                OperationalLog.error("tls client setup failed", ["host": target.host, "error": error.description])
                let loop = worker.loop
                nonisolated(unsafe) let deferred = completion
                loop.post { deferred(.failed) }
                return
            }
        }
        connection.start(address: resolved.address, head: request, deadline: worker.loop.now + timeoutNanos,
                         completion: completion)
    }
}

/// Where a `SubrequestTarget` connects: an address resolved off the loop, and the TLS client
/// context for https.
final class ResolvedTarget: @unchecked Sendable {
    let address: SocketAddress
    let tls: TLSClientContext?
    init(address: SocketAddress, tls: TLSClientContext?) {
        self.address = address
        self.tls = tls
    }
}

enum ConfigKey {
    static func address(host: String, port: UInt16) -> String { "\(host):\(port)" }
}

final class SubrequestConnection: SocketConnection {
    private var completion: ((SubrequestOutcome) -> Void)?
    private var connected = false
    private var received: [UInt8] = []
    static let maxResponseBytes = 256 * 1024

    func start(address: SocketAddress, head: [UInt8], deadline: Int64, completion: @escaping (SubrequestOutcome) -> Void) {
        self.completion = completion
        let socket = Sys.socket(family: address.family)
        guard socket >= 0 else { finishLater(.failed); return }
        fd = Int32(socket)
        let result = Sys.connect(fd, address)
        guard result == 0 || result == -Int(EINPROGRESS), worker.loop.register(fd, self) >= 0 else {
            Sys.close(fd)
            fd = -1
            finishLater(.failed)
            return
        }
        head.withUnsafeBufferPointer { _ = output().append($0.baseAddress!, count: $0.count) }
        worker.loop.setDeadline(self, deadline)
    }

    /// Failures found before the loop ran are reported from the loop, never from inside the
    /// filter call that started the request.
    private func finishLater(_ outcome: SubrequestOutcome) {
        nonisolated(unsafe) let callback = completion
        completion = nil
        worker.loop.post { callback?(outcome) }
    }

    override func handleEvents(_ events: UInt32) {
        if !connected {
            guard events & (Epoll.output | Epoll.error | Epoll.hangup) != 0 else { return }
            if Sys.socketError(fd) != 0 || events & Epoll.error != 0 { finish(.failed); return }
            connected = true
            writable = true
            flush()
            if fd < 0 { return }
        } else if events & Epoll.output != 0 {
            writable = true
            if pendingOutput > 0 { flush() }
        }
        if events & Epoll.readHangup != 0 { hangupSeen = true }
        if events & (Epoll.input | Epoll.readHangup | Epoll.hangup) != 0 {
            readable = true
            readResponse()
        }
    }

    private func readResponse() {
        while readable && fd >= 0 {
            switch readIntoInput() {
            case .data, .full:
                if let buffer = inBuffer {
                    received.append(contentsOf: UnsafeBufferPointer(start: buffer.readPointer, count: buffer.readableBytes))
                    buffer.clear()
                }
                if received.count > Self.maxResponseBytes { finish(.failed); return }
                // A response framed by content-length or chunked is done when complete; the
                // server need not close first (nor send close_notify over TLS).
                if let response = parseHTTPResponse(received, atEOF: false) { finish(.response(response)); return }
            case .wouldBlock:
                return
            case .closed:
                finish(parse())
                return
            case .failed:
                // A TLS peer that closed without close_notify after a close-delimited body.
                if tls != nil, peerClosed || tlsFailed, let response = parseHTTPResponse(received) {
                    finish(.response(response))
                } else {
                    finish(.failed)
                }
                return
            }
        }
    }

    override func writeError() { finish(.failed) }
    override func deadlineReached(now: Int64) { finish(.failed) }

    private func finish(_ outcome: SubrequestOutcome) {
        let callback = completion
        completion = nil
        closeSocket()
        callback?(outcome)
    }

    private func parse() -> SubrequestOutcome {
        guard let response = parseHTTPResponse(received) else { return .failed }
        return .response(response)
    }
}

/// Status, headers and body of a whole HTTP/1.x response read to EOF (framed by
/// content-length, chunked, or the close); nil when it is not one.
func parseHTTPResponse(_ received: [UInt8], atEOF: Bool = true) -> SubrequestResponse? {
    if received.isEmpty { return nil }
    let buffer = ByteBuffer(capacity: received.count + 1)
    received.withUnsafeBufferPointer { _ = buffer.append($0.baseAddress!, count: $0.count) }
    var parser = HeadParser(kind: .response, limits: HeadLimits(maxHeaderBytes: 65536, maxHeaders: 200))
    let table = HeaderTable(capacity: 200)
    var head = MessageHead()
    var status = parser.parse(buffer, headers: table, head: &head)
    while status == .complete && head.status < 200 {
        buffer.consume(Int(head.headEnd) - buffer.readerIndex)
        parser = HeadParser(kind: .response, limits: HeadLimits(maxHeaderBytes: 65536, maxHeaders: 200))
        status = parser.parse(buffer, headers: table, head: &head)
    }
    guard status == .complete else { return nil }
    if !atEOF && !head.isChunked && head.contentLength < 0 { return nil }
    var headers: [(name: [UInt8], value: [UInt8])] = []
    for index in 0..<table.count {
        let entry = table[index]
        let name = UnsafeBufferPointer(start: buffer.base + Int(entry.nameStart), count: Int(entry.nameLength)).map(asciiLowercase)
        let value = Array(UnsafeBufferPointer(start: buffer.base + Int(entry.valueStart), count: Int(entry.valueLength)))
        headers.append((name, value))
    }
    buffer.consume(Int(head.headEnd) - buffer.readerIndex)
    var body: [UInt8] = []
    if head.isChunked {
        var decoder = ChunkedDecoder()
        loop: while true {
            switch decoder.next(buffer) {
            case .data(let offset, let count):
                body.append(contentsOf: UnsafeBufferPointer(start: buffer.base + offset, count: count))
                decoder.consumeData(buffer, count)
            case .trailer: continue
            case .end: break loop
            case .needMore, .failed: return nil
            }
        }
    } else if head.contentLength >= 0 {
        guard Int64(buffer.readableBytes) >= head.contentLength else { return nil }
        body = Array(UnsafeBufferPointer(start: buffer.readPointer, count: Int(head.contentLength)))
    } else {
        body = Array(UnsafeBufferPointer(start: buffer.readPointer, count: buffer.readableBytes))
    }
    return SubrequestResponse(status: head.status, headers: headers, body: body)
}
