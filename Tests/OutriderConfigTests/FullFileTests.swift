import Testing
@testable import OutriderConfig

/// Every key this build supports, each with a value other than its default.
let fullFile = """
    workers: 4
    log_level: debug
    admin:
      address: "[::1]:9901"
    access_log:
      format: combined
      path: logs/../logs/./access.log
    drain:
      delay: 2s
      timeout: 1m
    listeners:
      - name: public
        address: 0.0.0.0:8443
        direction: outbound
        protocols: [h2c]
        original_destination: false
        limits: { max_connections: 0, max_header_bytes: 32KiB, max_headers: 50,
                  max_request_body: 1MiB, h2_max_concurrent_streams: 10 }
        timeouts: { header_read: 500ms, idle: 2m }
        forwarded_headers: false
        routes:
          - name: api
            match:
              path_prefix: /api
              host: "*.Example.com"
              methods: [GET, DELETE]
              headers: { X-Tenant: blue, x-env: "prod: eu" }
            timeout: 0
            filters: []
            retry:
              attempts: 4
              on: [5xx, reset, retriable_status_codes]
              retriable_status_codes: [409, 429]
              per_try_timeout: 750ms
              backoff: { base: 10ms, max: 1s }
              budget: { ratio: 0.25, min_per_second: 2.5 }
              max_replay_body: 1MiB
            rewrite: { path_prefix: /, host: backend.internal }
            cluster: backend
          - match: { path_prefix: /static, host: "[::1]" }
            rewrite: { host: cdn.internal:8080 }
            cluster: app
      - address: 127.0.0.1:15001
    clusters:
      - name: backend
        endpoints: [10.0.0.1:80, "backend.svc.cluster.local:8080", "[fd00::1]:81"]
        dns_refresh: 30s
        protocol: http1
        lb: { policy: ring_hash, key: "header:X-User" }
        connect_timeout: 250ms
        pool: { max_idle_per_endpoint: 0, idle_timeout: 1h }
        health_check: { path: "/ready?deep=1", interval: 10s, timeout: 2s, healthy_threshold: 1, unhealthy_threshold: 5 }
        outlier_detection: { consecutive_failures: 3, base_ejection: 10s, max_ejected_percent: 100 }
        circuit_breaker: { max_connections: 100, max_pending: 10, max_requests: 1000 }
      - name: app
        endpoints: [127.0.0.1:8080]
    """

func fullFileExpectation() -> OutriderConfiguration {
    let publicListener = ListenerConfig(
        name: "public",
        address: ConfigAddress(host: "0.0.0.0", port: 8_443),
        direction: .outbound,
        protocols: [.h2c],
        limits: ListenerLimits(maxConnections: 0, maxHeaderBytes: 32_768, maxHeaders: 50,
                               maxRequestBody: 1_048_576, h2MaxConcurrentStreams: 10),
        timeouts: ListenerTimeouts(headerRead: .milliseconds(500), idle: .seconds(120)),
        forwardedHeaders: false,
        routes: [
            RouteConfig(
                name: "api",
                match: RouteMatch(pathPrefix: "/api", host: "*.example.com", methods: ["GET", "DELETE"],
                                  headers: [HeaderMatch(name: "x-tenant", value: "blue"),
                                            HeaderMatch(name: "x-env", value: "prod: eu")]),
                timeout: .zero,
                rewrite: RouteRewrite(pathPrefix: "/", host: "backend.internal"),
                cluster: "backend",
                retry: RetryPolicy(
                    attempts: 4, on: [.serverError, .reset, .retriableStatusCodes], retriableStatusCodes: [409, 429],
                    perTryTimeout: .milliseconds(750),
                    backoff: RetryBackoff(base: .milliseconds(10), max: .seconds(1)),
                    budget: RetryBudget(ratio: 0.25, minPerSecond: 2.5), maxReplayBody: 1_048_576)
            ),
            RouteConfig(
                name: "route-1",
                match: RouteMatch(pathPrefix: "/static", host: "[::1]", methods: [], headers: []),
                timeout: .seconds(15),
                rewrite: RouteRewrite(pathPrefix: nil, host: "cdn.internal:8080"),
                cluster: "app"
            ),
        ]
    )
    var secondListener = Defaults.listener
    secondListener.name = "listener-1"
    secondListener.address = ConfigAddress(host: "127.0.0.1", port: 15_001)

    return OutriderConfiguration(
        sourcePath: testPath,
        workers: .fixed(4),
        logLevel: .debug,
        admin: AdminConfig(address: ConfigAddress(host: "::1", port: 9_901)),
        accessLog: AccessLogConfig(format: .combined, path: .file("/etc/outrider/logs/access.log")),
        drain: DrainConfig(delay: .seconds(2), timeout: .seconds(60)),
        listeners: [publicListener, secondListener],
        clusters: [
            ClusterConfig(
                name: "backend",
                endpoints: [ConfigAddress(host: "10.0.0.1", port: 80),
                            ConfigAddress(host: "backend.svc.cluster.local", port: 8_080),
                            ConfigAddress(host: "fd00::1", port: 81)],
                dnsRefresh: .seconds(30),
                protocol: .http1,
                lb: LoadBalancingConfig(policy: .ringHash, key: .header("x-user")),
                connectTimeout: .milliseconds(250),
                pool: PoolConfig(maxIdlePerEndpoint: 0, idleTimeout: .seconds(3_600)),
                healthCheck: HealthCheckConfig(path: "/ready?deep=1", interval: .seconds(10), timeout: .seconds(2),
                                               healthyThreshold: 1, unhealthyThreshold: 5),
                outlierDetection: OutlierDetectionConfig(consecutiveFailures: 3, baseEjection: .seconds(10),
                                                         maxEjectedPercent: 100),
                circuitBreaker: CircuitBreakerConfig(maxConnections: 100, maxPending: 10, maxRequests: 1_000)
            ),
            Defaults.cluster,
        ]
    )
}

