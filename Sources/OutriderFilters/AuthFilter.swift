import CAtomics
import CCrypt
import COpenSSL
import Glibc
import OutriderCore
import OutriderHTTP

/// SPEC §4 `auth`: API keys, Basic (htpasswd) and JWT; a request passes when any configured
/// method accepts it. Identity goes to the app as `x-auth-request-user` (and `-email`,
/// `-groups` where known); whatever the client sent under those names, or under any header
/// this filter sets, is removed first, also on anonymous paths.
public final class AuthFilter: HTTPFilter, @unchecked Sendable {
    public struct AnonymousRule: Sendable {
        public let pathPrefix: ByteString      // without a trailing slash, except "/"
        public let methods: [ByteString]
        public init(pathPrefix: String, methods: [String]) {
            self.pathPrefix = segmentPrefix(pathPrefix)
            self.methods = methods.map { ByteString($0) }
        }
    }

    public struct APIKey: Sendable {
        public enum Secret: Sendable { case plain([UInt8]), sha256([UInt8]) }
        public let name: ByteString
        public let secret: Secret
        public init(name: String, secret: Secret) { self.name = ByteString(name); self.secret = secret }
    }

    public struct PasswordEntry: Sendable {
        public let user: [UInt8]
        public let hash: String
        public init(user: String, hash: String) { self.user = Array(user.utf8); self.hash = hash }
        var isBcrypt: Bool { hash.hasPrefix("$2") }
    }

    public enum TokenSource: Sendable {
        case authorizationBearer
        case header(ByteString)
        case cookie(ByteString)
        case query(ByteString)
    }

    public struct JWTSettings: Sendable {
        public let keys: JWTKeySource
        public let sources: [TokenSource]
        public let identityClaim: String
        public let claimsToHeaders: [(claim: String, header: ByteString)]
        public let forwardToken: Bool
        public init(keys: JWTKeySource, sources: [TokenSource], identityClaim: String,
                    claimsToHeaders: [(claim: String, header: ByteString)], forwardToken: Bool) {
            self.keys = keys
            self.sources = sources
            self.identityClaim = identityClaim
            self.claimsToHeaders = claimsToHeaders
            self.forwardToken = forwardToken
        }
    }

    public struct ExternalSettings: Sendable {
        public let host: String
        public let port: UInt16
        /// Path and query of the service URL.
        public let target: [UInt8]
        public let timeoutNanos: Int64
        public let headersToUpstream: [ByteString]
        public let failOpen: Bool
        public let cacheTTLNanos: Int64
        public init(host: String, port: UInt16, target: String, timeoutNanos: Int64, headersToUpstream: [String],
                    failOpen: Bool, cacheTTLNanos: Int64) {
            self.host = host
            self.port = port
            self.target = Array(target.utf8)
            self.timeoutNanos = timeoutNanos
            self.headersToUpstream = headersToUpstream.map { ByteString(lowercased: $0) }
            self.failOpen = failOpen
            self.cacheTTLNanos = cacheTTLNanos
        }
    }

    public var kind: StaticString { "auth" }
    let anonymous: [AnonymousRule]
    let apiKeyHeader: ByteString?
    let apiKeys: [APIKey]
    let passwords: [PasswordEntry]
    let jwt: JWTSettings?
    let external: ExternalSettings?
    let externalCacheSlot: Int
    /// The OIDC login flow (`oidc`), nil without it.
    let oidc: OIDCFlow?
    /// Client headers removed before the filter runs (besides `x-auth-request-*`).
    let ownedHeaders: [ByteString]
    /// The 401 challenges, one line each, precomputed; the Bearer one has a variant for when a
    /// token was presented (RFC 6750 `error="invalid_token"`).
    let challenges: ByteString
    let challengesInvalidToken: ByteString
    let cacheSlot: Int
    let tokenCacheSlot: Int
    /// bcrypt checks waiting or running, over all workers; beyond the cap logins are refused
    /// rather than queued without bound.
    let pendingBcrypt = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    static let maxPendingBcrypt: UInt64 = 256
    /// How long a verified Basic login (user, password) skips bcrypt.
    static let passwordCacheNanos: Int64 = 300_000_000_000

