import Testing
@testable import OutriderBalancing

@Suite("Retry budget window")
struct RetryBudgetWindowTests {
    static let second: Int64 = 1_000_000_000

    func acquired(_ budget: inout RetryBudgetWindow, now: Int64, attempts: Int) -> Int {
        (0..<attempts).filter { _ in budget.tryAcquireRetry(now: now) }.count
    }

    @Test func ratioOfRequests() {
        var budget = RetryBudgetWindow(ratio: 0.2, minPerSecond: 0)
        let now = 5 * Self.second
        let withNothingSeen = budget.tryAcquireRetry(now: now)
        #expect(!withNothingSeen, "no requests, no floor: no retries")
        for _ in 0..<100 { budget.recordRequest(now: now) }
        #expect(acquired(&budget, now: now, attempts: 20) == 20)
        #expect(acquired(&budget, now: now, attempts: 10) == 0)
        #expect(budget.counts(now: now) == (100, 20), "refused retries are not counted")
        // Each request earns a fifth of a retry: the 21st fits once 20 < 0.2 × requests.
        budget.recordRequest(now: now)
        #expect(acquired(&budget, now: now, attempts: 5) == 1, "20 < 0.2 × 101")
        for _ in 0..<4 { budget.recordRequest(now: now) }
        #expect(acquired(&budget, now: now, attempts: 5) == 0, "21 ≮ 0.2 × 105")
        budget.recordRequest(now: now)
        #expect(acquired(&budget, now: now, attempts: 5) == 1, "21 < 0.2 × 106")
    }

    @Test func bucketsOlderThanTheWindowExpire() {
        var budget = RetryBudgetWindow(ratio: 0.2, minPerSecond: 0)
        let start = 100 * Self.second
        for _ in 0..<100 { budget.recordRequest(now: start) }
        #expect(acquired(&budget, now: start, attempts: 30) == 20)
        let later = start + 11 * Self.second
        #expect(budget.counts(now: later) == (0, 0))
        for _ in 0..<100 { budget.recordRequest(now: later) }
        #expect(acquired(&budget, now: later, attempts: 30) == 20, "the budget is refreshed")
    }

    @Test func theWindowSlidesOneSecondAtATime() {
        var budget = RetryBudgetWindow(ratio: 1, minPerSecond: 0, windowSeconds: 10)
        let start = 40 * Self.second + 300_000_000
        for _ in 0..<10 { budget.recordRequest(now: start) }                     // second 40
        for _ in 0..<5 { budget.recordRequest(now: start + 3 * Self.second) }    // second 43
        // Second 49 still sees second 40; second 50 does not.
        #expect(budget.counts(now: 49 * Self.second + 999_999_999) == (15, 0))
        #expect(budget.counts(now: 50 * Self.second) == (5, 0))
        #expect(budget.counts(now: 52 * Self.second) == (5, 0))
        #expect(budget.counts(now: 53 * Self.second) == (0, 0))

        // A steady 10 requests a second settles at 100 in the window.
        for tick in 0..<30 {
            for _ in 0..<10 { budget.recordRequest(now: (60 + Int64(tick)) * Self.second) }
        }
        #expect(budget.counts(now: 89 * Self.second) == (100, 0))
        #expect(acquired(&budget, now: 89 * Self.second, attempts: 150) == 100)
    }

    @Test func floorWithoutRequests() {
        var budget = RetryBudgetWindow(ratio: 0.2, minPerSecond: 10)
        let now = 3 * Self.second
        #expect(acquired(&budget, now: now, attempts: 150) == 100, "10/s over a 10 s window")
        #expect(acquired(&budget, now: now + 11 * Self.second, attempts: 150) == 100)
    }

    @Test func ratioAndFloorAdd() {
        var budget = RetryBudgetWindow(ratio: 0.5, minPerSecond: 1)
        for _ in 0..<10 { budget.recordRequest(now: 0) }
        #expect(acquired(&budget, now: 0, attempts: 50) == 15)
    }

    @Test func fractionalBudgetsRoundUp() {
        // retries < 2.5 lets the third one through.
        var budget = RetryBudgetWindow(ratio: 0, minPerSecond: 0.25)
        #expect(acquired(&budget, now: Self.second, attempts: 10) == 3)
        // A per-worker share of a small floor still allows something over the window.
        var share = RetryBudgetWindow(ratio: 0.2, minPerSecond: 10.0 / 3)
        #expect(acquired(&share, now: Self.second, attempts: 100) == 34)
    }

    @Test func aClockGoingBackwardsStaysInTheCurrentBucket() {
        var budget = RetryBudgetWindow(ratio: 1, minPerSecond: 0)
        for _ in 0..<4 { budget.recordRequest(now: 20 * Self.second) }
        for _ in 0..<4 { budget.recordRequest(now: 12 * Self.second) }
        #expect(budget.counts(now: 15 * Self.second) == (8, 0))
        #expect(budget.counts(now: 29 * Self.second) == (8, 0))
        #expect(budget.counts(now: 30 * Self.second) == (0, 0))
    }

    @Test func oneSecondWindow() {
        var budget = RetryBudgetWindow(ratio: 0.5, minPerSecond: 0, windowSeconds: 1)
        for _ in 0..<4 { budget.recordRequest(now: 7 * Self.second) }
        #expect(acquired(&budget, now: 7 * Self.second + 500, attempts: 5) == 2)
        #expect(budget.counts(now: 8 * Self.second) == (0, 0))
    }
}
