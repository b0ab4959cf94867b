// The zero-config sidecar (SPEC §1) and the defaults that fill whatever a file omits. One
// place, so `outrider` with no file and a file that says nothing agree by construction.

enum Defaults {
    static let workers = WorkerCount.auto
    static let logLevel = LogLevel.info
    static let admin = AdminConfig(address: ConfigAddress(host: "127.0.0.1", port: 15_000))
    static let accessLog = AccessLogConfig(format: .json, path: .stdout)
    static let drain = DrainConfig(delay: .seconds(5), timeout: .seconds(30))

    static let listenerName = "inbound"
    static let listenerAddress = ConfigAddress(host: "0.0.0.0", port: 15_006)
    static let listenerDirection = ListenerDirection.inbound
    static let listenerProtocols: [ListenerProtocol] = [.http1, .h2c]
    /// A listener with `tls` and no `protocols`: HTTP/1.1 and h2, chosen by ALPN.
    static let tlsListenerProtocols: [ListenerProtocol] = [.http1, .h2]
    static let limits = ListenerLimits(
        maxConnections: 10_000,
        maxHeaderBytes: 64 * 1_024,
        maxHeaders: 100,
        maxRequestBody: 0,
        h2MaxConcurrentStreams: 100
    )
    static let timeouts = ListenerTimeouts(headerRead: .seconds(10), idle: .seconds(60))
    static let forwardedHeaders = true

    static let routeName = "default"
    static let match = RouteMatch(pathPrefix: "/", host: "*", methods: [], headers: [])
    static let routeTimeout = Duration.seconds(15)
    /// What a written `retry` block starts from: `RetryPolicy.default` (one retry), but on the
    /// conditions of the SPEC's example, which is what someone writing a retry block expects.
    static let writtenRetry: RetryPolicy = {
        var policy = RetryPolicy.default
        policy.on = [.connectFailure, .refusedStream, .reset, .gatewayError]
        return policy
    }()
    static let clusterName = "app"

    static let endpoints = [ConfigAddress(host: "127.0.0.1", port: 8_080)]
    static let dnsRefresh = Duration.seconds(5)
    static let clusterProtocol = ClusterProtocol.http1
    static let lb = LoadBalancingConfig(policy: .roundRobin)
    static let circuitBreaker = CircuitBreakerConfig(maxConnections: 1024, maxPending: 1024, maxRequests: 1024)
    static let healthCheck = HealthCheckConfig(path: "/healthz", interval: .seconds(5), timeout: .seconds(1),
                                               healthyThreshold: 2, unhealthyThreshold: 3)
    static let outlierDetection = OutlierDetectionConfig(consecutiveFailures: 5, baseEjection: .seconds(30),
                                                         maxEjectedPercent: 50)
    static let connectTimeout = Duration.seconds(1)
    static let pool = PoolConfig(maxIdlePerEndpoint: 64, idleTimeout: .seconds(60))

    static func listenerName(index: Int) -> String { "listener-\(index)" }
    static func routeName(index: Int) -> String { "route-\(index)" }

    static let route = RouteConfig(
        name: routeName, match: match, timeout: routeTimeout, rewrite: nil, cluster: clusterName
    )

    static let listener = ListenerConfig(
        name: listenerName,
        address: listenerAddress,
        direction: listenerDirection,
        protocols: listenerProtocols,
        limits: limits,
        timeouts: timeouts,
        forwardedHeaders: forwardedHeaders,
        routes: [route]
    )

    static let cluster = ClusterConfig(
        name: clusterName,
        endpoints: endpoints,
        dnsRefresh: dnsRefresh,
        protocol: clusterProtocol,
        lb: lb,
        connectTimeout: connectTimeout,
        pool: pool,
        healthCheck: nil,
        outlierDetection: nil,
        circuitBreaker: circuitBreaker
    )

    static let configuration = OutriderConfiguration(
        sourcePath: nil,
        workers: workers,
        logLevel: logLevel,
        admin: admin,
        accessLog: accessLog,
        drain: drain,
        listeners: [listener],
        clusters: [cluster]
    )
}

extension ConfigLoader {
    /// What `outrider` runs with no file and no flags: `0.0.0.0:15006` (HTTP/1.1 and h2c) →
    /// `127.0.0.1:8080`, admin on `127.0.0.1:15000`, JSON access log on stdout.
    public static func zeroConfig() -> OutriderConfiguration { Defaults.configuration }
}
