import CLinux
import Glibc
import OutriderBalancing
import OutriderConfig
import OutriderCore
import OutriderFilters
import OutriderHTTP
import OutriderHTTP1
import OutriderHTTP2
import OutriderPosix

/// A handler that may stop short and ask `Worker.resumeLater` to be called again.
protocol ResumableWork: AnyObject {
    func resumeWork()
}

/// One event-loop thread and everything it owns: its accept sockets, connections, buffer pools,
/// upstream connection pools and access-log batch. Nothing here is touched by another thread
/// except through `loop.post`.
final class Worker: @unchecked Sendable {
    let id: Int
    let loop: EventLoop
    /// What this worker serves new requests with; replaced whole on a reload (SIGHUP). An
    /// exchange keeps the routing it began with until it ends.
    private(set) var routing: WorkerRouting
    var runtime: ProxyRuntime { routing.runtime }
    var metrics: WorkerMetrics { routing.metrics }
    let buffers: BufferPool
    let metaBuffers: BufferPool
    /// nghttp2's per-stream allocations for this worker's HTTP/2 sessions, both directions.
    let http2Allocator = HTTP2Allocator()
    private var headerTables = HeaderTablePool(tableCapacity: 1, maxRetained: 0)
    /// Scratch for the normalized path while a request head is handled (never held across
    /// events).
    let pathScratch = ByteBuffer(capacity: HeadLimits.maxTargetBytes + 64)
    var random: FastRandom
    let accessLog: AccessLogBatch?
    let accessLogFormat: AccessLogFormat

    private(set) var listeners: [ListenerHandler] = []
    private var freeDownstreams: [DownstreamConnection] = []
    private var freeUpstreams: [UpstreamConnection] = []
    /// Connections with output to write at the end of this loop iteration.
    private var flushQueue: [SocketConnection] = []
    /// The same for connections that flush last (`SocketConnection.flushesLast`).
    private var lastFlushQueue: [SocketConnection] = []
    /// Connections closed while still in `flushQueue`: they go back to the free lists only
    /// after the queue has run. Handed out again at once, the queued flush would reach their
    /// next life — e.g. a send on an upstream socket whose connect is still in progress, a
    /// refused connect then taken for a reset of an established connection (not retried).
    private var closedWhileQueued: [SocketConnection] = []
    /// Handlers that stopped short to let others have their turn (an HTTP/2 connection's read
    /// budget, a listener's accept batch): resumed in the next loop iteration, among its events.
    private var resumeQueue: [(handler: LoopHandler, generation: UInt32)] = []
    private var resuming: [(handler: LoopHandler, generation: UInt32)] = []
    private var resumeWakePosted = false
    /// Requests to try again at the end of this iteration (a retry without backoff).
    private var retryQueue: [(connection: DownstreamConnection, serial: UInt64)] = []
    /// Ciphertext read from a TLS socket on its way into the engine (never held across events).
    let tlsScratch = ByteBuffer(capacity: 64 * 1024)
    /// Scratch for hashing a client address (ring_hash / maglev by client_ip).
    let hashScratch = ByteBuffer(capacity: 64)
    /// Open client connections (swap-remove by each connection's `liveIndex`).
    private(set) var liveDownstreams: [DownstreamConnection] = []
    /// Open HTTP/2 client connections (their streams' exchanges are in `liveDownstreams`).
    private(set) var liveHTTP2: [HTTP2DownstreamConnection] = []
    private(set) var draining = false
    private var inboundDrained = false
    private var drainDeadline: Int64 = 0
    private let ticker = WorkerTicker()
    private var healthChecker: HealthChecker?
    private let onStopped: @Sendable (Int) -> Void
    private var stopped = false
    /// Told once this worker has no inbound connection left during a drain.
    var onInboundDrained: @Sendable (Int) -> Void = { _ in }
    private var reportedInboundDrained = false

    /// Per-worker caches and the off-loop runner of the filters.
    let filterState: FilterWorkerState

