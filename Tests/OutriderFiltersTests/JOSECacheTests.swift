// The per-worker verified-token cache.
import Testing
@testable import OutriderFilters

@Suite("JOSE verified-token cache")
struct JOSECacheTests {
    func token(_ sub: String, exp: Int64?) -> VerifiedJWT {
        VerifiedJWT(claims: .object([("sub", .string(sub))]), expiresAt: exp, algorithm: .ES256)
    }

    func digest(_ text: String) -> TokenDigest { sha256(Array(text.utf8)) }

    @Test func hitThenMissAfterExpiry() {
        var cache = VerifiedTokenCache()
        let key = digest("token-a")
        #expect(cache.lookup(key, now: 100) == nil)
        cache.insert(key, token("alice", exp: 200))
        #expect(cache.lookup(key, now: 100)?.claimString("sub") == "alice")
        #expect(cache.lookup(key, now: 199)?.claimString("sub") == "alice")
        #expect(cache.lookup(key, now: 200) == nil)
        #expect(cache.lookup(digest("token-b"), now: 100) == nil)
        #expect(cache.count == 1)
    }

    @Test func callerExpiryCapsTheTokenExpiry() {
        var cache = VerifiedTokenCache()
        cache.insert(digest("a"), token("a", exp: 10_000), expiresAt: 160)
        #expect(cache.lookup(digest("a"), now: 159) != nil)
        #expect(cache.lookup(digest("a"), now: 160) == nil)
        // No exp and no caller expiry: not cached.
        cache.insert(digest("b"), token("b", exp: nil))
        #expect(cache.lookup(digest("b"), now: 0) == nil)
        cache.insert(digest("b"), token("b", exp: nil), expiresAt: 50)
        #expect(cache.lookup(digest("b"), now: 0)?.claimString("sub") == "b")
    }

    @Test func reinsertReplaces() {
        var cache = VerifiedTokenCache(capacity: 16)
        cache.insert(digest("a"), token("first", exp: 100))
        cache.insert(digest("a"), token("second", exp: 300))
        #expect(cache.count == 1)
        #expect(cache.lookup(digest("a"), now: 200)?.claimString("sub") == "second")
    }

    @Test func boundedWithOldestEvicted() {
        var cache = VerifiedTokenCache(capacity: 64)
        #expect(cache.capacity == 64)
        for index in 0..<10_000 {
            cache.insert(digest("t\(index)"), token("u\(index)", exp: 1_000_000))
        }
        #expect(cache.count == 64)
        // The newest entries survive; the first ones were evicted.
        var recentHits = 0
        for index in 9_990..<10_000 where cache.lookup(digest("t\(index)"), now: 0) != nil { recentHits += 1 }
        #expect(recentHits == 10)
        var oldHits = 0
        for index in 0..<100 where cache.lookup(digest("t\(index)"), now: 0) != nil { oldHits += 1 }
        #expect(oldHits == 0)
    }

    @Test func expiredEntriesAreReusedFirst() {
        // Capacity 8 = one probe window: every key competes for the same 8 slots.
        var cache = VerifiedTokenCache(capacity: 8)
        for index in 0..<8 { cache.insert(digest("live\(index)"), token("l", exp: index == 3 ? 50 : 1000)) }
        cache.insert(digest("new"), token("n", exp: 1000), now: 100)
        #expect(cache.lookup(digest("new"), now: 100) != nil)
        for index in 0..<8 where index != 3 {
            #expect(cache.lookup(digest("live\(index)"), now: 100) != nil, "live\(index) was evicted")
        }
    }

    @Test func removeAll() {
        var cache = VerifiedTokenCache(capacity: 8)
        cache.insert(digest("a"), token("a", exp: 100))
        cache.removeAll()
        #expect(cache.count == 0)
        #expect(cache.lookup(digest("a"), now: 0) == nil)
    }

    @Test func capacityRoundsUp() {
        #expect(VerifiedTokenCache(capacity: 1).capacity == VerifiedTokenCache.probeWindow)
        #expect(VerifiedTokenCache(capacity: 4096).capacity == 4096)
        #expect(VerifiedTokenCache(capacity: 5000).capacity == 8192)
    }
}
