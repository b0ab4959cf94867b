import Foundation
import Testing
@testable import OutriderConfig

// The route `filters` list (SPEC §4–6). Configs here put the filters under the first route:
//
//   1 listeners:
//   2   - routes:
//   3       - filters:
//   4           <filter body line 1, indented by 10>
//
// so a problem on body line L, column C is reported at file line L + 3, column C + 10.

let alicePassword = "alice-example-password"
let aliceBcrypt = "$2y$10$L06iol7gCse1F/yRiod68u4hDgizttpcNRrYsspxmWnSDpXGNAPV."
let bobSHA = "{SHA}aLmobGfnijWjyalEyVzvEvsuWnE="
/// SHA-256 of "example-key-reporting-93ab41e7".
let reportingDigest = "1752b02b6ec42cc2a2e1698cb6dd570129e7683d44d18bb89ba074c59b0f046d"
let minimalJWKS = #"{"keys": [{"kty": "RSA", "kid": "r1", "n": "sXch", "e": "AQAB"}, {"kty": "EC", "kid": "e1", "crv": "P-256", "x": "AA", "y": "AA"}]}"#

/// A config file's text with `body` as the first route's filters.
func filtersConfig(_ body: String) -> String {
    "listeners:\n  - routes:\n      - filters:\n"
        + body.split(separator: "\n", omittingEmptySubsequences: false).map { $0.isEmpty ? "" : "          " + $0 }
            .joined(separator: "\n")
        + "\n"
}

/// `FILE:LINE:COL: message` for a position in a filter body (see the top of this file).
func atBody(_ line: Int, _ column: Int, _ message: String, file: String = testPath) -> String {
    "\(file):\(line + 3):\(column + 10): \(message)"
}

/// A temporary directory with credentials files, holding the config it loads.
final class CredentialsFixture {
    let directory = makeTemporaryDirectory()
    var configPath: String { directory + "/outrider.yaml" }
    var keys: String { directory + "/keys" }
    var htpasswd: String { directory + "/htpasswd" }
    var jwks: String { directory + "/jwks.json" }

    init() {
        writeFile(keys, "# keys\nalice:alice-key-1\n\n  bob : sha256:\(reportingDigest)  \n")
        writeFile(htpasswd, "alice:\(aliceBcrypt)\nbob:\(bobSHA)\n")
        writeFile(jwks, minimalJWKS)
    }

    deinit { removeTree(directory) }

    func write(_ name: String, _ contents: String) -> String {
        writeFile(directory + "/" + name, contents)
        return directory + "/" + name
    }

    func load(_ body: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [FilterConfig] {
        let config = try OutriderConfigTests.load(filtersConfig(body), path: configPath, sourceLocation: sourceLocation)
        return config.listeners[0].routes[0].filters
    }

    func errors(_ body: String) -> [String] {
        errorLines(filtersConfig(body), path: configPath)
    }

    func at(_ line: Int, _ column: Int, _ message: String) -> String {
        atBody(line, column, message, file: configPath)
    }
}

// MARK: - Parsing

@Suite struct AuthFilterTests {
    @Test func everyKeyIsParsed() throws {
        let files = CredentialsFixture()
        let filters = try files.load("""
            - auth:
                realm: my-app
                allow_anonymous:
                  - { path_prefix: /healthz, methods: [GET, HEAD] }
                  - path_prefix: /public
                api_key: { header: X-Key, keys_file: keys }
                basic: { htpasswd: ./htpasswd }
                jwt:
                  issuer: https://issuer.example
                  audiences: [app, other]
                  jwks_file: \(files.jwks)
                  jwks_refresh: 1m
                  min_refresh: 5s
                  identity_claim: email
                  algorithms: [RS256, ES256, EdDSA, HS256]
                  clock_skew: 0
                  from: [header:X-Token, cookie:Token, query:access_token]
                  claims_to_headers: { email: X-Auth-Request-Email, groups: x-groups }
                  forward_token: false
                external:
                  url: http://auth.internal:9000/check?x=1
                  timeout: 2s
                  headers_to_upstream: [X-User, x-groups]
                  failure_mode: allow
                  cache_ttl: 10s
            """)
        let expected = AuthFilterConfig(
            realm: "my-app",
            allowAnonymous: [AnonymousRule(pathPrefix: "/healthz", methods: ["GET", "HEAD"]),
                             AnonymousRule(pathPrefix: "/public", methods: [])],
            apiKey: APIKeyConfig(header: "x-key", keysFile: files.keys, keys: [
                APIKeyEntry(name: "alice", secret: .plain(Array("alice-key-1".utf8))),
                APIKeyEntry(name: "bob", secret: .sha256(try #require(Hex.decode(reportingDigest)))),
            ]),
            basic: BasicAuthConfig(htpasswd: files.htpasswd, entries: [
                HtpasswdEntry(user: "alice", hash: aliceBcrypt),
                HtpasswdEntry(user: "bob", hash: bobSHA),
            ]),
            jwt: JWTConfig(
                issuer: "https://issuer.example", audiences: ["app", "other"], jwksFile: files.jwks,
                jwksJSON: minimalJWKS, jwksURI: nil, jwksRefresh: .seconds(60), minRefresh: .seconds(5),
                identityClaim: "email", algorithms: ["RS256", "ES256", "EdDSA", "HS256"], clockSkew: .zero,
                from: [.header("x-token"), .cookie("Token"), .query("access_token")],
                claimsToHeaders: [ClaimHeader(claim: "email", header: "x-auth-request-email"),
                                  ClaimHeader(claim: "groups", header: "x-groups")],
                forwardToken: false),
            external: ExternalAuthConfig(
                url: "http://auth.internal:9000/check?x=1", address: ConfigAddress(host: "auth.internal", port: 9_000),
                path: "/check?x=1", timeout: .seconds(2), headersToUpstream: ["x-user", "x-groups"],
                failureMode: .allow, cacheTTL: .seconds(10))
        )
        #expect(filters == [.auth(expected)])
    }

    @Test func defaults() throws {
        let files = CredentialsFixture()
        let filters = try files.load("""
            - auth:
                api_key: { keys_file: keys }
                jwt: { jwks_uri: "https://idp.example/jwks", algorithms: [ES256] }
                external: { url: "http://127.0.0.1/auth" }
            """)
        guard case .auth(let auth) = try #require(filters.first) else {
            Issue.record("expected an auth filter")
            return
        }
        #expect(auth.realm == "outrider")
        #expect(auth.allowAnonymous == [])
        #expect(auth.apiKey?.header == "x-api-key")
        #expect(auth.basic == nil)
        #expect(auth.jwt == JWTConfig(
            issuer: nil, audiences: [], jwksFile: nil, jwksJSON: nil, jwksURI: "https://idp.example/jwks",
            jwksRefresh: .seconds(300), minRefresh: .seconds(10), identityClaim: "sub", algorithms: ["ES256"],
            clockSkew: .seconds(30), from: [.header("authorization")], claimsToHeaders: [], forwardToken: true))
        #expect(auth.external == ExternalAuthConfig(
            url: "http://127.0.0.1/auth", address: ConfigAddress(host: "127.0.0.1", port: 80), path: "/auth",
            timeout: .milliseconds(500), headersToUpstream: [], failureMode: .deny, cacheTTL: .zero))
    }

    @Test func externalURLForms() throws {
        let cases: [(String, ConfigAddress, String)] = [
            ("http://10.0.0.1:8080/", ConfigAddress(host: "10.0.0.1", port: 8_080), "/"),
            ("http://auth", ConfigAddress(host: "auth", port: 80), "/"),
            ("http://auth?q=1", ConfigAddress(host: "auth", port: 80), "/?q=1"),
            ("http://[::1]:9000/a/b", ConfigAddress(host: "::1", port: 9_000), "/a/b"),
            ("http://[::1]/x", ConfigAddress(host: "::1", port: 80), "/x"),
        ]
        for (url, address, path) in cases {
            let parsed = try HTTPURL.parse(url, allowHTTPS: false).get()
            #expect(parsed.address == address, "\(url)")
            #expect(parsed.path == path, "\(url)")
        }
        let https = try HTTPURL.parse("https://idp.example/keys", allowHTTPS: true).get()
        #expect(https.address == ConfigAddress(host: "idp.example", port: 443))
    }

    @Test func environmentAndFileSubstitutionInFilterValues() throws {
        let files = CredentialsFixture()
        let filters = try OutriderConfigTests.load(filtersConfig("""
            - auth:
                realm: ${env:REALM}
                api_key: { keys_file: "${env:KEYS}" }
            """), path: files.configPath, environment: ["REALM": "prod", "KEYS": "keys"]).listeners[0].routes[0].filters
        guard case .auth(let auth) = filters.first else {
            Issue.record("expected an auth filter")
            return
        }
        #expect(auth.realm == "prod")
        #expect(auth.apiKey?.keysFile == files.keys)
        #expect(auth.apiKey?.keys.count == 2)
    }
}

