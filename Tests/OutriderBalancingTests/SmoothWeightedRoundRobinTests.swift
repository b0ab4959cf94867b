import Testing
import OutriderCore
@testable import OutriderBalancing

@Suite("Smooth weighted round robin")
struct SmoothWeightedRoundRobinTests {
    func picks(_ balancer: inout SmoothWeightedRoundRobin, _ count: Int) -> [Int] {
        (0..<count).map { _ in balancer.next() }
    }

    @Test func nginxSequenceForFiveOneOne() {
        // nginx's own example (ngx_http_upstream_round_robin.c): a a b a c a a, period after period.
        var balancer = SmoothWeightedRoundRobin(weights: [5, 1, 1])
        #expect(balancer.count == 3)
        #expect(picks(&balancer, 21) == Array(repeating: [0, 0, 1, 0, 2, 0, 0], count: 3).flatMap { $0 })
    }

    @Test func equalWeightsTakeTurns() {
        var balancer = SmoothWeightedRoundRobin(weights: [1, 1, 1, 1])
        #expect(picks(&balancer, 12) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
        var heavy = SmoothWeightedRoundRobin(weights: [7, 7, 7])
        #expect(picks(&heavy, 6) == [0, 1, 2, 0, 1, 2], "equal weights of any size are plain round robin")
        var counts = [0, 0, 0, 0]
        for _ in 0..<1000 { counts[balancer.next()] += 1 }
        #expect(counts == [250, 250, 250, 250])
    }

    @Test func everyPeriodHonoursTheWeightsExactly() {
        var balancer = SmoothWeightedRoundRobin(weights: [3, 2, 1])
        var counts = [0, 0, 0]
        for _ in 0..<600 { counts[balancer.next()] += 1 }
        #expect(counts == [300, 200, 100])
        // And within one period no member is picked twice in a row more than its weight needs.
        var fresh = SmoothWeightedRoundRobin(weights: [3, 2, 1])
        #expect(picks(&fresh, 6) == [0, 1, 0, 2, 1, 0])
    }

    @Test func aCommonFactorChangesNothing() {
        var reduced = SmoothWeightedRoundRobin(weights: [1, 2, 3])
        var scaled = SmoothWeightedRoundRobin(weights: [100, 200, 300])
        #expect(scaled.schedule.count == 6, "the schedule is one period of the reduced weights")
        #expect(picks(&reduced, 60) == picks(&scaled, 60))
    }

    @Test func oneMemberAlwaysWins() {
        var balancer = SmoothWeightedRoundRobin(weights: [42])
        #expect(picks(&balancer, 5) == [0, 0, 0, 0, 0])
    }

    /// The O(members) fallback for very long periods is nginx's loop itself; the recorded
    /// schedule must replay it exactly.
    @Test func recordedScheduleMatchesTheLoop() {
        var random = FastRandom(seed: 7)
        for round in 0..<50 {
            let weights = (0..<(1 + round % 9)).map { _ in 1 + Int(random.next() % 20) }
            var recorded = SmoothWeightedRoundRobin(weights: weights)
            var looped = SmoothWeightedRoundRobin(weights: weights, maximumScheduleLength: 0)
            #expect(!recorded.schedule.isEmpty && looped.schedule.isEmpty)
            #expect(recorded.count == weights.count && looped.count == weights.count)
            let total = weights.reduce(0, +)
            #expect(picks(&recorded, 3 * total) == picks(&looped, 3 * total), "weights \(weights)")
        }
    }

    @Test func longPeriodsFallBackToTheLoop() {
        // Co-prime weights summing past the schedule limit.
        let weights = [SmoothWeightedRoundRobin.maximumScheduleLength, 1, 2]
        var balancer = SmoothWeightedRoundRobin(weights: weights)
        #expect(balancer.schedule.isEmpty)
        var counts = [0, 0, 0]
        for _ in 0..<(weights.reduce(0, +)) { counts[balancer.next()] += 1 }
        #expect(counts == weights)
    }
}
