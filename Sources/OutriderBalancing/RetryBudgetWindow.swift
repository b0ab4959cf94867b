/// A retry budget (Finagle's and Linkerd's idea, SPEC §7): retries may add at most `ratio` of the
/// original requests seen lately, plus a floor of `minPerSecond` so a quiet service can still
/// retry. Unlike a fixed retry count per request, a budget bounds the extra load retries put on
/// an upstream that is failing everything, which is when retry storms start.
///
/// "Lately" is a sliding window of `windowSeconds` one-second buckets (the current second and
/// the ones before it); a bucket's counts expire as a whole when the clock leaves the window. A
/// retry is allowed while `retries < ratio × requests + minPerSecond × windowSeconds` over the
/// window. The comparison is done in integer millionths, so `ratio: 0.2` over 100 requests
/// allows exactly 20 retries (in `Double`, 0.2 × 100 is 20.000000000000004).
///
/// Not thread-safe and not shared: one per worker per cluster, mutated in place (the proxy gives
/// each worker `minPerSecond / workers`). Every call is O(1): at most `windowSeconds` buckets are
/// cleared when the clock moves on, and nothing is allocated.
public struct RetryBudgetWindow: Sendable {
    @usableFromInline static let scale: Int64 = 1_000_000

    /// `ratio` and the window's floor in millionths.
    @usableFromInline let ratioMillionths: Int64
    @usableFromInline let floorMillionths: Int64
    @usableFromInline let windowSeconds: Int

    /// Per-second counts; second `s` lives in bucket `s mod windowSeconds`.
    @usableFromInline var requestBuckets: [Int64]
    @usableFromInline var retryBuckets: [Int64]
    /// Sums of the buckets, kept up to date so a check reads two numbers.
    @usableFromInline var requestsInWindow: Int64 = 0
    @usableFromInline var retriesInWindow: Int64 = 0
    /// The second the newest bucket stands for.
    @usableFromInline var currentSecond: Int64 = 0

    /// - Precondition: `ratio >= 0`, `minPerSecond >= 0`, `windowSeconds >= 1`.
    public init(ratio: Double, minPerSecond: Double, windowSeconds: Int = 10) {
        precondition(ratio >= 0 && ratio.isFinite, "the retry budget ratio must be a finite number ≥ 0")
        precondition(minPerSecond >= 0 && minPerSecond.isFinite, "minPerSecond must be a finite number ≥ 0")
        precondition(windowSeconds >= 1, "the window must be at least one second")
        let limit = Double(Int64.max / 4)
        ratioMillionths = Int64(min(limit, (ratio * Double(Self.scale)).rounded()))
        floorMillionths = Int64(min(limit, (minPerSecond * Double(windowSeconds) * Double(Self.scale)).rounded()))
        self.windowSeconds = windowSeconds
        requestBuckets = [Int64](repeating: 0, count: windowSeconds)
        retryBuckets = [Int64](repeating: 0, count: windowSeconds)
    }

    /// The original requests and the retries counted in the window as of `now`.
    public mutating func counts(now: Int64) -> (requests: Int64, retries: Int64) {
        advance(to: now)
        return (requestsInWindow, retriesInWindow)
    }

    /// Counts an original request (not a retry) at `now`, monotonic nanoseconds.
    @inlinable
    public mutating func recordRequest(now: Int64) {
        advance(to: now)
        let bucket = bucketIndex(currentSecond)
        requestBuckets[bucket] &+= 1
        requestsInWindow &+= 1
    }

    /// Whether a retry fits the budget at `now`; when it does it is counted, when it does not
    /// nothing changes.
    @inlinable
    public mutating func tryAcquireRetry(now: Int64) -> Bool {
        advance(to: now)
        guard retryFits else { return false }
        let bucket = bucketIndex(currentSecond)
        retryBuckets[bucket] &+= 1
        retriesInWindow &+= 1
        return true
    }

    /// `retries < ratio × requests + floor`, scaled by a million on both sides. A product too
    /// large for Int64 means the budget is effectively unlimited.
    @inlinable
    var retryFits: Bool {
        let (used, usedOverflow) = retriesInWindow.multipliedReportingOverflow(by: Self.scale)
        let (earned, earnedOverflow) = requestsInWindow.multipliedReportingOverflow(by: ratioMillionths)
        if earnedOverflow { return true }
        let (allowed, allowedOverflow) = earned.addingReportingOverflow(floorMillionths)
        if allowedOverflow { return true }
        if usedOverflow { return false }
        return used < allowed
    }

    @inlinable @inline(__always)
    func bucketIndex(_ second: Int64) -> Int {
        Int(second % Int64(windowSeconds))
    }

    /// Moves the window so its newest bucket is `now`'s second, clearing the buckets of the
    /// seconds it leaves behind. A clock that goes backwards stays in the current bucket.
    @inlinable
    mutating func advance(to now: Int64) {
        let second = max(0, now) / 1_000_000_000
        if second <= currentSecond { return }
        if second - currentSecond >= Int64(windowSeconds) {
            for bucket in 0..<windowSeconds {
                requestBuckets[bucket] = 0
                retryBuckets[bucket] = 0
            }
            requestsInWindow = 0
            retriesInWindow = 0
        } else {
            var leaving = currentSecond + 1
            while leaving <= second {
                // The bucket second `leaving` will use still holds second `leaving − window`.
                let bucket = bucketIndex(leaving)
                requestsInWindow &-= requestBuckets[bucket]
                retriesInWindow &-= retryBuckets[bucket]
                requestBuckets[bucket] = 0
                retryBuckets[bucket] = 0
                leaving += 1
            }
        }
        currentSecond = second
    }
}
