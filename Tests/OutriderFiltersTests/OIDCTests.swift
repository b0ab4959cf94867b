// The OIDC flow's building blocks: the AES-256-GCM cookie sealer, redirect validation, the
// session's cookie form and the URL helpers.
import Testing
@testable import OutriderFilters

@Suite("OIDC sealed cookies and redirects")
struct OIDCTests {
    let key = (0..<32).map { UInt8($0 * 7 & 0xFF) }

    @Test func sealOpenRoundTrip() throws {
        let sealer = CookieSealer(key: key)
        let plaintext = Array("{\"v\":1,\"s\":\"alice\"}".utf8)
        let sealed = try #require(sealer.seal(plaintext, name: "_oauth2_proxy"))
        #expect(sealed.utf8.count == ((12 + plaintext.count + 16) * 4 + 2) / 3)
        #expect(sealer.open(Array(sealed.utf8), name: "_oauth2_proxy") == plaintext)
        // An empty plaintext seals too.
        let empty = try #require(sealer.seal([], name: "x"))
        #expect(sealer.open(Array(empty.utf8), name: "x") == [])
    }

    @Test func everySealUsesAFreshNonce() throws {
        let sealer = CookieSealer(key: key)
        let a = try #require(sealer.seal(Array("same".utf8), name: "c"))
        let b = try #require(sealer.seal(Array("same".utf8), name: "c"))
        #expect(a != b)
        #expect(Array(a.utf8.prefix(16)) != Array(b.utf8.prefix(16)))
    }

    @Test func tamperedTruncatedMovedOrForeignValuesAreRefused() throws {
        let sealer = CookieSealer(key: key)
        let sealed = Array(try #require(sealer.seal(Array("{\"v\":1,\"s\":\"alice\"}".utf8), name: "_oauth2_proxy")).utf8)
        // Every single-byte change anywhere (nonce, ciphertext, tag) is refused.
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        for index in 0..<sealed.count {
            var changed = sealed
            changed[index] = changed[index] == alphabet[0] ? alphabet[1] : alphabet[0]
            #expect(sealer.open(changed, name: "_oauth2_proxy") == nil, "byte \(index)")
        }
        #expect(sealer.open(Array(sealed.dropLast(4)), name: "_oauth2_proxy") == nil)
        #expect(sealer.open(Array(sealed.prefix(10)), name: "_oauth2_proxy") == nil)
        #expect(sealer.open([], name: "_oauth2_proxy") == nil)
        #expect(sealer.open(Array("not base64 at all!".utf8), name: "_oauth2_proxy") == nil)
        // The cookie name is authenticated: a CSRF cookie's value is no session.
        #expect(sealer.open(sealed, name: "_oauth2_proxy_csrf") == nil)
        // Another secret cannot open it.
        let other = CookieSealer(key: key.map { $0 ^ 1 })
        #expect(other.open(sealed, name: "_oauth2_proxy") == nil)
        // Random garbage of every length up to 200 never crashes and never opens.
        var random = SplitMix(seed: 42)
        for length in 0..<200 {
            let garbage = (0..<length).map { _ in alphabet[Int(random.next() % 64)] }
            #expect(sealer.open(garbage, name: "_oauth2_proxy") == nil)
        }
    }

    @Test func redirectTargetsStayOnThisSite() {
        for good in ["/", "/app", "/app/page?x=1&y=%2F%2Fevil.com", "/a/b#frag", "/%2F%2Fevil.com"] {
            #expect(OIDCFlow.safeRedirect(Array(good.utf8)), "\(good)")
        }
        for bad in ["", "//evil.com", "//evil.com/x", "/\\evil.com", "\\\\evil.com", "https://evil.com", "http:/evil.com",
                    "evil.com", "/\t/evil.com", "/\r\nset-cookie: x=1", "/ a", "/a\\b", "javascript:alert(1)",
                    "/\u{7F}", "/é", String(repeating: "/a", count: 1025)] {
            #expect(!OIDCFlow.safeRedirect(Array(bad.utf8)), "\(bad)")
        }
    }

    @Test func sessionJSONRoundTrip() throws {
        let session = OIDCSession(subject: "s-1", email: "a\"b@example.com", groups: ["dev", "o,ps"], preferredUsername: "alice",
                                  expiresAt: 1000, refreshedAt: 10, tokensExpireAt: 70, accessToken: "at", refreshToken: "rt",
                                  idToken: "h.p.s")
        let parsed = try #require(OIDCSession(json: Array(session.json().utf8)))
        #expect(parsed.subject == "s-1")
        #expect(parsed.email == "a\"b@example.com")
        #expect(parsed.groups == ["dev", "o,ps"])
        #expect(parsed.preferredUsername == "alice")
        #expect(parsed.expiresAt == 1000 && parsed.refreshedAt == 10 && parsed.tokensExpireAt == 70)
        #expect(parsed.accessToken == "at" && parsed.refreshToken == "rt" && parsed.idToken == "h.p.s")
        #expect(parsed.identity.user == "a\"b@example.com")
        let bare = OIDCSession(subject: "s-2", email: nil, groups: [], preferredUsername: nil, expiresAt: 1, refreshedAt: 0,
                               tokensExpireAt: 1, accessToken: nil, refreshToken: nil, idToken: nil)
        let parsedBare = try #require(OIDCSession(json: Array(bare.json().utf8)))
        #expect(parsedBare.identity.user == "s-2")
        #expect(parsedBare.refreshToken == nil)
        #expect(OIDCSession(json: Array("{\"v\":2,\"s\":\"x\",\"x\":1,\"r\":1,\"t\":1}".utf8)) == nil)
        #expect(OIDCSession(json: Array("{\"v\":1}".utf8)) == nil)
        #expect(OIDCSession(json: Array("nope".utf8)) == nil)
    }

    @Test func formAndPercentCoding() {
        #expect(formEncode("a b&c=d/é~") == "a%20b%26c%3Dd%2F%C3%A9~")
        let decoded = Array("%2Fapp%2fx+y%zz%4".utf8).withUnsafeBufferPointer { percentDecode($0) }
        #expect(String(decoding: decoded, as: UTF8.self) == "/app/x y%zz%4")
        #expect(headerSafe("a\r\nb\u{0}c\td") == "abc\td")
    }

    @Test func usedStatesRefuseASecondClaim() {
        let states = UsedStates()
        #expect(states.claim("abc", expires: 100, now: 10))
        #expect(!states.claim("abc", expires: 100, now: 50))
        #expect(states.claim("def", expires: 100, now: 50))
        // After the login it belonged to has expired, the entry no longer matters.
        #expect(states.claim("abc", expires: 300, now: 150))
    }

    @Test func usedStatesKeepRecentLoginsWhenFull() {
        let states = UsedStates()
        // A flood of minted logins fills the registry; a real login's state, used once just
        // before, must stay refused, while the oldest of the flood make room.
        for index in 0..<(UsedStates.capacity - 1) {
            #expect(states.claim("flood-\(index)", expires: 1000 + Int64(index), now: 10))
        }
        #expect(states.claim("real-login", expires: 5_000_000, now: 10))
        #expect(states.claim("one-more", expires: 2_000_000, now: 11))
        #expect(!states.claim("real-login", expires: 5_000_000, now: 12))
        #expect(states.claim("flood-0", expires: 3_000_000, now: 12))
        #expect(!states.claim("flood-\(UsedStates.capacity - 2)", expires: 3_000_000, now: 12))
    }
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
