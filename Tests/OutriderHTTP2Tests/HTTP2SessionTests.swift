import OutriderHTTP
import Testing
@testable import OutriderHTTP2

/// A client and a server session wired to recorders; the server answers each request with a
/// 200 and `responseBody` (echoing the request body instead when `echo` is set).
private func makePair(server serverConfiguration: HTTP2Configuration = HTTP2Configuration(),
                      client clientConfiguration: HTTP2Configuration = HTTP2Configuration(),
                      responseBody: [UInt8] = Array("hello".utf8))
    throws -> (client: HTTP2Session, server: HTTP2Session, clientEvents: Recorder, serverEvents: Recorder) {
    let client = try HTTP2Session(role: .client, configuration: clientConfiguration)
    let server = try HTTP2Session(role: .server, configuration: serverConfiguration)
    let clientEvents = Recorder(), serverEvents = Recorder()
    client.delegate = clientEvents
    server.delegate = serverEvents
    serverEvents.onHeaders = { session, stream, head in
        guard head.endStream else { return }
        let response = block([(":status", "200"), ("content-type", "text/plain")])
        try? session.submitResponse(stream: stream, headers: response, endStream: false)
        try? session.sendData(stream: stream, responseBody, endStream: true)
    }
    return (client, server, clientEvents, serverEvents)
}

@Suite struct RequestResponseTests {
    @Test func getWithHeadersGetsResponseWithBody() throws {
        let (client, server, clientEvents, serverEvents) = try makePair()
        let stream = try client.submitRequest(headers: getRequest("/items?id=7", extra: [("X-Trace", "abc"), ("accept", "*/*")]),
                                              endStream: true)
        #expect(stream == 1)
        let results = pump(client, server)
        #expect(results.client == .ok && results.server == .ok)

        let request = try #require(serverEvents.heads[stream])
        #expect(request.method == .get)
        #expect(request.path == "/items?id=7")
        #expect(request.authority == "app.test")
        #expect(request.scheme == "http")
        #expect(request.endStream)
        // Names go out lower-cased, as HTTP/2 requires.
        #expect(request.value("x-trace") == "abc")
        #expect(serverEvents.ended.contains(stream))

        let response = try #require(clientEvents.heads[stream])
        #expect(response.status == 200)
        #expect(response.value("content-type") == "text/plain")
        #expect(!response.endStream)
        #expect(clientEvents.bodies[stream] == Array("hello".utf8))
        #expect(clientEvents.ended.contains(stream))
        #expect(clientEvents.closed[stream] == .noError)
        #expect(serverEvents.closed[stream] == .noError)
        #expect(client.openStreamCount == 0 && server.openStreamCount == 0)
        #expect(client.failure == nil && server.failure == nil)
    }

    @Test func headerKindsAndStatusAreRecognized() throws {
        let headers = block([(":status", "204"), ("Content-Length", "0"), ("x-request-id", "r1")])
        #expect(headers.status == 204)
        #expect(headers[0].pseudo == .status)
        #expect(headers.text(named: "content-length") == "0")
        // A block built for sending only goes out: its fields are not classified.
        #expect(headers[1].kind == .other && headers[2].kind == .other)
        let received = HTTP2HeaderBlock()
        for (name, value) in [("content-length", "0"), ("x-request-id", "r1"), ("x-other", "1")] {
            let name = Array(name.utf8), value = Array(value.utf8)
            received.appendReceived(name: name, nameCount: name.count, value: value, valueCount: value.count)
        }
        #expect(received[0].kind == .contentLength)
        #expect(received[1].kind == .xRequestID)
        #expect(received[2].kind == .other)
    }

