// The validated, immutable configuration. Built only by `ConfigLoader`; everything here has
// passed validation, so consumers never re-check it.

/// A `HOST:PORT` or `[v6]:PORT` as written in the config. `host` is an IP literal (without
/// brackets) or a DNS name.
public struct ConfigAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public init(host: String, port: UInt16) { self.host = host; self.port = port }
    public var isIPv6Literal: Bool { host.contains(":") }
    /// `HOST:PORT`, with brackets around IPv6 literals.
    public var description: String { isIPv6Literal ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

public enum WorkerCount: Sendable, Equatable {
    case auto
    case fixed(Int)
}

public enum LogLevel: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

public struct AdminConfig: Sendable, Equatable {
    public var address: ConfigAddress
}

public enum AccessLogFormat: String, Sendable { case json, combined, off }
public enum LogDestination: Sendable, Equatable {
    case stdout, stderr
    case file(String)   // absolute path (relative ones are resolved by the loader)
}
public struct AccessLogConfig: Sendable, Equatable {
    public var format: AccessLogFormat
    public var path: LogDestination
}

public struct DrainConfig: Sendable, Equatable {
    public var delay: Duration
    public var timeout: Duration
}

public enum ListenerDirection: String, Sendable { case inbound, outbound }
public enum ListenerProtocol: String, Sendable { case http1, h2c, h2 }

public struct ListenerLimits: Sendable, Equatable {
    public var maxConnections: Int          // 0 = unlimited
    public var maxHeaderBytes: Int
    public var maxHeaders: Int
    public var maxRequestBody: Int64        // 0 = unlimited (streamed)
    public var h2MaxConcurrentStreams: Int
}

public struct ListenerTimeouts: Sendable, Equatable {
    public var headerRead: Duration
    public var idle: Duration
}

public struct RouteMatch: Sendable, Equatable {
    /// Always starts with "/"; "/" matches everything. Matching is segment-aware.
    public var pathPrefix: String
    /// "*" matches any host; "*.example.com" matches one or more labels before the suffix;
    /// anything else is an exact, case-insensitive match on the Host without its port.
    public var host: String
    /// Upper-case method tokens; empty = any method.
    public var methods: [String]
    /// Header name (lower-case) → exact value. All must match.
    public var headers: [HeaderMatch]
}

public struct HeaderMatch: Sendable, Equatable {
    public var name: String   // lower-case
    public var value: String
}

public struct RouteRewrite: Sendable, Equatable {
    public var pathPrefix: String?
    public var host: String?
}

public struct RouteConfig: Sendable, Equatable {
    public var name: String
    public var match: RouteMatch
    /// Upstream response headers due within this, across all tries; .zero = off.
    public var timeout: Duration
    public var rewrite: RouteRewrite?
    public var cluster: String
}

public struct ListenerConfig: Sendable, Equatable {
    public var name: String
    public var address: ConfigAddress
    public var direction: ListenerDirection
    public var protocols: [ListenerProtocol]
    public var limits: ListenerLimits
    public var timeouts: ListenerTimeouts
    public var forwardedHeaders: Bool
    public var routes: [RouteConfig]
}

public enum ClusterProtocol: String, Sendable { case http1, h2c, h2 }
public enum LoadBalancingPolicy: String, Sendable { case roundRobin = "round_robin" }

public struct PoolConfig: Sendable, Equatable {
    public var maxIdlePerEndpoint: Int
    public var idleTimeout: Duration
}

public struct ClusterConfig: Sendable, Equatable {
    public var name: String
    public var endpoints: [ConfigAddress]
    public var dnsRefresh: Duration
    public var `protocol`: ClusterProtocol
    public var lbPolicy: LoadBalancingPolicy
    public var connectTimeout: Duration
    public var pool: PoolConfig
}

public struct OutriderConfiguration: Sendable, Equatable {
    /// The file this came from; nil for the zero-config default.
    public var sourcePath: String?
    public var workers: WorkerCount
    public var logLevel: LogLevel
    public var admin: AdminConfig
    public var accessLog: AccessLogConfig
    public var drain: DrainConfig
    public var listeners: [ListenerConfig]
    public var clusters: [ClusterConfig]

    public func cluster(named name: String) -> ClusterConfig? { clusters.first { $0.name == name } }
}
