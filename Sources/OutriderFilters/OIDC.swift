// The auth filter's OIDC login flow (SPEC §4 `oidc`), with oauth2-proxy's endpoints:
// authorization code + PKCE (S256) with `state` and `nonce` bound to a sealed CSRF cookie, the
// code exchanged at the token endpoint from the worker's loop, the ID token verified with the
// JWT code, and the session kept in an AES-256-GCM sealed cookie (split over 4 KiB), refreshed
// with the refresh token before the tokens expire.
//
// Nothing here runs for routes without `oidc`; on routes with it, a request with a session
// costs one cache lookup (the session is decrypted once per worker and cookie value).
import COpenSSL
import Glibc
import OutriderCore
import OutriderHTTP

// MARK: what the proxy provides

/// An HTTP(S) service a filter calls from the loop (the provider's token endpoint). Made by the
/// proxy, which resolves the host and keeps the TLS context in `connectHandle`.
public final class SubrequestTarget: @unchecked Sendable {
    public let host: String
    public let port: UInt16
    public let useTLS: Bool
    /// Path and query, as sent in the request line.
    public let target: String
    /// The Host header: the URL's authority.
    public let authority: String
    public let connectHandle: AnyObject?

    public init(host: String, port: UInt16, useTLS: Bool, target: String, authority: String, connectHandle: AnyObject?) {
        self.host = host
        self.port = port
        self.useTLS = useTLS
        self.target = target
        self.authority = authority
        self.connectHandle = connectHandle
    }
}

/// What the provider's discovery document and JWKS said, made by the proxy's discovery service.
public final class OIDCProviderMetadata: @unchecked Sendable {
    /// Absolute URL; may carry a query of its own.
    public let authorizationEndpoint: String
    public let tokenEndpoint: SubrequestTarget
    public let endSessionEndpoint: String?
    /// Checks signature, `iss` (the configured issuer), `aud` (client_id and extra audiences), `exp`, `nbf`.
    public let verifier: JWTVerifier

    public init(authorizationEndpoint: String, tokenEndpoint: SubrequestTarget, endSessionEndpoint: String?,
                verifier: JWTVerifier) {
        self.authorizationEndpoint = authorizationEndpoint
        self.tokenEndpoint = tokenEndpoint
        self.endSessionEndpoint = endSessionEndpoint
        self.verifier = verifier
    }
}

/// The discovery service: the current metadata (nil until discovery and JWKS both succeeded),
/// and, as a `JWTKeySource`, the provider's keys for bearer tokens.
public protocol OIDCProviderSource: JWTKeySource {
    func currentMetadata() -> OIDCProviderMetadata?
}

extension AuthFilter {
    public struct OIDCSettings: Sendable {
        public let provider: OIDCProviderSource
        public let clientID: String
        public let clientSecret: String
        public let redirectURL: String
        public let callbackPath: String
        public let cookieSecret: [UInt8]
        public let scopes: [String]
        public let cookieName: String
        public let cookieExpireSeconds: Int64
        public let cookieRefreshSeconds: Int64
        public let passAccessToken: Bool
        public let setAuthorizationHeader: Bool
        public let emailClaim: String
        public let groupsClaim: String
        public let clientSecretPost: Bool
        public let endSession: Bool
        public let postLogoutRedirectURL: String?
        public let timeoutNanos: Int64

        public init(provider: OIDCProviderSource, clientID: String, clientSecret: String, redirectURL: String,
                    callbackPath: String, cookieSecret: [UInt8], scopes: [String], cookieName: String,
                    cookieExpireSeconds: Int64, cookieRefreshSeconds: Int64, passAccessToken: Bool,
                    setAuthorizationHeader: Bool, emailClaim: String, groupsClaim: String, clientSecretPost: Bool,
                    endSession: Bool, postLogoutRedirectURL: String?, timeoutNanos: Int64) {
            self.provider = provider
            self.clientID = clientID
            self.clientSecret = clientSecret
            self.redirectURL = redirectURL
            self.callbackPath = callbackPath
            self.cookieSecret = cookieSecret
            self.scopes = scopes
            self.cookieName = cookieName
            self.cookieExpireSeconds = cookieExpireSeconds
            self.cookieRefreshSeconds = cookieRefreshSeconds
            self.passAccessToken = passAccessToken
            self.setAuthorizationHeader = setAuthorizationHeader
            self.emailClaim = emailClaim
            self.groupsClaim = groupsClaim
            self.clientSecretPost = clientSecretPost
            self.endSession = endSession
            self.postLogoutRedirectURL = postLogoutRedirectURL
            self.timeoutNanos = timeoutNanos
        }
    }
}

// MARK: the flow

/// One per auth filter with `oidc`; shared by the workers (its mutable parts are per-worker
/// caches and the process-wide used-state registry, which has its own lock).
final class OIDCFlow: @unchecked Sendable {
    let settings: AuthFilter.OIDCSettings
    let sealer: CookieSealer
    let csrfCookieName: String
    /// The additional authenticated data of the session and CSRF cookies.
    let sessionSealName: String
    let csrfSealName: String
    let usedStates = UsedStates()
    let sessionCacheSlot: Int
    let bearerCacheSlot: Int
    let callbackPath: ByteString

    // Paused states (FilterContext.filterState).
    static let callbackPending = 20
    static let refreshPending = 21        // + Purpose.rawValue
    static let firstState = 20

    enum Purpose: Int { case proxy = 0, auth = 1, userinfo = 2 }

    static let startPath = ByteString("/oauth2/start")
    static let signOutPath = ByteString("/oauth2/sign_out")
    static let authPath = ByteString("/oauth2/auth")
    static let userinfoPath = ByteString("/oauth2/userinfo")
    static let accept = ByteString("accept")
    static let authorization = ByteString("authorization")
    static let cookie = ByteString("cookie")
    static let groupsHeader = ByteString("x-auth-request-groups")
    static let preferredUsernameHeader = ByteString("x-auth-request-preferred-username")
    static let accessTokenHeader = ByteString("x-auth-request-access-token")

    /// How long a login may take between the redirect to the provider and the callback.
    static let csrfLifetime: Int64 = 900
    /// Set-Cookie lines longer than this are split into `NAME_0`, `NAME_1`, …
    static let maxCookieBytes = 4096
    static let maxCookiePieces = 16
    /// Value bytes per piece once split (leaves room for the name and the attributes).
    static let pieceBytes = 3800
    /// Seconds between two refresh attempts of one session on one worker.
    static let refreshBackoff: Int64 = 30
    /// Tokens from the provider (ID tokens with many groups grow large).
    static let maxTokenBytes = 32768