    init(id: Int, runtime: ProxyRuntime, listenerSockets: [Int32], accessLogSink: AccessLogSink?,
         accessLogFormat: AccessLogFormat, offLoopPool: OffLoopPool, serviceAddresses: [String: SocketAddress],
         metricsLayout: MetricsLayout,
         onStopped: @escaping @Sendable (Int) -> Void) throws(SystemError) {
        self.id = id
        routing = WorkerRouting(runtime: runtime, metrics: WorkerMetrics(layout: metricsLayout), workerID: id)
        self.onStopped = onStopped
        loop = try EventLoop()
        filterState = FilterWorkerState(workerIndex: id, offLoop: WorkerOffLoopRunner(pool: offLoopPool, loop: loop))
        let bufferCapacity = max(64 * 1024, runtime.maxHeaderBytes) + 16 * 1024
        buffers = BufferPool(bufferCapacity: bufferCapacity, maxRetained: 256)
        metaBuffers = BufferPool(bufferCapacity: 4096, maxRetained: 256)
        random = FastRandom(seed: Sys.randomSeed())
        accessLog = accessLogSink.map { AccessLogBatch(sink: $0) }
        self.accessLogFormat = accessLogFormat
        flushQueue.reserveCapacity(1024)
        lastFlushQueue.reserveCapacity(64)
        retryQueue.reserveCapacity(64)
        liveDownstreams.reserveCapacity(1024)
        freeDownstreams.reserveCapacity(1024)
        ticker.worker = self
        loop.attach(ticker)
        for (index, fd) in listenerSockets.enumerated() {
            let handler = ListenerHandler(fd: fd, listener: runtime.listeners[index], routing: routing, worker: self)
            listeners.append(handler)
            let result = loop.register(fd, handler, events: Epoll.input | Epoll.edgeTriggered)
            if result < 0 { throw SystemError("epoll_ctl listener", code: Int32(-result)) }
        }
        loop.endOfIterationHook = { [unowned self] in self.endOfIteration() }
        filterState.subrequests = SubrequestClient(worker: self, addresses: serviceAddresses)
    }

    func run() {
        // Worker 0 runs the health checks: non-blocking, next to its own traffic.
        if id == 0 { startHealthChecks() }
        nextPoolTrim = loop.now + Self.poolTrimInterval
        ticker.want(nextPoolTrim, loop)
        for listener in listeners { listener.acceptConnections() }
        loop.run()
        accessLog?.handOver()
        onStopped(id)
    }

    // MARK: pools

    @inline(__always)
    func acquireHeaderTable() -> HeaderTable {
        // A reload may change max_headers: new tables are made to the current limit.
        if headerTables.tableCapacity != runtime.maxHeaders {
            headerTables = HeaderTablePool(tableCapacity: runtime.maxHeaders, maxRetained: 256)
        }
        return headerTables.acquire()
    }

    @inline(__always)
    func releaseHeaderTable(_ table: consuming HeaderTable) {
        headerTables.release(table)
    }

    func makeDownstream(fd: Int32, peer: PeerAddress, listener: ListenerHandler) -> DownstreamConnection {
        let connection = freeDownstreams.popLast() ?? DownstreamConnection(worker: self)
        connection.liveIndex = liveDownstreams.count
        liveDownstreams.append(connection)
        connection.open(fd: fd, peer: peer, listener: listener)
        return connection
    }

    var downstreamCount: Int { liveDownstreams.count + liveHTTP2.count }

    /// An exchange of an HTTP/2 stream (see `DownstreamConnection.openVirtual`).
    func makeVirtualDownstream() -> DownstreamConnection {
        let connection = freeDownstreams.popLast() ?? DownstreamConnection(worker: self)
        connection.liveIndex = liveDownstreams.count
        liveDownstreams.append(connection)
        return connection
    }

    func makeHTTP2Downstream() -> HTTP2DownstreamConnection {
        let connection = HTTP2DownstreamConnection(worker: self)
        connection.liveIndex = liveHTTP2.count
        liveHTTP2.append(connection)
        return connection
    }

    func retire(_ connection: HTTP2DownstreamConnection) {
        let index = connection.liveIndex
        guard index >= 0 else { return }
        let last = liveHTTP2.removeLast()
        if last !== connection {
            liveHTTP2[index] = last
            last.liveIndex = index
        }
        connection.liveIndex = -1
        connection.listener?.connectionClosed()
        connection.listener = nil
        connectionGone()
    }

    private func connectionGone() {
        if draining {
            if inboundDrained {
                if downstreamCount == 0 { finishDrain() }
            } else {
                reportInboundDrainedIfDone()
            }
        }
    }

