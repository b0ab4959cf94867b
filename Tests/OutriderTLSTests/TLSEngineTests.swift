import COpenSSL
import Testing
@testable import OutriderTLS

private var pki: TestPKI { TestPKI.shared }

private func localhostServer(alpn: [String] = ["http/1.1"], clientCA: String? = nil,
                             minimumVersion: TLSProtocolVersion = .tls12) throws -> TLSServerContext {
    try TLSServerContext(certificateChainPath: pki.serverChain, privateKeyPath: pki.serverKey,
                         clientCAPath: clientCA, minimumVersion: minimumVersion, alpn: alpn)
}

private func trustingClient(alpn: [String] = ["http/1.1"], maximumVersion: TLSProtocolVersion? = nil,
                            certificate: (chain: String, key: String)? = nil) throws -> TLSClientContext {
    try TLSClientContext(caPath: pki.caCertificate, verify: true, clientCertificateChainPath: certificate?.chain,
                         clientPrivateKeyPath: certificate?.key, alpn: alpn, maximumVersion: maximumVersion)
}

/// A completed handshake between fresh engines.
private func connected(_ clientContext: TLSClientContext, _ serverContext: TLSServerContext,
                       serverName: String = "localhost") throws -> (client: TLSEngine, server: TLSEngine) {
    let client = try TLSEngine(client: clientContext, serverName: serverName)
    let server = try TLSEngine(server: serverContext)
    let states = handshake(client: client, server: server)
    try #require(states.client == .complete, "client: \(client.failureReason ?? "")")
    try #require(states.server == .complete, "server: \(server.failureReason ?? "")")
    return (client, server)
}

@Suite struct HandshakeTests {
    @Test func completesWithTLS13ByDefault() throws {
        let (client, server) = try connected(try trustingClient(), try localhostServer())
        #expect(client.negotiatedVersion == "TLSv1.3")
        #expect(server.negotiatedVersion == "TLSv1.3")
        #expect(client.negotiatedALPN == "http/1.1")
        #expect(server.negotiatedALPN == "http/1.1")
        #expect(server.requestedServerName == "localhost")
        #expect(client.peerIdentity == "localhost")
        // No client CA: no client certificate asked for, so no identity.
        #expect(server.peerIdentity == nil)
        #expect(!client.sessionReused)
        #expect(client.failureReason == nil && server.failureReason == nil)
    }

    @Test func completesWithTLS12WhenTheClientCapsIt() throws {
        let (client, server) = try connected(try trustingClient(maximumVersion: .tls12), try localhostServer())
        #expect(client.negotiatedVersion == "TLSv1.2")
        #expect(server.negotiatedVersion == "TLSv1.2")
        #expect(server.negotiatedALPN == "http/1.1")
        #expect(text(send(Array("over 1.2".utf8), from: client, to: server)) == "over 1.2")
    }

    @Test func serverMinimumTLS13RefusesTLS12Client() throws {
        let client = try TLSEngine(client: try trustingClient(maximumVersion: .tls12), serverName: "localhost")
        let server = try TLSEngine(server: try localhostServer(minimumVersion: .tls13))
        let states = handshake(client: client, server: server)
        #expect(states.server == .failed)
        #expect(states.client == .failed)
        #expect(server.failureReason?.contains("unsupported protocol") == true, "\(server.failureReason ?? "")")
        #expect(drainOpenSSLErrors().isEmpty)
    }

    @Test func handshakeFedOneByteAtATime() throws {
        let client = try TLSEngine(client: try trustingClient(), serverName: "localhost")
        let server = try TLSEngine(server: try localhostServer())
        let states = handshake(client: client, server: server, chunk: 1)
        #expect(states.client == .complete)
        #expect(states.server == .complete)
        let message = Array("byte by byte, both ways".utf8)
        #expect(send(message, from: client, to: server, pieceSize: 5, chunk: 1) == message)
        #expect(send(message, from: server, to: client, pieceSize: 3, chunk: 1) == message)
    }

    @Test func writeBeforeTheHandshakeIsRefused() throws {
        let client = try TLSEngine(client: try trustingClient(), serverName: "localhost")
        #expect(write("too early", from: client) == -1)
        #expect(client.negotiatedVersion == nil)
        var buffer = [UInt8](repeating: 0, count: 16)
        // Reading before completion drives the handshake: the ClientHello is produced.
        let result = buffer.withUnsafeMutableBufferPointer { client.readPlaintext(into: $0.baseAddress!, capacity: 16) }
        #expect(result == .needMoreInput)
        #expect(client.pendingCiphertextCount > 0)
        // Nothing to close before the handshake: no close_notify is queued.
        let pending = client.pendingCiphertextCount
        client.shutdown()
        #expect(client.pendingCiphertextCount == pending)
    }
}

