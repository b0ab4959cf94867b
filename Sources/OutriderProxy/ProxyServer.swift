import Glibc
import OutriderConfig
import OutriderCore
import OutriderPosix

/// Start-up and shutdown: binds every listener once per worker (SO_REUSEPORT), starts the
/// worker threads and the access-log thread, and turns signals into drain and exit.
public final class ProxyServer: @unchecked Sendable {
    public enum StartError: Error, CustomStringConvertible {
        case bind(String)
        case system(String)
        public var description: String {
            switch self {
            case .bind(let text), .system(let text): return text
            }
        }
    }

    /// The running configuration; replaced by a reload. Read by the admin thread under
    /// `stateLock`, written by the main thread.
    private var config: OutriderConfiguration
    private var runtime: ProxyRuntime
    private var workerMetrics: [WorkerMetrics] = []
    /// Accept sockets per worker, per listener of `config`, and the configured address of each
    /// listener (a listener whose address stays keeps its sockets across a reload).
    private var listenerSockets: [[Int32]] = []
    private var listenerKeys: [String] = []
    private var reloadsOK: UInt64 = 0
    private var reloadsError: UInt64 = 0
    private var stateLock = pthread_mutex_t()
    private let reloadConfiguration: (@Sendable () throws(ConfigErrors) -> OutriderConfiguration)?
    private var dnsRefresher: DNSRefresher
    private var certificateWatcher: CertificateWatcher
    private var serviceAddresses: [String: SocketAddress] = [:]
    private var workers: [Worker] = []
    private var threads: [OSThread] = []
    private let accessLogSink: AccessLogSink?
    /// Threads for slow filter work (bcrypt), shared by the workers.
    private let offLoopPool: OffLoopPool
    private let signalFD: Int32
    /// Bound addresses per listener (the port is known even when 0 was asked for).
    public private(set) var boundAddresses: [String] = []
    private var stoppedWorkers = 0
    private var stopLock = pthread_mutex_t()

    public static func resolveWorkerCount(_ count: WorkerCount) -> Int {
        switch count {
        case .auto:
            // OUTRIDER_CGROUP_CPU_MAX names another cpu.max (tests; unusual cgroup mounts).
            if let path = Sys.environmentValue("OUTRIDER_CGROUP_CPU_MAX"), !path.isEmpty {
                return Sys.usableCPUCount(cgroupCPUMaxPath: path)
            }
            return Sys.usableCPUCount()
        case .fixed(let value): return max(1, value)
        }
    }

