import OutriderCore

/// "Full jitter" exponential backoff (Marc Brooker, AWS Architecture Blog, "Exponential Backoff
/// and Jitter"): sleep a uniformly random time up to the exponential cap. Spreading retries over
/// the whole interval, rather than clustering them at the cap, is what stops synchronized clients
/// from hammering a recovering upstream in waves.
public enum FullJitterBackoff {
    /// The delay before retry number `retry` (1 = the first retry), uniform in
    /// `0...min(maxNanos, baseNanos × 2^(retry − 1))`, all in nanoseconds.
    ///
    /// The cap is computed without overflow for any `retry` (a shift that would pass `maxNanos`
    /// stops at `maxNanos`). `retry < 1` counts as 1; a non-positive base or max gives 0.
    @inlinable
    public static func delay(retry: Int, baseNanos: Int64, maxNanos: Int64, random: inout FastRandom) -> Int64 {
        let cap = cappedDelay(retry: retry, baseNanos: baseNanos, maxNanos: maxNanos)
        if cap <= 0 { return 0 }
        // cap + 1 ≤ Int64.max + 1 fits a UInt64; the multiply-high draw is uniform in 0...cap.
        let range = UInt64(cap) &+ 1
        return Int64(random.next().multipliedFullWidth(by: range).high)
    }

    /// `min(maxNanos, baseNanos × 2^(retry − 1))`, clamped at 0 from below.
    @inlinable @inline(__always)
    static func cappedDelay(retry: Int, baseNanos: Int64, maxNanos: Int64) -> Int64 {
        if baseNanos <= 0 || maxNanos <= 0 { return 0 }
        let doublings = retry > 1 ? retry &- 1 : 0
        // base << doublings stays ≤ max exactly when base ≤ max >> doublings.
        if doublings >= 63 || baseNanos > maxNanos &>> Int64(doublings) { return maxNanos }
        return baseNanos &<< Int64(doublings)
    }
}
