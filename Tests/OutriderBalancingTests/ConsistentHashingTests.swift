import Testing
import OutriderCore
@testable import OutriderBalancing

/// The properties the `ring_hash` and `maglev` policies are chosen for, run against both.
@Suite("Consistent hashing")
struct ConsistentHashingTests {
    static let fiveKeys = (0..<5).map(endpointKey)
    static let sixKeys = (0..<6).map(endpointKey)

    // MARK: (a) same key, same member

    @Test func ringSameKeySameMemberAcrossRebuilds() { sameKeySameMember(RingHashTable.self) }
    @Test func maglevSameKeySameMemberAcrossRebuilds() { sameKeySameMember(MaglevTable.self) }

    /// Rebuilt from the same keys, even listed in another order, every request keeps its member.
    func sameKeySameMember<Table: MemberTable>(_: Table.Type) {
        let keys = Self.sixKeys
        let first = owners(Table(keys: keys), keys: keys)
        let again = owners(Table(keys: keys), keys: keys)
        let shuffledKeys = [keys[3], keys[5], keys[0], keys[4], keys[1], keys[2]]
        let shuffled = owners(Table(keys: shuffledKeys), keys: shuffledKeys)
        #expect(first == again)
        #expect(first == shuffled)
    }

    // MARK: (b) adding a member

    @Test func ringAddingAMemberMovesOnlyItsShareToIt() {
        // The new member goes in the middle of the list: indices shift, identities do not.
        let after = Array(Self.fiveKeys[0..<2]) + [endpointKey(5)] + Array(Self.fiveKeys[2...])
        let remap = Remap(before: owners(RingHashTable(keys: Self.fiveKeys), keys: Self.fiveKeys),
                          after: owners(RingHashTable(keys: after), keys: after))
        print("ring_hash 5→6 members: moved \(remap) (ideal 1/6 = \(format(1.0 / 6)))")
        #expect(remap.fraction >= 0.5 / 6 && remap.fraction <= 1.6 / 6)
        #expect(remap.movedTo.keys.elementsEqual([endpointKey(5)]), "every moved key moved to the new member")
    }

    @Test func maglevAddingAMemberMovesAboutItsShare() {
        let after = Self.fiveKeys + [endpointKey(5)]
        let remap = Remap(before: owners(MaglevTable(keys: Self.fiveKeys), keys: Self.fiveKeys),
                          after: owners(MaglevTable(keys: after), keys: after))
        let toNew = remap.movedTo[endpointKey(5), default: 0]
        let between = remap.moved - toNew
        print("maglev 5→6 members: moved \(remap) (ideal 1/6 = \(format(1.0 / 6))); "
              + "to the new member \(toNew), between old members \(between) "
              + "(\(format(Double(between) / Double(remap.total))) of all keys)")
        #expect(remap.fraction >= 0.5 / 6 && remap.fraction <= 1.6 / 6)
        // Maglev's disruption is approximate: a few slots change hands between members that
        // stayed. Most of the movement must still be onto the new member.
        #expect(Double(toNew) >= 0.85 * Double(remap.moved))
        #expect(Double(between) / Double(remap.total) < 0.03)
    }

    // MARK: (c) removing a member

    @Test func ringRemovingAMemberMovesExactlyItsKeys() {
        let keys = Self.sixKeys
        let removed = keys[3]
        let remaining = keys.filter { $0 != removed }
        let before = owners(RingHashTable(keys: keys), keys: keys)
        let after = owners(RingHashTable(keys: remaining), keys: remaining)
        let remap = Remap(before: before, after: after)
        let ownedByRemoved = before.filter { $0 == removed }.count
        print("ring_hash 6→5 members: moved \(remap), the removed member owned \(ownedByRemoved)")
        #expect(remap.movedFrom.keys.elementsEqual([removed]), "only the removed member's keys moved")
        #expect(remap.moved == ownedByRemoved, "and all of them")
    }

