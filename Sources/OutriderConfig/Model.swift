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
    /// The route's filter chain, in the order written.
    public var filters: [FilterConfig] = []
    /// SPEC §7; `RetryPolicy.default` when the route has no `retry`.
    public var retry: RetryPolicy = .default
}

// MARK: retry (SPEC §7)

public enum RetryCondition: String, Sendable, CaseIterable {
    case connectFailure = "connect_failure"
    case refusedStream = "refused_stream"
    case reset
    case gatewayError = "gateway_error"          // 502, 503, 504 answers
    case serverError = "5xx"                     // any 5xx answer (and gateway errors)
    case retriableStatusCodes = "retriable_status_codes"
}

public struct RetryBackoff: Sendable, Equatable {
    public var base: Duration
    public var max: Duration
    public init(base: Duration, max: Duration) { self.base = base; self.max = max }
}

/// Over a 10 s window: retries ≤ `ratio` × requests + `minPerSecond` per second.
public struct RetryBudget: Sendable, Equatable {
    public var ratio: Double
    public var minPerSecond: Double
    public init(ratio: Double, minPerSecond: Double) { self.ratio = ratio; self.minPerSecond = minPerSecond }
}

public struct RetryPolicy: Sendable, Equatable {
    /// Total tries, the first included (≥ 1).
    public var attempts: Int
    public var on: Set<RetryCondition>
    public var retriableStatusCodes: [Int]
    /// `.zero` = no per-try limit (only the route `timeout`).
    public var perTryTimeout: Duration
    public var backoff: RetryBackoff
    public var budget: RetryBudget
    /// Request bodies up to this many bytes are kept for replay; longer ones are not retried
    /// once their first byte was sent.
    public var maxReplayBody: Int64

    public init(attempts: Int, on: Set<RetryCondition>, retriableStatusCodes: [Int], perTryTimeout: Duration,
                backoff: RetryBackoff, budget: RetryBudget, maxReplayBody: Int64) {
        self.attempts = attempts
        self.on = on
        self.retriableStatusCodes = retriableStatusCodes
        self.perTryTimeout = perTryTimeout
        self.backoff = backoff
        self.budget = budget
        self.maxReplayBody = maxReplayBody
    }

    /// SPEC §7: without `retry`, one more try on connect failure only.
    public static let `default` = RetryPolicy(
        attempts: 2, on: [.connectFailure], retriableStatusCodes: [], perTryTimeout: .zero,
        backoff: RetryBackoff(base: .milliseconds(25), max: .milliseconds(250)),
        budget: RetryBudget(ratio: 0.2, minPerSecond: 10), maxReplayBody: 64 * 1024)
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
    /// SPEC §2 listener `tls`: terminate TLS; nil = cleartext.
    public var tls: ListenerTLSConfig? = nil
    /// Forward to the address the connection had before an iptables REDIRECT (SO_ORIGINAL_DST)
    /// instead of the route's cluster endpoints (transparent interception).
    public var originalDestination: Bool = false
}

// MARK: TLS (SPEC §2)

public enum TLSVersion: String, Sendable, CaseIterable {
    case v1_2 = "1.2"
    case v1_3 = "1.3"
}

/// A PEM certificate chain (leaf first) and its private key, as absolute paths.
public struct CertificatePair: Sendable, Equatable {
    public var certificate: String
    public var privateKey: String
    public init(certificate: String, privateKey: String) { self.certificate = certificate; self.privateKey = privateKey }
}

public struct ListenerTLSConfig: Sendable, Equatable {
    /// The default certificate (`certificate` / `private_key`).
    public var certificate: CertificatePair
    /// More certificates (`sni_certificates`), chosen when the client's server name matches
    /// one of their names (subject alternative names, else common name); the default otherwise.
    public var sniCertificates: [CertificatePair]
    /// PEM bundle of CAs that client certificates must chain to (mTLS); nil = no client
    /// certificate asked for.
    public var clientCA: String?
    public var minVersion: TLSVersion
    public init(certificate: CertificatePair, sniCertificates: [CertificatePair] = [], clientCA: String? = nil,
                minVersion: TLSVersion = .v1_2) {
        self.certificate = certificate
        self.sniCertificates = sniCertificates
        self.clientCA = clientCA
        self.minVersion = minVersion
    }
}

