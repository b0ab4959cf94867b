import Glibc
import OutriderConfig
import OutriderCore
import OutriderFilters
import OutriderPosix
import OutriderTLS

/// Active HTTP health checks (SPEC §2 `health_check`), run by worker 0 on its own loop with
/// non-blocking connections: a `GET path` every `interval`, a failure when no 2xx arrives within
/// `timeout`. `unhealthy_threshold` failures in a row take an endpoint out of every worker's
/// snapshot; `healthy_threshold` successes bring it back. Endpoints start healthy, and the first
/// round runs at start-up.
final class HealthChecker {
    private var probes: [HealthProbe] = []

    init(worker: Worker, routing: WorkerRouting) {
        for cluster in routing.runtime.clusters {
            guard let config = cluster.healthCheck else { continue }
            for endpoint in cluster.endpoints {
                probes.append(HealthProbe(worker: worker, routing: routing, cluster: cluster, endpoint: endpoint, config: config))
            }
        }
    }

    var isEmpty: Bool { probes.isEmpty }

    func start(_ loop: EventLoop) {
        for probe in probes {
            loop.attach(probe)
            loop.setDeadline(probe, loop.now + 1)
        }
    }

    /// A reload replaced the configuration: no more rounds (a check in flight just ends).
    func stop(_ loop: EventLoop) {
        for probe in probes {
            probe.stopped = true
            loop.forget(probe)
        }
    }
}

final class HealthProbe: LoopHandler {
    unowned(unsafe) let worker: Worker
    let routing: WorkerRouting
    let cluster: ClusterRuntime
    var stopped = false
    let endpoint: EndpointRuntime
    private let interval: Int64
    private let timeout: Int64
    private let healthyThreshold: Int
    private let unhealthyThreshold: Int
    private let requestHead: [UInt8]
    private var successes = 0
    private var failures = 0
    private var inFlight = false

    init(worker: Worker, routing: WorkerRouting, cluster: ClusterRuntime, endpoint: EndpointRuntime, config: HealthCheckConfig) {
        self.worker = worker
        self.routing = routing
        self.cluster = cluster
        self.endpoint = endpoint
        interval = config.interval.nanoseconds
        timeout = config.timeout.nanoseconds
        healthyThreshold = config.healthyThreshold
        unhealthyThreshold = config.unhealthyThreshold
        requestHead = Array("GET \(config.path) HTTP/1.1\r\nhost: \(endpoint.labelString)\r\nuser-agent: outrider-health-check\r\nconnection: close\r\n\r\n".utf8)
    }

    override func deadlineReached(now: Int64) {
        guard !stopped else { return }
        worker.loop.setDeadline(self, now + interval)
        guard !inFlight else { return }
        guard let (address, _) = routing.nextAddress(endpoint) else {
            finished(healthy: false)
            return
        }
        inFlight = true
        let connection = SubrequestConnection(worker: worker)
        if let context = cluster.tlsContext {
            // A TLS cluster is checked over TLS, with the same verification as its traffic.
            do {
                connection.tls = try TLSEngine(client: context, serverName: cluster.tlsServerName ?? endpoint.host)
            } catch {
                inFlight = false
                finished(healthy: false)
                return
            }
        }
        connection.start(address: address, head: requestHead, deadline: now + timeout) { [self] outcome in
            if case .response(let response) = outcome, response.status >= 200, response.status < 300 {
                self.finished(healthy: true)
            } else {
                self.finished(healthy: false)
            }
        }
    }

    private func finished(healthy: Bool) {
        inFlight = false
        guard !stopped else { return }
        let shared = routing.runtime.shared
        let wasHealthy = shared.isHealthy(endpoint.index)
        if healthy {
            successes += 1
            failures = 0
            if !wasHealthy && successes >= healthyThreshold { flip(toHealthy: true) }
        } else {
            failures += 1
            successes = 0
            if wasHealthy && failures >= unhealthyThreshold { flip(toHealthy: false) }
        }
    }

    private func flip(toHealthy: Bool) {
        let shared = routing.runtime.shared
        shared.store(endpoint.index, .unhealthy, toHealthy ? 0 : 1)
        shared.bumpVersion(cluster: cluster.index)
        OperationalLog.warning(toHealthy ? "endpoint healthy" : "endpoint unhealthy", [
            "cluster": cluster.name.description, "endpoint": endpoint.labelString,
        ])
    }
}

/// Re-resolves endpoints given as DNS names every `dns_refresh` (A and AAAA, through
/// getaddrinfo on its own thread: a slow resolver never stalls a loop). A changed answer bumps
/// the endpoint's generation, so workers connect to the new addresses and drop pooled
/// connections to the old; a failed resolution keeps the last good answer.
final class DNSRefresher: @unchecked Sendable {
    private let runtime: ProxyRuntime
    private let stopSignal = StopSignal()
    private var thread: OSThread?

    init(runtime: ProxyRuntime) {
        self.runtime = runtime
    }

    var hasWork: Bool { runtime.endpoints.contains { $0.isDNSName } }

    func start() throws(SystemError) {
        guard hasWork else { return }
        thread = try OSThread.start(name: "outrider-dns") { [self] in run() }
    }

    func stop() { stopSignal.stop() }

