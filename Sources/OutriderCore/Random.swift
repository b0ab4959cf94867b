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
    guard buffer.writableBytes >= byteCount * 2 else { return }
    var remaining = byteCount
    var out = buffer.writePointer
    while remaining > 0 {
        let word = random.next()
        let take = min(8, remaining)
        writeHex(word, nibbles: take * 2, to: out)
        out += take * 2
        remaining -= take
    }
    buffer.writerIndex += byteCount * 2
}

/// Writes the low `nibbles` hex digits of `word`, most significant first.
@inline(__always)
func writeHex(_ word: UInt64, nibbles: Int, to out: UnsafeMutablePointer<UInt8>) {
    var value = word
    var index = nibbles - 1
    while index >= 0 {
        let nibble = UInt8(truncatingIfNeeded: value & 0xF)
        out[index] = nibble < 10 ? nibble &+ 0x30 : nibble &+ 0x57
        value >>= 4
        index -= 1
    }
}

/// Appends a random UUID v4 in its canonical 36-character form.
public func appendUUIDv4(_ buffer: ByteBuffer, _ random: inout FastRandom) {
    guard buffer.writableBytes >= 36 else { return }
    var high = random.next()
    var low = random.next()
    high = (high & ~0x0000_0000_0000_F000) | 0x0000_0000_0000_4000    // version 4
    low = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000        // RFC 4122 variant
    let out = buffer.writePointer
    // 8-4-4-4-12
    writeHex(high >> 32, nibbles: 8, to: out)
    out[8] = UInt8(ascii: "-")
    writeHex(high >> 16, nibbles: 4, to: out + 9)
    out[13] = UInt8(ascii: "-")
    writeHex(high, nibbles: 4, to: out + 14)
    out[18] = UInt8(ascii: "-")
    writeHex(low >> 48, nibbles: 4, to: out + 19)
    out[23] = UInt8(ascii: "-")
    writeHex(low, nibbles: 12, to: out + 24)
    buffer.writerIndex += 36
}
