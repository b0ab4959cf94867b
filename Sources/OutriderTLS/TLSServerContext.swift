// The server side of a listener: one SSL_CTX per certificate (the default and each SNI
// certificate), all configured alike, and the C callbacks that pick among them (SNI) and pick
// the application protocol (ALPN).
import COpenSSL
import Glibc

/// Server side of a listener: default certificate + optional SNI certificates, optional client
/// CA (mTLS: a client certificate is required and verified), minimum version, ALPN protocols in
/// server preference order. Immutable once built; shared by every worker's connections.
public final class TLSServerContext: @unchecked Sendable {
    /// SSL_CTX* that every connection starts with (the default certificate). It also holds
    /// the session ticket keys: OpenSSL encrypts and decrypts tickets with the context a
    /// connection started with, even after SNI switched it to another certificate's context.
    let defaultContext: OpaquePointer
    /// What the SNI and ALPN callbacks read (they get it as their `arg`); it owns the SNI
    /// certificates' contexts and the ALPN list, which must outlive every connection.
    private let callbackState: ServerCallbackState

    /// TLS 1.2 suites when TLS 1.2 is negotiated: forward secret AEADs only (Mozilla's
    /// "intermediate" list without DHE, which needs parameters). TLS 1.3 suites are OpenSSL's.
    static let tls12Ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
        + "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        + "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

    /// Throws a message naming the file and OpenSSL's reason (unreadable, not PEM, the key does
    /// not match the certificate, an empty client CA bundle, an ALPN name too long…).
    public init(certificateChainPath: String, privateKeyPath: String,
                sniCertificates: [(chainPath: String, keyPath: String)] = [],
                clientCAPath: String? = nil, minimumVersion: TLSProtocolVersion = .tls12,
                alpn: [String] = ["http/1.1"]) throws(TLSError) {
        let state = ServerCallbackState(alpnWire: try alpnWireFormat(alpn))
        let settings = ServerSettings(clientCAPath: clientCAPath, minimumVersion: minimumVersion,
                                      callbackArgument: Unmanaged.passUnretained(state).toOpaque(),
                                      offersALPN: !alpn.isEmpty)
        let defaultContext = try settings.makeContext(chainPath: certificateChainPath, keyPath: privateKeyPath)
        do throws(TLSError) {
            // On a failure, `state` frees the SNI contexts made so far.
            for certificate in sniCertificates {
                let context = try settings.makeContext(chainPath: certificate.chainPath, keyPath: certificate.keyPath)
                let names = SSL_CTX_get0_certificate(context).map(CertificateNames.serverNames) ?? []
                guard !names.isEmpty else {
                    SSL_CTX_free(context)
                    throw TLSError("certificate chain \(certificate.chainPath): no DNS subject alternative name "
                                   + "or common name to match a server name against")
                }
                state.sniEntries.append(SNIEntry(context: context, names: names))
            }
        } catch {
            SSL_CTX_free(defaultContext)
            throw error
        }
        if !state.sniEntries.isEmpty {
            coutrider_ssl_ctx_set_tlsext_servername_callback(defaultContext, selectCertificateForServerName)
            coutrider_ssl_ctx_set_tlsext_servername_arg(defaultContext, settings.callbackArgument)
        }
        self.defaultContext = defaultContext
        self.callbackState = state
    }

    deinit {
        SSL_CTX_free(defaultContext)
    }
}

/// How every SSL_CTX of one server context is set up. The SNI contexts must match the default
/// one in everything but the certificate: after `SSL_set_SSL_CTX` OpenSSL verifies client
/// certificates against the new context's store, sends its client CA names and calls its ALPN
/// callback, while options, version limits and verify mode stay those copied at `SSL_new`.
private struct ServerSettings {
    let clientCAPath: String?
    let minimumVersion: TLSProtocolVersion
    let callbackArgument: UnsafeMutableRawPointer
    let offersALPN: Bool

    func makeContext(chainPath: String, keyPath: String) throws(TLSError) -> OpaquePointer {
        guard let context = SSL_CTX_new(TLS_server_method()) else {
            throw TLSError("creating a TLS server context")
        }
        do throws(TLSError) {
            try configure(context, chainPath: chainPath, keyPath: keyPath)
        } catch {
            SSL_CTX_free(context)
            throw error
        }
        return context
    }

