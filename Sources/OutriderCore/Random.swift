/// A fast per-thread PRNG (wyrand) for request ids, trace ids and load-balancing choices.
/// Seeded from the kernel; not for secrets.
public struct FastRandom {
    private var state: UInt64

    public init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }

    @inline(__always)
    public mutating func next() -> UInt64 {
        state &+= 0xA076_1D64_78BD_642F
        let product = state.multipliedFullWidth(by: state ^ 0xE703_7ED1_A0B4_28DB)
        return product.high ^ product.low
    }
}

/// Appends `byteCount` random bytes as lower-case hex.
@inline(__always)
public func appendRandomHex(_ buffer: ByteBuffer, _ random: inout FastRandom, byteCount: Int) {
    let digits: StaticString = "0123456789abcdef"
    var remaining = byteCount
    while remaining > 0 {
        var word = random.next()
        let take = min(8, remaining)
        for _ in 0..<take {
            buffer.append(digits.utf8Start[Int(word & 0xF)])
            buffer.append(digits.utf8Start[Int((word >> 4) & 0xF)])
            word >>= 8
        }
        remaining -= take
    }
}

/// Appends a random UUID v4 in its canonical 36-character form.
public func appendUUIDv4(_ buffer: ByteBuffer, _ random: inout FastRandom) {
    let digits: StaticString = "0123456789abcdef"
    var high = random.next()
    var low = random.next()
    high = (high & ~0x0000_0000_0000_F000) | 0x0000_0000_0000_4000    // version 4
    low = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000        // RFC 4122 variant
    var nibbleIndex = 0
    @inline(__always) func emit(_ word: UInt64) {
        for shift in stride(from: 60, through: 0, by: -4) {
            if nibbleIndex == 8 || nibbleIndex == 12 || nibbleIndex == 16 || nibbleIndex == 20 {
                buffer.append(UInt8(ascii: "-"))
            }
            buffer.append(digits.utf8Start[Int((word >> UInt64(shift)) & 0xF)])
            nibbleIndex += 1
        }
    }
    emit(high)
    emit(low)
}