    static let authRequestPrefix = ByteString("x-auth-request-")
    static let authorization = ByteString("authorization")
    static let cookie = ByteString("cookie")
    static let userHeader = ByteString("x-auth-request-user")
    static let emailHeader = ByteString("x-auth-request-email")
    static let groupsHeader = ByteString("x-auth-request-groups")

    public init(realm: String, anonymous: [AnonymousRule], apiKeyHeader: String?, apiKeys: [APIKey],
                passwords: [PasswordEntry], jwt: JWTSettings?, external: ExternalSettings? = nil,
                oidc: OIDCSettings? = nil, build: FilterBuildContext) {
        self.anonymous = anonymous
        self.apiKeyHeader = apiKeyHeader.map { ByteString(lowercased: $0) }
        self.apiKeys = apiKeys
        self.passwords = passwords
        self.jwt = jwt
        self.external = external
        var owned: [ByteString] = []
        if let jwt { owned += jwt.claimsToHeaders.map(\.header) }
        if let external { owned += external.headersToUpstream }
        ownedHeaders = owned
        // The config loader refuses `"`, `\` and controls in a realm: it is quoted as it is.
        let quotedRealm = realm
        var lines = ""
        var linesInvalid = ""
        if !passwords.isEmpty {
            lines += "www-authenticate: Basic realm=\"\(quotedRealm)\"\r\n"
            linesInvalid += "www-authenticate: Basic realm=\"\(quotedRealm)\"\r\n"
        }
        if jwt != nil || oidc != nil {
            lines += "www-authenticate: Bearer realm=\"\(quotedRealm)\"\r\n"
            linesInvalid += "www-authenticate: Bearer realm=\"\(quotedRealm)\", error=\"invalid_token\"\r\n"
        }
        if let apiKeyHeader {
            lines += "www-authenticate: ApiKey realm=\"\(quotedRealm)\", header=\"\(apiKeyHeader)\"\r\n"
            linesInvalid += "www-authenticate: ApiKey realm=\"\(quotedRealm)\", header=\"\(apiKeyHeader)\"\r\n"
        }
        challenges = ByteString(lines)
        challengesInvalidToken = ByteString(linesInvalid)
        cacheSlot = build.allocateCacheSlot()
        tokenCacheSlot = build.allocateCacheSlot()
        externalCacheSlot = build.allocateCacheSlot()
        self.oidc = oidc.map { OIDCFlow($0, build: build) }
        pendingBcrypt.initialize(to: 0)
    }

    deinit { pendingBcrypt.deallocate() }

    // MARK: the chain

    public func decodeHeaders(_ context: FilterContext) -> FilterVerdict {
        if context.filterState == Self.externalPending, let external {
            return finishExternal(external, context)
        }
        if context.filterState >= OIDCFlow.firstState, let oidc {
            return oidc.resume(self, context)
        }
        if context.filterState == 0 {
            // First visit (not a resume after bcrypt): strip what only this filter may set.
            context.removeHeaders(prefix: Self.authRequestPrefix, underscoresAsDashes: true)
            for name in ownedHeaders { context.removeHeaderAnySpelling(name) }
            // The oauth2-proxy endpoints (/oauth2/start, callback, sign_out, auth, userinfo).
            if let oidc, let verdict = oidc.endpoint(self, context) { return verdict }
            if isAnonymous(context) {
                oidc?.stripOwnCookies(context)
                return .proceed
            }
        }
        var tokenPresented = false

        if let header = apiKeyHeader, let value = context.headerValue(header) {
            if let key = matchAPIKey(value) { return accept(context, identity: key.name) }
            context.deniedMethod = "api_key"
        }
        if !passwords.isEmpty, let verdict = checkBasic(context) { return verdict }
        if let jwt, let token = findToken(jwt, context) {
            tokenPresented = true
            switch verifyToken(jwt, token, context) {
            case .proceed: return .proceed
            case .pause, .respond: break
            }
        }
        if let oidc {
            if let verdict = oidc.authenticate(self, context) { return verdict }
            var presented = false
            if oidc.checkBearer(self, context, purpose: .proxy, presented: &presented) { return .proceed }
            if presented {
                tokenPresented = true
                context.deniedMethod = "oidc"
            }
        }
        if apiKeyHeader != nil, let bearer = bearerToken(context) {
            if let key = matchAPIKey(bearer) { return accept(context, identity: key.name) }
            tokenPresented = true
            if jwt == nil && oidc == nil { context.deniedMethod = "api_key" }
        }
        if let external { return startExternal(external, context) }
        if let oidc, !tokenPresented, oidc.wantsLogin(context) { return oidc.loginForRequest(context) }
        return deny(context, tokenPresented: tokenPresented)
    }

