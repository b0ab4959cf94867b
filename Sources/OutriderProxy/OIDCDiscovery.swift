import Glibc
import OutriderCore
import OutriderFilters
import OutriderPosix
import OutriderTLS

/// A thread the server starts and stops with the configuration that made it.
protocol BackgroundService: AnyObject {
    func start()
    func stop()
}

extension JWKSFetcher: BackgroundService {}

/// The OpenID provider of an `oidc` filter: its discovery document
/// (`ISSUER/.well-known/openid-configuration`) and its JWKS, fetched by a background thread
/// (blocking sockets there, never on an event loop) at start, every `discovery_refresh`, and
/// early — at most once per 10 s — when a token names a `kid` the set lacks. A failed fetch
/// keeps the last good metadata; until the first succeeds, logins answer 503.
final class OIDCDiscovery: OIDCProviderSource, BackgroundService, @unchecked Sendable {
    let issuer: String
    private let clientID: String
    private let audiences: [String]
    private let caFile: String?
    private let refreshNanos: Int64
    private let minRefreshNanos: Int64 = 10_000_000_000
    /// The token endpoint's TLS client context (https), made once.
    private var tlsContext: TLSClientContext?
    private var lock = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private var metadata: OIDCProviderMetadata?
    private var currentGeneration: UInt64 = 0
    private var refreshWanted = false
    private var lastFetchAt: Int64 = 0
    private var stopping = false
    private var thread: OSThread?

    /// Algorithms an ID token or bearer token may use: asymmetric only (the JWKS is public).
    static let algorithms: Set<JWSAlgorithm> = [.RS256, .RS384, .RS512, .PS256, .PS384, .PS512, .ES256, .ES384, .EdDSA]

