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
    let out = UnsafeMutableRawPointer(buffer.writePointer)
    var offset = 0
    while remaining >= 4 {
        let word = random.next()
        out.storeBytes(of: hexDigits(UInt32(truncatingIfNeeded: word)).littleEndian, toByteOffset: offset, as: UInt64.self)
        offset += 8
        remaining -= 4
        if remaining >= 4 {
            out.storeBytes(of: hexDigits(UInt32(truncatingIfNeeded: word >> 32)).littleEndian, toByteOffset: offset, as: UInt64.self)
            offset += 8
            remaining -= 4
        }
    }
    if remaining > 0 {
        var digits = hexDigits(UInt32(truncatingIfNeeded: random.next())).littleEndian
        for _ in 0..<(remaining * 2) {
            out.storeBytes(of: UInt8(truncatingIfNeeded: digits), toByteOffset: offset, as: UInt8.self)
            digits >>= 8
            offset += 1
        }
    }
    buffer.writerIndex += byteCount * 2
}

/// The eight lower-case hex digits of `value`, most significant first in memory order when
/// stored little-endian. Branch-free: random nibbles would mispredict a per-digit branch
/// about a third of the time.
@inline(__always)
func hexDigits(_ value: UInt32) -> UInt64 {
    // Spread the nibbles one per byte, the most significant nibble in the lowest byte.
    var x = UInt64(value.byteSwapped)
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF
    // Each byte now holds two nibbles in swapped order: high nibble goes first.
    let high = (x >> 4) & 0x000F_000F_000F_000F
    let low = x & 0x000F_000F_000F_000F
    let nibbles = high | (low << 8)
    // '0'...'9' = 0x30 + n; 'a'...'f' = 0x30 + n + 0x27.
    let letters = ((nibbles &+ 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101
    return nibbles &+ 0x3030_3030_3030_3030 &+ letters &* 0x27
}

/// Appends a random UUID v4 in its canonical 36-character form.
public func appendUUIDv4(_ buffer: ByteBuffer, _ random: inout FastRandom) {
    guard buffer.writableBytes >= 36 else { return }
    var high = random.next()
    var low = random.next()
    high = (high & ~0x0000_0000_0000_F000) | 0x0000_0000_0000_4000    // version 4
    low = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000        // RFC 4122 variant
    let out = UnsafeMutableRawPointer(buffer.writePointer)
    // 8-4-4-4-12
    let highDigits = hexDigits(UInt32(truncatingIfNeeded: high))
    let lowDigits = hexDigits(UInt32(truncatingIfNeeded: low >> 32))
    out.storeBytes(of: hexDigits(UInt32(truncatingIfNeeded: high >> 32)).littleEndian, toByteOffset: 0, as: UInt64.self)
    out.storeBytes(of: UInt8(ascii: "-"), toByteOffset: 8, as: UInt8.self)
    out.storeBytes(of: UInt32(truncatingIfNeeded: highDigits).littleEndian, toByteOffset: 9, as: UInt32.self)
    out.storeBytes(of: UInt8(ascii: "-"), toByteOffset: 13, as: UInt8.self)
    out.storeBytes(of: UInt32(truncatingIfNeeded: highDigits >> 32).littleEndian, toByteOffset: 14, as: UInt32.self)
    out.storeBytes(of: UInt8(ascii: "-"), toByteOffset: 18, as: UInt8.self)
    out.storeBytes(of: UInt32(truncatingIfNeeded: lowDigits).littleEndian, toByteOffset: 19, as: UInt32.self)
    out.storeBytes(of: UInt8(ascii: "-"), toByteOffset: 23, as: UInt8.self)
    out.storeBytes(of: UInt32(truncatingIfNeeded: lowDigits >> 32).littleEndian, toByteOffset: 24, as: UInt32.self)
    out.storeBytes(of: hexDigits(UInt32(truncatingIfNeeded: low)).littleEndian, toByteOffset: 28, as: UInt64.self)
    buffer.writerIndex += 36
}