@Suite struct RateLimitFilterTests {
    @Test func everyKeyIsParsed() throws {
        let config = try load(filtersConfig("""
            - rate_limit: { requests_per_second: 100, burst: 200, key: client_ip }
            - rate_limit: { requests_per_second: 0.5, burst: 3, key: "header:X-User" }
            - auth: { external: { url: "http://127.0.0.1:9000/" } }
            - rate_limit: { requests_per_second: 2.25, key: identity }
            """))
        let filters = config.listeners[0].routes[0].filters
        #expect(filters.count == 4)
        #expect(filters[0] == .rateLimit(RateLimitConfig(requestsPerSecond: 100, burst: 200, key: .clientIP)))
        #expect(filters[1] == .rateLimit(RateLimitConfig(requestsPerSecond: 0.5, burst: 3, key: .header("x-user"))))
        #expect(filters[3] == .rateLimit(RateLimitConfig(requestsPerSecond: 2.25, burst: 3, key: .identity)))
    }

    @Test(arguments: [("1", 1.0, 1), ("0.5", 0.5, 1), ("0.001", 0.001, 1), ("2.5", 2.5, 3), ("100", 100, 100),
                      ("1000000000", 1e9, 1_000_000_000), ("007", 7, 7)])
    func burstDefaultsToTheRateRoundedUp(text: String, rate: Double, burst: Int) throws {
        let config = try load(filtersConfig("- rate_limit: { requests_per_second: \(text) }"))
        #expect(config.listeners[0].routes[0].filters == [
            .rateLimit(RateLimitConfig(requestsPerSecond: rate, burst: burst, key: .clientIP)),
        ])
    }
}

@Suite struct HeadersFilterTests {
    @Test func everyKeyIsParsed() throws {
        let config = try load(filtersConfig("""
            - headers:
                request:
                  set: { X-Env: prod, x-client: "${client_ip}:${client_port}", x-empty: "" }
                  add: { x-tag: "id=${request_id} ${host} ${scheme} ${method} ${path} ${identity}" }
                  remove: [X-Debug, x-internal]
                response:
                  set: { strict-transport-security: "max-age=63072000", x-user: "${jwt.claim.email}" }
                  remove: [server]
            - headers: { response: { add: { x-price: "$5 ${jwt.claim.tier}$" } } }
            """))
        let filters = config.listeners[0].routes[0].filters
        #expect(filters == [
            .headers(HeadersFilterConfig(
                request: HeaderOperations(
                    set: [HeaderOperation(name: "x-env", value: "prod"),
                          HeaderOperation(name: "x-client", value: "${client_ip}:${client_port}"),
                          HeaderOperation(name: "x-empty", value: "")],
                    add: [HeaderOperation(name: "x-tag", value: "id=${request_id} ${host} ${scheme} ${method} ${path} ${identity}")],
                    remove: ["x-debug", "x-internal"]),
                response: HeaderOperations(
                    set: [HeaderOperation(name: "strict-transport-security", value: "max-age=63072000"),
                          HeaderOperation(name: "x-user", value: "${jwt.claim.email}")],
                    add: [], remove: ["server"]))),
            .headers(HeadersFilterConfig(
                request: HeaderOperations(set: [], add: [], remove: []),
                response: HeaderOperations(set: [], add: [HeaderOperation(name: "x-price", value: "$5 ${jwt.claim.tier}$")],
                                           remove: []))),
        ])
    }

    @Test func emptyAndNullSectionsAreEmpty() throws {
        let config = try load(filtersConfig("""
            - headers:
            - headers: { request: ~, response: { set: {}, add: ~, remove: [] } }
            """))
        let empty = HeadersFilterConfig(request: HeaderOperations(set: [], add: [], remove: []),
                                        response: HeaderOperations(set: [], add: [], remove: []))
        #expect(config.listeners[0].routes[0].filters == [.headers(empty), .headers(empty)])
    }

    @Test func credentialValuesAreMarkedSecret() throws {
        let directory = makeTemporaryDirectory()
        defer { removeTree(directory) }
        writeFile(directory + "/token", "s3cret\n")
        let config = try load(filtersConfig("""
            - headers:
                request:
                  set:
                    Authorization: "Bearer abc"
                    x-upstream-token: ${env:TOKEN}
                    x-file-token: "t=${file:token}"
                    x-plain: visible
                response:
                  set: { set-cookie: "a=b" }
            """), path: directory + "/outrider.yaml", environment: ["TOKEN": "from-env"])
        guard case .headers(let headers) = config.listeners[0].routes[0].filters.first else {
            Issue.record("expected a headers filter")
            return
        }
        #expect(headers.request.set == [
            HeaderOperation(name: "authorization", value: "Bearer abc", isSecret: true),
            HeaderOperation(name: "x-upstream-token", value: "from-env", isSecret: true),
            HeaderOperation(name: "x-file-token", value: "t=s3cret", isSecret: true),
            HeaderOperation(name: "x-plain", value: "visible", isSecret: false),
        ])
        #expect(headers.response.set == [HeaderOperation(name: "set-cookie", value: "a=b", isSecret: true)])
    }

    @Test func templates() {
        #expect(HeaderTemplate.problem(in: "plain") == nil)
        #expect(HeaderTemplate.problem(in: "") == nil)
        #expect(HeaderTemplate.problem(in: "$") == nil)
        #expect(HeaderTemplate.problem(in: "$$ ${host}$x {} }") == nil)
        #expect(HeaderTemplate.problem(in: "${client_ip}${client_port}") == nil)
        #expect(HeaderTemplate.problem(in: "${jwt.claim.a.b-c}") == nil)
        let known = "known: client_ip, client_port, request_id, host, scheme, method, path, identity, jwt.claim.NAME"
        #expect(HeaderTemplate.problem(in: "${x}") == "unknown variable '${x}'; \(known)")
        #expect(HeaderTemplate.problem(in: "${}") == "unknown variable '${}'; \(known)")
        #expect(HeaderTemplate.problem(in: "${jwt.claim.}") == "unknown variable '${jwt.claim.}'; \(known)")
        #expect(HeaderTemplate.problem(in: "${Host}") == "unknown variable '${Host}'; \(known)")
        #expect(HeaderTemplate.problem(in: "${host} ${env:X}") == "unknown variable '${env:X}'; \(known)")
        let unterminated = "unterminated '${' in header value: write ${variable}, or '$' alone for a literal dollar sign"
        #expect(HeaderTemplate.problem(in: "a ${host") == unterminated)
        #expect(HeaderTemplate.problem(in: "${host} ${") == unterminated)
        #expect(HeaderTemplate.problem(in: "${x} ${") == "unknown variable '${x}'; known: client_ip, client_port, request_id, host, scheme, method, path, identity, jwt.claim.NAME")
    }
}