@Suite struct ALPNTests {
    private func negotiated(server: [String], client: [String]) throws -> (String?, String?) {
        let (clientEngine, serverEngine) = try connected(try trustingClient(alpn: client), try localhostServer(alpn: server))
        return (clientEngine.negotiatedALPN, serverEngine.negotiatedALPN)
    }

    @Test func serverPreferenceWins() throws {
        let both = try negotiated(server: ["h2", "http/1.1"], client: ["http/1.1", "h2"])
        #expect(both.0 == "h2" && both.1 == "h2")
        let http1 = try negotiated(server: ["http/1.1"], client: ["h2", "http/1.1"])
        #expect(http1.0 == "http/1.1" && http1.1 == "http/1.1")
        let http1First = try negotiated(server: ["http/1.1", "h2"], client: ["h2", "http/1.1"])
        #expect(http1First.0 == "http/1.1")
    }

    @Test func clientWithoutALPNGetsNone() throws {
        let both = try negotiated(server: ["h2", "http/1.1"], client: [])
        #expect(both.0 == nil && both.1 == nil)
    }

    @Test func serverWithoutALPNIgnoresTheOffer() throws {
        let both = try negotiated(server: [], client: ["h2", "http/1.1"])
        #expect(both.0 == nil && both.1 == nil)
    }

    @Test func noOverlapIsFatal() throws {
        let client = try TLSEngine(client: try trustingClient(alpn: ["h2"]), serverName: "localhost")
        let server = try TLSEngine(server: try localhostServer(alpn: ["http/1.1"]))
        let states = handshake(client: client, server: server)
        #expect(states.server == .failed)
        #expect(states.client == .failed)
        #expect(server.failureReason?.contains("no application protocol") == true, "\(server.failureReason ?? "")")
        #expect(client.failureReason?.contains("no application protocol") == true, "\(client.failureReason ?? "")")
    }
}

@Suite struct SNITests {
    private func sniServer(clientCA: String? = nil) throws -> TLSServerContext {
        try TLSServerContext(certificateChainPath: pki.serverChain, privateKeyPath: pki.serverKey,
                             sniCertificates: [(pki.otherChain, pki.otherKey), (pki.wildcardChain, pki.wildcardKey),
                                               (pki.commonNameOnlyChain, pki.commonNameOnlyKey)],
                             clientCAPath: clientCA, alpn: ["h2", "http/1.1"])
    }

    @Test(arguments: [
        ("other.test", "other.test"), ("OTHER.Test", "other.test"), ("a.wild.test", "wildcard"),
        ("cn-only.test", "cn-only.test"), ("localhost", "localhost"),
    ])
    func selectsTheCertificateForTheName(serverName: String, commonName: String) throws {
        let (client, server) = try connected(try trustingClient(), try sniServer(), serverName: serverName)
        #expect(client.peerCertificateCommonName == commonName)
        #expect(server.requestedServerName?.lowercased() == serverName.lowercased())
        // The SNI certificate's context answers ALPN too.
        #expect(server.negotiatedALPN == "http/1.1")
    }

    @Test(arguments: ["unknown.test", "a.b.wild.test", "wild.test"])
    func unknownNamesGetTheDefaultCertificate(serverName: String) throws {
        let client = try TLSEngine(client: try TLSClientContext(caPath: nil, verify: false), serverName: serverName)
        let server = try TLSEngine(server: try sniServer())
        let states = handshake(client: client, server: server)
        #expect(states.client == .complete && states.server == .complete)
        #expect(client.peerCertificateCommonName == "localhost")
    }

    @Test func noServerNameGetsTheDefaultCertificate() throws {
        // An IP literal is not sent as SNI.
        let (client, server) = try connected(try trustingClient(), try sniServer(), serverName: "127.0.0.1")
        #expect(server.requestedServerName == nil)
        #expect(client.peerCertificateCommonName == "localhost")
    }

