import OutriderCore

/// Uniformly random member choice: the `random` policy, and the draws of the least-request
/// picker.
public enum RandomPicker {
    /// A member index in `0..<count`, by Lemire's multiply-high rather than a modulo (no divide;
    /// bias at most `count / 2⁶⁴`). `count == 1` always answers 0 but still consumes one draw.
    ///
    /// - Precondition: `count >= 1`.
    @inlinable @inline(__always)
    public static func pick(count: Int, random: inout FastRandom) -> Int {
        assert(count >= 1, "picking from an empty set of members")
        return uniformIndex(below: count, draw: random.next())
    }
}

/// Envoy's `least_request` with its default choice count of 2 ("power of two choices",
/// Mitzenmacher): draw two distinct members at random and take the one with fewer requests in
/// flight. Almost as good as scanning every member for the least loaded, in O(1), and it does
/// not herd every worker onto the same momentarily idle member as a full scan would.
public enum LeastRequestPicker {
    /// A member index in `0..<count`. `activeRequests(i)` is member i's in-flight count; it is
    /// called for the two drawn members only (not at all when `count == 1`). On a tie the first
    /// drawn wins, which is itself uniformly random, so equal loads spread evenly.
    ///
    /// - Precondition: `count >= 1`.
    @inlinable
    public static func pick(count: Int, random: inout FastRandom, activeRequests: (Int) -> Int) -> Int {
        assert(count >= 1, "picking from an empty set of members")
        if count == 1 { return 0 }
        let first = uniformIndex(below: count, draw: random.next())
        // Draw from the other count − 1 members, then step over `first`: distinct and uniform.
        var second = uniformIndex(below: count &- 1, draw: random.next())
        if second >= first { second &+= 1 }
        return activeRequests(second) < activeRequests(first) ? second : first
    }
}
