import OutriderCore
// The effective configuration written back out, in the file's own key names and shape:
// YAML for `outrider print-config`, JSON for the admin `/config` endpoint. Both outputs load
// back to an equal configuration (JSON is YAML), which the tests check.

/// The configuration as a tree, so YAML and JSON share one description of the shape.
indirect enum RenderedValue {
    case mapping([(key: String, value: RenderedValue)])
    case list([RenderedValue])
    /// A user string: quoted in YAML when plain style would change its meaning.
    case text(String)
    /// A duration, size or keyword: plain in YAML, a string in JSON.
    case notation(String)
    case number(Int)
    /// A number with a fraction, already formatted (`0.5`): plain in YAML and JSON.
    case decimal(String)
    case bool(Bool)
    /// A secret (client secret, a credential header value…): always shown as `<redacted>`.
    /// Credentials read from files (API keys, htpasswd hashes, JWKS, TLS private keys) are not
    /// rendered at all: only the file's path is.
    case secret
}

extension OutriderConfiguration {
    /// The effective config as YAML, every default filled in, secrets as `<redacted>`.
    public func renderYAML() -> String {
        var output = "# Effective Outrider configuration: every default filled in.\n"
        YAMLWriter.writeMapping(ConfigTree.render(self), indent: 0, into: &output)
        return output
    }

    /// The same content as JSON, pretty-printed.
    public func renderJSON() -> String {
        var output = ""
        JSONWriter.write(.mapping(ConfigTree.render(self)), indent: 0, into: &output)
        return output + "\n"
    }
}

enum ConfigTree {
    static func render(_ config: OutriderConfiguration) -> [(key: String, value: RenderedValue)] {
        let workers: RenderedValue
        switch config.workers {
        case .auto: workers = .notation("auto")
        case .fixed(let count): workers = .number(count)
        }
        return [
            ("workers", workers),
            ("log_level", .notation(config.logLevel.rawValue)),
            ("admin", .mapping([("address", .text(config.admin.address.description))])),
            ("access_log", .mapping([
                ("format", .notation(config.accessLog.format.rawValue)),
                ("path", destination(config.accessLog.path)),
            ])),
            ("drain", .mapping([
                ("delay", duration(config.drain.delay)),
                ("timeout", duration(config.drain.timeout)),
            ])),
            ("listeners", .list(config.listeners.map(listener))),
            ("clusters", .list(config.clusters.map(cluster))),
        ]
    }

    private static func destination(_ destination: LogDestination) -> RenderedValue {
        switch destination {
        case .stdout: return .notation("stdout")
        case .stderr: return .notation("stderr")
        case .file(let path): return .text(path)
        }
    }

    private static func duration(_ value: Duration) -> RenderedValue { .notation(DurationNotation.format(value)) }
    private static func size(_ value: Int64) -> RenderedValue { .notation(SizeNotation.format(value)) }

    private static func listener(_ listener: ListenerConfig) -> RenderedValue {
        var fields: [(key: String, value: RenderedValue)] = [
            ("name", .text(listener.name)),
            ("address", .text(listener.address.description)),
            ("direction", .notation(listener.direction.rawValue)),
            ("protocols", .list(listener.protocols.map { .notation($0.rawValue) })),
        ]
        // Absent means cleartext.
        if let tls = listener.tls { fields.append(("tls", listenerTLS(tls))) }
        fields += [
            ("original_destination", .bool(listener.originalDestination)),
            ("limits", .mapping([
                ("max_connections", .number(listener.limits.maxConnections)),
                ("max_header_bytes", size(Int64(listener.limits.maxHeaderBytes))),
                ("max_headers", .number(listener.limits.maxHeaders)),
                ("max_request_body", size(listener.limits.maxRequestBody)),
                ("h2_max_concurrent_streams", .number(listener.limits.h2MaxConcurrentStreams)),
            ])),
            ("timeouts", .mapping([
                ("header_read", duration(listener.timeouts.headerRead)),
                ("idle", duration(listener.timeouts.idle)),
            ])),
            ("forwarded_headers", .bool(listener.forwardedHeaders)),
            ("routes", .list(listener.routes.map(route))),
        ]
        return .mapping(fields)
    }