    /// Nobody was accepted after an OIDC refresh failed: a browser goes to the provider,
    /// others get 401.
    func finishDenied(_ context: FilterContext) -> FilterVerdict {
        if let oidc, oidc.wantsLogin(context) { return oidc.loginForRequest(context) }
        return deny(context, tokenPresented: false)
    }

    private func isAnonymous(_ context: FilterContext) -> Bool {
        guard !anonymous.isEmpty else { return false }
        let (path, pathLength) = context.bytes(context.pathRange)
        let (method, methodLength) = context.headBytes(context.methodRange)
        for rule in anonymous {
            guard pathHasSegmentPrefix(path, pathLength, rule.pathPrefix) else { continue }
            if rule.methods.isEmpty { return true }
            for allowed in rule.methods where allowed.equals(method, count: methodLength) { return true }
        }
        return false
    }

    private func accept(_ context: FilterContext, identity: ByteString) -> FilterVerdict {
        let range = identity.withPointer { context.store($0, $1) }
        context.identity = range
        addIdentityHeaders(context)
        return .proceed
    }

    func addIdentityHeadersForExternal(_ context: FilterContext) { addIdentityHeaders(context) }

    private func addIdentityHeaders(_ context: FilterContext) {
        guard let identity = context.identity else { return }
        let (pointer, count) = context.bytes(identity)
        context.addRequestHeader(Self.userHeader, pointer, count)
        if let email = context.identityEmail {
            let (emailPointer, emailCount) = context.bytes(email)
            context.addRequestHeader(Self.emailHeader, emailPointer, emailCount)
        }
    }

    private func deny(_ context: FilterContext, tokenPresented: Bool) -> FilterVerdict {
        let lines = context.store(tokenPresented ? challengesInvalidToken : challenges)
        context.reply = FilterReply(status: 401, reason: .unauthenticated, headerLines: lines)
        let presented = tokenPresented || context.deniedMethod.utf8CodeUnitCount > 0
        context.deniedReason = presented ? "invalid_credentials" : "missing_credentials"
        if !presented { context.deniedMethod = "none" }
        return .respond
    }

    // MARK: API keys

    /// Every key is compared (constant time per comparison, no early exit between keys).
    private func matchAPIKey(_ presented: (UnsafePointer<UInt8>, Int)) -> APIKey? {
        // The digest stays on the stack: nothing is allocated per request.
        var digest: TokenDigest = (0, 0, 0, 0)
        var hashed = false
        var found: APIKey?
        for key in apiKeys {
            switch key.secret {
            case .plain(let secret):
                if constantTimeEqual(presented.0, presented.1, secret) && found == nil { found = key }
            case .sha256(let expected):
                if !hashed {
                    let words = sha256(UnsafeRawBufferPointer(start: presented.0, count: presented.1))
                    // Back to the digest's byte order.
                    digest = (words.0.bigEndian, words.1.bigEndian, words.2.bigEndian, words.3.bigEndian)
                    hashed = true
                }
                let same = withUnsafeBytes(of: &digest) {
                    constantTimeEqual($0.baseAddress!.assumingMemoryBound(to: UInt8.self), 32, expected)
                }
                if same && found == nil { found = key }
            }
        }
        return found
    }

    // MARK: Basic