    @Test func bytesFedOneAtATime() throws {
        let (client, server, clientEvents, serverEvents) = try makePair(responseBody: pattern(3000))
        let stream = try client.submitRequest(headers: postRequest(extra: [("content-type", "application/octet-stream")]),
                                              endStream: false)
        try client.sendData(stream: stream, pattern(1000), endStream: true)
        serverEvents.onEnd = { session, stream in
            try? session.submitResponse(stream: stream, headers: block([(":status", "201")]), endStream: false)
            try? session.sendData(stream: stream, pattern(3000), endStream: true)
        }
        let results = pump(client, server, chunk: 1, outputBufferSize: 7)
        #expect(results.client == .ok && results.server == .ok)
        #expect(serverEvents.heads[stream]?.method == .post)
        #expect(serverEvents.bodies[stream] == pattern(1000))
        #expect(clientEvents.heads[stream]?.status == 201)
        #expect(clientEvents.bodies[stream] == pattern(3000))
        #expect(clientEvents.closed[stream] == .noError)
    }

    @Test func hundredConcurrentStreams() throws {
        let (client, server, clientEvents, serverEvents) = try makePair()
        // Answer only once all are open, so all 100 are open at the same time.
        serverEvents.onHeaders = nil
        var streams: [Int32] = []
        for index in 0..<100 {
            streams.append(try client.submitRequest(headers: getRequest("/item/\(index)"), endStream: true))
        }
        pump(client, server)
        #expect(serverEvents.heads.count == 100)
        #expect(server.openStreamCount == 100)
        for stream in streams.reversed() {
            let path = try #require(serverEvents.heads[stream]?.path)
            try server.submitResponse(stream: stream, headers: block([(":status", "200")]), endStream: false)
            try server.sendData(stream: stream, Array(path.utf8), endStream: true)
        }
        pump(client, server)
        for (index, stream) in streams.enumerated() {
            #expect(clientEvents.bodies[stream] == Array("/item/\(index)".utf8))
            #expect(clientEvents.closed[stream] == .noError)
        }
        #expect(client.openStreamCount == 0 && server.openStreamCount == 0)
    }
}

@Suite struct StreamPoolTests {
    /// Opens `count` streams on `client`, answers them all at once, and returns once all closed.
    private func roundTrip(_ count: Int, _ client: HTTP2Session, _ server: HTTP2Session, _ serverEvents: Recorder) throws {
        serverEvents.onHeaders = nil
        serverEvents.heads = [:]
        var streams: [Int32] = []
        for _ in 0..<count { streams.append(try client.submitRequest(headers: getRequest(), endStream: true)) }
        pump(client, server)
        for stream in streams {
            try server.submitResponse(stream: stream, headers: block([(":status", "200")]), endStream: true)
        }
        pump(client, server)
        #expect(client.openStreamCount == 0 && server.openStreamCount == 0)
    }

    @Test func closedStreamsArePooledUpToTheLimit() throws {
        let (client, server, clientEvents, serverEvents) = try makePair()
        defer { withExtendedLifetime(clientEvents) {} }   // the sessions' delegates are unowned
        try roundTrip(100, client, server, serverEvents)
        #expect(client.pooledStreamCount == 64, "the default keeps 64")

        var clientConfiguration = HTTP2Configuration()
        clientConfiguration.streamPoolLimit = 100
        let (bigClient, bigServer, bigClientEvents, bigServerEvents) = try makePair(client: clientConfiguration)
        defer { withExtendedLifetime(bigClientEvents) {} }
        try roundTrip(100, bigClient, bigServer, bigServerEvents)
        #expect(bigClient.pooledStreamCount == 100)
        // The next hundred streams reuse them all: the pool empties while they are open.
        let reused = try (0..<100).map { _ in try bigClient.submitRequest(headers: getRequest(), endStream: true) }
        #expect(reused.count == 100 && bigClient.pooledStreamCount == 0)
    }
}