@Suite struct FullFileTests {
    @Test func everySupportedKeyLoads() throws {
        let config = try load(fullFile)
        let expected = fullFileExpectation()
        // Section by section first, so a mismatch names its section.
        #expect(config.listeners[0] == expected.listeners[0])
        #expect(config.listeners[1] == expected.listeners[1])
        #expect(config.clusters == expected.clusters)
        #expect(config == expected)
    }

    @Test func relativePathsFollowTheConfigFilesDirectory() throws {
        let yaml = "access_log: { path: access.log }\n"
        #expect(try load(yaml, path: "/srv/conf/outrider.yaml").accessLog.path == .file("/srv/conf/access.log"))
        #expect(try load("access_log: { path: /var/log/a.log }\n").accessLog.path == .file("/var/log/a.log"))
        let cwd = FilePaths.currentDirectory()
        let fromRelativeConfig = try load(yaml, path: "conf/outrider.yaml").accessLog.path
        #expect(fromRelativeConfig == .file(FilePaths.clean(cwd + "/conf/access.log")))
        #expect(try load("access_log: { path: stderr }\n").accessLog.path == .stderr)
    }

    @Test func scalarsAreTypedFromTheirText() throws {
        // Quoted numbers and booleans are fine: the field decides the type, not YAML's tag.
        let config = try load("""
            workers: "2"
            listeners:
              - forwarded_headers: "false"
                limits: { max_headers: '7', max_request_body: 10KB }
            """)
        #expect(config.workers == .fixed(2))
        #expect(config.listeners[0].forwardedHeaders == false)
        #expect(config.listeners[0].limits.maxHeaders == 7)
        #expect(config.listeners[0].limits.maxRequestBody == 10_000)
    }
}

@Suite struct OverrideTests {
    @Test func flagsReplaceTheirSettings() throws {
        var overrides = ConfigOverrides()
        overrides.listen = ConfigAddress(host: "127.0.0.1", port: 9_000)
        overrides.upstream = ConfigAddress(host: "10.1.1.1", port: 3_000)
        overrides.admin = ConfigAddress(host: "0.0.0.0", port: 9_901)
        overrides.workers = .fixed(2)
        overrides.logLevel = .trace
        let original = try load(fullFile)
        let config = original.applying(overrides)

        #expect(config.listeners[0].address == ConfigAddress(host: "127.0.0.1", port: 9_000))
        #expect(config.listeners[1] == original.listeners[1])
        // The first listener's first route goes to `backend`: that cluster gets the upstream.
        #expect(config.cluster(named: "backend")?.endpoints == [ConfigAddress(host: "10.1.1.1", port: 3_000)])
        #expect(config.cluster(named: "app") == original.cluster(named: "app"))
        #expect(config.admin.address == ConfigAddress(host: "0.0.0.0", port: 9_901))
        #expect(config.workers == .fixed(2))
        #expect(config.logLevel == .trace)
    }

    @Test func noOverridesChangeNothing() throws {
        let config = try load(fullFile)
        #expect(config.applying(ConfigOverrides()) == config)
        #expect(ConfigLoader.zeroConfig().applying(ConfigOverrides()) == ConfigLoader.zeroConfig())
    }

    @Test func zeroConfigWithListenAndUpstream() {
        var overrides = ConfigOverrides()
        overrides.listen = ConfigLoader.parseAddress(":8000")
        overrides.upstream = ConfigLoader.parseAddress("app:80")
        let config = ConfigLoader.zeroConfig().applying(overrides)
        #expect(config.listeners[0].address == ConfigAddress(host: "0.0.0.0", port: 8_000))
        #expect(config.clusters[0].endpoints == [ConfigAddress(host: "app", port: 80)])
    }
}
