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

    private let config: OutriderConfiguration
    private let runtime: ProxyRuntime
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
        case .auto: return Sys.usableCPUCount()
        case .fixed(let value): return max(1, value)
        }
    }

    /// Binds and prepares everything; nothing is served until `run`.
    public init(config: OutriderConfiguration) throws(StartError) {
        self.config = config
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
        for endpoint in runtime.endpoints where endpoint.currentAddresses().isEmpty {
            OperationalLog.warning("endpoint did not resolve", ["endpoint": endpoint.labelString, "error": endpoint.resolutionError ?? ""])
        }

        // Sockets per worker, per listener.
        var sockets = Array(repeating: [Int32](), count: workerCount)
        for listener in config.listeners {
            guard var address = SocketAddress.literal(host: listener.address.host, port: listener.address.port)
                    ?? (try? SocketAddress.resolve(host: listener.address.host, port: listener.address.port))?.first else {
                throw .bind("listener \(listener.name): cannot resolve \(listener.address)")
            }
            for worker in 0..<workerCount {
                do {
                    let fd = try Listening.open(address)
                    sockets[worker].append(fd)
                    if worker == 0, listener.address.port == 0, let bound = Sys.localAddress(fd) {
                        // The other workers join the port the kernel picked.
                        address = bound
                    }
                } catch {
                    throw .bind("listener \(listener.name): \(error.description)")
                }
            }
            boundAddresses.append(address.description)
        }

        switch config.accessLog.format {
        case .off:
            accessLogSink = nil
        case .json, .combined:
            switch config.accessLog.path {
            case .stdout: accessLogSink = AccessLogSink(fd: 1, closeOnExit: false, batches: 4 * workerCount)
            case .stderr: accessLogSink = AccessLogSink(fd: 2, closeOnExit: false, batches: 4 * workerCount)
            case .file(let path):
                do {
                    accessLogSink = AccessLogSink(fd: try Sys.openAppend(path), closeOnExit: true, batches: 4 * workerCount)
                } catch {
                    throw .system("access_log: \(error.description)")
                }
            }
        }
        pthread_mutex_init(&stopLock, nil)
        // Services filters call (external auth) are resolved once, here, not on a loop.
        var serviceAddresses: [String: SocketAddress] = [:]
        for listener in config.listeners {
            for route in listener.routes {
                for filter in route.filters {
                    guard case .auth(let auth) = filter, let external = auth.external else { continue }
                    let key = ConfigKey.address(host: external.address.host, port: external.address.port)
                    if serviceAddresses[key] != nil { continue }
                    if let address = try? SocketAddress.resolve(host: external.address.host, port: external.address.port).first {
                        serviceAddresses[key] = address
                    } else {
                        OperationalLog.warning("external auth service did not resolve", ["url": external.url])
                    }
                }
            }
        }
        metricsLayout = MetricsLayout(runtime: runtime)
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
        let metricsOfWorkers = made.map(\.metrics)
        let runtime = self.runtime
        do {
            admin = try AdminServer(address: config.admin.address, hooks: AdminServer.Hooks(
                isReady: { [unowned self] in !isDraining },
                metrics: {
                    let shared = runtime.shared
                    let now = Sys.monotonicNanoseconds()
                    return MetricsRenderer.render(metricsOfWorkers, version: OutriderVersion.current, reloadsOK: 0, reloadsError: 0,
                                                  endpointHealthy: { shared.isHealthy($0) && !shared.isEjected($0, now: now) })
                },
                config: { config.renderJSON() },
                clusters: { Self.clustersJSON(runtime, metricsOfWorkers) },
                drain: { [unowned self] in requestDrain(delay: config.drain.delay, reason: "POST /drain") }))
        } catch {
            throw .bind("admin: \(error.description)")
        }
    }

    private let metricsLayout: MetricsLayout
    private lazy var dnsRefresher = DNSRefresher(runtime: runtime)
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
                OperationalLog.warning("SIGHUP: configuration reload is not supported yet; keeping the running configuration")
            default:
                continue
            }
        }
        for thread in threads { thread.join() }
        admin?.stop()
        offLoopPool.stop()
        for fetcher in runtime.jwksFetchers { fetcher.stop() }
        dnsRefresher.stop()
        accessLogSink?.stop()
        OperationalLog.info("stopped")
        return 0
    }

    /// New connections are still accepted for `delay` (load balancers take time to notice),
    /// then every worker drains.
    private func startDrain(delay: Duration) {
        let timeout = config.drain.timeout.nanoseconds
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