    init(_ settings: AuthFilter.OIDCSettings, build: FilterBuildContext) {
        self.settings = settings
        sealer = CookieSealer(key: settings.cookieSecret)
        csrfCookieName = settings.cookieName + "_csrf"
        // Sealed for this client and callback too: two oidc filters sharing a cookie_secret
        // (one Kubernetes Secret) must not accept each other's sessions, or a user the
        // provider lets into client B only would get into client A.
        let binding = "\u{0}" + settings.clientID + "\u{0}" + settings.redirectURL
        sessionSealName = settings.cookieName + binding
        csrfSealName = csrfCookieName + binding
        sessionCacheSlot = build.allocateCacheSlot()
        bearerCacheSlot = build.allocateCacheSlot()
        callbackPath = ByteString(settings.callbackPath)
    }

    // MARK: entry points from AuthFilter

    /// The oauth2-proxy endpoints; nil when the path is none of them.
    func endpoint(_ filter: AuthFilter, _ context: FilterContext) -> FilterVerdict? {
        let (path, count) = context.bytes(context.pathRange)
        if callbackPath.equals(path, count: count) { return callback(context) }
        guard count > 8, memoryEquals(path, Array("/oauth2/".utf8), 8) else { return nil }
        if Self.startPath.equals(path, count: count) {
            let rd = queryParameter(context, "rd").flatMap { Self.safeRedirect($0) ? $0 : nil } ?? Array("/".utf8)
            return startLogin(context, returnTo: rd)
        }
        if Self.signOutPath.equals(path, count: count) { return signOut(context) }
        if Self.authPath.equals(path, count: count) { return checkSession(filter, context, purpose: .auth) ?? deny(filter, context, .auth) }
        if Self.userinfoPath.equals(path, count: count) {
            return checkSession(filter, context, purpose: .userinfo) ?? deny(filter, context, .userinfo)
        }
        return nil
    }

    /// Work finished off the loop (the token endpoint answered).
    func resume(_ filter: AuthFilter, _ context: FilterContext) -> FilterVerdict {
        let state = context.filterState
        context.filterState = 0
        if state == Self.callbackPending { return finishCallback(context) }
        let purpose = Purpose(rawValue: state - Self.refreshPending) ?? .proxy
        return finishRefresh(filter, context, purpose: purpose)
    }

    /// A session cookie or a provider's bearer token: `.proceed` (identity set), `.pause`
    /// (refreshing), or nil when neither is there or valid.
    func authenticate(_ filter: AuthFilter, _ context: FilterContext) -> FilterVerdict? {
        if let verdict = checkSession(filter, context, purpose: .proxy) { return verdict }
        return nil
    }

    /// A bearer JWT from the provider (API clients). True when accepted; `presented` says a JWT was there.
    func checkBearer(_ filter: AuthFilter, _ context: FilterContext, purpose: Purpose, presented: inout Bool) -> Bool {
        guard let (value, count) = context.headerValue(Self.authorization), count > 7,
              equalsLowercase(value, 7, "bearer ") else { return false }
        var start = 7
        while start < count && value[start] == 0x20 { start += 1 }
        let token = UnsafeRawBufferPointer(start: value + start, count: count - start)
        // Only something shaped like a JWS: an API key sent as a bearer is not ours to judge.
        var dots = 0
        for byte in token where byte == UInt8(ascii: ".") { dots += 1 }
        guard dots == 2 else { return false }
        presented = true
        let keys = settings.provider
        let cache = context.worker.cache(bearerCacheSlot) { VerifiedTokenCacheBox() }
        let generation = keys.generation
        if cache.generation != generation {
            cache.cache.removeAll()
            cache.generation = generation
        }
        let digest: TokenDigest = sha256(token)
        let verified: VerifiedJWT
        if let hit = cache.cache.lookup(digest, now: context.unixNow) {
            verified = hit
        } else {
            guard let verifier = keys.currentVerifier() else { return false }
            switch verifier.verify(token, now: context.unixNow) {
            case .success(let token):
                verified = token
                cache.cache.insert(digest, token, expiresAt: token.expiresAt ?? context.unixNow + 300, now: context.unixNow)
            case .failure(let failure):
                if failure == .unknownKey { keys.unknownKeySeen() }
                return false
            }
        }
        // As for logins: an email the provider says is unverified names nobody.
        if Self.emailIsUnverified(verified) { return false }
        let email = verified.claimString(settings.emailClaim)
        guard let user = email ?? verified.claimString("sub") else { return false }
        let groups = groupList(verified.claims[settings.groupsClaim])
        let identity = Identity(user: user, email: email, groups: groups,
                                preferredUsername: verified.claimString("preferred_username"))
        if purpose == .proxy {
            applyIdentity(filter, context, identity, accessToken: nil, idToken: nil)
        }
        return true
    }

    /// Nobody is authenticated: a browser asking for a page is sent to the provider.
    func wantsLogin(_ context: FilterContext) -> Bool {
        guard context.method == .get || context.method == .head else { return false }
        guard let (accept, count) = context.headerValue(Self.accept), count >= 9 else { return false }
        let needle = Array("text/html".utf8)
        var index = 0
        while index + 9 <= count {
            var matched = true
            for offset in 0..<9 where asciiLowercase(accept[index + offset]) != needle[offset] {
                matched = false
                break
            }
            if matched { return true }
            index += 1
        }
        return false
    }

    /// The redirect to the provider for the page the browser asked for.
    func loginForRequest(_ context: FilterContext) -> FilterVerdict {
        var original = Array(UnsafeBufferPointer(start: context.bytes(context.pathRange).0, count: context.pathRange.count))
        original += UnsafeBufferPointer(start: context.bytes(context.queryRange).0, count: context.queryRange.count)
        if !Self.safeRedirect(original) { original = Array("/".utf8) }
        return startLogin(context, returnTo: original)
    }

    // MARK: login

    private func startLogin(_ context: FilterContext, returnTo: [UInt8]) -> FilterVerdict {
        guard let metadata = settings.provider.currentMetadata() else {
            return unavailable(context, "the OpenID provider's discovery document or keys are not loaded yet")
        }
        guard let state = randomToken(), let nonce = randomToken(), let verifier = randomToken() else {
            return unavailable(context, "no randomness")
        }
        let challenge = base64URLEncode(Array(verifier.utf8).withUnsafeBytes { sha256Bytes($0) })
        let expires = context.unixNow + Self.csrfLifetime
        let csrf = "{\"s\":\(jsonQuoted(state)),\"n\":\(jsonQuoted(nonce)),\"v\":\(jsonQuoted(verifier)),"
            + "\"rd\":\(jsonQuoted(String(decoding: returnTo, as: UTF8.self))),\"x\":\(expires)}"
        guard let sealed = sealer.seal(Array(csrf.utf8), name: csrfSealName) else {
            return unavailable(context, "sealing the CSRF cookie failed")
        }
        var location = metadata.authorizationEndpoint
        location += metadata.authorizationEndpoint.contains("?") ? "&" : "?"
        location += "response_type=code&client_id=" + formEncode(settings.clientID)
        location += "&redirect_uri=" + formEncode(settings.redirectURL)
        location += "&scope=" + formEncode(settings.scopes.joined(separator: " "))
        location += "&state=" + state + "&nonce=" + nonce
        location += "&code_challenge=" + challenge + "&code_challenge_method=S256"
        var lines = "location: " + location + "\r\n"
        lines += setCookieLine(context, csrfCookieName, sealed, maxAge: Self.csrfLifetime)
        return redirectReply(context, lines: lines, status: 302)
    }

