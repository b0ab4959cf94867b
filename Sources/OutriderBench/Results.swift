import Histogram

/// Socket errors by kind (SPEC §11 `errors`). `protocol` = an answer that is not HTTP/1.x (or
/// an HTTP/2 protocol violation); `reset` = an HTTP/2 stream the target reset or refused.
public enum ErrorKind: Int, CaseIterable, Sendable {
    case connect = 0, read, write, timeout, `protocol`, reset

    public var name: String {
        switch self {
        case .connect: return "connect"
        case .read: return "read"
        case .write: return "write"
        case .timeout: return "timeout"
        case .protocol: return "protocol"
        case .reset: return "reset"
        }
    }
}

/// Latency histogram in microseconds, 1 µs .. 60 s, 3 significant digits.
public typealias LatencyHistogram = Histogram<UInt64>

public enum LatencyRange {
    public static let lowestMicros: UInt64 = 1
    public static let highestMicros: UInt64 = 60_000_000
    public static func makeHistogram() -> LatencyHistogram {
        LatencyHistogram(lowestDiscernibleValue: lowestMicros, highestTrackableValue: highestMicros,
                         numberOfSignificantValueDigits: .three)
    }
}

/// What one thread measured. Written by its loop only; read by the main thread after join.
public final class ThreadStats: @unchecked Sendable {
    public var histogram = LatencyRange.makeHistogram()
    /// Responses by status code 0..<1000 (fixed size: no allocation when recording).
    public var statusCounts = [UInt64](repeating: 0, count: 1000)
    public var errors = [UInt64](repeating: 0, count: ErrorKind.allCases.count)
    public var requests: UInt64 = 0
    public var bytes: UInt64 = 0

    public init() {}

    /// Records one response's latency (nanoseconds); values beyond the range are clamped.
    @inline(__always)
    public func record(latencyNanos: Int64, status: Int) {
        var micros = UInt64(max(0, latencyNanos) / 1000)
        if micros < LatencyRange.lowestMicros { micros = LatencyRange.lowestMicros }
        if micros > LatencyRange.highestMicros { micros = LatencyRange.highestMicros }
        _ = histogram.record(micros)
        requests &+= 1
        statusCounts[status >= 0 && status < 1000 ? status : 0] &+= 1
    }
}

/// The merged result of a run, and its two renderings.
public struct Summary: Sendable {
    public var requests: UInt64 = 0
    public var durationNanos: Int64 = 0
    public var bytes: UInt64 = 0
    public var status: [(code: Int, count: UInt64)] = []
    public var errors: [(kind: ErrorKind, count: UInt64)] = ErrorKind.allCases.map { ($0, 0) }
    public var histogram = LatencyRange.makeHistogram()

    public init() {}

    /// Adds up the threads' figures (histograms merged with `add`).
    public static func merge(_ threads: [ThreadStats], durationNanos: Int64) -> Summary {
        var summary = Summary()
        summary.durationNanos = durationNanos
        var statusTotals = [UInt64](repeating: 0, count: 1000)
        var errorTotals = [UInt64](repeating: 0, count: ErrorKind.allCases.count)
        for stats in threads {
            summary.requests += stats.requests
            summary.bytes += stats.bytes
            summary.histogram.add(stats.histogram)
            for code in 0..<1000 { statusTotals[code] += stats.statusCounts[code] }
            for kind in 0..<errorTotals.count { errorTotals[kind] += stats.errors[kind] }
        }
        summary.status = (0..<1000).filter { statusTotals[$0] > 0 }.map { ($0, statusTotals[$0]) }
        summary.errors = ErrorKind.allCases.map { ($0, errorTotals[$0.rawValue]) }
        return summary
    }

    public var durationSeconds: Double { Double(durationNanos) / 1e9 }
    public var requestsPerSecond: Double { durationNanos > 0 ? Double(requests) / durationSeconds : 0 }
    public var bytesPerSecond: Double { durationNanos > 0 ? Double(bytes) / durationSeconds : 0 }
    public var errorTotal: UInt64 { errors.reduce(0) { $0 + $1.count } }

