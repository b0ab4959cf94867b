import CAtomics
import OutriderCore
import OutriderHTTP

/// SPEC §5: a token bucket per key, exact for the whole process. Each key's bucket is one
/// 64-bit "theoretical arrival time" (GCRA, the token bucket's equivalent form) in a table
/// shared by the workers and updated with compare-and-swap: no lock, and no worker sees a
/// share of the rate only.
public final class RateLimitTable: @unchecked Sendable {
    private let mask: Int
    private let keys: UnsafeMutablePointer<UInt64>
    private let arrivals: UnsafeMutablePointer<UInt64>
    /// Nanoseconds one token stands for.
    let interval: UInt64
    let burst: UInt64
    private static let probe = 8

    public init(requestsPerSecond: Double, burst: Int, capacity: Int = 65536) {
        var size = 1
        while size < capacity { size <<= 1 }
        mask = size - 1
        keys = .allocate(capacity: size)
        keys.initialize(repeating: 0, count: size)
        arrivals = .allocate(capacity: size)
        arrivals.initialize(repeating: 0, count: size)
        interval = UInt64(max(1, (1_000_000_000 / requestsPerSecond).rounded()))
        self.burst = UInt64(max(1, burst))
    }

    deinit {
        keys.deallocate()
        arrivals.deallocate()
    }

    public struct Decision {
        public var allowed: Bool
        public var remaining: UInt64
        /// Seconds until the bucket is full again.
        public var resetSeconds: UInt64
        /// Seconds until one more request would pass (when denied).
        public var retryAfterSeconds: UInt64
    }

    /// Takes one token for `key` (a non-zero hash) at monotonic time `now` (nanoseconds).
    public func acquire(key: UInt64, now rawNow: Int64) -> Decision {
        let now = UInt64(max(1, rawNow))
        let slot = findSlot(key, now)
        let capacity = burst * interval
        var arrival = catomic_load(arrivals + slot)
        while true {
            let start = max(arrival, now)
            let next = start + interval
            if next - now > capacity {
                let wait = next - now - capacity
                return Decision(allowed: false, remaining: 0, resetSeconds: ceilSeconds(start - now),
                                retryAfterSeconds: max(1, ceilSeconds(wait)))
            }
            var expected = arrival
            if catomic_cas(arrivals + slot, &expected, next) {
                return Decision(allowed: true, remaining: (capacity - (next - now)) / interval,
                                resetSeconds: ceilSeconds(next - now), retryAfterSeconds: 0)
            }
            arrival = expected
        }
    }

    /// The slot for `key`: its own, a free one claimed, or the most idle one of the probe
    /// window taken over (memory stays bounded however many keys there are).
    private func findSlot(_ key: UInt64, _ now: UInt64) -> Int {
        let home = Int(truncatingIfNeeded: key) & mask
        var idlest = home
        var idlestArrival = UInt64.max
        for step in 0..<Self.probe {
            let index = (home + step) & mask
            var current = catomic_load(keys + index)
            if current == key { return index }
            if current == 0 {
                // A free slot's arrival time is in the past: its bucket is full, as a new key's
                // must be. (Resetting it here would race with another worker already counting.)
                if catomic_cas(keys + index, &current, key) { return index }
                if current == key { return index }
            }
            let arrival = catomic_load(arrivals + index)
            if arrival < idlestArrival {
                idlestArrival = arrival
                idlest = index
            }
        }
        // A bucket whose arrival time has passed is full: taking it over loses nothing, and
        // its arrival time needs no reset (max(arrival, now) starts the new key full).
        if idlestArrival <= now {
            var current = catomic_load(keys + idlest)
            _ = catomic_cas(keys + idlest, &current, key)
        }
        return idlest
    }

    private func ceilSeconds(_ nanos: UInt64) -> UInt64 { (nanos + 999_999_999) / 1_000_000_000 }
}

public final class RateLimitFilter: HTTPFilter, @unchecked Sendable {
    public enum Key: Sendable {
        case clientIP
        case header(ByteString)
        case identity
    }

    public var kind: StaticString { "rate_limit" }
    let table: RateLimitTable
    let key: Key
    let seed: UInt64
    /// Called for each request refused (metrics).
    public var onLimited: (@Sendable () -> Void)?

    public init(requestsPerSecond: Double, burst: Int, key: Key, seed: UInt64) {
        table = RateLimitTable(requestsPerSecond: requestsPerSecond, burst: burst)
        self.key = key
        self.seed = seed | 1
    }

    public func decodeHeaders(_ context: FilterContext) -> FilterVerdict {
        var hash: UInt64
        switch key {
        case .clientIP:
            hash = hashBytes(context.bytes(context.clientIPRange))
        case .header(let name):
            // No such header: the client's address is the key (a missing header is no way
            // around the limit).
            if let value = context.headerValue(name) { hash = hashBytes(value) ^ 0x5bd1_e995 } else { hash = hashBytes(context.bytes(context.clientIPRange)) }
        case .identity:
            if let identity = context.identity { hash = hashBytes(context.bytes(identity)) ^ 0x2545_f491 } else { hash = hashBytes(context.bytes(context.clientIPRange)) }
        }
        if hash == 0 { hash = 1 }
        let decision = table.acquire(key: hash, now: context.monotonicNow)
        let scratch = context.scratch
        let start = scratch.writerIndex
        scratch.append("ratelimit-limit: ")
        scratch.appendDecimal(Int64(table.burst))
        scratch.append("\r\nratelimit-remaining: ")
        scratch.appendDecimal(Int64(decision.remaining))
        scratch.append("\r\nratelimit-reset: ")
        scratch.appendDecimal(Int64(decision.resetSeconds))
        scratch.append("\r\n")
        context.rateLimitLines = start..<scratch.writerIndex
        if decision.allowed { return .proceed }
        let headerStart = scratch.writerIndex
        scratch.append("retry-after: ")
        scratch.appendDecimal(Int64(decision.retryAfterSeconds))
        scratch.append("\r\n")
        context.reply = FilterReply(status: 429, reason: .rateLimited, headerLines: headerStart..<scratch.writerIndex)
        onLimited?()
        return .respond
    }

    /// A seeded 64-bit hash (keys come from clients: the seed keeps collisions unpredictable).
    @inline(__always)
    func hashBytes(_ bytes: (UnsafePointer<UInt8>, Int)) -> UInt64 {
        var hash = seed ^ (UInt64(bytes.1) &* 0x9E37_79B9_7F4A_7C15)
        var index = 0
        while index + 8 <= bytes.1 {
            let word = UnsafeRawPointer(bytes.0 + index).loadUnaligned(as: UInt64.self)
            hash = (hash ^ word) &* 0xFF51_AFD7_ED55_8CCD
            hash ^= hash >> 32
            index += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while index < bytes.1 {
            tail |= UInt64(bytes.0[index]) << shift
            shift += 8
            index += 1
        }
        hash = (hash ^ tail) &* 0xC4CE_B9FE_1A85_EC53
        hash ^= hash >> 29
        hash = hash &* 0xFF51_AFD7_ED55_8CCD
        hash ^= hash >> 32
        return hash
    }
}
