// One connection's TLS as a byte transform: ciphertext in through a memory BIO, plaintext out,
// and back. It knows no socket; the connection that owns it moves the bytes.
import COpenSSL
import Glibc

public enum TLSHandshakeState: Equatable, Sendable { case inProgress, complete, failed }

public enum TLSReadResult: Equatable, Sendable {
    /// Plaintext bytes written into the destination.
    case bytes(Int)
    /// Feed more ciphertext (and send any pending ciphertext).
    case needMoreInput
    /// The peer sent close_notify.
    case closed
    /// Protocol error, bad record, verification failure…: `failureReason` says why.
    case failed
}

/// One connection's TLS. Not thread-safe: one loop owns it.
///
/// The owner's duties: feed every ciphertext byte read from the socket to `receiveCiphertext`,
/// and after every call of `advanceHandshake`, `readPlaintext`, `writePlaintext` and
/// `shutdown` send whatever `pendingCiphertextCount` says is waiting — reads produce
/// ciphertext too (TLS 1.3 key updates, the alert that reports a failure).
public final class TLSEngine {
    /// The SSL_set_ex_data slot holding the engine (unretained) for the client's new-session
    /// callback. 0 is OpenSSL's own "app data" slot, reserved in every process.
    static let engineExDataIndex: Int32 = 0
    /// A memory BIO keeps its peak allocation forever; once drained, one holding more than
    /// this is replaced by an empty one, so that a burst (a 1 MiB write, a 64 KiB socket read)
    /// does not stay allocated for the life of an idle keep-alive connection. Typical request
    /// and response heads stay under it and reuse their buffer; bigger transfers pay a BIO
    /// free/new per drain, small next to encrypting what filled it.
    static let retainedBufferLimit = 4 * 1024
    /// Whether `SSL_free_buffers` may be called on an idle connection: before 3.0.14, 3.1.6,
    /// 3.2.2 and 3.3.1 it could free a buffer holding a partial record (CVE-2024-4741).
    static let freeingIdleBuffersIsSafe: Bool = {
        let version = OpenSSL_version_num()
        let major = version >> 28, minor = (version >> 20) & 0xff, patch = (version >> 4) & 0xff
        switch (major, minor) {
        case (3, 0): return patch >= 14
        case (3, 1): return patch >= 6
        case (3, 2): return patch >= 2
        case (3, 3): return patch >= 1
        default: return major >= 3
        }
    }()

    /// nil once a TLS 1.3 server connection moved to `recordLayer`.
    private var ssl: OpaquePointer?
    private var readBIO: OpaquePointer
    private var writeBIO: OpaquePointer
    /// Server: what the hand-off to `recordLayer` needs (secrets, record counts), filled in by
    /// OpenSSL's callbacks during the handshake; freed at the hand-off.
    private var tracker: UnsafeMutablePointer<coutrider_tls13_tracker>?
    /// Server, TLS 1.3, after the handshake: the connection's records, without OpenSSL.
    private var recordLayer: TLS13RecordLayer?
    /// What the handshake agreed on, kept when the SSL object goes.
    private var handshakeSummary: HandshakeSummary?

    private struct HandshakeSummary {
        var alpn: String?
        var serverName: String?
        var peerIdentity: String?
        var sessionReused: Bool
    }
    /// Kept alive while the SSL uses their SSL_CTXs, callbacks and ALPN list.
    private let serverContext: TLSServerContext?
    let clientContext: TLSClientContext?
    /// Client: the name the session cache is keyed by (the server name as given).
    let sessionKey: String?
    /// Client: the name the certificate must carry, for the failure message.
    private let verifiedName: String?
    /// Client: a cached session was offered for resumption.
    private let offeredCachedSession: Bool

    /// Client contexts made for load generation keep buffers while idle.
    private var keepsBuffers: Bool { clientContext?.keepsBuffers ?? false }

    public private(set) var handshakeState: TLSHandshakeState = .inProgress
    /// Why the handshake or a read or write failed.
    public private(set) var failureReason: String?
    /// Sticky outcomes of reading, answered again by later reads.
    private var receivedCloseNotify = false
    private var readFailed = false