    private func callback(_ context: FilterContext) -> FilterVerdict {
        guard let csrf = readCSRF(context) else {
            return refuse(context, "login failed: the login cookie is missing, expired or invalid; start again")
        }
        // State first: a cross-site link carrying only `error=` must not end a login in progress.
        guard let state = queryParameter(context, "state"),
              state.withUnsafeBytes({ presented in
                  Array(csrf.state.utf8).withUnsafeBytes { expected in constantTimeEquals(presented, expected) }
              }) else {
            return refuse(context, "login failed: state does not match the login cookie", clearCSRF: false)
        }
        if let error = queryParameter(context, "error") {
            let text = String(decoding: error.prefix(100).filter { $0 >= 0x20 && $0 < 0x7F }, as: UTF8.self)
            return refuse(context, "login failed: the provider answered \(text)", clearCSRF: true)
        }
        guard let code = queryParameter(context, "code"), !code.isEmpty, code.count <= 4096 else {
            return refuse(context, "login failed: no authorization code", clearCSRF: true)
        }
        guard usedStates.claim(csrf.state, expires: csrf.expires, now: context.unixNow) else {
            return refuse(context, "login failed: this login was already completed (replayed state)", clearCSRF: true)
        }
        guard let metadata = settings.provider.currentMetadata() else {
            return unavailable(context, "the OpenID provider's discovery document or keys are not loaded yet")
        }
        var form = "grant_type=authorization_code&code=" + formEncode(String(decoding: code, as: UTF8.self))
        form += "&redirect_uri=" + formEncode(settings.redirectURL)
        form += "&code_verifier=" + csrf.verifier
        return sendTokenRequest(context, metadata, form: form, pausedState: Self.callbackPending)
    }

    private func finishCallback(_ context: FilterContext) -> FilterVerdict {
        guard let csrf = readCSRF(context), let metadata = settings.provider.currentMetadata() else {
            return refuse(context, "login failed: the login cookie is missing, expired or invalid; start again")
        }
        let tokens: TokenResponse
        switch tokenResponse(context) {
        case .success(let answer): tokens = answer
        case .failure(.unavailable): return unavailable(context, "the provider's token endpoint did not answer")
        case .failure(.refused(let why)): return refuse(context, "login failed: \(why)", clearCSRF: true)
        }
        guard let idToken = tokens.idToken else {
            return refuse(context, "login failed: the token endpoint gave no id_token", clearCSRF: true)
        }
        let verified: VerifiedJWT
        switch verifyIDToken(idToken, metadata, context) {
        case .success(let token): verified = token
        case .failure(let why): return refuse(context, "login failed: invalid ID token (\(why))", clearCSRF: true)
        }
        guard let nonce = verified.claims["nonce"]?.string,
              constantTimeEquals(Array(nonce.utf8), Array(csrf.nonce.utf8)) else {
            return refuse(context, "login failed: the ID token's nonce does not match the login", clearCSRF: true)
        }
        guard let session = makeSession(verified, tokens, idToken: idToken, previous: nil, now: context.unixNow) else {
            return refuse(context, "login failed: the ID token names nobody (no sub)", clearCSRF: true)
        }
        let cookies = sessionCookieLines(context, session)
        guard !cookies.isEmpty else {
            return refuse(context, "login failed: the session does not fit in \(Self.maxCookiePieces) cookies", clearCSRF: true)
        }
        var lines = "location: " + csrf.returnTo + "\r\n"
        lines += cookies
        lines += clearCookieLine(context, csrfCookieName)
        return redirectReply(context, lines: lines, status: 302)
    }

    private func signOut(_ context: FilterContext) -> FilterVerdict {
        let present = presentSessionCookies(context)
        var lines = ""
        for name in present.names { lines += clearCookieLine(context, name) }
        if present.csrf { lines += clearCookieLine(context, csrfCookieName) }
        var location = queryParameter(context, "rd").flatMap { Self.safeRedirect($0) ? String(decoding: $0, as: UTF8.self) : nil } ?? "/"
        if settings.endSession, let endpoint = settings.provider.currentMetadata()?.endSessionEndpoint {
            location = endpoint + (endpoint.contains("?") ? "&" : "?") + "client_id=" + formEncode(settings.clientID)
            if let session = readSession(context, allowExpired: true), let idToken = session.idToken {
                location += "&id_token_hint=" + formEncode(idToken)
            }
            if let after = settings.postLogoutRedirectURL {
                location += "&post_logout_redirect_uri=" + formEncode(after)
            }
        }
        lines = "location: " + location + "\r\n" + lines
        return redirectReply(context, lines: lines, status: 302)
    }

    // MARK: sessions

    /// A valid session: `.proceed` / an answer for /oauth2/auth and /oauth2/userinfo, or
    /// `.pause` while the tokens are refreshed. nil when there is none (or it expired).
    private func checkSession(_ filter: AuthFilter, _ context: FilterContext, purpose: Purpose) -> FilterVerdict? {
        guard let (session, digest) = readSessionAndDigest(context, allowExpired: false) else {
            if purpose != .proxy {
                var presented = false
                if checkBearer(filter, context, purpose: purpose, presented: &presented),
                   let identity = bearerIdentity(context) {
                    return answer(filter, context, identity, session: nil, purpose: purpose, refreshedLines: "")
                }
            }
            return nil
        }
        let cache = context.worker.cache(sessionCacheSlot) { OIDCSessionCache() }
        if needsRefresh(session, now: context.unixNow), let metadata = settings.provider.currentMetadata(),
           let refreshToken = session.refreshToken, (cache.refreshNotBefore[digest] ?? 0) <= context.unixNow {
            // One refresh per session and worker at a time, and none for a while after one
            // failed: requests meanwhile use the session as it is while its tokens are valid.
            if cache.refreshNotBefore.count >= 4096 { cache.refreshNotBefore.removeAll(keepingCapacity: true) }
            cache.refreshNotBefore[digest] = context.unixNow + Self.refreshBackoff
            let form = "grant_type=refresh_token&refresh_token=" + formEncode(refreshToken)
            return sendTokenRequest(context, metadata, form: form, pausedState: Self.refreshPending + purpose.rawValue)
        }
        if session.tokensExpireAt <= context.unixNow { return nil }
        return answer(filter, context, session.identity, session: session, purpose: purpose, refreshedLines: "")
    }

