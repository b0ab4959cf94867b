import COpenSSL
import Glibc
import OutriderFilters
import OutriderPosix

/// Keys from `jwks_uri`: fetched by a background thread (blocking sockets and libssl there,
/// never on an event loop), refreshed every `jwks_refresh`, and early — at most once per
/// `min_refresh` — when a token names a `kid` the set lacks (key rotation). A failed fetch
/// keeps the last good set.
final class JWKSFetcher: JWTKeySource, @unchecked Sendable {
    struct Location {
        var isHTTPS: Bool
        var host: String
        var port: UInt16
        var target: String

        init?(_ url: String) {
            var rest = Substring(url)
            if rest.hasPrefix("https://") { isHTTPS = true; rest = rest.dropFirst(8) }
            else if rest.hasPrefix("http://") { isHTTPS = false; rest = rest.dropFirst(7) }
            else { return nil }
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            let authority = rest[..<slash]
            target = slash == rest.endIndex ? "/" : String(rest[slash...])
            if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
                host = String(authority[authority.index(after: authority.startIndex)..<close])
                let after = authority[authority.index(after: close)...]
                port = after.hasPrefix(":") ? UInt16(after.dropFirst()) ?? 0 : (isHTTPS ? 443 : 80)
            } else if let colon = authority.lastIndex(of: ":") {
                host = String(authority[..<colon])
                port = UInt16(authority[authority.index(after: colon)...]) ?? 0
            } else {
                host = String(authority)
                port = isHTTPS ? 443 : 80
            }
            if host.isEmpty || port == 0 { return nil }
        }
    }

    let url: String
    private let location: Location
    private let makeVerifier: @Sendable (JSONWebKeySet) -> JWTVerifier
    private let refreshNanos: Int64
    private let minRefreshNanos: Int64
    private var lock = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private var verifier: JWTVerifier?
    private var currentGeneration: UInt64 = 0
    private var refreshWanted = false
    private var lastFetchAt: Int64 = 0
    private var stopping = false
    private var thread: OSThread?

    init?(url: String, refresh: Duration, minRefresh: Duration, makeVerifier: @escaping @Sendable (JSONWebKeySet) -> JWTVerifier) {
        guard let location = Location(url) else { return nil }
        self.url = url
        self.location = location
        self.makeVerifier = makeVerifier
        refreshNanos = refresh.nanoseconds
        minRefreshNanos = minRefresh.nanoseconds
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&wake, nil)
    }

    func start() {
        thread = try? OSThread.start(name: "outrider-jwks") { [self] in run() }
    }

    func stop() {
        pthread_mutex_lock(&lock)
        stopping = true
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&lock)
        thread?.join()
    }

    // MARK: JWTKeySource (called from the workers)

    var generation: UInt64 {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return currentGeneration
    }

    func currentVerifier() -> JWTVerifier? {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return verifier
    }

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
                verifier = fetched
                currentGeneration &+= 1
            }
            refreshWanted = false
            // Sleep until the next refresh (sooner after a failure), or an early refresh once
            // min_refresh has passed since this fetch.
            let interval = fetched == nil ? min(refreshNanos, 5_000_000_000) : refreshNanos
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

    private func fetch() -> JWTVerifier? {
        do {
            let body = try get()
            switch JSONWebKeySet.parse(body) {
            case .success(let keys) where !keys.keys.isEmpty:
                OperationalLog.info("jwks fetched", ["url": url, "keys": String(keys.keys.count)])
                return makeVerifier(keys)
            case .success:
                OperationalLog.error("jwks has no usable key; keeping the previous set", ["url": url])
            case .failure(let error):
                OperationalLog.error("jwks is not a key set; keeping the previous set", ["url": url, "error": "\(error)"])
            }
        } catch {
            OperationalLog.error("jwks fetch failed; keeping the previous set", ["url": url, "error": error.description])
        }
        return nil
    }

    struct FetchError: Error, CustomStringConvertible { var description: String }

    /// GET over a blocking connection (TLS with certificate and host-name verification for
    /// https), read to EOF, at most 1 MiB.
    private func get() throws(FetchError) -> [UInt8] {
        try Self.blockingGet(location, caPath: nil)
    }

    /// GET over a blocking connection (TLS with certificate and host-name verification against
    /// `caPath`, or the system CAs, for https), read to EOF, at most 1 MiB; the body of a 200.
    static func blockingGet(_ location: Location, caPath: String?) throws(FetchError) -> [UInt8] {
        let addresses: [SocketAddress]
        do { addresses = try SocketAddress.resolve(host: location.host, port: location.port) } catch {
            throw FetchError(description: error.description)
        }
        guard let address = addresses.first else { throw FetchError(description: "\(location.host): no address") }
        let fd: Int32
        do { fd = try Sys.connectBlocking(address, timeoutSeconds: 5) } catch { throw FetchError(description: error.description) }
        defer { Sys.close(fd) }
        let request = Array("GET \(location.target) HTTP/1.1\r\nhost: \(location.host)\r\naccept: application/json\r\nconnection: close\r\nuser-agent: outrider/\(OutriderVersion.current)\r\n\r\n".utf8)
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        if location.isHTTPS {
            guard let context = SSL_CTX_new(TLS_client_method()) else { throw FetchError(description: "SSL_CTX_new failed") }
            defer { SSL_CTX_free(context) }
            _ = coutrider_ssl_ctx_set_min_proto_version(context, TLS1_2_VERSION)
            SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
            let trusted = caPath.map { SSL_CTX_load_verify_locations(context, $0, nil) } ?? SSL_CTX_set_default_verify_paths(context)
            guard trusted == 1, let ssl = SSL_new(context) else {
                throw FetchError(description: "TLS setup failed")
            }
            defer { SSL_free(ssl) }
            _ = SSL_set_fd(ssl, fd)
            if SocketAddress.literal(host: location.host, port: location.port) == nil {
                _ = coutrider_ssl_set_tlsext_host_name(ssl, location.host)
                _ = SSL_set1_host(ssl, location.host)
            } else if let parameters = SSL_get0_param(ssl) {
                _ = X509_VERIFY_PARAM_set1_ip_asc(parameters, location.host)
            }
            guard SSL_connect(ssl) == 1 else {
                let verify = SSL_get_verify_result(ssl)
                ERR_clear_error()
                throw FetchError(description: "TLS handshake with \(location.host) failed (verify result \(verify))")
            }
            let written = request.withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32($0.count)) }
            guard written == Int32(request.count) else { ERR_clear_error(); throw FetchError(description: "TLS write failed") }
            while received.count < 1 << 20 {
                let count = chunk.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
                if count <= 0 { ERR_clear_error(); break }
                received.append(contentsOf: chunk[0..<Int(count)])
            }
        } else {
            _ = request.withUnsafeBytes { Sys.send(fd, $0.baseAddress!, $0.count) }
            while received.count < 1 << 20 {
                let count = chunk.withUnsafeMutableBytes { Sys.read(fd, $0.baseAddress!, $0.count) }
                if count <= 0 { break }
                received.append(contentsOf: chunk[0..<count])
            }
        }
        guard let response = parseHTTPResponse(received) else { throw FetchError(description: "not an HTTP response") }
        guard response.status == 200 else { throw FetchError(description: "HTTP status \(response.status)") }
        return response.body
    }
}