    /// Binds and prepares everything; nothing is served until `run`.
    /// `reload` reads the configuration again for SIGHUP (nil: no file, nothing to reload).
    public init(config: OutriderConfiguration,
                reload: (@Sendable () throws(ConfigErrors) -> OutriderConfiguration)? = nil) throws(StartError) {
        self.config = config
        reloadConfiguration = reload
        pthread_mutex_init(&stateLock, nil)
        Sys.ignoreSIGPIPE()
        Sys.raiseFileLimit()
        do {
            signalFD = try Sys.signalFD([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        } catch {
            throw .system(error.description)
        }
        let workerCount = Self.resolveWorkerCount(config.workers)
        do {
            runtime = try ProxyRuntime(config: config, workerCount: workerCount)
        } catch {
            throw .system(error.description)
        }
        offLoopPool = OffLoopPool(threadCount: 2)
        dnsRefresher = DNSRefresher(runtime: runtime)
        certificateWatcher = CertificateWatcher(runtime: runtime)
        for endpoint in runtime.endpoints where endpoint.currentAddresses().isEmpty {
            OperationalLog.warning("endpoint did not resolve", ["endpoint": endpoint.labelString, "error": endpoint.resolutionError ?? ""])
        }

        // Sockets per worker, per listener.
        var sockets = Array(repeating: [Int32](), count: workerCount)
        for listener in config.listeners {
            let opened = try Self.bind(listener, workerCount: workerCount)
            for worker in 0..<workerCount { sockets[worker].append(opened.sockets[worker]) }
            boundAddresses.append(opened.bound)
            listenerKeys.append(listener.address.description)
        }
        listenerSockets = sockets

        switch config.accessLog.format {
        case .off:
            accessLogSink = nil
        case .json, .combined:
            switch config.accessLog.path {
            case .stdout: accessLogSink = AccessLogSink(fd: 1, closeOnExit: false, batches: 4 * workerCount)
            case .stderr: accessLogSink = AccessLogSink(fd: 2, closeOnExit: false, batches: 4 * workerCount)
            case .file(let path):
                do {
                    accessLogSink = AccessLogSink(fd: try Sys.openAppend(path), closeOnExit: true, batches: 4 * workerCount,
                                                  path: path)
                } catch {
                    throw .system("access_log: \(error.description)")
                }
            }
        }
        pthread_mutex_init(&stopLock, nil)
        serviceAddresses = Self.resolveServices(config)
        let metricsLayout = MetricsLayout(runtime: runtime)
        var made: [Worker] = []
        for index in 0..<workerCount {
            do {
                let worker = try Worker(id: index, runtime: runtime, listenerSockets: sockets[index], accessLogSink: accessLogSink,
                                        accessLogFormat: config.accessLog.format, offLoopPool: offLoopPool,
                                        serviceAddresses: serviceAddresses, metricsLayout: metricsLayout) { [weak self] _ in self?.workerStopped() }
                made.append(worker)
            } catch {
                throw .system(error.description)
            }
        }
        workers = made
        workerMetrics = made.map(\.metrics)
        for worker in made { worker.onInboundDrained = { [weak self] _ in self?.workerInboundDrained() } }
        do {
            admin = try AdminServer(address: config.admin.address, hooks: AdminServer.Hooks(
                isReady: { [unowned self] in !isDraining },
                metrics: { [unowned self] in
                    let state = currentState()
                    let shared = state.runtime.shared
                    let now = Sys.monotonicNanoseconds()
                    return MetricsRenderer.render(state.metrics, version: OutriderVersion.current,
                                                  reloadsOK: state.reloadsOK, reloadsError: state.reloadsError,
                                                  endpointHealthy: { shared.isHealthy($0) && !shared.isEjected($0, now: now) })
                },
                config: { [unowned self] in currentState().config.renderJSON() },
                clusters: { [unowned self] in
                    let state = currentState()
                    return Self.clustersJSON(state.runtime, state.metrics)
                },
                drain: { [unowned self] in requestDrain(delay: currentState().config.drain.delay, reason: "POST /drain") }))
        } catch {
            throw .bind("admin: \(error.description)")
        }
    }

    private func currentState() -> (config: OutriderConfiguration, runtime: ProxyRuntime, metrics: [WorkerMetrics],
                                    reloadsOK: UInt64, reloadsError: UInt64) {
        pthread_mutex_lock(&stateLock)
        defer { pthread_mutex_unlock(&stateLock) }
        return (config, runtime, workerMetrics, reloadsOK, reloadsError)
    }

    /// One accept socket per worker for `listener` (SO_REUSEPORT); port 0 binds the first and
    /// joins the others to the port the kernel picked.
    private static func bind(_ listener: ListenerConfig, workerCount: Int) throws(StartError) -> (sockets: [Int32], bound: String) {
        guard var address = SocketAddress.literal(host: listener.address.host, port: listener.address.port)
                ?? (try? SocketAddress.resolve(host: listener.address.host, port: listener.address.port))?.first else {
            throw .bind("listener \(listener.name): cannot resolve \(listener.address)")
        }
        var sockets: [Int32] = []
        for worker in 0..<workerCount {
            do {
                let fd = try Listening.open(address)
                sockets.append(fd)
                if worker == 0, listener.address.port == 0, let bound = Sys.localAddress(fd) { address = bound }
            } catch {
                for fd in sockets { Sys.close(fd) }
                throw .bind("listener \(listener.name): \(error.description)")
            }
        }
        return (sockets, address.description)
    }

    /// Services filters call (external auth), resolved here, never on a loop.
    private static func resolveServices(_ config: OutriderConfiguration) -> [String: SocketAddress] {
        var addresses: [String: SocketAddress] = [:]
        for listener in config.listeners {
            for route in listener.routes {
                for filter in route.filters {
                    guard case .auth(let auth) = filter, let external = auth.external else { continue }
                    let key = ConfigKey.address(host: external.address.host, port: external.address.port)
                    if addresses[key] != nil { continue }
                    if let address = try? SocketAddress.resolve(host: external.address.host, port: external.address.port).first {
                        addresses[key] = address
                    } else {
                        OperationalLog.warning("external auth service did not resolve", ["url": external.url])
                    }
                }
            }
        }
        return addresses
    }

    /// SIGHUP (SPEC §9): an invalid file keeps the running configuration (FILE:LINE:COL in the
    /// log, counted as an error); a valid one is compiled here, off the loops, and handed to
    /// every worker, which uses it for new requests at once — exchanges in flight finish on the
    /// old. Listeners whose address stays keep their sockets (nothing is refused in between);
    /// new ones are bound, removed ones stop accepting.
    private func reload() {
        guard let reloadConfiguration else {
            OperationalLog.warning("SIGHUP: running without a config file; nothing to reload")
            return
        }
        if isDraining {
            OperationalLog.warning("SIGHUP ignored: draining")
            return
        }
        var next: OutriderConfiguration
        do {
            next = try reloadConfiguration()
        } catch {
            reloadFailed(error.description)
            return
        }
        for (setting, changed) in [("workers", next.workers != config.workers), ("admin", next.admin != config.admin),
                                   ("access_log", next.accessLog != config.accessLog)] where changed {
            OperationalLog.warning("reload: '\(setting)' changes take effect on restart")
        }
        // `/config` shows what runs: these three stay as they were started.
        next.workers = config.workers
        next.admin = config.admin
        next.accessLog = config.accessLog
        let workerCount = workers.count
        let nextRuntime: ProxyRuntime
        do {
            nextRuntime = try ProxyRuntime(config: next, workerCount: workerCount)
        } catch {
            reloadFailed(error.description)
            return
        }
        var sockets = Array(repeating: [Int32](), count: workerCount)
        var keys: [String] = []
        var bound: [String] = []
        var added: [Int32] = []
        for listener in next.listeners {
            let key = listener.address.description
            if let kept = listenerKeys.firstIndex(of: key) {
                for worker in 0..<workerCount { sockets[worker].append(listenerSockets[worker][kept]) }
                bound.append(boundAddresses[kept])
            } else {
                do {
                    let opened = try Self.bind(listener, workerCount: workerCount)
                    for worker in 0..<workerCount { sockets[worker].append(opened.sockets[worker]) }
                    added.append(contentsOf: opened.sockets)
                    bound.append(opened.bound)
                } catch {
                    for fd in added { Sys.close(fd) }
                    reloadFailed(error.description)
                    return
                }
            }
            keys.append(key)
        }
        let layout = MetricsLayout(runtime: nextRuntime)
        let routings = workers.map { WorkerRouting(runtime: nextRuntime, metrics: WorkerMetrics(layout: layout), workerID: $0.id) }
        let services = Self.resolveServices(next)
        // An unchanged OIDC provider keeps serving logins across the reload with what it knew.
        for case let discovery as OIDCDiscovery in nextRuntime.jwksFetchers {
            discovery.adopt(from: runtime.jwksFetchers)
        }
        for fetcher in nextRuntime.jwksFetchers { fetcher.start() }
        let nextDNS = DNSRefresher(runtime: nextRuntime)
        do { try nextDNS.start() } catch { OperationalLog.error("dns refresher not started", ["error": error.description]) }
        let nextWatcher = CertificateWatcher(runtime: nextRuntime)
        do { try nextWatcher.start() } catch { OperationalLog.error("certificate watcher not started", ["error": error.description]) }
        let previousWatcher = certificateWatcher

        let previousRuntime = runtime
        let previousDNS = dnsRefresher
        pthread_mutex_lock(&stateLock)
        config = next
        runtime = nextRuntime
        workerMetrics = routings.map(\.metrics)
        listenerSockets = sockets
        listenerKeys = keys
        boundAddresses = bound
        reloadsOK += 1
        pthread_mutex_unlock(&stateLock)
        dnsRefresher = nextDNS
        certificateWatcher = nextWatcher
        serviceAddresses = services
        for (worker, routing) in zip(workers, routings) {
            let workerSockets = sockets[worker.id]
            nonisolated(unsafe) let handOver = routing
            worker.loop.post {
                worker.filterState.subrequests = SubrequestClient(worker: worker, addresses: services)
                worker.apply(handOver, sockets: workerSockets)
            }
        }
        for fetcher in previousRuntime.jwksFetchers { fetcher.stop() }
        previousDNS.stop()
        previousWatcher.stop()
        OperationalLog.info("configuration reloaded", ["listeners": "\(next.listeners.count)", "clusters": "\(next.clusters.count)"])
    }

    private func reloadFailed(_ reason: String) {
        pthread_mutex_lock(&stateLock)
        reloadsError += 1
        pthread_mutex_unlock(&stateLock)
        OperationalLog.error("configuration reload failed; keeping the running configuration", ["error": reason])
    }
    private var admin: AdminServer?
    private var drainRequested = false

    /// True once a drain started: /ready answers 503 from that moment.
    var isDraining: Bool {
        pthread_mutex_lock(&stopLock)
        defer { pthread_mutex_unlock(&stopLock) }
        return drainRequested
    }

    /// Starts draining once, whoever asks first (a signal or POST /drain).
    private func requestDrain(delay: Duration, reason: String) {
        pthread_mutex_lock(&stopLock)
        let first = !drainRequested
        drainRequested = true
        pthread_mutex_unlock(&stopLock)
        guard first else { return }
        OperationalLog.info("draining", ["reason": reason, "delay": "\(delay)", "timeout": "\(config.drain.timeout)"])
        startDrain(delay: delay)
    }

    /// SPEC §8 `/clusters`.
    static func clustersJSON(_ runtime: ProxyRuntime, _ metrics: [WorkerMetrics]) -> String {
        guard let layout = metrics.first?.layout else { return "{\"clusters\":[]}" }
        func sum(_ index: Int) -> UInt64 { metrics.reduce(0) { $0 &+ $1.load(index) } }
        let now = Sys.monotonicNanoseconds()
        var clusters: [String] = []
        for cluster in runtime.clusters {
            var endpoints: [String] = []
            for endpoint in cluster.endpoints {
                let open = sum(layout.upstreamActive + endpoint.index)
                let idle = sum(layout.upstreamIdle + endpoint.index)
                let healthy = runtime.shared.isHealthy(endpoint.index)
                let ejected = runtime.shared.isEjected(endpoint.index, now: now)
                endpoints.append("{\"address\":\(jsonQuoted(endpoint.labelString)),\"healthy\":\(healthy),\"ejected\":\(ejected),"
                                 + "\"active_connections\":\(open &- min(open, idle)),\"idle_connections\":\(idle),"
                                 + "\"requests\":\(sum(layout.endpointRequests + endpoint.index))}")
            }
            clusters.append("{\"name\":\(jsonQuoted(cluster.name.description)),\"endpoints\":[\(endpoints.joined(separator: ","))]}")
        }
        return "{\"clusters\":[\(clusters.joined(separator: ","))]}"
    }

    /// Every worker reported its inbound side drained: outbound listeners drain now.
    private func workerInboundDrained() {
        pthread_mutex_lock(&stopLock)
        inboundDrainedWorkers += 1
        let all = inboundDrainedWorkers == workers.count
        pthread_mutex_unlock(&stopLock)
        guard all else { return }
        for worker in workers { worker.loop.post { worker.drainOutbound() } }
    }

    private var inboundDrainedWorkers = 0

    private func workerStopped() {
        pthread_mutex_lock(&stopLock)
        stoppedWorkers += 1
        let all = stoppedWorkers == workers.count
        pthread_mutex_unlock(&stopLock)
        // Wake the signal wait so `run` can return.
        if all { kill(getpid(), SIGUSR1) }
    }

    /// Serves until a signal ends it; returns the process exit code.
    public func run() -> Int32 {
        for fetcher in runtime.jwksFetchers { fetcher.start() }
        do {
            try dnsRefresher.start()
            try certificateWatcher.start()
            try accessLogSink?.start()
            for worker in workers {
                threads.append(try OSThread.start(name: "outrider-w\(worker.id)") { worker.run() })
            }
        } catch {
            OperationalLog.error("start failed", ["error": error.description])
            return 1
        }
        for (listener, address) in zip(config.listeners, boundAddresses) {
            OperationalLog.info("listening", ["listener": listener.name, "address": address])
        }
        if let admin {
            do { try admin.start() } catch { OperationalLog.error("admin server failed", ["error": error.description]) }
            OperationalLog.info("admin listening", ["address": admin.address])
        }
        OperationalLog.info("started", ["workers": String(workers.count), "version": OutriderVersion.current])

        while true {
            let signal = Sys.readSignal(signalFD)
            pthread_mutex_lock(&stopLock)
            let allStopped = stoppedWorkers == workers.count
            pthread_mutex_unlock(&stopLock)
            if allStopped { break }
            switch signal {
            case SIGTERM:
                requestDrain(delay: config.drain.delay, reason: "SIGTERM")
            case SIGINT:
                requestDrain(delay: .zero, reason: "SIGINT")
            case SIGHUP:
                reload()
            case SIGUSR1:
                // Log rotation (the wake-up after the last worker stopped was handled above).
                accessLogSink?.reopen()
            default:
                continue
            }
        }
        for thread in threads { thread.join() }
        admin?.stop()
        offLoopPool.stop()
        for fetcher in runtime.jwksFetchers { fetcher.stop() }
        dnsRefresher.stop()
        certificateWatcher.stop()
        accessLogSink?.stop()
        OperationalLog.info("stopped")
        return 0
    }

    /// New connections are still accepted for `delay` (load balancers take time to notice),
    /// then every worker drains.
    private func startDrain(delay: Duration) {
        let timeout = currentState().config.drain.timeout.nanoseconds
        let delayNanos = delay.nanoseconds
        let workers = self.workers
        if delayNanos <= 0 {
            for worker in workers { worker.loop.post { worker.beginDrain(timeout: timeout) } }
            return
        }
        do {
            _ = try OSThread.start(name: "outrider-drain") {
                var request = timespec(tv_sec: Int(delayNanos / 1_000_000_000), tv_nsec: Int(delayNanos % 1_000_000_000))
                var remaining = timespec()
                while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
                for worker in workers { worker.loop.post { worker.beginDrain(timeout: timeout) } }
            }
        } catch {
            for worker in workers { worker.loop.post { worker.beginDrain(timeout: timeout) } }
        }
    }
}

public enum OutriderVersion {
    public static let current = "0.1.0"
}
