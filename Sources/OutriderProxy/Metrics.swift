import CAtomics
import OutriderConfig
import OutriderCore
import OutriderHTTP

/// Where each counter lives in a worker's flat counter array. Built once per configuration;
/// every worker has its own array (written only by that worker, no lock), and a scrape sums
/// the workers' arrays with atomic loads (SPEC §8: a scrape never stalls a worker).
final class MetricsLayout: @unchecked Sendable {
    static let codes = 500                      // status 100...599
    static let durationBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    static let durationBoundsMicros: [Int64] = durationBounds.map { Int64($0 * 1_000_000) }
    static let authMethods = ["none", "api_key", "basic", "jwt", "external", "oidc"]
    static let authReasons = ["missing_credentials", "invalid_credentials", "denied", "unavailable", "overloaded"]
    static let retryReasons = RetryReason.allCases.map(\.label)
    /// Why an HTTP/2 client connection was closed by us (`HTTP2SessionFailure.Kind`).
    static let http2CloseReasons = ["bad_preface", "protocol_error", "flood", "rapid_reset", "empty_frames",
                                    "continuation_flood", "internal_error"]

    let listenerNames: [String]
    /// Routes in a flat list: (listener index, route name, cluster name).
    let routes: [(listener: Int, name: String, cluster: String)]
    /// Index of listener 0's pseudo-route for unrouted requests; listener N's is this + N.
    let unroutedBase: Int
    let clusterNames: [String]
    let endpoints: [(cluster: String, label: String)]

    let downstreamActive: Int
    let downstreamTotal: Int
    let requests: Int            // [route][code]
    let durationBuckets: Int     // [route][bound + 1 (+Inf)]
    let durationSumMicros: Int   // [route]
    let upstreamRequests: Int    // [endpoint][code]
    let connectFailures: Int     // [endpoint]
    let retries: Int             // [cluster][reason]
    let retryBudgetExhausted: Int // [cluster]
    let authDenied: Int          // [method][reason]
    let rateLimited: Int         // [route]
    let upstreamActive: Int      // [endpoint] gauge
    let upstreamIdle: Int        // [endpoint] gauge
    let endpointRequests: Int    // [endpoint]
    let http2Closed: Int         // [listener][reason]
    let count: Int

    init(runtime: ProxyRuntime) {
        listenerNames = runtime.config.listeners.map(\.name)
        var routes: [(Int, String, String)] = []
        for (index, listener) in runtime.config.listeners.enumerated() {
            for route in listener.routes { routes.append((index, route.name, route.cluster)) }
        }
        // Requests that matched no route (404, and 400s before routing): route="" cluster="".
        unroutedBase = routes.count
        for index in runtime.config.listeners.indices { routes.append((index, "", "")) }
        self.routes = routes
        clusterNames = runtime.config.clusters.map(\.name)
        endpoints = runtime.endpoints.map { endpoint in
            (runtime.clusters.first { $0.endpoints.contains { $0 === endpoint } }.map { $0.name.description } ?? "", endpoint.labelString)
        }
        var next = 0
        func take(_ size: Int) -> Int { defer { next += size }; return next }
        downstreamActive = take(listenerNames.count)
        downstreamTotal = take(listenerNames.count)
        requests = take(routes.count * Self.codes)
        durationBuckets = take(routes.count * (Self.durationBounds.count + 1))
        durationSumMicros = take(routes.count)
        upstreamRequests = take(endpoints.count * Self.codes)
        connectFailures = take(endpoints.count)
        retries = take(clusterNames.count * Self.retryReasons.count)
        retryBudgetExhausted = take(clusterNames.count)
        authDenied = take(Self.authMethods.count * Self.authReasons.count)
        rateLimited = take(routes.count)
        upstreamActive = take(endpoints.count)
        upstreamIdle = take(endpoints.count)
        endpointRequests = take(endpoints.count)
        http2Closed = take(listenerNames.count * Self.http2CloseReasons.count)
        count = next
    }

    static func methodIndex(_ name: StaticString) -> Int {
        for (index, method) in authMethods.enumerated() where equals(name, method) { return index }
        return 0
    }

    static func reasonIndex(_ name: StaticString) -> Int {
        for (index, reason) in authReasons.enumerated() where equals(name, reason) { return index }
        return 1
    }

    private static func equals(_ lhs: StaticString, _ rhs: String) -> Bool {
        String(decoding: UnsafeBufferPointer(start: lhs.utf8Start, count: lhs.utf8CodeUnitCount), as: UTF8.self) == rhs
    }
}

