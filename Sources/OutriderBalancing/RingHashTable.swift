/// Consistent hashing on a ring (Karger et al.; ketama; Envoy's `ring_hash`).
///
/// Every member places the same number of points ("virtual nodes") on a 64-bit circle; a
/// request hash belongs to the first point at or after it, wrapping at the top. Point `r` of a
/// member is `splitMix64(seed + (r + 1) × γ)` with `seed = splitMix64(memberKey)`: it depends
/// on that member's key alone, never on its index or on the other members. So adding a member
/// only takes over the arcs in front of its own points (≈ 1/N of the keys, all moving to it),
/// and removing one hands only its keys to the next points along.
///
/// How many points per member: `minimumRingSize` each (the ring then holds `count ×
/// minimumRingSize` points, never fewer than the minimum), lowered only when that would pass
/// `maximumRingSize` (to `maximumRingSize / count`, at least one). What matters is that the
/// number does not depend on the member count until the maximum bites (8192 members at the
/// defaults). Envoy instead spreads a fixed total, `ceil(minimumRingSize / count)` points each,
/// so every membership change also changes every member's points and hands keys between
/// members that did not change; measured over 100k keys at the default 1024, growing from 5 to
/// 6 members moves 25% of the keys (ideal 1/6 ≈ 16.7%), 7 → 8 moves 20% (ideal 12.5%), and
/// with 50 members the busiest gets 1.8× its share. With 1024 points each, the same changes
/// move 17% and 13%, only to the newcomer, and shares stay within ±11% at 50 members. The
/// price is memory, 12 bytes per point: 12 KiB per member, shared by the workers.
///
/// Points that collide are ordered by member key, so the table depends on the set of keys and
/// not on the order they are listed in.
public struct RingHashTable: Sendable {
    /// The points, ascending; `pointMembers[i]` owns `pointHashes[i]`. Two arrays rather than
    /// one of pairs so the binary search touches only hashes (eight per cache line).
    @usableFromInline let pointHashes: [UInt64]
    @usableFromInline let pointMembers: [UInt32]

    /// How many members the ring was built for.
    public let memberCount: Int
    /// Points per member (`minimumRingSize` unless `maximumRingSize` forced fewer).
    public let pointsPerMember: Int

    /// Builds the ring; O(P log P) for P points, so build it off the request path (on a config
    /// or membership change) and share the value between workers.
    ///
    /// - Parameters:
    ///   - memberKeys: a stable identity for member i (the proxy passes `fnv1a64("HOST:PORT")`);
    ///     keys should be distinct. May be empty, giving an empty ring that must not be picked from.
    ///   - minimumRingSize: at least 1.
    ///   - maximumRingSize: at least `minimumRingSize`.
    public init(memberKeys: [UInt64], minimumRingSize: Int = 1024, maximumRingSize: Int = 8_388_608) {
        precondition(minimumRingSize >= 1, "minimumRingSize must be at least 1")
        precondition(maximumRingSize >= minimumRingSize, "maximumRingSize must be at least minimumRingSize")
        precondition(memberKeys.count <= Int(UInt32.max), "too many members")
        let points = memberKeys.isEmpty ? 1 : Self.pointsPerMember(
            memberCount: memberKeys.count, minimumRingSize: minimumRingSize, maximumRingSize: maximumRingSize)
        self.init(memberKeys: memberKeys, pointsPerMember: points)
    }

    /// A ring with exactly `pointsPerMember` points for every member (also how the tests build
    /// Envoy's layout to compare).
    init(memberKeys: [UInt64], pointsPerMember: Int) {
        precondition(pointsPerMember >= 1)
        memberCount = memberKeys.count
        self.pointsPerMember = memberKeys.isEmpty ? 0 : pointsPerMember
        guard !memberKeys.isEmpty else {
            pointHashes = []
            pointMembers = []
            return
        }
        var points: [(hash: UInt64, key: UInt64, member: UInt32)] = []
        points.reserveCapacity(memberKeys.count * pointsPerMember)
        for (member, key) in memberKeys.enumerated() {
            for replica in 0..<pointsPerMember {
                points.append((Self.pointHash(memberKey: key, replica: replica), key, UInt32(member)))
            }
        }
        points.sort { ($0.hash, $0.key, $0.member) < ($1.hash, $1.key, $1.member) }
        pointHashes = points.map(\.hash)
        pointMembers = points.map(\.member)
    }

    /// `minimumRingSize`, or fewer when `memberCount` of them would pass `maximumRingSize`.
    static func pointsPerMember(memberCount: Int, minimumRingSize: Int, maximumRingSize: Int) -> Int {
        min(minimumRingSize, max(1, maximumRingSize / memberCount))
    }

    /// Point `replica` of the member with key `memberKey`: a splitmix64 stream seeded by the
    /// mixed key, so members' streams do not overlap even for keys that differ by a little.
    static func pointHash(memberKey: UInt64, replica: Int) -> UInt64 {
        let seed = splitMix64(memberKey)
        return splitMix64(seed &+ UInt64(replica + 1) &* splitMixIncrement)
    }

    /// The total number of points.
    public var ringSize: Int { pointHashes.count }

    /// The member owning `hash`: the first point at or after it, or the lowest point when `hash`
    /// is past the highest. O(log ring size), no allocation.
    ///
    /// - Precondition: the ring has members (`memberCount >= 1`).
    @inlinable
    public func pick(hash: UInt64) -> Int {
        precondition(!pointHashes.isEmpty, "picking from an empty ring")
        let index = pointHashes.withUnsafeBufferPointer { hashes -> Int in
            var low = 0
            var high = hashes.count
            while low < high {
                let middle = Int(bitPattern: UInt(bitPattern: low &+ high) &>> 1)
                if hashes[middle] < hash { low = middle &+ 1 } else { high = middle }
            }
            return low == hashes.count ? 0 : low
        }
        return pointMembers.withUnsafeBufferPointer { Int($0[index]) }
    }
}
