import OutriderConfig
import OutriderCore
import OutriderFilters
import OutriderPosix

/// Builds the filter objects of a route from their validated config: the one place where the
/// proxy knows every filter kind (adding a filter adds one `case` here).
enum FilterFactory {
    struct BuildError: Error, CustomStringConvertible {
        var description: String
    }

    static func build(_ config: FilterConfig, context: FilterBuildContext) throws(BuildError) -> any HTTPFilter {
        switch config {
        case .headers(let headers):
            return HeadersFilter(
                requestSet: try operations(headers.request.set), requestAdd: try operations(headers.request.add),
                requestRemove: headers.request.remove.map { ByteString(lowercased: $0) },
                responseSet: try operations(headers.response.set), responseAdd: try operations(headers.response.add),
                responseRemove: headers.response.remove.map { ByteString(lowercased: $0) })
        case .rateLimit(let limit):
            let key: RateLimitFilter.Key
            switch limit.key {
            case .clientIP: key = .clientIP
            case .header(let name): key = .header(ByteString(lowercased: name))
            case .identity: key = .identity
            }
            return RateLimitFilter(requestsPerSecond: limit.requestsPerSecond, burst: limit.burst, key: key, seed: Sys.randomSeed())
        case .auth(let auth):
            return try authFilter(auth, context: context)
        }
    }

    private static func operations(_ list: [HeaderOperation]) throws(BuildError) -> [HeadersFilter.Operation] {
        var result: [HeadersFilter.Operation] = []
        for operation in list {
            guard let template = HeaderTemplate(operation.value) else {
                throw BuildError(description: "headers: invalid template '\(operation.value)'")
            }
            result.append(.init(name: ByteString(lowercased: operation.name), value: template))
        }
        return result
    }

    private static func authFilter(_ auth: AuthFilterConfig, context: FilterBuildContext) throws(BuildError) -> AuthFilter {
        var external: AuthFilter.ExternalSettings?
        if let config = auth.external {
            external = AuthFilter.ExternalSettings(host: config.address.host, port: config.address.port, target: config.path,
                                                   timeoutNanos: config.timeout.nanoseconds,
                                                   headersToUpstream: config.headersToUpstream,
                                                   failOpen: config.failureMode == .allow,
                                                   cacheTTLNanos: config.cacheTTL.nanoseconds)
        }
        var jwt: AuthFilter.JWTSettings?
        if let config = auth.jwt {
            let algorithms = Set(config.algorithms.compactMap { JWSAlgorithm(rawValue: $0) })
            let makeVerifier: @Sendable (JSONWebKeySet) -> JWTVerifier = { keys in
                JWTVerifier(keys: keys, algorithms: algorithms, issuer: config.issuer, audiences: config.audiences,
                            clockSkewSeconds: config.clockSkew.components.seconds, requiredClaims: [config.identityClaim])
            }
            let keySource: JWTKeySource
            if let json = config.jwksJSON {
                switch JSONWebKeySet.parse(Array(json.utf8)) {
                case .success(let parsed): keySource = StaticJWTKeys(makeVerifier(parsed))
                case .failure(let error): throw BuildError(description: "auth.jwt.jwks_file \(config.jwksFile ?? ""): \(error)")
                }
            } else if let uri = config.jwksURI,
                      let fetcher = JWKSFetcher(url: uri, refresh: config.jwksRefresh, minRefresh: config.minRefresh,
                                                makeVerifier: makeVerifier) {
                context.register(fetcher)
                keySource = fetcher
            } else {
                throw BuildError(description: "auth.jwt: jwks_file or an http(s) jwks_uri is required")
            }
            let sources: [AuthFilter.TokenSource] = config.from.map { source in
                switch source {
                case .header(let name): return name.lowercased() == "authorization" ? .authorizationBearer : .header(ByteString(lowercased: name))
                case .cookie(let name): return .cookie(ByteString(name))
                case .query(let name): return .query(ByteString(name))
                }
            }
            jwt = AuthFilter.JWTSettings(keys: keySource, sources: sources, identityClaim: config.identityClaim,
                                         claimsToHeaders: config.claimsToHeaders.map { ($0.claim, ByteString(lowercased: $0.header)) },
                                         forwardToken: config.forwardToken)
        }
        let keys: [AuthFilter.APIKey] = (auth.apiKey?.keys ?? []).map { entry in
            switch entry.secret {
            case .plain(let bytes): return AuthFilter.APIKey(name: entry.name, secret: .plain(bytes))
            case .sha256(let digest): return AuthFilter.APIKey(name: entry.name, secret: .sha256(digest))
            }
        }
        var oidc: AuthFilter.OIDCSettings?
        if let config = auth.oidc {
            let discovery = OIDCDiscovery(issuer: config.issuer, clientID: config.clientID,
                                          extraAudiences: config.extraAudiences, caFile: config.caFile,
                                          refresh: config.discoveryRefresh)
            context.register(discovery)
            oidc = AuthFilter.OIDCSettings(
                provider: discovery, clientID: config.clientID, clientSecret: config.clientSecret,
                redirectURL: config.redirectURL, callbackPath: config.callbackPath, cookieSecret: config.cookieSecret,
                scopes: config.scopes, cookieName: config.cookieName,
                cookieExpireSeconds: config.cookieExpire.components.seconds,
                cookieRefreshSeconds: config.cookieRefresh.components.seconds,
                passAccessToken: config.passAccessToken, setAuthorizationHeader: config.setAuthorizationHeader,
                emailClaim: config.emailClaim, groupsClaim: config.groupsClaim,
                clientSecretPost: config.tokenEndpointAuth == .post, endSession: config.endSession,
                postLogoutRedirectURL: config.postLogoutRedirectURL, timeoutNanos: config.timeout.nanoseconds)
        }
        return AuthFilter(realm: auth.realm,
                          anonymous: auth.allowAnonymous.map { .init(pathPrefix: $0.pathPrefix, methods: $0.methods) },
                          apiKeyHeader: auth.apiKey?.header, apiKeys: keys,
                          passwords: (auth.basic?.entries ?? []).map { .init(user: $0.user, hash: $0.hash) },
                          jwt: jwt, external: external, oidc: oidc, build: context)
    }
}