@Suite struct FlowControlTests {
    @Test func megabyteUploadIsPacedByConsume() throws {
        var serverConfiguration = HTTP2Configuration()
        serverConfiguration.initialWindowSize = 16 * 1024
        serverConfiguration.connectionWindowSize = 65_535
        let (client, server, clientEvents, serverEvents) = try makePair(server: serverConfiguration)
        defer { withExtendedLifetime(clientEvents) {} }
        serverEvents.consumesImmediately = false
        // Settings first: until the server's SETTINGS are acknowledged, a client may use the
        // protocol's default 65,535-byte window.
        pump(client, server)
        let body = pattern(1 << 20)
        let stream = try client.submitRequest(headers: postRequest(), endStream: false)
        // The client buffers it all; nghttp2 sends only what the server's windows allow.
        let keepWriting = try client.sendData(stream: stream, body, endStream: true)
        #expect(!keepWriting, "1 MiB is over the send high-water mark")

        pump(client, server)
        // Nothing consumed yet: no more than the stream window arrived.
        #expect(serverEvents.bodies[stream]?.count == 16 * 1024)
        #expect(server.receiveWindowRemaining(stream: stream) == 0)
        #expect(client.bufferedSendBytes(stream: stream) == body.count - 16 * 1024)

        var rounds = 0
        while !serverEvents.ended.contains(stream) && rounds < 1000 {
            let before = serverEvents.bodies[stream]?.count ?? 0
            serverEvents.consumeAll(server)
            pump(client, server)
            let received = (serverEvents.bodies[stream]?.count ?? 0) - before
            #expect(received <= 16 * 1024, "never more than a window ahead of consumption")
            rounds += 1
        }
        #expect(serverEvents.bodies[stream] == body)
        #expect(rounds >= 60, "about 1 MiB / 16 KiB rounds, took \(rounds)")
        serverEvents.consumeAll(server)
        pump(client, server)
        #expect(client.failure == nil && server.failure == nil)
    }

    @Test func megabyteDownloadWithWindowOpenedEvents() throws {
        var clientConfiguration = HTTP2Configuration()
        clientConfiguration.initialWindowSize = 32 * 1024
        var serverConfiguration = HTTP2Configuration()
        serverConfiguration.streamSendBufferHighWater = 64 * 1024
        let (client, server, clientEvents, serverEvents) = try makePair(server: serverConfiguration, client: clientConfiguration)
        let body = pattern(1 << 20)
        var offset = 0
        // A writer that stops when told and resumes on `streamWindowOpened`, like the proxy.
        func write(_ session: HTTP2Session, _ stream: Int32) {
            while offset < body.count {
                let end = min(body.count, offset + 16 * 1024)
                let keepWriting = (try? session.sendData(stream: stream, Array(body[offset..<end]), endStream: end == body.count)) ?? false
                offset = end
                if !keepWriting { return }
            }
        }
        serverEvents.onHeaders = { session, stream, _ in
            try? session.submitResponse(stream: stream, headers: block([(":status", "200")]), endStream: false)
            write(session, stream)
        }
        serverEvents.onWindowOpened = write
        let stream = try client.submitRequest(headers: getRequest("/big"), endStream: true)
        pump(client, server)
        #expect(clientEvents.bodies[stream] == body)
        #expect(clientEvents.closed[stream] == .noError)
        #expect(serverEvents.windowOpened.count >= 10, "\(serverEvents.windowOpened.count) resumptions")
        #expect(server.bufferedSendBytes(stream: stream) == 0)
    }
}