    private func finishRefresh(_ filter: AuthFilter, _ context: FilterContext, purpose: Purpose) -> FilterVerdict {
        guard let session = readSession(context, allowExpired: false) else {
            return deny(filter, context, purpose)
        }
        var refreshed: OIDCSession?
        if case .success(let tokens) = tokenResponse(context), let metadata = settings.provider.currentMetadata() {
            if let idToken = tokens.idToken {
                if case .success(let verified) = verifyIDToken(idToken, metadata, context),
                   verified.claimString("sub") == session.subject {
                    refreshed = makeSession(verified, tokens, idToken: idToken, previous: session, now: context.unixNow)
                }
            } else if tokens.accessToken != nil {
                refreshed = session.refreshed(with: tokens, now: context.unixNow)
            }
        }
        guard let refreshed else {
            // The provider said no (or did not answer): the session lasts as long as its tokens.
            if session.tokensExpireAt <= context.unixNow { return deny(filter, context, purpose) }
            return answer(filter, context, session.identity, session: session, purpose: purpose, refreshedLines: "")
        }
        let lines = sessionCookieLines(context, refreshed)
        if lines.isEmpty {
            return answer(filter, context, session.identity, session: session, purpose: purpose, refreshedLines: "")
        }
        return answer(filter, context, refreshed.identity, session: refreshed, purpose: purpose, refreshedLines: lines)
    }

    private func needsRefresh(_ session: OIDCSession, now: Int64) -> Bool {
        guard session.refreshToken != nil else { return false }
        if settings.cookieRefreshSeconds > 0 && now >= session.refreshedAt + settings.cookieRefreshSeconds { return true }
        // Before the tokens expire: a quarter of their lifetime ahead, at most a minute.
        let lifetime = max(0, session.tokensExpireAt - session.refreshedAt)
        let margin = min(60, lifetime / 4)
        return now >= session.tokensExpireAt - margin
    }

    /// The identity for the app, or the answer of /oauth2/auth (202 + headers) and /oauth2/userinfo (JSON).
    private func answer(_ filter: AuthFilter, _ context: FilterContext, _ identity: Identity, session: OIDCSession?,
                        purpose: Purpose, refreshedLines: String) -> FilterVerdict {
        switch purpose {
        case .proxy:
            applyIdentity(filter, context, identity, accessToken: session?.accessToken, idToken: session?.idToken)
            if !refreshedLines.isEmpty {
                let range = context.store(ByteString(refreshedLines))
                context.responseHeaderLines.append(range)
            }
            return .proceed
        case .auth:
            var lines = refreshedLines
            lines += "x-auth-request-user: " + headerSafe(identity.user) + "\r\n"
            if let email = identity.email { lines += "x-auth-request-email: " + headerSafe(email) + "\r\n" }
            if !identity.groups.isEmpty { lines += "x-auth-request-groups: " + headerSafe(identity.groups.joined(separator: ",")) + "\r\n" }
            if let name = identity.preferredUsername { lines += "x-auth-request-preferred-username: " + headerSafe(name) + "\r\n" }
            if settings.passAccessToken, let token = session?.accessToken {
                lines += "x-auth-request-access-token: " + headerSafe(token) + "\r\n"
            }
            if settings.setAuthorizationHeader, let token = session?.idToken {
                lines += "authorization: Bearer " + headerSafe(token) + "\r\n"
            }
            context.identity = context.store(ByteString(headerSafe(identity.user)))
            return plainReply(context, status: 202, lines: lines, body: nil, contentType: nil)
        case .userinfo:
            var json = "{\"user\":" + jsonQuoted(identity.user)
            if let email = identity.email { json += ",\"email\":" + jsonQuoted(email) }
            if !identity.groups.isEmpty { json += ",\"groups\":[" + identity.groups.map(jsonQuoted).joined(separator: ",") + "]" }
            if let name = identity.preferredUsername { json += ",\"preferredUsername\":" + jsonQuoted(name) }
            json += "}\n"
            context.identity = context.store(ByteString(headerSafe(identity.user)))
            return plainReply(context, status: 200, lines: refreshedLines, body: json, contentType: "application/json")
        }
    }

    private func bearerIdentity(_ context: FilterContext) -> Identity? {
        guard let (value, count) = context.headerValue(Self.authorization), count > 7 else { return nil }
        var start = 7
        while start < count && value[start] == 0x20 { start += 1 }
        let token = UnsafeRawBufferPointer(start: value + start, count: count - start)
        let cache = context.worker.cache(bearerCacheSlot) { VerifiedTokenCacheBox() }
        guard let verified = cache.cache.lookup(sha256(token), now: context.unixNow) else { return nil }
        let email = verified.claimString(settings.emailClaim)
        guard let user = email ?? verified.claimString("sub") else { return nil }
        return Identity(user: user, email: email, groups: groupList(verified.claims[settings.groupsClaim]),
                        preferredUsername: verified.claimString("preferred_username"))
    }

