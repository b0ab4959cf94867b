import Glibc
import OutriderConfig
import OutriderProxy

/// A whole proxy in this process: the loopback upstream, `ProxyServer` with one worker on its
/// own thread, and one persistent keep-alive client, warmed up so that pools, the timer wheel
/// and the upstream connection pool have reached steady state before anything is measured.
///
/// Each benchmark runs in its own process (package-benchmark spawns one per benchmark), so
/// the fixture is built in the benchmark's `setup` and simply dies with the process: no
/// SIGTERM is sent (it would hit the benchmark's own threads, which do not block it).
final class ProxyFixture: @unchecked Sendable {
    enum AccessLog { case off, jsonToDevNull }

    /// Warm-up, before the benchmark's own warm-up iterations, in two phases:
    /// 1. `churnSeconds` of keep-alive requests plus a fresh connection (one request, then
    ///    reset) every 0.5 ms;
    /// 2. `settleSeconds` of keep-alive requests only.
    ///
    /// Why: the event loop's timer wheel (512 buckets of 8.4 ms, a 4.3 s turn; EventLoop.swift)
    /// keeps one Swift array per bucket. A bucket's storage is allocated the first time a
    /// deadline lands in it, and grows (1, 3, 6, 12 ... entries) when a bucket gets more
    /// entries than the array it holds (arrays rotate between buckets through the spare).
    /// A long deadline (idle, pool idle, header read) is parked in the wheel's last bucket and
    /// re-parked one bucket earlier each turn, so a few long-lived connections alone take ~512
    /// turns (~37 min) to reach every bucket, allocating 40 B every second or so meanwhile;
    /// the access log's 100 ms flush deadline reaches new buckets faster (~25 allocations/s at
    /// first). New connections park a deadline in whichever bucket is last at that moment:
    /// ~16 of them per tick for two turns give every bucket's array room for far more entries
    /// than a bucket holds in the measurement — what a proxy that has served for a while has
    /// reached. Phase 2 lets the churn's stale entries (closed connections) drain out of the
    /// wheel, one full turn, before anything is measured.
    ///
    /// OUTRIDER_BENCH_WARMUP_SECONDS sets `churnSeconds` (default 9, two turns); 0 skips both
    /// phases and shows the cold wheel's allocations.
    static let churnSeconds: Double = {
        if let text = getenv("OUTRIDER_BENCH_WARMUP_SECONDS"), let value = Double(String(cString: text)) { return value }
        return 9
    }()
    static let settleSeconds: Double = churnSeconds > 0 ? 5 : 0

    static func warmUp(_ client: LoopbackClient, port: UInt16) {
        var start = monotonicSeconds()
        var lastChurn = 0.0
        var requests = 0
        let churn = LoopbackClient(port: port, request: Payloads.proxiedRequest)
        while requests < 1_000 || monotonicSeconds() - start < churnSeconds {
            _ = client.roundTrip()
            requests += 1
            let now = monotonicSeconds()
            if now - lastChurn >= 0.0005 {
                lastChurn = now
                churn.reconnect()
                _ = churn.roundTrip()
            }
        }
        churn.disconnect()
        start = monotonicSeconds()
        while monotonicSeconds() - start < settleSeconds {
            _ = client.roundTrip()
        }
    }

    static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    let upstream: LoopbackUpstream
    let server: ProxyServer
    let proxyPort: UInt16
    let client: LoopbackClient

    init(accessLog: AccessLog) throws {
        upstream = LoopbackUpstream()
        upstream.start()
        proxyPort = Loopback.freePort()
        let accessLogYAML: String
        switch accessLog {
        case .off: accessLogYAML = "{ format: off }"
        case .jsonToDevNull: accessLogYAML = "{ format: json, path: /dev/null }"
        }
        // As Benchmarks/peers-sidecar.yaml (the wrk comparison), on ports of our own.
        let yaml = """
            workers: 1
            log_level: warning
            access_log: \(accessLogYAML)
            drain: { delay: 0s, timeout: 1s }
            listeners:
              - name: bench
                address: 127.0.0.1:\(proxyPort)
                timeouts: { header_read: 10s, idle: 300s }
                routes:
                  - name: default
                    cluster: app
            clusters:
              - name: app
                endpoints: [127.0.0.1:\(upstream.port)]
                pool: { max_idle_per_endpoint: 64, idle_timeout: 300s }
            """
        let config = try ConfigLoader.load(yaml: yaml, path: "/tmp/outrider-benchmark.yaml", environment: [:])
        server = try ProxyServer(config: config)
        let server = self.server
        ThreadBody.start { _ = server.run() }
        client = LoopbackClient(port: proxyPort, request: Payloads.proxiedRequest)
        Self.warmUp(client, port: proxyPort)
    }
}

/// The control: the same client talking to the same upstream with no proxy in between.
final class DirectFixture: @unchecked Sendable {
    let upstream: LoopbackUpstream
    let client: LoopbackClient

    init() {
        upstream = LoopbackUpstream()
        upstream.start()
        client = LoopbackClient(port: upstream.port, request: Payloads.proxiedRequest)
        for _ in 0..<1_000 { _ = client.roundTrip() }
    }
}