@Suite struct FilterListTests {
    @Test func orderIsKeptAndKindsRepeat() throws {
        let files = CredentialsFixture()
        let filters = try files.load("""
            - headers: { request: { set: { x-a: "1" } } }
            - auth: { api_key: { keys_file: keys } }
            - rate_limit: { requests_per_second: 10 }
            - auth: { basic: { htpasswd: htpasswd } }
            - headers: { request: { set: { x-a: "2" } } }
            - rate_limit: { requests_per_second: 5 }
            """)
        let kinds = filters.map { filter -> String in
            switch filter {
            case .auth(let auth): return auth.apiKey != nil ? "auth:api_key" : "auth:basic"
            case .rateLimit(let limit): return "rate_limit:\(Int(limit.requestsPerSecond))"
            case .headers(let headers): return "headers:\(headers.request.set[0].value)"
            }
        }
        #expect(kinds == ["headers:1", "auth:api_key", "rate_limit:10", "auth:basic", "headers:2", "rate_limit:5"])
    }

    @Test func filtersOnSeveralRoutes() throws {
        let config = try load("""
            listeners:
              - routes:
                  - match: { path_prefix: /a }
                    filters: [{ rate_limit: { requests_per_second: 1 } }]
                  - filters:
                      - headers: { response: { remove: [server] } }
            """)
        #expect(config.listeners[0].routes[0].filters == [.rateLimit(RateLimitConfig(requestsPerSecond: 1, burst: 1, key: .clientIP))])
        #expect(config.listeners[0].routes[1].filters.count == 1)
    }
}

// MARK: - Errors