    /// Identity headers to the app (client copies were removed before), the session's tokens
    /// when configured, and the Cookie header without this filter's cookies.
    private func applyIdentity(_ filter: AuthFilter, _ context: FilterContext, _ identity: Identity,
                               accessToken: String?, idToken: String?) {
        let start = context.scratch.writerIndex
        appendSafeHeaderValue(identity.user, context.scratch)
        context.identity = start..<context.scratch.writerIndex
        if let email = identity.email {
            let emailStart = context.scratch.writerIndex
            appendSafeHeaderValue(email, context.scratch)
            context.identityEmail = emailStart..<context.scratch.writerIndex
        }
        filter.addIdentityHeadersForExternal(context)
        if !identity.groups.isEmpty { addLine(context, Self.groupsHeader, identity.groups.joined(separator: ",")) }
        if let name = identity.preferredUsername { addLine(context, Self.preferredUsernameHeader, name) }
        if settings.passAccessToken, let accessToken { addLine(context, Self.accessTokenHeader, accessToken) }
        if settings.setAuthorizationHeader, let idToken {
            context.removeHeader(Self.authorization)
            addLine(context, Self.authorization, "Bearer " + idToken)
        }
        stripOwnCookies(context)
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

    private func readSession(_ context: FilterContext, allowExpired: Bool) -> OIDCSession? {
        readSessionAndDigest(context, allowExpired: allowExpired)?.0
    }

    /// The session cookie (joined from its pieces), opened and parsed; cached per worker.
    private func readSessionAndDigest(_ context: FilterContext, allowExpired: Bool) -> (OIDCSession, SHA256Digest)? {
        guard let value = sessionCookieValue(context) else { return nil }
        let digest = SHA256Digest(words: sha256(value))
        let cache = context.worker.cache(sessionCacheSlot) { OIDCSessionCache() }
        let session: OIDCSession
        if let hit = cache.entries[digest] {
            session = hit
        } else {
            guard let plaintext = sealer.open(value, name: sessionSealName),
                  let parsed = OIDCSession(json: plaintext) else { return nil }
            if cache.entries.count >= 4096 { cache.entries.removeAll(keepingCapacity: true) }
            cache.entries[digest] = parsed
            session = parsed
        }
        if !allowExpired && session.expiresAt <= context.unixNow {
            cache.entries[digest] = nil
            return nil
        }
        return (session, digest)
    }

    private func makeSession(_ verified: VerifiedJWT, _ tokens: TokenResponse, idToken: String, previous: OIDCSession?,
                             now: Int64) -> OIDCSession? {
        guard let subject = verified.claimString("sub"), !subject.isEmpty else { return nil }
        let email = verified.claimString(settings.emailClaim)
        let tokensExpire = tokens.expiresIn.map { now + $0 } ?? verified.expiresAt ?? now + 3600
        return OIDCSession(
            subject: subject, email: email, groups: groupList(verified.claims[settings.groupsClaim]),
            preferredUsername: verified.claimString("preferred_username"),
            expiresAt: previous?.expiresAt ?? now + settings.cookieExpireSeconds, refreshedAt: now,
            tokensExpireAt: min(tokensExpire, verified.expiresAt ?? tokensExpire),
            accessToken: tokens.accessToken, refreshToken: tokens.refreshToken ?? previous?.refreshToken, idToken: idToken)
    }

    /// `email_verified` present and false (or "false"): the email may be anyone's (oauth2-proxy
    /// refuses such logins too).
    static func emailIsUnverified(_ verified: VerifiedJWT) -> Bool {
        switch verified.claims["email_verified"] {
        case .bool(false)?: return true
        case .string(let text)?: return text.lowercased() == "false"
        default: return false
        }
    }

    private func verifyIDToken(_ token: String, _ metadata: OIDCProviderMetadata, _ context: FilterContext) -> Result<VerifiedJWT, JWTFailure> {
        let result = metadata.verifier.verify(token, now: context.unixNow)
        switch result {
        case .success(let verified):
            // The ID token is for this client (OIDC Core §3.1.3.7: aud contains client_id,
            // and azp, when present, names it).
            var forUs = false
            switch verified.claims["aud"] {
            case .string(let aud)?: forUs = aud == settings.clientID
            case .array(let list)?: forUs = list.contains { $0.string == settings.clientID }
            default: forUs = false
            }
            if let azp = verified.claims["azp"]?.string, azp != settings.clientID { forUs = false }
            guard forUs else { return .failure(.wrongAudience) }
            return Self.emailIsUnverified(verified) ? .failure(.unverifiedEmail) : result
        case .failure(let failure):
            if failure == .unknownKey { settings.provider.unknownKeySeen() }
            return result
        }
    }

    // MARK: token endpoint

    private func sendTokenRequest(_ context: FilterContext, _ metadata: OIDCProviderMetadata, form: String,
                                  pausedState: Int) -> FilterVerdict {
        guard let client = context.worker.subrequests else { return unavailable(context, "no subrequest client") }
        var body = form
        var authorization = ""
        if settings.clientSecretPost {
            body += "&client_id=" + formEncode(settings.clientID) + "&client_secret=" + formEncode(settings.clientSecret)
        } else {
            // RFC 6749 §2.3.1: the id and secret are form-encoded before base64.
            let credentials = formEncode(settings.clientID) + ":" + formEncode(settings.clientSecret)
            authorization = "authorization: Basic " + base64Encode(Array(credentials.utf8)) + "\r\n"
        }
        let target = metadata.tokenEndpoint
        var head = "POST " + target.target + " HTTP/1.1\r\nhost: " + target.authority + "\r\n"
        head += "content-type: application/x-www-form-urlencoded\r\naccept: application/json\r\n"
        head += authorization
        head += "content-length: \(body.utf8.count)\r\nconnection: close\r\nuser-agent: outrider\r\n\r\n"
        let request = Array(head.utf8) + Array(body.utf8)
        let serial = context.serial
        context.filterState = pausedState
        context.subrequestOutcome = nil
        client.send(request, to: target, timeoutNanos: settings.timeoutNanos) { outcome in
            guard context.serial == serial else { return }
            context.subrequestOutcome = outcome
            context.onResume?()
        }
        return .pause
    }

    enum TokenFailure: Error { case unavailable, refused(String) }

    private func tokenResponse(_ context: FilterContext) -> Result<TokenResponse, TokenFailure> {
        guard case .response(let response)? = context.subrequestOutcome, response.status < 500 else {
            return .failure(.unavailable)
        }
        let json = JSONValue.parse(response.body)
        guard response.status == 200 else {
            let error = json?["error"]?.string.map { String($0.prefix(64)).filter { $0.isASCII && !$0.isNewline } } ?? "HTTP \(response.status)"
            return .failure(.refused("the token endpoint refused the request (\(error))"))
        }
        guard let json, case .object = json else { return .failure(.refused("the token endpoint's answer is not JSON")) }
        if let type = json["token_type"]?.string, type.lowercased() != "bearer" {
            return .failure(.refused("unexpected token_type"))
        }
        func token(_ name: String) -> String? {
            guard let value = json[name]?.string, !value.isEmpty, value.utf8.count <= Self.maxTokenBytes,
                  value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
            return value
        }
        var expiresIn: Int64? = nil
        if let seconds = json["expires_in"]?.int64, seconds > 0 { expiresIn = min(seconds, 366 * 86400) }
        return .success(TokenResponse(accessToken: token("access_token"), refreshToken: token("refresh_token"),
                                      idToken: token("id_token"), expiresIn: expiresIn))
    }

    // MARK: cookies

    private struct CSRF {
        var state: String
        var nonce: String
        var verifier: String
        var returnTo: String
        var expires: Int64
    }

    private func readCSRF(_ context: FilterContext) -> CSRF? {
        guard let (value, count) = cookieValue(context, Array(csrfCookieName.utf8)),
              let plaintext = sealer.open(Array(UnsafeBufferPointer(start: value, count: count)), name: csrfSealName),
              let json = JSONValue.parse(plaintext),
              let state = json["s"]?.string, let nonce = json["n"]?.string, let verifier = json["v"]?.string,
              let rd = json["rd"]?.string, let expires = json["x"]?.int64 else { return nil }
        guard expires > context.unixNow, Self.safeRedirect(Array(rd.utf8)) else { return nil }
        return CSRF(state: state, nonce: nonce, verifier: verifier, returnTo: rd, expires: expires)
    }

    /// The session cookie's value: `NAME`, or `NAME_0`, `NAME_1`, … joined.
    private func sessionCookieValue(_ context: FilterContext) -> [UInt8]? {
        let name = Array(settings.cookieName.utf8)
        if let (value, count) = cookieValue(context, name) {
            return Array(UnsafeBufferPointer(start: value, count: count))
        }
        var joined: [UInt8] = []
        for index in 0..<Self.maxCookiePieces {
            guard let (value, count) = cookieValue(context, name + Array("_\(index)".utf8)) else { break }
            joined += UnsafeBufferPointer(start: value, count: count)
        }
        return joined.isEmpty ? nil : joined
    }

    /// Names of this filter's session cookies the browser sent, and whether the CSRF cookie was there.
    private func presentSessionCookies(_ context: FilterContext) -> (names: [String], csrf: Bool) {
        var names: [String] = []
        var csrf = false
        forEachCookie(context) { name, _ in
            let text = String(decoding: name, as: UTF8.self)
            if text == csrfCookieName { csrf = true } else if isSessionCookieName(text) { names.append(text) }
        }
        return (names, csrf)
    }

    private func isSessionCookieName(_ name: String) -> Bool {
        if name == settings.cookieName { return true }
        guard name.hasPrefix(settings.cookieName + "_") else { return false }
        let suffix = name.dropFirst(settings.cookieName.count + 1)
        return !suffix.isEmpty && suffix.count <= 2 && suffix.allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// Set-Cookie lines for a session (split when over 4 KiB), clearing the pieces of the
    /// other form that the browser still has. Empty when it cannot be sealed or does not fit.
    private func sessionCookieLines(_ context: FilterContext, _ session: OIDCSession) -> String {
        guard let sealed = sealer.seal(Array(session.json().utf8), name: sessionSealName),
              sealed.utf8.count <= Self.maxCookiePieces * Self.pieceBytes else { return "" }
        let maxAge = max(1, session.expiresAt - context.unixNow)
        let present = presentSessionCookies(context).names
        var lines = ""
        var written: Set<String> = []
        let whole = setCookieLine(context, settings.cookieName, sealed, maxAge: maxAge)
        if whole.utf8.count - 2 - "set-cookie: ".utf8.count <= Self.maxCookieBytes {
            lines += whole
            written.insert(settings.cookieName)
        } else {
            let bytes = Array(sealed.utf8)
            var index = 0
            var offset = 0
            while offset < bytes.count && index < Self.maxCookiePieces {
                let end = min(bytes.count, offset + Self.pieceBytes)
                let name = settings.cookieName + "_\(index)"
                lines += setCookieLine(context, name, String(decoding: bytes[offset..<end], as: UTF8.self), maxAge: maxAge)
                written.insert(name)
                offset = end
                index += 1
            }
        }
        for name in present where !written.contains(name) { lines += clearCookieLine(context, name) }
        return lines
    }

    /// Secure unless the request came over plain HTTP on loopback (SPEC §4).
    private func cookieAttributes(_ context: FilterContext, maxAge: Int64) -> String {
        var attributes = "; Path=/; Max-Age=\(maxAge); HttpOnly"
        if context.isTLS || !isLoopback(context) { attributes += "; Secure" }
        return attributes + "; SameSite=Lax"
    }

    private func setCookieLine(_ context: FilterContext, _ name: String, _ value: String, maxAge: Int64) -> String {
        "set-cookie: " + name + "=" + value + cookieAttributes(context, maxAge: maxAge) + "\r\n"
    }

    private func clearCookieLine(_ context: FilterContext, _ name: String) -> String {
        "set-cookie: " + name + "=" + cookieAttributes(context, maxAge: 0) + "\r\n"
    }

    private func isLoopback(_ context: FilterContext) -> Bool {
        let (ip, count) = context.bytes(context.clientIPRange)
        if count >= 4 && memoryEquals(ip, Array("127.".utf8), 4) { return true }
        if count == 3 && memoryEquals(ip, Array("::1".utf8), 3) { return true }
        if count >= 11 && memoryEquals(ip, Array("::ffff:127.".utf8), 11) { return true }
        return false
    }

    /// Removes this filter's cookies from what the app receives; other cookies stay, in order.
    func stripOwnCookies(_ context: FilterContext) {
        var kept: [UInt8] = []
        var removed = false
        forEachCookie(context) { name, pair in
            let text = String(decoding: name, as: UTF8.self)
            if text == csrfCookieName || isSessionCookieName(text) {
                removed = true
            } else {
                if !kept.isEmpty { kept += Array("; ".utf8) }
                kept += pair
            }
        }
        guard removed else { return }
        context.removeHeader(Self.cookie)
        if !kept.isEmpty {
            kept.withUnsafeBufferPointer { context.addRequestHeader(Self.cookie, $0.baseAddress!, $0.count) }
        }
    }

    /// Calls `body(name, whole pair)` for every cookie of every Cookie header.
    private func forEachCookie(_ context: FilterContext, _ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Void) {
        guard let headers = context.headers else { return }
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
                var pairEnd = position
                while pairEnd > pairStart && value[pairEnd - 1] == 0x20 { pairEnd -= 1 }
                guard pairEnd > pairStart else { continue }
                let pair = UnsafeBufferPointer(start: value + pairStart, count: pairEnd - pairStart)
                let equals = pair.firstIndex(of: UInt8(ascii: "=")) ?? pair.count
                body(UnsafeBufferPointer(rebasing: pair[0..<equals]), pair)
            }
        }
    }