    @Test func clientCertificatesAreVerifiedAfterSwitchingCertificate() throws {
        let withCertificate = try trustingClient(certificate: (pki.clientChain, pki.clientKey))
        let (client, server) = try connected(withCertificate, try sniServer(clientCA: pki.caCertificate),
                                             serverName: "other.test")
        #expect(client.peerCertificateCommonName == "other.test")
        #expect(server.peerIdentity == "spiffe://test/client")

        let untrusted = try trustingClient(certificate: (pki.selfSignedChain, pki.selfSignedKey))
        let rejected = try TLSEngine(client: untrusted, serverName: "other.test")
        let rejecting = try TLSEngine(server: try sniServer(clientCA: pki.caCertificate))
        #expect(handshake(client: rejected, server: rejecting).server == .failed)
    }
}

@Suite struct DataTests {
    @Test func oneMebibyteEachWayInPieces() throws {
        let (client, server) = try connected(try trustingClient(), try localhostServer())
        var payload = [UInt8](repeating: 0, count: 1 << 20)
        for index in payload.indices { payload[index] = UInt8(truncatingIfNeeded: index &* 31 &+ index >> 9) }
        #expect(send(payload, from: client, to: server, pieceSize: 10_000) == payload)
        #expect(send(payload, from: server, to: client, pieceSize: 65_536, chunk: 1_500) == payload)
        // Odd sizes that straddle records.
        #expect(send(payload, from: client, to: server, pieceSize: 16_385, chunk: 7) .count == payload.count)
    }