@Suite struct FilterListErrorTests {
    @Test func listShape() {
        #expect(errorLines("listeners:\n  - routes:\n      - filters: { auth: {} }\n") == [
            at(3, 18, "expected a list for 'filters', got a mapping"),
        ])
        #expect(errorLines(filtersConfig("""
            - auth
            - {}
            - []
            - retry: { attempts: 3 }
            - auth: { api_key: { keys_file: /nonexistent } }
              rate_limit: { requests_per_second: 1 }
            - ~
            """)) == [
            atBody(1, 3, "expected a filter: a mapping with one key, auth, rate_limit or headers; got a scalar"),
            atBody(2, 3, "expected a filter: a mapping with one key, auth, rate_limit or headers; got a mapping"),
            atBody(3, 3, "expected a filter: a mapping with one key, auth, rate_limit or headers; got a list"),
            atBody(4, 3, "unknown filter 'retry'; expected one of: auth, rate_limit, headers"),
            atBody(5, 33, "cannot read keys_file '/nonexistent': No such file or directory"),
            atBody(6, 3, "a filter has exactly one key, but this one also has 'auth': start each filter with its own '- '"),
            atBody(7, 3, "expected a filter: a mapping with one key, auth, rate_limit or headers; got null"),
        ])
    }

    @Test func unknownKeysInEachSection() {
        #expect(errorLines(filtersConfig("""
            - auth:
                relm: x
                api_key: { header: x, keys: y }
                basic: { file: x }
                jwt: { issuer: x, algorithm: RS256 }
                external: { uri: x }
                allow_anonymous: [{ prefix: / }]
            - rate_limit: { rps: 1 }
            - headers: { req: {}, response: { delete: [] } }
            """)) == [
            atBody(2, 5, "unknown key 'relm' in auth; expected one of: realm, allow_anonymous, api_key, basic, jwt, external, oidc"),
            atBody(3, 5, "api_key is missing required key 'keys_file'"),
            atBody(3, 27, "unknown key 'keys' in api_key; expected one of: header, keys_file"),
            atBody(4, 5, "basic is missing required key 'htpasswd'"),
            atBody(4, 14, "unknown key 'file' in basic; expected one of: htpasswd"),
            atBody(5, 5, "jwt is missing required key 'algorithms' (for example [RS256, ES256])"),
            atBody(5, 5, "jwt needs one of 'jwks_file' or 'jwks_uri'"),
            atBody(5, 23, "unknown key 'algorithm' in jwt; expected one of: issuer, audiences, jwks_file, jwks_uri, jwks_refresh, min_refresh, identity_claim, algorithms, clock_skew, from, claims_to_headers, forward_token"),
            atBody(6, 5, "external is missing required key 'url'"),
            atBody(6, 17, "unknown key 'uri' in external; expected one of: url, timeout, headers_to_upstream, failure_mode, cache_ttl"),
            atBody(7, 23, "allow_anonymous rule is missing required key 'path_prefix'"),
            atBody(7, 25, "unknown key 'prefix' in allow_anonymous; expected one of: path_prefix, methods"),
            atBody(8, 3, "rate_limit is missing required key 'requests_per_second'"),
            atBody(8, 17, "unknown key 'rps' in rate_limit; expected one of: requests_per_second, burst, key"),
            atBody(9, 14, "unknown key 'req' in headers; expected one of: request, response"),
            atBody(9, 35, "unknown key 'delete' in headers response; expected one of: set, add, remove"),
        ])
    }
}

@Suite struct AuthFilterErrorTests {
    @Test func methodsAndOIDC() {
        #expect(errorLines(filtersConfig("""
            - auth: { realm: app }
            - auth:
            - auth: { oidc: { issuer: "https://idp.example" } }
            - auth: { oidc: ~ }
            - auth: []
            """)) == [
            atBody(1, 3, "auth needs at least one method: api_key, basic, jwt, external, oidc"),
            atBody(2, 3, "auth needs at least one method: api_key, basic, jwt, external, oidc"),
            atBody(3, 11, "oidc is missing required key 'client_id'"),
            atBody(3, 11, "oidc is missing required key 'client_secret'"),
            atBody(3, 11, "oidc is missing required key 'redirect_url'"),
            atBody(3, 11, "oidc is missing required key 'cookie_secret'"),
            atBody(4, 3, "auth needs at least one method: api_key, basic, jwt, external, oidc"),
            atBody(5, 9, "expected a mapping for auth, got a list"),
        ])
    }

    @Test func realmAndAllowAnonymous() {
        let files = CredentialsFixture()
        #expect(files.errors("""
            - auth:
                realm: 'say "hi"'
                allow_anonymous:
                  - { path_prefix: healthz }
                  - { path_prefix: /x, methods: [get, GET, GET] }
                  - /public
                api_key: { keys_file: keys }
            - auth: { realm: "", allow_anonymous: {}, api_key: { keys_file: keys } }
            """) == [
            files.at(2, 12, "invalid realm 'say \"hi\"': no quotes, backslashes or control characters"),
            files.at(4, 24, "path_prefix 'healthz' must start with '/'"),
            files.at(5, 38, "invalid method 'get': methods are upper-case tokens like GET or POST"),
            files.at(5, 48, "duplicate method 'GET' in 'methods'"),
            files.at(6, 9, "expected a mapping for allow_anonymous, got a scalar"),
            files.at(8, 18, "'realm' must not be empty"),
            files.at(8, 39, "expected a list for 'allow_anonymous', got a mapping"),
        ])
    }

    @Test func apiKeyHeaderAndFile() {
        let files = CredentialsFixture()
        #expect(files.errors("""
            - auth: { api_key: { header: "x key", keys_file: missing } }
            - auth: { api_key: { keys_file: "" } }
            - auth: { api_key: { keys_file: . } }
            """) == [
            files.at(1, 30, "invalid header name 'x key' in 'header': expected a token like x-request-id"),
            files.at(1, 50, "cannot read keys_file '\(files.directory)/missing': No such file or directory"),
            files.at(2, 33, "'keys_file' must not be empty"),
            files.at(3, 33, "cannot read keys_file '\(files.directory)': is a directory"),
        ])
    }

    @Test func keysFileProblemsNameTheLine() {
        let files = CredentialsFixture()
        let path = files.write("bad-keys", """
            # comment
            ok:key-1
            nocolon
            :anonymous
            bad name:key
            empty:
            ok:key-2
            short:sha256:abcd
            nothex:sha256:\(String(repeating: "g", count: 64))
            same:key-1

            digest:sha256:\(reportingDigest.uppercased())
            digest2:sha256:\(reportingDigest)
            """)
        let errors = files.errors("- auth: { api_key: { keys_file: bad-keys } }")
        let prefix = "keys_file \(path) line"
        #expect(errors == [
            files.at(1, 33, "\(prefix) 3: expected NAME:KEY or NAME:sha256:HEX"),
            files.at(1, 33, "\(prefix) 4: empty name; expected NAME:KEY or NAME:sha256:HEX"),
            files.at(1, 33, "\(prefix) 5: invalid name: use letters, digits, '.', '_', '@' and '-' (the line is not shown: it may hold a key)"),
            files.at(1, 33, "\(prefix) 6: empty key for 'empty'"),
            files.at(1, 33, "\(prefix) 7: duplicate name 'ok' (first on line 2)"),
            files.at(1, 33, "\(prefix) 8: invalid sha256 digest for 'short': expected 64 hex digits (printf %s KEY | sha256sum)"),
            files.at(1, 33, "\(prefix) 9: invalid sha256 digest for 'nothex': expected 64 hex digits (printf %s KEY | sha256sum)"),
            files.at(1, 33, "\(prefix) 10: the key for 'same' is the same as the key for 'ok' (line 2)"),
            files.at(1, 33, "\(prefix) 13: the key for 'digest2' is the same as the key for 'digest' (line 12)"),
        ])
        _ = files.write("empty-keys", "# nothing yet\n\n")
        #expect(files.errors("- auth: { api_key: { keys_file: empty-keys } }") == [
            files.at(1, 33, "keys_file \(files.directory)/empty-keys has no keys"),
        ])
    }

    @Test func keysFileParser() throws {
        let parsed = APIKeysFile.parse("a.b_c@d-e:k:with:colons\r\n  x : y z \r\n# c\n\t\ns:sha256:\(reportingDigest)")
        #expect(parsed.problems == [])
        #expect(parsed.keys == [
            APIKeyEntry(name: "a.b_c@d-e", secret: .plain(Array("k:with:colons".utf8))),
            APIKeyEntry(name: "x", secret: .plain(Array("y z".utf8))),
            APIKeyEntry(name: "s", secret: .sha256(try #require(Hex.decode(reportingDigest)))),
        ])
        #expect(APIKeysFile.parse("a:b\u{7}c").problems == [LineProblem(line: 1, message: "the key for 'a' contains control characters")])
        #expect(APIKeysFile.parse("").keys.isEmpty)
    }

    @Test func htpasswdProblemsNameTheLine() {
        let files = CredentialsFixture()
        let path = files.write("bad-htpasswd", """
            alice:\(aliceBcrypt)
            md5:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/
            crypt:rqXexS6ZhobKA
            plain:secret
            sha512:$6$salt$hash
            nocolon
            :$2y$10$L06iol7gCse1F/yRiod68u4hDgizttpcNRrYsspxmWnSDpXGNAPV.
            short:$2y$10$abc
            cost:$2y$99$L06iol7gCse1F/yRiod68u4hDgizttpcNRrYsspxmWnSDpXGNAPV.
            sha:{SHA}notbase64!
            sha20:{SHA}AAAA
            alice:\(bobSHA)
            b:$2b$10$L06iol7gCse1F/yRiod68u4hDgizttpcNRrYsspxmWnSDpXGNAPV.
            a:$2a$10$L06iol7gCse1F/yRiod68u4hDgizttpcNRrYsspxmWnSDpXGNAPV.
            """)
        let prefix = "htpasswd \(path) line"
        #expect(files.errors("- auth: { basic: { htpasswd: bad-htpasswd } }") == [
            files.at(1, 30, "\(prefix) 2: unsupported hash scheme; use bcrypt (htpasswd -B) or {SHA}"),
            files.at(1, 30, "\(prefix) 3: unsupported hash scheme; use bcrypt (htpasswd -B) or {SHA}"),
            files.at(1, 30, "\(prefix) 4: unsupported hash scheme; use bcrypt (htpasswd -B) or {SHA}"),
            files.at(1, 30, "\(prefix) 5: unsupported hash scheme; use bcrypt (htpasswd -B) or {SHA}"),
            files.at(1, 30, "\(prefix) 6: expected user:hash"),
            files.at(1, 30, "\(prefix) 7: empty user name; expected user:hash"),
            files.at(1, 30, "\(prefix) 8: malformed bcrypt hash for 'short': expected 60 characters, $2y$COST$ and 53 of [./A-Za-z0-9]"),
            files.at(1, 30, "\(prefix) 9: malformed bcrypt hash for 'cost': expected 60 characters, $2y$COST$ and 53 of [./A-Za-z0-9]"),
            files.at(1, 30, "\(prefix) 10: malformed {SHA} hash for 'sha': expected the base64 of 20 bytes"),
            files.at(1, 30, "\(prefix) 11: malformed {SHA} hash for 'sha20': expected the base64 of 20 bytes"),
            files.at(1, 30, "\(prefix) 12: duplicate user 'alice' (first on line 1)"),
        ])
        #expect(files.errors("- auth: { basic: { htpasswd: missing } }") == [
            files.at(1, 30, "cannot read htpasswd '\(files.directory)/missing': No such file or directory"),
        ])
        _ = files.write("empty-htpasswd", "")
        #expect(files.errors("- auth: { basic: { htpasswd: empty-htpasswd } }") == [
            files.at(1, 30, "htpasswd \(files.directory)/empty-htpasswd has no users"),
        ])
    }

    @Test func htpasswdParser() {
        let parsed = HtpasswdFile.parse("# users\r\n alice:\(aliceBcrypt) \r\nbob:\(bobSHA)\n\n")
        #expect(parsed.problems == [])
        #expect(parsed.entries == [HtpasswdEntry(user: "alice", hash: aliceBcrypt), HtpasswdEntry(user: "bob", hash: bobSHA)])
        #expect(HtpasswdFile.isWellFormedBcrypt(aliceBcrypt))
        #expect(!HtpasswdFile.isWellFormedBcrypt("$2y$03$L06iol7gCse1F/yRiod68u4hDgizttpcNRrYsspxmWnSDpXGNAPV."))
        #expect(!HtpasswdFile.isWellFormedBcrypt("$2y$10$L06iol7gCse1F/yRiod68u4hDgizttpcNRrYsspxmWnSDpXGNAP!."))
    }

    @Test func jwtFields() {
        let files = CredentialsFixture()
        #expect(files.errors("""
            - auth:
                jwt:
                  issuer: ""
                  audiences: [app, app, ""]
                  jwks_file: jwks.json
                  jwks_uri: "https://idp.example/jwks"
                  jwks_refresh: 0
                  min_refresh: soon
                  identity_claim: ""
                  algorithms: [RS256, none, rs256, RS256, NONE]
                  clock_skew: -1s
                  from: [header:authorization, "bearer:x", "query:a b", header:Authorization]
                  claims_to_headers: { email: "x e", groups: content-length, a: x-a, b: X-A }
                  forward_token: maybe
            """) == [
            files.at(3, 15, "'issuer' must not be empty"),
            files.at(4, 24, "duplicate audience 'app' in 'audiences'"),
            files.at(4, 29, "'audiences' must not be empty"),
            files.at(6, 7, "jwt takes one of 'jwks_file' or 'jwks_uri', not both"),
            files.at(7, 21, "'jwks_refresh' must be greater than zero"),
            files.at(8, 20, "invalid duration 'soon' for 'min_refresh': expected a whole number with a unit ms, s, m or h, like 250ms or 5s"),
            files.at(9, 23, "'identity_claim' must not be empty"),
            files.at(10, 27, "'none' is never accepted"),
            files.at(10, 33, "invalid algorithm 'rs256'; expected one of: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"),
            files.at(10, 40, "duplicate algorithm 'RS256' in 'algorithms'"),
            files.at(10, 47, "'none' is never accepted"),
            files.at(11, 19, "invalid duration '-1s' for 'clock_skew': expected a whole number with a unit ms, s, m or h, like 250ms or 5s"),
            files.at(12, 36, "invalid token source 'bearer:x' for 'from': expected header:NAME, cookie:NAME or query:NAME"),
            files.at(12, 48, "invalid token source 'query:a b' for 'from': expected header:NAME, cookie:NAME or query:NAME"),
            files.at(12, 61, "duplicate token source 'header:Authorization' in 'from'"),
            files.at(13, 35, "invalid header name 'x e' in 'claims_to_headers': expected a token like x-request-id"),
            files.at(13, 50, "header 'content-length' is managed by the proxy"),
            files.at(13, 77, "claims 'a' and 'b' both set header 'x-a'"),
            files.at(14, 22, "invalid value 'maybe' for 'forward_token': expected true or false"),
        ])
    }

    @Test func jwtRequiredShapes() {
        let files = CredentialsFixture()
        #expect(files.errors("""
            - auth: { jwt: { jwks_uri: "ftp://x/keys", algorithms: [] } }
            - auth: { jwt: { jwks_uri: "https://", algorithms: [ES256], from: [] } }
            - auth: { jwt: { jwks_file: nope.json, algorithms: [RS256], claims_to_headers: [a] } }
            """) == [
            files.at(1, 28, "invalid jwks_uri 'ftp://x/keys': expected an http:// or https:// URL"),
            files.at(1, 56, "'algorithms' must name at least one algorithm"),
            files.at(2, 28, "invalid jwks_uri 'https://': no host"),
            files.at(2, 67, "'from' must name at least one place to find the token"),
            files.at(3, 29, "cannot read jwks_file '\(files.directory)/nope.json': No such file or directory"),
            files.at(3, 80, "expected a mapping of claim name to header name for 'claims_to_headers', got a list"),
        ])
    }

    @Test func jwksFileIsCheckedAtLoad() {
        let files = CredentialsFixture()
        let cases: [(String, String)] = [
            ("[1]", "expected a JSON object with a \"keys\" array"),
            (#"{"keys": {}}"#, "expected a JSON object with a \"keys\" array"),
            (#"{"keys": []}"#, "the \"keys\" array is empty"),
            (#"{"keys": [{"kid": "a"}]}"#, "keys[0] is not an object with a string \"kty\""),
            (#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#, "no key fits algorithms RS256 (key types found: oct)"),
            (#"{"keys": [}"#, "not valid JSON: unexpected character at byte 10"),
            ("keys: []", "not valid JSON: unexpected character at byte 0"),
        ]
        for (index, (document, problem)) in cases.enumerated() {
            let path = files.write("jwks\(index).json", document)
            #expect(files.errors("- auth: { jwt: { jwks_file: jwks\(index).json, algorithms: [RS256] } }") == [
                files.at(1, 29, "jwks_file \(path): \(problem)"),
            ], "\(document)")
        }
    }

    @Test func jsonReader() throws {
        let document = #" {"a": [1, -2.5e3, 0, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"], "b": {}} "#
        let value = try JSONValue.parse(document).get()
        #expect(value == .object([
            ("a", .array([.number("1"), .number("-2.5e3"), .number("0"), .bool(true), .bool(false), .null,
                          .string("x\"\\/\u{8}\u{c}\n\r\té😀")])),
            ("b", .object([])),
        ]))
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "01", "1.", "\"\u{1}\"", "\"\\x\"", "[1] 2", "tru", "\"\\ud800\""] {
            #expect((try? JSONValue.parse(bad).get()) == nil, "\(bad)")
        }
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect((try? JSONValue.parse(deep).get()) == nil)
    }

    @Test func externalFields() {
        #expect(errorLines(filtersConfig("""
            - auth:
                external:
                  url: "https://auth.example/check"
                  timeout: 0
                  headers_to_upstream: [x-user, X-User, host, "a b"]
                  failure_mode: open
                  cache_ttl: 1d
            - auth: { external: { url: "http://user@auth/" } }
            - auth: { external: { url: "http://auth:0/" } }
            - auth: { external: { url: "auth:80/check" } }
            - auth: { external: { url: "http://auth/a b" } }
            - auth: { external: { url: "http://auth/#frag" } }
            - auth: { external: { url: "http://bad_host!/" } }
            """)) == [
            atBody(3, 12, "invalid url 'https://auth.example/check' for external auth: https:// is not supported yet (TLS origination); use http://HOST:PORT/PATH"),
            atBody(4, 16, "'timeout' must be greater than zero"),
            atBody(5, 37, "duplicate header 'x-user' in 'headers_to_upstream'"),
            atBody(5, 45, "header 'host' is managed by the proxy"),
            atBody(5, 51, "invalid header name 'a b' in 'headers_to_upstream': expected a token like x-request-id"),
            atBody(6, 21, "invalid value 'open' for 'failure_mode'; expected one of: deny, allow"),
            atBody(7, 18, "invalid duration '1d' for 'cache_ttl': expected a whole number with a unit ms, s, m or h, like 250ms or 5s"),
            atBody(8, 28, "invalid url 'http://user@auth/' for external auth: user information (user@host) is not allowed"),
            atBody(9, 28, "invalid url 'http://auth:0/' for external auth: the port must be between 1 and 65535"),
            atBody(10, 28, "invalid url 'auth:80/check' for external auth: expected http://HOST:PORT/PATH"),
            atBody(11, 28, "invalid url 'http://auth/a b' for external auth: the path must not contain spaces or control characters"),
            atBody(12, 28, "invalid url 'http://auth/#frag' for external auth: a fragment (#…) is not allowed"),
            atBody(13, 28, "invalid url 'http://bad_host!/' for external auth: the host is not a valid IP address or DNS name"),
        ])
    }
}

@Suite struct RateLimitErrorTests {
    @Test func values() {
        #expect(errorLines(filtersConfig("""
            - rate_limit: { requests_per_second: 0 }
            - rate_limit: { requests_per_second: -1 }
            - rate_limit: { requests_per_second: 1e3 }
            - rate_limit: { requests_per_second: .5 }
            - rate_limit: { requests_per_second: 0.0000000001 }
            - rate_limit: { requests_per_second: 2000000000 }
            - rate_limit: { requests_per_second: fast, burst: 0 }
            - rate_limit: { requests_per_second: 1, burst: 1.5 }
            - rate_limit: { requests_per_second: 1, key: "header:" }
            - rate_limit: { requests_per_second: 1, key: user }
            - rate_limit: { requests_per_second: 1, key: identity }
            - rate_limit: []
            - rate_limit: { requests_per_second: [1] }
            """)) == [
            atBody(1, 38, "'requests_per_second' must be greater than 0 and at most 1000000000, got 0"),
            atBody(2, 38, "invalid value '-1' for 'requests_per_second': expected a number like 100 or 0.5"),
            atBody(3, 38, "invalid value '1e3' for 'requests_per_second': expected a number like 100 or 0.5"),
            atBody(4, 38, "invalid value '.5' for 'requests_per_second': expected a number like 100 or 0.5"),
            atBody(5, 38, "invalid value '0.0000000001' for 'requests_per_second': expected a number like 100 or 0.5"),
            atBody(6, 38, "'requests_per_second' must be greater than 0 and at most 1000000000, got 2000000000"),
            atBody(7, 38, "invalid value 'fast' for 'requests_per_second': expected a number like 100 or 0.5"),
            atBody(7, 51, "'burst' must be between 1 and 1000000000, got 0"),
            atBody(8, 48, "invalid value '1.5' for 'burst': expected a whole number"),
            atBody(9, 46, "invalid value 'header:' for 'key'; expected client_ip, header:NAME or identity"),
            atBody(10, 46, "invalid value 'user' for 'key'; expected client_ip, header:NAME or identity"),
            atBody(11, 46, "rate_limit key 'identity' needs an auth filter earlier in this route's filters"),
            atBody(12, 15, "expected a mapping for rate_limit, got a list"),
            atBody(13, 38, "expected a number for 'requests_per_second', got a list"),
        ])
    }

    @Test func identityNeedsAnEarlierAuthFilter() {
        let files = CredentialsFixture()
        #expect(files.errors("""
            - rate_limit: { requests_per_second: 1, key: identity }
            - auth: { api_key: { keys_file: keys } }
            - rate_limit: { requests_per_second: 1, key: identity }
            """) == [
            files.at(1, 46, "rate_limit key 'identity' needs an auth filter earlier in this route's filters"),
        ])
    }
}

@Suite struct HeadersFilterErrorTests {
    @Test func names() {
        #expect(errorLines(filtersConfig("""
            - headers:
                request:
                  set: { "x a": b, Host: x, x-a: "1", X-A: "2" }
                  add: { content-length: "1", ":path": /x }
                  remove: [connection, x-b, X-B, x-a, "", te]
                response:
                  set: { transfer-encoding: chunked, upgrade: h2c, keep-alive: "1", proxy-connection: x }
                  remove: { server: true }
            """)) == [
            atBody(3, 14, "invalid header name 'x a' in 'set': expected a token like x-request-id"),
            atBody(3, 24, "header 'host' is managed by the proxy"),
            atBody(3, 43, "duplicate header 'x-a' in 'set' (names are case-insensitive)"),
            atBody(4, 14, "header 'content-length' is managed by the proxy"),
            atBody(4, 35, "invalid header name ':path' in 'add': expected a token like x-request-id"),
            atBody(5, 16, "header 'connection' is managed by the proxy"),
            atBody(5, 33, "duplicate header 'x-b' in 'remove'"),
            atBody(5, 38, "header 'x-a' is in both 'set' and 'remove' of headers request"),
            atBody(5, 43, "invalid header name '' in 'remove': expected a token like x-request-id"),
            atBody(5, 47, "header 'te' is managed by the proxy"),
            atBody(7, 14, "header 'transfer-encoding' is managed by the proxy"),
            atBody(7, 42, "header 'upgrade' is managed by the proxy"),
            atBody(7, 56, "header 'keep-alive' is managed by the proxy"),
            atBody(7, 73, "header 'proxy-connection' is managed by the proxy"),
            atBody(8, 15, "expected a list for 'remove', got a mapping"),
        ])
    }

    @Test func values() {
        let known = "known: client_ip, client_port, request_id, host, scheme, method, path, identity, jwt.claim.NAME"
        #expect(errorLines(filtersConfig("""
            - headers:
                request:
                  set:
                    x-a: "${client_ip} ${clientip}"
                    x-b: "${host"
                    x-c: "line\\nbreak"
                    x-d: [1]
                    x-e:
                  add: { x-f: "${env:X}" }
                response:
                  set: "x-a: b"
            """), environment: ["X": "${nope}"]) == [
            atBody(4, 14, "unknown variable '${clientip}'; \(known)"),
            atBody(5, 14, "unterminated '${' in header value: write ${variable}, or '$' alone for a literal dollar sign"),
            atBody(6, 14, "invalid value for header 'x-c': control characters (such as a newline) cannot be sent"),
            atBody(7, 14, "expected a string for 'x-d', got a list"),
            atBody(8, 13, "expected a string for 'x-e', got null"),
            atBody(9, 19, "unknown variable '${nope}'; \(known)"),
            atBody(11, 12, "expected a mapping of header name to value for 'set', got a scalar"),
        ])
    }
}

// MARK: - Rendering

@Suite struct FilterRenderTests {
    static let everyFilter = """
        - auth:
            realm: app
            allow_anonymous: [{ path_prefix: /healthz, methods: [GET] }, { path_prefix: "/a-b" }]
            api_key: { header: X-Key, keys_file: keys }
            basic: { htpasswd: htpasswd }
            jwt:
              issuer: https://issuer.example
              audiences: [app, "1"]
              jwks_file: jwks.json
              algorithms: [RS256, ES256]
              from: [header:authorization, cookie:tok, query:t]
              claims_to_headers: { email: x-email, "a b": x-ab }
              forward_token: false
            external: { url: "http://127.0.0.1:9000/check", headers_to_upstream: [x-user], failure_mode: allow }
        - auth: { jwt: { jwks_uri: "https://idp.example/keys", algorithms: [EdDSA] } }
        - rate_limit: { requests_per_second: 0.25, key: "header:x-user" }
        - rate_limit: { requests_per_second: 1000, burst: 10, key: identity }
        - headers:
            request: { set: { x-a: "${client_ip}", x-b: "yes" }, add: { x-c: "$1: #2" }, remove: [x-d] }
            response: { set: { x-e: "true" }, remove: [server] }
        """

    @Test func roundTripsThroughYAMLAndJSON() throws {
        let files = CredentialsFixture()
        let filters = try files.load(Self.everyFilter)
        #expect(filters.count == 5)
        // Loaded from anywhere: every path in the output is absolute.
        let config = try OutriderConfigTests.load(filtersConfig(Self.everyFilter), path: files.configPath)
        let yaml = config.renderYAML()
        #expect(try OutriderConfigTests.load(yaml, path: "/elsewhere/printed.yaml").listeners == config.listeners,
                "rendered YAML:\n\(yaml)")
        let json = config.renderJSON()
        #expect(try OutriderConfigTests.load(json, path: "/elsewhere/printed.json").listeners == config.listeners,
                "rendered JSON:\n\(json)")
        #expect(try OutriderConfigTests.load(yaml, path: files.configPath).renderYAML() == yaml)
        _ = try JSONSerialization.jsonObject(with: Data(json.utf8))
    }

    @Test func credentialsAreNeverPrinted() throws {
        let files = CredentialsFixture()
        _ = files.write("hs.json", #"{"keys": [{"kty": "oct", "kid": "h", "k": "c3VwZXItc2VjcmV0LWhtYWMta2V5"}]}"#)
        let config = try OutriderConfigTests.load(filtersConfig("""
            - auth:
                api_key: { keys_file: keys }
                basic: { htpasswd: htpasswd }
                jwt: { jwks_file: hs.json, algorithms: [HS256] }
            - headers:
                request: { set: { authorization: "Basic dXNlcjpwYXNz", x-token: "${env:TOKEN}", x-seen: plain } }
            """), path: files.configPath, environment: ["TOKEN": "env-token-value"])
        for output in [config.renderYAML(), config.renderJSON()] {
            for secret in ["alice-key-1", reportingDigest, aliceBcrypt, bobSHA, "$2y$", "{SHA}", "c3VwZXItc2VjcmV0LWhtYWMta2V5",
                           "\"kty\"", "dXNlcjpwYXNz", "env-token-value"] {
                #expect(!output.contains(secret), "\(secret) leaked into:\n\(output)")
            }
            #expect(output.contains(files.keys))
            #expect(output.contains(files.htpasswd))
            #expect(output.contains(files.directory + "/hs.json"))
            #expect(output.contains("plain"))
        }
        #expect(config.renderYAML().contains("""
                            set:
                              authorization: "<redacted>"
                              x-token: "<redacted>"
                              x-seen: plain
            """))
    }

    @Test func yamlShape() throws {
        let files = CredentialsFixture()
        let config = try OutriderConfigTests.load(filtersConfig("""
            - auth: { realm: app, api_key: { keys_file: keys }, allow_anonymous: [{ path_prefix: /healthz, methods: [GET] }] }
            - rate_limit: { requests_per_second: 2.5 }
            - headers: { request: { add: { x-client: "${client_ip}" } } }
            """), path: files.configPath)
        let yaml = config.renderYAML()
        #expect(yaml.contains("""
                    filters:
                      - auth:
                          realm: app
                          allow_anonymous:
                            - path_prefix: /healthz
                              methods: [GET]
                          api_key:
                            header: x-api-key
                            keys_file: \(files.keys)
                      - rate_limit:
                          requests_per_second: 2.5
                          burst: 3
                          key: client_ip
                      - headers:
                          request:
                            set: {}
                            add:
                              x-client: "${client_ip}"
                            remove: []
                          response:
                            set: {}
                            add: {}
                            remove: []
                    retry:

            """), "\(yaml)")
    }

    @Test func decimals() {
        for (value, text) in [(100.0, "100"), (0.5, "0.5"), (0.1, "0.1"), (2.25, "2.25"), (0.001, "0.001"),
                              (123456.789, "123456.789"), (0.000000001, "0.000000001"), (1e9, "1000000000")] {
            #expect(DecimalNotation.format(value) == text)
        }
    }
}

// MARK: - Encodings

@Suite struct EncodingTests {
    @Test func hex() {
        #expect(Hex.decode("00ff7Fa0") == [0x00, 0xFF, 0x7F, 0xA0])
        #expect(Hex.decode("") == nil)
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("zz") == nil)
    }

    @Test func base64() {
        #expect(Base64.decode("aGVsbG8=") == Array("hello".utf8))
        #expect(Base64.decode("aGk=") == Array("hi".utf8))
        #expect(Base64.decode("aGV5") == Array("hey".utf8))
        #expect(Base64.decode("aLmobGfnijWjyalEyVzvEvsuWnE=")?.count == 20)
        for bad in ["", "aGk", "a===", "aG=k", "aGk=aGk=", "aG-_"] {
            #expect(Base64.decode(bad) == nil, "\(bad)")
        }
    }
}

// MARK: - OIDC

/// A 32-byte secret, base64 (openssl rand -base64 32).
let cookieSecret32 = "q2Jj3Hh9yqAa0m6a2ybqY0s1Qb3Vb2Hf3Z1v9Jm4uXU="

@Suite struct OIDCConfigTests {
    @Test func minimalAndDefaults() throws {
        let files = CredentialsFixture()
        let filters = try files.load("""
            - auth:
                oidc:
                  issuer: https://idp.example/realms/app/
                  client_id: app
                  client_secret: s3cret
                  redirect_url: https://app.example/oauth2/callback
                  cookie_secret: \(cookieSecret32)
            """)
        guard case .auth(let auth) = filters.first, let oidc = auth.oidc else {
            Issue.record("no oidc config")
            return
        }
        #expect(oidc.issuer == "https://idp.example/realms/app")
        #expect(oidc.clientID == "app" && oidc.clientSecret == "s3cret")
        #expect(oidc.redirectURL == "https://app.example/oauth2/callback" && oidc.callbackPath == "/oauth2/callback")
        #expect(oidc.cookieSecret.count == 32)
        #expect(oidc.scopes == ["openid", "email", "profile"])
        #expect(oidc.cookieName == "_oauth2_proxy")
        #expect(oidc.cookieExpire == .seconds(168 * 3600) && oidc.cookieRefresh == .zero)
        #expect(!oidc.passAccessToken && !oidc.setAuthorizationHeader && !oidc.endSession)
        #expect(oidc.emailClaim == "email" && oidc.groupsClaim == "groups")
        #expect(oidc.tokenEndpointAuth == .basic)
        #expect(oidc.timeout == .seconds(5) && oidc.discoveryRefresh == .seconds(300))
        #expect(oidc.caFile == nil && oidc.extraAudiences.isEmpty && oidc.postLogoutRedirectURL == nil)
    }

    @Test func everyKey() throws {
        let files = CredentialsFixture()
        let ca = files.write("ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        let filters = try files.load("""
            - auth:
                oidc:
                  issuer: https://idp.example
                  client_id: app
                  client_secret: ${env:SECRET}
                  redirect_url: https://app.example/auth/cb?x=1
                  cookie_secret: q2Jj3Hh9yqAa0m6a2ybqY0s1Qb3Vb2Hf3Z1v9Jm4uXU
                  scopes: [openid, email, groups, offline_access]
                  cookie_name: _app_session
                  cookie_expire: 12h
                  cookie_refresh: 1h
                  pass_access_token: true
                  set_authorization_header: true
                  email_claim: mail
                  groups_claim: roles
                  token_endpoint_auth: post
                  end_session: true
                  post_logout_redirect_url: https://app.example/bye
                  ca_file: ca.pem
                  extra_audiences: [api]
                  timeout: 2s
                  discovery_refresh: 1m
            """.replacingOccurrences(of: "${env:SECRET}", with: "plain-secret"))
        guard case .auth(let auth) = filters.first, let oidc = auth.oidc else {
            Issue.record("no oidc config")
            return
        }
        #expect(oidc.callbackPath == "/auth/cb")
        #expect(oidc.cookieSecret.count == 32)
        #expect(oidc.scopes == ["openid", "email", "groups", "offline_access"])
        #expect(oidc.cookieName == "_app_session")
        #expect(oidc.cookieExpire == .seconds(12 * 3600) && oidc.cookieRefresh == .seconds(3600))
        #expect(oidc.passAccessToken && oidc.setAuthorizationHeader && oidc.endSession)
        #expect(oidc.emailClaim == "mail" && oidc.groupsClaim == "roles")
        #expect(oidc.tokenEndpointAuth == .post)
        #expect(oidc.postLogoutRedirectURL == "https://app.example/bye")
        #expect(oidc.caFile == ca)
        #expect(oidc.extraAudiences == ["api"])
        #expect(oidc.timeout == .seconds(2) && oidc.discoveryRefresh == .seconds(60))
    }

    @Test func loopbackHTTPIssuerOnly() throws {
        let files = CredentialsFixture()
        func body(_ issuer: String) -> String {
            """
            - auth:
                oidc:
                  issuer: \(issuer)
                  client_id: app
                  client_secret: s
                  redirect_url: http://127.0.0.1:4180/oauth2/callback
                  cookie_secret: \(cookieSecret32)
            """
        }
        #expect(files.errors(body("http://127.0.0.1:9000")).isEmpty)
        #expect(files.errors(body("http://[::1]:9000/idp")).isEmpty)
        #expect(files.errors(body("http://idp.example")) == [
            files.at(3, 15, "invalid issuer 'http://idp.example': the issuer must be https:// (http:// only on a loopback address such as http://127.0.0.1:PORT)"),
        ])
        #expect(files.errors(body("http://10.0.0.1:9000")).count == 1)
        #expect(files.errors(body("http://127.0.0.1.evil.example:9000")).count == 1)
        #expect(files.errors(body("idp.example")) == [files.at(3, 15, "invalid issuer 'idp.example': expected an https:// URL")])
        #expect(files.errors(body("https://idp.example/?x=1")) == [
            files.at(3, 15, "invalid issuer 'https://idp.example/?x=1': no query or fragment"),
        ])
    }

    @Test func cookieSecretMustBe32Bytes() {
        let files = CredentialsFixture()
        func body(_ secret: String) -> String {
            """
            - auth:
                oidc:
                  issuer: https://idp.example
                  client_id: app
                  client_secret: s
                  redirect_url: https://app.example/oauth2/callback
                  cookie_secret: "\(secret)"
            """
        }
        #expect(files.errors(body("c2hvcnQ=")) == [
            files.at(7, 22, "cookie_secret must be 32 random bytes, base64-encoded (openssl rand -base64 32); got 5 bytes"),
        ])
        #expect(files.errors(body("not base64!")) == [
            files.at(7, 22, "cookie_secret must be 32 random bytes, base64-encoded (openssl rand -base64 32); got not base64"),
        ])
        #expect(files.errors(body("0123456789abcdef0123456789abcdef")) == [
            files.at(7, 22, "cookie_secret must be 32 random bytes, base64-encoded (openssl rand -base64 32); got 24 bytes"),
        ])
    }

    @Test func otherMistakes() {
        let files = CredentialsFixture()
        #expect(files.errors("""
            - auth:
                oidc:
                  issuer: https://idp.example
                  client_id: app
                  client_secret: s
                  redirect_url: /oauth2/callback
                  cookie_secret: \(cookieSecret32)
                  scopes: [email, "a b"]
                  cookie_name: "bad name"
                  cookie_expire: 1h
                  cookie_refresh: 2h
                  token_endpoint_auth: jwt
                  post_logout_redirect_url: https://app.example/bye
                  ca_file: missing.pem
                  cookie_domain: example.com
            """) == [
                        files.at(6, 21, "invalid redirect_url '/oauth2/callback': expected an http:// or https:// URL"),
            files.at(8, 15, "'scopes' must include openid"),
            files.at(8, 23, "invalid scope 'a b': printable ASCII without spaces, quotes or backslashes"),
            files.at(9, 20, "invalid cookie_name 'bad name': a token (letters, digits, !#$%&'*+-.^_`|~), at most 64 characters"),
            files.at(11, 23, "cookie_refresh must be shorter than cookie_expire (1h)"),
            files.at(12, 28, "invalid value 'jwt' for 'token_endpoint_auth'; expected one of: basic, post"),
            files.at(13, 33, "post_logout_redirect_url needs end_session: true"),
            files.at(14, 16, "cannot read ca_file '\(files.directory)/missing.pem': No such file or directory"),
            files.at(15, 7, "unknown key 'cookie_domain' in oidc; expected one of: issuer, client_id, client_secret, redirect_url, cookie_secret, scopes, cookie_name, cookie_expire, cookie_refresh, pass_access_token, set_authorization_header, email_claim, groups_claim, token_endpoint_auth, end_session, post_logout_redirect_url, ca_file, extra_audiences, timeout, discovery_refresh"),
        ])
    }

    @Test func secretsAreRedacted() throws {
        let files = CredentialsFixture()
        let config = try OutriderConfigTests.load(filtersConfig("""
            - auth:
                oidc:
                  issuer: https://idp.example
                  client_id: app
                  client_secret: very-secret-value
                  redirect_url: https://app.example/oauth2/callback
                  cookie_secret: \(cookieSecret32)
            """), path: files.configPath)
        let yaml = config.renderYAML()
        #expect(!yaml.contains("very-secret-value"))
        #expect(!yaml.contains(cookieSecret32))
        #expect(yaml.contains("client_secret: \"<redacted>\""))
        #expect(yaml.contains("cookie_secret: \"<redacted>\""))
        #expect(yaml.contains("cookie_name: _oauth2_proxy"))

        // Secrets read from files are shown by their reference, with the absolute path.
        _ = files.write("client-secret", "from-a-file")
        _ = files.write("cookie-secret", cookieSecret32 + "\n")
        let fromFiles = try OutriderConfigTests.load(filtersConfig("""
            - auth:
                oidc:
                  issuer: https://idp.example
                  client_id: app
                  client_secret: ${file:client-secret}
                  redirect_url: https://app.example/oauth2/callback
                  cookie_secret: ${file:cookie-secret}
            """), path: files.configPath)
        guard case .auth(let auth) = fromFiles.listeners[0].routes[0].filters.first, let oidc = auth.oidc else {
            Issue.record("no oidc config")
            return
        }
        #expect(oidc.clientSecret == "from-a-file" && oidc.cookieSecret.count == 32)
        let rendered = fromFiles.renderYAML()
        #expect(rendered.contains("client_secret: \"${file:\(files.directory)/client-secret}\""))
        #expect(rendered.contains("cookie_secret: \"${file:\(files.directory)/cookie-secret}\""))
        #expect(!rendered.contains("from-a-file"))
        #expect(try OutriderConfigTests.load(rendered, path: files.configPath) == fromFiles)
    }
}
