// JWK loading rules, key selection, and the verifier's behaviour around keys.
import Foundation
import Synchronization
import Testing
@testable import OutriderFilters

@Suite("JOSE keys and key selection")
struct JOSEKeyTests {
    static let rsaN = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
    static let ecX = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
    static let ecY = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"

    func key(_ json: String) -> Result<JSONWebKey, JWKRejection> {
        JSONWebKey.parse(JSONValue.parse(json)!)
    }

    func rejection(_ json: String) -> JWKRejection? { key(json).joseFailure }

    @Test func keySetDocumentErrors() {
        #expect(JSONWebKeySet.parse(joseBytes("not json")).joseFailure == .invalidJSON)
        #expect(JSONWebKeySet.parse(joseBytes(#"{"keys":[],"keys":[]}"#)).joseFailure == .invalidJSON)
        #expect(JSONWebKeySet.parse(joseBytes("[]")).joseFailure == .notAKeySet)
        #expect(JSONWebKeySet.parse(joseBytes(#"{"keys":{}}"#)).joseFailure == .notAKeySet)
        #expect(JSONWebKeySet.parse(joseBytes(#"{"kty":"oct"}"#)).joseFailure == .notAKeySet)
        #expect(JSONWebKeySet.parse([UInt8](repeating: 0x20, count: (1 << 20) + 1)).joseFailure == .tooLarge)
        let empty = JSONWebKeySet.parse(joseBytes(#"{"keys":[]}"#)).joseSuccess
        #expect(empty?.keys.isEmpty == true && empty?.skippedCount == 0)
        let odd = JSONWebKeySet.parse(joseBytes(#"{"keys":[1,"x",null]}"#)).joseSuccess
        #expect(odd?.keys.isEmpty == true && odd?.skipped.map(\.reason) == [.notAnObject, .notAnObject, .notAnObject])
    }

    @Test func rsaRules() throws {
        let good = try #require(key(#"{"kty":"RSA","n":"\#(Self.rsaN)","e":"AQAB"}"#).joseSuccess)
        #expect(good.bits == 2048 && good.keyType == "RSA" && good.kid == nil && good.algorithm == nil)
        for alg in JWSAlgorithm.allCases {
            #expect(good.canVerify(alg) == alg.rawValue.hasPrefix("RS") || alg.rawValue.hasPrefix("PS"))
        }
        // A leading zero byte in n is tolerated (the modulus size is what counts).
        let n = try #require(base64URLDecode(Self.rsaN))
        let padded = base64URLEncode([0] + n)
        #expect(key(#"{"kty":"RSA","n":"\#(padded)","e":"AQAB"}"#).joseSuccess?.bits == 2048)
        // Too small: drop the top byte (2040 bits).
        let small = base64URLEncode(Array(n.dropFirst()))
        #expect(rejection(#"{"kty":"RSA","n":"\#(small)","e":"AQAB"}"#) == .keyTooSmall(bits: 2040))
        var even = n
        even[even.count - 1] &= 0xFE
        #expect(rejection(#"{"kty":"RSA","n":"\#(base64URLEncode(even))","e":"AQAB"}"#) == .invalidMember("n"))
        #expect(rejection(#"{"kty":"RSA","n":"\#(Self.rsaN)","e":"AQ"}"#) == .invalidMember("e"))   // e = 1
        #expect(rejection(#"{"kty":"RSA","n":"\#(Self.rsaN)","e":"AQAA"}"#) == .invalidMember("e")) // even
        #expect(rejection(#"{"kty":"RSA","n":"\#(Self.rsaN)","e":"AQABAQABAQAB"}"#) == .invalidMember("e"))  // 9 bytes
        #expect(rejection(#"{"kty":"RSA","n":"\#(Self.rsaN)=","e":"AQAB"}"#) == .invalidMember("n"))
        #expect(rejection(#"{"kty":"RSA","n":"","e":"AQAB"}"#) == .invalidMember("n"))
        #expect(rejection(#"{"kty":"RSA","n":1,"e":"AQAB"}"#) == .invalidMember("n"))
        #expect(rejection(#"{"kty":"RSA","e":"AQAB"}"#) == .missingMember("n"))
        let huge = base64URLEncode([0xC1] + [UInt8](repeating: 0x55, count: 2048) + [0x01])
        #expect(rejection(#"{"kty":"RSA","n":"\#(huge)","e":"AQAB"}"#) == .keyTooLarge(bits: 16400))
    }

    @Test func ecRules() throws {
        let good = try #require(key(#"{"kty":"EC","crv":"P-256","x":"\#(Self.ecX)","y":"\#(Self.ecY)","kid":"e"}"#).joseSuccess)
        #expect(good.curve == "P-256" && good.bits == 256 && good.kid == "e")
        #expect(good.canVerify(.ES256) && !good.canVerify(.ES384) && !good.canVerify(.RS256) && !good.canVerify(.HS256))
        let zero = base64URLEncode([UInt8](repeating: 0, count: 32))
        #expect(rejection(#"{"kty":"EC","crv":"P-256","x":"\#(zero)","y":"\#(zero)"}"#) == .invalidKey)
        // The P-256 point under the P-384 name has the wrong size.
        #expect(rejection(#"{"kty":"EC","crv":"P-384","x":"\#(Self.ecX)","y":"\#(Self.ecY)"}"#) == .invalidMember("x"))
        #expect(rejection(#"{"kty":"EC","crv":"secp256k1","x":"\#(Self.ecX)","y":"\#(Self.ecY)"}"#) == .unsupportedCurve("secp256k1"))
        #expect(rejection(#"{"kty":"EC","x":"\#(Self.ecX)","y":"\#(Self.ecY)"}"#) == .missingMember("crv"))
        #expect(rejection(#"{"kty":"EC","crv":"P-256","x":"\#(Self.ecX)"}"#) == .missingMember("y"))
        #expect(rejection(#"{"kty":"EC","crv":"P-256","x":"\#(Self.ecX)","y":"\#(Self.ecY)","alg":"ES384"}"#)
                == .unsupportedAlgorithm("ES384"))
        #expect(key(#"{"kty":"EC","crv":"P-256","x":"\#(Self.ecX)","y":"\#(Self.ecY)","alg":"ES256"}"#).joseSuccess?.algorithm == .ES256)
    }

    @Test func okpAndOctRules() throws {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        let ed = try #require(key(#"{"kty":"OKP","crv":"Ed25519","x":"\#(x)"}"#).joseSuccess)
        #expect(ed.canVerify(.EdDSA) && !ed.canVerify(.ES256))
        #expect(rejection(#"{"kty":"OKP","crv":"Ed25519","x":"\#(x.dropLast(2))"}"#) == .invalidMember("x"))
        #expect(rejection(#"{"kty":"OKP","crv":"X25519","x":"\#(x)"}"#) == .unsupportedCurve("X25519"))

        let k32 = base64URLEncode([UInt8](repeating: 7, count: 32))
        let oct = try #require(key(#"{"kty":"oct","k":"\#(k32)"}"#).joseSuccess)
        #expect(oct.bits == 256)
        #expect(oct.canVerify(.HS256) && !oct.canVerify(.HS384) && !oct.canVerify(.HS512) && !oct.canVerify(.RS256))
        let k31 = base64URLEncode([UInt8](repeating: 7, count: 31))
        #expect(rejection(#"{"kty":"oct","k":"\#(k31)"}"#) == .keyTooSmall(bits: 248))
        #expect(rejection(#"{"kty":"oct","k":"\#(k32)","alg":"HS384"}"#) == .keyTooSmall(bits: 256))
        #expect(rejection(#"{"kty":"oct","k":"\#(k32)","alg":"ES256"}"#) == .unsupportedAlgorithm("ES256"))
        #expect(rejection(#"{"kty":"oct","k":"\#(k32)","alg":"none"}"#) == .unsupportedAlgorithm("none"))
    }

    @Test func useKeyOpsKidAndKty() {
        let k = base64URLEncode([UInt8](repeating: 1, count: 32))
        #expect(rejection(#"{"kty":"oct","k":"\#(k)","use":"enc"}"#) == .notForSignatures)
        #expect(rejection(#"{"kty":"oct","k":"\#(k)","use":1}"#) == .invalidMember("use"))
        #expect(key(#"{"kty":"oct","k":"\#(k)","use":"sig"}"#).joseSuccess?.use == "sig")
        #expect(rejection(#"{"kty":"oct","k":"\#(k)","key_ops":["sign"]}"#) == .notForSignatures)
        #expect(key(#"{"kty":"oct","k":"\#(k)","key_ops":["sign","verify"]}"#).joseSuccess != nil)
        #expect(rejection(#"{"kty":"oct","k":"\#(k)","kid":7}"#) == .invalidMember("kid"))
        #expect(rejection(#"{"k":"\#(k)"}"#) == .missingMember("kty"))
        #expect(rejection(#"{"kty":"rsa","n":"AQAB","e":"AQAB"}"#) == .unsupportedKeyType("rsa"))
        #expect(rejection(#"[1]"#) == .notAnObject)
    }

    /// An HS256 token over `claims` with the given header members.
    func hs256(_ secret: [UInt8], header: String, claims: String) -> String {
        let input = joseB64u(header) + "." + joseB64u(claims)
        let mac = joseHMACSHA256(secret, Array(input.utf8))
        return input + "." + base64URLEncode(mac)
    }

    @Test func rotationWithTheSameKidTriesEachKey() {
        let old = [UInt8](repeating: 1, count: 32), new = [UInt8](repeating: 2, count: 32)
        let jwks = #"{"keys":[{"kty":"oct","kid":"k","k":"\#(base64URLEncode(old))"},{"kty":"oct","kid":"k","k":"\#(base64URLEncode(new))"}]}"#
        let v = joseVerifier(jwks: jwks, algorithms: [.HS256])
        #expect(v.verify(hs256(new, header: #"{"alg":"HS256","kid":"k"}"#, claims: "{}"), now: 0).joseSuccess != nil)
        #expect(v.verify(hs256(old, header: #"{"alg":"HS256","kid":"k"}"#, claims: "{}"), now: 0).joseSuccess != nil)
        #expect(v.verify(hs256(old, header: #"{"alg":"HS256"}"#, claims: "{}"), now: 0).joseSuccess != nil)
        let other = [UInt8](repeating: 3, count: 32)
        #expect(v.verify(hs256(other, header: #"{"alg":"HS256","kid":"k"}"#, claims: "{}"), now: 0).joseFailure == .badSignature)
        #expect(v.verify(hs256(old, header: #"{"alg":"HS256","kid":"K"}"#, claims: "{}"), now: 0).joseFailure == .unknownKey)
        // A token with a kid does not fall back to keys without one.
        let anonymous = #"{"keys":[{"kty":"oct","k":"\#(base64URLEncode(old))"}]}"#
        #expect(joseVerifier(jwks: anonymous).verify(hs256(old, header: #"{"alg":"HS256","kid":"k"}"#, claims: "{}"), now: 0)
                .joseFailure == .unknownKey)
    }

    @Test func claimRendering() throws {
        let secret = [UInt8](repeating: 9, count: 32)
        let v = joseVerifier(jwks: #"{"keys":[{"kty":"oct","k":"\#(base64URLEncode(secret))"}]}"#)
        let claims = #"{"s":"a b","i":-12,"f":2.5,"t":true,"n":null,"a":["x","y"],"m":[1,"z",false],"o":{"k":1},"ao":[{"k":1}],"e":[]}"#
        let jwt = try #require(v.verify(hs256(secret, header: #"{"alg":"HS256","typ":"jwt"}"#, claims: claims), now: 0).joseSuccess)
        #expect(jwt.claimString("s") == "a b")
        #expect(jwt.claimString("i") == "-12")
        #expect(jwt.claimString("f") == "2.5")
        #expect(jwt.claimString("t") == "true")
        #expect(jwt.claimString("n") == nil)
        #expect(jwt.claimString("a") == "x,y")
        #expect(jwt.claimString("m") == "1,z,false")
        #expect(jwt.claimString("o") == nil)
        #expect(jwt.claimString("ao") == nil)
        #expect(jwt.claimString("e") == "")
        #expect(jwt.expiresAt == nil && jwt.keyID == nil)
    }

    @Test func errorQueueIsLeftEmpty() {
        let fixtures = JWTFixtures.shared
        let set = JOSEInteropTests.keySet
        let v = JWTVerifier(keys: set, algorithms: Set(JWSAlgorithm.allCases), issuer: fixtures.issuer,
                            audiences: fixtures.audiences, clockSkewSeconds: fixtures.skew)
        for testCase in fixtures.cases {
            _ = v.verify(testCase.token, now: fixtures.now)
            #expect(JOSESignature.errorQueueIsEmpty, "after \(testCase.name)")
        }
        _ = JSONWebKeySet.parse(joseBytes(fixtures.jwks))
        #expect(JOSESignature.errorQueueIsEmpty, "after loading the key set")
    }

    @Test func concurrentVerificationSharesKeys() {
        let fixtures = JWTFixtures.shared
        let v = JWTVerifier(keys: JOSEInteropTests.keySet, algorithms: Set(JWSAlgorithm.allCases), issuer: fixtures.issuer,
                            audiences: fixtures.audiences, clockSkewSeconds: fixtures.skew)
        let cases = fixtures.cases.filter { $0.algorithms == nil && $0.maxTokenBytes == nil }
        let mismatches = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for round in 0..<3 {
                for (index, testCase) in cases.enumerated() where (index + worker + round) % 2 == 0 {
                    let outcome: String
                    switch v.verify(testCase.token, now: fixtures.now) {
                    case .success: outcome = "ok"
                    case .failure(let failure): outcome = failure.rawValue
                    }
                    if outcome != testCase.expect { mismatches.withLock { $0 += 1 } }
                }
            }
        }
        #expect(mismatches.withLock { $0 } == 0)
    }
}


/// HMAC-SHA256 from its definition (RFC 2104) over this module's sha256, to mint test tokens
/// without a second HMAC implementation in the code under test.
func joseHMACSHA256(_ key: [UInt8], _ message: [UInt8]) -> [UInt8] {
    var block = key.count > 64 ? key.withUnsafeBytes { sha256Bytes($0) } : key
    block += [UInt8](repeating: 0, count: 64 - block.count)
    let inner = (block.map { $0 ^ 0x36 } + message).withUnsafeBytes { sha256Bytes($0) }
    return (block.map { $0 ^ 0x5C } + inner).withUnsafeBytes { sha256Bytes($0) }
}