    private func cookieValue(_ context: FilterContext, _ name: [UInt8]) -> (UnsafePointer<UInt8>, Int)? {
        var found: (UnsafePointer<UInt8>, Int)?
        forEachCookie(context) { cookieName, pair in
            guard found == nil, cookieName.count == name.count, cookieName.elementsEqual(name) else { return }
            let valueStart = min(pair.count, name.count + 1)
            found = (pair.baseAddress! + valueStart, pair.count - valueStart)
        }
        return found
    }

    // MARK: replies

    private func redirectReply(_ context: FilterContext, lines: String, status: Int) -> FilterVerdict {
        plainReply(context, status: status, lines: lines, body: nil, contentType: nil)
    }

    /// A successful answer of the proxy itself (302, 202, 200): no `x-outrider-error`.
    private func plainReply(_ context: FilterContext, status: Int, lines: String, body: String?, contentType: String?) -> FilterVerdict {
        var all = lines + "cache-control: no-store\r\n"
        if let contentType { all += "content-type: " + contentType + "\r\n" }
        let range = context.store(ByteString(all))
        let bodyRange = context.store(ByteString(body ?? ""))
        context.reply = FilterReply(status: status, reason: .unauthenticated, headerLines: range, body: bodyRange, contentType: nil)
        context.reply.isError = false
        return .respond
    }