    private func configure(_ context: OpaquePointer, chainPath: String, keyPath: String) throws(TLSError) {
        guard coutrider_ssl_ctx_set_min_proto_version(context, minimumVersion.openSSLValue) == 1 else {
            throw TLSError("setting the minimum TLS version")
        }
        SSL_CTX_set_options(context, coutrider_ssl_op_no_compression() | coutrider_ssl_op_no_renegotiation()
                                     | coutrider_ssl_op_cipher_server_preference())
        guard SSL_CTX_set_cipher_list(context, TLSServerContext.tls12Ciphers) == 1 else {
            throw TLSError("setting the TLS 1.2 cipher suites")
        }
        // Record buffers (~34 KiB) go back to the heap whenever a connection has nothing buffered.
        coutrider_ssl_ctx_set_mode(context, Int(SSL_MODE_RELEASE_BUFFERS))
        // Resumption by tickets only: they are stateless, so no server-side session cache to
        // grow (OpenSSL's would hold up to 20,480 sessions per context).
        coutrider_ssl_ctx_set_session_cache_mode(context, Int(SSL_SESS_CACHE_OFF))
        // Without a session id context OpenSSL refuses to resume sessions when it verifies
        // client certificates; one value for all contexts since the ticket keys are shared.
        let sessionIDContext = Array("outrider".utf8)
        // TLS 1.3 connections leave OpenSSL after the handshake (TLS13RecordLayer), which needs
        // their application traffic secrets.
        coutrider_ssl_ctx_capture_tls13_secrets(context)
        _ = SSL_CTX_set_session_id_context(context, sessionIDContext, UInt32(sessionIDContext.count))

        guard SSL_CTX_use_certificate_chain_file(context, chainPath) == 1 else {
            throw TLSError("certificate chain \(chainPath)")
        }
        guard SSL_CTX_use_PrivateKey_file(context, keyPath, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError("private key \(keyPath) (for certificate chain \(chainPath))")
        }
        // A key of another type than the certificate's loads without complaint; this catches it.
        guard SSL_CTX_check_private_key(context) == 1 else {
            throw TLSError("private key \(keyPath) does not match the certificate in \(chainPath)")
        }

        if let clientCAPath {
            guard SSL_CTX_load_verify_locations(context, clientCAPath, nil) == 1 else {
                throw TLSError("client CA \(clientCAPath)")
            }
            // The names sent in CertificateRequest, so clients pick a fitting certificate.
            guard let caNames = SSL_load_client_CA_file(clientCAPath) else {
                throw TLSError("client CA \(clientCAPath): no certificate names")
            }
            SSL_CTX_set_client_CA_list(context, caNames)
            SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }
        if offersALPN {
            SSL_CTX_set_alpn_select_cb(context, selectApplicationProtocol, callbackArgument)
        }
    }
}

struct SNIEntry {
    let context: OpaquePointer
    /// Lowercased; "*.example.com" kept as its suffix ".example.com" in `wildcardSuffixes`.
    let exactNames: [[UInt8]]
    let wildcardSuffixes: [[UInt8]]

    init(context: OpaquePointer, names: [String]) {
        self.context = context
        var exact: [[UInt8]] = []
        var wildcards: [[UInt8]] = []
        for name in names {
            var bytes = Array(name.utf8).map(asciiLowercase)
            if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }
            if bytes.count > 2, bytes[0] == UInt8(ascii: "*"), bytes[1] == UInt8(ascii: ".") {
                wildcards.append(Array(bytes.dropFirst()))
            } else if !bytes.isEmpty {
                exact.append(bytes)
            }
        }
        exactNames = exact
        wildcardSuffixes = wildcards
    }
}

final class ServerCallbackState {
    /// ALPN protocols in the wire format, server preference first. The ALPN callback hands
    /// OpenSSL a pointer into it, so it lives (allocated once, never moved) as long as the
    /// context.
    let alpnWire: UnsafeBufferPointer<UInt8>
    private let alpnStorage: UnsafeMutablePointer<UInt8>
    var sniEntries: [SNIEntry] = []

    init(alpnWire wire: [UInt8]) {
        alpnStorage = UnsafeMutablePointer<UInt8>.allocate(capacity: max(wire.count, 1))
        alpnStorage.initialize(from: wire, count: wire.count)
        alpnWire = UnsafeBufferPointer(start: alpnStorage, count: wire.count)
    }