/// The `reason` label of `outrider_retries_total`: the `retry.on` condition that fired.
enum RetryReason: Int, CaseIterable {
    case connectFailure, reset, gatewayError, serverError, retriableStatusCode, perTryTimeout, refusedStream

    var label: String {
        switch self {
        case .connectFailure: return "connect_failure"
        case .reset: return "reset"
        case .gatewayError: return "gateway_error"
        case .serverError: return "5xx"
        case .retriableStatusCode: return "retriable_status_codes"
        case .perTryTimeout: return "per_try_timeout"
        case .refusedStream: return "refused_stream"
        }
    }
}

/// One worker's counters.
final class WorkerMetrics: @unchecked Sendable {
    let layout: MetricsLayout
    let values: UnsafeMutablePointer<UInt64>

    init(layout: MetricsLayout) {
        self.layout = layout
        values = .allocate(capacity: max(1, layout.count))
        values.initialize(repeating: 0, count: max(1, layout.count))
    }

    deinit { values.deallocate() }

    // Written by the owning worker only: plain increments are enough (a scrape's atomic load
    // sees each aligned 64-bit word whole).
    @inline(__always) func add(_ index: Int, _ amount: UInt64 = 1) { values[index] &+= amount }
    @inline(__always) func subtract(_ index: Int) { values[index] &-= 1 }
    @inline(__always) func load(_ index: Int) -> UInt64 { catomic_load(values + index) }

    @inline(__always)
    func recordRequest(route: Int, status: Int, durationNanos: Int64) {
        guard route >= 0, status >= 100, status < 600 else { return }
        add(layout.requests + route * MetricsLayout.codes + status - 100)
        let micros = max(0, durationNanos / 1000)
        var bucket = 0
        let bounds = MetricsLayout.durationBoundsMicros
        while bucket < bounds.count && micros > bounds[bucket] { bucket += 1 }
        add(layout.durationBuckets + route * (bounds.count + 1) + bucket)
        add(layout.durationSumMicros + route, UInt64(micros))
    }

    @inline(__always)
    func recordUpstream(endpoint: Int, status: Int) {
        guard status >= 100, status < 600 else { return }
        add(layout.upstreamRequests + endpoint * MetricsLayout.codes + status - 100)
        add(layout.endpointRequests + endpoint)
    }
}

