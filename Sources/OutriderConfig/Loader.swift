import Yams

public enum ConfigLoader {
    /// Set once at start-up by the executable (before any load): loads a certificate chain and
    /// its key the way the proxy will, and says why they cannot be used together (nil: fine).
    /// Injected because this module sits below the TLS one; `validate` then refuses what
    /// start-up would refuse, at the certificate's position.
    nonisolated(unsafe) public static var certificatePairCheck: ((String, String) -> String?)?

    /// Config files past this are refused: a config is hand-written text, not a data set.
    static let configFileLimit = 16 << 20

    /// Reads and validates the config file at `path`. Relative paths inside it resolve against
    /// its directory.
    public static func load(path: String, environment: [String: String]) throws(ConfigErrors) -> OutriderConfiguration {
        switch FileReader.readText(path, limit: configFileLimit) {
        case .success(let yaml):
            return try load(yaml: yaml, path: path, environment: environment)
        case .failure(let failure):
            throw ConfigErrors([ConfigError(file: path, line: 1, column: 1,
                                            message: "cannot read config file: \(failure.reason)")])
        }
    }

    /// Validates `yaml` as if read from `path`, which names the file in messages and anchors
    /// relative paths. Every problem is reported, in file order.
    public static func load(yaml: String, path: String, environment: [String: String]) throws(ConfigErrors) -> OutriderConfiguration {
        let session = LoadSession(file: path, baseDirectory: FilePaths.directory(ofConfigFile: path),
                                  environment: environment)
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml, .default, .default, .utf8)
        } catch {
            throw ConfigErrors([syntaxError(error, file: path, yaml: yaml)])
        }
        let configuration = ConfigurationBuilder(session: session).build(root: root, sourcePath: path)
        guard session.errors.isEmpty else { throw ConfigErrors(session.sortedErrors()) }
        return configuration
    }

    /// libyaml's message at libyaml's (1-based) mark.
    static func syntaxError(_ error: any Error, file: String, yaml: String) -> ConfigError {
        func at(_ mark: Mark, _ message: String) -> ConfigError {
            ConfigError(file: file, line: mark.line, column: mark.column, message: message)
        }
        func withContext(_ context: YamlError.Context?, _ problem: String) -> String {
            guard let context else { return "invalid YAML: \(problem)" }
            return "invalid YAML: \(problem) (\(context.text) at \(context.mark.line):\(context.mark.column))"
        }
        guard let yamlError = error as? YamlError else {
            return ConfigError(file: file, line: 1, column: 1, message: "invalid YAML: \(error)")
        }
        switch yamlError {
        case let .scanner(context, problem, mark, _),
             let .parser(context, problem, mark, _),
             let .composer(context, problem, mark, _):
            return at(mark, withContext(context, problem))
        case let .reader(problem, offset, _, _):
            let position = offset.map { Self.position(ofCharacterOffset: $0, in: yaml) } ?? Position(line: 1, column: 1)
            return ConfigError(file: file, line: position.line, column: position.column,
                               message: "invalid YAML: \(problem)")
        case let .duplicatedKeysInMapping(duplicates, context):
            let keys = duplicates.map { "'\($0)'" }.joined(separator: ", ")
            // libyaml's composer only knows the first occurrence; point there and say so.
            return at(context.mark, "key \(keys) appears more than once in this mapping")
        default:
            return ConfigError(file: file, line: 1, column: 1, message: "invalid YAML: \(yamlError)")
        }
    }

    static func position(ofCharacterOffset offset: Int, in text: String) -> Position {
        var position = Position(line: 1, column: 1)
        for character in text.prefix(offset) {
            if character == "\n" || character == "\r\n" {
                position.line += 1
                position.column = 1
            } else {
                position.column += 1
            }
        }
        return position
    }
}

/// Turns the composed tree into an `OutriderConfiguration`, reporting problems into the
/// session. Cross-references (names, addresses, clusters) are checked after every section
/// has been read, so their errors come with the rest.
struct ConfigurationBuilder {
    let session: LoadSession

    private struct RouteSite {
        var config: RouteConfig
        var node: Node
        var nameNode: Node?
        /// False when the written name was invalid: already reported, so not compared again.
        var nameIsValid: Bool
        var clusterNode: Node?
        var clusterIsValid: Bool
    }

