import Glibc
import OutriderBalancing
import OutriderConfig
import OutriderCore
import OutriderFilters
import OutriderHTTP
import OutriderPosix
import OutriderTLS

/// The configuration compiled for the data path: byte strings instead of `String`s,
/// nanoseconds instead of `Duration`s, resolved addresses. Immutable and shared by all workers.
final class ProxyRuntime: @unchecked Sendable {
    let config: OutriderConfiguration
    let listeners: [ListenerRuntime]
    let clusters: [ClusterRuntime]
    let endpoints: [EndpointRuntime]
    let maxHeaders: Int
    let maxHeaderBytes: Int
    /// Health, ejections and circuit-breaker counts, shared by the workers.
    let shared: SharedUpstreamState
    let workerCount: Int
    /// Background key fetchers of `jwks_uri` filters and OIDC discovery; started and stopped
    /// with the server.
    let jwksFetchers: [BackgroundService]

    init(config: OutriderConfiguration, workerCount: Int) throws(FilterFactory.BuildError) {
        self.config = config
        self.workerCount = workerCount
        let shared = SharedUpstreamState(endpointCount: config.clusters.reduce(0) { $0 + $1.endpoints.count },
                                         clusterCount: config.clusters.count)
        self.shared = shared
        var endpoints: [EndpointRuntime] = []
        var clusters: [ClusterRuntime] = []
        for (clusterIndex, cluster) in config.clusters.enumerated() {
            var members: [EndpointRuntime] = []
            for (position, address) in cluster.endpoints.enumerated() {
                let endpoint = EndpointRuntime(index: endpoints.count, position: position, address: address)
                endpoints.append(endpoint)
                members.append(endpoint)
            }
            clusters.append(try ClusterRuntime(index: clusterIndex, config: cluster, endpoints: members, shared: shared))
        }
        self.clusters = clusters
        self.endpoints = endpoints
        let build = FilterBuildContext()
        var listeners: [ListenerRuntime] = []
        for (index, listener) in config.listeners.enumerated() {
            listeners.append(try ListenerRuntime(index: index, config: listener, clusters: clusters,
                                                 workerCount: workerCount, build: build))
        }
        var routeIndex = 0
        for listener in listeners {
            for route in listener.routes {
                route.metricsIndex = routeIndex
                routeIndex += 1
            }
        }
        self.listeners = listeners
        jwksFetchers = build.services.compactMap { $0 as? BackgroundService }
        maxHeaders = max(1, config.listeners.map(\.limits.maxHeaders).max() ?? 100)
        maxHeaderBytes = config.listeners.map(\.limits.maxHeaderBytes).max() ?? 65536
    }
}

final class EndpointRuntime: @unchecked Sendable {
    let index: Int
    /// Place in its cluster's endpoint list.
    let position: Int
    let label: ByteString
    let labelString: String
    let host: String
    let port: UInt16
    /// A name (not an IP literal): re-resolved every `dns_refresh` off the loops.
    let isDNSName: Bool
    /// Stable identity for the hashing policies: the same endpoint keeps its keys.
    let hashIdentity: UInt64
    private var lock = pthread_mutex_t()
    private var addresses: [SocketAddress]
    private var lastResolutionError: String?

    init(index: Int, position: Int, address: ConfigAddress) {
        self.index = index
        self.position = position
        labelString = address.description
        label = ByteString(labelString)
        host = address.host
        port = address.port
        hashIdentity = labelString.utf8CString.withUnsafeBufferPointer { pointer in
            pointer.baseAddress!.withMemoryRebound(to: UInt8.self, capacity: pointer.count) {
                balancingHash($0, pointer.count - 1)
            }
        }
        pthread_mutex_init(&lock, nil)
        if let literal = SocketAddress.literal(host: address.host, port: address.port) {
            isDNSName = false
            addresses = [literal]
        } else {
            isDNSName = true
            do {
                addresses = try SocketAddress.resolve(host: address.host, port: address.port)
                lastResolutionError = addresses.isEmpty ? "no addresses" : nil
            } catch {
                addresses = []
                lastResolutionError = error.description
            }
        }
    }

    /// The addresses connections go to (a DNS name may have several: A and AAAA).
    func currentAddresses() -> [SocketAddress] {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return addresses
    }

