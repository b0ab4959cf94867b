// The TLS 1.3 record layer a server connection moves to after its handshake, against a real
// OpenSSL peer (a client engine), with the bytes moved in memory.
import COpenSSL
import Testing
@testable import OutriderTLS

private var pki: TestPKI { TestPKI.shared }

private func server(alpn: [String] = ["http/1.1"]) throws -> TLSServerContext {
    try TLSServerContext(certificateChainPath: pki.serverChain, privateKeyPath: pki.serverKey, alpn: alpn)
}

/// A client context; `suites` limits its TLS 1.3 cipher suites (so the server must pick it).
private func client(suites: String? = nil, alpn: [String] = ["http/1.1"],
                    maximumVersion: TLSProtocolVersion? = nil) throws -> TLSClientContext {
    let context = try TLSClientContext(caPath: pki.caCertificate, verify: true, alpn: alpn, maximumVersion: maximumVersion)
    if let suites { #expect(SSL_CTX_set_ciphersuites(context.context, suites) == 1) }
    return context
}

/// Handshake, then the server leaves OpenSSL; the tickets it sent are delivered.
private func movedServer(_ clientContext: TLSClientContext, _ serverContext: TLSServerContext)
    throws -> (client: TLSEngine, server: TLSEngine) {
    let clientEngine = try TLSEngine(client: clientContext, serverName: "localhost")
    let serverEngine = try TLSEngine(server: serverContext)
    let states = handshake(client: clientEngine, server: serverEngine)
    try #require(states.client == .complete && states.server == .complete,
                 "\(clientEngine.failureReason ?? "") \(serverEngine.failureReason ?? "")")
    try #require(serverEngine.leaveOpenSSLAfterHandshake(), "the server did not leave OpenSSL")
    #expect(serverEngine.leftOpenSSL)
    transfer(from: serverEngine, to: clientEngine)
    #expect(readAll(clientEngine).end == .needMoreInput)
    return (clientEngine, serverEngine)
}

private func pattern(_ count: Int, seed: Int = 7) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) }
}

@Suite struct TLS13RecordLayerTests {
    @Test(arguments: ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"])
    func exchangesDataBothWaysWithEverySuite(suite: String) throws {
        let (clientEngine, serverEngine) = try movedServer(try client(suites: suite), try server())
        #expect(serverEngine.negotiatedVersion == "TLSv1.3")
        #expect(serverEngine.negotiatedALPN == "http/1.1")
        #expect(serverEngine.requestedServerName == "localhost")
        for size in [0, 1, 100, 16_384, 16_385, 100_000] {
            let request = pattern(size, seed: size)
            #expect(send(request, from: clientEngine, to: serverEngine) == request, "\(suite) \(size) up")
            let response = pattern(size + 3, seed: 11)
            #expect(send(response, from: serverEngine, to: clientEngine, pieceSize: 70_000) == response,
                    "\(suite) \(size) down")
        }
        #expect(serverEngine.failureReason == nil && clientEngine.failureReason == nil)
    }

    @Test func ciphertextFedOneByteAtATimeAndReadOneByteAtATime() throws {
        let (clientEngine, serverEngine) = try movedServer(try client(), try server())
        let request = pattern(40_000)
        #expect(request.withUnsafeBufferPointer { clientEngine.writePlaintext($0.baseAddress!, $0.count) } == request.count)
        var received: [UInt8] = []
        var byte: [UInt8] = [0]
        while clientEngine.pendingCiphertextCount > 0 {
            _ = byte.withUnsafeMutableBufferPointer { clientEngine.takeCiphertext(into: $0.baseAddress!, capacity: 1) }
            byte.withUnsafeBufferPointer { serverEngine.receiveCiphertext($0.baseAddress!, 1) }
            received += readAll(serverEngine, bufferSize: 1).bytes
        }
        #expect(received == request)
        let response = pattern(20_000, seed: 3)
        #expect(response.withUnsafeBufferPointer { serverEngine.writePlaintext($0.baseAddress!, $0.count) } == response.count)
        transfer(from: serverEngine, to: clientEngine, chunk: 1)
        #expect(readAll(clientEngine, bufferSize: 7).bytes == response)
    }