    /// Nil when no Basic credentials were sent.
    private func checkBasic(_ context: FilterContext) -> FilterVerdict? {
        if context.asyncOutcome != .none {
            // bcrypt finished off the loop.
            let outcome = context.asyncOutcome
            context.asyncOutcome = .none
            context.filterState = 2
            if outcome == .allowed, let user = basicCredentials(context)?.user {
                return acceptUser(context, user)
            }
            return nil
        }
        guard let credentials = basicCredentials(context) else { return nil }
        context.deniedMethod = "basic"
        guard let entry = passwordEntry(for: credentials.user) else { return nil }
        if !entry.isBcrypt {
            // {SHA}base64(sha1(password)): cheap, checked on the loop.
            var digest = [UInt8](repeating: 0, count: 20)
            _ = digest.withUnsafeMutableBufferPointer { SHA1(credentials.password.0, credentials.password.1, $0.baseAddress) }
            let expected = Array(entry.hash.utf8.dropFirst(5))
            guard let decoded = base64Decode(expected), decoded.count == 20 else { return nil }
            let same = digest.withUnsafeBufferPointer { constantTimeEqual($0.baseAddress!, 20, decoded) }
            return same ? acceptUser(context, credentials.user) : nil
        }
        let cache = context.worker.cache(cacheSlot) { PasswordCache() }
        let cacheKey = credentialHash(credentials.user, credentials.password, entry.hash)
        if cache.contains(cacheKey, now: context.monotonicNow) { return acceptUser(context, credentials.user) }
        if context.filterState == 2 { return nil }   // bcrypt already said no for this request
        guard let runner = context.worker.offLoop else { return nil }
        guard catomic_add(pendingBcrypt, 1) <= Self.maxPendingBcrypt else {
            // Too many logins in flight: a temporary condition, not a wrong password.
            _ = catomic_add(pendingBcrypt, UInt64.max)   // undo
            let lines = context.store(ByteString("retry-after: 1\r\n"))
            context.reply = FilterReply(status: 503, reason: .authUnavailable, headerLines: lines)
            context.deniedMethod = "basic"
            context.deniedReason = "overloaded"
            return .respond
        }
        let password = Array(UnsafeBufferPointer(start: credentials.password.0, count: credentials.password.1))
        let hash = entry.hash
        let pending = UnsafeSendablePointer(pendingBcrypt)
        let now = context.monotonicNow
        let serial = context.serial
        context.filterState = 1
        runner.run({ bcryptMatches(password: password, hash: hash) }, completion: { matched in
            _ = catomic_add(pending.pointer, UInt64.max)
            if matched { cache.insert(cacheKey, expires: now + Self.passwordCacheNanos) }
            guard context.serial == serial else { return }   // the client went away meanwhile
            context.asyncOutcome = matched ? .allowed : .denied
            context.onResume?()
        })
        return .pause
    }

    private func passwordEntry(for user: (UnsafePointer<UInt8>, Int)) -> PasswordEntry? {
        for entry in passwords where entry.user.count == user.1 && user.1 > 0 {
            if entry.user.withUnsafeBufferPointer({ memoryEquals($0.baseAddress!, user.0, user.1) }) { return entry }
        }
        return nil
    }

    private func acceptUser(_ context: FilterContext, _ user: (UnsafePointer<UInt8>, Int)) -> FilterVerdict {
        context.identity = context.store(user.0, user.1)
        addIdentityHeaders(context)
        return .proceed
    }

    /// `Authorization: Basic base64(user:password)`, decoded into the scratch buffer.
    private func basicCredentials(_ context: FilterContext) -> (user: (UnsafePointer<UInt8>, Int), password: (UnsafePointer<UInt8>, Int))? {
        guard let (value, count) = context.headerValue(Self.authorization), count > 6,
              equalsLowercase(value, 6, "basic ") else { return nil }
        var start = 6
        while start < count && value[start] == 0x20 { start += 1 }
        guard let decoded = base64Decode(Array(UnsafeBufferPointer(start: value + start, count: count - start))),
              let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        let range = decoded.withUnsafeBufferPointer { context.store($0.baseAddress!, $0.count) }
        let base = UnsafePointer(context.scratch.base) + range.lowerBound
        return ((base, colon), (base + colon + 1, decoded.count - colon - 1))
    }

    // MARK: JWT

    private func bearerToken(_ context: FilterContext) -> (UnsafePointer<UInt8>, Int)? {
        guard let (value, count) = context.headerValue(Self.authorization), count > 7,
              equalsLowercase(value, 7, "bearer ") else { return nil }
        var start = 7
        while start < count && value[start] == 0x20 { start += 1 }
        return start < count ? (value + start, count - start) : nil
    }