    @Test func maglevRemovingAMemberMovesItsKeysAndLittleElse() {
        let keys = Self.sixKeys
        let removed = keys[3]
        let remaining = keys.filter { $0 != removed }
        let before = owners(MaglevTable(keys: keys), keys: keys)
        let after = owners(MaglevTable(keys: remaining), keys: remaining)
        let remap = Remap(before: before, after: after)
        let ownedByRemoved = before.filter { $0 == removed }.count
        print("maglev 6→5 members: moved \(remap), the removed member owned \(ownedByRemoved) "
              + "(\(format(Double(ownedByRemoved) / Double(remap.total))))")
        #expect(remap.movedFrom[removed] == ownedByRemoved, "every key of the removed member moved")
        #expect(remap.fraction < 2.0 / 6)
    }

    // MARK: (d) balance

    @Test(arguments: [2, 3, 5, 6, 10])
    func ringBalanceWithTheDefaultSize(memberCount: Int) {
        let keys = (0..<memberCount).map(endpointKey)
        let table = RingHashTable(memberKeys: keys)
        let shares = relativeShares(owners(table, keys: keys), keys: keys)
        print("ring_hash \(memberCount) members, \(table.ringSize) points: share / fair from "
              + "\(format(shares.min()!)) to \(format(shares.max()!))")
        #expect(shares.allSatisfy { $0 >= 0.75 && $0 <= 1.25 })
    }

    @Test(arguments: [2, 3, 5, 6, 10])
    func maglevBalance(memberCount: Int) {
        let keys = (0..<memberCount).map(endpointKey)
        let table = MaglevTable(memberKeys: keys)
        let shares = relativeShares(owners(table, keys: keys), keys: keys)
        print("maglev \(memberCount) members: share / fair from \(format(shares.min()!)) to \(format(shares.max()!))")
        #expect(shares.allSatisfy { $0 >= 0.95 && $0 <= 1.05 })
        // The table itself is as even as it can be: ⌊M/N⌋ or ⌈M/N⌉ slots each.
        var slotCounts = [Int](repeating: 0, count: memberCount)
        for member in table.slots { slotCounts[Int(member)] += 1 }
        let floorShare = table.tableSize / memberCount
        #expect(slotCounts.allSatisfy { $0 == floorShare || $0 == floorShare + 1 })
        #expect(slotCounts.reduce(0, +) == table.tableSize)
    }

    // MARK: ring details

    @Test func ringPointsPerMemberDoNotDependOnTheMemberCount() {
        for count in [1, 2, 5, 6, 100, 8192] {
            #expect(RingHashTable.pointsPerMember(memberCount: count, minimumRingSize: 1024, maximumRingSize: 8_388_608) == 1024)
        }
        // The maximum wins over the minimum, but every member keeps one point.
        #expect(RingHashTable.pointsPerMember(memberCount: 8193, minimumRingSize: 1024, maximumRingSize: 8_388_608) == 1023)
        #expect(RingHashTable.pointsPerMember(memberCount: 3, minimumRingSize: 1024, maximumRingSize: 1024) == 341)
        #expect(RingHashTable.pointsPerMember(memberCount: 3, minimumRingSize: 2, maximumRingSize: 2) == 1)
        for count in 1...12 {
            let table = RingHashTable(memberKeys: (0..<count).map(endpointKey), minimumRingSize: 64)
            #expect(table.memberCount == count)
            #expect(table.pointsPerMember == 64 && table.ringSize == 64 * count)
        }
    }

