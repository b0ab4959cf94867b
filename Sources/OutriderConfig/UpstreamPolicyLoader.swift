import Yams

// How requests reach a cluster's endpoints (SPEC §7): a route's `retry`, and a cluster's
// `lb`, `health_check`, `outlier_detection` and `circuit_breaker`. Cross-checks between keys
// run only on values that were read cleanly: a typo already reported would otherwise come
// back as a second, misleading error.

extension ConfigurationBuilder {
    static let retryKeys = ["attempts", "on", "retriable_status_codes", "per_try_timeout", "backoff", "budget",
                            "max_replay_body"]
    static let healthCheckKeys = ["path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold"]
    static let outlierDetectionKeys = ["consecutive_failures", "base_ejection", "max_ejected_percent"]
    static let circuitBreakerKeys = ["max_connections", "max_pending", "max_requests"]
    static let hashingPolicies: [LoadBalancingPolicy] = [.ringHash, .maglev]

    // MARK: retry

    /// `routeTimeout` is the route's `timeout` when it was read without error: a try may not
    /// outlast all tries together.
    func retryPolicy(_ node: Node, routeTimeout: Duration?) -> RetryPolicy {
        var config = Defaults.writtenRetry
        guard let fields = session.fields(of: node, section: "retry", supported: Self.retryKeys) else { return config }
        if let node = fields.value("attempts"), let value = session.integer(node, key: "attempts", range: 1...10) {
            config.attempts = value
        }

        var conditionsAreValid = true
        var statusCodesCondition: Node?
        if let node = fields.value("on") {
            if let conditions = retryConditions(node) {
                config.on = Set(conditions.map(\.condition))
                statusCodesCondition = conditions.first { $0.condition == .retriableStatusCodes }?.node
            } else {
                conditionsAreValid = false
            }
        }
        var codesAreValid = true
        if let node = fields.value("retriable_status_codes") {
            if let codes = statusCodes(node) { config.retriableStatusCodes = codes } else { codesAreValid = false }
        }
        if conditionsAreValid && codesAreValid {
            if let statusCodesCondition, config.retriableStatusCodes.isEmpty {
                session.report("'on' includes retriable_status_codes, but 'retriable_status_codes' lists no codes",
                               at: statusCodesCondition)
            } else if !config.on.contains(.retriableStatusCodes), !config.retriableStatusCodes.isEmpty,
                      let keyNode = fields.keyNode("retriable_status_codes") {
                session.report("'retriable_status_codes' has no effect unless 'on' includes retriable_status_codes",
                               at: keyNode)
            }
        }

        if let node = fields.value("per_try_timeout"), let value = session.duration(node, key: "per_try_timeout") {
            config.perTryTimeout = value
            if let routeTimeout, routeTimeout != .zero, value != .zero, value > routeTimeout {
                session.report("'per_try_timeout' \(DurationNotation.format(value)) exceeds the route's 'timeout' \(DurationNotation.format(routeTimeout)), which bounds all tries together",
                               at: node)
            }
        }
        if let node = fields.value("backoff") { config.backoff = retryBackoff(node) }
        if let node = fields.value("budget") { config.budget = retryBudget(node) }
        if let node = fields.value("max_replay_body"),
           let value = session.size(node, key: "max_replay_body", range: 0...(64 * SizeNotation.mebibyte)) {
            config.maxReplayBody = value
        }
        return config
    }

    /// The conditions in `on` with where each was written, or nil when an entry was refused.
    private func retryConditions(_ node: Node) -> [(condition: RetryCondition, node: Node)]? {
        guard let items = session.list(node, key: "on") else { return nil }
        if items.isEmpty {
            session.report("'on' must name at least one condition; to turn retries off, write attempts: 1", at: node)
            return nil
        }
        var conditions: [(condition: RetryCondition, node: Node)] = []
        var valid = true
        for item in items {
            guard let condition = session.choice(item, key: "on", among: RetryCondition.allCases) else {
                valid = false
                continue
            }
            if conditions.contains(where: { $0.condition == condition }) {
                session.report("duplicate condition '\(condition.rawValue)' in 'on'", at: item)
            } else {
                conditions.append((condition, item))
            }
        }
        return valid ? conditions : nil
    }

