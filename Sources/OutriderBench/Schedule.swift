/// Open-loop arithmetic (wrk2's model): the total rate is split evenly across the connections;
/// each connection sends at constant intervals of `connections / rate` seconds, and connection
/// `g` starts `g / rate` seconds after the run began, so together they send at exactly `rate`
/// per second, evenly spaced. A request's latency is measured from its *intended* send time:
/// when a connection is behind (the previous answer came late), it sends at once and the time
/// it waited counts, which is what corrects coordinated omission.
public struct OpenLoopSchedule: Sendable, Equatable {
    /// Nanoseconds between two sends of one connection.
    public let intervalNanos: Double
    /// Nanoseconds between the starts of consecutive connections.
    public let staggerNanos: Double

    public init(rate: Double, connections: Int) {
        intervalNanos = 1e9 * Double(connections) / rate
        staggerNanos = 1e9 / rate
    }

    /// Intended send time of request `k` (0-based) of connection `connection` (global index).
    /// Computed from `k` rather than by adding intervals, so rounding never accumulates.
    @inline(__always)
    public func intendedTime(start: Int64, connection: Int, request k: Int64) -> Int64 {
        start + Int64((Double(connection) * staggerNanos + Double(k) * intervalNanos).rounded(.down))
    }

    /// How many requests the whole run intends to send in `[start, start + duration)`.
    public func intendedCount(connections: Int, durationNanos: Int64) -> Int64 {
        var total: Int64 = 0
        for connection in 0..<connections {
            let offset = Double(connection) * staggerNanos
            if offset >= Double(durationNanos) { continue }
            total += Int64(((Double(durationNanos) - offset) / intervalNanos).rounded(.up))
        }
        return total
    }

    /// Latency of a request that completed at `completion` and was meant to go at `intended`:
    /// never negative (a send is never early, but clocks are read at loop granularity).
    @inline(__always)
    public static func correctedLatency(intended: Int64, completion: Int64) -> Int64 {
        max(0, completion - intended)
    }
}
