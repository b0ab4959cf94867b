/// Maglev consistent hashing (Eisenbud et al., NSDI 2016; Envoy's `maglev`): a lookup table of
/// `tableSize` slots, each naming a member, so a pick is one multiply and one load.
///
/// Each member walks its own permutation of the slots, `(offset + j × skip) mod M`, with offset
/// and skip from two independent hashes of its key (skip in `1..<M`, so for a prime `M` the walk
/// visits every slot). The members take turns claiming the next free slot of their walk until
/// the table is full, which gives every member ⌊M/N⌋ or ⌈M/N⌉ slots: near-perfect balance.
/// Because a member's walk depends only on its key, a membership change leaves most slots
/// alone; unlike the ring, a few slots do change hands between members that stayed (the paper's
/// "minimal disruption" is approximate), in exchange for O(1) picks and exact balance.
///
/// Members take turns in the order of their keys, not their indices, so the table depends on
/// the set of keys only.
public struct MaglevTable: Sendable {
    /// `slots[s]` is the member index owning slot s.
    @usableFromInline let slots: [UInt32]

    /// How many members the table was built for.
    public let memberCount: Int

    /// Builds the table: O(M log M) expected for M slots; build it off the request path and share
    /// it between workers (M = 65537 takes 256 KiB).
    ///
    /// - Parameters:
    ///   - memberKeys: a stable identity for member i (the proxy passes `fnv1a64("HOST:PORT")`);
    ///     keys should be distinct. When empty, the table is empty and must not be picked from.
    ///   - tableSize: a prime; for good balance well above the member count (Maglev suggests
    ///     ≥ 100 × N). With more members than slots, the members after the first `tableSize` in
    ///     key order get no slot.
    public init(memberKeys: [UInt64], tableSize: Int = 65537) {
        precondition(tableSize >= 2 && isPrime(tableSize), "the Maglev table size must be a prime")
        precondition(tableSize <= Int(UInt32.max) && memberKeys.count < Int(UInt32.max), "table too large")
        memberCount = memberKeys.count
        guard !memberKeys.isEmpty else {
            slots = []
            return
        }
        let size = UInt64(tableSize)
        let order = memberKeys.indices.sorted { (memberKeys[$0], $0) < (memberKeys[$1], $1) }
        // Per member, in turn order: its position in its walk and its step.
        var position = order.map { Self.offset(memberKey: memberKeys[$0], tableSize: size) }
        let skip = order.map { Self.skip(memberKey: memberKeys[$0], tableSize: size) }

        let unclaimed = UInt32.max
        var table = [UInt32](repeating: unclaimed, count: tableSize)
        var filled = 0
        fill: while true {
            for turn in order.indices {
                var slot = position[turn]
                while table[Int(slot)] != unclaimed {
                    slot = Self.advance(slot, by: skip[turn], tableSize: size)
                }
                table[Int(slot)] = UInt32(order[turn])
                position[turn] = Self.advance(slot, by: skip[turn], tableSize: size)
                filled += 1
                if filled == tableSize { break fill }
            }
        }
        slots = table
    }

    static func offset(memberKey: UInt64, tableSize: UInt64) -> UInt64 {
        splitMix64(memberKey) % tableSize
    }

    static func skip(memberKey: UInt64, tableSize: UInt64) -> UInt64 {
        murmurFinalize64(memberKey ^ 0x5851_F42D_4C95_7F2D) % (tableSize - 1) + 1
    }

    @inline(__always)
    static func advance(_ slot: UInt64, by skip: UInt64, tableSize: UInt64) -> UInt64 {
        let next = slot + skip           // both < tableSize ≤ 2³², no overflow
        return next >= tableSize ? next - tableSize : next
    }

    /// The number of slots (the prime `tableSize`), or 0 for an empty table.
    public var tableSize: Int { slots.count }

    /// The member owning `hash`'s slot. The slot is the high word of `hash × M` rather than
    /// `hash mod M`: as uniform for a well-mixed hash, without a 64-bit divide. O(1).
    ///
    /// - Precondition: the table has members (`memberCount >= 1`).
    @inlinable
    public func pick(hash: UInt64) -> Int {
        precondition(!slots.isEmpty, "picking from an empty Maglev table")
        return slots.withUnsafeBufferPointer { slots in
            Int(slots[uniformIndex(below: slots.count, draw: hash)])
        }
    }
}

func isPrime(_ number: Int) -> Bool {
    if number < 2 { return false }
    if number < 4 { return true }
    if number % 2 == 0 { return false }
    var divisor = 3
    while divisor * divisor <= number {
        if number % divisor == 0 { return false }
        divisor += 2
    }
    return true
}