    private func findToken(_ settings: JWTSettings, _ context: FilterContext) -> (pointer: UnsafePointer<UInt8>, count: Int, source: TokenSource)? {
        for source in settings.sources {
            switch source {
            case .authorizationBearer:
                if let token = bearerToken(context) { return (token.0, token.1, source) }
            case .header(let name):
                if let value = context.headerValue(name) { return (value.0, value.1, source) }
            case .cookie(let name):
                if let value = cookieValue(context, name) { return (value.0, value.1, source) }
            case .query(let name):
                if let value = queryValue(context, name) { return (value.0, value.1, source) }
            }
        }
        return nil
    }

    private func verifyToken(_ settings: JWTSettings, _ token: (pointer: UnsafePointer<UInt8>, count: Int, source: TokenSource),
                             _ context: FilterContext) -> FilterVerdict {
        let cache = context.worker.cache(tokenCacheSlot) { VerifiedTokenCacheBox() }
        let keys = settings.keys
        let generation = keys.generation
        if cache.generation != generation {
            // The key set changed (JWKS refresh): tokens verified with the old one verify again.
            cache.cache.removeAll()
            cache.generation = generation
        }
        let raw = UnsafeRawBufferPointer(start: token.pointer, count: token.count)
        let digest: TokenDigest = sha256(raw)
        let verified: VerifiedJWT
        if let hit = cache.cache.lookup(digest, now: context.unixNow) {
            verified = hit
        } else {
            guard let verifier = keys.currentVerifier() else {
                context.deniedMethod = "jwt"
                return .respond
            }
            switch verifier.verify(raw, now: context.unixNow) {
            case .success(let token):
                verified = token
                // A token without `exp` is re-verified after five minutes at the latest.
                cache.cache.insert(digest, token, expiresAt: token.expiresAt ?? context.unixNow + 300, now: context.unixNow)
            case .failure(let failure):
                if failure == .unknownKey { keys.unknownKeySeen() }
                context.deniedMethod = "jwt"
                return .respond
            }
        }
        context.verifiedToken = verified
        guard let identity = verified.claimString(settings.identityClaim) else {
            context.deniedMethod = "jwt"
            return .respond
        }
        let identityStart = context.scratch.writerIndex
        appendSafeHeaderValue(identity, context.scratch)
        context.identity = identityStart..<context.scratch.writerIndex
        if let email = verified.claimString("email") {
            let start = context.scratch.writerIndex
            appendSafeHeaderValue(email, context.scratch)
            context.identityEmail = start..<context.scratch.writerIndex
        }
        addIdentityHeaders(context)
        let groups = verified.claimString("groups")
        if let groups { addLine(context, Self.groupsHeader, groups) }
        for mapping in settings.claimsToHeaders {
            // The identity headers are written once: a mapping onto one of them adds nothing.
            if mapping.header == Self.userHeader { continue }
            if mapping.header == Self.emailHeader && context.identityEmail != nil { continue }
            if mapping.header == Self.groupsHeader && groups != nil { continue }
            if let value = verified.claimString(mapping.claim) { addLine(context, mapping.header, value) }
        }
        if !settings.forwardToken {
            switch token.source {
            case .authorizationBearer: context.removeHeader(Self.authorization)
            case .header(let name): context.removeHeader(name)
            case .cookie, .query: break   // other cookies and parameters stay intact
            }
        }
        return .proceed
    }

    private func addLine(_ context: FilterContext, _ name: ByteString, _ value: String) {
        let scratch = context.scratch
        let start = scratch.writerIndex
        guard scratch.writableBytes > name.count + value.utf8.count + 4 else { return }
        scratch.append(name)
        scratch.append(": ")
        appendSafeHeaderValue(value, scratch)
        scratch.append("\r\n")
        context.requestHeaderLines.append(start..<scratch.writerIndex)
    }