    private func statusCodes(_ node: Node) -> [Int]? {
        guard let items = session.list(node, key: "retriable_status_codes") else { return nil }
        var codes: [Int] = []
        var valid = true
        for item in items {
            guard let code = session.integer(item, key: "retriable_status_codes", range: 100...599) else {
                valid = false
                continue
            }
            if codes.contains(code) {
                session.report("duplicate status code \(code) in 'retriable_status_codes'", at: item)
            } else {
                codes.append(code)
            }
        }
        return valid ? codes : nil
    }

    private func retryBackoff(_ node: Node) -> RetryBackoff {
        var config = Defaults.writtenRetry.backoff
        guard let fields = session.fields(of: node, section: "backoff", supported: ["base", "max"]) else { return config }
        var valid = true
        let baseNode = fields.value("base")
        if let baseNode {
            if let value = session.duration(baseNode, key: "base", allowZero: false) { config.base = value } else { valid = false }
        }
        let maxNode = fields.value("max")
        if let maxNode {
            if let value = session.duration(maxNode, key: "max", allowZero: false) { config.max = value } else { valid = false }
        }
        if valid {
            requireOrder(WrittenDuration(key: "base", value: config.base, node: baseNode),
                         atMost: WrittenDuration(key: "max", value: config.max, node: maxNode),
                         section: "backoff", reportAtLonger: true)
        }
        return config
    }

    private func retryBudget(_ node: Node) -> RetryBudget {
        var config = Defaults.writtenRetry.budget
        guard let fields = session.fields(of: node, section: "budget", supported: ["ratio", "min_per_second"]) else {
            return config
        }
        if let node = fields.value("ratio"), let value = session.decimal(node, key: "ratio", range: 0...1) {
            config.ratio = value
        }
        if let node = fields.value("min_per_second"),
           let value = session.decimal(node, key: "min_per_second", range: 0...1_000_000_000) {
            config.minPerSecond = value
        }
        return config
    }

    // MARK: lb

    func loadBalancing(_ node: Node) -> LoadBalancingConfig {
        var config = Defaults.lb
        guard let fields = session.fields(of: node, section: "lb", supported: ["policy", "key"]) else { return config }
        var valid = true
        if let node = fields.value("policy") {
            if let policy = session.choice(node, key: "policy", among: LoadBalancingPolicy.allCases) {
                config.policy = policy
            } else {
                valid = false
            }
        }
        if let node = fields.value("key") {
            if let key = hashKey(node) { config.key = key } else { valid = false }
        }
        guard valid else { return config }
        let hashes = Self.hashingPolicies.contains(config.policy)
        if hashes, config.key == nil {
            session.report("lb policy '\(config.policy.rawValue)' needs a 'key': header:NAME, cookie:NAME or client_ip",
                           at: fields.value("policy") ?? fields.node)
        } else if !hashes, config.key != nil, let keyNode = fields.keyNode("key") {
            session.report("'key' applies only to lb policies ring_hash and maglev, not to \(config.policy.rawValue)",
                           at: keyNode)
            config.key = nil
        }
        return config
    }

    /// `header:NAME` (stored lower-case: header names are case-insensitive), `cookie:NAME`
    /// (case-sensitive, as cookies are) or `client_ip`.
    private func hashKey(_ node: Node) -> HashKey? {
        guard let text = session.string(node, key: "key") else { return nil }
        if text == "client_ip" { return .clientIP }
        let name = String(text.drop { $0 != ":" }.dropFirst())
        if text.hasPrefix("header:"), HTTPToken.isValid(name) { return .header(name.lowercased()) }
        if text.hasPrefix("cookie:"), HTTPToken.isValid(name) { return .cookie(name) }
        session.report("invalid value '\(text)' for 'key'; expected header:NAME, cookie:NAME or client_ip", at: node)
        return nil
    }

    // MARK: health_check, outlier_detection, circuit_breaker

