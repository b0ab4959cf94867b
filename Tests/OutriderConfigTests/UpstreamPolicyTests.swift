import Testing
@testable import OutriderConfig

// Route `retry` and the cluster's `lb`, `health_check`, `outlier_detection` and
// `circuit_breaker` (SPEC §7).

/// The retry policy of the first route of a config whose only listener has `route` as its route.
private func retryPolicy(_ route: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> RetryPolicy {
    let config = try load("listeners: [{ routes: [\(route)] }]\n", sourceLocation: sourceLocation)
    return try #require(config.listeners.first?.routes.first, sourceLocation: sourceLocation).retry
}

/// The first cluster of a config whose only cluster is `app` with the given extra keys.
private func cluster(_ keys: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> ClusterConfig {
    let config = try load("clusters: [{ name: app, endpoints: [127.0.0.1:8080], \(keys) }]\n", sourceLocation: sourceLocation)
    return try #require(config.clusters.first, sourceLocation: sourceLocation)
}

@Suite struct RetryTests {
    @Test func everyKeyLoads() throws {
        let config = try load("""
            listeners:
              - routes:
                  - timeout: 10s
                    retry:
                      attempts: 10
                      on: [connect_failure, refused_stream, reset, gateway_error, 5xx, retriable_status_codes]
                      retriable_status_codes: [409, 100, 599]
                      per_try_timeout: 10s
                      backoff: { base: 1ms, max: 1ms }
                      budget: { ratio: 1, min_per_second: 0.5 }
                      max_replay_body: 64MiB
            """)
        #expect(config.listeners[0].routes[0].retry == RetryPolicy(
            attempts: 10, on: Set(RetryCondition.allCases), retriableStatusCodes: [409, 100, 599],
            perTryTimeout: .seconds(10), backoff: RetryBackoff(base: .milliseconds(1), max: .milliseconds(1)),
            budget: RetryBudget(ratio: 1, minPerSecond: 0.5), maxReplayBody: 64 * 1_048_576))
    }

    @Test func lowerBoundsLoad() throws {
        let retry = try retryPolicy("""
            { retry: { attempts: 1, on: [5xx], per_try_timeout: 0, budget: { ratio: 0, min_per_second: 0 },
                       max_replay_body: 0 } }
            """)
        #expect(retry.attempts == 1)
        #expect(retry.on == [.serverError])
        #expect(retry.perTryTimeout == .zero)
        #expect(retry.budget == RetryBudget(ratio: 0, minPerSecond: 0))
        #expect(retry.maxReplayBody == 0)
    }

    @Test func withoutRetryTheRouteRetriesOnceOnConnectFailure() throws {
        #expect(try retryPolicy("{ name: r }") == .default)
        #expect(try retryPolicy("{ retry: ~ }") == .default)
        #expect(RetryPolicy.default.attempts == 2)
        #expect(RetryPolicy.default.on == [.connectFailure])
        #expect(ConfigLoader.zeroConfig().listeners[0].routes[0].retry == .default)
    }

    /// A written block starts from the SPEC example's conditions, not from the bare default's.
    @Test func aWrittenBlockFillsItsOwnDefaults() throws {
        var expected = RetryPolicy.default
        expected.on = [.connectFailure, .refusedStream, .reset, .gatewayError]
        #expect(Defaults.writtenRetry == expected)
        #expect(try retryPolicy("{ retry: {} }") == expected)

        expected.attempts = 5
        #expect(try retryPolicy("{ retry: { attempts: 5 } }") == expected)

        expected = Defaults.writtenRetry
        expected.on = [.connectFailure]
        expected.budget.ratio = 0.5
        expected.backoff.max = .seconds(2)
        #expect(try retryPolicy("{ retry: { on: [connect_failure], budget: { ratio: 0.5 }, backoff: { max: 2s } } }")
            == expected)
    }

    @Test func valueErrors() {
        let yaml = """
            listeners:
              - routes:
                  - timeout: 2s
                    retry:
                      attempts: 11
                      on: [reset, timeout, reset]
                      per_try_timeout: 3s
                      backoff: { base: 0, max: 1x }
                      budget: { ratio: 1.5, min_per_second: -1 }
                      max_replay_body: 65MiB
                      jitter: full
            """
        let conditions = "connect_failure, refused_stream, reset, gateway_error, 5xx, retriable_status_codes"
        #expect(errorLines(yaml) == [
            at(5, 21, "'attempts' must be between 1 and 10, got 11"),
            at(6, 23, "invalid value 'timeout' for 'on'; expected one of: \(conditions)"),
            at(6, 32, "duplicate condition 'reset' in 'on'"),
            at(7, 28, "'per_try_timeout' 3s exceeds the route's 'timeout' 2s, which bounds all tries together"),
            at(8, 28, "'base' must be greater than zero"),
            at(8, 36, "invalid duration '1x' for 'max': expected a whole number with a unit ms, s, m or h, like 250ms or 5s"),
            at(9, 28, "'ratio' must be between 0 and 1, got 1.5"),
            at(9, 49, "invalid value '-1' for 'min_per_second': expected a number like 10 or 0.2"),
            at(10, 28, "'max_replay_body' must be between 0 and 64MiB, got 65MiB"),
            at(11, 11, "unknown key 'jitter' in retry; expected one of: attempts, on, retriable_status_codes, per_try_timeout, backoff, budget, max_replay_body"),
        ])
    }

    @Test func retriableStatusCodesGoWithTheirCondition() {
        let yaml = """
            listeners:
              - routes:
                  - name: a
                    retry: { on: [retriable_status_codes] }
                  - name: b
                    retry: { retriable_status_codes: [503] }
                  - name: c
                    retry: { on: [5xx], retriable_status_codes: [99, 600, 503, 503, "x"] }
                  - name: d
                    retry: { on: [], retriable_status_codes: 503 }
                  - name: e
                    retry: { on: [retriable_status_codes, bogus], retriable_status_codes: [] }
                  - name: f
                    retry: { on: [reset], retriable_status_codes: [] }
            """
        #expect(errorLines(yaml) == [
            at(4, 23, "'on' includes retriable_status_codes, but 'retriable_status_codes' lists no codes"),
            at(6, 18, "'retriable_status_codes' has no effect unless 'on' includes retriable_status_codes"),
            at(8, 54, "'retriable_status_codes' must be between 100 and 599, got 99"),
            at(8, 58, "'retriable_status_codes' must be between 100 and 599, got 600"),
            at(8, 68, "duplicate status code 503 in 'retriable_status_codes'"),
            at(8, 73, "invalid value 'x' for 'retriable_status_codes': expected a whole number"),
            at(10, 22, "'on' must name at least one condition; to turn retries off, write attempts: 1"),
            at(10, 50, "expected a list for 'retriable_status_codes', got a scalar"),
            // Only the typo: the missing codes would be a consequence of reading `on` wrongly.
            at(12, 47, "invalid value 'bogus' for 'on'; expected one of: connect_failure, refused_stream, reset, gateway_error, 5xx, retriable_status_codes"),
        ])
    }

    @Test func backoffAndPerTryTimeoutOrdering() {
        let yaml = """
            listeners:
              - routes:
                  - name: a
                    retry: { backoff: { base: 1s, max: 500ms } }
                  - name: b
                    retry: { backoff: { base: 1s } }
                  - name: c
                    retry: { backoff: { max: 10ms } }
                  - name: d
                    timeout: 0
                    retry: { per_try_timeout: 1h, backoff: { base: 250ms, max: 250ms } }
                  - name: e
                    retry: { per_try_timeout: 15s }
                  - name: f
                    timeout: soon
                    retry: { per_try_timeout: 1h }
                  - name: g
                    retry: { per_try_timeout: 16s }
            """
        #expect(errorLines(yaml) == [
            at(4, 44, "backoff 'max' 500ms must be at least 'base' 1s"),
            at(6, 35, "backoff 'base' 1s must not exceed 'max' 250ms (the default)"),
            at(8, 34, "backoff 'max' 10ms must be at least 'base' 25ms (the default)"),
            at(15, 18, "invalid duration 'soon' for 'timeout': expected a whole number with a unit ms, s, m or h, like 250ms or 5s"),
            // The route's default timeout (15s) bounds the tries too.
            at(18, 35, "'per_try_timeout' 16s exceeds the route's 'timeout' 15s, which bounds all tries together"),
        ])
    }

    @Test func wrongShapes() {
        #expect(errorLines("listeners: [{ routes: [{ retry: 3 }] }]\n") == [
            at(1, 33, "expected a mapping for retry, got a scalar"),
        ])
        #expect(errorLines("listeners: [{ routes: [{ retry: { backoff: 25ms, budget: [1], on: reset } }] }]\n") == [
            at(1, 44, "expected a mapping for backoff, got a scalar"),
            at(1, 58, "expected a mapping for budget, got a list"),
            at(1, 67, "expected a list for 'on', got a scalar"),
        ])
    }
}