    private func cookieValue(_ context: FilterContext, _ name: ByteString) -> (UnsafePointer<UInt8>, Int)? {
        guard let headers = context.headers else { return nil }
        for index in 0..<headers.count {
            let entry = headers[index]
            guard entry.kind != .removed,
                  Self.cookie.equalsIgnoringCase(context.headBase + Int(entry.nameStart), count: Int(entry.nameLength)) else { continue }
            let value = context.headBase + Int(entry.valueStart)
            let count = Int(entry.valueLength)
            var position = 0
            while position < count {
                while position < count && (value[position] == 0x20 || value[position] == UInt8(ascii: ";")) { position += 1 }
                let pairStart = position
                while position < count && value[position] != UInt8(ascii: ";") { position += 1 }
                let pair = value + pairStart
                let pairLength = position - pairStart
                if pairLength > name.count, pair[name.count] == UInt8(ascii: "="), name.equals(pair, count: name.count) {
                    return (pair + name.count + 1, pairLength - name.count - 1)
                }
            }
        }
        return nil
    }

    private func queryValue(_ context: FilterContext, _ name: ByteString) -> (UnsafePointer<UInt8>, Int)? {
        let (query, count) = context.bytes(context.queryRange)
        var position = count > 0 && query[0] == UInt8(ascii: "?") ? 1 : 0
        while position < count {
            let pairStart = position
            while position < count && query[position] != UInt8(ascii: "&") { position += 1 }
            let pair = query + pairStart
            let pairLength = position - pairStart
            if pairLength > name.count, pair[name.count] == UInt8(ascii: "="), name.equals(pair, count: name.count) {
                return (pair + name.count + 1, pairLength - name.count - 1)
            }
            position += 1
        }
        return nil
    }
}

// MARK: external auth (SPEC §4: nginx auth_request / Traefik ForwardAuth semantics)

extension AuthFilter {
    static let externalPending = 3
    static let relayedHeaders = ["location", "www-authenticate", "set-cookie", "content-type"]

    /// Asks the auth service: GET with the client's headers (no body) and x-forwarded-*.
    func startExternal(_ settings: ExternalSettings, _ context: FilterContext) -> FilterVerdict {
        let cacheKey: SHA256Digest? = settings.cacheTTLNanos > 0 ? externalCacheKey(context) : nil
        if let cacheKey {
            let cache = context.worker.cache(externalCacheSlot) { ExternalAuthCache() }
            if let hit = cache.lookup(cacheKey, now: context.monotonicNow) {
                applyAllowed(settings, hit, context)
                return .proceed
            }
        }
        guard let client = context.worker.subrequests else { return failExternal(settings, context) }
        var head: [UInt8] = []
        head.reserveCapacity(2048)
        head += Array("GET ".utf8) + settings.target + Array(" HTTP/1.1\r\nhost: \(settings.host):\(settings.port)\r\n".utf8)
        if let headers = context.headers {
            for index in 0..<headers.count {
                let entry = headers[index]
                switch entry.kind {
                case .other, .trailer, .xRequestID, .traceparent, .tracestate, .expect:
                    break
                default:
                    continue   // host, framing, hop-by-hop, removed, x-forwarded-* (ours follow)
                }
                if entry.kind == .expect { continue }
                head += UnsafeBufferPointer(start: context.headBase + Int(entry.nameStart), count: Int(entry.nameLength))
                head += [UInt8(ascii: ":"), UInt8(ascii: " ")]
                head += UnsafeBufferPointer(start: context.headBase + Int(entry.valueStart), count: Int(entry.valueLength))
                head += [0x0D, 0x0A]
            }
        }
        func line(_ name: String, _ value: (UnsafePointer<UInt8>, Int)) {
            head += Array(name.utf8) + [UInt8(ascii: ":"), UInt8(ascii: " ")]
            head += UnsafeBufferPointer(start: value.0, count: value.1)
            head += [0x0D, 0x0A]
        }
        line("x-forwarded-method", context.headBytes(context.methodRange))
        let uriStart = context.scratch.writerIndex
        context.scratch.append(from: context.scratch, offset: context.pathRange.lowerBound, count: context.pathRange.count)
        context.scratch.append(from: context.scratch, offset: context.queryRange.lowerBound, count: context.queryRange.count)
        line("x-forwarded-uri", context.bytes(uriStart..<context.scratch.writerIndex))
        line("x-forwarded-host", context.headBytes(context.hostRange))
        head += Array((context.isTLS ? "x-forwarded-proto: https\r\n" : "x-forwarded-proto: http\r\n").utf8)
        line("x-forwarded-for", context.bytes(context.clientIPRange))
        head += Array("connection: close\r\n\r\n".utf8)

        let serial = context.serial
        context.filterState = Self.externalPending
        client.send(head: head, host: settings.host, port: settings.port, timeoutNanos: settings.timeoutNanos) { outcome in
            guard context.serial == serial else { return }
            if case .response(let response) = outcome, (200..<300).contains(response.status), let cacheKey {
                let cache = context.worker.cache(self.externalCacheSlot) { ExternalAuthCache() }
                cache.insert(cacheKey, response, expires: context.monotonicNow + settings.cacheTTLNanos)
            }
            context.subrequestOutcome = outcome
            context.onResume?()
        }
        return .pause
    }

