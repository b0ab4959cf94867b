import CAtomics
import Glibc
import OutriderBalancing
import OutriderConfig
import OutriderCore
import OutriderPosix

/// Endpoint and cluster state that every worker shares: health (written by the health checker),
/// outlier ejections and failure streaks (written by whichever worker saw the answer), circuit
/// breaker counts and each cluster's version. Plain 64-bit words read and written with atomics;
/// each endpoint and each cluster has its own cache line so workers don't false-share.
final class SharedUpstreamState: @unchecked Sendable {
    enum EndpointField: Int {
        case unhealthy = 0          // 1 after `unhealthy_threshold` failed checks
        case ejectedUntil           // monotonic ns; 0 = not ejected
        case ejections              // how many times it was ejected (multiplies base_ejection)
        case consecutiveFailures
        case addressGeneration      // bumped when DNS answers change
    }

    enum ClusterField: Int {
        case version = 0            // bumped on any change a worker's snapshot depends on
        case activeRequests
        case pendingRequests
        case connections
        case budgetExhausted
    }

    private static let stride = 8
    private let endpointWords: UnsafeMutablePointer<UInt64>
    private let clusterWords: UnsafeMutablePointer<UInt64>

    init(endpointCount: Int, clusterCount: Int) {
        endpointWords = .allocate(capacity: max(1, endpointCount) * Self.stride)
        endpointWords.initialize(repeating: 0, count: max(1, endpointCount) * Self.stride)
        clusterWords = .allocate(capacity: max(1, clusterCount) * Self.stride)
        clusterWords.initialize(repeating: 0, count: max(1, clusterCount) * Self.stride)
    }

    deinit {
        endpointWords.deallocate()
        clusterWords.deallocate()
    }

    @inline(__always)
    func pointer(_ endpoint: Int, _ field: EndpointField) -> UnsafeMutablePointer<UInt64> {
        endpointWords + endpoint * Self.stride + field.rawValue
    }

    @inline(__always)
    func pointer(cluster: Int, _ field: ClusterField) -> UnsafeMutablePointer<UInt64> {
        clusterWords + cluster * Self.stride + field.rawValue
    }

    @inline(__always) func load(_ endpoint: Int, _ field: EndpointField) -> UInt64 { catomic_load(pointer(endpoint, field)) }
    @inline(__always) func load(cluster: Int, _ field: ClusterField) -> UInt64 { catomic_load(pointer(cluster: cluster, field)) }
    @inline(__always) func store(_ endpoint: Int, _ field: EndpointField, _ value: UInt64) { catomic_store(pointer(endpoint, field), value) }
    @inline(__always) @discardableResult
    func add(_ endpoint: Int, _ field: EndpointField, _ delta: UInt64) -> UInt64 { catomic_add(pointer(endpoint, field), delta) }
    @inline(__always) @discardableResult
    func add(cluster: Int, _ field: ClusterField, _ delta: UInt64) -> UInt64 { catomic_add(pointer(cluster: cluster, field), delta) }

    /// Tells every worker to rebuild its snapshot of `cluster`.
    func bumpVersion(cluster: Int) { add(cluster: cluster, .version, 1) }

    func isHealthy(_ endpoint: Int) -> Bool { load(endpoint, .unhealthy) == 0 }

    func isEjected(_ endpoint: Int, now: Int64) -> Bool {
        let until = load(endpoint, .ejectedUntil)
        return until != 0 && Int64(bitPattern: until) > now
    }
}

/// What a cluster's configuration means on the data path, compiled once.
struct ClusterPolicy {
    let lb: LoadBalancingPolicy
    let hashKey: CompiledHashKey?
    let outlier: (consecutiveFailures: UInt64, baseEjection: Int64, maxEjectedPercent: Int)?
    let maxConnections: UInt64
    let maxPending: UInt64
    let maxRequests: UInt64

    init(_ config: ClusterConfig) {
        lb = config.lb.policy
        hashKey = config.lb.key.map(CompiledHashKey.init)
        outlier = config.outlierDetection.map {
            (UInt64($0.consecutiveFailures), $0.baseEjection.nanoseconds, $0.maxEjectedPercent)
        }
        maxConnections = UInt64(config.circuitBreaker.maxConnections)
        maxPending = UInt64(config.circuitBreaker.maxPending)
        maxRequests = UInt64(config.circuitBreaker.maxRequests)
    }
}

enum CompiledHashKey {
    case header(ByteString)     // lower-case name
    case cookie(ByteString)
    case clientIP

    init(_ key: HashKey) {
        switch key {
        case .header(let name): self = .header(ByteString(lowercased: name))
        case .cookie(let name): self = .cookie(ByteString(name))
        case .clientIP: self = .clientIP
        }
    }
}

/// One worker's view of a cluster: the endpoints that take traffic now and the balancer over
/// them. Rebuilt (allocating) only when the cluster's shared version moves or an ejection runs
/// out; picking from it takes no lock and allocates nothing.
final class ClusterSnapshot {
    let cluster: ClusterRuntime
    private(set) var version: UInt64 = .max
    /// Endpoints taking traffic; all of them in panic mode (none healthy).
    private(set) var members: [EndpointRuntime] = []
    private(set) var panic = false
    private var roundRobin = SmoothWeightedRoundRobin(weights: [1])
    private var ring: RingHashTable?
    private var maglev: MaglevTable?
    /// The earliest end of a current ejection: the snapshot is rebuilt then.
    private var nextEjectionEnd: Int64 = .max
    private let workerID: Int

