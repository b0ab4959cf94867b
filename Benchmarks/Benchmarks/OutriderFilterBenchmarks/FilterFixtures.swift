import Glibc
import OutriderCore
import OutriderFilters
import OutriderHTTP
import OutriderHTTP1

/// Request heads for the filter benchmarks: an API client's GET with 7 header fields, the last
/// one carrying the credentials.
enum FilterPayloads {
    static func apiRequest(credentials: String) -> String {
        "GET /api/v1/orders?status=open&limit=20 HTTP/1.1\r\n"
            + "Host: api.example.com\r\n"
            + "User-Agent: orders-client/2.4.1 (Linux; x86_64)\r\n"
            + "Accept: application/json\r\n"
            + "Accept-Encoding: gzip, br\r\n"
            + "X-Request-ID: 7c9e6679-7425-40de-944b-e07fc1f90ae7\r\n"
            + "Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
            + credentials + "\r\n"
            + "\r\n"
    }

    /// config/examples/api-keys: `reporting` is stored as a sha256 digest, `ci-bot` in plain.
    static let apiKeyHeader = "X-Api-Key: example-key-reporting-93ab41e7"
    static let bearerES256 = "Authorization: Bearer " + JWTFixtures.es256
}

/// Filters configured as `config/auth-container.yaml` configures them (its `jwt` section, the
/// example API keys), built the way `FilterFactory` builds them.
enum FilterSetups {
    static func apiKeyAuth() -> AuthFilter {
        AuthFilter(realm: "app", anonymous: [.init(pathPrefix: "/healthz", methods: ["GET"])],
                   apiKeyHeader: "x-api-key",
                   apiKeys: [
                       .init(name: "ci-bot", secret: .plain(Array("example-key-ci-bot-6f1d2c0a".utf8))),
                       .init(name: "reporting",
                             secret: .sha256(hexBytes("1752b02b6ec42cc2a2e1698cb6dd570129e7683d44d18bb89ba074c59b0f046d"))),
                   ],
                   passwords: [], jwt: nil, build: FilterBuildContext())
    }

    /// `FilterFactory`'s verifier for `issuer`, `audiences: [app]`, `algorithms: [RS256, ES256]`,
    /// `identity_claim: sub`, `clock_skew: 30s`, over config/examples/jwks.json.
    static func verifier() -> JWTVerifier {
        guard case .success(let keys) = JSONWebKeySet.parse(Array(JWTFixtures.jwks.utf8)), keys.keys.count == 2 else {
            fatalError("the example JWKS did not parse")
        }
        return JWTVerifier(keys: keys, algorithms: [.RS256, .ES256], issuer: JWTFixtures.issuer,
                           audiences: [JWTFixtures.audience], clockSkewSeconds: 30, requiredClaims: ["sub"])
    }

    static func jwtAuth() -> AuthFilter {
        let settings = AuthFilter.JWTSettings(
            keys: StaticJWTKeys(verifier()),
            sources: [.authorizationBearer, .cookie(ByteString("token"))],
            identityClaim: "sub",
            claimsToHeaders: [(claim: "email", header: ByteString(lowercased: "x-auth-request-email"))],
            forwardToken: true)
        return AuthFilter(realm: "app", anonymous: [.init(pathPrefix: "/healthz", methods: ["GET"])],
                          apiKeyHeader: nil, apiKeys: [], passwords: [], jwt: settings,
                          build: FilterBuildContext())
    }

    /// 1,000 requests/s with a burst of 100, keyed by the client address (the default). The
    /// fixture's clock advances 1 ms per request, so every request is allowed and the bucket
    /// stays at the same level: the steady "allowed" path, one compare-and-swap per request.
    static func rateLimit() -> RateLimitFilter {
        RateLimitFilter(requestsPerSecond: 1000, burst: 100, key: .clientIP, seed: 0x9E37_79B9_7F4A_7C15)
    }