@Suite struct TrailersResetGoAwayTests {
    @Test func grpcStyleTrailersBothWays() throws {
        let (client, server, clientEvents, serverEvents) = try makePair()
        serverEvents.onHeaders = nil
        serverEvents.onEnd = { session, stream in
            try? session.submitResponse(stream: stream, headers: block([(":status", "200"), ("content-type", "application/grpc")]),
                                        endStream: false)
            try? session.sendData(stream: stream, [0, 0, 0, 0, 2, 0x08, 0x01], endStream: false)
            try? session.submitTrailers(stream: stream, trailers: block([("grpc-status", "0"), ("grpc-message", "OK")]))
        }
        let stream = try client.submitRequest(headers: postRequest("/pkg.Service/Method", extra: [
            ("content-type", "application/grpc"), ("te", "trailers"),
        ]), endStream: false)
        try client.sendData(stream: stream, [0, 0, 0, 0, 1, 0x2a], endStream: false)
        try client.submitTrailers(stream: stream, trailers: block([("x-client-checksum", "42")]))
        let results = pump(client, server)
        #expect(results.client == .ok && results.server == .ok)
        #expect(serverEvents.heads[stream]?.value("te") == "trailers")
        #expect(serverEvents.bodies[stream] == [0, 0, 0, 0, 1, 0x2a])
        #expect(serverEvents.trailers[stream]?.first?.0 == "x-client-checksum")
        #expect(serverEvents.ended.contains(stream))
        #expect(clientEvents.heads[stream]?.value("content-type") == "application/grpc")
        #expect(clientEvents.bodies[stream] == [0, 0, 0, 0, 2, 0x08, 0x01])
        let trailers = try #require(clientEvents.trailers[stream])
        #expect(trailers.map(\.0) == ["grpc-status", "grpc-message"])
        #expect(trailers.first?.1 == "0")
        #expect(clientEvents.closed[stream] == .noError)
    }

    @Test func trailersWithoutBody() throws {
        let (client, server, clientEvents, serverEvents) = try makePair()
        serverEvents.onHeaders = { session, stream, _ in
            try? session.submitResponse(stream: stream, headers: block([(":status", "200"), ("content-type", "application/grpc")]),
                                        endStream: false)
            try? session.submitTrailers(stream: stream, trailers: block([("grpc-status", "5"), ("grpc-message", "not found")]))
        }
        let stream = try client.submitRequest(headers: getRequest(), endStream: true)
        pump(client, server)
        #expect(clientEvents.trailers[stream]?.first?.1 == "5")
        #expect(clientEvents.bodies[stream] == nil)
        #expect(clientEvents.closed[stream] == .noError)
    }

    @Test func clientResetsAStreamMidBody() throws {
        let (client, server, clientEvents, serverEvents) = try makePair()
        let stream = try client.submitRequest(headers: postRequest(), endStream: false)
        try client.sendData(stream: stream, pattern(100), endStream: false)
        pump(client, server)
        #expect(serverEvents.bodies[stream]?.count == 100)
        client.resetStream(stream: stream, code: .cancel)
        pump(client, server)
        #expect(serverEvents.resets[stream] == .cancel)
        #expect(serverEvents.closed[stream] == .cancel)
        #expect(clientEvents.closed[stream] == .cancel)
        #expect(server.openStreamCount == 0)
        #expect(throws: HTTP2SubmitError.self) { try client.sendData(stream: stream, [1], endStream: true) }
        // The session goes on.
        let next = try client.submitRequest(headers: getRequest(), endStream: true)
        pump(client, server)
        #expect(clientEvents.bodies[next] == Array("hello".utf8))
    }

    @Test func serverGoAwayIsDeliveredAndLaterStreamsRefused() throws {
        let (client, server, clientEvents, serverEvents) = try makePair()
        serverEvents.onHeaders = nil
        let first = try client.submitRequest(headers: getRequest("/1"), endStream: true)
        pump(client, server)
        server.goAway(code: .noError)
        pump(client, server)
        #expect(clientEvents.goAways.count == 1)
        #expect(clientEvents.goAways.first?.lastStreamID == first)
        #expect(clientEvents.goAways.first?.code == .noError)
        // In-flight stream still completes.
        try server.submitResponse(stream: first, headers: block([(":status", "200")]), endStream: true)
        pump(client, server)
        #expect(clientEvents.heads[first]?.status == 200)
        #expect(clientEvents.closed[first] == .noError)
        // The client may not open new streams on a session that received GOAWAY.
        #expect(throws: HTTP2SubmitError.self) { _ = try client.submitRequest(headers: getRequest("/2"), endStream: true) }
        #expect(server.isFinished)
        #expect(client.isFinished)
    }
}