    @Test func oneWriteOfAMebibyteAndSmallReads() throws {
        let (client, server) = try connected(try trustingClient(), try localhostServer())
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 * 7) }
        #expect(payload.withUnsafeBufferPointer { client.writePlaintext($0.baseAddress!, $0.count) } == payload.count)
        transfer(from: client, to: server, chunk: 100_000)
        let (received, end) = readAll(server, bufferSize: 1_000)
        #expect(received == payload)
        #expect(end == .needMoreInput)
    }

    @Test func buffersShrinkAfterABurst() throws {
        let (client, server) = try connected(try trustingClient(), try localhostServer())
        let payload = [UInt8](repeating: 0x5a, count: 1 << 20)
        _ = payload.withUnsafeBufferPointer { client.writePlaintext($0.baseAddress!, $0.count) }
        // Fed to the server in one piece: both BIOs grew past a megabyte.
        transfer(from: client, to: server, chunk: 2 << 20)
        #expect(readAll(server, bufferSize: 1 << 16).bytes.count == payload.count)
        #expect(client.bufferedCapacity <= 2 * TLSEngine.retainedBufferLimit)
        #expect(server.bufferedCapacity <= 2 * TLSEngine.retainedBufferLimit)
        // Still usable afterwards.
        #expect(text(send(Array("after".utf8), from: server, to: client)) == "after")
        #expect(text(send(Array("again".utf8), from: client, to: server)) == "again")
    }

    @Test func readsFillTheDestinationAcrossRecords() throws {
        let (client, server) = try connected(try trustingClient(), try localhostServer())
        for word in ["one ", "two ", "three"] { #expect(write(word, from: client) == word.utf8.count) }
        transfer(from: client, to: server)
        var buffer = [UInt8](repeating: 0, count: 64)
        let result = buffer.withUnsafeMutableBufferPointer { server.readPlaintext(into: $0.baseAddress!, capacity: 64) }
        #expect(result == .bytes(13))
        #expect(text(Array(buffer[0..<13])) == "one two three")
    }

    @Test func recordsSplitAtEveryIndex() throws {
        let clientContext = try trustingClient()
        let serverContext = try localhostServer()
        let pieces = ["first record: ", "hello, world! " + String(repeating: "x", count: 50)]
        var split = 0
        var recordsLength = Int.max
        // A connection per split point (records are bound to their connection's keys).
        while split <= recordsLength {
            let (client, server) = try connected(clientContext, serverContext)
            // Take the TLS 1.3 tickets first, so that only the two records below are in flight.
            #expect(readAll(client).end == .needMoreInput)
            for piece in pieces { #expect(write(piece, from: server) == piece.utf8.count) }
            var records = [UInt8](repeating: 0, count: server.pendingCiphertextCount)
            recordsLength = records.count
            _ = records.withUnsafeMutableBufferPointer { server.takeCiphertext(into: $0.baseAddress!, capacity: $0.count) }
            records.withUnsafeBufferPointer { client.receiveCiphertext($0.baseAddress!, split) }
            let (head, headEnd) = readAll(client, bufferSize: 7)
            #expect(headEnd == .needMoreInput)
            records.withUnsafeBufferPointer { client.receiveCiphertext($0.baseAddress! + split, $0.count - split) }
            let (tail, tailEnd) = readAll(client, bufferSize: 7)
            #expect(tailEnd == .needMoreInput)
            #expect(text(head + tail) == pieces.joined(), "split at \(split)")
            split += 1
        }
        #expect(split > 100)
    }

    @Test func clientHelloSplitAtEveryIndex() throws {
        let clientContext = try TLSClientContext(caPath: pki.caCertificate, verify: true)
        let serverContext = try localhostServer()
        let probe = try TLSEngine(client: clientContext, serverName: "localhost")
        _ = probe.advanceHandshake()
        let helloLength = probe.pendingCiphertextCount
        for split in stride(from: 1, to: helloLength, by: 1) {
            let client = try TLSEngine(client: clientContext, serverName: "localhost")
            let server = try TLSEngine(server: serverContext)
            _ = client.advanceHandshake()
            var hello = [UInt8](repeating: 0, count: client.pendingCiphertextCount)
            _ = hello.withUnsafeMutableBufferPointer { client.takeCiphertext(into: $0.baseAddress!, capacity: $0.count) }
            hello.withUnsafeBufferPointer { server.receiveCiphertext($0.baseAddress!, split) }
            #expect(server.advanceHandshake() == .inProgress)
            #expect(server.pendingCiphertextCount == 0, "split at \(split)")
            hello.withUnsafeBufferPointer { server.receiveCiphertext($0.baseAddress! + split, $0.count - split) }
            #expect(server.advanceHandshake() == .inProgress)
            #expect(server.pendingCiphertextCount > 0, "split at \(split)")
        }
    }

    @Test func closeNotifyEndsTheStream() throws {
        let (client, server) = try connected(try trustingClient(), try localhostServer())
        #expect(write("last words", from: client) == 10)
        client.shutdown()
        transfer(from: client, to: server)
        let (received, end) = readAll(server)
        #expect(text(received) == "last words")
        #expect(end == .closed)
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(buffer.withUnsafeMutableBufferPointer { server.readPlaintext(into: $0.baseAddress!, capacity: 8) } == .closed)
        // The server answers with its own close_notify.
        server.shutdown()
        #expect(server.pendingCiphertextCount > 0)
        transfer(from: server, to: client)
        #expect(readAll(client).end == .closed)
        #expect(write("too late", from: client) == -1)
    }
}

@Suite struct MutualTLSTests {
    private let server = { try! localhostServer(clientCA: TestPKI.shared.caCertificate) }()

    @Test func clientCertificateIsRequired() throws {
        let client = try TLSEngine(client: try trustingClient(), serverName: "localhost")
        let serverEngine = try TLSEngine(server: server)
        let states = handshake(client: client, server: serverEngine)
        #expect(states.server == .failed)
        #expect(serverEngine.failureReason?.contains("peer did not return a certificate") == true,
                "\(serverEngine.failureReason ?? "")")
        // TLS 1.3: the client finishes first and learns of the refusal from the alert.
        if states.client == .complete {
            #expect(readAll(client).end == .failed)
        }
        #expect(client.failureReason?.contains("certificate required") == true, "\(client.failureReason ?? "")")
        #expect(serverEngine.peerIdentity == nil)
        #expect(drainOpenSSLErrors().isEmpty)
    }

    @Test func clientCertificateIsRequiredOverTLS12() throws {
        let client = try TLSEngine(client: try trustingClient(maximumVersion: .tls12), serverName: "localhost")
        let serverEngine = try TLSEngine(server: server)
        let states = handshake(client: client, server: serverEngine)
        #expect(states.server == .failed)
        #expect(states.client == .failed)
    }

    @Test(arguments: [
        (TestPKI.shared.clientChain, TestPKI.shared.clientKey, "spiffe://test/client"),
        (TestPKI.shared.dnsClientChain, TestPKI.shared.dnsClientKey, "client.test"),
        (TestPKI.shared.commonNameClientChain, TestPKI.shared.commonNameClientKey, "client-cn"),
    ])
    func verifiedClientIdentity(chain: String, key: String, identity: String) throws {
        let (client, serverEngine) = try connected(try trustingClient(certificate: (chain, key)), server)
        #expect(serverEngine.peerIdentity == identity)
        #expect(text(send(Array("hello".utf8), from: client, to: serverEngine)) == "hello")
    }

    @Test func untrustedClientCertificateIsRefused() throws {
        let client = try TLSEngine(client: try trustingClient(certificate: (pki.selfSignedChain, pki.selfSignedKey)),
                                   serverName: "localhost")
        let serverEngine = try TLSEngine(server: server)
        #expect(handshake(client: client, server: serverEngine).server == .failed)
        let reason = serverEngine.failureReason ?? ""
        #expect(reason.contains("certificate verify failed") && reason.contains("self-signed"), "\(reason)")
    }

    @Test func identitySurvivesResumption() throws {
        let clientContext = try trustingClient(certificate: (pki.clientChain, pki.clientKey))
        let (first, _) = try connected(clientContext, server)
        _ = readAll(first)  // the session tickets
        let (second, serverEngine) = try connected(clientContext, server)
        #expect(second.sessionReused && serverEngine.sessionReused)
        #expect(serverEngine.peerIdentity == "spiffe://test/client")
    }
}

