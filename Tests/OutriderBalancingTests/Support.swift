import OutriderCore
@testable import OutriderBalancing

/// `balancingHash` of a Swift string's UTF-8 bytes.
func hashOf(_ text: String) -> UInt64 {
    var text = text
    return text.withUTF8 { balancingHash($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
}

/// What the proxy passes as a member key: `fnv1a64("HOST:PORT")`.
func endpointKey(_ index: Int) -> UInt64 {
    var text = "10.0.\(index / 256).\(index % 256):8080"
    return text.withUTF8 { fnv1a64($0.baseAddress!, $0.count) }
}

/// 100,000 request hashes from nearby keys ("session-0", "session-1", …), the case the
/// finalizer in `balancingHash` exists for.
let requestHashes: [UInt64] = (0..<100_000).map { hashOf("session-\($0)") }

/// A value with a 64-bit identity of its member: the same request → the same key means the same
/// endpoint, whatever index it has in a particular table.
protocol MemberTable {
    init(keys: [UInt64])
    func pick(hash: UInt64) -> Int
}

extension RingHashTable: MemberTable {
    init(keys: [UInt64]) { self.init(memberKeys: keys) }
}

extension MaglevTable: MemberTable {
    init(keys: [UInt64]) { self.init(memberKeys: keys) }
}

/// The member key each request hash lands on.
func owners<Table: MemberTable>(_ table: Table, keys: [UInt64], hashes: [UInt64] = requestHashes) -> [UInt64] {
    hashes.map { keys[table.pick(hash: $0)] }
}

/// How the keys moved between two assignments of the same requests.
struct Remap: CustomStringConvertible {
    var moved = 0
    var movedTo: [UInt64: Int] = [:]
    var movedFrom: [UInt64: Int] = [:]
    var total = 0

    init(before: [UInt64], after: [UInt64]) {
        total = before.count
        for (old, new) in zip(before, after) where old != new {
            moved += 1
            movedTo[new, default: 0] += 1
            movedFrom[old, default: 0] += 1
        }
    }

    var fraction: Double { Double(moved) / Double(total) }
    var description: String { "\(moved)/\(total) = \(format(fraction))" }
}

/// Each member's share of the requests, relative to the fair share 1/N (1.0 = exactly fair).
func relativeShares(_ assignment: [UInt64], keys: [UInt64]) -> [Double] {
    var counts: [UInt64: Int] = [:]
    for key in assignment { counts[key, default: 0] += 1 }
    let fair = Double(assignment.count) / Double(keys.count)
    return keys.map { Double(counts[$0, default: 0]) / fair }
}

func format(_ value: Double, digits: Int = 4) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    return "\((value * scale).rounded() / scale)"
}
