// Tokens minted by PyJWT (Fixtures/make_jwt_fixtures.py) for every algorithm, and the attack set.
import Testing
@testable import OutriderFilters

@Suite("JWT interop with PyJWT")
struct JOSEInteropTests {
    static let fixtures = JWTFixtures.shared
    static let keySet: JSONWebKeySet = {
        guard case .success(let set) = JSONWebKeySet.parse(joseBytes(fixtures.jwks)) else { fatalError("fixture JWKS") }
        return set
    }()

    @Test func keySetLoadsTheUsableKeysAndSkipsTheRest() {
        let set = Self.keySet
        #expect(set.keys.map { $0.kid ?? "" } == Self.fixtures.loaded)
        #expect(set.skipped.map { $0.kid ?? "" } == Self.fixtures.skipped)
        #expect(set.skippedCount == Self.fixtures.skipped.count)
        let reasons = Dictionary(uniqueKeysWithValues: set.skipped.map { ($0.kid ?? "", $0.reason) })
        #expect(reasons["rsa-1024"] == .keyTooSmall(bits: 1024))
        #expect(reasons["ec-521"] == .unsupportedCurve("P-521"))
        #expect(reasons["ed-448"] == .unsupportedCurve("Ed448"))
        #expect(reasons["hmac-16"] == .keyTooSmall(bits: 128))
        #expect(reasons["rsa-enc"] == .notForSignatures)
        #expect(reasons["ec-off-curve"] == .invalidKey)
        #expect(reasons["ec-short-x"] == .invalidMember("x"))
        #expect(reasons["rsa-no-e"] == .missingMember("e"))
        #expect(reasons["hmac-alg-mismatch"] == .unsupportedAlgorithm("RS256"))
        #expect(reasons["hmac-64-for-hs512-too-short"] == .keyTooSmall(bits: 256))
        #expect(reasons["unknown-kty"] == .unsupportedKeyType("PQ"))
        #expect(reasons["rsa-alg-unknown"] == .unsupportedAlgorithm("RSA-OAEP"))
        let byKid = Dictionary(uniqueKeysWithValues: set.keys.map { ($0.kid ?? "", $0) })
        #expect(byKid["rsa-1"]?.bits == 2048)
        #expect(byKid["rsa-3072"]?.bits == 3072)
        #expect(byKid["rsa-pinned"]?.algorithm == .RS256)
        #expect(byKid["ec-256"]?.curve == "P-256")
        #expect(byKid["ec-384"]?.curve == "P-384")
        #expect(byKid["ed-1"]?.keyType == "OKP")
        #expect(byKid["hmac-64"]?.bits == 512)
    }

    @Test func everyAlgorithmHasAValidToken() {
        let valid = Set(Self.fixtures.cases.filter { $0.expect == "ok" && $0.name.hasPrefix("valid ") }
            .compactMap { JWSAlgorithm(rawValue: String($0.name.split(separator: " ")[1])) })
        #expect(valid == Set(JWSAlgorithm.allCases))
    }

    @Test(arguments: JWTFixtures.shared.cases)
    func fixture(_ testCase: JWTFixtures.Case) {
        let fixtures = Self.fixtures
        let algorithms = testCase.algorithms.map { Set($0.compactMap(JWSAlgorithm.init(rawValue:))) }
            ?? Set(JWSAlgorithm.allCases)
        let verifier = JWTVerifier(keys: Self.keySet, algorithms: algorithms, issuer: fixtures.issuer,
                                   audiences: fixtures.audiences, clockSkewSeconds: fixtures.skew,
                                   maxTokenBytes: testCase.maxTokenBytes ?? 8192)
        let result = verifier.verify(testCase.token, now: fixtures.now)
        switch result {
        case .success(let jwt):
            #expect(testCase.expect == "ok", "verified, expected \(testCase.expect)")
            if let sub = testCase.sub { #expect(jwt.claimString("sub") == sub) }
            if let exp = testCase.exp { #expect(jwt.expiresAt == exp) }
            #expect(jwt.claims.object != nil)
        case .failure(let failure):
            #expect(failure.rawValue == testCase.expect)
        }
    }

    @Test func validTokensCarryTheirClaims() throws {
        let fixtures = Self.fixtures
        let testCase = try #require(fixtures.cases.first { $0.name == "valid ES256" })
        let verifier = JWTVerifier(keys: Self.keySet, algorithms: [.ES256], issuer: fixtures.issuer,
                                   audiences: ["app"], clockSkewSeconds: 0)
        let jwt = try #require(verifier.verify(testCase.token, now: fixtures.now).joseSuccess)
        #expect(jwt.claimString("email") == "alice@example.com")
        #expect(jwt.claimString("groups") == "admins,dev")
        #expect(jwt.claimString("iat") == String(fixtures.now - 10))
        #expect(jwt.claimString("nothing") == nil)
        #expect(jwt.algorithm == .ES256)
        #expect(jwt.keyID == "ec-256")
        #expect(jwt.expiresAt == fixtures.now + 3600)
    }

    @Test func requiredClaims() throws {
        let fixtures = Self.fixtures
        let testCase = try #require(fixtures.cases.first { $0.name == "valid HS256" })
        let base = JWTVerifier(keys: Self.keySet, algorithms: [.HS256], issuer: nil, audiences: [],
                               clockSkewSeconds: 0, requiredClaims: ["sub", "email"])
        #expect(base.verify(testCase.token, now: fixtures.now).joseSuccess != nil)
        let strict = JWTVerifier(keys: Self.keySet, algorithms: [.HS256], issuer: nil, audiences: [],
                                 clockSkewSeconds: 0, requiredClaims: ["sub", "tenant"])
        #expect(strict.verify(testCase.token, now: fixtures.now).joseFailure == .missingClaim)
    }

    @Test func noKeysAtAll() throws {
        let fixtures = Self.fixtures
        let testCase = try #require(fixtures.cases.first { $0.name == "valid RS256" })
        let empty = JWTVerifier(keys: JSONWebKeySet(keys: []), algorithms: [.RS256], issuer: nil, audiences: [],
                                clockSkewSeconds: 0)
        #expect(empty.verify(testCase.token, now: fixtures.now).joseFailure == .unknownKey)
        let noKid = try #require(fixtures.cases.first { $0.name == "valid RS256 without kid" })
        #expect(empty.verify(noKid.token, now: fixtures.now).joseFailure == .unknownKey)
    }
}
