// The examples of RFC 7515 Appendix A.1-A.3 and RFC 8037 Appendix A.4 (re-checked with
// pyca/cryptography by Fixtures/make_jwt_fixtures.py).
import Testing
@testable import OutriderFilters

@Suite("JOSE RFC vectors")
struct JOSEVectorTests {
    static let payload = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    /// Before the examples' exp (1300819380).
    static let before: Int64 = 1_300_819_000

    static let a1Key = #"{"keys":[{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}]}"#
    static let a1 = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\(payload).dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

    static let a2Key = #"{"keys":[{"kty":"RSA","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB","d":"Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ"}]}"#
    static let a2 = "eyJhbGciOiJSUzI1NiJ9.\(payload).cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"

    static let a3Key = #"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}]}"#
    static let a3 = "eyJhbGciOiJFUzI1NiJ9.\(payload).DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"

    static let ed25519Key = #"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#
    static let ed25519Input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
    static let ed25519Signature = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"

    func checkExample(_ token: String, _ jwks: String, _ algorithm: JWSAlgorithm) throws {
        let v = joseVerifier(jwks: jwks, algorithms: [algorithm])
        let jwt = try #require(v.verify(token, now: Self.before).joseSuccess)
        #expect(jwt.claimString("iss") == "joe")
        #expect(jwt.claimString("http://example.com/is_root") == "true")
        #expect(jwt.claims["http://example.com/is_root"] == .bool(true))
        #expect(jwt.expiresAt == 1_300_819_380)
        #expect(jwt.algorithm == algorithm)
        // The examples have expired since.
        #expect(v.verify(token, now: 1_300_819_380).joseFailure == .expired)
        #expect(joseVerifier(jwks: jwks, algorithms: [algorithm], skew: 1).verify(token, now: 1_300_819_380).joseSuccess != nil)
        // Issuer and audience checks apply to them too.
        #expect(joseVerifier(jwks: jwks, algorithms: [algorithm], issuer: "joe").verify(token, now: Self.before).joseSuccess != nil)
        #expect(joseVerifier(jwks: jwks, algorithms: [algorithm], issuer: "jane").verify(token, now: Self.before).joseFailure == .wrongIssuer)
        #expect(joseVerifier(jwks: jwks, algorithms: [algorithm], audiences: ["x"]).verify(token, now: Self.before).joseFailure == .wrongAudience)
        // Not allowed unless listed.
        let others = Set(JWSAlgorithm.allCases).subtracting([algorithm])
        #expect(joseVerifier(jwks: jwks, algorithms: others).verify(token, now: Self.before).joseFailure == .algorithmNotAllowed)
        // One changed byte in the payload or the signature.
        var tampered = Array(token.utf8)
        let dot = tampered.firstIndex(of: UInt8(ascii: "."))!
        tampered[dot + 5] = tampered[dot + 5] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(v.verify(tampered, now: Self.before).joseFailure == .badSignature)
        var badSignature = Array(token.utf8)
        let last = badSignature.count - 3
        badSignature[last] = badSignature[last] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(v.verify(badSignature, now: Self.before).joseFailure == .badSignature)
    }

    @Test func rfc7515A1HS256() throws { try checkExample(Self.a1, Self.a1Key, .HS256) }
    @Test func rfc7515A2RS256() throws { try checkExample(Self.a2, Self.a2Key, .RS256) }
    @Test func rfc7515A3ES256() throws { try checkExample(Self.a3, Self.a3Key, .ES256) }

    @Test func rfc7515A2KeyCannotVerifyTheHS256Example() {
        // The RSA key set has no oct key: an HS256 token finds nothing to check against.
        #expect(joseVerifier(jwks: Self.a2Key).verify(Self.a1, now: Self.before).joseFailure == .unknownKey)
        // ... and the HMAC key cannot check RS256.
        #expect(joseVerifier(jwks: Self.a1Key).verify(Self.a2, now: Self.before).joseFailure == .unknownKey)
    }

    @Test func rfc8037A4Ed25519() throws {
        guard case .success(let set) = JSONWebKeySet.parse(joseBytes(Self.ed25519Key)) else {
            Issue.record("RFC 8037 key refused"); return
        }
        let key = try #require(set.keys.first)
        #expect(key.keyType == "OKP" && key.curve == "Ed25519" && key.canVerify(.EdDSA))
        let signature = try #require(base64URLDecode(Self.ed25519Signature))
        var input = Self.ed25519Input
        let ok = input.withUTF8 {
            JOSESignature.verify(.EdDSA, key: key, signingInput: UnsafeRawBufferPointer($0), signature: signature)
        }
        #expect(ok)
        var wrong = signature
        wrong[0] ^= 1
        let bad = input.withUTF8 {
            JOSESignature.verify(.EdDSA, key: key, signingInput: UnsafeRawBufferPointer($0), signature: wrong)
        }
        #expect(!bad)
        // As a JWT: the signature passes, then the payload ("Example of Ed25519 signing") is not a
        // JSON object.
        let v = joseVerifier(jwks: Self.ed25519Key, algorithms: [.EdDSA])
        #expect(v.verify("\(Self.ed25519Input).\(Self.ed25519Signature)", now: 0).joseFailure == .malformed)
        #expect(v.verify("\(Self.ed25519Input).\(base64URLEncode(wrong))", now: 0).joseFailure == .badSignature)
    }
}