    private func refuse(_ context: FilterContext, _ message: String, clearCSRF: Bool = false) -> FilterVerdict {
        var lines = "cache-control: no-store\r\ncontent-type: text/plain\r\n"
        if clearCSRF { lines += clearCookieLine(context, csrfCookieName) }
        let range = context.store(ByteString(lines))
        let body = context.store(ByteString(message + "\n"))
        context.reply = FilterReply(status: 403, reason: .forbidden, headerLines: range, body: body, contentType: nil)
        context.deniedMethod = "oidc"
        context.deniedReason = "denied"
        return .respond
    }

    private func unavailable(_ context: FilterContext, _ message: String) -> FilterVerdict {
        let range = context.store(ByteString("cache-control: no-store\r\nretry-after: 1\r\ncontent-type: text/plain\r\n"))
        let body = context.store(ByteString("auth unavailable: " + message + "\n"))
        context.reply = FilterReply(status: 503, reason: .authUnavailable, headerLines: range, body: body, contentType: nil)
        context.deniedMethod = "oidc"
        context.deniedReason = "unavailable"
        return .respond
    }

    /// 401 for /oauth2/auth, /oauth2/userinfo and a session that could not be refreshed.
    private func deny(_ filter: AuthFilter, _ context: FilterContext, _ purpose: Purpose) -> FilterVerdict {
        if purpose == .proxy { return filter.finishDenied(context) }
        // Never a redirect here (nginx auth_request wants 202 or 401); the challenges as on any 401.
        let start = context.scratch.writerIndex
        context.store(ByteString("cache-control: no-store\r\n"))
        context.store(filter.challenges)
        context.reply = FilterReply(status: 401, reason: .unauthenticated, headerLines: start..<context.scratch.writerIndex)
        context.deniedMethod = "oidc"
        context.deniedReason = "missing_credentials"
        return .respond
    }

    // MARK: helpers

    private func queryParameter(_ context: FilterContext, _ name: String) -> [UInt8]? {
        let (query, count) = context.bytes(context.queryRange)
        let key = Array(name.utf8)
        var position = count > 0 && query[0] == UInt8(ascii: "?") ? 1 : 0
        while position < count {
            let pairStart = position
            while position < count && query[position] != UInt8(ascii: "&") { position += 1 }
            let pair = UnsafeBufferPointer(start: query + pairStart, count: position - pairStart)
            position += 1
            guard pair.count >= key.count, pair.prefix(key.count).elementsEqual(key) else { continue }
            if pair.count == key.count { return [] }
            guard pair[key.count] == UInt8(ascii: "=") else { continue }
            return percentDecode(UnsafeBufferPointer(rebasing: pair[(key.count + 1)...]))
        }
        return nil
    }

    /// A redirect target this proxy will send a browser to: a path on this site. Refused:
    /// anything not starting with one `/` (`//host`, `/\host`, `https://…`), backslashes,
    /// spaces, control characters, non-ASCII bytes, and over 2 KiB.
    static func safeRedirect(_ target: [UInt8]) -> Bool {
        guard !target.isEmpty, target.count <= 2048, target[0] == UInt8(ascii: "/") else { return false }
        if target.count > 1 && (target[1] == UInt8(ascii: "/") || target[1] == UInt8(ascii: "\\")) { return false }
        for byte in target where byte <= 0x20 || byte >= 0x7F || byte == UInt8(ascii: "\\") { return false }
        return true
    }

    private func randomToken() -> String? {
        var bytes = [UInt8](repeating: 0, count: 32)
        guard RAND_bytes(&bytes, 32) == 1 else { return nil }
        return base64URLEncode(bytes)
    }

    private func groupList(_ value: JSONValue?) -> [String] {
        switch value {
        case .string(let text)?: return text.isEmpty ? [] : [text]
        case .array(let items)?: return items.compactMap(\.string)
        default: return []
        }
    }
}

// MARK: pieces

struct Identity {
    var user: String
    var email: String?
    var groups: [String]
    var preferredUsername: String?
}

struct TokenResponse {
    var accessToken: String?
    var refreshToken: String?
    var idToken: String?
    var expiresIn: Int64?
}

/// What the session cookie holds.
final class OIDCSession: @unchecked Sendable {
    let subject: String
    let email: String?
    let groups: [String]
    let preferredUsername: String?
    /// Unix seconds: the cookie's end (cookie_expire after the login), the last refresh (or the
    /// login), and when the tokens expire.
    let expiresAt: Int64
    let refreshedAt: Int64
    let tokensExpireAt: Int64
    let accessToken: String?
    let refreshToken: String?
    let idToken: String?

    init(subject: String, email: String?, groups: [String], preferredUsername: String?, expiresAt: Int64,
         refreshedAt: Int64, tokensExpireAt: Int64, accessToken: String?, refreshToken: String?, idToken: String?) {
        self.subject = subject
        self.email = email
        self.groups = groups
        self.preferredUsername = preferredUsername
        self.expiresAt = expiresAt
        self.refreshedAt = refreshedAt
        self.tokensExpireAt = tokensExpireAt
        self.accessToken = accessToken
        self.refreshToken = refreshToken
        self.idToken = idToken
    }

    /// The identity: the email, else `sub` (SPEC §4).
    var identity: Identity { Identity(user: email ?? subject, email: email, groups: groups, preferredUsername: preferredUsername) }

    /// New tokens without a new ID token: the claims stay.
    func refreshed(with tokens: TokenResponse, now: Int64) -> OIDCSession {
        OIDCSession(subject: subject, email: email, groups: groups, preferredUsername: preferredUsername, expiresAt: expiresAt,
                    refreshedAt: now, tokensExpireAt: tokens.expiresIn.map { now + $0 } ?? now + 3600,
                    accessToken: tokens.accessToken ?? accessToken, refreshToken: tokens.refreshToken ?? refreshToken,
                    idToken: idToken)
    }

    convenience init?(json bytes: [UInt8]) {
        guard let json = JSONValue.parse(bytes), json["v"]?.int64 == 1,
              let subject = json["s"]?.string,
              let expiresAt = json["x"]?.int64, let refreshedAt = json["r"]?.int64, let tokensExpireAt = json["t"]?.int64 else {
            return nil
        }
        self.init(subject: subject, email: json["e"]?.string, groups: json["g"]?.array?.compactMap(\.string) ?? [],
                  preferredUsername: json["p"]?.string, expiresAt: expiresAt, refreshedAt: refreshedAt,
                  tokensExpireAt: tokensExpireAt, accessToken: json["a"]?.string, refreshToken: json["rt"]?.string,
                  idToken: json["i"]?.string)
    }