    /// Latency figures in milliseconds: p50, p90, p99, p99.9, max, mean (all 0 without samples).
    public var latencyMilliseconds: LatencyFigures {
        guard histogram.totalCount > 0 else { return LatencyFigures() }
        func ms(_ micros: UInt64) -> Double { Double(micros) / 1000 }
        return LatencyFigures(p50: ms(histogram.valueAtPercentile(50)), p90: ms(histogram.valueAtPercentile(90)),
                              p99: ms(histogram.valueAtPercentile(99)), p999: ms(histogram.valueAtPercentile(99.9)),
                              max: ms(histogram.max), mean: histogram.mean / 1000)
    }

    /// One JSON object with exactly the keys of SPEC §11.
    public func json() -> String {
        let latency = latencyMilliseconds
        let statusText = status.map { "\"\($0.code)\": \($0.count)" }.joined(separator: ", ")
        let errorText = errors.map { "\"\($0.kind.name)\": \($0.count)" }.joined(separator: ", ")
        return "{\"requests\": \(requests), \"duration_s\": \(fixed(durationSeconds, 6)), "
            + "\"rps\": \(fixed(requestsPerSecond, 2)), \"bytes_per_s\": \(fixed(bytesPerSecond, 1)), "
            + "\"status\": {\(statusText)}, \"errors\": {\(errorText)}, "
            + "\"latency_ms\": {\"p50\": \(fixed(latency.p50, 3)), \"p90\": \(fixed(latency.p90, 3)), "
            + "\"p99\": \(fixed(latency.p99, 3)), \"p999\": \(fixed(latency.p999, 3)), "
            + "\"max\": \(fixed(latency.max, 3)), \"mean\": \(fixed(latency.mean, 3))}}"
    }

    /// The human table.
    public func table(header: String) -> String {
        let latency = latencyMilliseconds
        var lines = [header]
        lines.append("  requests       \(requests)  (\(fixed(requestsPerSecond, 1)) req/s)")
        lines.append("  duration       \(fixed(durationSeconds, 3)) s")
        lines.append("  transfer       \(byteText(Double(bytes)))  (\(byteText(bytesPerSecond))/s)")
        let statusText = status.isEmpty ? "none" : status.map { "\($0.code): \($0.count)" }.joined(separator: ", ")
        lines.append("  status         \(statusText)")
        let errorText = errors.map { "\($0.kind.name) \($0.count)" }.joined(separator: ", ")
        lines.append("  errors         \(errorTotal)  (\(errorText))")
        lines.append("  latency (ms)   p50 \(fixed(latency.p50, 3))  p90 \(fixed(latency.p90, 3))  p99 \(fixed(latency.p99, 3))"
                     + "  p99.9 \(fixed(latency.p999, 3))  max \(fixed(latency.max, 3))  mean \(fixed(latency.mean, 3))")
        return lines.joined(separator: "\n")
    }
}

public struct LatencyFigures: Equatable, Sendable {
    public var p50 = 0.0, p90 = 0.0, p99 = 0.0, p999 = 0.0, max = 0.0, mean = 0.0
    public init() {}
    public init(p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double) {
        self.p50 = p50; self.p90 = p90; self.p99 = p99; self.p999 = p999; self.max = max; self.mean = mean
    }
}

/// `value` with exactly `digits` decimals (no Foundation); non-finite values print as 0.
public func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return digits > 0 ? "0." + String(repeating: "0", count: digits) : "0" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9e18 else { return String(value) }
    let whole = UInt64(scaled)
    let divisor = UInt64(scale)
    var text = (value < 0 && whole > 0 ? "-" : "") + String(whole / divisor)
    if digits > 0 {
        let fraction = String(whole % divisor)
        text += "." + String(repeating: "0", count: digits - fraction.count) + fraction
    }
    return text
}

/// Bytes in B, KiB, MiB or GiB with two decimals.
public func byteText(_ bytes: Double) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = bytes
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(fixed(value, 0)) B" : "\(fixed(value, 2)) \(units[unit])"
}