    public init(server context: TLSServerContext) throws(TLSError) {
        guard let ssl = SSL_new(context.defaultContext) else { throw TLSError("creating a TLS connection") }
        guard let (readBIO, writeBIO) = Self.attachMemoryBIOs(to: ssl) else {
            SSL_free(ssl)
            throw TLSError("creating the TLS connection's memory buffers")
        }
        SSL_set_accept_state(ssl)
        let tracker = UnsafeMutablePointer<coutrider_tls13_tracker>.allocate(capacity: 1)
        tracker.initialize(to: coutrider_tls13_tracker())
        coutrider_ssl_track_tls13_records(ssl, tracker)
        self.ssl = ssl
        self.readBIO = readBIO
        self.writeBIO = writeBIO
        self.tracker = tracker
        self.serverContext = context
        self.clientContext = nil
        self.sessionKey = nil
        self.verifiedName = nil
        self.offeredCachedSession = false
    }

    /// `serverName` is sent as SNI (unless it is an IP literal) and, when the context verifies,
    /// checked against the certificate's names or IP addresses.
    public init(client context: TLSClientContext, serverName: String) throws(TLSError) {
        guard let ssl = SSL_new(context.context) else { throw TLSError("creating a TLS connection") }
        do throws(TLSError) {
            try Self.configureClient(ssl, serverName: serverName, verifies: context.verifiesPeer)
        } catch {
            SSL_free(ssl)
            throw error
        }
        guard let (readBIO, writeBIO) = Self.attachMemoryBIOs(to: ssl) else {
            SSL_free(ssl)
            throw TLSError("creating the TLS connection's memory buffers")
        }
        var offeredCachedSession = false
        if let session = context.sessions.session(for: serverName) {
            // SSL_set_session takes its own reference.
            offeredCachedSession = SSL_set_session(ssl, session) == 1
            SSL_SESSION_free(session)
        }
        SSL_set_connect_state(ssl)
        self.ssl = ssl
        self.readBIO = readBIO
        self.writeBIO = writeBIO
        self.serverContext = nil
        self.clientContext = context
        self.sessionKey = serverName
        self.verifiedName = context.verifiesPeer ? serverName : nil
        self.offeredCachedSession = offeredCachedSession
        SSL_set_ex_data(ssl, Self.engineExDataIndex, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        // Frees both BIOs too.
        if let ssl { SSL_free(ssl) }
        freeTracker()
    }

    private func freeTracker() {
        guard let tracker else { return }
        OPENSSL_cleanse(tracker, MemoryLayout<coutrider_tls13_tracker>.size)
        tracker.deallocate()
        self.tracker = nil
    }

    // MARK: Leaving OpenSSL

    /// Server, TLS 1.3 with an AEAD suite of OpenSSL's defaults: frees the SSL object and
    /// protects the connection's records with `TLS13RecordLayer` from here on. Call once the
    /// owner has read what it needs of the handshake (`peerIdentity`, ALPN); the other
    /// properties answer from what was kept. Returns whether the connection moved; when
    /// OpenSSL holds part of a record it stays and a later call (`releaseIdleMemory`) tries
    /// again. TLS 1.2 connections stay with OpenSSL for good.
    @discardableResult
    public func leaveOpenSSLAfterHandshake() -> Bool {
        guard recordLayer == nil, let ssl, let tracker, handshakeState == .complete else { return false }
        guard SSL_version(ssl) == TLS1_3_VERSION, let cipher = SSL_get_current_cipher(ssl),
              let suite = TLS13CipherSuite(protocolID: SSL_CIPHER_get_protocol_id(cipher)) else {
            // Never leaves: stop counting records.
            SSL_set_msg_callback(ssl, nil)
            SSL_set_ex_data(ssl, 0, nil)
            freeTracker()
            return false
        }
        var counts = tracker.pointee
        defer { withUnsafeMutableBytes(of: &counts) { OPENSSL_cleanse($0.baseAddress, $0.count) } }
        guard !readFailed, !receivedCloseNotify, SSL_get_shutdown(ssl) == 0,
              counts.read_application == 1, counts.write_application == 1, counts.key_updated == 0,
              Int(counts.client_secret_length) == suite.hashLength, Int(counts.server_secret_length) == suite.hashLength,
              SSL_has_pending(ssl) == 0, SSL_get_wbio(ssl) == writeBIO else { return false }
        let layer = withUnsafeBytes(of: counts.client_secret) { client in
            withUnsafeBytes(of: counts.server_secret) { server in
                TLS13RecordLayer(suite: suite,
                                 readSecret: client.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                 readSequence: counts.read_records,
                                 writeSecret: server.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                 writeSequence: counts.write_records)
            }
        }
        guard let layer else { return false }
        // Ciphertext not yet read by OpenSSL, and its last records not yet sent, move over.
        guard moveBytes(from: readBIO, { layer.receiveCiphertext($0, $1) }),
              moveBytes(from: writeBIO, { layer.queueCiphertext($0, $1) }) else { return false }
        handshakeSummary = HandshakeSummary(alpn: negotiatedALPN, serverName: requestedServerName,
                                            peerIdentity: peerIdentity, sessionReused: sessionReused)
        SSL_free(ssl)
        self.ssl = nil
        freeTracker()
        recordLayer = layer
        return true
    }

    /// Reads every pending byte of a memory BIO into `sink` without emptying it when the sink
    /// refuses (out of memory).
    private func moveBytes(from bio: OpaquePointer, _ sink: (UnsafePointer<UInt8>, Int) -> Bool) -> Bool {
        let pending = Int(BIO_ctrl_pending(bio))
        guard pending > 0 else { return true }
        var data: UnsafeMutablePointer<CChar>? = nil
        let count = coutrider_bio_mem_data(bio, &data)
        guard Int(count) == pending, let data else { return false }
        return data.withMemoryRebound(to: UInt8.self, capacity: pending) { sink($0, pending) }
    }

    private static func configureClient(_ ssl: OpaquePointer, serverName: String, verifies: Bool) throws(TLSError) {
        let address = ipLiteral(serverName)
        if address == nil, !serverName.isEmpty {
            guard coutrider_ssl_set_tlsext_host_name(ssl, serverName) == 1 else {
                throw TLSError("server name \"\(serverName)\" refused for SNI")
            }
        }
        guard verifies else { return }
        if let address {
            guard let parameters = SSL_get0_param(ssl), X509_VERIFY_PARAM_set1_ip_asc(parameters, address) == 1 else {
                throw TLSError("IP address \(serverName) refused for verification")
            }
        } else {
            // Without a name there would be nothing to check the certificate against: any
            // certificate from a trusted CA would do. Refuse rather than verify half.
            guard !serverName.isEmpty else { throw TLSError("verifying a server needs its name") }
            SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
            guard SSL_set1_host(ssl, serverName) == 1 else {
                throw TLSError("server name \"\(serverName)\" refused for verification")
            }
        }
    }

    /// The address text when `name` is an IPv4 or IPv6 literal (brackets allowed), else nil.
    private static func ipLiteral(_ name: String) -> String? {
        var text = Substring(name)
        if text.hasPrefix("["), text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        let candidate = String(text)
        var address = in6_addr()
        if inet_pton(AF_INET, candidate, &address) == 1 || inet_pton(AF_INET6, candidate, &address) == 1 {
            return candidate
        }
        return nil
    }

    /// Two empty memory BIOs (read, write) owned by `ssl` from here on.
    private static func attachMemoryBIOs(to ssl: OpaquePointer) -> (OpaquePointer, OpaquePointer)? {
        guard let readBIO = BIO_new(BIO_s_mem()) else { return nil }
        guard let writeBIO = BIO_new(BIO_s_mem()) else {
            BIO_free(readBIO)
            return nil
        }
        SSL_set_bio(ssl, readBIO, writeBIO)
        return (readBIO, writeBIO)
    }

    // MARK: Bytes in, bytes out

    /// Ciphertext received from the socket. Copied; the caller's buffer is free afterwards.
    public func receiveCiphertext(_ bytes: UnsafePointer<UInt8>, _ count: Int) {
        if let recordLayer {
            recordLayer.receiveCiphertext(bytes, count)
            return
        }
        // After a failure nothing reads them; do not let a peer grow the buffer.
        guard handshakeState != .failed, !readFailed else { return }
        var offset = 0
        while offset < count {
            let chunk = Int32(clamping: count - offset)
            let written = BIO_write(readBIO, bytes + offset, chunk)
            // A memory BIO refuses only when malloc does: make it a read failure.
            guard written > 0 else {
                readFailed = true
                failureReason = "buffering received ciphertext failed (out of memory)"
                ERR_clear_error()
                return
            }
            offset += Int(written)
        }
    }

    /// Advances the handshake (call after receiving; a client calls it once first to produce
    /// its ClientHello). Once it answers `.complete`, call `readPlaintext` too: the peer's first
    /// application data may have come with its last handshake flight.
    public func advanceHandshake() -> TLSHandshakeState {
        guard handshakeState == .inProgress, let ssl else { return handshakeState }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            handshakeState = .complete
            return handshakeState
        }
        let error = SSL_get_error(ssl, result)
        if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE { return handshakeState }
        handshakeState = .failed
        failureReason = describeFailure(error, during: "handshake")
        if offeredCachedSession, let clientContext, let sessionKey {
            // The session offered may be why (e.g. the server's ticket keys changed).
            clientContext.sessions.remove(for: sessionKey)
        }
        return handshakeState
    }