    func finishExternal(_ settings: ExternalSettings, _ context: FilterContext) -> FilterVerdict {
        guard case .response(let response)? = context.subrequestOutcome, response.status < 500 else {
            return failExternal(settings, context)
        }
        if (200..<300).contains(response.status) {
            applyAllowed(settings, response, context)
            return .proceed
        }
        // 3xx / 4xx: relayed as it came (status, Location, WWW-Authenticate, Set-Cookie, body).
        let scratch = context.scratch
        let start = scratch.writerIndex
        for name in Self.relayedHeaders {
            for value in response.values(name) {
                scratch.append(ByteString(name))
                scratch.append(": ")
                value.withUnsafeBufferPointer { scratch.append($0.baseAddress!, count: min($0.count, max(0, scratch.writableBytes - 2))) }
                scratch.append("\r\n")
            }
        }
        let lines = start..<scratch.writerIndex
        let body = response.body.withUnsafeBufferPointer { context.store($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
        context.reply = FilterReply(status: response.status, reason: response.status == 403 ? .forbidden : .unauthenticated,
                                    headerLines: lines, body: body, contentType: nil)
        context.deniedMethod = "external"
        context.deniedReason = "denied"
        return .respond
    }

    private func failExternal(_ settings: ExternalSettings, _ context: FilterContext) -> FilterVerdict {
        if settings.failOpen { return .proceed }
        context.reply = FilterReply(status: 503, reason: .authUnavailable)
        context.deniedMethod = "external"
        context.deniedReason = "unavailable"
        return .respond
    }

    private func applyAllowed(_ settings: ExternalSettings, _ response: SubrequestResponse, _ context: FilterContext) {
        if let user = response.values("x-auth-request-user").first {
            context.identity = user.withUnsafeBufferPointer { context.store($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
            if let email = response.values("x-auth-request-email").first {
                context.identityEmail = email.withUnsafeBufferPointer { context.store($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
            }
        }
        for name in settings.headersToUpstream {
            // Identity headers are written once, below.
            if name.equals(Array("x-auth-request-user".utf8), count: name.count) || name.equals(Array("x-auth-request-email".utf8), count: name.count) { continue }
            for value in response.values(name.description) {
                value.withUnsafeBufferPointer { context.addRequestHeader(name, $0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
            }
        }
        addIdentityHeadersForExternal(context)
    }

    private func externalCacheKey(_ context: FilterContext) -> SHA256Digest {
        var material: [UInt8] = []
        func add(_ bytes: (UnsafePointer<UInt8>, Int)) {
            material += UnsafeBufferPointer(start: bytes.0, count: bytes.1)
            material.append(0)
        }
        add(context.headBytes(context.methodRange))
        add(context.headBytes(context.hostRange))
        add(context.bytes(context.pathRange))
        add(context.bytes(context.queryRange))
        add(context.headerValue(Self.authorization) ?? (UnsafePointer(bitPattern: 1)!, 0))
        add(context.headerValue(Self.cookie) ?? (UnsafePointer(bitPattern: 1)!, 0))
        return SHA256Digest(words: sha256(material))
    }
}

/// A worker's cache of allowed external-auth answers (`cache_ttl`).
final class ExternalAuthCache: @unchecked Sendable {
    private var entries: [SHA256Digest: (expires: Int64, response: SubrequestResponse)] = [:]

    func lookup(_ key: SHA256Digest, now: Int64) -> SubrequestResponse? {
        guard let entry = entries[key] else { return nil }
        if entry.expires > now { return entry.response }
        entries[key] = nil
        return nil
    }

    func insert(_ key: SHA256Digest, _ response: SubrequestResponse, expires: Int64) {
        if entries.count >= 4096 { entries.removeAll(keepingCapacity: true) }
        entries[key] = (expires, response)
    }
}

// MARK: helpers

/// A worker's recent bcrypt successes: (user, password, hash) digest → expiry.
final class PasswordCache: @unchecked Sendable {
    private var entries: [SHA256Digest: Int64] = [:]

    func contains(_ key: SHA256Digest, now: Int64) -> Bool {
        guard let expires = entries[key] else { return false }
        if expires > now { return true }
        entries[key] = nil
        return false
    }

    func insert(_ key: SHA256Digest, expires: Int64) {
        if entries.count >= 4096 { entries.removeAll(keepingCapacity: true) }
        entries[key] = expires
    }
}

final class VerifiedTokenCacheBox {
    var cache = VerifiedTokenCache()
    var generation: UInt64 = 0
}

/// Where a JWT filter's keys come from: a file read at load, or a JWKS URL refreshed in the
/// background (the proxy's `JWKSFetcher`).
public protocol JWTKeySource: AnyObject, Sendable {
    /// Changes whenever the key set does.
    var generation: UInt64 { get }
    /// Nil until a key set was obtained.
    func currentVerifier() -> JWTVerifier?
    /// A token named a `kid` the key set lacks: the source may refresh (rate-limited).
    func unknownKeySeen()
}

/// Keys from `jwks_file`.
public final class StaticJWTKeys: JWTKeySource {
    let verifier: JWTVerifier
    public init(_ verifier: JWTVerifier) { self.verifier = verifier }
    public var generation: UInt64 { 1 }
    public func currentVerifier() -> JWTVerifier? { verifier }
    public func unknownKeySeen() {}
}

public struct SHA256Digest: Hashable, Sendable {
    public var words: (UInt64, UInt64, UInt64, UInt64)
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.words == rhs.words }
    public func hash(into hasher: inout Hasher) { hasher.combine(words.0) }
}

private func credentialHash(_ user: (UnsafePointer<UInt8>, Int), _ password: (UnsafePointer<UInt8>, Int), _ hash: String) -> SHA256Digest {
    var material = Array(UnsafeBufferPointer(start: user.0, count: user.1))
    material.append(0)
    material.append(contentsOf: UnsafeBufferPointer(start: password.0, count: password.1))
    material.append(0)
    material.append(contentsOf: hash.utf8)
    return SHA256Digest(words: material.withUnsafeBytes { sha256($0) })
}

/// bcrypt through libxcrypt's crypt_r, on a pool thread (it takes tens of milliseconds).
func bcryptMatches(password: [UInt8], hash: String) -> Bool {
    let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
    defer { data.deallocate() }
    memset(data, 0, MemoryLayout<crypt_data>.size)
    var key = password
    key.append(0)
    let result: [UInt8]? = key.withUnsafeBufferPointer { keyBuffer in
        keyBuffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: keyBuffer.count) { keyPointer in
            hash.withCString { setting in
                guard let output = crypt_r(keyPointer, setting, data) else { return nil }
                return Array(UnsafeRawBufferPointer(start: output, count: strlen(output)))
            }
        }
    }
    guard let result, result.count == hash.utf8.count else { return false }
    return result.withUnsafeBufferPointer { constantTimeEqual($0.baseAddress!, $0.count, Array(hash.utf8)) }
}

@inline(__always)
func constantTimeEqual(_ pointer: UnsafePointer<UInt8>, _ count: Int, _ expected: [UInt8]) -> Bool {
    guard count == expected.count else { return false }
    return expected.withUnsafeBufferPointer { CRYPTO_memcmp(pointer, $0.baseAddress!, count) == 0 }
}

/// A pointer captured by a @Sendable closure (the pointee is only touched atomically).
struct UnsafeSendablePointer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<UInt64>
    init(_ pointer: UnsafeMutablePointer<UInt64>) { self.pointer = pointer }
}