    func recycle(_ connection: DownstreamConnection) {
        let index = connection.liveIndex
        let last = liveDownstreams.removeLast()
        if last !== connection {
            liveDownstreams[index] = last
            last.liveIndex = index
        }
        connection.liveIndex = -1
        if !connection.isVirtual { connection.listener?.connectionClosed() }
        connection.listener = nil
        if connection.flushQueued {
            closedWhileQueued.append(connection)
        } else if freeDownstreams.count < 1024 {
            freeDownstreams.append(connection)
        }
        connectionGone()
    }

    func makeUpstream() -> UpstreamConnection {
        freeUpstreams.popLast() ?? UpstreamConnection(worker: self)
    }

    func recycle(_ connection: UpstreamConnection) {
        if connection.flushQueued {
            closedWhileQueued.append(connection)
        } else if freeUpstreams.count < 1024 {
            freeUpstreams.append(connection)
        }
    }

    // MARK: output batching

    @inline(__always)
    func queueFlush(_ connection: SocketConnection) {
        guard !connection.flushQueued else { return }
        connection.flushQueued = true
        if connection.flushesLast {
            lastFlushQueue.append(connection)
        } else {
            flushQueue.append(connection)
        }
    }

    /// `handler.resumeWork()` runs in the next loop iteration, with that iteration's events
    /// (the loop's wake-up descriptor brings it back at once): with edge-triggered epoll no
    /// new event would come for bytes or connections already waiting.
    func resumeLater(_ handler: LoopHandler & ResumableWork) {
        guard handler.slot >= 0 else { return }
        resumeQueue.append((handler, handler.generation))
        guard !resumeWakePosted else { return }
        resumeWakePosted = true
        loop.post { [unowned self] in self.runResumed() }
    }

    private func runResumed() {
        resumeWakePosted = false
        swap(&resuming, &resumeQueue)
        for entry in resuming where entry.handler.slot >= 0 && entry.handler.generation == entry.generation {
            (entry.handler as? ResumableWork)?.resumeWork()
        }
        resuming.removeAll(keepingCapacity: true)
    }

    func queueRetry(_ connection: DownstreamConnection) {
        retryQueue.append((connection, connection.exchangeSerial))
    }

    private func endOfIteration() {
        if !retryQueue.isEmpty {
            var next = 0
            while next < retryQueue.count {
                let entry = retryQueue[next]
                entry.connection.runQueuedRetry(serial: entry.serial)
                next += 1
            }
            retryQueue.removeAll(keepingCapacity: true)
        }
        // The streams' exchanges first, then their HTTP/2 connections: flushed first, an
        // HTTP/2 connection wrote the response heads submitted during the iteration, and again
        // the bodies its exchanges delivered here (twice the writes to each client).
        repeat {
            var index = 0
            while index < flushQueue.count {
                let connection = flushQueue[index]
                connection.flushQueued = false
                connection.flush()
                index += 1
            }
            flushQueue.removeAll(keepingCapacity: true)
            index = 0
            while index < lastFlushQueue.count {
                let connection = lastFlushQueue[index]
                connection.flushQueued = false
                connection.flush()
                index += 1
            }
            lastFlushQueue.removeAll(keepingCapacity: true)
        } while !flushQueue.isEmpty
        if !closedWhileQueued.isEmpty {
            for connection in closedWhileQueued {
                if let upstream = connection as? UpstreamConnection {
                    if freeUpstreams.count < 1024 { freeUpstreams.append(upstream) }
                } else if let downstream = connection as? DownstreamConnection {
                    if freeDownstreams.count < 1024 { freeDownstreams.append(downstream) }
                }
            }
            closedWhileQueued.removeAll(keepingCapacity: true)
        }
        if let accessLog, accessLog.hasPendingLines {
            let due = accessLog.dueAt
            if due <= loop.now { accessLog.handOver() } else { ticker.want(due, loop) }
        }
    }

    // MARK: upstream pool

    /// Keeps `connection` for reuse when it belongs to the current routing (a connection made
    /// under a configuration since replaced is closed instead).
    func returnToPool(_ connection: UpstreamConnection, cluster: ClusterRuntime) -> Bool {
        guard !draining, connection.routing === routing, connection.endpointIndex >= 0 else { return false }
        return routing.pool(connection, cluster: cluster)
    }

    // MARK: reload

