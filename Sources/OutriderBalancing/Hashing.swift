/// 64-bit FNV-1a: stable across runs and machines, so a hash key maps to the same endpoint in
/// every worker and after a restart.
@inline(__always)
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