@Suite struct LoadBalancingTests {
    @Test(arguments: [
        ("{}", LoadBalancingConfig(policy: .roundRobin)),
        ("{ policy: round_robin }", LoadBalancingConfig(policy: .roundRobin)),
        ("{ policy: least_request }", LoadBalancingConfig(policy: .leastRequest)),
        ("{ policy: random }", LoadBalancingConfig(policy: .random)),
        ("{ policy: ring_hash, key: \"header:X-User\" }", LoadBalancingConfig(policy: .ringHash, key: .header("x-user"))),
        ("{ policy: ring_hash, key: client_ip }", LoadBalancingConfig(policy: .ringHash, key: .clientIP)),
        ("{ policy: maglev, key: \"cookie:SessionID\" }", LoadBalancingConfig(policy: .maglev, key: .cookie("SessionID"))),
        ("{ policy: maglev, key: header:x-tenant }", LoadBalancingConfig(policy: .maglev, key: .header("x-tenant"))),
    ])
    func policiesAndKeys(lb: String, expected: LoadBalancingConfig) throws {
        #expect(try cluster("lb: \(lb)").lb == expected)
    }

    @Test func withoutLBTheClusterIsRoundRobin() throws {
        #expect(try cluster("connect_timeout: 1s").lb == LoadBalancingConfig(policy: .roundRobin))
        #expect(try cluster("lb: ~").lb == Defaults.lb)
    }