    func json() -> String {
        var out = "{\"v\":1,\"s\":" + jsonQuoted(subject)
        if let email { out += ",\"e\":" + jsonQuoted(email) }
        if !groups.isEmpty { out += ",\"g\":[" + groups.map(jsonQuoted).joined(separator: ",") + "]" }
        if let preferredUsername { out += ",\"p\":" + jsonQuoted(preferredUsername) }
        out += ",\"x\":\(expiresAt),\"r\":\(refreshedAt),\"t\":\(tokensExpireAt)"
        if let accessToken { out += ",\"a\":" + jsonQuoted(accessToken) }
        if let refreshToken { out += ",\"rt\":" + jsonQuoted(refreshToken) }
        if let idToken { out += ",\"i\":" + jsonQuoted(idToken) }
        return out + "}"
    }
}

/// A worker's opened sessions, by the digest of the cookie value.
final class OIDCSessionCache {
    var entries: [SHA256Digest: OIDCSession] = [:]
    /// No refresh of this session before (unix seconds): one is under way or just failed.
    var refreshNotBefore: [SHA256Digest: Int64] = [:]
}

/// `state` values whose callback completed, process-wide, until the login they belonged to
/// would have expired: a replayed callback is refused before the provider hears of it.
final class UsedStates: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private var entries: [SHA256Digest: Int64] = [:]
    static let capacity = 100_000

    init() { pthread_mutex_init(&lock, nil) }

    /// True the first time a state is presented.
    func claim(_ state: String, expires: Int64, now: Int64) -> Bool {
        let key = SHA256Digest(words: sha256(Array(state.utf8)))
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        if let until = entries[key], until > now { return false }
        if entries.count >= Self.capacity {
            entries = entries.filter { $0.value > now }
            if entries.count >= Self.capacity {
                // Still full (someone is minting logins fast): the tenth closest to expiring goes,
                // so recent logins keep their protection; the provider's single-use codes remain.
                let cutoff = entries.values.sorted()[Self.capacity / 10]
                entries = entries.filter { $0.value > cutoff }
            }
        }
        entries[key] = expires
        return true
    }
}

/// AES-256-GCM with a random 96-bit nonce per seal; the cookie's name is the additional
/// authenticated data, so a value cannot be moved to another cookie. Output: base64url of
/// nonce ‖ ciphertext ‖ tag.
struct CookieSealer: @unchecked Sendable {
    let key: [UInt8]
    nonisolated(unsafe) static let cipher: OpaquePointer? = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)

    init(key: [UInt8]) { self.key = key }

    func seal(_ plaintext: [UInt8], name: String) -> String? {
        guard key.count == 32, let cipher = Self.cipher, let ctx = EVP_CIPHER_CTX_new() else { return nil }
        defer { EVP_CIPHER_CTX_free(ctx) }
        var nonce = [UInt8](repeating: 0, count: 12)
        guard RAND_bytes(&nonce, 12) == 1 else { return nil }
        var output = [UInt8](repeating: 0, count: 12 + plaintext.count + 16)
        for index in 0..<12 { output[index] = nonce[index] }
        let aad = Array(name.utf8)
        let ok: Bool = output.withUnsafeMutableBufferPointer { out in
            var length: Int32 = 0
            guard EVP_EncryptInit_ex(ctx, cipher, nil, key, nonce) == 1 else { return false }
            guard EVP_EncryptUpdate(ctx, nil, &length, aad, Int32(aad.count)) == 1 else { return false }
            let body = out.baseAddress! + 12
            var written: Int32 = 0
            if !plaintext.isEmpty {
                guard EVP_EncryptUpdate(ctx, body, &written, plaintext, Int32(plaintext.count)) == 1 else { return false }
            }
            var finalLength: Int32 = 0
            guard EVP_EncryptFinal_ex(ctx, body + Int(written), &finalLength) == 1 else { return false }
            return EVP_CIPHER_CTX_ctrl(ctx, coutrider_evp_ctrl_gcm_get_tag(), 16, body + plaintext.count) == 1
        }
        guard ok else { ERR_clear_error(); return nil }
        return base64URLEncode(output)
    }

    /// nil for anything not sealed by this key under this name (tampered, truncated, another
    /// cookie's value, another secret).
    func open(_ sealed: [UInt8], name: String) -> [UInt8]? {
        guard sealed.count <= 65536, let raw = base64URLDecode(sealed), raw.count >= 28 else { return nil }
        guard key.count == 32, let cipher = Self.cipher, let ctx = EVP_CIPHER_CTX_new() else { return nil }
        defer { EVP_CIPHER_CTX_free(ctx) }
        let aad = Array(name.utf8)
        let textCount = raw.count - 28
        var output = [UInt8](repeating: 0, count: max(textCount, 1))
        var tag = Array(raw[(raw.count - 16)...])
        let ok: Bool = raw.withUnsafeBufferPointer { input in
            var length: Int32 = 0
            guard EVP_DecryptInit_ex(ctx, cipher, nil, key, input.baseAddress!) == 1 else { return false }
            guard EVP_DecryptUpdate(ctx, nil, &length, aad, Int32(aad.count)) == 1 else { return false }
            var written: Int32 = 0
            if textCount > 0 {
                guard EVP_DecryptUpdate(ctx, &output, &written, input.baseAddress! + 12, Int32(textCount)) == 1 else { return false }
            }
            guard EVP_CIPHER_CTX_ctrl(ctx, coutrider_evp_ctrl_gcm_set_tag(), 16, &tag) == 1 else { return false }
            var finalLength: Int32 = 0
            return output.withUnsafeMutableBufferPointer { out in
                EVP_DecryptFinal_ex(ctx, out.baseAddress! + Int(written), &finalLength) == 1
            }
        }
        guard ok else { ERR_clear_error(); return nil }
        return Array(output[0..<textCount])
    }
}

/// application/x-www-form-urlencoded value: unreserved characters stay, everything else is %XX.
func formEncode(_ text: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(text.utf8.count)
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            out.append(byte)
        default:
            out += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
        }
    }
    return String(decoding: out, as: UTF8.self)
}

/// Query-string decoding: `%XX` and `+` as a space; a malformed escape stays as it is.
func percentDecode(_ bytes: UnsafeBufferPointer<UInt8>) -> [UInt8] {
    func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var index = 0
    while index < bytes.count {
        let byte = bytes[index]
        if byte == UInt8(ascii: "%"), index + 2 < bytes.count,
           let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) {
            out.append(high << 4 | low)
            index += 3
        } else {
            out.append(byte == UInt8(ascii: "+") ? 0x20 : byte)
            index += 1
        }
    }
    return out
}

/// Header-safe text (no CR, LF or other controls).
func headerSafe(_ value: String) -> String {
    String(decoding: value.utf8.filter { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }, as: UTF8.self)
}