    private struct ListenerSite {
        var config: ListenerConfig
        var node: Node
        var nameNode: Node?
        var nameIsValid: Bool
        var addressNode: Node?
        /// False when the written address was invalid: overlap checks would only echo that.
        var addressIsValid: Bool
        var routes: [RouteSite]
        /// No `routes` key: the default route was filled in and errors about it point here.
        var routesDefaulted: Bool
    }

    private struct ClusterSite {
        var config: ClusterConfig
        var nameNode: Node
    }

    static let topLevelKeys = ["workers", "log_level", "admin", "access_log", "drain", "listeners", "clusters"]
    static let listenerKeys = ["name", "address", "direction", "protocols", "tls", "original_destination", "limits",
                               "timeouts", "forwarded_headers", "routes"]
    static let routeKeys = ["name", "match", "timeout", "filters", "retry", "rewrite", "cluster"]
    static let clusterKeys = ["name", "endpoints", "dns_refresh", "protocol", "tls", "lb", "connect_timeout", "pool",
                              "health_check", "outlier_detection", "circuit_breaker"]
    /// Keys SPEC defines that this build refuses with "not supported yet" instead of "unknown".
    static let unsupportedListenerKeys: [String] = []
    static let unsupportedClusterKeys: [String] = []

    func build(root: Node?, sourcePath: String) -> OutriderConfiguration {
        var configuration = Defaults.configuration
        configuration.sourcePath = sourcePath
        guard let root else { return configuration }   // an empty file: the zero config
        guard let top = session.fields(of: root, section: "the top level", supported: Self.topLevelKeys) else {
            return configuration
        }

        if let node = top.value("workers") { configuration.workers = workers(node) ?? configuration.workers }
        if let node = top.value("log_level"),
           let level = session.choice(node, key: "log_level", among: LogLevel.allCases) {
            configuration.logLevel = level
        }
        var adminNode: Node?
        if let node = top.value("admin"), let fields = session.fields(of: node, section: "admin", supported: ["address"]) {
            adminNode = fields.value("address")
            if let addressNode = adminNode,
               let address = session.address(addressNode, key: "address", requireIPLiteral: true) {
                configuration.admin.address = address
            }
        }
        if let node = top.value("access_log") { configuration.accessLog = accessLog(node) }
        if let node = top.value("drain") { configuration.drain = drain(node) }

        var listenerSites: [ListenerSite] = []
        if let node = top.value("listeners"), let items = session.list(node, key: "listeners") {
            if items.isEmpty { session.report("'listeners' must name at least one listener", at: node) }
            for (index, item) in items.enumerated() {
                if let site = listener(item, index: index) { listenerSites.append(site) }
            }
            configuration.listeners = listenerSites.map(\.config)
        }

        var clusterSites: [ClusterSite] = []
        if let node = top.value("clusters"), let items = session.list(node, key: "clusters") {
            for (index, item) in items.enumerated() {
                if let site = cluster(item, index: index) { clusterSites.append(site) }
            }
            configuration.clusters = clusterSites.map(\.config)
        }

        checkListeners(listenerSites, admin: configuration.admin.address, adminNode: adminNode)
        checkClusters(clusterSites)
        checkRouteTargets(listenerSites, clusters: configuration.clusters)
        if top.value("listeners") == nil, let clustersKey = top.keyNode("clusters"),
           configuration.cluster(named: Defaults.clusterName) == nil {
            session.report("no 'listeners' given, and the default listener routes to cluster '\(Defaults.clusterName)', which is not defined in 'clusters'",
                           at: clustersKey)
        }
        return configuration
    }

    // MARK: Top-level sections

    private func workers(_ node: Node) -> WorkerCount? {
        guard let value = session.text(node, key: "workers", expected: "auto or a number") else { return nil }
        if value == "auto" { return .auto }
        guard let count = Int(value), (1...1_024).contains(count) else {
            session.report("invalid value '\(value)' for 'workers': expected auto or a number from 1 to 1024", at: node)
            return nil
        }
        return .fixed(count)
    }