@Suite struct ServerVerificationTests {
    private func failure(_ clientContext: TLSClientContext, _ serverContext: TLSServerContext,
                         serverName: String) throws -> String {
        let client = try TLSEngine(client: clientContext, serverName: serverName)
        let server = try TLSEngine(server: serverContext)
        let states = handshake(client: client, server: server)
        #expect(states.client == .failed)
        // The alert reaches the server, which fails too; no stale errors are left behind.
        #expect(states.server == .failed)
        #expect(drainOpenSSLErrors().isEmpty)
        return client.failureReason ?? ""
    }

    @Test func wrongNameFails() throws {
        let reason = try failure(try trustingClient(), try localhostServer(), serverName: "wrong.test")
        #expect(reason.contains("hostname mismatch"), "\(reason)")
        #expect(reason.contains("wrong.test"), "\(reason)")
    }

    @Test func ipAddressesAreChecked() throws {
        let (client, server) = try connected(try trustingClient(), try localhostServer(), serverName: "127.0.0.1")
        #expect(server.requestedServerName == nil)
        #expect(client.negotiatedVersion == "TLSv1.3")
        let reason = try failure(try trustingClient(), try localhostServer(), serverName: "127.0.0.2")
        #expect(reason.contains("IP address mismatch"), "\(reason)")
        let v6 = try failure(try trustingClient(), try localhostServer(), serverName: "[::1]")
        #expect(v6.contains("IP address mismatch"), "\(v6)")
    }

    @Test func untrustedCAFails() throws {
        let selfSigned = try TLSServerContext(certificateChainPath: pki.selfSignedChain, privateKeyPath: pki.selfSignedKey)
        let reason = try failure(try trustingClient(), selfSigned, serverName: "localhost")
        #expect(reason.contains("certificate verify failed"), "\(reason)")
        #expect(reason.contains("self-signed certificate"), "\(reason)")
        // The system bundle does not know the test CA either.
        let system = try TLSClientContext(caPath: nil, verify: true)
        let unknownIssuer = try failure(system, try localhostServer(), serverName: "localhost")
        #expect(unknownIssuer.contains("unable to get local issuer certificate"), "\(unknownIssuer)")
    }

    @Test func verifyOffAcceptsAnything() throws {
        let selfSigned = try TLSServerContext(certificateChainPath: pki.selfSignedChain, privateKeyPath: pki.selfSignedKey)
        let noVerify = try TLSClientContext(caPath: nil, verify: false)
        let (client, server) = try connected(noVerify, selfSigned, serverName: "wrong.test")
        #expect(client.peerIdentity == nil)
        #expect(client.peerCertificateCommonName == "localhost")
        #expect(text(send(Array("ok".utf8), from: server, to: client)) == "ok")
    }

    @Test func verifyingWithoutANameIsRefused() throws {
        #expect(throws: TLSError.self) { try TLSEngine(client: try trustingClient(), serverName: "") }
        // Without verification an empty name just means no SNI.
        let (_, server) = try connected(try TLSClientContext(caPath: nil, verify: false), try localhostServer(),
                                        serverName: "")
        #expect(server.requestedServerName == nil)
    }
}