    /// File paths are shown as they are (a key's path is no secret; its contents are never read
    /// into the configuration). `min_version` is quoted text: "1.2", as SPEC writes it.
    private static func listenerTLS(_ tls: ListenerTLSConfig) -> RenderedValue {
        var fields = certificatePair(tls.certificate)
        if let clientCA = tls.clientCA { fields.append(("client_ca", .text(clientCA))) }
        fields += [
            ("min_version", .text(tls.minVersion.rawValue)),
            ("sni_certificates", .list(tls.sniCertificates.map { .mapping(certificatePair($0)) })),
        ]
        return .mapping(fields)
    }

    private static func clusterTLS(_ tls: ClusterTLSConfig) -> RenderedValue {
        var fields: [(key: String, value: RenderedValue)] = []
        if let sni = tls.sni { fields.append(("sni", .text(sni))) }
        if let ca = tls.ca { fields.append(("ca", .text(ca))) }
        fields.append(("verify", .bool(tls.verify)))
        if let pair = tls.clientCertificate { fields += certificatePair(pair) }
        return .mapping(fields)
    }

    private static func certificatePair(_ pair: CertificatePair) -> [(key: String, value: RenderedValue)] {
        [("certificate", .text(pair.certificate)), ("private_key", .text(pair.privateKey))]
    }

    private static func route(_ route: RouteConfig) -> RenderedValue {
        var fields: [(key: String, value: RenderedValue)] = [
            ("name", .text(route.name)),
            ("match", .mapping([
                ("path_prefix", .text(route.match.pathPrefix)),
                ("host", .text(route.match.host)),
                ("methods", .list(route.match.methods.map { .text($0) })),
                ("headers", .mapping(route.match.headers.map { ($0.name, .text($0.value)) })),
            ])),
            ("timeout", duration(route.timeout)),
            ("filters", .list(route.filters.map(filter))),
            ("retry", retry(route.retry)),
        ]
        if let rewrite = route.rewrite {
            var rewriteFields: [(key: String, value: RenderedValue)] = []
            if let pathPrefix = rewrite.pathPrefix { rewriteFields.append(("path_prefix", .text(pathPrefix))) }
            if let host = rewrite.host { rewriteFields.append(("host", .text(host))) }
            fields.append(("rewrite", .mapping(rewriteFields)))
        }
        fields.append(("cluster", .text(route.cluster)))
        return .mapping(fields)
    }

    private static func retry(_ retry: RetryPolicy) -> RenderedValue {
        .mapping([
            ("attempts", .number(retry.attempts)),
            // A set: printed in declaration order so the output is stable.
            ("on", .list(RetryCondition.allCases.filter(retry.on.contains).map { .notation($0.rawValue) })),
            ("retriable_status_codes", .list(retry.retriableStatusCodes.map { .number($0) })),
            ("per_try_timeout", duration(retry.perTryTimeout)),
            ("backoff", .mapping([("base", duration(retry.backoff.base)), ("max", duration(retry.backoff.max))])),
            ("budget", .mapping([
                ("ratio", .decimal(DecimalNotation.format(retry.budget.ratio))),
                ("min_per_second", .decimal(DecimalNotation.format(retry.budget.minPerSecond))),
            ])),
            ("max_replay_body", size(retry.maxReplayBody)),
        ])
    }

    // MARK: Filters

    private static func filter(_ filter: FilterConfig) -> RenderedValue {
        switch filter {
        case .auth(let auth): return .mapping([("auth", self.auth(auth))])
        case .rateLimit(let rateLimit): return .mapping([("rate_limit", self.rateLimit(rateLimit))])
        case .headers(let headers): return .mapping([("headers", self.headers(headers))])
        }
    }