    func healthCheck(_ node: Node) -> HealthCheckConfig? {
        var config = Defaults.healthCheck
        guard let fields = session.fields(of: node, section: "health_check", supported: Self.healthCheckKeys) else {
            return nil
        }
        if let node = fields.value("path"), let path = healthCheckPath(node) { config.path = path }
        var valid = true
        let intervalNode = fields.value("interval")
        if let intervalNode {
            if let value = session.duration(intervalNode, key: "interval", allowZero: false) {
                config.interval = value
            } else {
                valid = false
            }
        }
        let timeoutNode = fields.value("timeout")
        if let timeoutNode {
            if let value = session.duration(timeoutNode, key: "timeout", allowZero: false) {
                config.timeout = value
            } else {
                valid = false
            }
        }
        // A probe still running when the next one is due would overlap it.
        if valid {
            requireOrder(WrittenDuration(key: "timeout", value: config.timeout, node: timeoutNode),
                         atMost: WrittenDuration(key: "interval", value: config.interval, node: intervalNode),
                         section: "health_check", reportAtLonger: false)
        }
        if let node = fields.value("healthy_threshold"),
           let value = session.integer(node, key: "healthy_threshold", range: 1...100) {
            config.healthyThreshold = value
        }
        if let node = fields.value("unhealthy_threshold"),
           let value = session.integer(node, key: "unhealthy_threshold", range: 1...100) {
            config.unhealthyThreshold = value
        }
        return config
    }

    /// Sent as the request target, so it must be one as written: printable ASCII from "/".
    private func healthCheckPath(_ node: Node) -> String? {
        guard let path = session.nonEmptyString(node, key: "path") else { return nil }
        guard path.hasPrefix("/") else {
            session.report("health_check path '\(path)' must start with '/'", at: node)
            return nil
        }
        guard path.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) && $0 != "#" }) else {
            session.report("health_check path '\(path)' must be a request path: printable ASCII without spaces or '#' (percent-encode the rest)",
                           at: node)
            return nil
        }
        return path
    }

    func outlierDetection(_ node: Node) -> OutlierDetectionConfig? {
        var config = Defaults.outlierDetection
        guard let fields = session.fields(of: node, section: "outlier_detection",
                                          supported: Self.outlierDetectionKeys) else { return nil }
        if let node = fields.value("consecutive_failures"),
           let value = session.integer(node, key: "consecutive_failures", range: 1...1_000) {
            config.consecutiveFailures = value
        }
        if let node = fields.value("base_ejection"), let value = session.duration(node, key: "base_ejection", allowZero: false) {
            config.baseEjection = value
        }
        if let node = fields.value("max_ejected_percent"),
           let value = session.integer(node, key: "max_ejected_percent", range: 0...100) {
            config.maxEjectedPercent = value
        }
        return config
    }

    func circuitBreaker(_ node: Node) -> CircuitBreakerConfig {
        var config = Defaults.circuitBreaker
        guard let fields = session.fields(of: node, section: "circuit_breaker", supported: Self.circuitBreakerKeys) else {
            return config
        }
        if let node = fields.value("max_connections"),
           let value = session.integer(node, key: "max_connections", range: 1...1_000_000) {
            config.maxConnections = value
        }
        if let node = fields.value("max_pending"), let value = session.integer(node, key: "max_pending", range: 1...1_000_000) {
            config.maxPending = value
        }
        if let node = fields.value("max_requests"), let value = session.integer(node, key: "max_requests", range: 1...1_000_000) {
            config.maxRequests = value
        }
        return config
    }

    // MARK: Shared pieces

    /// A duration of a section, with where it was written; nil `node` = the default.
    struct WrittenDuration {
        var key: String
        var value: Duration
        var node: Node?
    }

    /// Reports `shorter` > `longer` at the side the rule is about (`reportAtLonger`) when the
    /// user wrote it, else at the other side: the defaults are ordered, so one of the two was
    /// written, and the message calls the other a default, since the user never typed it.
    private func requireOrder(_ shorter: WrittenDuration, atMost longer: WrittenDuration, section: String,
                              reportAtLonger: Bool) {
        guard shorter.value > longer.value else { return }
        func shown(_ side: WrittenDuration) -> String {
            "'\(side.key)' \(DurationNotation.format(side.value))" + (side.node == nil ? " (the default)" : "")
        }
        let atLonger = "\(section) \(shown(longer)) must be at least \(shown(shorter))"
        let atShorter = "\(section) \(shown(shorter)) must not exceed \(shown(longer))"
        if reportAtLonger, let node = longer.node {
            session.report(atLonger, at: node)
        } else if let node = shorter.node {
            session.report(atShorter, at: node)
        } else if let node = longer.node {
            session.report(atLonger, at: node)
        }
    }
}