@Suite struct LimitsTests {
    @Test func streamsBeyondMaxConcurrentAreRefused() throws {
        var serverConfiguration = HTTP2Configuration()
        serverConfiguration.maxConcurrentStreams = 10
        let (client, server, clientEvents, serverEvents) = try makePair(server: serverConfiguration)
        serverEvents.onHeaders = nil
        // Sent before the client learns the server's SETTINGS (it assumes 100 until then).
        var streams: [Int32] = []
        for index in 0..<20 { streams.append(try client.submitRequest(headers: getRequest("/\(index)"), endStream: true)) }
        feed(drainOutput(client), to: server)
        pump(client, server)
        #expect(serverEvents.heads.count == 10)
        let refused = streams.filter { clientEvents.resets[$0] == .refusedStream }
        #expect(refused.count == 10)
        #expect(Set(refused) == Set(streams.suffix(10)))
        #expect(refused.allSatisfy { clientEvents.closed[$0] == .refusedStream })
        #expect(server.openStreamCount == 10)
        #expect(server.failure == nil)
    }

    @Test func requestHeaderListOverTheLimitIsAnswered431() throws {
        var serverConfiguration = HTTP2Configuration()
        serverConfiguration.maxHeaderListSize = 4096
        let (client, server, clientEvents, serverEvents) = try makePair(server: serverConfiguration)
        let big = String(repeating: "v", count: 8000)
        let stream = try client.submitRequest(headers: getRequest(extra: [("x-big", big)]), endStream: true)
        let results = pump(client, server)
        #expect(results.server == .ok && results.client == .ok)
        #expect(serverEvents.heads[stream] == nil, "the delegate never sees the request")
        #expect(serverEvents.refused[stream] == .headersTooLarge)
        #expect(server.streamsRefusedForHeaderSize == 1)
        #expect(clientEvents.heads[stream]?.status == 431)
        #expect(clientEvents.heads[stream]?.value("x-outrider-error") == "headers_too_large")
        #expect(clientEvents.bodies[stream] == Array("request headers too large\n".utf8))
        // The connection serves the next request.
        let next = try client.submitRequest(headers: getRequest(), endStream: true)
        pump(client, server)
        #expect(clientEvents.bodies[next] == Array("hello".utf8))
    }

    @Test func responseHeaderListOverTheLimitResetsTheStream() throws {
        var clientConfiguration = HTTP2Configuration()
        clientConfiguration.maxHeaderListSize = 2048
        let (client, server, clientEvents, serverEvents) = try makePair(client: clientConfiguration)
        serverEvents.onHeaders = { session, stream, _ in
            try? session.submitResponse(stream: stream, headers: block([(":status", "200"),
                                                                       ("set-cookie", String(repeating: "c", count: 4000))]),
                                        endStream: true)
        }
        let stream = try client.submitRequest(headers: getRequest(), endStream: true)
        pump(client, server)
        #expect(clientEvents.heads[stream] == nil)
        #expect(clientEvents.closed[stream] == .cancel)
        #expect(client.failure == nil)
    }
}

@Suite struct HostilePeerTests {
    @Test func rapidResetFloodEndsTheServerSession() throws {
        var serverConfiguration = HTTP2Configuration()
        serverConfiguration.maxConcurrentStreams = 100
        // A slow refill keeps the budget at about the burst however long this loop takes on a
        // loaded machine (at 33/s, five seconds of it add 165 resets).
        serverConfiguration.resetRatePerSecond = 1
        let (client, server, clientEvents, serverEvents) = try makePair(server: serverConfiguration)
        serverEvents.onHeaders = nil
        var serverResult = HTTP2ReceiveResult.ok
        var opened = 0
        for index in 0..<3000 {
            // Once the client has read the server's GOAWAY it may open no more streams.
            guard let stream = try? client.submitRequest(headers: getRequest("/\(index)"), endStream: false) else {
                serverResult = server.failure.map { HTTP2ReceiveResult.fatal($0) } ?? .ok
                break
            }
            serverResult = feed(drainOutput(client), to: server)
            if case .fatal = serverResult { break }
            client.resetStream(stream: stream, code: .cancel)
            serverResult = feed(drainOutput(client), to: server)
            opened += 1
            if case .fatal = serverResult { break }
            // The client reads what the server says (a real attacker need not).
            if index % 50 == 0 { feed(drainOutput(server), to: client) }
        }
        guard case .fatal(let failure) = serverResult else {
            Issue.record("the server kept accepting resets: \(server.resetsReceived)")
            return
        }
        #expect(failure.kind == .rapidReset)
        #expect(failure.code == .enhanceYourCalm)
        #expect(failure.reason.contains("rapid reset"))
        #expect(opened > 900 && opened <= 1010, "reset budget is 1000 (+1/s): \(opened)")
        // The GOAWAY reaches the client, and the server is done.
        feed(drainOutput(server), to: client)
        #expect(clientEvents.goAways.last?.code == .enhanceYourCalm)
        #expect(server.isFinished)
        #expect(feed([0, 0, 0], to: server) == .fatal(failure))
    }