    /// Credentials never appear: keys, htpasswd hashes and the JWKS document are shown by the
    /// path of the file they are read from (re-read when the output is loaded).
    private static func auth(_ auth: AuthFilterConfig) -> RenderedValue {
        var fields: [(key: String, value: RenderedValue)] = [
            ("realm", .text(auth.realm)),
            ("allow_anonymous", .list(auth.allowAnonymous.map { rule in
                .mapping([("path_prefix", .text(rule.pathPrefix)), ("methods", .list(rule.methods.map { .text($0) }))])
            })),
        ]
        if let apiKey = auth.apiKey {
            fields.append(("api_key", .mapping([("header", .text(apiKey.header)), ("keys_file", .text(apiKey.keysFile))])))
        }
        if let basic = auth.basic {
            fields.append(("basic", .mapping([("htpasswd", .text(basic.htpasswd))])))
        }
        if let jwt = auth.jwt { fields.append(("jwt", self.jwt(jwt))) }
        if let external = auth.external {
            fields.append(("external", .mapping([
                ("url", .text(external.url)),
                ("timeout", duration(external.timeout)),
                ("headers_to_upstream", .list(external.headersToUpstream.map { .text($0) })),
                ("failure_mode", .notation(external.failureMode.rawValue)),
                ("cache_ttl", duration(external.cacheTTL)),
            ])))
        }
        if let oidc = auth.oidc { fields.append(("oidc", self.oidc(oidc))) }
        return .mapping(fields)
    }

    private static func oidc(_ oidc: OIDCConfig) -> RenderedValue {
        var fields: [(key: String, value: RenderedValue)] = [
            ("issuer", .text(oidc.issuer)),
            ("client_id", .text(oidc.clientID)),
            ("client_secret", oidc.clientSecretReference.map { .text($0) } ?? .secret),
            ("redirect_url", .text(oidc.redirectURL)),
            ("cookie_secret", oidc.cookieSecretReference.map { .text($0) } ?? .secret),
            ("scopes", .list(oidc.scopes.map { .text($0) })),
            ("cookie_name", .text(oidc.cookieName)),
            ("cookie_expire", duration(oidc.cookieExpire)),
            ("cookie_refresh", duration(oidc.cookieRefresh)),
            ("pass_access_token", .bool(oidc.passAccessToken)),
            ("set_authorization_header", .bool(oidc.setAuthorizationHeader)),
            ("email_claim", .text(oidc.emailClaim)),
            ("groups_claim", .text(oidc.groupsClaim)),
            ("token_endpoint_auth", .notation(oidc.tokenEndpointAuth.rawValue)),
            ("end_session", .bool(oidc.endSession)),
        ]
        if let url = oidc.postLogoutRedirectURL { fields.append(("post_logout_redirect_url", .text(url))) }
        if let file = oidc.caFile { fields.append(("ca_file", .text(file))) }
        fields += [
            ("extra_audiences", .list(oidc.extraAudiences.map { .text($0) })),
            ("timeout", duration(oidc.timeout)),
            ("discovery_refresh", duration(oidc.discoveryRefresh)),
        ]
        return .mapping(fields)
    }

    private static func jwt(_ jwt: JWTConfig) -> RenderedValue {
        var fields: [(key: String, value: RenderedValue)] = []
        if let issuer = jwt.issuer { fields.append(("issuer", .text(issuer))) }
        fields.append(("audiences", .list(jwt.audiences.map { .text($0) })))
        if let file = jwt.jwksFile { fields.append(("jwks_file", .text(file))) }
        if let uri = jwt.jwksURI { fields.append(("jwks_uri", .text(uri))) }
        fields += [
            ("jwks_refresh", duration(jwt.jwksRefresh)),
            ("min_refresh", duration(jwt.minRefresh)),
            ("identity_claim", .text(jwt.identityClaim)),
            ("algorithms", .list(jwt.algorithms.map { .text($0) })),
            ("clock_skew", duration(jwt.clockSkew)),
            ("from", .list(jwt.from.map { source in
                switch source {
                case .header(let name): return .text("header:" + name)
                case .cookie(let name): return .text("cookie:" + name)
                case .query(let name): return .text("query:" + name)
                }
            })),
            ("claims_to_headers", .mapping(jwt.claimsToHeaders.map { ($0.claim, .text($0.header)) })),
            ("forward_token", .bool(jwt.forwardToken)),
        ]
        return .mapping(fields)
    }

    private static func rateLimit(_ rateLimit: RateLimitConfig) -> RenderedValue {
        let key: String
        switch rateLimit.key {
        case .clientIP: key = "client_ip"
        case .identity: key = "identity"
        case .header(let name): key = "header:" + name
        }
        return .mapping([
            ("requests_per_second", .decimal(DecimalNotation.format(rateLimit.requestsPerSecond))),
            ("burst", .number(rateLimit.burst)),
            ("key", .text(key)),
        ])
    }