    init(cluster: ClusterRuntime, workerID: Int) {
        self.cluster = cluster
        self.workerID = workerID
    }

    @inline(__always)
    func refreshIfNeeded(_ shared: SharedUpstreamState, now: Int64) {
        if shared.load(cluster: cluster.index, .version) != version || now >= nextEjectionEnd {
            rebuild(shared, now: now)
        }
    }

    private func rebuild(_ shared: SharedUpstreamState, now: Int64) {
        var expired = false
        for endpoint in cluster.endpoints {
            let until = Int64(bitPattern: shared.load(endpoint.index, .ejectedUntil))
            if until != 0 && until <= now {
                var expected = UInt64(bitPattern: until)
                if catomic_cas(shared.pointer(endpoint.index, .ejectedUntil), &expected, 0) { expired = true }
            }
        }
        if expired { shared.bumpVersion(cluster: cluster.index) }
        version = shared.load(cluster: cluster.index, .version)
        nextEjectionEnd = .max
        var eligible: [EndpointRuntime] = []
        for endpoint in cluster.endpoints {
            let until = Int64(bitPattern: shared.load(endpoint.index, .ejectedUntil))
            if until > now {
                nextEjectionEnd = min(nextEjectionEnd, until)
                continue
            }
            if !shared.isHealthy(endpoint.index) { continue }
            eligible.append(endpoint)
        }
        panic = eligible.isEmpty
        members = panic ? cluster.endpoints : eligible
        switch cluster.policy.lb {
        case .roundRobin:
            var next = SmoothWeightedRoundRobin(weights: Array(repeating: 1, count: members.count))
            // Workers start at different places so they don't all hit the same endpoint first.
            for _ in 0..<workerID % max(1, members.count) { _ = next.next() }
            roundRobin = next
        case .ringHash:
            ring = RingHashTable(memberKeys: members.map(\.hashIdentity))
        case .maglev:
            maglev = MaglevTable(memberKeys: members.map(\.hashIdentity))
        case .leastRequest, .random:
            break
        }
    }

    /// Picks an endpoint, preferring one whose position in the cluster is not in `tried`
    /// (a bit per position, for the first 64).
    @inline(__always)
    func pick(hash: UInt64, tried: UInt64, random: inout FastRandom, activeRequests: UnsafeMutablePointer<Int>) -> EndpointRuntime {
        let count = members.count
        var choice: Int
        switch cluster.policy.lb {
        case .roundRobin:
            choice = roundRobin.next()
        case .leastRequest:
            choice = LeastRequestPicker.pick(count: count, random: &random) { activeRequests[members[$0].index] }
        case .random:
            choice = RandomPicker.pick(count: count, random: &random)
        case .ringHash:
            choice = ring?.pick(hash: hash) ?? 0
        case .maglev:
            choice = maglev?.pick(hash: hash) ?? 0
        }
        if tried != 0 && count > 1 {
            var probe = 0
            while probe < count {
                let candidate = members[(choice + probe) % count]
                if candidate.position >= 64 || tried & (1 << UInt64(candidate.position)) == 0 {
                    choice = (choice + probe) % count
                    break
                }
                probe += 1
            }
        }
        return members[choice]
    }
}

/// Outlier detection (SPEC §7): connect failures, resets, timeouts and 502/503/504 in a row eject
/// an endpoint for `base_ejection` × its ejection count, never more than `max_ejected_percent`
/// of the cluster at once; anything else resets the streak.
enum OutlierDetector {
    static func record(success: Bool, endpoint: EndpointRuntime, cluster: ClusterRuntime,
                       shared: SharedUpstreamState, now: Int64) {
        guard let outlier = cluster.policy.outlier else { return }
        if success {
            // A load before the store: a healthy endpoint's line is only ever read.
            if shared.load(endpoint.index, .consecutiveFailures) != 0 { shared.store(endpoint.index, .consecutiveFailures, 0) }
            return
        }
        let streak = shared.add(endpoint.index, .consecutiveFailures, 1)
        guard streak >= outlier.consecutiveFailures, !shared.isEjected(endpoint.index, now: now) else { return }
        var ejected = 0
        for member in cluster.endpoints where shared.isEjected(member.index, now: now) { ejected += 1 }
        guard (ejected + 1) * 100 <= outlier.maxEjectedPercent * cluster.endpoints.count else { return }
        let ejections = shared.add(endpoint.index, .ejections, 1)
        let until = now + outlier.baseEjection * Int64(min(ejections, 1000))
        let previous = shared.load(endpoint.index, .ejectedUntil)
        var expected = previous
        guard Int64(bitPattern: previous) <= now,
              catomic_cas(shared.pointer(endpoint.index, .ejectedUntil), &expected, UInt64(bitPattern: until)) else { return }
        shared.store(endpoint.index, .consecutiveFailures, 0)
        shared.bumpVersion(cluster: cluster.index)
        OperationalLog.warning("endpoint ejected", [
            "cluster": cluster.name.description, "endpoint": endpoint.labelString,
            "consecutive_failures": "\(streak)", "ejection_ms": "\((until - now) / 1_000_000)",
        ])
    }
}