/// SPEC §2 cluster `tls`: originate TLS to the endpoints.
public struct ClusterTLSConfig: Sendable, Equatable {
    /// Server name sent (SNI) and verified; nil = the endpoint's host when it is a name.
    public var sni: String?
    /// PEM bundle of trusted CAs; nil = the system bundle.
    public var ca: String?
    public var verify: Bool
    /// Client certificate for mTLS to the upstream.
    public var clientCertificate: CertificatePair?
    public init(sni: String? = nil, ca: String? = nil, verify: Bool = true, clientCertificate: CertificatePair? = nil) {
        self.sni = sni
        self.ca = ca
        self.verify = verify
        self.clientCertificate = clientCertificate
    }
}

public enum ClusterProtocol: String, Sendable { case http1, h2c, h2 }
public enum LoadBalancingPolicy: String, Sendable, CaseIterable {
    case roundRobin = "round_robin"
    case leastRequest = "least_request"
    case random
    case ringHash = "ring_hash"
    case maglev
}

/// What `ring_hash` and `maglev` hash to pick an endpoint.
public enum HashKey: Sendable, Equatable {
    case header(String)      // lower-case name
    case cookie(String)
    case clientIP
}

public struct LoadBalancingConfig: Sendable, Equatable {
    public var policy: LoadBalancingPolicy
    /// Required for `ring_hash` and `maglev`, refused for the others.
    public var key: HashKey?
    public init(policy: LoadBalancingPolicy, key: HashKey? = nil) { self.policy = policy; self.key = key }
}

public struct HealthCheckConfig: Sendable, Equatable {
    public var path: String              // starts with "/"
    public var interval: Duration
    public var timeout: Duration
    public var healthyThreshold: Int
    public var unhealthyThreshold: Int
    public init(path: String, interval: Duration, timeout: Duration, healthyThreshold: Int, unhealthyThreshold: Int) {
        self.path = path; self.interval = interval; self.timeout = timeout
        self.healthyThreshold = healthyThreshold; self.unhealthyThreshold = unhealthyThreshold
    }
}

public struct OutlierDetectionConfig: Sendable, Equatable {
    public var consecutiveFailures: Int
    public var baseEjection: Duration
    public var maxEjectedPercent: Int    // 0...100
    public init(consecutiveFailures: Int, baseEjection: Duration, maxEjectedPercent: Int) {
        self.consecutiveFailures = consecutiveFailures; self.baseEjection = baseEjection
        self.maxEjectedPercent = maxEjectedPercent
    }
}

public struct CircuitBreakerConfig: Sendable, Equatable {
    public var maxConnections: Int
    public var maxPending: Int
    public var maxRequests: Int
    public init(maxConnections: Int, maxPending: Int, maxRequests: Int) {
        self.maxConnections = maxConnections; self.maxPending = maxPending; self.maxRequests = maxRequests
    }
}

public struct PoolConfig: Sendable, Equatable {
    public var maxIdlePerEndpoint: Int
    public var idleTimeout: Duration
}

