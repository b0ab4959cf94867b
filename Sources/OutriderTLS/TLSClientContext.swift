// The client side for a cluster: trust, verification, an optional client certificate, ALPN,
// and the last session per server name so that the next connection resumes it.
import COpenSSL
import Glibc

public final class TLSClientContext: @unchecked Sendable {
    /// SSL_CTX*; immutable after init.
    let context: OpaquePointer
    let verifiesPeer: Bool
    /// Connections keep their record and memory-BIO buffers while idle (a load generator,
    /// whose connections are never idle, trades that memory for no allocation per message).
    let keepsBuffers: Bool
    let sessions = SessionCache()

    /// - Parameters:
    ///   - caPath: PEM bundle of trusted CAs; nil = OpenSSL's default paths (the system bundle).
    ///   - verify: verify the server's chain and name (the name given to each `TLSEngine`).
    ///   - maximumVersion: caps the version offered (nil = the newest OpenSSL has); for tests
    ///     and for servers that mishandle TLS 1.3.
    public init(caPath: String?, verify: Bool, clientCertificateChainPath: String? = nil,
                clientPrivateKeyPath: String? = nil, alpn: [String] = ["http/1.1"],
                maximumVersion: TLSProtocolVersion? = nil, keepsBuffers: Bool = false) throws(TLSError) {
        let alpnWire = try alpnWireFormat(alpn)
        guard let context = SSL_CTX_new(TLS_client_method()) else {
            throw TLSError("creating a TLS client context")
        }
        do throws(TLSError) {
            try Self.configure(context, caPath: caPath, verify: verify, chainPath: clientCertificateChainPath,
                               keyPath: clientPrivateKeyPath, alpnWire: alpnWire, maximumVersion: maximumVersion,
                               keepsBuffers: keepsBuffers)
        } catch {
            SSL_CTX_free(context)
            throw error
        }
        self.context = context
        self.verifiesPeer = verify
        self.keepsBuffers = keepsBuffers
    }

    deinit {
        SSL_CTX_free(context)
    }

    private static func configure(_ context: OpaquePointer, caPath: String?, verify: Bool, chainPath: String?,
                                  keyPath: String?, alpnWire: [UInt8],
                                  maximumVersion: TLSProtocolVersion?, keepsBuffers: Bool) throws(TLSError) {
        guard coutrider_ssl_ctx_set_min_proto_version(context, TLS1_2_VERSION) == 1 else {
            throw TLSError("setting the minimum TLS version")
        }
        if let maximumVersion {
            guard coutrider_ssl_ctx_set_max_proto_version(context, maximumVersion.openSSLValue) == 1 else {
                throw TLSError("setting the maximum TLS version")
            }
        }
        SSL_CTX_set_options(context, coutrider_ssl_op_no_compression() | coutrider_ssl_op_no_renegotiation())
        if !keepsBuffers { coutrider_ssl_ctx_set_mode(context, Int(SSL_MODE_RELEASE_BUFFERS)) }
        // Sessions are handed to `storeNewSession` and kept in `SessionCache`, keyed by the
        // name the proxy connected to; OpenSSL's internal client cache is keyed by session id
        // and never looked up by clients anyway.
        coutrider_ssl_ctx_set_session_cache_mode(
            context, Int(SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE))
        SSL_CTX_sess_set_new_cb(context, storeNewSession)

        if let caPath {
            guard SSL_CTX_load_verify_locations(context, caPath, nil) == 1 else {
                throw TLSError("CA bundle \(caPath)")
            }
        } else if SSL_CTX_set_default_verify_paths(context) != 1 {
            throw TLSError("loading the system CA paths")
        }
        SSL_CTX_set_verify(context, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nil)

        switch (chainPath, keyPath) {
        case (nil, nil):
            break
        case (let chainPath?, let keyPath?):
            guard SSL_CTX_use_certificate_chain_file(context, chainPath) == 1 else {
                throw TLSError("client certificate chain \(chainPath)")
            }
            guard SSL_CTX_use_PrivateKey_file(context, keyPath, SSL_FILETYPE_PEM) == 1 else {
                throw TLSError("client private key \(keyPath) (for certificate chain \(chainPath))")
            }
            guard SSL_CTX_check_private_key(context) == 1 else {
                throw TLSError("client private key \(keyPath) does not match the certificate in \(chainPath)")
            }
        case (let chainPath?, nil):
            throw TLSError("client certificate chain \(chainPath) given without its private key")
        case (nil, let keyPath?):
            throw TLSError("client private key \(keyPath) given without its certificate chain")
        }

        // Unlike most of OpenSSL, 0 is success here.
        if !alpnWire.isEmpty, SSL_CTX_set_alpn_protos(context, alpnWire, UInt32(alpnWire.count)) != 0 {
            throw TLSError("setting the ALPN protocols")
        }
    }
}

/// The most recent resumable session per server name. Shared by every worker's connections
/// to a cluster, hence the lock; touched once per handshake and once per session ticket.
final class SessionCache: @unchecked Sendable {
    /// Enough for every endpoint of a cluster; beyond it an arbitrary entry makes room, so a
    /// cluster whose names keep changing cannot grow it without bound.
    static let maximumEntries = 1024

    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// SSL_SESSION*, one reference each owned by the cache.
    private var sessions: [String: OpaquePointer] = [:]

    init() {
        lock.initialize(to: pthread_mutex_t())
        pthread_mutex_init(lock, nil)
    }

    deinit {
        for session in sessions.values { SSL_SESSION_free(session) }
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    /// Takes over the caller's reference to `session`.
    func store(_ session: OpaquePointer, for serverName: String) {
        pthread_mutex_lock(lock)
        let replaced = sessions.updateValue(session, forKey: serverName)
        var evicted: OpaquePointer? = nil
        if replaced == nil, sessions.count > Self.maximumEntries,
           let victim = sessions.first(where: { $0.key != serverName }) {
            evicted = sessions.removeValue(forKey: victim.key)
        }
        pthread_mutex_unlock(lock)
        if let replaced { SSL_SESSION_free(replaced) }
        if let evicted { SSL_SESSION_free(evicted) }
    }

    /// A new reference to the cached session (the caller frees it), if one is still resumable.
    func session(for serverName: String) -> OpaquePointer? {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        guard let session = sessions[serverName] else { return nil }
        guard SSL_SESSION_is_resumable(session) == 1 else { return nil }
        SSL_SESSION_up_ref(session)
        return session
    }

    /// Forgets the session of a server name, e.g. after a handshake that offered it failed.
    func remove(for serverName: String) {
        pthread_mutex_lock(lock)
        let removed = sessions.removeValue(forKey: serverName)
        pthread_mutex_unlock(lock)
        if let removed { SSL_SESSION_free(removed) }
    }

    var count: Int {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return sessions.count
    }
}

/// SSL_CTX new-session callback (client): a session (TLS 1.2) or a ticket (TLS 1.3, possibly
/// several, after the handshake) arrived; keep it as the one to resume for this server name.
/// Returning 1 tells OpenSSL the callback kept the reference it was given.
private func storeNewSession(_ ssl: OpaquePointer?, _ session: OpaquePointer?) -> Int32 {
    guard let ssl, let session, let engineAddress = SSL_get_ex_data(ssl, TLSEngine.engineExDataIndex) else {
        return 0
    }
    let engine = Unmanaged<TLSEngine>.fromOpaque(engineAddress).takeUnretainedValue()
    guard let client = engine.clientContext, let key = engine.sessionKey else { return 0 }
    client.sessions.store(session, for: key)
    return 1
}