    private func accessLog(_ node: Node) -> AccessLogConfig {
        var config = Defaults.accessLog
        guard let fields = session.fields(of: node, section: "access_log", supported: ["format", "path"]) else {
            return config
        }
        if let node = fields.value("format"),
           let format = session.choice(node, key: "format", among: [AccessLogFormat.json, .combined, .off]) {
            config.format = format
        }
        if let node = fields.value("path"), let path = session.nonEmptyString(node, key: "path") {
            switch path {
            case "stdout": config.path = .stdout
            case "stderr": config.path = .stderr
            default: config.path = .file(FilePaths.resolve(path, against: session.baseDirectory))
            }
        }
        return config
    }

    private func drain(_ node: Node) -> DrainConfig {
        var config = Defaults.drain
        guard let fields = session.fields(of: node, section: "drain", supported: ["delay", "timeout"]) else {
            return config
        }
        if let node = fields.value("delay"), let value = session.duration(node, key: "delay") { config.delay = value }
        if let node = fields.value("timeout"), let value = session.duration(node, key: "timeout") { config.timeout = value }
        return config
    }

    // MARK: Listeners

    private func listener(_ node: Node, index: Int) -> ListenerSite? {
        guard let fields = session.fields(of: node, section: "listener", supported: Self.listenerKeys,
                                          recognized: Self.unsupportedListenerKeys) else { return nil }
        var config = Defaults.listener
        config.name = Defaults.listenerName(index: index)
        rejectUnsupported(Self.unsupportedListenerKeys, in: fields)

        let nameNode = fields.value("name")
        var nameIsValid = true
        if let nameNode {
            if let name = self.name(nameNode) { config.name = name } else { nameIsValid = false }
        }
        let addressNode = fields.value("address")
        var addressIsValid = true
        if let addressNode {
            if let address = session.address(addressNode, key: "address", requireIPLiteral: true) {
                config.address = address
            } else {
                addressIsValid = false
            }
        }
        if let node = fields.value("direction"),
           let direction = session.choice(node, key: "direction", among: [ListenerDirection.inbound, .outbound]) {
            config.direction = direction
        }
        // Judged on what was written: with a broken `tls` block, protocols are still checked
        // against the listener the user meant.
        let tlsNode = fields.value("tls")
        if let tlsNode {
            config.tls = listenerTLS(tlsNode, keyNode: fields.keyNode("tls") ?? tlsNode)
            config.protocols = Defaults.tlsListenerProtocols
        }
        if let node = fields.value("protocols"), let protocols = listenerProtocols(node, tls: tlsNode != nil) {
            config.protocols = protocols
        }
        if let node = fields.value("original_destination"), let value = session.bool(node, key: "original_destination") {
            config.originalDestination = value
        }
        if let node = fields.value("limits") { config.limits = limits(node) }
        if let node = fields.value("timeouts") { config.timeouts = timeouts(node) }
        if let node = fields.value("forwarded_headers"), let value = session.bool(node, key: "forwarded_headers") {
            config.forwardedHeaders = value
        }

        var routeSites: [RouteSite] = []
        var routesDefaulted = true
        if let node = fields.value("routes"), let items = session.list(node, key: "routes") {
            routesDefaulted = false
            if items.isEmpty { session.report("'routes' must name at least one route", at: node) }
            for (routeIndex, item) in items.enumerated() {
                if let site = route(item, index: routeIndex) { routeSites.append(site) }
            }
            config.routes = routeSites.map(\.config)
        }
        return ListenerSite(config: config, node: node, nameNode: nameNode, nameIsValid: nameIsValid,
                            addressNode: addressNode, addressIsValid: addressIsValid,
                            routes: routeSites, routesDefaulted: routesDefaulted)
    }