@Suite struct ResumptionTests {
    private func resumes(maximumVersion: TLSProtocolVersion?) throws {
        let clientContext = try trustingClient(maximumVersion: maximumVersion)
        let serverContext = try localhostServer()
        let (first, firstServer) = try connected(clientContext, serverContext)
        #expect(!first.sessionReused && !firstServer.sessionReused)
        // TLS 1.3 tickets arrive after the handshake, with the first read.
        #expect(readAll(first).end == .needMoreInput)
        #expect(clientContext.sessions.count == 1)

        let (second, secondServer) = try connected(clientContext, serverContext)
        #expect(second.sessionReused)
        #expect(secondServer.sessionReused)
        #expect(second.negotiatedALPN == "http/1.1")
        #expect(text(send(Array("resumed".utf8), from: second, to: secondServer)) == "resumed")
    }

    @Test func resumesWithTLS13Tickets() throws { try resumes(maximumVersion: nil) }
    @Test func resumesWithTLS12Tickets() throws { try resumes(maximumVersion: .tls12) }

    @Test func sessionsAreKeptPerServerName() throws {
        let clientContext = try trustingClient()
        let serverContext = try localhostServer()
        let (first, _) = try connected(clientContext, serverContext, serverName: "localhost")
        _ = readAll(first)
        let (other, _) = try connected(clientContext, serverContext, serverName: "127.0.0.1")
        #expect(!other.sessionReused)
        _ = readAll(other)
        #expect(clientContext.sessions.count == 2)
    }

    @Test func anotherServerContextFallsBackToAFullHandshake() throws {
        let clientContext = try trustingClient()
        let (first, _) = try connected(clientContext, try localhostServer())
        _ = readAll(first)
        // New context, new ticket keys: the ticket is not understood, the handshake is full.
        let (second, _) = try connected(clientContext, try localhostServer())
        #expect(!second.sessionReused)
    }
}

@Suite struct RobustnessTests {
    @Test func garbageInsteadOfAClientHello() throws {
        let server = try TLSEngine(server: try localhostServer())
        let garbage = Array("GET / HTTP/1.1\r\nHost: example\r\n\r\n".utf8)
        garbage.withUnsafeBufferPointer { server.receiveCiphertext($0.baseAddress!, $0.count) }
        #expect(server.advanceHandshake() == .failed)
        #expect(server.failureReason?.isEmpty == false)
        #expect(server.advanceHandshake() == .failed)
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(buffer.withUnsafeMutableBufferPointer { server.readPlaintext(into: $0.baseAddress!, capacity: 16) } == .failed)
        #expect(write("no", from: server) == -1)
        server.shutdown()
        #expect(drainOpenSSLErrors().isEmpty)
    }

    @Test func garbageAfterTheHandshake() throws {
        let (client, server) = try connected(try trustingClient(), try localhostServer())
        // A well-formed application-data record header with a body that does not decrypt.
        var record: [UInt8] = [23, 3, 3, 0, 40]
        record += [UInt8](repeating: 0xab, count: 40)
        record.withUnsafeBufferPointer { server.receiveCiphertext($0.baseAddress!, $0.count) }
        #expect(readAll(server).end == .failed)
        let reason = server.failureReason ?? ""
        #expect(reason.contains("bad record mac") || reason.contains("decryption failed"), "\(reason)")
        // The fatal alert is queued for the peer, who fails too.
        transfer(from: server, to: client)
        #expect(readAll(client).end == .failed)
        #expect(drainOpenSSLErrors().isEmpty)
    }

    @Test func randomBytesNeverCrash() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let server = try TLSEngine(server: try localhostServer())
            let noise = (0..<Int.random(in: 1...2_000, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            noise.withUnsafeBufferPointer { server.receiveCiphertext($0.baseAddress!, $0.count) }
            #expect(server.advanceHandshake() != .complete)
        }
        #expect(drainOpenSSLErrors().isEmpty)
    }

    @Test func truncatedHandshakeWaits() throws {
        let client = try TLSEngine(client: try trustingClient(), serverName: "localhost")
        let server = try TLSEngine(server: try localhostServer())
        _ = client.advanceHandshake()
        var hello = [UInt8](repeating: 0, count: client.pendingCiphertextCount)
        _ = hello.withUnsafeMutableBufferPointer { client.takeCiphertext(into: $0.baseAddress!, capacity: $0.count) }
        hello.withUnsafeBufferPointer { server.receiveCiphertext($0.baseAddress!, $0.count - 1) }
        #expect(server.advanceHandshake() == .inProgress)
        #expect(server.pendingCiphertextCount == 0)
        hello.withUnsafeBufferPointer { server.receiveCiphertext($0.baseAddress! + $0.count - 1, 1) }
        #expect(server.advanceHandshake() == .inProgress)
        #expect(server.pendingCiphertextCount > 0)
    }
}