    /// Three request templates (literals and variables); the `set` names are removed from the
    /// client's headers first.
    static func headers() -> HeadersFilter {
        func operation(_ name: String, _ template: String) -> HeadersFilter.Operation {
            guard let value = HeaderTemplate(template) else { fatalError("template \(template)") }
            return .init(name: ByteString(lowercased: name), value: value)
        }
        return HeadersFilter(
            requestSet: [operation("x-auth-client-ip", "${client_ip}"),
                         operation("x-original-url", "${scheme}://${host}${path}")],
            requestAdd: [operation("x-edge-request", "id=${request_id}; method=${method}; port=${client_port}")],
            requestRemove: [], responseSet: [], responseAdd: [], responseRemove: [])
    }

    static func hexBytes(_ hex: String) -> [UInt8] {
        let digits = Array(hex.utf8)
        func nibble(_ c: UInt8) -> UInt8 { c <= UInt8(ascii: "9") ? c - UInt8(ascii: "0") : c - UInt8(ascii: "a") + 10 }
        return stride(from: 0, to: digits.count, by: 2).map { nibble(digits[$0]) << 4 | nibble(digits[$0 + 1]) }
    }
}

/// A chain of filters run through `decodeHeaders` on one reused `FilterContext`, as a client
/// connection runs its route's chain for each request.
///
/// The head is parsed once (`HeadParser`); its path normalized once (`PathNormalizer`, what
/// the proxy keeps in `worker.pathScratch`). Each pass then does what
/// `Downstream.prepareFilterContext` and `runFilters` do: `reset(scratch:)`, head buffer and
/// header table, method / host ranges in the head, path, query, client address and request id
/// copied into scratch, monotonic and wall clock; then the filters in order, then what
/// `endFilters` does (`headers = nil`, `serial += 1`). Not mirrored: the proxy acquires and
/// releases the scratch buffer from the worker's pool around the chain (a pop and a push on an
/// array with spare capacity); here the same buffer is reused.
///
/// Filters mark the client headers they strip as `.removed` in the table, so every pass starts
/// from a copy of the table as parsed (a `memcpy` of the entries).
final class FilterChainFixture: @unchecked Sendable {
    let filters: [any HTTPFilter]
    let context: FilterContext
    let scratch = ByteBuffer(capacity: 80 * 1024)   // the worker's pool buffers: 64 KiB + 16 KiB
    let head: ByteBuffer
    let table: HeaderTable
    let pristine: UnsafeMutablePointer<HeaderEntry>
    let parsed: MessageHead
    let normalized: ByteBuffer
    let pathLength: Int
    let queryLength: Int
    let hostRange: Range<Int>
    let requestID: Range<Int>
    let clientIP = ByteString("10.24.3.17")
    let clientPort: UInt16 = 48_612
    /// Monotonic nanoseconds: the proxy passes its loop's cached time; here it advances by
    /// `tick` per request.
    var monotonic: Int64 = 1_000_000_000_000
    let tick: Int64 = 1_000_000

    init(filters: [any HTTPFilter], request: String) {
        self.filters = filters
        var text = request
        let head = ByteBuffer(capacity: 16 * 1024)
        text.withUTF8 { precondition(head.append($0.baseAddress!, count: $0.count)) }
        let table = HeaderTable(capacity: 100)
        var parser = HeadParser(kind: .request, limits: HeadLimits(maxHeaderBytes: 64 * 1024, maxHeaders: 100))
        var parsedHead = MessageHead()
        parser.begin(at: head.readerIndex)
        let status = parser.parse(head, headers: table, head: &parsedHead)
        precondition(status == .complete, "parse: \(status)")
        let pristine = UnsafeMutablePointer<HeaderEntry>.allocate(capacity: table.count)
        pristine.initialize(from: table.entries, count: table.count)

        let normalized = ByteBuffer(capacity: 4096)
        let base = UnsafePointer(head.base)
        guard let result = PathNormalizer.normalize(base + Int(parsedHead.targetStart), Int(parsedHead.targetLength),
                                                    into: normalized) else { fatalError("path refused") }
        var host = 0..<0
        var id = 0..<0
        for index in 0..<table.count {
            let entry = table[index]
            let value = Int(entry.valueStart)..<Int(entry.valueStart + entry.valueLength)
            if entry.kind == .host { host = value }
            if entry.kind == .xRequestID { id = value }
        }
        precondition(!host.isEmpty && !id.isEmpty && Int(parsedHead.requestIDIndex) >= 0)
        self.head = head
        self.table = table
        self.pristine = pristine
        self.parsed = parsedHead
        self.normalized = normalized
        pathLength = result.pathLength
        queryLength = result.queryLength
        hostRange = host
        requestID = id
        context = FilterContext(worker: FilterWorkerState(workerIndex: 0, offLoop: nil), scratch: scratch)
        context.onResume = {}
    }

