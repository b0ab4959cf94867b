import Testing
import OutriderCore
@testable import OutriderBalancing

@Suite("Full-jitter backoff")
struct BackoffTests {
    static let base: Int64 = 25_000_000        // 25 ms, SPEC §7's example
    static let max: Int64 = 250_000_000        // 250 ms

    @Test func delaysStayUnderTheDoublingCap() {
        var random = FastRandom(seed: 21)
        for retry in 1...8 {
            let cap = Swift.min(Self.max, Self.base << Int64(retry - 1))
            var largest: Int64 = 0
            for _ in 0..<10_000 {
                let delay = FullJitterBackoff.delay(retry: retry, baseNanos: Self.base, maxNanos: Self.max, random: &random)
                #expect(delay >= 0 && delay <= cap)
                largest = Swift.max(largest, delay)
            }
            // The whole range is used: the biggest of 10k draws is close to the cap.
            #expect(largest > cap / 100 * 99, "retry \(retry)")
        }
    }

    @Test func meanIsHalfTheCap() {
        var random = FastRandom(seed: 22)
        for (retry, cap) in [(1, Self.base), (3, 4 * Self.base), (20, Self.max)] {
            var sum = 0.0
            let draws = 100_000
            for _ in 0..<draws {
                sum += Double(FullJitterBackoff.delay(retry: retry, baseNanos: Self.base, maxNanos: Self.max, random: &random))
            }
            let meanOverHalfCap = sum / Double(draws) / (Double(cap) / 2)
            print("full jitter retry \(retry): mean / (cap/2) = \(format(meanOverHalfCap))")
            #expect(abs(meanOverHalfCap - 1) < 0.02)
        }
    }

    @Test func hugeRetryNumbersHitTheMaximumWithoutTrapping() {
        var random = FastRandom(seed: 23)
        for retry in [62, 63, 64, 65, 1_000, Int.max] {
            #expect(FullJitterBackoff.cappedDelay(retry: retry, baseNanos: Self.base, maxNanos: Self.max) == Self.max)
            let delay = FullJitterBackoff.delay(retry: retry, baseNanos: Self.base, maxNanos: Self.max, random: &random)
            #expect(delay >= 0 && delay <= Self.max)
        }
        // A maximum of Int64.max: the cap is the largest doubling that fits.
        #expect(FullJitterBackoff.cappedDelay(retry: 63, baseNanos: 1, maxNanos: .max) == 1 << 62)
        #expect(FullJitterBackoff.cappedDelay(retry: 64, baseNanos: 1, maxNanos: .max) == .max)
        #expect(FullJitterBackoff.cappedDelay(retry: 40, baseNanos: .max, maxNanos: .max) == .max)
        _ = FullJitterBackoff.delay(retry: .max, baseNanos: .max, maxNanos: .max, random: &random)
    }

    @Test func edgeCases() {
        var random = FastRandom(seed: 24)
        #expect(FullJitterBackoff.cappedDelay(retry: 0, baseNanos: Self.base, maxNanos: Self.max) == Self.base)
        #expect(FullJitterBackoff.cappedDelay(retry: -5, baseNanos: Self.base, maxNanos: Self.max) == Self.base)
        #expect(FullJitterBackoff.cappedDelay(retry: 1, baseNanos: 500, maxNanos: 100) == 100, "max wins over base")
        #expect(FullJitterBackoff.delay(retry: 3, baseNanos: 0, maxNanos: Self.max, random: &random) == 0)
        #expect(FullJitterBackoff.delay(retry: 3, baseNanos: Self.base, maxNanos: 0, random: &random) == 0)
        #expect(FullJitterBackoff.delay(retry: 3, baseNanos: -1, maxNanos: -1, random: &random) == 0)
    }
}
