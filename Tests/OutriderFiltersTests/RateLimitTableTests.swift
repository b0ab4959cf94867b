import Dispatch
import Testing
@testable import OutriderFilters

@Suite("Rate-limit table")
struct RateLimitTableTests {
    @Test func burstThenRefill() {
        let table = RateLimitTable(requestsPerSecond: 10, burst: 3)
        let start: Int64 = 1_000_000_000
        let first = (0..<4).map { _ in table.acquire(key: 7, now: start).allowed }
        #expect(first == [true, true, true, false])
        #expect(table.acquire(key: 7, now: start).retryAfterSeconds == 1)
        #expect(table.acquire(key: 7, now: start + 100_000_000).allowed)      // one token after 100 ms
        #expect(!table.acquire(key: 7, now: start + 100_000_000).allowed)
        #expect(table.acquire(key: 8, now: start).allowed)                    // other keys are separate
    }

    /// Many threads on one key at once: exactly `burst` pass (no token counted twice or lost to
    /// a racing slot claim).
    @Test(arguments: 1...20)
    func exactUnderContention(_ round: Int) {
        let table = RateLimitTable(requestsPerSecond: 0.001, burst: 25)
        let now: Int64 = 5_000_000_000
        let passed = UnsafeMutablePointer<Int>.allocate(capacity: 8)
        passed.initialize(repeating: 0, count: 8)
        defer { passed.deallocate() }
        let box = PointerBox(passed)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for _ in 0..<20 where table.acquire(key: UInt64(1000 + round), now: now).allowed {
                box.pointer[worker] += 1
            }
        }
        #expect((0..<8).reduce(0) { $0 + passed[$1] } == 25)
    }

    @Test func memoryIsBoundedWithManyKeys() {
        let table = RateLimitTable(requestsPerSecond: 1, burst: 1, capacity: 64)
        var now: Int64 = 10_000_000_000
        for key in 1...10_000 {
            now += 2_000_000_000   // every earlier bucket is idle (full) again
            #expect(table.acquire(key: UInt64(key), now: now).allowed)
        }
    }
}

private struct PointerBox: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Int>
    init(_ pointer: UnsafeMutablePointer<Int>) { self.pointer = pointer }
}
