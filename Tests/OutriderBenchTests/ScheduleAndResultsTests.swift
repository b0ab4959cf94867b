import Histogram
import Testing
@testable import OutriderBench

@Suite("open-loop schedule")
struct ScheduleTests {
    @Test func connectionsInterleaveAtTheTotalRate() {
        let schedule = OpenLoopSchedule(rate: 1000, connections: 4)
        #expect(schedule.intervalNanos == 4_000_000)
        #expect(schedule.staggerNanos == 1_000_000)
        // Merged over the connections, sends are exactly 1 ms apart.
        var times: [Int64] = []
        for connection in 0..<4 {
            for k in 0..<5 { times.append(schedule.intendedTime(start: 100, connection: connection, request: Int64(k))) }
        }
        times.sort()
        #expect(times.first == 100)
        for index in 1..<times.count { #expect(times[index] - times[index - 1] == 1_000_000) }
    }

    @Test func noDriftOverLongRuns() {
        let schedule = OpenLoopSchedule(rate: 3, connections: 7)   // interval 2.333… s
        let late = schedule.intendedTime(start: 0, connection: 0, request: 3_000_000)
        #expect(late == 7_000_000_000_000_000)
    }

    @Test func intendedCounts() {
        let schedule = OpenLoopSchedule(rate: 1000, connections: 10)
        #expect(schedule.intendedCount(connections: 10, durationNanos: 5_000_000_000) == 5000)
        let odd = OpenLoopSchedule(rate: 200, connections: 3)
        #expect(odd.intendedCount(connections: 3, durationNanos: 5_000_000_000) == 1000)
        let sparse = OpenLoopSchedule(rate: 2, connections: 8)    // some connections never start
        #expect(sparse.intendedCount(connections: 8, durationNanos: 1_000_000_000) == 2)
    }

    @Test func correctedLatencyCountsTheWait() {
        // Meant to go at 1.000 s, sent late at 1.400 s, answered at 1.401 s: 401 ms, not 1 ms.
        #expect(OpenLoopSchedule.correctedLatency(intended: 1_000_000_000, completion: 1_401_000_000) == 401_000_000)
        #expect(OpenLoopSchedule.correctedLatency(intended: 5, completion: 3) == 0)
    }
}

@Suite("results")
struct ResultsTests {
    @Test func mergeAddsThreads() {
        let first = ThreadStats(), second = ThreadStats()
        for _ in 0..<900 { first.record(latencyNanos: 1_000_000, status: 200) }     // 1 ms
        for _ in 0..<98 { second.record(latencyNanos: 10_000_000, status: 503) }    // 10 ms
        for _ in 0..<2 { second.record(latencyNanos: 500_000_000, status: 200) }    // 500 ms
        first.errors[ErrorKind.timeout.rawValue] = 2
        second.errors[ErrorKind.read.rawValue] = 3
        second.errors[ErrorKind.reset.rawValue] = 4
        first.bytes = 1000
        second.bytes = 24
        let summary = Summary.merge([first, second], durationNanos: 2_000_000_000)
        #expect(summary.requests == 1000)
        #expect(summary.histogram.totalCount == 1000)
        #expect(summary.status.map(\.code) == [200, 503])
        #expect(summary.status.map(\.count) == [902, 98])
        #expect(summary.errors.map(\.kind.name) == ["connect", "read", "write", "timeout", "protocol", "reset"])
        #expect(summary.errors.map(\.count) == [0, 3, 0, 2, 0, 4])
        #expect(summary.requestsPerSecond == 500)
        #expect(summary.bytesPerSecond == 512)
        let latency = summary.latencyMilliseconds
        #expect(abs(latency.p50 - 1) < 0.01)
        #expect(abs(latency.p90 - 1) < 0.01)
        #expect(abs(latency.p99 - 10) < 0.1)
        #expect(abs(latency.p999 - 500) < 1)
        #expect(abs(latency.max - 500) < 1)
        #expect(abs(latency.mean - (900 * 1 + 98 * 10 + 2 * 500) / 1000.0) < 0.05)
    }

    @Test func clampsOutOfRangeLatencies() {
        let stats = ThreadStats()
        stats.record(latencyNanos: 0, status: 200)
        stats.record(latencyNanos: 120_000_000_000, status: 200)   // 2 minutes
        #expect(stats.histogram.totalCount == 2)
        #expect(stats.histogram.max >= 59_000_000)
    }

    @Test func jsonHasTheSpecKeys() {
        let stats = ThreadStats()
        stats.record(latencyNanos: 2_500_000, status: 200)
        let json = Summary.merge([stats], durationNanos: 1_000_000_000).json()
        for key in ["\"requests\": 1", "\"duration_s\": 1.000000", "\"rps\": 1.00", "\"bytes_per_s\": 0.0",
                    "\"status\": {\"200\": 1}", "\"errors\": {\"connect\": 0, \"read\": 0, \"write\": 0, \"timeout\": 0, \"protocol\": 0, \"reset\": 0}",
                    "\"latency_ms\": {\"p50\": 2.", "\"p90\"", "\"p99\"", "\"p999\"", "\"max\"", "\"mean\""] {
            #expect(json.contains(key), "\(key) in \(json)")
        }
        let empty = Summary.merge([], durationNanos: 0).json()
        #expect(empty.contains("\"rps\": 0.00") && empty.contains("\"status\": {}") && empty.contains("\"p50\": 0.000"))
    }

    @Test func fixedDecimals() {
        #expect(fixed(1.23456, 3) == "1.235")
        #expect(fixed(0, 2) == "0.00")
        #expect(fixed(12, 0) == "12")
        #expect(fixed(0.0005, 3) == "0.001")
        #expect(fixed(-2.5, 1) == "-2.5")
        #expect(fixed(.nan, 2) == "0.00")
        #expect(fixed(999.9996, 3) == "1000.000")
        #expect(byteText(512) == "512 B")
        #expect(byteText(1536) == "1.50 KiB")
        #expect(byteText(3 * 1024 * 1024) == "3.00 MiB")
    }
}

@Suite("timer heap")
struct TimerHeapTests {
    @Test func popsInTimeOrder() {
        var heap = TimerHeap(capacity: 64)
        var random = [Int64]()
        var state: UInt64 = 12345
        for index in 0..<64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let time = Int64(state >> 40)
            random.append(time)
            heap.push(time, Int32(index))
        }
        var popped: [Int64] = []
        while let entry = heap.pop() { popped.append(entry.time) }
        #expect(popped == random.sorted())
    }
}
