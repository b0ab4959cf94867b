import CAtomics
import Glibc
import OutriderCore
import OutriderHTTP2
import OutriderPosix
import OutriderTLS

/// What every thread shares, immutable once the run starts.
public final class RunPlan: @unchecked Sendable {
    public let options: BenchOptions
    public let address: SocketAddress
    let tlsContext: TLSClientContext?
    let request: [UInt8]
    let schedule: OpenLoopSchedule?
    /// When the run (and the open-loop schedule) began.
    public let startTime: Int64
    /// End of the warmup: only requests sent from here on are recorded.
    public let measureStart: Int64
    /// End of a `-d` run; Int64.max with `-n`.
    public let endTime: Int64

    init(options: BenchOptions, address: SocketAddress, tlsContext: TLSClientContext?, startTime: Int64) {
        self.options = options
        self.address = address
        self.tlsContext = tlsContext
        self.request = options.serializedRequest()
        self.schedule = options.rate.map { OpenLoopSchedule(rate: $0, connections: options.connections) }
        self.startTime = startTime
        self.measureStart = startTime + options.warmupNanos
        if let duration = options.durationNanos {
            endTime = measureStart + duration
        } else {
            endTime = Int64.max
        }
    }
}

/// Per-thread counters the main thread reads while the run goes (progress line, the early
/// exit when nothing can connect). One cache line per thread; the owner stores, main loads.
struct LiveCells {
    static let requests = 0, errors = 1, connected = 2, connectFailures = 3, finished = 4
    static let stride = 8   // 64 bytes
}

/// One thread: its event loop, its connections, its timer for open-loop sends and the end of
/// the run, and its statistics.
public final class BenchWorker: @unchecked Sendable {
    static let iovecCapacity = 64
    /// Pause before connecting again after a failed connect, so a dead target is not spun on.
    static let reconnectPauseNanos: Int64 = 10_000_000

    let plan: RunPlan
    let index: Int
    let loop: EventLoop
    public let stats = ThreadStats()
    let cells: UnsafeMutablePointer<UInt64>

    var connections: [BenchConnection] = []
    /// HTTP/1.1: the request as it goes on the wire; HTTP/2: the request body.
    let request: UnsafeMutablePointer<UInt8>
    let requestLength: Int
    let iovecs: UnsafeMutablePointer<iovec>
    let cipherScratch: ByteBuffer
    /// HTTP/1.1: where the middle of large cleartext bodies is read and dropped. HTTP/2: where
    /// frames are read (or decrypted) before the session takes them, and, over TLS, where the
    /// session's frames wait to be encrypted.
    let bodyScratch: ByteBuffer
    let frameOutScratch: ByteBuffer
    let isHead: Bool

    /// HTTP/2: the request head, built once and submitted for every request (nghttp2 copies it).
    let http2Headers: HTTP2HeaderBlock
    let http2Configuration: HTTP2Configuration

    /// Requests this thread may still send after the warmup (`-n`); Int.max without it.
    var budget: Int
    let budgetLimited: Bool
    /// Requests in flight on all of this thread's connections.
    var inFlight = 0
    public private(set) var stopping = false
    /// When this thread stopped measuring (the end of the run, the last answer of `-n`, or
    /// an interruption).
    public private(set) var stopTime: Int64 = 0
    private var connectedTotal: UInt64 = 0
    private var connectFailureTotal: UInt64 = 0
    private var errorTotal: UInt64 = 0
    /// The first reason a connect failed, for the message when nothing could connect.
    public private(set) var firstConnectFailure: String?

    private var timerHandler: TimerHandler!
    private var heap: TimerHeap
    private var inTimerCallback = false