/// Renders the Prometheus text format (0.0.4) from every worker's counters.
enum MetricsRenderer {
    static func render(_ workers: [WorkerMetrics], version: String, reloadsOK: UInt64, reloadsError: UInt64,
                       endpointHealthy: (Int) -> Bool = { _ in true }) -> String {
        guard let layout = workers.first?.layout else { return "" }
        func sum(_ index: Int) -> UInt64 { workers.reduce(0) { $0 &+ $1.load(index) } }
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        func label(_ value: String) -> String {
            var escaped = ""
            for character in value {
                switch character {
                case "\\": escaped += "\\\\"
                case "\"": escaped += "\\\""
                case "\n": escaped += "\\n"
                default: escaped.append(character)
                }
            }
            return "\"\(escaped)\""
        }

        family("outrider_build_info", "gauge", "Build information.")
        out += "outrider_build_info{version=\(label(version))} 1\n"

        family("outrider_downstream_connections_active", "gauge", "Open client connections.")
        for (index, name) in layout.listenerNames.enumerated() {
            out += "outrider_downstream_connections_active{listener=\(label(name))} \(sum(layout.downstreamActive + index))\n"
        }
        family("outrider_downstream_connections_total", "counter", "Client connections accepted.")
        for (index, name) in layout.listenerNames.enumerated() {
            out += "outrider_downstream_connections_total{listener=\(label(name))} \(sum(layout.downstreamTotal + index))\n"
        }

        family("outrider_http2_connections_closed_total", "counter",
               "HTTP/2 client connections closed for abuse or protocol errors (GOAWAY sent), by reason.")
        for (index, name) in layout.listenerNames.enumerated() {
            for (reasonIndex, reason) in MetricsLayout.http2CloseReasons.enumerated() {
                out += "outrider_http2_connections_closed_total{listener=\(label(name)),reason=\(label(reason))} \(sum(layout.http2Closed + index * MetricsLayout.http2CloseReasons.count + reasonIndex))\n"
            }
        }

        family("outrider_requests_total", "counter", "Requests answered, by status code.")
        /// One sample per status code seen (codes never seen are left out).
        func codeSamples(_ name: String, _ labels: String, _ base: Int) {
            for code in 0..<MetricsLayout.codes {
                let value = sum(base + code)
                if value != 0 { out += "\(name){\(labels),code=\"\(code + 100)\"} \(value)\n" }
            }
        }
        for (routeIndex, route) in layout.routes.enumerated() {
            codeSamples("outrider_requests_total",
                        "listener=\(label(layout.listenerNames[route.listener])),route=\(label(route.name)),cluster=\(label(route.cluster))",
                        layout.requests + routeIndex * MetricsLayout.codes)
        }

        family("outrider_request_duration_seconds", "histogram", "Time from the request's first byte to the end of its response.")
        let bounds = MetricsLayout.durationBounds
        for (routeIndex, route) in layout.routes.enumerated() {
            let labels = "listener=\(label(layout.listenerNames[route.listener])),route=\(label(route.name))"
            var cumulative: UInt64 = 0
            for (bucket, bound) in bounds.enumerated() {
                cumulative &+= sum(layout.durationBuckets + routeIndex * (bounds.count + 1) + bucket)
                out += "outrider_request_duration_seconds_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
            }
            cumulative &+= sum(layout.durationBuckets + routeIndex * (bounds.count + 1) + bounds.count)
            out += "outrider_request_duration_seconds_bucket{\(labels),le=\"+Inf\"} \(cumulative)\n"
            let seconds = Double(sum(layout.durationSumMicros + routeIndex)) / 1_000_000
            out += "outrider_request_duration_seconds_sum{\(labels)} \(seconds)\n"
            out += "outrider_request_duration_seconds_count{\(labels)} \(cumulative)\n"
        }

        family("outrider_upstream_requests_total", "counter", "Responses received from endpoints, by status code.")
        for (endpointIndex, endpoint) in layout.endpoints.enumerated() {
            codeSamples("outrider_upstream_requests_total",
                        "cluster=\(label(endpoint.cluster)),endpoint=\(label(endpoint.label))",
                        layout.upstreamRequests + endpointIndex * MetricsLayout.codes)
        }
        family("outrider_upstream_connect_failures_total", "counter", "Failed connection attempts to endpoints.")
        for (endpointIndex, endpoint) in layout.endpoints.enumerated() {
            out += "outrider_upstream_connect_failures_total{cluster=\(label(endpoint.cluster)),endpoint=\(label(endpoint.label))} \(sum(layout.connectFailures + endpointIndex))\n"
        }
        family("outrider_retries_total", "counter", "Requests tried again.")
        for (clusterIndex, cluster) in layout.clusterNames.enumerated() {
            for (reasonIndex, reason) in MetricsLayout.retryReasons.enumerated() {
                out += "outrider_retries_total{cluster=\(label(cluster)),reason=\(label(reason))} \(sum(layout.retries + clusterIndex * MetricsLayout.retryReasons.count + reasonIndex))\n"
            }
        }
        family("outrider_retry_budget_exhausted_total", "counter", "Retries not made because the retry budget was spent.")
        for (clusterIndex, cluster) in layout.clusterNames.enumerated() {
            out += "outrider_retry_budget_exhausted_total{cluster=\(label(cluster))} \(sum(layout.retryBudgetExhausted + clusterIndex))\n"
        }
        family("outrider_auth_denied_total", "counter", "Requests refused by an auth filter.")
        for (methodIndex, method) in MetricsLayout.authMethods.enumerated() {
            for (reasonIndex, reason) in MetricsLayout.authReasons.enumerated() {
                let value = sum(layout.authDenied + methodIndex * MetricsLayout.authReasons.count + reasonIndex)
                if value == 0 { continue }
                out += "outrider_auth_denied_total{method=\(label(method)),reason=\(label(reason))} \(value)\n"
            }
        }
        family("outrider_rate_limited_total", "counter", "Requests refused by a rate_limit filter.")
        for (routeIndex, route) in layout.routes.enumerated() {
            out += "outrider_rate_limited_total{route=\(label(route.name))} \(sum(layout.rateLimited + routeIndex))\n"
        }
        family("outrider_endpoint_healthy", "gauge", "1 when the endpoint takes traffic.")
        for (endpointIndex, endpoint) in layout.endpoints.enumerated() {
            out += "outrider_endpoint_healthy{cluster=\(label(endpoint.cluster)),endpoint=\(label(endpoint.label))} \(endpointHealthy(endpointIndex) ? 1 : 0)\n"
        }
        family("outrider_config_reloads_total", "counter", "Configuration reloads.")
        out += "outrider_config_reloads_total{result=\"ok\"} \(reloadsOK)\n"
        out += "outrider_config_reloads_total{result=\"error\"} \(reloadsError)\n"
        return out
    }
}