    var resolutionError: String? {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return lastResolutionError
    }

    /// A fresh DNS answer; true when the set of addresses changed. A failed resolution keeps
    /// the last good answer.
    func update(resolved: [SocketAddress]?, error: String?) -> Bool {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        lastResolutionError = error
        guard let resolved, !resolved.isEmpty else { return false }
        let old = Set(addresses.map(\.description))
        let new = Set(resolved.map(\.description))
        guard old != new else { return false }
        addresses = resolved
        return true
    }
}

/// What a route's `retry` means on the data path.
struct RetryRuntime {
    let attempts: Int
    let onConnectFailure: Bool
    let onRefusedStream: Bool
    let onReset: Bool
    let onGatewayError: Bool
    let onServerError: Bool
    let retriableStatusCodes: [Int]
    let perTryTimeout: Int64
    let backoffBase: Int64
    let backoffMax: Int64
    let budgetRatio: Double
    let budgetMinPerSecond: Double
    let maxReplayBody: Int64

    init(_ policy: RetryPolicy) {
        attempts = policy.attempts
        onConnectFailure = policy.on.contains(.connectFailure)
        onRefusedStream = policy.on.contains(.refusedStream)
        onReset = policy.on.contains(.reset)
        onGatewayError = policy.on.contains(.gatewayError)
        onServerError = policy.on.contains(.serverError)
        retriableStatusCodes = policy.on.contains(.retriableStatusCodes) ? policy.retriableStatusCodes : []
        perTryTimeout = policy.perTryTimeout.nanoseconds
        backoffBase = policy.backoff.base.nanoseconds
        backoffMax = policy.backoff.max.nanoseconds
        budgetRatio = policy.budget.ratio
        budgetMinPerSecond = policy.budget.minPerSecond
        maxReplayBody = policy.maxReplayBody
    }

    /// Whether an answer with this status may be tried again.
    @inline(__always)
    func retriesStatus(_ status: Int) -> Bool {
        if onServerError && status >= 500 && status < 600 { return true }
        if onGatewayError && (status == 502 || status == 503 || status == 504) { return true }
        for code in retriableStatusCodes where code == status { return true }
        return false
    }

    /// A try that timed out counts as a gateway error (Envoy's per-try timeout is a 504).
    var retriesTimeout: Bool { onGatewayError || onServerError || onReset }
}

final class ClusterRuntime: @unchecked Sendable {
    let index: Int
    let name: ByteString
    let endpoints: [EndpointRuntime]
    let connectTimeout: Int64
    let maxIdlePerEndpoint: Int
    let poolIdleTimeout: Int64
    let policy: ClusterPolicy
    /// `policy.outlier != nil`, read on every response without copying the policy.
    let detectsOutliers: Bool
    /// `policy.hashKey != nil` (ring_hash, maglev), likewise.
    let balancesByHash: Bool
    let healthCheck: HealthCheckConfig?
    let dnsRefresh: Int64
    /// Health, ejections and circuit-breaker counts of the configuration this cluster is part of.
    let shared: SharedUpstreamState
    /// TLS origination (cluster `tls`); nil = cleartext. Replaced when its files change.
    var tlsContext: TLSClientContext? { tlsConfig == nil ? nil : currentTLSContext.value }
    private let currentTLSContext: SwappableReference<TLSClientContext>
    let tlsConfig: ClusterTLSConfig?
    let configName: String

    func replaceTLSContext(_ context: TLSClientContext) { currentTLSContext.value = context }

    static func makeTLSContext(_ tls: ClusterTLSConfig, protocol: ClusterProtocol) throws(TLSError) -> TLSClientContext {
        try TLSClientContext(caPath: tls.ca, verify: tls.verify,
                             clientCertificateChainPath: tls.clientCertificate?.certificate,
                             clientPrivateKeyPath: tls.clientCertificate?.privateKey,
                             alpn: `protocol` == .h2 ? ["h2"] : ["http/1.1"])
    }
    /// `protocol: h2c | h2`: requests are streams on shared HTTP/2 connections.
    let isHTTP2: Bool
    let clusterProtocol: ClusterProtocol
    /// The name sent and verified; nil = each endpoint's host.
    let tlsServerName: String?