    init(plan: RunPlan, index: Int, cells: UnsafeMutablePointer<UInt64>) throws(SystemError) {
        self.plan = plan
        self.index = index
        self.cells = cells
        loop = try EventLoop()
        let options = plan.options
        let isHTTP2 = options.protocolVersion.isHTTP2
        let wire = isHTTP2 ? options.body : plan.request
        requestLength = wire.count
        let requestBytes = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, wire.count))
        wire.withUnsafeBufferPointer { if $0.count > 0 { requestBytes.update(from: $0.baseAddress!, count: $0.count) } }
        request = requestBytes
        iovecs = .allocate(capacity: Self.iovecCapacity)
        cipherScratch = ByteBuffer(capacity: plan.tlsContext == nil ? 1 : 64 * 1024)
        if isHTTP2 {
            bodyScratch = ByteBuffer(capacity: 64 * 1024)
            frameOutScratch = ByteBuffer(capacity: plan.tlsContext == nil ? 1 : 16 * 1024)
        } else {
            bodyScratch = ByteBuffer(capacity: plan.tlsContext == nil ? 256 * 1024 : 1)
            frameOutScratch = ByteBuffer(capacity: 1)
        }
        isHead = options.isHead
        let headerBlock = HTTP2HeaderBlock(entryCapacity: isHTTP2 ? options.headers.count + 5 : 1,
                                           storageCapacity: isHTTP2 ? 256 : 16)
        if isHTTP2 {
            for field in options.http2HeaderFields() {
                let name = Array(field.name.utf8), value = Array(field.value.utf8)
                name.withUnsafeBufferPointer { name in
                    value.withUnsafeBufferPointer { value in headerBlock.append(name: name, value: value) }
                }
            }
        }
        http2Headers = headerBlock
        var configuration = HTTP2Configuration()
        // Windows as large as h2load's defaults (2^30 - 1): received DATA is consumed at once,
        // so the windows only decide how many WINDOW_UPDATEs go out.
        configuration.initialWindowSize = (1 << 30) - 1
        configuration.connectionWindowSize = (1 << 30) - 1
        // Stream objects for every stream in flight are reused: none is made per request.
        configuration.streamPoolLimit = max(configuration.streamPoolLimit, options.streams)
        http2Configuration = configuration
        let ownBudget = plan.options.requestBudget(ofThread: index)
        budget = ownBudget ?? Int.max
        budgetLimited = ownBudget != nil
        let count = plan.options.connections(ofThread: index)
        heap = TimerHeap(capacity: count + 1)
        let first = plan.options.firstConnection(ofThread: index)
        for local in 0..<count {
            if isHTTP2 {
                connections.append(HTTP2Connection(worker: self, localIndex: local, globalIndex: first + local))
            } else {
                connections.append(HTTP1Connection(worker: self, localIndex: local, globalIndex: first + local))
            }
        }
        timerHandler = try TimerHandler(worker: self)
    }

    deinit {
        request.deallocate()
        iovecs.deallocate()
    }

    /// Runs the thread's loop until the run ends; call on the thread.
    func run() {
        if loop.register(timerHandler.fd, timerHandler, events: Epoll.input | Epoll.edgeTriggered) < 0 {
            firstConnectFailure = firstConnectFailure ?? "timerfd registration failed"
            finishNow()
        } else if budgetLimited && budget == 0 {
            finishNow()
        } else {
            rearmTimer()
            for connection in connections { connection.connect() }
        }
        loop.run()
        for connection in connections { connection.closeSocket() }
        Sys.close(timerHandler.fd)
        catomic_store(cells + LiveCells.finished, 1)
    }

    /// Ends the run on this thread (the timer at the end of `-d`, the last answer of `-n`,
    /// or the main thread after SIGINT through `post`).
    public func finish() {
        guard !stopping else { return }
        finishNow()
    }

    private func finishNow() {
        stopping = true
        stopTime = min(Sys.monotonicNanoseconds(), plan.endTime)
        loop.stop()
    }

    public func post(_ work: @escaping @Sendable () -> Void) { loop.post(work) }

    // MARK: accounting

    @inline(__always)
    func takeBudget(start: Int64) -> Bool {
        if stopping { return false }
        if !budgetLimited || start < plan.measureStart { return true }
        if budget == 0 { return false }
        budget -= 1
        return true
    }

    @inline(__always)
    func responseCompleted(intended: Int64, status: Int) {
        inFlight -= 1
        let now = Sys.monotonicNanoseconds()
        if now > plan.endTime {
            // The run is over; the end-of-run timer has not been seen yet in this iteration.
            finish()
            return
        }
        if intended >= plan.measureStart {
            stats.record(latencyNanos: OpenLoopSchedule.correctedLatency(intended: intended, completion: now), status: status)
            catomic_store(cells + LiveCells.requests, stats.requests)
        }
        if budgetLimited && budget == 0 && inFlight == 0 { finish() }
    }

    /// A connection dropped its requests in flight (already counted as errors).
    func requestsAbandoned() {
        if budgetLimited && budget == 0 && inFlight == 0 { finish() }
    }

    @inline(__always)
    func countBytes(_ count: Int) {
        let now = loop.now
        if now >= plan.measureStart && now <= plan.endTime { stats.bytes &+= UInt64(count) }
    }

    func countError(_ kind: ErrorKind, _ count: Int) {
        guard count > 0, !stopping else { return }
        if plan.options.warmupNanos > 0 && Sys.monotonicNanoseconds() < plan.measureStart { return }
        stats.errors[kind.rawValue] &+= UInt64(count)
        errorTotal &+= UInt64(count)
        catomic_store(cells + LiveCells.errors, errorTotal)
    }

    func connectionSucceeded() {
        connectedTotal &+= 1
        catomic_store(cells + LiveCells.connected, connectedTotal)
    }

    func connectionFailed(_ reason: String) {
        if firstConnectFailure == nil { firstConnectFailure = reason }
        connectFailureTotal &+= 1
        catomic_store(cells + LiveCells.connectFailures, connectFailureTotal)
        countError(.connect, 1)
    }

    // MARK: the timer (open-loop sends and the end of the run)

    func schedule(_ connection: BenchConnection, at time: Int64) {
        heap.push(time, connection.localIndex)
        if !inTimerCallback && (timerHandler.armedAt == 0 || time < timerHandler.armedAt) { rearmTimer() }
    }

    fileprivate func timerFired() {
        let now = Sys.monotonicNanoseconds()
        if now >= plan.endTime {
            finish()
            return
        }
        inTimerCallback = true
        while let top = heap.top, top.time <= now {
            heap.pop()
            let connection = connections[Int(top.index)]
            if connection.scheduledAt == top.time {
                connection.scheduledAt = 0
                connection.pump()
            }
        }
        inTimerCallback = false
        rearmTimer()
    }

    private func rearmTimer() {
        var target = plan.endTime
        if let top = heap.top, top.time < target { target = top.time }
        if target == Int64.max {
            if timerHandler.armedAt != 0 { Sys.timerFDArm(timerHandler.fd, atMonotonicNanoseconds: 0) }
            timerHandler.armedAt = 0
            return
        }
        if target != timerHandler.armedAt {
            Sys.timerFDArm(timerHandler.fd, atMonotonicNanoseconds: target)
            timerHandler.armedAt = target
        }
    }
}

final class TimerHandler: LoopHandler {
    unowned(unsafe) let worker: BenchWorker
    let fd: Int32
    /// The time the timerfd is armed for; 0 = disarmed (or fired).
    var armedAt: Int64 = 0

    init(worker: BenchWorker) throws(SystemError) {
        self.worker = worker
        fd = try Sys.timerFD()
        super.init()
    }

    override func handleEvents(_ events: UInt32) {
        Sys.timerFDDrain(fd)
        armedAt = 0
        worker.timerFired()
    }
}
