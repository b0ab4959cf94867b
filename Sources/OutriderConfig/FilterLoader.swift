import Yams

// A route's `filters` list (SPEC §4–6): auth, rate_limit and headers, in the order written.
// Files the auth methods name (keys, htpasswd, JWKS) are read here, at load, so a bad line is
// a config error rather than a 401 at request time.

extension ConfigurationBuilder {
    static let filterKinds = ["auth", "rate_limit", "headers"]
    static let authKeys = ["realm", "allow_anonymous", "api_key", "basic", "jwt", "external", "oidc"]
    static let authMethodKeys = ["api_key", "basic", "jwt", "external", "oidc"]
    static let oidcKeys = ["issuer", "client_id", "client_secret", "redirect_url", "cookie_secret", "scopes", "cookie_name",
                           "cookie_expire", "cookie_refresh", "pass_access_token", "set_authorization_header", "email_claim",
                           "groups_claim", "token_endpoint_auth", "end_session", "post_logout_redirect_url", "ca_file",
                           "extra_audiences", "timeout", "discovery_refresh"]
    static let jwtKeys = ["issuer", "audiences", "jwks_file", "jwks_uri", "jwks_refresh", "min_refresh", "identity_claim",
                          "algorithms", "clock_skew", "from", "claims_to_headers", "forward_token"]
    static let externalKeys = ["url", "timeout", "headers_to_upstream", "failure_mode", "cache_ttl"]
    static let jwtAlgorithms = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                "ES256", "ES384", "EdDSA"]
    /// Headers the proxy itself frames or routes by: a filter may not set, add or remove them.
    static let proxyManagedHeaders: Set<String> = ["host", "content-length", "transfer-encoding", "connection",
                                                   "upgrade", "te", "keep-alive", "proxy-connection"]
    /// Header values under these names are credentials: rendered as `<redacted>`.
    static let credentialHeaders: Set<String> = ["authorization", "proxy-authorization", "cookie", "set-cookie",
                                                 "x-api-key"]

    func filters(_ node: Node) -> [FilterConfig] {
        guard let items = session.list(node, key: "filters") else { return [] }
        var filters: [FilterConfig] = []
        var authSeen = false
        for item in items {
            guard case .mapping(let mapping) = item, !mapping.isEmpty else {
                session.report("expected a filter: a mapping with one key, auth, rate_limit or headers; got \(item.kindDescription)",
                               at: item)
                continue
            }
            var kind: (name: String, keyNode: Node, value: Node)?
            for (keyNode, value) in mapping {
                guard case .scalar(let scalar) = keyNode, Self.filterKinds.contains(scalar.string) else {
                    let shown = keyNode.scalar.map { "'\($0.string)'" } ?? keyNode.kindDescription
                    session.report("unknown filter \(shown); expected one of: \(Self.filterKinds.joined(separator: ", "))",
                                   at: keyNode)
                    continue
                }
                if let kind {
                    session.report("a filter has exactly one key, but this one also has '\(kind.name)': start each filter with its own '- '",
                                   at: keyNode)
                    continue
                }
                kind = (scalar.string, keyNode, value)
            }
            guard let kind else { continue }
            switch kind.name {
            case "auth":
                authSeen = true
                if let config = authFilter(kind.value, keyNode: kind.keyNode) { filters.append(.auth(config)) }
            case "rate_limit":
                if let config = rateLimitFilter(kind.value, keyNode: kind.keyNode, authBefore: authSeen) {
                    filters.append(.rateLimit(config))
                }
            default:
                if let config = headersFilter(kind.value) { filters.append(.headers(config)) }
            }
        }
        return filters
    }

    // MARK: auth

    private func authFilter(_ node: Node, keyNode: Node) -> AuthFilterConfig? {
        guard let fields = session.fields(of: node, section: "auth", supported: Self.authKeys) else {
            return nil
        }
        var config = AuthFilterConfig(realm: "outrider", allowAnonymous: [], apiKey: nil, basic: nil, jwt: nil, external: nil)
        if let node = fields.value("realm"), let realm = session.nonEmptyString(node, key: "realm") {
            // The realm is a quoted-string in WWW-Authenticate: keep it to what needs no escaping.
            if realm.contains(where: { $0 == "\"" || $0 == "\\" }) || CredentialFiles.hasControlCharacters(realm) {
                session.report("invalid realm '\(realm)': no quotes, backslashes or control characters", at: node)
            } else {
                config.realm = realm
            }
        }
        if let node = fields.value("allow_anonymous"), let items = session.list(node, key: "allow_anonymous") {
            config.allowAnonymous = items.compactMap(anonymousRule)
        }
        if let node = fields.value("api_key") { config.apiKey = apiKey(node, keyNode: fields.keyNode("api_key") ?? node) }
        if let node = fields.value("basic") { config.basic = basic(node, keyNode: fields.keyNode("basic") ?? node) }
        if let node = fields.value("jwt") { config.jwt = jwt(node, keyNode: fields.keyNode("jwt") ?? node) }
        if let node = fields.value("external") { config.external = external(node, keyNode: fields.keyNode("external") ?? node) }
        if let node = fields.value("oidc") { config.oidc = oidc(node, keyNode: fields.keyNode("oidc") ?? node) }
        // Judged on what was written, not on what parsed: a broken method has its own error.
        if !Self.authMethodKeys.contains(where: { fields.value($0) != nil }) {
            session.report("auth needs at least one method: \(Self.authMethodKeys.joined(separator: ", "))", at: keyNode)
        }
        return config
    }

    private func anonymousRule(_ node: Node) -> AnonymousRule? {
        guard let fields = session.fields(of: node, section: "allow_anonymous", supported: ["path_prefix", "methods"]) else {
            return nil
        }
        var rule = AnonymousRule(pathPrefix: "/", methods: [])
        guard let prefixNode = fields.value("path_prefix") else {
            session.report("allow_anonymous rule is missing required key 'path_prefix'", at: node)
            return nil
        }
        guard let prefix = pathPrefix(prefixNode) else { return nil }
        rule.pathPrefix = prefix
        if let node = fields.value("methods"), let methods = methods(node) { rule.methods = methods }
        return rule
    }

    private func apiKey(_ node: Node, keyNode: Node) -> APIKeyConfig? {
        guard let fields = session.fields(of: node, section: "api_key", supported: ["header", "keys_file"]) else {
            return nil
        }
        var header = "x-api-key"
        if let node = fields.value("header"), let name = headerName(node, key: "header", written: false) { header = name }
        guard let fileNode = fields.value("keys_file") else {
            session.report("api_key is missing required key 'keys_file'", at: keyNode)
            return nil
        }
        guard let file = credentialFile(fileNode, key: "keys_file") else { return nil }
        let path = file.path
        let (keys, problems) = APIKeysFile.parse(file.text)
        for problem in problems { session.report("keys_file \(path) \(problem)", at: fileNode) }
        if problems.isEmpty && keys.isEmpty { session.report("keys_file \(path) has no keys", at: fileNode) }
        return APIKeyConfig(header: header, keysFile: path, keys: keys)
    }

    private func basic(_ node: Node, keyNode: Node) -> BasicAuthConfig? {
        guard let fields = session.fields(of: node, section: "basic", supported: ["htpasswd"]) else { return nil }
        guard let fileNode = fields.value("htpasswd") else {
            session.report("basic is missing required key 'htpasswd'", at: keyNode)
            return nil
        }
        guard let file = credentialFile(fileNode, key: "htpasswd") else { return nil }
        let path = file.path
        let (entries, problems) = HtpasswdFile.parse(file.text)
        for problem in problems { session.report("htpasswd \(path) \(problem)", at: fileNode) }
        if problems.isEmpty && entries.isEmpty { session.report("htpasswd \(path) has no users", at: fileNode) }
        return BasicAuthConfig(htpasswd: path, entries: entries)
    }

    private func jwt(_ node: Node, keyNode: Node) -> JWTConfig? {
        guard let fields = session.fields(of: node, section: "jwt", supported: Self.jwtKeys) else { return nil }
        var config = JWTConfig(issuer: nil, audiences: [], jwksFile: nil, jwksJSON: nil, jwksURI: nil,
                               jwksRefresh: .seconds(300), minRefresh: .seconds(10), identityClaim: "sub",
                               algorithms: [], clockSkew: .seconds(30), from: [.header("authorization")],
                               claimsToHeaders: [], forwardToken: true)
        if let node = fields.value("issuer") { config.issuer = session.nonEmptyString(node, key: "issuer") }
        if let node = fields.value("audiences"), let items = session.list(node, key: "audiences") {
            for item in items {
                guard let audience = session.nonEmptyString(item, key: "audiences") else { continue }
                if config.audiences.contains(audience) {
                    session.report("duplicate audience '\(audience)' in 'audiences'", at: item)
                } else {
                    config.audiences.append(audience)
                }
            }
        }
        if let node = fields.value("algorithms") {
            if let algorithms = algorithms(node) { config.algorithms = algorithms }
        } else {
            session.report("jwt is missing required key 'algorithms' (for example [RS256, ES256])", at: keyNode)
        }

        let fileNode = fields.value("jwks_file")
        let uriNode = fields.value("jwks_uri")
        switch (fileNode, uriNode) {
        case (nil, nil):
            session.report("jwt needs one of 'jwks_file' or 'jwks_uri'", at: keyNode)
        case (.some, .some):
            session.report("jwt takes one of 'jwks_file' or 'jwks_uri', not both", at: fields.keyNode("jwks_uri") ?? keyNode)
        case (let fileNode?, nil):
            if let file = credentialFile(fileNode, key: "jwks_file") {
                config.jwksFile = file.path
                config.jwksJSON = file.text
                if let problem = JWKSFile.check(file.text, algorithms: config.algorithms) {
                    session.report("jwks_file \(file.path): \(problem)", at: fileNode)
                }
            }
        case (nil, let uriNode?):
            if let uri = session.nonEmptyString(uriNode, key: "jwks_uri") {
                if case .failure(let problem) = HTTPURL.parse(uri, allowHTTPS: true) {
                    session.report("invalid jwks_uri '\(uri)': \(problem)", at: uriNode)
                } else {
                    config.jwksURI = uri
                }
            }
        }
        if let node = fields.value("jwks_refresh"), let value = session.duration(node, key: "jwks_refresh", allowZero: false) {
            config.jwksRefresh = value
        }
        if let node = fields.value("min_refresh"), let value = session.duration(node, key: "min_refresh", allowZero: false) {
            config.minRefresh = value
        }
        if let node = fields.value("identity_claim"), let claim = session.nonEmptyString(node, key: "identity_claim") {
            config.identityClaim = claim
        }
        if let node = fields.value("clock_skew"), let value = session.duration(node, key: "clock_skew") {
            config.clockSkew = value
        }
        if let node = fields.value("from"), let sources = tokenSources(node) { config.from = sources }
        if let node = fields.value("claims_to_headers") { config.claimsToHeaders = claimHeaders(node) }
        if let node = fields.value("forward_token"), let value = session.bool(node, key: "forward_token") {
            config.forwardToken = value
        }
        return config
    }

    private func algorithms(_ node: Node) -> [String]? {
        guard let items = session.list(node, key: "algorithms") else { return nil }
        if items.isEmpty {
            session.report("'algorithms' must name at least one algorithm", at: node)
            return nil
        }
        var algorithms: [String] = []
        for item in items {
            guard let algorithm = session.string(item, key: "algorithms") else { continue }
            if algorithm.lowercased() == "none" {
                session.report("'none' is never accepted", at: item)
            } else if !Self.jwtAlgorithms.contains(algorithm) {
                session.report("invalid algorithm '\(algorithm)'; expected one of: \(Self.jwtAlgorithms.joined(separator: ", "))",
                               at: item)
            } else if algorithms.contains(algorithm) {
                session.report("duplicate algorithm '\(algorithm)' in 'algorithms'", at: item)
            } else {
                algorithms.append(algorithm)
            }
        }
        return algorithms
    }

    private func tokenSources(_ node: Node) -> [TokenSource]? {
        guard let items = session.list(node, key: "from") else { return nil }
        if items.isEmpty {
            session.report("'from' must name at least one place to find the token", at: node)
            return nil
        }
        var sources: [TokenSource] = []
        for item in items {
            guard let text = session.string(item, key: "from") else { continue }
            let source: TokenSource?
            if text.hasPrefix("header:"), HTTPToken.isValid(String(text.dropFirst(7))) {
                source = .header(text.dropFirst(7).lowercased())
            } else if text.hasPrefix("cookie:"), HTTPToken.isValid(String(text.dropFirst(7))) {
                source = .cookie(String(text.dropFirst(7)))
            } else if text.hasPrefix("query:"), QueryName.isValid(text.dropFirst(6)) {
                source = .query(String(text.dropFirst(6)))
            } else {
                source = nil
            }
            guard let source else {
                session.report("invalid token source '\(text)' for 'from': expected header:NAME, cookie:NAME or query:NAME",
                               at: item)
                continue
            }
            if sources.contains(source) {
                session.report("duplicate token source '\(text)' in 'from'", at: item)
            } else {
                sources.append(source)
            }
        }
        return sources.isEmpty ? nil : sources
    }

    private func claimHeaders(_ node: Node) -> [ClaimHeader] {
        var claims: [ClaimHeader] = []
        for (keyNode, valueNode) in stringMapping(node, key: "claims_to_headers", expected: "claim name to header name") {
            guard let claim = session.nonEmptyString(keyNode, key: "claims_to_headers") else { continue }
            guard let header = headerName(valueNode, key: "claims_to_headers", written: true) else { continue }
            if claims.contains(where: { $0.claim == claim }) {
                session.report("duplicate claim '\(claim)' in 'claims_to_headers'", at: keyNode)
            } else if let other = claims.first(where: { $0.header == header }) {
                session.report("claims '\(other.claim)' and '\(claim)' both set header '\(header)'", at: valueNode)
            } else {
                claims.append(ClaimHeader(claim: claim, header: header))
            }
        }
        return claims
    }

    private func external(_ node: Node, keyNode: Node) -> ExternalAuthConfig? {
        guard let fields = session.fields(of: node, section: "external", supported: Self.externalKeys) else { return nil }
        var config = ExternalAuthConfig(url: "", address: ConfigAddress(host: "127.0.0.1", port: 80), path: "/",
                                        timeout: .milliseconds(500), headersToUpstream: [], failureMode: .deny,
                                        cacheTTL: .zero)
        var valid = true
        if let node = fields.value("url") {
            if let url = session.nonEmptyString(node, key: "url") {
                switch HTTPURL.parse(url, allowHTTPS: false) {
                case .success(let parsed):
                    config.url = url
                    config.address = parsed.address
                    config.path = parsed.path
                case .failure(let problem):
                    session.report("invalid url '\(url)' for external auth: \(problem)", at: node)
                    valid = false
                }
            } else {
                valid = false
            }
        } else {
            session.report("external is missing required key 'url'", at: keyNode)
            valid = false
        }
        if let node = fields.value("timeout"), let value = session.duration(node, key: "timeout", allowZero: false) {
            config.timeout = value
        }
        if let node = fields.value("headers_to_upstream") {
            config.headersToUpstream = headerNames(node, key: "headers_to_upstream")
        }
        if let node = fields.value("failure_mode"),
           let mode = session.choice(node, key: "failure_mode", among: [FailureMode.deny, .allow]) {
            config.failureMode = mode
        }
        if let node = fields.value("cache_ttl"), let value = session.duration(node, key: "cache_ttl") {
            config.cacheTTL = value
        }
        return valid ? config : nil
    }

    // MARK: oidc

    private func oidc(_ node: Node, keyNode: Node) -> OIDCConfig? {
        guard let fields = session.fields(of: node, section: "oidc", supported: Self.oidcKeys) else { return nil }
        var valid = true
        func required(_ key: String) -> (Node, String)? {
            guard let node = fields.value(key) else {
                session.report("oidc is missing required key '\(key)'", at: keyNode)
                valid = false
                return nil
            }
            guard let text = session.nonEmptyString(node, key: key) else { valid = false; return nil }
            return (node, text)
        }
        var issuer = ""
        if let (node, text) = required("issuer") {
            if let problem = OIDCURL.issuerProblem(text) {
                session.report("invalid issuer '\(text)': \(problem)", at: node)
                valid = false
            } else {
                issuer = text.hasSuffix("/") ? String(text.dropLast()) : text
            }
        }
        var clientID = ""
        if let (node, text) = required("client_id") {
            if CredentialFiles.hasControlCharacters(text) {
                session.report("invalid client_id: control characters", at: node)
                valid = false
            }
            clientID = text
        }
        var clientSecret = ""
        if let (node, text) = required("client_secret") {
            if CredentialFiles.hasControlCharacters(text) {
                session.report("invalid client_secret: control characters", at: node)
                valid = false
            }
            clientSecret = text
        }
        var redirectURL = "", callbackPath = "/oauth2/callback"
        if let (node, text) = required("redirect_url") {
            switch OIDCURL.absolute(text) {
            case .success(let path):
                redirectURL = text
                callbackPath = path
            case .failure(let problem):
                session.report("invalid redirect_url '\(text)': \(problem)", at: node)
                valid = false
            }
        }
        var cookieSecret: [UInt8] = []
        if let (node, text) = required("cookie_secret") {
            if let bytes = OIDCURL.decodeSecret(text), bytes.count == 32 {
                cookieSecret = bytes
            } else {
                let got = OIDCURL.decodeSecret(text).map { "\($0.count) bytes" } ?? "not base64"
                session.report("cookie_secret must be 32 random bytes, base64-encoded (openssl rand -base64 32); got \(got)",
                               at: node)
                valid = false
            }
        }
        var config = OIDCConfig(issuer: issuer, clientID: clientID, clientSecret: clientSecret, redirectURL: redirectURL,
                                callbackPath: callbackPath, cookieSecret: cookieSecret)
        func reference(_ key: String) -> String? {
            guard let raw = fields.value(key)?.scalar?.string, raw.hasPrefix("${env:") || raw.hasPrefix("${file:"),
                  raw.hasSuffix("}"), raw.firstIndex(of: "}") == raw.index(before: raw.endIndex) else { return nil }
            if raw.hasPrefix("${file:") {
                // Shown with the absolute path, like the other files print-config names.
                return "${file:" + FilePaths.resolve(String(raw.dropFirst(7).dropLast()), against: session.baseDirectory) + "}"
            }
            return raw
        }
        config.clientSecretReference = reference("client_secret")
        config.cookieSecretReference = reference("cookie_secret")
        if let node = fields.value("scopes"), let items = session.list(node, key: "scopes") {
            var scopes: [String] = []
            for item in items {
                guard let scope = session.nonEmptyString(item, key: "scopes") else { continue }
                // RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E
                if !scope.utf8.allSatisfy({ $0 == 0x21 || (0x23...0x5B).contains($0) || (0x5D...0x7E).contains($0) }) {
                    session.report("invalid scope '\(scope)': printable ASCII without spaces, quotes or backslashes", at: item)
                } else if scopes.contains(scope) {
                    session.report("duplicate scope '\(scope)' in 'scopes'", at: item)
                } else {
                    scopes.append(scope)
                }
            }
            if !scopes.contains("openid") {
                session.report("'scopes' must include openid", at: node)
            }
            config.scopes = scopes
        }
        if let node = fields.value("cookie_name"), let name = session.nonEmptyString(node, key: "cookie_name") {
            if HTTPToken.isValid(name), name.count <= 64 {
                config.cookieName = name
            } else {
                session.report("invalid cookie_name '\(name)': a token (letters, digits, !#$%&'*+-.^_`|~), at most 64 characters",
                               at: node)
            }
        }
        if let node = fields.value("cookie_expire"), let value = session.duration(node, key: "cookie_expire", allowZero: false) {
            config.cookieExpire = value
        }
        if let node = fields.value("cookie_refresh"), let value = session.duration(node, key: "cookie_refresh") {
            if value >= config.cookieExpire {
                session.report("cookie_refresh must be shorter than cookie_expire (\(DurationNotation.format(config.cookieExpire)))",
                               at: node)
            } else {
                config.cookieRefresh = value
            }
        }
        if let node = fields.value("pass_access_token"), let value = session.bool(node, key: "pass_access_token") {
            config.passAccessToken = value
        }
        if let node = fields.value("set_authorization_header"), let value = session.bool(node, key: "set_authorization_header") {
            config.setAuthorizationHeader = value
        }
        if let node = fields.value("email_claim"), let value = session.nonEmptyString(node, key: "email_claim") {
            config.emailClaim = value
        }
        if let node = fields.value("groups_claim"), let value = session.nonEmptyString(node, key: "groups_claim") {
            config.groupsClaim = value
        }
        if let node = fields.value("token_endpoint_auth"),
           let value = session.choice(node, key: "token_endpoint_auth", among: [TokenEndpointAuth.basic, .post]) {
            config.tokenEndpointAuth = value
        }
        if let node = fields.value("end_session"), let value = session.bool(node, key: "end_session") {
            config.endSession = value
        }
        if let node = fields.value("post_logout_redirect_url"),
           let text = session.nonEmptyString(node, key: "post_logout_redirect_url") {
            if case .failure(let problem) = OIDCURL.absolute(text) {
                session.report("invalid post_logout_redirect_url '\(text)': \(problem)", at: node)
            } else if !config.endSession {
                session.report("post_logout_redirect_url needs end_session: true", at: node)
            } else {
                config.postLogoutRedirectURL = text
            }
        }
        if let node = fields.value("ca_file") {
            if issuer.hasPrefix("http://") {
                session.report("ca_file needs an https:// issuer", at: node)
            } else if let file = credentialFile(node, key: "ca_file") {
                if file.text.contains("-----BEGIN CERTIFICATE-----") {
                    config.caFile = file.path
                } else {
                    session.report("ca_file \(file.path) has no PEM certificate (-----BEGIN CERTIFICATE-----)", at: node)
                }
            }
        }
        if let node = fields.value("extra_audiences"), let items = session.list(node, key: "extra_audiences") {
            for item in items {
                guard let audience = session.nonEmptyString(item, key: "extra_audiences") else { continue }
                if audience == config.clientID || config.extraAudiences.contains(audience) {
                    session.report("duplicate audience '\(audience)' in 'extra_audiences' (client_id is always accepted)", at: item)
                } else {
                    config.extraAudiences.append(audience)
                }
            }
        }
        if let node = fields.value("timeout"), let value = session.duration(node, key: "timeout", allowZero: false) {
            config.timeout = value
        }
        if let node = fields.value("discovery_refresh"),
           let value = session.duration(node, key: "discovery_refresh", allowZero: false) {
            config.discoveryRefresh = value
        }
        return valid ? config : nil
    }

    /// Reads the file a credentials key names (relative to the config's directory): its
    /// absolute path and text, or nil with the error reported at the value.
    private func credentialFile(_ node: Node, key: String) -> (path: String, text: String)? {
        guard let written = session.nonEmptyString(node, key: key) else { return nil }
        let path = FilePaths.resolve(written, against: session.baseDirectory)
        switch FileReader.readText(path, limit: CredentialFiles.sizeLimit) {
        case .success(let text):
            return (path, text)
        case .failure(let failure):
            session.report("cannot read \(key) '\(path)': \(failure.reason)", at: node)
            return nil
        }
    }

    // MARK: rate_limit

    private func rateLimitFilter(_ node: Node, keyNode: Node, authBefore: Bool) -> RateLimitConfig? {
        guard let fields = session.fields(of: node, section: "rate_limit",
                                          supported: ["requests_per_second", "burst", "key"]) else { return nil }
        var config = RateLimitConfig(requestsPerSecond: 1, burst: 1, key: .clientIP)
        var valid = true
        if let node = fields.value("requests_per_second") {
            if let rate = requestRate(node) { config.requestsPerSecond = rate } else { valid = false }
        } else {
            session.report("rate_limit is missing required key 'requests_per_second'", at: keyNode)
            valid = false
        }
        config.burst = max(1, Int(config.requestsPerSecond.rounded(.up)))
        if let node = fields.value("burst"), let burst = session.integer(node, key: "burst", range: 1...1_000_000_000) {
            config.burst = burst
        }
        if let node = fields.value("key"), let text = session.string(node, key: "key") {
            switch text {
            case "client_ip":
                config.key = .clientIP
            case "identity":
                config.key = .identity
                if !authBefore {
                    session.report("rate_limit key 'identity' needs an auth filter earlier in this route's filters", at: node)
                }
            default:
                let name = text.hasPrefix("header:") ? String(text.dropFirst(7)) : ""
                if HTTPToken.isValid(name) {
                    config.key = .header(name.lowercased())
                } else {
                    session.report("invalid value '\(text)' for 'key'; expected client_ip, header:NAME or identity", at: node)
                }
            }
        }
        return valid ? config : nil
    }

    /// A plain decimal number greater than zero: `100`, `0.5`. No signs or exponents.
    private func requestRate(_ node: Node) -> Double? {
        guard let text = session.text(node, key: "requests_per_second", expected: "a number") else { return nil }
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let isDecimal = !text.isEmpty && parts.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }
            && parts.count <= 2 && (parts.count < 2 || parts[1].count <= 9)
        guard isDecimal, let rate = Double(text) else {
            session.report("invalid value '\(text)' for 'requests_per_second': expected a number like 100 or 0.5", at: node)
            return nil
        }
        guard rate > 0, rate <= 1_000_000_000 else {
            session.report("'requests_per_second' must be greater than 0 and at most 1000000000, got \(text)", at: node)
            return nil
        }
        return rate
    }

    // MARK: headers

    private func headersFilter(_ node: Node) -> HeadersFilterConfig? {
        guard let fields = session.fields(of: node, section: "headers", supported: ["request", "response"]) else { return nil }
        let empty = HeaderOperations(set: [], add: [], remove: [])
        var config = HeadersFilterConfig(request: empty, response: empty)
        if let node = fields.value("request") { config.request = headerOperations(node, section: "request") }
        if let node = fields.value("response") { config.response = headerOperations(node, section: "response") }
        return config
    }

    private func headerOperations(_ node: Node, section: String) -> HeaderOperations {
        var operations = HeaderOperations(set: [], add: [], remove: [])
        guard let fields = session.fields(of: node, section: "headers \(section)", supported: ["set", "add", "remove"]) else {
            return operations
        }
        if let node = fields.value("set") { operations.set = headerValues(node, key: "set") }
        if let node = fields.value("add") { operations.add = headerValues(node, key: "add") }
        if let node = fields.value("remove"), let items = session.list(node, key: "remove") {
            for item in items {
                guard let name = headerName(item, key: "remove", written: true) else { continue }
                if operations.remove.contains(name) {
                    session.report("duplicate header '\(name)' in 'remove'", at: item)
                } else if let other = ["set", "add"].first(where: { key in
                    (key == "set" ? operations.set : operations.add).contains { $0.name == name }
                }) {
                    session.report("header '\(name)' is in both '\(other)' and 'remove' of headers \(section)", at: item)
                } else {
                    operations.remove.append(name)
                }
            }
        }
        return operations
    }

    private func headerValues(_ node: Node, key: String) -> [HeaderOperation] {
        var operations: [HeaderOperation] = []
        for (keyNode, valueNode) in stringMapping(node, key: key, expected: "header name to value") {
            guard let name = headerName(keyNode, key: key, written: true) else { continue }
            guard let value = session.string(valueNode, key: name) else { continue }
            if operations.contains(where: { $0.name == name }) {
                session.report("duplicate header '\(name)' in '\(key)' (names are case-insensitive)", at: keyNode)
                continue
            }
            if value.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F }) {
                session.report("invalid value for header '\(name)': control characters (such as a newline) cannot be sent",
                               at: valueNode)
                continue
            }
            if let problem = HeaderTemplate.problem(in: value) {
                session.report(problem, at: valueNode)
                continue
            }
            let raw = valueNode.scalar?.string ?? ""
            let isSecret = Self.credentialHeaders.contains(name) || raw.contains("${env:") || raw.contains("${file:")
            operations.append(HeaderOperation(name: name, value: value, isSecret: isSecret))
        }
        return operations
    }

    // MARK: Shared pieces

    /// The pairs of a mapping (null reads as empty), or none with the error reported.
    private func stringMapping(_ node: Node, key: String, expected: String) -> [(Node, Node)] {
        if node.isNull { return [] }
        guard case .mapping(let mapping) = node else {
            session.report("expected a mapping of \(expected) for '\(key)', got \(node.kindDescription)", at: node)
            return []
        }
        return Array(mapping)
    }

    /// A header name, lower-cased. `written`: the proxy would send it, so the headers it owns
    /// are refused.
    private func headerName(_ node: Node, key: String, written: Bool) -> String? {
        guard let text = session.string(node, key: key) else { return nil }
        guard HTTPToken.isValid(text) else {
            session.report("invalid header name '\(text)' in '\(key)': expected a token like x-request-id", at: node)
            return nil
        }
        let name = text.lowercased()
        if written, Self.proxyManagedHeaders.contains(name) {
            session.report("header '\(name)' is managed by the proxy", at: node)
            return nil
        }
        return name
    }

    private func headerNames(_ node: Node, key: String) -> [String] {
        guard let items = session.list(node, key: key) else { return [] }
        var names: [String] = []
        for item in items {
            guard let name = headerName(item, key: key, written: true) else { continue }
            if names.contains(name) {
                session.report("duplicate header '\(name)' in '\(key)'", at: item)
            } else {
                names.append(name)
            }
        }
        return names
    }
}