    /// Worker 0 runs the health checks of the current configuration: non-blocking, next to its
    /// own traffic.
    private func startHealthChecks() {
        healthChecker?.stop(loop)
        healthChecker = nil
        let checker = HealthChecker(worker: self, routing: routing)
        if !checker.isEmpty {
            healthChecker = checker
            checker.start(loop)
        }
    }

    /// Switches to a reloaded configuration (on this worker's thread). New requests — on new
    /// and existing connections — use it at once; exchanges in flight finish on the old one.
    /// `sockets` has one accept socket per listener of the new configuration: the same
    /// descriptor for a listener kept, a new one for a listener added; listeners removed stop
    /// accepting here (their connections finish).
    func apply(_ next: WorkerRouting, sockets: [Int32]) {
        let previous = routing
        routing = next
        previous.closeIdleConnections()
        var handlers: [ListenerHandler] = []
        for (index, fd) in sockets.enumerated() {
            let listenerRuntime = next.runtime.listeners[index]
            if let existing = listeners.first(where: { $0.fd == fd }) {
                existing.listener = listenerRuntime
                existing.routing = next
                handlers.append(existing)
            } else {
                let handler = ListenerHandler(fd: fd, listener: listenerRuntime, routing: next, worker: self)
                if loop.register(fd, handler, events: Epoll.input | Epoll.edgeTriggered) < 0 {
                    OperationalLog.error("listener not registered after reload", ["listener": listenerRuntime.config.name])
                    continue
                }
                handlers.append(handler)
                if !draining { handler.acceptConnections() }
            }
        }
        for handler in listeners where !handlers.contains(where: { $0 === handler }) { handler.close() }
        listeners = handlers
        if draining { for handler in listeners { handler.close() } }
        // Open connections move to the new counters under their listener's new index.
        for connection in liveDownstreams { connection.adoptRouting(next) }
        for connection in liveHTTP2 { connection.adoptRouting(next) }
        if id == 0 { startHealthChecks() }
    }

    // MARK: lifecycle

    /// Stops accepting; in-flight requests finish, keep-alive connections close after their
    /// current response; exits the loop when no connection is left or at `deadline`.
    func beginDrain(timeout: Int64) {
        guard !draining else { return }
        draining = true
        drainDeadline = loop.now + timeout
        // Outbound listeners (the app's own calls) keep serving until the inbound side has
        // drained in every worker, so the app can finish the requests it is answering (SPEC §9).
        // Each worker owns an accept socket of every listener: one that stopped early would
        // leave the kernel queueing connections nobody accepts.
        if !listeners.contains(where: { $0.listener.config.direction == .outbound }) { inboundDrained = true }
        for listener in listeners where inboundDrained || listener.listener.config.direction == .inbound { listener.close() }
        for connection in liveDownstreams where connection.isIdleBetweenRequests && (inboundDrained || !connection.isOutbound) {
            connection.close()
        }
        for connection in liveHTTP2.reversed() where inboundDrained || !connection.isOutbound { connection.beginDrain() }
        ticker.want(drainDeadline, loop)
        if inboundDrained {
            if downstreamCount == 0 { finishDrain() }
        } else {
            reportInboundDrainedIfDone()
        }
    }

    /// The whole process's inbound side has drained (every worker reported): outbound
    /// connections drain now.
    func drainOutbound() {
        guard draining, !inboundDrained else { return }
        inboundDrained = true
        for listener in listeners { listener.close() }
        routing.closeIdleConnections()
        for connection in liveDownstreams where connection.isIdleBetweenRequests { connection.close() }
        for connection in liveHTTP2.reversed() { connection.beginDrain() }
        if downstreamCount == 0 { finishDrain() }
    }

    /// True while `listener`'s connections are being drained: inbound ones from the start of
    /// the drain, outbound ones once no inbound connection is left.
    func isDraining(_ listener: ListenerRuntime?) -> Bool {
        draining && (inboundDrained || listener?.config.direction != .outbound)
    }

    private func reportInboundDrainedIfDone() {
        guard !inboundDrained, !reportedInboundDrained, !liveDownstreams.contains(where: { !$0.isOutbound }),
              !liveHTTP2.contains(where: { !$0.isOutbound }) else { return }
        reportedInboundDrained = true
        onInboundDrained(id)
    }

    /// Lines about connections closed for abuse, at most one a second.
    var connectionCloseLog = LogRateLimiter(interval: 1_000_000_000)