    /// Why every member gets `minimumRingSize` points instead of Envoy's `ceil(minimum / count)`:
    /// with the latter, each membership change reshuffles keys between members that stayed.
    @Test(arguments: [(5, 6), (7, 8), (20, 21)])
    func ringChurnComparedWithEnvoysLayout(from: Int, to: Int) {
        let before = (0..<from).map(endpointKey)
        let after = (0..<to).map(endpointKey)
        func envoyRing(_ keys: [UInt64]) -> RingHashTable {
            RingHashTable(memberKeys: keys, pointsPerMember: (1024 + keys.count - 1) / keys.count)
        }
        let ours = Remap(before: owners(RingHashTable(keys: before), keys: before),
                         after: owners(RingHashTable(keys: after), keys: after))
        let envoys = Remap(before: owners(envoyRing(before), keys: before), after: owners(envoyRing(after), keys: after))
        let envoyShares = relativeShares(owners(envoyRing(after), keys: after), keys: after)
        let ourShares = relativeShares(owners(RingHashTable(keys: after), keys: after), keys: after)
        print("ring_hash \(from)→\(to) members: ideal \(format(1 / Double(to))); 1024 points each moved \(ours), "
              + "shares \(format(ourShares.min()!, digits: 2))…\(format(ourShares.max()!, digits: 2)); "
              + "Envoy's ceil(1024/N) moved \(envoys), shares \(format(envoyShares.min()!, digits: 2))…\(format(envoyShares.max()!, digits: 2))")
        #expect(ours.movedTo.keys.elementsEqual([endpointKey(to - 1)]))
        #expect(ours.fraction < envoys.fraction)
        #expect(abs(ours.fraction * Double(to) - 1) < 0.15)
    }

    @Test func ringBalanceWithManyMembers() {
        let keys = (0..<50).map(endpointKey)
        let shares = relativeShares(owners(RingHashTable(keys: keys), keys: keys), keys: keys)
        print("ring_hash 50 members: share / fair from \(format(shares.min()!)) to \(format(shares.max()!))")
        #expect(shares.allSatisfy { $0 >= 0.75 && $0 <= 1.25 })
    }

    @Test func ringWrapsPastTheHighestPoint() {
        let keys = Self.sixKeys
        let table = RingHashTable(memberKeys: keys)
        let lowestOwner = Int(table.pointMembers[0])
        #expect(table.pointHashes == table.pointHashes.sorted())
        #expect(table.pick(hash: table.pointHashes.last! &+ 1) == lowestOwner || table.pointHashes.last! == .max)
        #expect(table.pick(hash: 0) == lowestOwner)
        #expect(table.pick(hash: table.pointHashes[0]) == lowestOwner, "a hash on a point belongs to that point")
        #expect(table.pick(hash: table.pointHashes[1]) == Int(table.pointMembers[1]))
        #expect(table.pick(hash: table.pointHashes[1] &- 1) == Int(table.pointMembers[1]))
        #expect((0..<keys.count).contains(table.pick(hash: .max)))
    }

    @Test func singleMemberAlwaysWins() {
        let ring = RingHashTable(memberKeys: [endpointKey(7)])
        let maglev = MaglevTable(memberKeys: [endpointKey(7)])
        let hashes = requestHashes.prefix(1000) + [0, .max]
        #expect(hashes.allSatisfy { ring.pick(hash: $0) == 0 })
        #expect(hashes.allSatisfy { maglev.pick(hash: $0) == 0 })
    }

    @Test func emptyTablesAreEmpty() {
        let ring = RingHashTable(memberKeys: [])
        let maglev = MaglevTable(memberKeys: [])
        #expect(ring.memberCount == 0 && ring.ringSize == 0)
        #expect(maglev.memberCount == 0 && maglev.tableSize == 0)
    }

    @Test func maglevTableSizeIsTheGivenPrime() {
        let table = MaglevTable(memberKeys: Self.sixKeys, tableSize: 251)
        #expect(table.tableSize == 251 && table.memberCount == 6)
        #expect(Set(table.slots) == Set(0..<6))
        #expect([2, 3, 5, 251, 65537].allSatisfy(isPrime))
        #expect(![0, 1, 4, 9, 65535, 65539 * 3].contains(where: isPrime))
    }

    @Test func picksStayInRange() {
        for count in 1...12 {
            let keys = (0..<count).map(endpointKey)
            let ring = RingHashTable(memberKeys: keys, minimumRingSize: 64)
            let maglev = MaglevTable(memberKeys: keys, tableSize: 1009)
            let hashes = requestHashes.prefix(2000) + [0, .max]
            #expect(hashes.allSatisfy { (0..<count).contains(ring.pick(hash: $0)) })
            #expect(hashes.allSatisfy { (0..<count).contains(maglev.pick(hash: $0)) })
        }
    }
}