    init(index: Int, config: ClusterConfig, endpoints: [EndpointRuntime], shared: SharedUpstreamState) throws(FilterFactory.BuildError) {
        self.shared = shared
        // h2 is HTTP/2 over TLS: without a `tls` block, the defaults (system CAs, verified).
        let tlsConfig = config.tls ?? (config.protocol == .h2 ? ClusterTLSConfig() : nil)
        self.tlsConfig = tlsConfig
        clusterProtocol = config.protocol
        isHTTP2 = config.protocol != .http1
        configName = config.name
        if let tls = tlsConfig {
            do {
                currentTLSContext = SwappableReference(try Self.makeTLSContext(tls, protocol: config.protocol))
            } catch {
                throw FilterFactory.BuildError(description: "cluster \(config.name) tls: \(error.description)")
            }
            tlsServerName = tls.sni
        } else {
            currentTLSContext = SwappableReference(nil)
            tlsServerName = nil
        }
        self.index = index
        name = ByteString(config.name)
        self.endpoints = endpoints
        policy = ClusterPolicy(config)
        detectsOutliers = policy.outlier != nil
        balancesByHash = policy.hashKey != nil
        healthCheck = config.healthCheck
        dnsRefresh = config.dnsRefresh.nanoseconds
        connectTimeout = config.connectTimeout.nanoseconds
        maxIdlePerEndpoint = config.pool.maxIdlePerEndpoint
        poolIdleTimeout = config.pool.idleTimeout.nanoseconds
    }
}

enum HostPattern {
    case any
    case exact(ByteString)        // lower-case
    case suffix(ByteString)       // lower-case, with the leading dot: ".example.com"
}

final class RouteRuntime: @unchecked Sendable {
    let name: ByteString
    /// Without a trailing slash, except the root "/".
    let pathPrefix: ByteString
    let host: HostPattern
    let methods: [ByteString]
    let headers: [(name: ByteString, value: ByteString)]
    let timeout: Int64
    let rewritePrefix: ByteString?
    let rewriteHost: ByteString?
    let cluster: ClusterRuntime
    let retry: RetryRuntime
    /// The filter chain, in the order written (SPEC §2 `filters`).
    let filters: [any HTTPFilter]
    /// This route's place in the metrics layout (all listeners' routes in order).
    var metricsIndex = 0

    init(config: RouteConfig, cluster: ClusterRuntime, build: FilterBuildContext) throws(FilterFactory.BuildError) {
        name = ByteString(config.name)
        pathPrefix = segmentPrefix(config.match.pathPrefix)
        let host = config.match.host.lowercased()
        if host == "*" || host.isEmpty {
            self.host = .any
        } else if host.hasPrefix("*.") {
            self.host = .suffix(ByteString(String(host.dropFirst())))
        } else {
            self.host = .exact(ByteString(host))
        }
        methods = config.match.methods.map { ByteString($0) }
        headers = config.match.headers.map { (ByteString(lowercased: $0.name), ByteString($0.value)) }
        timeout = config.timeout.nanoseconds
        rewritePrefix = config.rewrite?.pathPrefix.map { ByteString($0) }
        rewriteHost = config.rewrite?.host.map { ByteString($0) }
        self.cluster = cluster
        retry = RetryRuntime(config.retry)
        var filters: [any HTTPFilter] = []
        for filter in config.filters { filters.append(try FilterFactory.build(filter, context: build)) }
        self.filters = filters
    }

    @inline(__always)
    func matchesPath(_ path: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        pathHasSegmentPrefix(path, count, pathPrefix)
    }

    /// `host` is the Host header without its port.
    @inline(__always)
    func matchesHost(_ host: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        switch self.host {
        case .any:
            return true
        case .exact(let expected):
            return expected.equalsIgnoringCase(host, count: count)
        case .suffix(let suffix):
            guard count > suffix.count else { return false }
            return suffix.equalsIgnoringCase(host + (count - suffix.count), count: suffix.count)
        }
    }
}