/// Header filter values: literal text with `${NAME}` request-time variables (SPEC §6).
enum HeaderTemplate {
    /// In SPEC's order, for messages.
    static let knownNames = ["client_ip", "client_port", "request_id", "host", "scheme", "method", "path", "identity",
                             "jwt.claim.NAME"]

    /// nil when every `${…}` names a known variable; else the message. A `$` not followed by
    /// `{` is literal text.
    static func problem(in template: String) -> String? {
        var rest = template[...]
        while let open = rest.firstRange(of: "${") {
            let afterOpen = rest[open.upperBound...]
            guard let close = afterOpen.firstIndex(of: "}") else {
                return "unterminated '${' in header value: write ${variable}, or '$' alone for a literal dollar sign"
            }
            let name = String(afterOpen[..<close])
            if !TemplateVariables.isKnown(name) {
                return "unknown variable '${\(name)}'; known: \(knownNames.joined(separator: ", "))"
            }
            rest = afterOpen[afterOpen.index(after: close)...]
        }
        return nil
    }
}

/// `http://HOST[:PORT]/PATH` (and `https://` where allowed): the external auth service and
/// remote JWKS documents.
enum HTTPURL {
    struct Parsed {
        var address: ConfigAddress
        var path: String
    }

    static func parse(_ text: String, allowHTTPS: Bool) -> Result<Parsed, HTTPURL.Problem> {
        let rest: Substring
        let defaultPort: UInt16
        if text.hasPrefix("http://") {
            rest = text.dropFirst(7)
            defaultPort = 80
        } else if text.hasPrefix("https://") {
            guard allowHTTPS else {
                return .failure(Problem("https:// is not supported yet (TLS origination); use http://HOST:PORT/PATH"))
            }
            rest = text.dropFirst(8)
            defaultPort = 443
        } else {
            return .failure(Problem(allowHTTPS ? "expected an http:// or https:// URL" : "expected http://HOST:PORT/PATH"))
        }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...])
        if path.isEmpty { path = "/" } else if path.hasPrefix("?") { path = "/" + path }
        guard !authority.isEmpty else { return .failure(Problem("no host")) }
        guard !authority.contains("@") else { return .failure(Problem("user information (user@host) is not allowed")) }
        guard !path.contains("#") else { return .failure(Problem("a fragment (#…) is not allowed")) }
        guard !path.contains(where: { $0.isWhitespace }), !CredentialFiles.hasControlCharacters(path) else {
            return .failure(Problem("the path must not contain spaces or control characters"))
        }
        let hasPort = authority.hasPrefix("[") ? authority.contains("]:") : authority.contains(":")
        let hostPort = hasPort ? String(authority) : "\(authority):\(defaultPort)"
        switch AddressNotation.parse(hostPort) {
        case .success(let address):
            return .success(Parsed(address: address, path: path))
        case .failure(.badPort):
            return .failure(Problem("the port must be between 1 and 65535"))
        case .failure:
            return .failure(Problem("the host is not a valid IP address or DNS name"))
        }
    }

    struct Problem: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}