    @Test func keyIsRequiredForHashingAndRefusedOtherwise() {
        let yaml = """
            clusters:
              - name: app
                endpoints: [127.0.0.1:1]
                lb: { policy: ring_hash }
              - name: b
                endpoints: [127.0.0.1:2]
                lb: { policy: least_request, key: client_ip }
              - name: c
                endpoints: [127.0.0.1:3]
                lb: { key: "header:x-user" }
              - name: d
                endpoints: [127.0.0.1:4]
                lb: { policy: maglev, key: "header:bad name" }
              - name: e
                endpoints: [127.0.0.1:5]
                lb: { policy: maglev, key: "query:x" }
              - name: f
                endpoints: [127.0.0.1:6]
                lb: { policy: fastest, key: client_ip }
              - name: g
                endpoints: [127.0.0.1:7]
                lb: { policy: maglev, key: "cookie:" }
            """
        let keyHint = "expected header:NAME, cookie:NAME or client_ip"
        #expect(errorLines(yaml) == [
            at(4, 19, "lb policy 'ring_hash' needs a 'key': header:NAME, cookie:NAME or client_ip"),
            at(7, 34, "'key' applies only to lb policies ring_hash and maglev, not to least_request"),
            at(10, 11, "'key' applies only to lb policies ring_hash and maglev, not to round_robin"),
            at(13, 32, "invalid value 'header:bad name' for 'key'; \(keyHint)"),
            at(16, 32, "invalid value 'query:x' for 'key'; \(keyHint)"),
            at(19, 19, "invalid value 'fastest' for 'policy'; expected one of: round_robin, least_request, random, ring_hash, maglev"),
            at(22, 32, "invalid value 'cookie:' for 'key'; \(keyHint)"),
        ])
    }
}