    /// Decrypts into `destination` (up to `capacity`), as many records as fit. Before the
    /// handshake completed it advances the handshake first.
    public func readPlaintext(into destination: UnsafeMutablePointer<UInt8>, capacity: Int) -> TLSReadResult {
        switch handshakeState {
        case .failed: return .failed
        case .inProgress:
            switch advanceHandshake() {
            case .inProgress: return .needMoreInput
            case .failed: return .failed
            case .complete: break
            }
        case .complete: break
        }
        if let recordLayer {
            let result = recordLayer.readPlaintext(into: destination, capacity: capacity)
            if result == .failed { failureReason = recordLayer.failureReason }
            return result
        }
        guard let ssl else { return .failed }
        if readFailed { return .failed }
        if receivedCloseNotify { return .closed }
        ERR_clear_error()
        var total = 0
        while total < capacity {
            var count = 0
            if SSL_read_ex(ssl, destination + total, capacity - total, &count) == 1 {
                total += count
                continue
            }
            let error = SSL_get_error(ssl, 0)
            if error == SSL_ERROR_ZERO_RETURN {
                receivedCloseNotify = true
            } else if error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE {
                readFailed = true
                failureReason = describeFailure(error, during: "read")
            }
            break
        }
        releaseDrainedInputBuffer()
        if total < capacity, !receivedCloseNotify, !readFailed, !keepsBuffers, Self.freeingIdleBuffersIsSafe,
           BIO_ctrl_pending(readBIO) == 0 {
            // Waiting for input. SSL_MODE_RELEASE_BUFFERS frees the 16.5 KiB record buffer only
            // after application data; after a read that found nothing, or after post-handshake
            // messages (a TLS 1.3 client's session tickets), OpenSSL keeps it. Nothing is in it
            // (SSL_free_buffers refuses when something is), so give it back.
            _ = SSL_free_buffers(ssl)
        }
        if total > 0 { return .bytes(total) }
        if readFailed { return .failed }
        if receivedCloseNotify { return .closed }
        return .needMoreInput
    }