/// Query parameter names a token may arrive in: unreserved characters only (RFC 3986).
enum QueryName {
    static func isValid(_ name: Substring) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || "-._~".utf8.contains(byte)
        }
    }
}

/// OIDC URLs and secrets (auth `oidc`).
enum OIDCURL {
    /// nil when `text` is an acceptable issuer: `https://HOST[:PORT][/PATH]`, or `http://` to a
    /// loopback address for local testing (SPEC §4). No query, fragment or user information.
    static func issuerProblem(_ text: String) -> String? {
        let rest: Substring
        if text.hasPrefix("https://") {
            rest = text.dropFirst(8)
        } else if text.hasPrefix("http://") {
            rest = text.dropFirst(7)
            let host = hostPart(rest)
            let isLoopback = (host.hasPrefix("127.") && IPLiteral.isLiteral(String(host))) || host == "[::1]"
            if !isLoopback {
                return "the issuer must be https:// (http:// only on a loopback address such as http://127.0.0.1:PORT)"
            }
        } else {
            return "expected an https:// URL"
        }
        if rest.contains("?") || rest.contains("#") { return "no query or fragment" }
        if rest.contains("@") { return "user information (user@host) is not allowed" }
        if rest.contains(where: { $0.isWhitespace }) || CredentialFiles.hasControlCharacters(rest) {
            return "no spaces or control characters"
        }
        switch HTTPURL.parse(text, allowHTTPS: true) {
        case .success: return nil
        case .failure(let problem): return problem.description
        }
    }

    private static func hostPart(_ rest: Substring) -> Substring {
        let authority = rest[..<(rest.firstIndex(of: "/") ?? rest.endIndex)]
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            return authority[...close]
        }
        return authority[..<(authority.firstIndex(of: ":") ?? authority.endIndex)]
    }

    /// An absolute http(s) URL (redirect_url, post_logout_redirect_url): its path.
    static func absolute(_ text: String) -> Result<String, HTTPURL.Problem> {
        if text.contains("#") { return .failure(HTTPURL.Problem("a fragment (#…) is not allowed")) }
        switch HTTPURL.parse(text, allowHTTPS: true) {
        case .success(let parsed):
            let path = parsed.path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? "/"
            return .success(path.isEmpty ? "/" : path)
        case .failure(let problem):
            return .failure(problem)
        }
    }

    /// Standard or URL-safe base64, padded or not.
    static func decodeSecret(_ text: String) -> [UInt8]? {
        var normalized = String(text.map { $0 == "-" ? "+" : ($0 == "_" ? "/" : $0) })
        while normalized.utf8.count % 4 != 0 { normalized += "=" }
        return Base64.decode(normalized)
    }
}