final class ListenerRuntime: @unchecked Sendable {
    let index: Int
    let config: ListenerConfig
    let name: ByteString
    let routes: [RouteRuntime]
    let limits: HeadLimitsConfig
    let headerReadTimeout: Int64
    let idleTimeout: Int64
    let forwardedHeaders: Bool
    /// `max_connections` shared evenly by the workers (each owns its accept socket).
    let maxConnectionsPerWorker: Int
    /// TLS termination (listener `tls`); nil = cleartext. Replaced when its files change. A
    /// cleartext listener's connections never take the lock.
    var tlsContext: TLSServerContext? { terminatesTLS ? currentTLSContext.value : nil }
    /// `config.tls != nil`, kept as a flag: reading the optional struct copies it (and retains
    /// what it holds), which the per-request paths ask about.
    let terminatesTLS: Bool
    private let currentTLSContext: SwappableReference<TLSServerContext>

    func replaceTLSContext(_ context: TLSServerContext) { currentTLSContext.value = context }

    static func makeTLSContext(_ tls: ListenerTLSConfig, protocols: [ListenerProtocol]) throws(TLSError) -> TLSServerContext {
        // Server preference: h2 first when offered.
        var alpn: [String] = []
        if protocols.contains(.h2) { alpn.append("h2") }
        if protocols.contains(.http1) { alpn.append("http/1.1") }
        return try TLSServerContext(
            certificateChainPath: tls.certificate.certificate, privateKeyPath: tls.certificate.privateKey,
            sniCertificates: tls.sniCertificates.map { ($0.certificate, $0.privateKey) },
            clientCAPath: tls.clientCA, minimumVersion: tls.minVersion == .v1_3 ? .tls13 : .tls12,
            alpn: alpn)
    }

    init(index: Int, config: ListenerConfig, clusters: [ClusterRuntime], workerCount: Int,
         build: FilterBuildContext) throws(FilterFactory.BuildError) {
        self.index = index
        self.config = config
        name = ByteString(config.name)
        terminatesTLS = config.tls != nil
        if let tls = config.tls {
            do {
                currentTLSContext = SwappableReference(try Self.makeTLSContext(tls, protocols: config.protocols))
            } catch {
                throw FilterFactory.BuildError(description: "listener \(config.name) tls: \(error.description)")
            }
        } else {
            currentTLSContext = SwappableReference(nil)
        }
        var routes: [RouteRuntime] = []
        for route in config.routes {
            guard let cluster = clusters.first(where: { $0.name.description == route.cluster }) else {
                throw FilterFactory.BuildError(description: "route \(route.name): no cluster \(route.cluster)")
            }
            do {
                routes.append(try RouteRuntime(config: route, cluster: cluster, build: build))
            } catch {
                throw FilterFactory.BuildError(description: "listener \(config.name) route \(route.name): \(error.description)")
            }
        }
        self.routes = routes
        limits = HeadLimitsConfig(maxHeaderBytes: config.limits.maxHeaderBytes, maxHeaders: config.limits.maxHeaders,
                                  maxRequestBody: config.limits.maxRequestBody)
        headerReadTimeout = config.timeouts.headerRead.nanoseconds
        idleTimeout = config.timeouts.idle.nanoseconds
        forwardedHeaders = config.forwardedHeaders
        let limit = config.limits.maxConnections
        maxConnectionsPerWorker = limit == 0 ? Int.max : max(1, (limit + workerCount - 1) / workerCount)
    }
}

struct HeadLimitsConfig {
    var maxHeaderBytes: Int
    var maxHeaders: Int
    var maxRequestBody: Int64
}

extension Duration {
    var nanoseconds: Int64 {
        let parts = components
        return parts.seconds &* 1_000_000_000 &+ parts.attoseconds / 1_000_000_000
    }
}

/// A reference one thread replaces while others read it (a TLS context the certificate
/// watcher rebuilt): a mutex, taken once per new connection.
final class SwappableReference<Value: AnyObject>: @unchecked Sendable {
    private var current: Value?
    private var lock = pthread_mutex_t()

    init(_ value: Value?) {
        current = value
        pthread_mutex_init(&lock, nil)
    }

    var value: Value? {
        get {
            pthread_mutex_lock(&lock)
            defer { pthread_mutex_unlock(&lock) }
            return current
        }
        set {
            pthread_mutex_lock(&lock)
            current = newValue
            pthread_mutex_unlock(&lock)
        }
    }
}