    /// How often the pools give back what sat unused (buffers kept for a past burst).
    static let poolTrimInterval: Int64 = 5_000_000_000
    /// Pools keep this many spare objects each however idle the worker is.
    static let poolFloor = 8
    static let heapReturnThreshold = 1 << 20
    private var nextPoolTrim: Int64 = 0

    func tick(now: Int64) {
        if now >= nextPoolTrim {
            let droppedBytes = buffers.trimUnused(keeping: Self.poolFloor) * buffers.bufferCapacity
                + metaBuffers.trimUnused(keeping: Self.poolFloor) * metaBuffers.bufferCapacity
                + http2Allocator.trim(keeping: Self.poolFloor)
            headerTables.trimUnused(keeping: Self.poolFloor)
            // The heap walk stalls the loop for a few milliseconds: only after a real burst
            // (connections that went also freed their objects, which it returns too).
            if droppedBytes >= Self.heapReturnThreshold { Sys.returnFreeHeapPages() }
            nextPoolTrim = now + Self.poolTrimInterval
        }
        ticker.want(nextPoolTrim, loop)
        if let accessLog, accessLog.hasPendingLines {
            if accessLog.dueAt <= now { accessLog.handOver() } else { ticker.want(accessLog.dueAt, loop) }
        }
        if draining {
            if now >= drainDeadline {
                for connection in liveHTTP2.reversed() { connection.close() }
                for connection in liveDownstreams.reversed() { connection.close() }
                finishDrain()
            } else {
                ticker.want(drainDeadline, loop)
            }
        }
    }

    private func finishDrain() {
        guard !stopped else { return }
        stopped = true
        for listener in listeners { listener.close() }
        loop.stop()
    }
}

/// The worker's own deadline: access-log hand-over and the drain limit.
final class WorkerTicker: LoopHandler {
    // Not `weak`: a weak reference gives the Worker a side table, and every retain/release of
    // it then takes the runtime's slow path. The worker owns the ticker and outlives it.
    unowned(unsafe) var worker: Worker?
    func want(_ at: Int64, _ loop: EventLoop) {
        if deadline == 0 || at < deadline { loop.setDeadline(self, at) }
    }
    override func deadlineReached(now: Int64) { worker?.tick(now: now) }
}

/// One worker's state for one configuration: the compiled runtime, counters, cluster
/// snapshots, in-flight counts, retry budgets, DNS address cache and idle upstream pools. A
/// reload gives the worker a new one; exchanges that began on the old keep it until they end.
final class WorkerRouting {
    let runtime: ProxyRuntime
    /// This worker's counters for this configuration (summed by the admin server on a scrape).
    let metrics: WorkerMetrics
    /// This worker's view of each cluster (by cluster index): who takes traffic, the balancer.
    let snapshots: [ClusterSnapshot]
    /// Requests in flight per endpoint index (least_request).
    let activeRequests: UnsafeMutablePointer<Int>
    /// Retry budgets per route (by the route's metrics index); each worker has its share.
    var retryBudgets: [RetryBudgetWindow] = []
    /// Idle keep-alive upstream connections per endpoint index, most recent last.
    private var idleUpstreams: [[UpstreamConnection]]
    /// HTTP/2 connections per endpoint index (clusters with `protocol: h2c | h2`).
    private var http2Upstreams: [[HTTP2UpstreamConnection]]
    /// Each endpoint's addresses as last read, and where the rotation is.
    private var addressCache: [(generation: UInt64, addresses: [SocketAddress], next: Int)]

    init(runtime: ProxyRuntime, metrics: WorkerMetrics, workerID: Int) {
        self.runtime = runtime
        self.metrics = metrics
        snapshots = runtime.clusters.map { ClusterSnapshot(cluster: $0, workerID: workerID) }
        activeRequests = .allocate(capacity: max(1, runtime.endpoints.count))
        activeRequests.initialize(repeating: 0, count: max(1, runtime.endpoints.count))
        idleUpstreams = Array(repeating: [], count: runtime.endpoints.count)
        http2Upstreams = Array(repeating: [], count: runtime.endpoints.count)
        addressCache = Array(repeating: (UInt64.max, [], workerID), count: runtime.endpoints.count)
        let workerCount = max(1, runtime.workerCount)
        for listener in runtime.listeners {
            for route in listener.routes {
                retryBudgets.append(RetryBudgetWindow(ratio: route.retry.budgetRatio,
                                                      minPerSecond: route.retry.budgetMinPerSecond / Double(workerCount)))
            }
        }
    }