    /// Cleartext listeners offer http1 and h2c (prior knowledge); TLS ones http1 and h2 (ALPN).
    private func listenerProtocols(_ node: Node, tls: Bool) -> [ListenerProtocol]? {
        guard let items = session.list(node, key: "protocols") else { return nil }
        if items.isEmpty {
            session.report("'protocols' must name at least one protocol", at: node)
            return nil
        }
        var protocols: [ListenerProtocol] = []
        for item in items {
            guard let value = session.choice(item, key: "protocols", among: [ListenerProtocol.http1, .h2c, .h2]) else {
                continue
            }
            if value == .h2 && !tls {
                session.report("protocol 'h2' needs tls; use h2c for cleartext HTTP/2", at: item)
            } else if value == .h2c && tls {
                session.report("protocol 'h2c' is cleartext HTTP/2 and cannot be used with tls; with tls, use h2 (ALPN)", at: item)
            } else if protocols.contains(value) {
                session.report("duplicate protocol '\(value.rawValue)' in 'protocols'", at: item)
            } else {
                protocols.append(value)
            }
        }
        return protocols.isEmpty ? nil : protocols
    }

    private func limits(_ node: Node) -> ListenerLimits {
        var config = Defaults.limits
        guard let fields = session.fields(of: node, section: "limits", supported: [
            "max_connections", "max_header_bytes", "max_headers", "max_request_body", "h2_max_concurrent_streams",
        ]) else { return config }
        if let node = fields.value("max_connections"),
           let value = session.integer(node, key: "max_connections", range: 0...10_000_000) {
            config.maxConnections = value
        }
        if let node = fields.value("max_header_bytes"),
           let value = session.size(node, key: "max_header_bytes", range: 1...(16 * SizeNotation.mebibyte)) {
            config.maxHeaderBytes = Int(value)
        }
        if let node = fields.value("max_headers"), let value = session.integer(node, key: "max_headers", range: 1...10_000) {
            config.maxHeaders = value
        }
        if let node = fields.value("max_request_body"),
           let value = session.size(node, key: "max_request_body", range: 0...Int64.max) {
            config.maxRequestBody = value
        }
        if let node = fields.value("h2_max_concurrent_streams"),
           let value = session.integer(node, key: "h2_max_concurrent_streams", range: 1...Int(Int32.max)) {
            config.h2MaxConcurrentStreams = value
        }
        return config
    }

    private func timeouts(_ node: Node) -> ListenerTimeouts {
        var config = Defaults.timeouts
        guard let fields = session.fields(of: node, section: "timeouts", supported: ["header_read", "idle"]) else {
            return config
        }
        // Zero is refused: an unbounded header read is a slowloris invitation, and an idle
        // keep-alive connection must end some time.
        if let node = fields.value("header_read"), let value = session.duration(node, key: "header_read", allowZero: false) {
            config.headerRead = value
        }
        if let node = fields.value("idle"), let value = session.duration(node, key: "idle", allowZero: false) {
            config.idle = value
        }
        return config
    }

    // MARK: Routes

    private func route(_ node: Node, index: Int) -> RouteSite? {
        guard let fields = session.fields(of: node, section: "route", supported: Self.routeKeys) else { return nil }
        var config = Defaults.route
        config.name = Defaults.routeName(index: index)
        let nameNode = fields.value("name")
        var nameIsValid = true
        if let nameNode {
            if let name = self.name(nameNode) { config.name = name } else { nameIsValid = false }
        }
        if let node = fields.value("match") { config.match = match(node) }
        var timeoutIsValid = true
        if let node = fields.value("timeout") {
            if let value = session.duration(node, key: "timeout") { config.timeout = value } else { timeoutIsValid = false }
        }
        if let node = fields.value("filters") { config.filters = filters(node) }
        if let node = fields.value("retry") {
            config.retry = retryPolicy(node, routeTimeout: timeoutIsValid ? config.timeout : nil)
        }
        if let node = fields.value("rewrite") { config.rewrite = rewrite(node) }
        let clusterNode = fields.value("cluster")
        var clusterIsValid = true
        if let clusterNode {
            if let cluster = session.nonEmptyString(clusterNode, key: "cluster") {
                config.cluster = cluster
            } else {
                clusterIsValid = false
            }
        }
        return RouteSite(config: config, node: node, nameNode: nameNode, nameIsValid: nameIsValid,
                         clusterNode: clusterNode, clusterIsValid: clusterIsValid)
    }