    @Test func garbageInsteadOfThePrefaceIsFatal() throws {
        let server = try HTTP2Session(role: .server)
        let result = feed(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), to: server)
        guard case .fatal(let failure) = result else {
            Issue.record("garbage accepted")
            return
        }
        #expect(failure.kind == .badPreface)
        #expect(server.isFinished)
        // Later calls answer the same, without touching nghttp2 again.
        #expect(feed([1, 2, 3], to: server) == result)
        #expect(drainOutput(server).isEmpty)
    }

    @Test func garbageAfterThePrefaceEndsTheSessionWithGoAway() throws {
        let server = try HTTP2Session(role: .server)
        var random = SystemRandomNumberGenerator()
        let garbage = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &random) }
        let first = feed(clientPreface + frame(type: 4) + garbage, to: server)
        let output = drainOutput(server)
        let failure = try #require(server.failure, "first result \(first)")
        #expect(failure.kind != .internalError)
        #expect(output.count >= 17, "a GOAWAY went out")
        #expect(server.isFinished)
        #expect(feed([0], to: server) == .fatal(failure))
    }

    @Test func garbageFromTheServerEndsTheClientSession() throws {
        let client = try HTTP2Session(role: .client)
        _ = try client.submitRequest(headers: getRequest(), endStream: true)
        _ = drainOutput(client)
        let result = feed(Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8), to: client)
        _ = drainOutput(client)
        if case .ok = result { #expect(client.failure != nil) }
        #expect(client.isFinished)
    }

    @Test func pingFloodFromAPeerThatDoesNotRead() throws {
        let server = try HTTP2Session(role: .server)
        var bytes = clientPreface + frame(type: 4)
        for index in 0..<1500 { bytes += frame(type: 6, payload: (0..<8).map { UInt8(truncatingIfNeeded: index >> $0) }) }
        guard case .fatal(let failure) = feed(bytes, to: server) else {
            Issue.record("PING flood not detected")
            return
        }
        #expect(failure.kind == .flood)
    }

    @Test func settingsFloodFromAPeerThatDoesNotRead() throws {
        let server = try HTTP2Session(role: .server)
        var bytes = clientPreface
        for _ in 0..<1500 { bytes += frame(type: 4) }
        guard case .fatal(let failure) = feed(bytes, to: server) else {
            Issue.record("SETTINGS flood not detected")
            return
        }
        #expect(failure.kind == .flood)
    }

    @Test func controlFramesBeyondTheBudgetEndTheSessionBeforeNghttp2SeesThem() throws {
        var configuration = HTTP2Configuration()
        configuration.controlFrameBurst = 5
        configuration.controlFrameRatePerSecond = 0
        for chunk in [1, 4, 64 * 1024] {
            let server = try HTTP2Session(role: .server, configuration: configuration)
            // The preface's SETTINGS, 4 PINGs and a PING ACK (not counted): within the budget.
            var within = clientPreface + frame(type: 4)
            for index in 0..<4 { within += frame(type: 6, payload: [UInt8](repeating: UInt8(index), count: 8)) }
            within += frame(type: 6, flags: 0x1, payload: [UInt8](repeating: 9, count: 8))
            #expect(feed(within, to: server, chunk: chunk) == .ok, "chunk \(chunk)")
            let acknowledged = drainOutput(server)
            // The sixth, split over reads when `chunk` is small: GOAWAY(ENHANCE_YOUR_CALM).
            let over = frame(type: 6, payload: [UInt8](repeating: 7, count: 8)) + frame(type: 4)
            guard case .fatal(let failure) = feed(over, to: server, chunk: chunk) else {
                Issue.record("chunk \(chunk): a sixth control frame accepted")
                continue
            }
            #expect(failure.kind == .flood && failure.code == .enhanceYourCalm)
            let output = drainOutput(server)
            #expect(frameTypes(acknowledged).filter { $0 == 6 }.count == 4, "chunk \(chunk): the 4 PINGs acknowledged")
            #expect(!frameTypes(output).contains(6), "chunk \(chunk): the PING over budget was not acknowledged")
            #expect(frameTypes(output).last == 7, "chunk \(chunk): GOAWAY last")
            #expect(server.isFinished)
        }
    }

    @Test func framesSentEarnControlTokensBack() throws {
        var configuration = HTTP2Configuration()
        configuration.controlFrameBurst = 3
        configuration.controlFrameRatePerSecond = 0
        // The recorders are the sessions' (weak) delegates: held here for the whole test.
        let (client, server, clientEvents, serverEvents) = try makePair(server: configuration)
        func ping(_ index: Int) -> [UInt8] { frame(type: 6, payload: [UInt8](repeating: UInt8(index), count: 8)) }
        // The client's SETTINGS and 2 PINGs spend the 3 tokens.
        #expect(pump(client, server).server == .ok)
        #expect(feed(ping(1) + ping(2), to: server) == .ok)
        #expect(feed(drainOutput(server), to: client) == .ok)
        // A request answered with HEADERS + DATA earns 2 back.
        _ = try client.submitRequest(headers: getRequest(), endStream: true)
        #expect(pump(client, server).server == .ok)
        #expect(serverEvents.heads[1] != nil && clientEvents.heads[1]?.status == 200)
        #expect(feed(ping(3) + ping(4), to: server) == .ok, "2 PINGs on the 2 tokens earned")
        _ = drainOutput(server)
        guard case .fatal(let failure) = feed(ping(5), to: server) else {
            Issue.record("a PING accepted with no token left")
            return
        }
        #expect(failure.kind == .flood)
    }

    @Test func zeroWindowStreamIsShutUntilTheClientOpensIt() throws {
        let server = try HTTP2Session(role: .server)
        let events = Recorder()
        server.delegate = events
        defer { withExtendedLifetime(events) {} }
        // SETTINGS_INITIAL_WINDOW_SIZE 0, then a GET on stream 1.
        let settings = frame(type: 4, payload: [0, 4, 0, 0, 0, 0])
        let encoded = try encodedRequest()
        #expect(feed(clientPreface + settings + frame(type: 1, flags: 0x5, stream: 1, payload: encoded), to: server) == .ok)
        #expect(events.heads[1] != nil)
        #expect(server.sendWindowIsShut(stream: 1))
        #expect(events.sendWindowChanges == [0])
        // WINDOW_UPDATE for stream 1.
        #expect(feed(frame(type: 8, stream: 1, payload: [0, 0, 0x10, 0]), to: server) == .ok)
        #expect(!server.sendWindowIsShut(stream: 1))
        #expect(events.sendWindowChanges == [0, 1])
        #expect(server.sendWindowIsShut(stream: 3), "a stream that is not open")
    }

    /// An HPACK block of a GET made by a client session (its first HEADERS frame's payload).
    private func encodedRequest() throws -> [UInt8] {
        let client = try HTTP2Session(role: .client)
        _ = try client.submitRequest(headers: getRequest(), endStream: true)
        var bytes = drainOutput(client)
        bytes.removeFirst(clientPreface.count)
        while bytes.count >= 9 {
            let length = Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2])
            if bytes[3] == 1 { return Array(bytes[9..<9 + length]) }
            bytes.removeFirst(9 + length)
        }
        throw HTTP2SubmitError(code: -1, description: "no HEADERS frame")
    }

    @Test func tooManySettingsEntriesInOneFrame() throws {
        let server = try HTTP2Session(role: .server)
        var entries: [UInt8] = []
        for _ in 0..<40 { entries += [0, 3, 0, 0, 0, 100] }
        _ = feed(clientPreface + frame(type: 4, payload: entries), to: server)
        _ = drainOutput(server)
        let failure = try #require(server.failure)
        #expect(failure.kind == .flood)
        #expect(failure.code == .enhanceYourCalm)
        #expect(failure.reason.contains("SETTINGS"))
    }

    @Test func emptyDataFrameFlood() throws {
        let client = try HTTP2Session(role: .client)
        let server = try HTTP2Session(role: .server)
        let stream = try client.submitRequest(headers: postRequest(), endStream: false)
        let opening = drainOutput(client)
        var flood: [UInt8] = []
        for _ in 0..<10 { flood += frame(type: 0, stream: stream) }
        guard case .fatal(let failure) = feed(opening + flood, to: server) else {
            Issue.record("empty DATA flood not detected")
            return
        }
        #expect(failure.kind == .emptyFrameFlood)
        #expect(failure.code == .enhanceYourCalm)
        let goAway = drainOutput(server)
        #expect(!goAway.isEmpty)
        #expect(server.isFinished)
    }

    /// Found by the http2-server fuzzer: a frame that is a connection error, in the same read as
    /// the empty DATA frame that ended the session, used to abort the process inside nghttp2
    /// 1.52 (`assert(iframe->state == NGHTTP2_IB_IGN_ALL)`), which kept parsing after a DATA
    /// frame's callback had terminated the session.
    @Test func emptyDataFrameFloodThenAConnectionErrorInTheSameRead() throws {
        let client = try HTTP2Session(role: .client)
        let server = try HTTP2Session(role: .server)
        let stream = try client.submitRequest(headers: postRequest(), endStream: false)
        let opening = drainOutput(client)
        // Two empty DATA frames (the second ends the session), then a WINDOW_UPDATE of length 0
        // (FRAME_SIZE_ERROR) and a HEADERS that must not reach the delegate.
        let bytes = opening + frame(type: 0, stream: stream) + frame(type: 0, stream: stream)
            + frame(type: 8, stream: stream) + frame(type: 1, flags: 0x5, stream: stream + 2, payload: [0x82, 0x84, 0x86])
        let events = Recorder()
        server.delegate = events
        defer { withExtendedLifetime(events) {} }
        guard case .fatal(let failure) = feed(bytes, to: server) else {
            Issue.record("empty DATA flood not detected")
            return
        }
        #expect(failure.kind == .emptyFrameFlood)
        #expect(failure.code == .enhanceYourCalm)
        #expect(events.heads[stream + 2] == nil)
        #expect(!drainOutput(server).isEmpty)
        #expect(server.isFinished)
    }

    @Test func continuationFlood() throws {
        let client = try HTTP2Session(role: .client)
        let server = try HTTP2Session(role: .server)
        _ = try client.submitRequest(headers: getRequest(), endStream: true)
        let opening = drainOutput(client)  // preface, SETTINGS, WINDOW_UPDATE, HEADERS for stream 1
        // Stream 3: HEADERS without END_HEADERS, then CONTINUATIONs that never end the block.
        var flood = frame(type: 1, flags: 0x1, stream: 3, payload: [0x82])  // :method GET, indexed
        for _ in 0..<50 { flood += frame(type: 9, stream: 3, payload: [0x84]) }  // :path /, indexed
        guard case .fatal(let failure) = feed(opening + flood, to: server) else {
            Issue.record("CONTINUATION flood not detected")
            return
        }
        #expect(failure.kind == .continuationFlood)
    }
}