    deinit { activeRequests.deallocate() }

    func takeIdleUpstream(_ endpoint: EndpointRuntime) -> UpstreamConnection? {
        while let connection = idleUpstreams[endpoint.index].popLast() {
            metrics.subtract(metrics.layout.upstreamIdle + endpoint.index)
            if connection.isReusable && (!endpoint.isDNSName
                || connection.addressGeneration == runtime.shared.load(endpoint.index, .addressGeneration)) {
                return connection
            }
            connection.close()
        }
        return nil
    }

    fileprivate func pool(_ connection: UpstreamConnection, cluster: ClusterRuntime) -> Bool {
        guard idleUpstreams[connection.endpointIndex].count < cluster.maxIdlePerEndpoint else { return false }
        idleUpstreams[connection.endpointIndex].append(connection)
        metrics.add(metrics.layout.upstreamIdle + connection.endpointIndex)
        return true
    }

    func removeFromPool(_ connection: UpstreamConnection) {
        let index = connection.endpointIndex
        guard index >= 0, index < idleUpstreams.count else { return }
        if let position = idleUpstreams[index].lastIndex(where: { $0 === connection }) {
            idleUpstreams[index].remove(at: position)
            metrics.subtract(metrics.layout.upstreamIdle + index)
        }
    }

    func closeIdleConnections() {
        for pool in idleUpstreams { for connection in pool { connection.close() } }
        // HTTP/2 connections of a replaced configuration: no new streams; each closes when
        // its last stream ends.
        for list in http2Upstreams { for connection in list { connection.retire() } }
    }

    /// A connection to `endpoint` that takes one more stream, opened when none does; nil when
    /// it could not be opened (no address, socket failure) or the circuit breaker's
    /// `max_connections` is reached.
    func http2Connection(to endpoint: EndpointRuntime, cluster: ClusterRuntime, worker: Worker) -> HTTP2UpstreamConnection? {
        for connection in http2Upstreams[endpoint.index] where connection.acceptsStream { return connection }
        guard cluster.shared.load(cluster: cluster.index, .connections) < cluster.policy.maxConnections,
              let (address, _) = nextAddress(endpoint) else { return nil }
        let connection = HTTP2UpstreamConnection(worker: worker, routing: self, cluster: cluster, endpoint: endpoint)
        guard connection.open(address, serverName: cluster.tlsServerName ?? endpoint.host) else { return nil }
        http2Upstreams[endpoint.index].append(connection)
        return connection
    }

    func forget(_ connection: HTTP2UpstreamConnection) {
        let index = connection.endpointIndex
        if let position = http2Upstreams[index].firstIndex(where: { $0 === connection }) {
            http2Upstreams[index].remove(at: position)
        }
    }

    /// The next address of `endpoint` to connect to (rotating over a DNS name's answers), with
    /// the DNS generation it belongs to; nil when the name never resolved.
    func nextAddress(_ endpoint: EndpointRuntime) -> (SocketAddress, UInt64)? {
        let generation = runtime.shared.load(endpoint.index, .addressGeneration)
        if addressCache[endpoint.index].generation != generation {
            addressCache[endpoint.index].addresses = endpoint.currentAddresses()
            addressCache[endpoint.index].generation = generation
        }
        let addresses = addressCache[endpoint.index].addresses
        guard !addresses.isEmpty else { return nil }
        let next = addressCache[endpoint.index].next
        addressCache[endpoint.index].next = next &+ 1
        return (addresses[next % addresses.count], generation)
    }
}

/// Admits one log line per interval and counts the ones it turned away, so that an attack
/// cannot turn into a flood of log lines (or of the worker's time spent writing them).
struct LogRateLimiter {
    let interval: Int64
    private var nextAdmitted: Int64 = 0
    private var leftOut = 0

    init(interval: Int64) { self.interval = interval }

    /// nil: leave this line out. Otherwise write it, saying how many were left out before it.
    mutating func admit(now: Int64) -> Int? {
        guard now >= nextAdmitted else {
            leftOut += 1
            return nil
        }
        nextAdmitted = now + interval
        defer { leftOut = 0 }
        return leftOut
    }
}