    private func run() {
        var due: [Int64] = runtime.clusters.map { Sys.monotonicNanoseconds() + $0.dnsRefresh }
        while true {
            let now = Sys.monotonicNanoseconds()
            for (index, cluster) in runtime.clusters.enumerated() where due[index] <= now {
                due[index] = now + cluster.dnsRefresh
                for endpoint in cluster.endpoints where endpoint.isDNSName {
                    refresh(endpoint, cluster: cluster)
                }
            }
            let next = due.min() ?? now + 5_000_000_000
            if stopSignal.wait(until: next) { return }
        }
    }

    private func refresh(_ endpoint: EndpointRuntime, cluster: ClusterRuntime) {
        let changed: Bool
        do {
            let resolved = try SocketAddress.resolve(host: endpoint.host, port: endpoint.port)
            changed = endpoint.update(resolved: resolved, error: resolved.isEmpty ? "no addresses" : nil)
        } catch {
            if endpoint.resolutionError == nil {
                OperationalLog.warning("dns resolution failed; keeping the last answer", [
                    "endpoint": endpoint.labelString, "error": error.description,
                ])
            }
            _ = endpoint.update(resolved: nil, error: error.description)
            return
        }
        guard changed else { return }
        runtime.shared.add(endpoint.index, .addressGeneration, 1)
        runtime.shared.bumpVersion(cluster: cluster.index)
        OperationalLog.info("dns answer changed", [
            "endpoint": endpoint.labelString,
            "addresses": endpoint.currentAddresses().map(\.description).joined(separator: " "),
        ])
    }
}

/// Certificate rotation without a restart (cert-manager, Kubernetes Secret volumes): every 2 s
/// the files a listener's or cluster's TLS names are stat'ed; when one changed, a new context
/// is built from them and new handshakes use it. A file that does not load keeps the old
/// context, logged with OpenSSL's reason (and tried again after the next change).
final class CertificateWatcher: @unchecked Sendable {
    private let runtime: ProxyRuntime
    private let stopSignal = StopSignal()
    private var stamps: [String: [Int64]] = [:]

    init(runtime: ProxyRuntime) {
        self.runtime = runtime
    }

    private var listenerFiles: [(ListenerRuntime, [String])] {
        runtime.listeners.compactMap { listener in
            guard let tls = listener.config.tls else { return nil }
            var files = [tls.certificate.certificate, tls.certificate.privateKey]
            for pair in tls.sniCertificates { files += [pair.certificate, pair.privateKey] }
            if let ca = tls.clientCA { files.append(ca) }
            return (listener, files)
        }
    }

    private var clusterFiles: [(ClusterRuntime, [String])] {
        runtime.clusters.compactMap { cluster in
            guard let tls = cluster.tlsConfig else { return nil }
            var files: [String] = []
            if let ca = tls.ca { files.append(ca) }
            if let pair = tls.clientCertificate { files += [pair.certificate, pair.privateKey] }
            return files.isEmpty ? nil : (cluster, files)
        }
    }

    func start() throws(SystemError) {
        let watched = listenerFiles.flatMap(\.1) + clusterFiles.flatMap(\.1)
        guard !watched.isEmpty else { return }
        for path in watched { stamps[path] = Sys.fileStamp(path) }
        _ = try OSThread.start(name: "outrider-certs") { [self] in run() }
    }

    func stop() { stopSignal.stop() }

    private func changed(_ files: [String]) -> Bool {
        var any = false
        for path in files {
            let stamp = Sys.fileStamp(path)
            if stamp != stamps[path] {
                stamps[path] = stamp
                any = true
            }
        }
        return any
    }

    private func run() {
        while true {
            if stopSignal.wait(until: Sys.monotonicNanoseconds() + 2_000_000_000) { return }
            for (listener, files) in listenerFiles where changed(files) {
                guard let tls = listener.config.tls else { continue }
                do {
                    listener.replaceTLSContext(try ListenerRuntime.makeTLSContext(tls, protocols: listener.config.protocols))
                    OperationalLog.info("certificates reloaded", ["listener": listener.config.name])
                } catch {
                    OperationalLog.error("certificates not reloaded; keeping the previous ones",
                                         ["listener": listener.config.name, "error": error.description])
                }
            }
            for (cluster, files) in clusterFiles where changed(files) {
                guard let tls = cluster.tlsConfig else { continue }
                do {
                    cluster.replaceTLSContext(try ClusterRuntime.makeTLSContext(tls, protocol: cluster.clusterProtocol))
                    OperationalLog.info("certificates reloaded", ["cluster": cluster.configName])
                } catch {
                    OperationalLog.error("certificates not reloaded; keeping the previous ones",
                                         ["cluster": cluster.configName, "error": error.description])
                }
            }
        }
    }
}

/// How a background thread (DNS refresh, certificate watch) sleeps between rounds and learns
/// that it should end: `stop` wakes it at once.
final class StopSignal: @unchecked Sendable {
    private var stopping = false
    private var lock = pthread_mutex_t()
    private var condition = pthread_cond_t()

    init() {
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&condition, nil)
    }

    func stop() {
        pthread_mutex_lock(&lock)
        stopping = true
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&lock)
    }

    /// Sleeps until `deadline` (monotonic ns); true when asked to stop.
    func wait(until deadline: Int64) -> Bool {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        while !stopping {
            let now = Sys.monotonicNanoseconds()
            if now >= deadline { return false }
            Sys.conditionWait(&condition, &lock, nanoseconds: deadline - now)
        }
        return true
    }
}