    private static func headers(_ headers: HeadersFilterConfig) -> RenderedValue {
        func operations(_ operations: HeaderOperations) -> RenderedValue {
            func values(_ list: [HeaderOperation]) -> RenderedValue {
                .mapping(list.map { ($0.name, $0.isSecret ? .secret : .text($0.value)) })
            }
            return .mapping([
                ("set", values(operations.set)),
                ("add", values(operations.add)),
                ("remove", .list(operations.remove.map { .text($0) })),
            ])
        }
        return .mapping([("request", operations(headers.request)), ("response", operations(headers.response))])
    }

    private static func cluster(_ cluster: ClusterConfig) -> RenderedValue {
        var fields: [(key: String, value: RenderedValue)] = [
            ("name", .text(cluster.name)),
            ("endpoints", .list(cluster.endpoints.map { .text($0.description) })),
            ("dns_refresh", duration(cluster.dnsRefresh)),
            ("protocol", .notation(cluster.protocol.rawValue)),
        ]
        // Absent means cleartext; `tls: {}` would turn it on when loaded back.
        if let tls = cluster.tls { fields.append(("tls", clusterTLS(tls))) }
        fields += [
            ("lb", loadBalancing(cluster.lb)),
            ("connect_timeout", duration(cluster.connectTimeout)),
            ("pool", .mapping([
                ("max_idle_per_endpoint", .number(cluster.pool.maxIdlePerEndpoint)),
                ("idle_timeout", duration(cluster.pool.idleTimeout)),
            ])),
        ]
        // Absent means off: a rendered default block would turn them on when loaded back.
        if let check = cluster.healthCheck {
            fields.append(("health_check", .mapping([
                ("path", .text(check.path)),
                ("interval", duration(check.interval)),
                ("timeout", duration(check.timeout)),
                ("healthy_threshold", .number(check.healthyThreshold)),
                ("unhealthy_threshold", .number(check.unhealthyThreshold)),
            ])))
        }
        if let detection = cluster.outlierDetection {
            fields.append(("outlier_detection", .mapping([
                ("consecutive_failures", .number(detection.consecutiveFailures)),
                ("base_ejection", duration(detection.baseEjection)),
                ("max_ejected_percent", .number(detection.maxEjectedPercent)),
            ])))
        }
        fields.append(("circuit_breaker", .mapping([
            ("max_connections", .number(cluster.circuitBreaker.maxConnections)),
            ("max_pending", .number(cluster.circuitBreaker.maxPending)),
            ("max_requests", .number(cluster.circuitBreaker.maxRequests)),
        ])))
        return .mapping(fields)
    }

    private static func loadBalancing(_ lb: LoadBalancingConfig) -> RenderedValue {
        var fields: [(key: String, value: RenderedValue)] = [("policy", .notation(lb.policy.rawValue))]
        switch lb.key {
        case .header(let name): fields.append(("key", .text("header:" + name)))
        case .cookie(let name): fields.append(("key", .text("cookie:" + name)))
        case .clientIP: fields.append(("key", .notation("client_ip")))
        case nil: break
        }
        return .mapping(fields)
    }
}

enum YAMLWriter {
    static func writeMapping(_ fields: [(key: String, value: RenderedValue)], indent: Int, into output: inout String) {
        let padding = String(repeating: " ", count: indent)
        for (key, value) in fields {
            output += padding + scalar(.text(key)) + ":"
            switch value {
            case .mapping(let nested) where nested.isEmpty:
                output += " {}\n"
            case .mapping(let nested):
                output += "\n"
                writeMapping(nested, indent: indent + 2, into: &output)
            case .list(let items) where items.isEmpty:
                output += " []\n"
            case .list(let items) where items.allSatisfy(fitsFlowList):
                output += " [" + items.map(scalar).joined(separator: ", ") + "]\n"
            case .list(let items):
                output += "\n"
                writeList(items, indent: indent + 2, into: &output)
            default:
                output += " " + scalar(value) + "\n"
            }
        }
    }

