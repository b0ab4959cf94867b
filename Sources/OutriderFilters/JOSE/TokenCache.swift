// A per-worker cache of verified tokens, so a token seen again skips the signature check.
// No locks (one per worker), fixed memory, and a lookup that does not allocate.

/// The key: `sha256(token)` as returned by `sha256(_:)`.
public typealias TokenDigest = (UInt64, UInt64, UInt64, UInt64)

public struct VerifiedTokenCache {
    @usableFromInline struct Entry {
        var h0: UInt64 = 0, h1: UInt64 = 0, h2: UInt64 = 0, h3: UInt64 = 0
        /// Unix seconds; the entry answers while `now < expiresAt`. 0 = empty slot.
        var expiresAt: Int64 = 0
        /// Insertion order, for evicting the oldest of a probe window.
        var sequence: UInt64 = 0
        var token: VerifiedJWT? = nil
    }

    /// Slots probed from a key's home slot: lookups and inserts touch at most this many.
    public static let probeWindow = 8

    private var slots: [Entry]
    private let mask: Int
    private var sequence: UInt64 = 0
    public private(set) var count = 0

    /// `capacity` is rounded up to a power of two (at least `probeWindow`).
    public init(capacity: Int = 4096) {
        var size = Self.probeWindow
        while size < capacity { size <<= 1 }
        slots = [Entry](repeating: Entry(), count: size)
        mask = size - 1
    }

    public var capacity: Int { slots.count }

    /// The cached token for `digest`, if it was inserted and has not expired at `now`.
    public func lookup(_ digest: TokenDigest, now: Int64) -> VerifiedJWT? {
        slots.withUnsafeBufferPointer { slots -> VerifiedJWT? in
            let home = Int(truncatingIfNeeded: digest.0) & mask
            for probe in 0..<Self.probeWindow {
                let entry = slots[(home + probe) & mask]
                if entry.expiresAt != 0 && entry.h0 == digest.0 && entry.h1 == digest.1
                    && entry.h2 == digest.2 && entry.h3 == digest.3 {
                    return now < entry.expiresAt ? entry.token : nil
                }
            }
            return nil
        }
    }

    /// Caches `token` until `min(token.expiresAt, expiresAt)`. A token with neither is not
    /// cached (nothing would bound its stay). Within the key's probe window, this replaces the
    /// same key, else fills an empty or expired slot (expired as of `now`, when given), else
    /// evicts the oldest entry.
    public mutating func insert(_ digest: TokenDigest, _ token: VerifiedJWT, expiresAt: Int64? = nil, now: Int64? = nil) {
        let expiry = min(token.expiresAt ?? Int64.max, expiresAt ?? Int64.max)
        guard expiry != Int64.max, expiry > 0 else { return }
        sequence &+= 1
        let stamp = sequence
        let mask = self.mask
        let countDelta = slots.withUnsafeMutableBufferPointer { slots -> Int in
            let home = Int(truncatingIfNeeded: digest.0) & mask
            var victim = -1
            var victimScore = UInt64.max
            for probe in 0..<Self.probeWindow {
                let index = (home + probe) & mask
                let entry = slots[index]
                if entry.expiresAt != 0 && entry.h0 == digest.0 && entry.h1 == digest.1
                    && entry.h2 == digest.2 && entry.h3 == digest.3 {
                    victim = index
                    break
                }
                // Empty beats expired beats oldest.
                let score: UInt64
                if entry.expiresAt == 0 { score = 0 }
                else if let now, entry.expiresAt <= now { score = 1 }
                else { score = 2 &+ entry.sequence }
                if score < victimScore { victimScore = score; victim = index }
            }
            let wasEmpty = slots[victim].expiresAt == 0
            slots[victim] = Entry(h0: digest.0, h1: digest.1, h2: digest.2, h3: digest.3,
                                  expiresAt: expiry, sequence: stamp, token: token)
            return wasEmpty ? 1 : 0
        }
        count += countDelta
    }

    /// Drops every entry (e.g. after the key set changed).
    public mutating func removeAll() {
        for index in slots.indices { slots[index] = Entry() }
        count = 0
    }
}