@Suite struct EndpointHealthTests {
    @Test func everyKeyLoads() throws {
        let config = try cluster("""
            health_check: { path: /livez, interval: 2s, timeout: 2s, healthy_threshold: 100, unhealthy_threshold: 1 },
            outlier_detection: { consecutive_failures: 1000, base_ejection: 1m, max_ejected_percent: 0 },
            circuit_breaker: { max_connections: 1, max_pending: 1000000, max_requests: 64 }
            """)
        #expect(config.healthCheck == HealthCheckConfig(path: "/livez", interval: .seconds(2), timeout: .seconds(2),
                                                        healthyThreshold: 100, unhealthyThreshold: 1))
        #expect(config.outlierDetection == OutlierDetectionConfig(consecutiveFailures: 1_000, baseEjection: .seconds(60),
                                                                  maxEjectedPercent: 0))
        #expect(config.circuitBreaker == CircuitBreakerConfig(maxConnections: 1, maxPending: 1_000_000, maxRequests: 64))
    }

    @Test func defaults() throws {
        let plain = try cluster("connect_timeout: 1s")
        #expect(plain.healthCheck == nil)
        #expect(plain.outlierDetection == nil)
        #expect(plain.circuitBreaker == CircuitBreakerConfig(maxConnections: 1_024, maxPending: 1_024, maxRequests: 1_024))
        #expect(ConfigLoader.zeroConfig().clusters[0] == Defaults.cluster)
        #expect(Defaults.cluster.circuitBreaker == plain.circuitBreaker)

        // A null section is absent, like every null in the file; an empty one is on with defaults.
        let nulls = try cluster("health_check: ~, outlier_detection: ~, circuit_breaker: ~")
        #expect(nulls == plain)

        let empty = try cluster("health_check: {}, outlier_detection: {}, circuit_breaker: {}")
        #expect(empty.healthCheck == HealthCheckConfig(path: "/healthz", interval: .seconds(5), timeout: .seconds(1),
                                                       healthyThreshold: 2, unhealthyThreshold: 3))
        #expect(empty.outlierDetection == OutlierDetectionConfig(consecutiveFailures: 5, baseEjection: .seconds(30),
                                                                 maxEjectedPercent: 50))
        #expect(empty.circuitBreaker == Defaults.circuitBreaker)

        let partial = try cluster("""
            health_check: { path: "/ready" }, outlier_detection: { max_ejected_percent: 10 }, circuit_breaker: { max_pending: 8 }
            """)
        var check = Defaults.healthCheck
        check.path = "/ready"
        #expect(partial.healthCheck == check)
        var detection = Defaults.outlierDetection
        detection.maxEjectedPercent = 10
        #expect(partial.outlierDetection == detection)
        #expect(partial.circuitBreaker == CircuitBreakerConfig(maxConnections: 1_024, maxPending: 8, maxRequests: 1_024))
    }

    @Test func valueErrors() {
        let yaml = """
            clusters:
              - name: app
                endpoints: [127.0.0.1:1]
                health_check: { path: healthz, interval: 0, timeout: 1x, healthy_threshold: 0, unhealthy_threshold: 101, method: GET }
              - name: b
                endpoints: [127.0.0.1:2]
                health_check: { path: "/health check", interval: 1s, timeout: 2s }
              - name: c
                endpoints: [127.0.0.1:3]
                health_check: { path: "/a#b", interval: 500ms }
              - name: d
                endpoints: [127.0.0.1:4]
                health_check: { timeout: 10s }
                outlier_detection: { consecutive_failures: 0, base_ejection: 0, max_ejected_percent: 101, interval: 10s }
                circuit_breaker: { max_connections: 0, max_pending: 1000001, max_requests: x, max_retries: 3 }
              - name: e
                endpoints: [127.0.0.1:5]
                health_check: [/healthz]
                outlier_detection: 5
                circuit_breaker: { max_requests: 1.5 }
            """
        let pathRule = "must be a request path: printable ASCII without spaces or '#' (percent-encode the rest)"
        #expect(errorLines(yaml) == [
            at(4, 27, "health_check path 'healthz' must start with '/'"),
            at(4, 46, "'interval' must be greater than zero"),
            at(4, 58, "invalid duration '1x' for 'timeout': expected a whole number with a unit ms, s, m or h, like 250ms or 5s"),
            at(4, 81, "'healthy_threshold' must be between 1 and 100, got 0"),
            at(4, 105, "'unhealthy_threshold' must be between 1 and 100, got 101"),
            at(4, 110, "unknown key 'method' in health_check; expected one of: path, interval, timeout, healthy_threshold, unhealthy_threshold"),
            at(7, 27, "health_check path '/health check' \(pathRule)"),
            at(7, 67, "health_check 'timeout' 2s must not exceed 'interval' 1s"),
            at(10, 27, "health_check path '/a#b' \(pathRule)"),
            at(10, 45, "health_check 'interval' 500ms must be at least 'timeout' 1s (the default)"),
            at(13, 30, "health_check 'timeout' 10s must not exceed 'interval' 5s (the default)"),
            at(14, 48, "'consecutive_failures' must be between 1 and 1000, got 0"),
            at(14, 66, "'base_ejection' must be greater than zero"),
            at(14, 90, "'max_ejected_percent' must be between 0 and 100, got 101"),
            at(14, 95, "unknown key 'interval' in outlier_detection; expected one of: consecutive_failures, base_ejection, max_ejected_percent"),
            at(15, 41, "'max_connections' must be between 1 and 1000000, got 0"),
            at(15, 57, "'max_pending' must be between 1 and 1000000, got 1000001"),
            at(15, 80, "invalid value 'x' for 'max_requests': expected a whole number"),
            at(15, 83, "unknown key 'max_retries' in circuit_breaker; expected one of: max_connections, max_pending, max_requests"),
            at(18, 19, "expected a mapping for health_check, got a list"),
            at(19, 24, "expected a mapping for outlier_detection, got a scalar"),
            at(20, 38, "invalid value '1.5' for 'max_requests': expected a whole number"),
        ])
    }

    @Test func healthCheckPathsThatAreRequestTargets() throws {
        for path in ["/", "/healthz", "/status?full=1&x=%20y", "/a/b;c/~d"] {
            #expect(try cluster("health_check: { path: \"\(path)\" }").healthCheck?.path == path)
        }
        for path in ["/é", "/tab\\there", "/nul\\x00"] {
            #expect(errorLines("clusters: [{ name: app, endpoints: [127.0.0.1:8080], health_check: { path: \"\(path)\" } }]\n")
                .count == 1, "\(path)")
        }
    }
}

