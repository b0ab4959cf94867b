import Testing
@testable import OutriderBalancing

@Test func fnv1aMatchesKnownVectors() {
    let empty: [UInt8] = []
    #expect(empty.withUnsafeBufferPointer { fnv1a64($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, 0) } == 0xCBF2_9CE4_8422_2325)
    let a = Array("a".utf8)
    #expect(a.withUnsafeBufferPointer { fnv1a64($0.baseAddress!, $0.count) } == 0xAF63_DC4C_8601_EC8C)
}

@Test func balancingHashIsStableAcrossBuilds() {
    // Pinned: a change would remap every hashed session after an upgrade.
    #expect(hashOf("a") == 0x82A2_A958_A9BE_CE5B)
    #expect(hashOf("") == 0xEFD0_1F60_BA99_2926)
    #expect(hashOf("10.0.0.1:8080") == 0xE8C7_2115_6ED5_2B14)
    #expect(murmurFinalize64(0) == 0)
}

@Test func balancingHashSpreadsNearbyKeys() {
    // "user-0" … "user-9999" differ in their last bytes only; their hashes must still fill the
    // top bits evenly (the ring and Maglev index by them).
    var topNibbleCounts = [Int](repeating: 0, count: 16)
    for index in 0..<10_000 { topNibbleCounts[Int(hashOf("user-\(index)") >> 60)] += 1 }
    #expect(topNibbleCounts.allSatisfy { $0 > 625 - 100 && $0 < 625 + 100 }, "\(topNibbleCounts)")

    // Avalanche: flipping one input bit flips about half of the output bits.
    var flippedBits = 0
    var trials = 0
    for index in 0..<200 {
        var bytes = Array("key-\(index)".utf8)
        let original = bytes.withUnsafeBufferPointer { balancingHash($0.baseAddress!, $0.count) }
        for bit in 0..<(bytes.count * 8) {
            bytes[bit / 8] ^= 1 << UInt8(bit % 8)
            let flipped = bytes.withUnsafeBufferPointer { balancingHash($0.baseAddress!, $0.count) }
            bytes[bit / 8] ^= 1 << UInt8(bit % 8)
            flippedBits += (original ^ flipped).nonzeroBitCount
            trials += 1
        }
    }
    let average = Double(flippedBits) / Double(trials)
    print("balancingHash avalanche: \(format(average, digits: 2)) of 64 output bits flip per input bit")
    #expect(average > 31 && average < 33)
}
