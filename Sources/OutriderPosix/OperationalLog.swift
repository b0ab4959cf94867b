import Glibc
import OutriderCore

/// Operational logs: one JSON object per line on stderr. Rare events only (start-up, errors,
/// shutdown), so plain Strings are fine here; a lock keeps lines whole across threads.
public enum OperationalLog {
    public enum Level: Int, Sendable, Comparable {
        case trace, debug, info, notice, warning, error, critical
        public static func < (lhs: Level, rhs: Level) -> Bool { lhs.rawValue < rhs.rawValue }
        var name: String {
            switch self {
            case .trace: return "trace"
            case .debug: return "debug"
            case .info: return "info"
            case .notice: return "notice"
            case .warning: return "warning"
            case .error: return "error"
            case .critical: return "critical"
            }
        }
    }

    nonisolated(unsafe) public static var minimumLevel: Level = .info
    nonisolated(unsafe) private static var lock: pthread_mutex_t = {
        var mutex = pthread_mutex_t()
        pthread_mutex_init(&mutex, nil)
        return mutex
    }()

    public static func log(_ level: Level, _ message: String, _ fields: KeyValuePairs<String, String> = [:]) {
        guard level >= minimumLevel else { return }
        var line = "{\"ts\":\"\(isoTimestamp())\",\"level\":\"\(level.name)\",\"msg\":\(jsonQuoted(message))"
        for (key, value) in fields { line += ",\(jsonQuoted(key)):\(jsonQuoted(value))" }
        line += "}\n"
        pthread_mutex_lock(&lock)
        var bytes = Array(line.utf8)
        Sys.writeAll(2, &bytes, bytes.count)
        pthread_mutex_unlock(&lock)
    }

    public static func info(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.info, message, fields) }
    public static func warning(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.warning, message, fields) }
    public static func error(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.error, message, fields) }
    public static func debug(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.debug, message, fields) }

    public static func isoTimestamp() -> String {
        let nanos = Sys.wallClockNanoseconds()
        var text = [UInt8](repeating: 0, count: 24)
        formatISOTimestamp(nanos, into: &text)
        return String(decoding: text, as: UTF8.self)
    }
}

/// Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 bytes) for a wall-clock time in nanoseconds.
public func formatISOTimestamp(_ nanos: Int64, into out: UnsafeMutablePointer<UInt8>) {
    let seconds = nanos / 1_000_000_000
    let millis = Int((nanos / 1_000_000) % 1000)
    var days = seconds / 86400
    let secondOfDay = Int(seconds % 86400)
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    days += 719_468
    let era = days / 146_097
    let dayOfEra = days - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
    var year = yearOfEra + era * 400
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let monthIndex = (5 * dayOfYear + 2) / 153
    let day = Int(dayOfYear - (153 * monthIndex + 2) / 5 + 1)
    let month = Int(monthIndex < 10 ? monthIndex + 3 : monthIndex - 9)
    if month <= 2 { year += 1 }
    @inline(__always) func put(_ value: Int, _ at: Int, _ width: Int) {
        var value = value
        for position in stride(from: at + width - 1, through: at, by: -1) {
            out[position] = UInt8(value % 10) + 0x30
            value /= 10
        }
    }
    put(Int(year), 0, 4); out[4] = UInt8(ascii: "-")
    put(month, 5, 2); out[7] = UInt8(ascii: "-")
    put(day, 8, 2); out[10] = UInt8(ascii: "T")
    put(secondOfDay / 3600, 11, 2); out[13] = UInt8(ascii: ":")
    put(secondOfDay / 60 % 60, 14, 2); out[16] = UInt8(ascii: ":")
    put(secondOfDay % 60, 17, 2); out[19] = UInt8(ascii: ".")
    put(millis, 20, 3); out[23] = UInt8(ascii: "Z")
}

public func formatISOTimestamp(_ nanos: Int64, into array: inout [UInt8]) {
    array.withUnsafeMutableBufferPointer { formatISOTimestamp(nanos, into: $0.baseAddress!) }
}