    init(issuer: String, clientID: String, extraAudiences: [String], caFile: String?, refresh: Duration) {
        self.issuer = issuer
        self.clientID = clientID
        audiences = [clientID] + extraAudiences
        self.caFile = caFile
        refreshNanos = refresh.nanoseconds
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&wake, nil)
    }

    func start() {
        thread = try? OSThread.start(name: "outrider-oidc") { [self] in run() }
    }

    /// Not joined: a fetch may be blocked on a provider that does not answer (up to its
    /// timeouts); the thread ends by itself when it sees `stopping`, and shutdown does not wait.
    func stop() {
        pthread_mutex_lock(&lock)
        stopping = true
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&lock)
    }

    /// Takes the metadata of the running configuration's discovery of the same provider (same
    /// issuer, audiences and CA) on a reload, so that logins do not wait for a new fetch.
    func adopt(from previous: [BackgroundService]) {
        for case let other as OIDCDiscovery in previous
        where other.issuer == issuer && other.audiences == audiences && other.caFile == caFile {
            guard let known = other.currentMetadata() else { continue }
            pthread_mutex_lock(&lock)
            metadata = known
            currentGeneration = other.generation
            pthread_mutex_unlock(&lock)
            return
        }
    }

    // MARK: OIDCProviderSource (called from the workers)

    var generation: UInt64 {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return currentGeneration
    }

    func currentMetadata() -> OIDCProviderMetadata? {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return metadata
    }

    func currentVerifier() -> JWTVerifier? { currentMetadata()?.verifier }

    func unknownKeySeen() {
        pthread_mutex_lock(&lock)
        refreshWanted = true
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&lock)
    }

    // MARK: the fetch thread

    private func run() {
        while true {
            let fetched = fetch()
            pthread_mutex_lock(&lock)
            lastFetchAt = Sys.monotonicNanoseconds()
            if let fetched {
                metadata = fetched
                currentGeneration &+= 1
            }
            refreshWanted = false
            let interval = fetched == nil ? min(refreshNanos, 2_000_000_000) : refreshNanos
            while !stopping {
                let now = Sys.monotonicNanoseconds()
                let due = refreshWanted ? lastFetchAt + minRefreshNanos : lastFetchAt + interval
                if now >= due { break }
                Sys.conditionWait(&wake, &lock, nanoseconds: due - now)
            }
            let stop = stopping
            pthread_mutex_unlock(&lock)
            if stop { return }
        }
    }

    struct DiscoveryError: Error, CustomStringConvertible { var description: String }

    private func fetch() -> OIDCProviderMetadata? {
        do {
            let made = try discover()
            OperationalLog.info("oidc provider discovered", ["issuer": issuer, "keys": String(made.verifier.keys.keys.count)])
            return made
        } catch {
            OperationalLog.error("oidc discovery failed; keeping the previous provider metadata",
                                 ["issuer": issuer, "error": error.description])
            return nil
        }
    }

    private func discover() throws(DiscoveryError) -> OIDCProviderMetadata {
        guard let location = JWKSFetcher.Location(issuer + "/.well-known/openid-configuration") else {
            throw DiscoveryError(description: "invalid issuer URL")
        }
        let body: [UInt8]
        do { body = try JWKSFetcher.blockingGet(location, caPath: caFile) } catch {
            throw DiscoveryError(description: "discovery document: \(error.description)")
        }
        guard let document = JSONValue.parse(body), case .object = document else {
            throw DiscoveryError(description: "the discovery document is not a JSON object")
        }
        // OpenID Connect Discovery §4.3: the issuer in the document is exactly the one asked.
        guard let documentIssuer = document["issuer"]?.string,
              documentIssuer == issuer || documentIssuer == issuer + "/" else {
            throw DiscoveryError(description: "the discovery document names issuer \(document["issuer"]?.string ?? "(none)")")
        }
        let authorization = try endpoint(document, "authorization_endpoint", required: true)!
        let token = try endpoint(document, "token_endpoint", required: true)!
        let jwksURI = try endpoint(document, "jwks_uri", required: true)!
        let endSession = try endpoint(document, "end_session_endpoint", required: false)

        guard let jwksLocation = JWKSFetcher.Location(jwksURI) else { throw DiscoveryError(description: "invalid jwks_uri") }
        let keysBody: [UInt8]
        do { keysBody = try JWKSFetcher.blockingGet(jwksLocation, caPath: caFile) } catch {
            throw DiscoveryError(description: "jwks_uri \(jwksURI): \(error.description)")
        }
        let keys: JSONWebKeySet
        switch JSONWebKeySet.parse(keysBody) {
        case .success(let parsed) where !parsed.keys.isEmpty: keys = parsed
        case .success: throw DiscoveryError(description: "jwks_uri \(jwksURI) has no usable key")
        case .failure(let error): throw DiscoveryError(description: "jwks_uri \(jwksURI): \(error)")
        }

        guard let tokenLocation = JWKSFetcher.Location(token) else { throw DiscoveryError(description: "invalid token_endpoint") }
        let addresses: [SocketAddress]
        do { addresses = try SocketAddress.resolve(host: tokenLocation.host, port: tokenLocation.port) } catch {
            throw DiscoveryError(description: "token_endpoint host \(tokenLocation.host): \(error.description)")
        }
        guard let address = addresses.first else { throw DiscoveryError(description: "token_endpoint host has no address") }
        var tls: TLSClientContext?
        if tokenLocation.isHTTPS {
            if tlsContext == nil {
                do { tlsContext = try TLSClientContext(caPath: caFile, verify: true, alpn: ["http/1.1"]) } catch {
                    throw DiscoveryError(description: "TLS client context: \(error.description)")
                }
            }
            tls = tlsContext
        }
        let rest = token.dropFirst(tokenLocation.isHTTPS ? 8 : 7)
        let authority = String(rest[..<(rest.firstIndex(of: "/") ?? rest.endIndex)])
        let target = SubrequestTarget(host: tokenLocation.host, port: tokenLocation.port, useTLS: tokenLocation.isHTTPS,
                                      target: tokenLocation.target, authority: authority,
                                      connectHandle: ResolvedTarget(address: address, tls: tls))
        let verifier = JWTVerifier(keys: keys, algorithms: Self.algorithms, issuer: issuer, audiences: audiences,
                                   clockSkewSeconds: 30, maxTokenBytes: 32768, requiredClaims: ["sub", "exp"])
        return OIDCProviderMetadata(authorizationEndpoint: authorization, tokenEndpoint: target,
                                    endSessionEndpoint: endSession, verifier: verifier)
    }

    /// An endpoint URL of the document: https, or http when the issuer itself is http (loopback,
    /// for tests); no spaces or control characters (it becomes a Location header).
    private func endpoint(_ document: JSONValue, _ name: String, required: Bool) throws(DiscoveryError) -> String? {
        guard let value = document[name] else {
            if required { throw DiscoveryError(description: "the discovery document has no \(name)") }
            return nil
        }
        guard let url = value.string, url.utf8.count <= 2048,
              url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }), !url.contains("#") else {
            throw DiscoveryError(description: "\(name) is not a usable URL")
        }
        let secure = url.hasPrefix("https://")
        let host = JWKSFetcher.Location(url)?.host ?? ""
        let loopbackHTTP = url.hasPrefix("http://") && issuer.hasPrefix("http://")
            && ((host.hasPrefix("127.") && SocketAddress.literal(host: host, port: 1) != nil) || host == "::1")
        guard secure || loopbackHTTP, JWKSFetcher.Location(url) != nil else {
            throw DiscoveryError(description: "\(name) \(url) must be an https:// URL")
        }
        return url
    }
}
