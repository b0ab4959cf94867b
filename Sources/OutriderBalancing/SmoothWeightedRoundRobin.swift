/// nginx's smooth weighted round robin over members `0..<weights.count`.
///
/// Each step adds every member's weight to its running score, picks the highest score (the
/// first on ties) and takes the total weight off the winner. The picks interleave instead of
/// bursting: weights `[5, 1, 1]` give `0 0 1 0 2 0 0`, not `0 0 0 0 0 1 2`.
///
/// That loop is O(members) per pick, so `init` runs it once for a whole period and `next()` only
/// walks the recorded schedule (O(1), nothing written but the cursor). The sequence repeats
/// after `Σweights / gcd(weights)` picks, because after that many steps every score is back to
/// zero. Only when a period would exceed `maximumScheduleLength` entries (weights in the
/// thousands across many members) does `next()` fall back to nginx's loop over the members.
///
/// One per worker (a value with a cursor); copies share the schedule without copying it.
public struct SmoothWeightedRoundRobin: Sendable {
    /// Longest period recorded (64 KiB of `UInt32`); longer ones use the O(members) loop.
    public static let maximumScheduleLength = 16_384

    /// One period of picks; empty in the fallback mode.
    @usableFromInline let schedule: [UInt32]
    @usableFromInline var cursor: Int = 0

    /// Fallback mode only: the weights (divided by their gcd) and nginx's running scores.
    @usableFromInline let reducedWeights: [Int]
    @usableFromInline var scores: [Int]
    @usableFromInline let reducedTotal: Int

    /// - Precondition: `weights` is not empty, every weight is ≥ 1 and their sum fits an `Int`.
    public init(weights: [Int]) {
        self.init(weights: weights, maximumScheduleLength: Self.maximumScheduleLength)
    }

    /// `maximumScheduleLength` is a parameter so tests can drive the fallback loop.
    init(weights: [Int], maximumScheduleLength: Int) {
        precondition(!weights.isEmpty, "smooth weighted round robin needs at least one member")
        precondition(weights.allSatisfy { $0 >= 1 }, "every weight must be at least 1")
        // Scaling all weights by one factor scales every score by it too, so dividing by the
        // gcd keeps the exact sequence while shortening the period.
        let divisor = weights.reduce(0) { greatestCommonDivisor($0, $1) }
        let reduced = weights.map { $0 / divisor }
        var total = 0
        for weight in reduced {
            let (sum, overflow) = total.addingReportingOverflow(weight)
            precondition(!overflow, "the sum of the weights overflows Int")
            total = sum
        }
        reducedTotal = total
        count = weights.count

        if total <= maximumScheduleLength {
            var scores = [Int](repeating: 0, count: reduced.count)
            var schedule = [UInt32]()
            schedule.reserveCapacity(total)
            reduced.withUnsafeBufferPointer { weights in
                scores.withUnsafeMutableBufferPointer { scores in
                    for _ in 0..<total {
                        schedule.append(UInt32(Self.step(weights: weights, scores: scores, total: total)))
                    }
                }
            }
            self.schedule = schedule
            self.reducedWeights = []
            self.scores = []
        } else {
            self.schedule = []
            self.reducedWeights = reduced
            self.scores = [Int](repeating: 0, count: reduced.count)
        }
    }

    /// How many members (`weights.count`).
    public let count: Int

    /// The next member index. O(1) with a recorded schedule; no allocation either way (the
    /// fallback writes the scores in place; only a copy of this value that shares them pays one
    /// copy on its first call).
    @inlinable
    public mutating func next() -> Int {
        if !schedule.isEmpty {
            let member = schedule.withUnsafeBufferPointer { $0[cursor] }
            cursor &+= 1
            if cursor == schedule.count { cursor = 0 }
            return Int(member)
        }
        let total = reducedTotal
        return reducedWeights.withUnsafeBufferPointer { weights in
            scores.withUnsafeMutableBufferPointer { scores in
                Self.step(weights: weights, scores: scores, total: total)
            }
        }
    }

    /// One step of nginx's `ngx_http_upstream_get_peer`: raise every score by its weight, pick
    /// the highest (the first on ties), lower it by the total.
    @inlinable @inline(__always)
    static func step(weights: UnsafeBufferPointer<Int>, scores: UnsafeMutableBufferPointer<Int>, total: Int) -> Int {
        var best = 0
        var bestScore = Int.min
        var index = 0
        let count = weights.count
        while index < count {
            let score = scores[index] &+ weights[index]
            scores[index] = score
            if score > bestScore {
                best = index
                bestScore = score
            }
            index &+= 1
        }
        scores[best] = bestScore &- total
        return best
    }
}

func greatestCommonDivisor(_ first: Int, _ second: Int) -> Int {
    var (a, b) = (first, second)
    while b != 0 { (a, b) = (b, a % b) }
    return a
}