public struct ClusterConfig: Sendable, Equatable {
    public var name: String
    public var endpoints: [ConfigAddress]
    public var dnsRefresh: Duration
    public var `protocol`: ClusterProtocol
    public var lb: LoadBalancingConfig
    public var connectTimeout: Duration
    public var pool: PoolConfig
    public var healthCheck: HealthCheckConfig?
    public var outlierDetection: OutlierDetectionConfig?
    /// Always present: Envoy's defaults (1024 each) when the cluster has none.
    public var circuitBreaker: CircuitBreakerConfig
    public var tls: ClusterTLSConfig? = nil
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

// MARK: filters (SPEC §4–6)

/// One entry of a route's `filters` list, in the order written.
public enum FilterConfig: Sendable, Equatable {
    case auth(AuthFilterConfig)
    case rateLimit(RateLimitConfig)
    case headers(HeadersFilterConfig)
}

public struct AnonymousRule: Sendable, Equatable {
    /// Segment-aware prefix of the normalized path.
    public var pathPrefix: String
    /// Upper-case methods; empty = any.
    public var methods: [String]
}

public struct APIKeyEntry: Sendable, Equatable {
    public enum Secret: Sendable, Equatable {
        case plain([UInt8])
        case sha256([UInt8])     // 32 bytes
    }
    public var name: String
    public var secret: Secret
}

public struct APIKeyConfig: Sendable, Equatable {
    /// Lower-case header the key is read from; a key also arrives as `Authorization: Bearer`.
    public var header: String
    public var keysFile: String
    public var keys: [APIKeyEntry]
}

public struct HtpasswdEntry: Sendable, Equatable {
    public var user: String
    /// `$2y$…`/`$2b$…` (bcrypt) or `{SHA}base64`.
    public var hash: String
}

public struct BasicAuthConfig: Sendable, Equatable {
    public var htpasswd: String
    public var entries: [HtpasswdEntry]
}

public enum TokenSource: Sendable, Equatable {
    case header(String)      // lower-case; "authorization" means the Bearer scheme
    case cookie(String)
    case query(String)
}

public struct JWTConfig: Sendable, Equatable {
    public var issuer: String?
    public var audiences: [String]
    public var jwksFile: String?
    /// The JWKS document read from `jwks_file` at load.
    public var jwksJSON: String?
    public var jwksURI: String?
    public var jwksRefresh: Duration
    public var minRefresh: Duration
    public var identityClaim: String
    /// e.g. "RS256", "ES256", "EdDSA", "HS256"; never "none".
    public var algorithms: [String]
    public var clockSkew: Duration
    public var from: [TokenSource]
    /// claim name → lower-case header name
    public var claimsToHeaders: [ClaimHeader]
    public var forwardToken: Bool
}

public struct ClaimHeader: Sendable, Equatable {
    public var claim: String
    public var header: String
}

public enum FailureMode: String, Sendable { case deny, allow }

public struct ExternalAuthConfig: Sendable, Equatable {
    /// http://HOST:PORT/PATH (plain HTTP; the auth service runs in the pod or cluster).
    public var url: String
    public var address: ConfigAddress
    public var path: String
    public var timeout: Duration
    /// Lower-case header names copied from the auth service's 2xx answer to the upstream request.
    public var headersToUpstream: [String]
    public var failureMode: FailureMode
    public var cacheTTL: Duration
}

public struct AuthFilterConfig: Sendable, Equatable {
    public var realm: String
    public var allowAnonymous: [AnonymousRule]
    public var apiKey: APIKeyConfig?
    public var basic: BasicAuthConfig?
    public var jwt: JWTConfig?
    public var external: ExternalAuthConfig?
    public var oidc: OIDCConfig?