@Suite struct UpstreamPolicyRenderTests {
    static let yaml = """
        listeners:
          - routes:
              - name: spec-example
                timeout: 5s
                retry:
                  attempts: 3
                  on: [connect_failure, refused_stream, reset, gateway_error, retriable_status_codes]
                  retriable_status_codes: [409]
                  per_try_timeout: 2s
                  backoff: { base: 25ms, max: 250ms }
                  budget: { ratio: 0.2, min_per_second: 10 }
                  max_replay_body: 64KiB
                cluster: hashed
              - name: tiny
                match: { path_prefix: /tiny }
                retry: { on: [5xx], budget: { ratio: 0.001, min_per_second: 0.125 }, max_replay_body: 1000 }
                cluster: sticky
        clusters:
          - name: hashed
            endpoints: [127.0.0.1:9001, 127.0.0.1:9002]
            lb: { policy: ring_hash, key: "header:X-User" }
            health_check: { path: "/health?deep=1" }
            outlier_detection: { consecutive_failures: 7 }
          - name: sticky
            endpoints: [127.0.0.1:9003]
            lb: { policy: maglev, key: "cookie:sid" }
            circuit_breaker: { max_requests: 10 }
          - name: by-ip
            endpoints: [127.0.0.1:9004]
            lb: { policy: ring_hash, key: client_ip }
          - name: app
            endpoints: [127.0.0.1:8080]
            lb: { policy: least_request }
        """

    @Test func roundTripsThroughYAMLAndJSON() throws {
        let config = try load(Self.yaml)
        let yaml = config.renderYAML()
        #expect(try load(yaml) == config, "rendered YAML:\n\(yaml)")
        let json = config.renderJSON()
        #expect(try load(json) == config, "rendered JSON:\n\(json)")
        #expect(try load(yaml).renderYAML() == yaml)
    }

    @Test func renderedShape() throws {
        let yaml = try load(Self.yaml).renderYAML()
        #expect(yaml.contains("""
                    retry:
                      attempts: 3
                      "on": [connect_failure, refused_stream, reset, gateway_error, retriable_status_codes]
                      retriable_status_codes: [409]
                      per_try_timeout: 2s
                      backoff:
                        base: 25ms
                        max: 250ms
                      budget:
                        ratio: 0.2
                        min_per_second: 10
                      max_replay_body: 64KiB
                    cluster: hashed

            """))
        #expect(yaml.contains("""
                      budget:
                        ratio: 0.001
                        min_per_second: 0.125
                      max_replay_body: 1000

            """))
        #expect(yaml.contains("""
              - name: hashed
                endpoints:
                  - 127.0.0.1:9001
                  - 127.0.0.1:9002
                dns_refresh: 5s
                protocol: http1
                lb:
                  policy: ring_hash
                  key: header:x-user
                connect_timeout: 1s
                pool:
                  max_idle_per_endpoint: 64
                  idle_timeout: 1m
                health_check:
                  path: "/health?deep=1"
                  interval: 5s
                  timeout: 1s
                  healthy_threshold: 2
                  unhealthy_threshold: 3
                outlier_detection:
                  consecutive_failures: 7
                  base_ejection: 30s
                  max_ejected_percent: 50
                circuit_breaker:
                  max_connections: 1024
                  max_pending: 1024
                  max_requests: 1024

            """))
        #expect(yaml.contains("""
                lb:
                  policy: maglev
                  key: cookie:sid

            """))
        #expect(yaml.contains("""
                lb:
                  policy: ring_hash
                  key: client_ip

            """))
    }
}