    /// A client's first request often comes in the same flight as its Finished: it waits in
    /// the ciphertext OpenSSL has not read and moves over with the connection.
    @Test func requestSentWithTheClientFinishedIsReadAfterTheMove() throws {
        let clientContext = try client()
        // One server context: its ticket keys decrypt the ticket on resumption.
        let serverContext = try server()
        let clientEngine = try TLSEngine(client: clientContext, serverName: "localhost")
        let serverEngine = try TLSEngine(server: serverContext)
        _ = clientEngine.advanceHandshake()
        transfer(from: clientEngine, to: serverEngine)
        _ = serverEngine.advanceHandshake()
        transfer(from: serverEngine, to: clientEngine)
        #expect(clientEngine.advanceHandshake() == .complete)
        #expect(write("GET / HTTP/1.1\r\nhost: a\r\n\r\n", from: clientEngine) > 0)
        transfer(from: clientEngine, to: serverEngine)
        #expect(serverEngine.advanceHandshake() == .complete)
        #expect(serverEngine.leaveOpenSSLAfterHandshake())
        #expect(text(readAll(serverEngine).bytes) == "GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        // The session tickets OpenSSL wrote go out after the move and still resume.
        #expect(write("HTTP/1.1 200 OK\r\n\r\n", from: serverEngine) > 0)
        transfer(from: serverEngine, to: clientEngine)
        #expect(text(readAll(clientEngine).bytes) == "HTTP/1.1 200 OK\r\n\r\n")
        let resumedClient = try TLSEngine(client: clientContext, serverName: "localhost")
        let resumedServer = try TLSEngine(server: serverContext)
        _ = handshake(client: resumedClient, server: resumedServer)
        #expect(resumedClient.sessionReused)
        #expect(resumedServer.leaveOpenSSLAfterHandshake())
        #expect(resumedServer.sessionReused)
    }

    @Test(arguments: [false, true])
    func followsTheClientsKeyUpdates(requestingOurs: Bool) throws {
        let (clientEngine, serverEngine) = try movedServer(try client(), try server())
        for round in 0..<3 {
            #expect(clientEngine.scheduleKeyUpdate(requestingPeerUpdate: requestingOurs))
            let request = pattern(5_000, seed: round)
            #expect(send(request, from: clientEngine, to: serverEngine) == request, "round \(round)")
            let response = pattern(30_000, seed: round + 1)
            #expect(send(response, from: serverEngine, to: clientEngine) == response, "round \(round)")
        }
        #expect(serverEngine.failureReason == nil && clientEngine.failureReason == nil,
                "\(serverEngine.failureReason ?? "") \(clientEngine.failureReason ?? "")")
    }

    @Test func aTamperedRecordFailsTheConnectionWithAnAlert() throws {
        let (clientEngine, serverEngine) = try movedServer(try client(), try server())
        #expect(write("secret", from: clientEngine) == 6)
        var ciphertext = [UInt8](repeating: 0, count: clientEngine.pendingCiphertextCount)
        let count = ciphertext.withUnsafeMutableBufferPointer {
            clientEngine.takeCiphertext(into: $0.baseAddress!, capacity: $0.count)
        }
        ciphertext[count - 3] ^= 0x40
        ciphertext.withUnsafeBufferPointer { serverEngine.receiveCiphertext($0.baseAddress!, count) }
        #expect(readAll(serverEngine).end == .failed)
        #expect(serverEngine.failureReason?.contains("failed authentication") == true, "\(serverEngine.failureReason ?? "")")
        #expect(write("more", from: serverEngine) == -1)
        // The alert (bad_record_mac) reaches the client.
        transfer(from: serverEngine, to: clientEngine)
        #expect(readAll(clientEngine).end == .failed)
        #expect(clientEngine.failureReason?.contains("bad record mac") == true, "\(clientEngine.failureReason ?? "")")
    }

    @Test(arguments: [
        ([22, 3, 3, 0, 20] as [UInt8], "record of type 22"),
        ([23, 3, 1, 0, 20] as [UInt8], "version bytes"),
        ([23, 3, 3, 0x41, 0x01] as [UInt8], "a record of 16641 bytes"),
        ([23, 3, 3, 0, 16] as [UInt8], "too short"),
    ])
    func malformedRecordHeadersAreRefused(header: [UInt8], reason: String) throws {
        let (_, serverEngine) = try movedServer(try client(), try server())
        let bytes = header + [UInt8](repeating: 0xAB, count: 64)
        bytes.withUnsafeBufferPointer { serverEngine.receiveCiphertext($0.baseAddress!, $0.count) }
        #expect(readAll(serverEngine).end == .failed)
        #expect(serverEngine.failureReason?.contains(reason) == true, "\(serverEngine.failureReason ?? "")")
        #expect(serverEngine.pendingCiphertextCount > 0, "an alert is queued")
    }

    @Test func closeNotifyBothWays() throws {
        let (clientEngine, serverEngine) = try movedServer(try client(), try server())
        #expect(write("last", from: clientEngine) == 4)
        clientEngine.shutdown()
        transfer(from: clientEngine, to: serverEngine)
        let read = readAll(serverEngine)
        #expect(text(read.bytes) == "last")
        #expect(read.end == .closed)

        let (otherClient, otherServer) = try movedServer(try client(), try server())
        #expect(write("bye", from: otherServer) == 3)
        otherServer.shutdown()
        #expect(write("after", from: otherServer) == -1)
        transfer(from: otherServer, to: otherClient)
        let answer = readAll(otherClient)
        #expect(text(answer.bytes) == "bye")
        #expect(answer.end == .closed)
    }

    @Test func anIdleConnectionHoldsNoBuffersOrCipherContexts() throws {
        let (clientEngine, serverEngine) = try movedServer(try client(), try server())
        let big = pattern(200_000)
        #expect(send(big, from: clientEngine, to: serverEngine) == big)
        #expect(send(big, from: serverEngine, to: clientEngine) == big)
        #expect(serverEngine.holdsCipherContexts)
        serverEngine.releaseIdleMemory()
        #expect(serverEngine.bufferedCapacity == 0)
        #expect(!serverEngine.holdsCipherContexts)
        // Keys and sequence numbers stayed.
        #expect(send(pattern(10), from: clientEngine, to: serverEngine) == pattern(10))
        #expect(send(pattern(20), from: serverEngine, to: clientEngine) == pattern(20))
    }

    @Test func tls12ConnectionsStayWithOpenSSL() throws {
        let clientEngine = try TLSEngine(client: try client(maximumVersion: .tls12), serverName: "localhost")
        let serverEngine = try TLSEngine(server: try server())
        _ = handshake(client: clientEngine, server: serverEngine)
        #expect(!serverEngine.leaveOpenSSLAfterHandshake())
        #expect(!serverEngine.leftOpenSSL)
        serverEngine.releaseIdleMemory()
        #expect(!serverEngine.leftOpenSSL)
        #expect(text(send(Array("still fine".utf8), from: clientEngine, to: serverEngine)) == "still fine")
    }

    @Test func h2IsStillReportedAfterTheMove() throws {
        let (_, serverEngine) = try movedServer(try client(alpn: ["h2"]), try server(alpn: ["h2", "http/1.1"]))
        #expect(serverEngine.negotiatedALPNIsH2)
        #expect(serverEngine.negotiatedALPN == "h2")
    }
}