    deinit { pristine.deallocate() }

    @inline(__always)
    func prepare() {
        table.entries.update(from: pristine, count: table.count)
        let context = self.context
        context.reset(scratch: scratch)
        context.headBase = UnsafePointer(head.base)
        context.headers = table
        context.method = parsed.method
        context.methodRange = Int(parsed.methodStart)..<Int(parsed.methodStart + parsed.methodLength)
        context.hostRange = hostRange
        let path = UnsafePointer(normalized.readPointer)
        context.pathRange = context.store(path, pathLength)
        context.queryRange = context.store(path + pathLength, queryLength)
        context.clientIPRange = context.store(clientIP)
        context.clientPort = clientPort
        context.requestIDRange = context.store(UnsafePointer(head.base) + requestID.lowerBound, requestID.count)
        monotonic &+= tick
        context.monotonicNow = monotonic
        var wall = timespec()
        clock_gettime(CLOCK_REALTIME, &wall)
        context.unixNow = Int64(wall.tv_sec)
    }

    /// One request through the chain; returns the scratch bytes and header lines it produced.
    @inline(__always)
    func runOnce() -> Int {
        prepare()
        var position = 0
        while position < filters.count {
            switch filters[position].decodeHeaders(context) {
            case .proceed:
                position += 1
                context.filterState = 0
            case .pause, .respond:
                fatalError("the chain did not proceed")
            }
        }
        let produced = context.scratch.writerIndex &+ context.requestHeaderLines.count
        context.headers = nil
        context.serial &+= 1
        return produced
    }

    // MARK: checks in setup (allocating; never measured)

    /// The header lines the chain added for the upstream, as text.
    func addedRequestHeaders() -> [String] {
        context.requestHeaderLines.map { line in
            String(decoding: UnsafeBufferPointer(start: scratch.base + line.lowerBound, count: line.count), as: UTF8.self)
        }
    }

    func scratchText(_ range: Range<Int>?) -> String {
        guard let range else { return "" }
        return String(decoding: UnsafeBufferPointer(start: scratch.base + range.lowerBound, count: range.count), as: UTF8.self)
    }

    func runAndCheck(_ expected: [String]) {
        _ = runOnce()
        let added = addedRequestHeaders()
        precondition(added == expected, "unexpected request headers: \(added)")
    }
}

/// `JWTVerifier.verify` of one token with no cache in front: base64url, both JSON parses, the
/// signature check through libcrypto, the claim checks.
final class JWTColdFixture: @unchecked Sendable {
    let verifier = FilterSetups.verifier()
    let token: UnsafeMutableRawBufferPointer
    let now: Int64

    init(token text: String) {
        token = .allocate(byteCount: text.utf8.count, alignment: 1)
        token.copyBytes(from: text.utf8)
        var wall = timespec()
        clock_gettime(CLOCK_REALTIME, &wall)
        now = Int64(wall.tv_sec)
        precondition(verifyOnce() == Int(JWTFixtures.expiresAt))
    }

    deinit { token.deallocate() }

    @inline(__always)
    func verifyOnce() -> Int {
        switch verifier.verify(UnsafeRawBufferPointer(token), now: now) {
        case .success(let verified): return Int(verified.expiresAt ?? 0)
        case .failure(let failure): fatalError("verify: \(failure)")
        }
    }
}