    deinit {
        for entry in sniEntries { SSL_CTX_free(entry.context) }
        alpnStorage.deallocate()
    }

    /// The SNI certificate's context for a server name: an exact name of any certificate
    /// first, then a wildcard (which covers exactly one leftmost label); nil = the default.
    func context(forServerName name: UnsafeRawBufferPointer) -> OpaquePointer? {
        var name = name
        if name.last == UInt8(ascii: ".") { name = UnsafeRawBufferPointer(rebasing: name.dropLast()) }
        for entry in sniEntries {
            for candidate in entry.exactNames where equalIgnoringASCIICase(candidate, name) { return entry.context }
        }
        // The label the wildcard stands for: non-empty, without a dot.
        guard let firstDot = name.firstIndex(of: UInt8(ascii: ".")), firstDot > 0 else { return nil }
        let suffix = UnsafeRawBufferPointer(rebasing: name[firstDot...])
        for entry in sniEntries {
            for candidate in entry.wildcardSuffixes where equalIgnoringASCIICase(candidate, suffix) {
                return entry.context
            }
        }
        return nil
    }
}

private func asciiLowercase(_ byte: UInt8) -> UInt8 {
    byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
}

private func equalIgnoringASCIICase(_ lowercased: [UInt8], _ other: UnsafeRawBufferPointer) -> Bool {
    guard lowercased.count == other.count else { return false }
    for index in 0..<other.count where asciiLowercase(other[index]) != lowercased[index] { return false }
    return true
}

/// SSL_CTX servername callback: switch the connection to the context of the certificate that
/// answers to the client's SNI. Unknown or absent names keep the default certificate.
private func selectCertificateForServerName(_ ssl: OpaquePointer?, _ alert: UnsafeMutablePointer<Int32>?,
                                            _ argument: UnsafeMutableRawPointer?) -> Int32 {
    guard let ssl, let argument,
          let serverName = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) else { return SSL_TLSEXT_ERR_OK }
    let state = Unmanaged<ServerCallbackState>.fromOpaque(argument).takeUnretainedValue()
    let name = UnsafeRawBufferPointer(start: serverName, count: strlen(serverName))
    if let context = state.context(forServerName: name), SSL_set_SSL_CTX(ssl, context) == nil {
        alert?.pointee = SSL_AD_INTERNAL_ERROR
        return SSL_TLSEXT_ERR_ALERT_FATAL
    }
    return SSL_TLSEXT_ERR_OK
}

/// SSL_CTX ALPN callback: the first of the server's protocols that the client offers. No
/// overlap is a fatal no_application_protocol alert (RFC 7301 §3.2): answering an "h2"-only
/// client with HTTP/1.1 would not work either. Clients that offer no ALPN never get here.
private func selectApplicationProtocol(
    _ ssl: OpaquePointer?, _ selected: UnsafeMutablePointer<UnsafePointer<UInt8>?>?,
    _ selectedLength: UnsafeMutablePointer<UInt8>?, _ offered: UnsafePointer<UInt8>?, _ offeredLength: UInt32,
    _ argument: UnsafeMutableRawPointer?
) -> Int32 {
    guard let argument, let selected, let selectedLength, let offered else { return SSL_TLSEXT_ERR_ALERT_FATAL }
    let state = Unmanaged<ServerCallbackState>.fromOpaque(argument).takeUnretainedValue()
    let server = state.alpnWire
    let client = UnsafeBufferPointer(start: offered, count: Int(offeredLength))
    var serverIndex = 0
    while serverIndex < server.count {
        let serverLength = Int(server[serverIndex])
        let serverName = serverIndex + 1
        var clientIndex = 0
        while clientIndex < client.count {
            let clientLength = Int(client[clientIndex])
            let clientName = clientIndex + 1
            guard clientName + clientLength <= client.count else { break }
            if clientLength == serverLength,
               memcmp(server.baseAddress! + serverName, offered + clientName, serverLength) == 0 {
                selected.pointee = UnsafePointer(server.baseAddress! + serverName)
                selectedLength.pointee = UInt8(serverLength)
                return SSL_TLSEXT_ERR_OK
            }
            clientIndex = clientName + clientLength
        }
        serverIndex = serverName + serverLength
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL
}