/// Two record layers keyed as the two ends of one connection, to send records a real peer
/// would not.
private func layerPair(suite: TLS13CipherSuite = .aes128GCMSHA256) throws -> (peer: TLS13RecordLayer, server: TLS13RecordLayer) {
    let clientSecret = [UInt8](repeating: 0x11, count: 48), serverSecret = [UInt8](repeating: 0x22, count: 48)
    let peer = try #require(TLS13RecordLayer(suite: suite, readSecret: serverSecret, readSequence: 0,
                                             writeSecret: clientSecret, writeSequence: 0))
    let server = try #require(TLS13RecordLayer(suite: suite, readSecret: clientSecret, readSequence: 0,
                                               writeSecret: serverSecret, writeSequence: 0))
    return (peer, server)
}

private func deliver(_ from: TLS13RecordLayer, _ to: TLS13RecordLayer) -> (bytes: [UInt8], end: TLSReadResult) {
    var ciphertext = [UInt8](repeating: 0, count: from.pendingCiphertextCount)
    let count = ciphertext.withUnsafeMutableBufferPointer { from.takeCiphertext(into: $0.baseAddress!, capacity: $0.count) }
    ciphertext.withUnsafeBufferPointer { _ = to.receiveCiphertext($0.baseAddress!, count) }
    var plaintext: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1024)
    while true {
        let result = buffer.withUnsafeMutableBufferPointer { to.readPlaintext(into: $0.baseAddress!, capacity: $0.count) }
        guard case .bytes(let n) = result else { return (plaintext, result) }
        plaintext += buffer[0..<n]
    }
}

private func seal(_ layer: TLS13RecordLayer, type: UInt8, _ bytes: [UInt8]) {
    #expect(bytes.withUnsafeBufferPointer { layer.seal(type: type, $0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) })
}