    private func match(_ node: Node) -> RouteMatch {
        var config = Defaults.match
        guard let fields = session.fields(of: node, section: "match",
                                          supported: ["path_prefix", "host", "methods", "headers"]) else { return config }
        if let node = fields.value("path_prefix"), let value = pathPrefix(node) { config.pathPrefix = value }
        if let node = fields.value("host"), let value = hostPattern(node) { config.host = value }
        if let node = fields.value("methods"), let methods = methods(node) { config.methods = methods }
        if let node = fields.value("headers") { config.headers = headerMatches(node) }
        return config
    }

    /// Upper-case method tokens, without duplicates (route matches and allow_anonymous rules).
    func methods(_ node: Node) -> [String]? {
        guard let items = session.list(node, key: "methods") else { return nil }
        var methods: [String] = []
        for item in items {
            guard let method = session.string(item, key: "methods") else { continue }
            let isUpperCaseToken = HTTPToken.isValid(method) && !method.contains(where: \.isLowercase)
            if !isUpperCaseToken {
                session.report("invalid method '\(method)': methods are upper-case tokens like GET or POST", at: item)
            } else if methods.contains(method) {
                session.report("duplicate method '\(method)' in 'methods'", at: item)
            } else {
                methods.append(method)
            }
        }
        return methods
    }