    /// Encrypts; returns how many plaintext bytes were taken: all of them, or -1 on failure
    /// (`failureReason`) or when the handshake has not completed.
    public func writePlaintext(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Int {
        guard handshakeState == .complete else { return -1 }
        guard count > 0 else { return 0 }
        if let recordLayer {
            guard recordLayer.writePlaintext(bytes, count) else {
                failureReason = recordLayer.failureReason
                return -1
            }
            return count
        }
        guard let ssl else { return -1 }
        ERR_clear_error()
        var written = 0
        // A memory BIO takes everything, so one call writes all (in records of 16 KiB).
        guard SSL_write_ex(ssl, bytes, count, &written) == 1 else {
            let error = SSL_get_error(ssl, 0)
            failureReason = describeFailure(error, during: "write")
            return -1
        }
        return written
    }

    /// Ciphertext waiting to go to the socket.
    public var pendingCiphertextCount: Int {
        if let recordLayer { return recordLayer.pendingCiphertextCount }
        return Int(BIO_ctrl_pending(writeBIO))
    }

    /// Moves up to `capacity` bytes of pending ciphertext into `destination`; returns the count.
    public func takeCiphertext(into destination: UnsafeMutablePointer<UInt8>, capacity: Int) -> Int {
        if let recordLayer { return recordLayer.takeCiphertext(into: destination, capacity: capacity) }
        guard capacity > 0, BIO_ctrl_pending(writeBIO) > 0 else { return 0 }
        let taken = BIO_read(writeBIO, destination, Int32(clamping: capacity))
        guard taken > 0 else { return 0 }
        if BIO_ctrl_pending(writeBIO) == 0 { releaseDrainedOutputBuffer() }
        return Int(taken)
    }

    /// Queues a close_notify (then take the ciphertext and send it). Nothing to do before the
    /// handshake completed or after a failure: the connection is simply closed then.
    public func shutdown() {
        if let recordLayer {
            recordLayer.shutdown()
            return
        }
        guard let ssl, handshakeState == .complete, !readFailed else { return }
        ERR_clear_error()
        // 0 = ours sent, the peer's not yet received; 1 = both. Either is fine: we do not wait.
        if SSL_shutdown(ssl) < 0 { ERR_clear_error() }
    }

    // MARK: Idle memory

    /// The connection went idle (a keep-alive gap): gives back the memory BIOs' buffers, of
    /// any size, and OpenSSL's record buffers. Not on every request: a fresh BIO is a malloc.
    public func releaseIdleMemory() {
        guard !keepsBuffers, handshakeState == .complete, !readFailed else { return }
        if recordLayer == nil { leaveOpenSSLAfterHandshake() }
        if let recordLayer {
            recordLayer.releaseIdleMemory()
            return
        }
        guard let ssl else { return }
        if BIO_ctrl_pending(readBIO) == 0, coutrider_bio_mem_capacity(readBIO) > 0, let fresh = BIO_new(BIO_s_mem()) {
            SSL_set0_rbio(ssl, fresh)
            readBIO = fresh
        }
        if BIO_ctrl_pending(writeBIO) == 0, coutrider_bio_mem_capacity(writeBIO) > 0, let fresh = BIO_new(BIO_s_mem()) {
            SSL_set0_wbio(ssl, fresh)
            writeBIO = fresh
        }
        if Self.freeingIdleBuffersIsSafe, BIO_ctrl_pending(readBIO) == 0 { _ = SSL_free_buffers(ssl) }
    }

    /// Replaces an empty read BIO whose buffer grew past `retainedBufferLimit`.
    private func releaseDrainedInputBuffer() {
        // Emptiness first: asking a memory BIO for its buffer first moves the unread bytes to
        // its front, which would cost a memmove per read while a large input is consumed.
        guard !keepsBuffers, let ssl, BIO_ctrl_pending(readBIO) == 0, coutrider_bio_mem_capacity(readBIO) > Self.retainedBufferLimit,
              let fresh = BIO_new(BIO_s_mem()) else { return }
        // SSL_set0_rbio frees the old BIO (the SSL owns it).
        SSL_set0_rbio(ssl, fresh)
        readBIO = fresh
    }

    /// Replaces an empty write BIO whose buffer grew past `retainedBufferLimit`. Only after the
    /// handshake: during it OpenSSL stacks a buffering BIO on the write BIO. Called when empty.
    private func releaseDrainedOutputBuffer() {
        guard !keepsBuffers, let ssl, handshakeState == .complete, coutrider_bio_mem_capacity(writeBIO) > Self.retainedBufferLimit,
              let fresh = BIO_new(BIO_s_mem()) else { return }
        SSL_set0_wbio(ssl, fresh)
        writeBIO = fresh
    }

    /// Bytes allocated behind both memory BIOs (tests watch it shrink after bursts).
    var bufferedCapacity: Int {
        if let recordLayer { return recordLayer.bufferedCapacity }
        return Int(coutrider_bio_mem_capacity(readBIO)) + Int(coutrider_bio_mem_capacity(writeBIO))
    }

    /// OpenSSL side, TLS 1.3: sends a KeyUpdate with the next write (tests drive a peer's key
    /// updates with it); with `requestingPeerUpdate` the peer must answer with its own.
    func scheduleKeyUpdate(requestingPeerUpdate: Bool) -> Bool {
        guard let ssl else { return false }
        return SSL_key_update(ssl, requestingPeerUpdate ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED) == 1
    }

    /// Whether the connection's records are protected without OpenSSL now (tests).
    var leftOpenSSL: Bool { recordLayer != nil }
    /// The record layer holds cipher contexts (tests watch them go while idle).
    var holdsCipherContexts: Bool { recordLayer?.holdsCipherContexts ?? (ssl != nil) }

    // MARK: What was negotiated

    /// The ALPN protocol agreed on ("http/1.1", "h2"); nil when none.
    public var negotiatedALPN: String? {
        guard let ssl else { return handshakeSummary?.alpn }
        var name: UnsafePointer<UInt8>? = nil
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &name, &length)
        guard let name, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: name, count: Int(length)), as: UTF8.self)
    }

    /// ALPN agreed on "h2" (checked without building a String: once per connection).
    public var negotiatedALPNIsH2: Bool {
        guard let ssl else { return handshakeSummary?.alpn == "h2" }
        var name: UnsafePointer<UInt8>? = nil
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &name, &length)
        guard let name, length == 2 else { return false }
        return name[0] == UInt8(ascii: "h") && name[1] == UInt8(ascii: "2")
    }

    /// "TLSv1.3", "TLSv1.2"; nil until the handshake completed.
    public var negotiatedVersion: String? {
        guard handshakeState == .complete else { return nil }
        // Only TLS 1.3 connections leave OpenSSL.
        guard let ssl else { return "TLSv1.3" }
        guard let version = SSL_get_version(ssl) else { return nil }
        return String(cString: version)
    }

    /// Server side: the SNI the client sent (client side: the SNI sent); nil without one.
    public var requestedServerName: String? {
        guard let ssl else { return handshakeSummary?.serverName }
        guard let name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) else { return nil }
        return String(cString: name)
    }

    /// The identity of the peer's verified certificate: its first URI SAN (SPIFFE ID), else its
    /// first DNS SAN, else its subject CN. nil without a certificate or without verification
    /// (server: no client CA; client: verify off). On the server that is the client
    /// certificate of mTLS.
    public var peerIdentity: String? {
        guard let ssl else { return handshakeSummary?.peerIdentity }
        guard handshakeState == .complete, SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER != 0,
              SSL_get_verify_result(ssl) == Int(X509_V_OK),
              let certificate = SSL_get0_peer_certificate(ssl) else { return nil }
        return CertificateNames.identity(of: certificate)
    }

    /// The subject CN of the certificate the peer sent, verified or not (tests look at which
    /// certificate SNI chose).
    var peerCertificateCommonName: String? {
        ssl.flatMap(SSL_get0_peer_certificate).flatMap(CertificateNames.commonName)
    }

    /// Whether the handshake resumed an earlier session (ticket) instead of a full exchange.
    public var sessionReused: Bool {
        guard let ssl else { return handshakeSummary?.sessionReused ?? false }
        return SSL_session_reused(ssl) == 1
    }

    // MARK: Failures

    /// OpenSSL's reasons (its error queue, drained) and, when the certificate check failed,
    /// the verification error.
    private func describeFailure(_ error: Int32, during operation: String) -> String {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            if let reason = ERR_reason_error_string(code) {
                reasons.append(String(cString: reason))
            } else {
                reasons.append(drainedErrorText(code))
            }
        }
        let verifyResult = ssl.map { SSL_get_verify_result($0) } ?? Int(X509_V_OK)
        if verifyResult != Int(X509_V_OK), let text = X509_verify_cert_error_string(verifyResult) {
            // OpenSSL's own entry says only "certificate verify failed"; say what failed.
            var verification = "certificate verify failed: \(String(cString: text))"
            if verifyResult == Int(X509_V_ERR_HOSTNAME_MISMATCH) || verifyResult == Int(X509_V_ERR_IP_ADDRESS_MISMATCH),
               let verifiedName {
                verification += " (expected \(verifiedName))"
            }
            if let index = reasons.firstIndex(of: "certificate verify failed") {
                reasons[index] = verification
            } else {
                reasons.append(verification)
            }
        }
        if reasons.isEmpty {
            switch error {
            case SSL_ERROR_SYSCALL: reasons.append("unexpected end of the ciphertext stream")
            default: reasons.append("OpenSSL error \(error)")
            }
        }
        return "TLS \(operation) failed: " + reasons.joined(separator: "; ")
    }

    private func drainedErrorText(_ code: UInt) -> String {
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &text, text.count)
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