@Suite struct TLS13RecordLayerHostilePeerTests {
    @Test func emptyRecordsAreAllowedUpToOpenSSLsLimit() throws {
        let (peer, server) = try layerPair()
        for _ in 0..<32 { seal(peer, type: 23, []) }
        seal(peer, type: 23, Array("data".utf8))
        let first = deliver(peer, server)
        #expect(text(first.bytes) == "data" && first.end == .needMoreInput)
        for _ in 0..<33 { seal(peer, type: 23, []) }
        let second = deliver(peer, server)
        #expect(second.end == .failed)
        #expect(server.failureReason?.contains("without data") == true, "\(server.failureReason ?? "")")
    }

    @Test func aKeyUpdateNotRequestedIsTakenSilently() throws {
        let (peer, server) = try layerPair(suite: .aes256GCMSHA384)
        seal(peer, type: 22, [24, 0, 0, 1, 0])
        #expect(deliver(peer, server).end == .needMoreInput)
        #expect(server.failureReason == nil)
        #expect(server.pendingCiphertextCount == 0, "no KeyUpdate of its own")
    }

    @Test(arguments: [
        ([1, 0, 0, 1, 0] as [UInt8], "type 1"),                 // ClientHello after the handshake
        ([24, 0, 0, 2, 0, 0] as [UInt8], "type 24"),            // KeyUpdate of the wrong length
        ([24, 0, 0, 1, 2] as [UInt8], "request_update 2"),
        ([24, 0, 0, 1, 0, 24] as [UInt8], "not at the end"),    // bytes after it in its record
    ])
    func badPostHandshakeMessagesAreRefused(message: [UInt8], reason: String) throws {
        let (peer, server) = try layerPair()
        seal(peer, type: 22, message)
        #expect(deliver(peer, server).end == .failed)
        #expect(server.failureReason?.contains(reason) == true, "\(server.failureReason ?? "")")
    }

    @Test func aHandshakeMessageSplitAcrossRecordsIsAssembled() throws {
        let (peer, server) = try layerPair()
        seal(peer, type: 22, [24, 0])
        seal(peer, type: 22, [0, 1, 0])
        #expect(deliver(peer, server).end == .needMoreInput)
        #expect(server.failureReason == nil)
        // Application data between the two parts is refused.
        let (otherPeer, otherServer) = try layerPair()
        seal(otherPeer, type: 22, [24, 0])
        seal(otherPeer, type: 23, [1])
        #expect(deliver(otherPeer, otherServer).end == .failed)
        #expect(otherServer.failureReason?.contains("between the parts") == true)
    }

    @Test func alertsEndTheConnection() throws {
        let (peer, server) = try layerPair()
        seal(peer, type: 21, [2, 40])
        #expect(deliver(peer, server).end == .failed)
        #expect(server.failureReason?.contains("alert 40") == true)
        let (otherPeer, otherServer) = try layerPair()
        seal(otherPeer, type: 21, [1, 90])  // user_canceled: a warning
        seal(otherPeer, type: 23, Array("x".utf8))
        seal(otherPeer, type: 21, [1, 0])
        let read = deliver(otherPeer, otherServer)
        #expect(text(read.bytes) == "x" && read.end == .closed)
        let (thirdPeer, thirdServer) = try layerPair()
        seal(thirdPeer, type: 21, [1, 0, 0])
        #expect(deliver(thirdPeer, thirdServer).end == .failed)
    }

    @Test func unknownInnerTypesAndAllZeroRecordsAreRefused() throws {
        let (peer, server) = try layerPair()
        seal(peer, type: 20, [1])
        #expect(deliver(peer, server).end == .failed)
        #expect(server.failureReason?.contains("content type 20") == true)
        let (otherPeer, otherServer) = try layerPair()
        seal(otherPeer, type: 0, [0, 0, 0])
        #expect(deliver(otherPeer, otherServer).end == .failed)
        #expect(otherServer.failureReason?.contains("no content type") == true)
    }

    @Test func paddingIsStripped() throws {
        let (peer, server) = try layerPair()
        // Inner plaintext "hi", type 23, then zeros: sealed as type 0 after the real type byte.
        seal(peer, type: 0, Array("hi".utf8) + [23, 0, 0, 0])
        let read = deliver(peer, server)
        #expect(text(read.bytes) == "hi" && read.end == .needMoreInput)
    }
}