    private static func writeList(_ items: [RenderedValue], indent: Int, into output: inout String) {
        let padding = String(repeating: " ", count: indent)
        for item in items {
            switch item {
            case .mapping(let fields) where !fields.isEmpty:
                // The first key shares the dash's line: `- name: x`, the rest align under it.
                var nested = ""
                writeMapping(fields, indent: indent + 2, into: &nested)
                output += padding + "- " + nested.dropFirst(indent + 2)
            case .mapping:
                output += padding + "- {}\n"
            case .list:
                // The config has no lists of lists.
                output += padding + "- []\n"
            default:
                output += padding + "- " + scalar(item) + "\n"
            }
        }
    }

    /// Flow style (`[http1, h2c]`) for short keyword lists; anything with a colon goes in
    /// block style, where plain `127.0.0.1:8080` is unambiguous for every YAML parser.
    private static func fitsFlowList(_ item: RenderedValue) -> Bool {
        switch item {
        case .notation(let text): return !text.contains(":")
        case .text(let text): return isPlainSafe(text) && !text.contains(":")
        case .number, .decimal, .bool: return true
        case .mapping, .list, .secret: return false
        }
    }

    static func scalar(_ value: RenderedValue) -> String {
        switch value {
        case .text(let text): return isPlainSafe(text) ? text : doubleQuoted(text)
        case .notation(let text): return text
        case .number(let number): return String(number)
        case .decimal(let text): return text
        case .bool(let flag): return flag ? "true" : "false"
        case .secret: return doubleQuoted("<redacted>")
        case .mapping, .list: return "{}"
        }
    }

    /// Plain style only when a YAML parser reads the text back as this same string: no
    /// indicator characters, and nothing that YAML 1.1 or 1.2 would type as null, bool or number.
    static func isPlainSafe(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, !text.hasSuffix(":") else { return false }
        func isAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
            ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
        }
        guard isAlphanumeric(first) || first == "/" || first == "_" else { return false }
        guard text.unicodeScalars.allSatisfy({ isAlphanumeric($0) || "_./:@+=-".unicodeScalars.contains($0) }) else {
            return false
        }
        let typedWords: Set<String> = ["y", "n", "yes", "no", "true", "false", "on", "off", "null"]
        if typedWords.contains(text.lowercased()) { return false }
        if Int(text) != nil || Double(text) != nil { return false }
        // Digits with `_`, `:` or a radix prefix: YAML 1.1 integers (`1_000`, `1:30`, `0x1F`).
        let lowered = text.lowercased()
        if lowered.hasPrefix("0x") || lowered.hasPrefix("0o") || lowered.hasPrefix("0b") { return false }
        if text.allSatisfy({ $0.isNumber || $0 == "_" || $0 == ":" }) { return false }
        return true
    }

    static func doubleQuoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    result += "\\x" + hex(scalar.value, digits: 2)
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }
}

enum JSONWriter {
    static func write(_ value: RenderedValue, indent: Int, into output: inout String) {
        let padding = String(repeating: " ", count: indent + 2)
        switch value {
        case .mapping(let fields) where fields.isEmpty:
            output += "{}"
        case .mapping(let fields):
            output += "{\n"
            for (index, field) in fields.enumerated() {
                output += padding + quoted(field.key) + ": "
                write(field.value, indent: indent + 2, into: &output)
                output += index == fields.count - 1 ? "\n" : ",\n"
            }
            output += String(repeating: " ", count: indent) + "}"
        case .list(let items) where items.isEmpty:
            output += "[]"
        case .list(let items):
            output += "[\n"
            for (index, item) in items.enumerated() {
                output += padding
                write(item, indent: indent + 2, into: &output)
                output += index == items.count - 1 ? "\n" : ",\n"
            }
            output += String(repeating: " ", count: indent) + "]"
        case .text(let text), .notation(let text):
            output += quoted(text)
        case .number(let number):
            output += String(number)
        case .decimal(let text):
            output += text
        case .bool(let flag):
            output += flag ? "true" : "false"
        case .secret:
            output += quoted("<redacted>")
        }
    }

    static func quoted(_ text: String) -> String { jsonQuoted(text) }
}

private func hex(_ value: UInt32, digits: Int) -> String {
    let text = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
}
