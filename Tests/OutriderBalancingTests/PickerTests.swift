import Testing
import OutriderCore
@testable import OutriderBalancing

@Suite("Random and least-request pickers")
struct PickerTests {
    @Test func randomIsEvenOverThreeMembers() {
        var random = FastRandom(seed: 0x5EED)
        var counts = [0, 0, 0]
        for _ in 0..<30_000 { counts[RandomPicker.pick(count: 3, random: &random)] += 1 }
        print("random over 3 members, 30k draws: \(counts)")
        #expect(counts.allSatisfy { $0 >= 9_500 && $0 <= 10_500 })
    }

    @Test func randomStaysInRange() {
        var random = FastRandom(seed: 1)
        for count in 1...33 {
            #expect((0..<2_000).allSatisfy { _ in (0..<count).contains(RandomPicker.pick(count: count, random: &random)) })
        }
        #expect((0..<100).allSatisfy { _ in RandomPicker.pick(count: 1, random: &random) == 0 })
        // The high word of draw × count: the largest draw maps to the last member, the smallest to 0.
        #expect(uniformIndex(below: 7, draw: .max) == 6)
        #expect(uniformIndex(below: 7, draw: 0) == 0)
    }

    @Test func leastRequestAvoidsTheLoadedMember() {
        var random = FastRandom(seed: 0xB0B)
        let active = [100, 0, 0]
        var counts = [0, 0, 0]
        for _ in 0..<10_000 { counts[LeastRequestPicker.pick(count: 3, random: &random) { active[$0] }] += 1 }
        print("least_request with in-flight \(active), 10k picks: \(counts)")
        #expect(counts[0] < 500)
        // The two idle members split the rest about evenly (ties go to the first drawn).
        #expect(abs(counts[1] - counts[2]) < 500)
    }

    @Test func leastRequestFollowsAGradient() {
        var random = FastRandom(seed: 3)
        let active = [30, 20, 10, 0]
        var counts = [0, 0, 0, 0]
        for _ in 0..<40_000 { counts[LeastRequestPicker.pick(count: 4, random: &random) { active[$0] }] += 1 }
        print("least_request with in-flight \(active), 40k picks: \(counts)")
        // With two distinct draws out of 4, member k wins when the other draw is busier:
        // P = (k's rank among the busier) / 6, i.e. 0, 1/6, 2/6, 3/6 from the busiest down.
        #expect(counts[0] == 0)
        #expect(counts[0] < counts[1] && counts[1] < counts[2] && counts[2] < counts[3])
        #expect(abs(Double(counts[3]) / 40_000 - 0.5) < 0.02)
    }

    @Test func leastRequestDrawsTwoDistinctMembers() {
        // With two members both are always compared, so the idle one always wins.
        var random = FastRandom(seed: 9)
        #expect((0..<1_000).allSatisfy { _ in LeastRequestPicker.pick(count: 2, random: &random) { [5, 0][$0] } == 1 })
        #expect((0..<1_000).allSatisfy { _ in LeastRequestPicker.pick(count: 2, random: &random) { [0, 5][$0] } == 0 })
    }

    @Test func leastRequestTiesSpreadEvenly() {
        var random = FastRandom(seed: 11)
        var counts = [0, 0, 0]
        for _ in 0..<30_000 { counts[LeastRequestPicker.pick(count: 3, random: &random) { _ in 4 }] += 1 }
        print("least_request with equal in-flight, 30k picks: \(counts)")
        #expect(counts.allSatisfy { $0 >= 9_500 && $0 <= 10_500 })
    }

    @Test func leastRequestStaysInRange() {
        var random = FastRandom(seed: 13)
        for count in 1...17 {
            var askedOutOfRange = false
            var askedSame = false
            for _ in 0..<2_000 {
                var asked: [Int] = []
                let pick = LeastRequestPicker.pick(count: count, random: &random) { member in
                    if !(0..<count).contains(member) { askedOutOfRange = true }
                    asked.append(member)
                    return member % 3
                }
                #expect((0..<count).contains(pick))
                if count == 1 { #expect(asked.isEmpty && pick == 0) }
                if asked.count == 2 && asked[0] == asked[1] { askedSame = true }
            }
            #expect(!askedOutOfRange)
            #expect(!askedSame)
        }
    }
}