    public init(realm: String, allowAnonymous: [AnonymousRule], apiKey: APIKeyConfig?, basic: BasicAuthConfig?,
                jwt: JWTConfig?, external: ExternalAuthConfig?, oidc: OIDCConfig? = nil) {
        self.realm = realm
        self.allowAnonymous = allowAnonymous
        self.apiKey = apiKey
        self.basic = basic
        self.jwt = jwt
        self.external = external
        self.oidc = oidc
    }
}

/// How the proxy authenticates itself at the provider's token endpoint (RFC 6749 §2.3.1).
public enum TokenEndpointAuth: String, Sendable { case basic, post }

/// `auth.oidc`: the auth-container's login flow (authorization code + PKCE), oauth2-proxy style.
public struct OIDCConfig: Sendable, Equatable {
    /// `https://…`, or `http://` on a loopback address (tests). No trailing slash.
    public var issuer: String
    public var clientID: String
    public var clientSecret: String
    /// How the secrets were written when they came from `${file:…}` / `${env:…}` (print-config
    /// shows that reference; a secret written literally is shown as `<redacted>`).
    public var clientSecretReference: String?
    public var cookieSecretReference: String?
    /// Absolute; its path is where the callback is served (normally `/oauth2/callback`).
    public var redirectURL: String
    /// The path of `redirectURL`.
    public var callbackPath: String
    /// 32 bytes (AES-256-GCM key of the session and CSRF cookies).
    public var cookieSecret: [UInt8]
    public var scopes: [String]
    public var cookieName: String
    public var cookieExpire: Duration
    /// 0 = refresh only when the tokens are about to expire.
    public var cookieRefresh: Duration
    public var passAccessToken: Bool
    public var setAuthorizationHeader: Bool
    public var emailClaim: String
    public var groupsClaim: String
    public var tokenEndpointAuth: TokenEndpointAuth
    /// Sign-out goes on to the provider's `end_session_endpoint`.
    public var endSession: Bool
    public var postLogoutRedirectURL: String?
    /// CA bundle the provider's certificate is verified against (nil: the system CAs).
    public var caFile: String?
    /// Audiences besides `client_id` that bearer tokens may carry.
    public var extraAudiences: [String]
    /// Token endpoint requests (code exchange, refresh).
    public var timeout: Duration
    /// Discovery document and JWKS re-fetched this often.
    public var discoveryRefresh: Duration

    public init(issuer: String, clientID: String, clientSecret: String, redirectURL: String, callbackPath: String,
                cookieSecret: [UInt8]) {
        self.issuer = issuer
        self.clientID = clientID
        self.clientSecret = clientSecret
        clientSecretReference = nil
        cookieSecretReference = nil
        self.redirectURL = redirectURL
        self.callbackPath = callbackPath
        self.cookieSecret = cookieSecret
        scopes = ["openid", "email", "profile"]
        cookieName = "_oauth2_proxy"
        cookieExpire = .seconds(168 * 3600)
        cookieRefresh = .zero
        passAccessToken = false
        setAuthorizationHeader = false
        emailClaim = "email"
        groupsClaim = "groups"
        tokenEndpointAuth = .basic
        endSession = false
        postLogoutRedirectURL = nil
        caFile = nil
        extraAudiences = []
        timeout = .seconds(5)
        discoveryRefresh = .seconds(300)
    }
}

public enum RateLimitKey: Sendable, Equatable {
    case clientIP
    case header(String)      // lower-case
    case identity
}

public struct RateLimitConfig: Sendable, Equatable {
    public var requestsPerSecond: Double
    public var burst: Int
    public var key: RateLimitKey
}

public struct HeaderOperation: Sendable, Equatable {
    public var name: String       // lower-case
    /// A template: literal text with `${variable}` parts (SPEC §6 variables only).
    public var value: String
    /// The value is a credential: it came through `${env:}`/`${file:}` (how Kubernetes Secrets
    /// arrive) or the header carries credentials (`authorization`, `cookie`…). Only rendering
    /// looks at this: print-config and /config show `<redacted>`.
    public var isSecret: Bool = false

    public init(name: String, value: String, isSecret: Bool = false) {
        self.name = name
        self.value = value
        self.isSecret = isSecret
    }
}

public struct HeaderOperations: Sendable, Equatable {
    public var set: [HeaderOperation]
    public var add: [HeaderOperation]
    public var remove: [String]   // lower-case
}

public struct HeadersFilterConfig: Sendable, Equatable {
    public var request: HeaderOperations
    public var response: HeaderOperations
}

/// Request-time variables a header template may use (SPEC §6); `jwt.claim.NAME` is a family.
public enum TemplateVariables {
    public static let names: Set<String> = ["client_ip", "client_port", "request_id", "host", "scheme", "method", "path", "identity"]
    public static let claimPrefix = "jwt.claim."
    public static func isKnown(_ name: String) -> Bool {
        names.contains(name) || (name.hasPrefix(claimPrefix) && name.count > claimPrefix.count)
    }
}
