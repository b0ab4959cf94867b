import Testing
@testable import OutriderBalancing

@Test func fnv1aMatchesKnownVectors() {
    let empty: [UInt8] = []
    #expect(empty.withUnsafeBufferPointer { fnv1a64($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, 0) } == 0xCBF2_9CE4_8422_2325)
    let a = Array("a".utf8)
    #expect(a.withUnsafeBufferPointer { fnv1a64($0.baseAddress!, $0.count) } == 0xAF63_DC4C_8601_EC8C)
}