    private func headerMatches(_ node: Node) -> [HeaderMatch] {
        guard case .mapping(let mapping) = node else {
            session.report("expected a mapping of header name to value for 'headers', got \(node.kindDescription)", at: node)
            return []
        }
        var matches: [HeaderMatch] = []
        for (keyNode, valueNode) in mapping {
            guard case .scalar(let keyScalar) = keyNode, HTTPToken.isValid(keyScalar.string) else {
                session.report("invalid header name in 'headers': expected a token like x-tenant", at: keyNode)
                continue
            }
            let name = keyScalar.string.lowercased()
            if matches.contains(where: { $0.name == name }) {
                session.report("duplicate header '\(name)' in 'headers' (names are case-insensitive)", at: keyNode)
                continue
            }
            guard let value = session.string(valueNode, key: name) else { continue }
            // A field value never holds CR, LF, NUL or other controls (RFC 9110 §5.5): such a
            // match could never succeed, so it is a mistake (often a `${file:}` with extra lines).
            if value.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F }) {
                session.report("invalid value for header '\(name)': control characters (such as a newline) never match",
                               at: valueNode)
                continue
            }
            matches.append(HeaderMatch(name: name, value: value))
        }
        return matches
    }

    private func rewrite(_ node: Node) -> RouteRewrite? {
        guard let fields = session.fields(of: node, section: "rewrite", supported: ["path_prefix", "host"]) else {
            return nil
        }
        var config = RouteRewrite(pathPrefix: nil, host: nil)
        if let node = fields.value("path_prefix") { config.pathPrefix = pathPrefix(node) }
        if let node = fields.value("host"), let host = session.nonEmptyString(node, key: "host") {
            if host.contains(where: { $0 == " " || $0 == "/" || $0.isNewline || ($0.asciiValue ?? 0x20) < 0x20 }) {
                session.report("invalid host '\(host)' for 'rewrite': expected a host name, optionally with :PORT", at: node)
            } else {
                config.host = host
            }
        }
        // An empty `rewrite: {}` rewrites nothing: the same as none.
        return config.pathPrefix == nil && config.host == nil ? nil : config
    }

    func pathPrefix(_ node: Node) -> String? {
        guard let value = session.string(node, key: "path_prefix") else { return nil }
        guard value.hasPrefix("/") else {
            session.report("path_prefix '\(value)' must start with '/'", at: node)
            return nil
        }
        if value.contains(where: { $0 == "?" || $0 == "#" || $0.isWhitespace || ($0.asciiValue ?? 0x20) < 0x20 }) {
            session.report("path_prefix '\(value)' must be a path: no spaces, control characters, '?' or '#'", at: node)
            return nil
        }
        return value
    }

    /// `*`, `*.example.com`, or a host name / IP literal, kept lower-case (Host matching is
    /// case-insensitive).
    private func hostPattern(_ node: Node) -> String? {
        guard let value = session.nonEmptyString(node, key: "host") else { return nil }
        if value == "*" { return value }
        let exact = value.hasPrefix("*.") ? value.dropFirst(2) : value[...]
        let bracketed = exact.hasPrefix("[") && exact.hasSuffix("]")
            && IPLiteral.bytes(of: String(exact.dropFirst().dropLast()))?.count == 16
        guard bracketed || HostName.isValid(exact) else {
            session.report("invalid host '\(value)' for 'match': expected *, *.example.com or a host name without port",
                           at: node)
            return nil
        }
        return value.lowercased()
    }

    // MARK: Clusters

    private func cluster(_ node: Node, index: Int) -> ClusterSite? {
        guard let fields = session.fields(of: node, section: "cluster", supported: Self.clusterKeys,
                                          recognized: Self.unsupportedClusterKeys) else { return nil }
        rejectUnsupported(Self.unsupportedClusterKeys, in: fields)
        var config = Defaults.cluster
        // Without a valid name the cluster is still read, so all its errors are reported at once.
        let nameNode = fields.value("name")
        let name = nameNode.flatMap(self.name)
        if nameNode == nil { session.report("cluster is missing required key 'name'", at: node) }
        config.name = name ?? "cluster-\(index)"

        if let node = fields.value("endpoints") {
            config.endpoints = endpoints(node, cluster: config.name)
        } else {
            session.report("cluster '\(config.name)' is missing required key 'endpoints'", at: fields.node)
        }
        if let node = fields.value("dns_refresh"), let value = session.duration(node, key: "dns_refresh", allowZero: false) {
            config.dnsRefresh = value
        }
        if let node = fields.value("protocol"),
           let value = session.choice(node, key: "protocol", among: [ClusterProtocol.http1, .h2c, .h2]) {
            config.protocol = value
            if value != .http1, let check = fields.value("health_check") {
                // The probe speaks HTTP/1.1; an HTTP/2-only app (gRPC) would always fail it.
                session.report("health_check is not supported yet on '\(value.rawValue)' clusters (the probe speaks HTTP/1.1)",
                               at: check)
            }
        }
        if let node = fields.value("tls") { config.tls = clusterTLS(node) }
        if config.protocol == .h2c, fields.value("tls") != nil, let node = fields.value("protocol") {
            session.report("cluster protocol 'h2c' is cleartext HTTP/2 and cannot be used with tls; with tls, use h2", at: node)
        }
        if let node = fields.value("lb") { config.lb = loadBalancing(node) }
        if let node = fields.value("connect_timeout"),
           let value = session.duration(node, key: "connect_timeout", allowZero: false) {
            config.connectTimeout = value
        }
        if let node = fields.value("pool") { config.pool = pool(node) }
        if let node = fields.value("health_check") { config.healthCheck = healthCheck(node) }
        if let node = fields.value("outlier_detection") { config.outlierDetection = outlierDetection(node) }
        if let node = fields.value("circuit_breaker") { config.circuitBreaker = circuitBreaker(node) }
        guard name != nil, let nameNode else { return nil }
        return ClusterSite(config: config, nameNode: nameNode)
    }

    private func endpoints(_ node: Node, cluster: String) -> [ConfigAddress] {
        guard let items = session.list(node, key: "endpoints") else { return [] }
        if items.isEmpty { session.report("cluster '\(cluster)' has no endpoints", at: node) }
        var endpoints: [ConfigAddress] = []
        for item in items {
            guard let address = session.address(item, key: "endpoints", requireIPLiteral: false) else { continue }
            if endpoints.contains(where: { $0.host.lowercased() == address.host.lowercased() && $0.port == address.port }) {
                session.report("duplicate endpoint \(address) in cluster '\(cluster)'", at: item)
            } else {
                endpoints.append(address)
            }
        }
        return endpoints
    }

    private func pool(_ node: Node) -> PoolConfig {
        var config = Defaults.pool
        guard let fields = session.fields(of: node, section: "pool", supported: ["max_idle_per_endpoint", "idle_timeout"]) else {
            return config
        }
        if let node = fields.value("max_idle_per_endpoint"),
           let value = session.integer(node, key: "max_idle_per_endpoint", range: 0...100_000) {
            config.maxIdlePerEndpoint = value
        }
        if let node = fields.value("idle_timeout"), let value = session.duration(node, key: "idle_timeout", allowZero: false) {
            config.idleTimeout = value
        }
        return config
    }

    // MARK: Shared pieces

    /// Names label metrics, log lines and admin JSON: keep them to a safe alphabet.
    private func name(_ node: Node) -> String? {
        guard let value = session.nonEmptyString(node, key: "name") else { return nil }
        let allowed = value.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
        }
        guard allowed, value.utf8.count <= 128 else {
            session.report("invalid name '\(value)': use letters, digits, '-', '_' and '.' (at most 128)", at: node)
            return nil
        }
        return value
    }

    /// SPEC sections this build does not implement: refused at their key, never ignored.
    func rejectUnsupported(_ keys: [String], in fields: Fields) {
        for key in keys {
            if let keyNode = fields.keyNode(key), fields.value(key) != nil {
                session.report("'\(key)' is not supported yet", at: keyNode)
            }
        }
    }

    // MARK: Cross-checks

    private func checkListeners(_ listeners: [ListenerSite], admin: ConfigAddress, adminNode: Node?) {
        for (index, listener) in listeners.enumerated() {
            let earlier = listeners[..<index]
            if listener.nameIsValid,
               let first = earlier.first(where: { $0.nameIsValid && $0.config.name == listener.config.name }) {
                session.report("duplicate listener name '\(listener.config.name)' (first at \((first.nameNode ?? first.node).position.description))",
                               at: listener.nameNode ?? listener.node)
            }
            if listener.addressIsValid,
               let first = earlier.first(where: {
                   $0.addressIsValid && AddressNotation.bindingsOverlap($0.config.address, listener.config.address)
               }) {
                session.report("listener '\(listener.config.name)' address \(listener.config.address) overlaps listener '\(first.config.name)' at \(first.config.address)",
                               at: listener.addressNode ?? listener.node)
            }
            for (routeIndex, route) in listener.routes.enumerated() {
                if route.nameIsValid,
                   let first = listener.routes[..<routeIndex].first(where: { $0.nameIsValid && $0.config.name == route.config.name }) {
                    session.report("duplicate route name '\(route.config.name)' in listener '\(listener.config.name)' (first at \((first.nameNode ?? first.node).position.description))",
                                   at: route.nameNode ?? route.node)
                }
            }
        }
        // The admin port is bound too: it must not collide with a listener.
        for listener in listeners
        where listener.addressIsValid && AddressNotation.bindingsOverlap(listener.config.address, admin) {
            if let adminNode {
                session.report("admin address \(admin) overlaps listener '\(listener.config.name)' at \(listener.config.address)",
                               at: adminNode)
            } else {
                session.report("listener '\(listener.config.name)' address \(listener.config.address) overlaps the admin address \(admin)",
                               at: listener.addressNode ?? listener.node)
            }
        }
    }

    private func checkClusters(_ clusters: [ClusterSite]) {
        for (index, cluster) in clusters.enumerated() {
            if let first = clusters[..<index].first(where: { $0.config.name == cluster.config.name }) {
                session.report("duplicate cluster name '\(cluster.config.name)' (first at \(first.nameNode.position.description))",
                               at: cluster.nameNode)
            }
        }
    }

    private func checkRouteTargets(_ listeners: [ListenerSite], clusters: [ClusterConfig]) {
        var defined: [String] = []
        for name in clusters.map(\.name) where !defined.contains(name) { defined.append(name) }
        let definedText = defined.isEmpty ? "none" : defined.joined(separator: ", ")
        for listener in listeners {
            if listener.routesDefaulted, !defined.contains(Defaults.clusterName) {
                session.report("listener '\(listener.config.name)' has no 'routes', and the default route needs cluster '\(Defaults.clusterName)', which is not defined; defined clusters: \(definedText)",
                               at: listener.node)
            }
            for route in listener.routes where route.clusterIsValid && !defined.contains(route.config.cluster) {
                if let clusterNode = route.clusterNode {
                    session.report("route '\(route.config.name)' names cluster '\(route.config.cluster)', which is not defined; defined clusters: \(definedText)",
                                   at: clusterNode)
                } else {
                    session.report("route '\(route.config.name)' has no 'cluster', and the default cluster '\(Defaults.clusterName)' is not defined; defined clusters: \(definedText)",
                                   at: route.node)
                }
            }
        }
    }
}
