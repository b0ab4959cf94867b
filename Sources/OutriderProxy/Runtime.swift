import OutriderConfig
import OutriderCore
import OutriderFilters
import OutriderHTTP
import OutriderPosix

/// The configuration compiled for the data path: byte strings instead of `String`s,
/// nanoseconds instead of `Duration`s, resolved addresses. Immutable and shared by all workers.
final class ProxyRuntime: @unchecked Sendable {
    let config: OutriderConfiguration
    let listeners: [ListenerRuntime]
    let clusters: [ClusterRuntime]
    let endpoints: [EndpointRuntime]
    let maxHeaders: Int
    let maxHeaderBytes: Int
    /// Background key fetchers of `jwks_uri` filters; started and stopped with the server.
    let jwksFetchers: [JWKSFetcher]

    init(config: OutriderConfiguration, workerCount: Int) throws(FilterFactory.BuildError) {
        self.config = config
        var endpoints: [EndpointRuntime] = []
        var clusters: [ClusterRuntime] = []
        for (clusterIndex, cluster) in config.clusters.enumerated() {
            var members: [EndpointRuntime] = []
            for address in cluster.endpoints {
                let endpoint = EndpointRuntime(index: endpoints.count, address: address)
                endpoints.append(endpoint)
                members.append(endpoint)
            }
            clusters.append(ClusterRuntime(index: clusterIndex, config: cluster, endpoints: members))
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
        jwksFetchers = build.services.compactMap { $0 as? JWKSFetcher }
        maxHeaders = max(1, config.listeners.map(\.limits.maxHeaders).max() ?? 100)
        maxHeaderBytes = config.listeners.map(\.limits.maxHeaderBytes).max() ?? 65536
    }
}

final class EndpointRuntime: @unchecked Sendable {
    let index: Int
    let label: ByteString
    let labelString: String
    /// Resolved once at start-up; nil when the name did not resolve (requests then fail as
    /// connect failures, and the reason is logged).
    let address: SocketAddress?
    let resolutionError: String?

    init(index: Int, address: ConfigAddress) {
        self.index = index
        labelString = address.description
        label = ByteString(labelString)
        do {
            let resolved = try SocketAddress.resolve(host: address.host, port: address.port)
            self.address = resolved.first
            resolutionError = resolved.isEmpty ? "no addresses" : nil
        } catch {
            self.address = nil
            resolutionError = error.description
        }
    }
}

final class ClusterRuntime: @unchecked Sendable {
    let index: Int
    let name: ByteString
    let endpoints: [EndpointRuntime]
    let connectTimeout: Int64
    let maxIdlePerEndpoint: Int
    let poolIdleTimeout: Int64

    init(index: Int, config: ClusterConfig, endpoints: [EndpointRuntime]) {
        self.index = index
        name = ByteString(config.name)
        self.endpoints = endpoints
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

    init(index: Int, config: ListenerConfig, clusters: [ClusterRuntime], workerCount: Int,
         build: FilterBuildContext) throws(FilterFactory.BuildError) {
        self.index = index
        self.config = config
        name = ByteString(config.name)
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
