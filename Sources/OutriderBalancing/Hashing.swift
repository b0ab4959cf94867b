/// 64-bit FNV-1a: stable across runs and machines, so a hash key maps to the same endpoint in
/// every worker and after a restart.
@inlinable @inline(__always)
public func fnv1a64(_ bytes: UnsafePointer<UInt8>, _ count: Int, seed: UInt64 = 0xCBF2_9CE4_8422_2325) -> UInt64 {
    var hash = seed
    var index = 0
    while index < count {
        hash ^= UInt64(bytes[index])
        hash = hash &* 0x0000_0100_0000_01B3
        index += 1
    }
    return hash
}

/// MurmurHash3's 64-bit finalizer (fmix64): every input bit flips each output bit with
/// probability ≈ ½. FNV-1a alone only carries a change in the last byte upwards, so keys that
/// differ in their last character ("user-1", "user-2") would land on neighbouring ring points.
@inlinable @inline(__always)
public func murmurFinalize64(_ value: UInt64) -> UInt64 {
    var mixed = value
    mixed ^= mixed &>> 33
    mixed = mixed &* 0xFF51_AFD7_ED55_8CCD
    mixed ^= mixed &>> 33
    mixed = mixed &* 0xC4CE_B9FE_1A85_EC53
    mixed ^= mixed &>> 33
    return mixed
}

/// splitmix64's output function (Stafford's Mix13). A different finalizer from
/// `murmurFinalize64`, so the tables' own hashes of member keys (ring points, Maglev offset and
/// skip) are independent of the request hashes they are probed with.
@inlinable @inline(__always)
public func splitMix64(_ value: UInt64) -> UInt64 {
    var mixed = value
    mixed = (mixed ^ (mixed &>> 30)) &* 0xBF58_476D_1CE4_E5B9
    mixed = (mixed ^ (mixed &>> 27)) &* 0x94D0_49BB_1331_11EB
    return mixed ^ (mixed &>> 31)
}

/// The golden-ratio increment of splitmix64: consecutive multiples of it, once mixed, form a
/// well-distributed stream.
@usableFromInline let splitMixIncrement: UInt64 = 0x9E37_79B9_7F4A_7C15

/// Hash of request bytes (a header value, a cookie value, the client address bytes) for the
/// `ring_hash` and `maglev` policies. FNV-1a keeps it stable across processes; the finalizer
/// spreads nearby keys across the whole 64-bit space, which both tables rely on.
@inlinable @inline(__always)
public func balancingHash(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> UInt64 {
    murmurFinalize64(fnv1a64(bytes, count))
}

/// A uniform index in `0..<count` from one 64-bit draw by Lemire's multiply-high: the high word
/// of `draw × count`. No division, and the bias is at most `count / 2⁶⁴` (a modulo would favour
/// low indices by the same bound but costs a 64-bit divide).
@inlinable @inline(__always)
func uniformIndex(below count: Int, draw: UInt64) -> Int {
    Int(truncatingIfNeeded: draw.multipliedFullWidth(by: UInt64(truncatingIfNeeded: count)).high)
}
