import CFuzzerShim
import COpenSSL
import OutriderFilters

// libFuzzer target for the JOSE code of the auth filter (Sources/OutriderFilters/JOSE): the
// strict JSON parser, strict base64/base64url, JWK set parsing into libcrypto keys, and JWT
// verification. Must never crash, trip ASan or leak.
//
// Input layout: 1 control byte, then a JWK set, a NUL byte, and a token. Without a NUL, all
// of it is the token and the key set is `defaultKeySet` (real RSA, EC P-256/P-384, Ed25519 and
// HMAC keys; the seeds hold tokens these keys signed, so the fuzzer starts past the signature).
//   bit 0: issuer required;  bit 1: audiences required;  bit 2: "sub" required;
//   bits 3-4: algorithms allowed — all / HS* / asymmetric / RS256+ES256;
//   bit 5: maxTokenBytes 512 (else the default 8192);  bit 6: no clock skew (else 60 s).
// Checks:
// - the key set: keys + skipped = the `keys` array's length, skipped in index order, key sizes
//   within the documented limits;
// - verification is deterministic (twice, same answer); an accepted token has an allowed
//   algorithm, an object as claims, the header's kid, and passes the issuer, audience and
//   required-claim rules as configured; claimString never crashes;
// - the token re-signed by this harness with its own HMAC key (HS256/384/512 as its header
//   says) against a set holding only that key: never `badSignature`; when accepted, its claims
//   are exactly the payload parsed alone;
// - base64url and base64 are strict: whatever decodes re-encodes to the same text, and
//   encoding then decoding gives the bytes back.
//
// This lives outside main.swift on purpose: closures in main.swift top-level code are
// main-actor isolated and trap when C calls them (DESIGN §5).

/// Hands the command line to libFuzzer (or to CFuzzerShim's replaying fallback). The callback is
/// referenced in the file that defines it: referencing a `@_cdecl` function as a C function
/// pointer from another file emits a second definition of its symbol.
func runFuzzDriver() -> Int32 {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}

/// 1 700 000 000: 2023-11-14T22:13:20Z. Seeds' exp/nbf are around it.
let now: Int64 = 1_700_000_000
let issuer = "https://issuer.example"
let audiences = ["api", "web"]

/// The harness's own HMAC secret (64 bytes: long enough for HS512) and its one-key set.
let hmacSecret: [UInt8] = (0..<64).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
let hmacKeySet: JSONWebKeySet = {
    let json = #"{"keys":[{"kty":"oct","kid":"fuzz-hmac","k":""# + base64URLEncode(hmacSecret) + #""}]}"#
    guard case .success(let set) = JSONWebKeySet.parse(Array(json.utf8)), set.keys.count == 1 else {
        preconditionFailure("the harness's HMAC key set does not load")
    }
    return set
}()

let parsedDefaultKeySet: JSONWebKeySet = {
    guard case .success(let set) = JSONWebKeySet.parse(Array(defaultKeySet.utf8)), set.skipped.isEmpty else {
        preconditionFailure("the default key set does not load whole")
    }
    return set
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let control = data[0]
    let rest = UnsafeBufferPointer(start: data + 1, count: size - 1)
    let keySet: JSONWebKeySet
    let token: [UInt8]
    if let separator = rest.firstIndex(of: 0) {
        let jwks = Array(rest[..<separator])
        token = Array(rest[(separator + 1)...])
        keySet = checkKeySet(jwks) ?? JSONWebKeySet(keys: [])
        checkBase64(jwks)
    } else {
        token = Array(rest)
        keySet = parsedDefaultKeySet
    }
    checkBase64(token)
    checkVerification(token, keySet: keySet, control: control)
    checkResigned(token, control: control)
    return 0
}

// MARK: key sets

func checkKeySet(_ json: [UInt8]) -> JSONWebKeySet? {
    let result = JSONWebKeySet.parse(json)
    let document = JSONValue.parse(json)
    precondition(document == JSONValue.parse(json), "JSON parsing is not deterministic")
    guard case .success(let set) = result else {
        if case .failure(.notAKeySet) = result { precondition(document != nil && document?["keys"]?.array == nil) }
        if case .failure(.invalidJSON) = result { precondition(document == nil) }
        return nil
    }
    guard let elements = document?["keys"]?.array else { preconditionFailure("a key set without a keys array") }
    precondition(set.keys.count + set.skipped.count == elements.count, "keys lost: \(set.keys.count) + \(set.skipped.count) of \(elements.count)")
    var lastIndex = -1
    for skipped in set.skipped {
        precondition(skipped.index > lastIndex && skipped.index < elements.count, "skipped keys out of order")
        lastIndex = skipped.index
        _ = skipped.reason.description
    }
    for key in set.keys {
        switch key.keyType {
        case "RSA": precondition(key.bits >= JSONWebKey.minimumRSABits && key.bits <= JSONWebKey.maximumRSABits)
        case "EC": precondition(key.bits == 256 || key.bits == 384)
        case "OKP": precondition(key.bits == 256)
        case "oct": precondition(key.bits >= JSONWebKey.minimumHMACBytes * 8)
        default: preconditionFailure("a key of type \(key.keyType)")
        }
        if let own = key.algorithm {
            precondition(key.canVerify(own), "a key that cannot verify its own alg \(own)")
            for other in JWSAlgorithm.allCases where other != own { precondition(!key.canVerify(other)) }
        }
    }
    return set
}

// MARK: verification

func verifier(_ keys: JSONWebKeySet, control: UInt8) -> JWTVerifier {
    let algorithms: Set<JWSAlgorithm>
    switch control >> 3 & 3 {
    case 0: algorithms = Set(JWSAlgorithm.allCases)
    case 1: algorithms = [.HS256, .HS384, .HS512]
    case 2: algorithms = Set(JWSAlgorithm.allCases.filter { !$0.rawValue.hasPrefix("HS") })
    default: algorithms = [.RS256, .ES256]
    }
    return JWTVerifier(keys: keys, algorithms: algorithms,
                       issuer: control & 1 != 0 ? issuer : nil,
                       audiences: control & 2 != 0 ? audiences : [],
                       clockSkewSeconds: control & 64 != 0 ? 0 : 60,
                       maxTokenBytes: control & 32 != 0 ? 512 : 8192,
                       requiredClaims: control & 4 != 0 ? ["sub"] : [])
}

enum Outcome: Equatable {
    case accepted(JSONValue, Int64?, JWSAlgorithm, String?)
    case refused(JWTFailure)

    init(_ result: Result<VerifiedJWT, JWTFailure>) {
        switch result {
        case .success(let jwt): self = .accepted(jwt.claims, jwt.expiresAt, jwt.algorithm, jwt.keyID)
        case .failure(let failure): self = .refused(failure)
        }
    }
}

@discardableResult
func checkVerification(_ token: [UInt8], keySet: JSONWebKeySet, control: UInt8) -> Outcome {
    let verifier = verifier(keySet, control: control)
    let result = verifier.verify(token, now: now)
    let outcome = Outcome(result)
    precondition(Outcome(verifier.verify(token, now: now)) == outcome, "verification is not deterministic")
    guard case .success(let jwt) = result else { return outcome }

    precondition(token.count <= verifier.maxTokenBytes)
    precondition(verifier.algorithms.contains(jwt.algorithm), "accepted with \(jwt.algorithm), not allowed")
    guard case .object = jwt.claims else { preconditionFailure("claims are not an object") }
    let segments = token.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
    precondition(segments.count == 3, "accepted a token of \(segments.count) segments")
    guard let headerBytes = base64URLDecode(Array(segments[0])), let header = JSONValue.parse(headerBytes) else {
        preconditionFailure("accepted a token whose header does not parse")
    }
    precondition(header["alg"]?.string == jwt.algorithm.rawValue)
    precondition(header["kid"]?.string == jwt.keyID, "keyID is not the header's kid")
    if let issuer = verifier.issuer { precondition(jwt.claims["iss"]?.string == issuer, "accepted another issuer") }
    if !verifier.audiences.isEmpty { precondition(jwt.claims["aud"] != nil, "accepted without an audience") }
    for name in verifier.requiredClaims {
        precondition(jwt.claims[name] != nil && jwt.claims[name] != .null, "accepted without \(name)")
    }
    if let exp = jwt.claims["exp"]?.double {
        precondition(Double(now) - Double(verifier.clockSkewSeconds) < exp, "accepted an expired token")
        precondition(jwt.expiresAt != nil)
    } else {
        precondition(jwt.expiresAt == nil, "expiresAt without exp")
    }
    for name in ["sub", "aud", "scope", "exp", "iss", "roles", "email"] { _ = jwt.claimString(name) }
    return outcome
}

/// The token's header and payload signed with the harness's HMAC key, verified against a set
/// holding only that key: whatever the answer, it cannot be a bad signature.
func checkResigned(_ token: [UInt8], control: UInt8) {
    let segments = token.split(separator: UInt8(ascii: "."), maxSplits: 2, omittingEmptySubsequences: false)
    let header = Array(segments[0])
    let payload = segments.count > 1 ? Array(segments[1]) : []
    let signingInput = header + [UInt8(ascii: ".")] + payload
    var digest: OpaquePointer? = EVP_sha256()
    var length = 32
    if let bytes = base64URLDecode(header), let alg = JSONValue.parse(bytes)?["alg"]?.string {
        switch alg {
        case "HS384": digest = EVP_sha384(); length = 48
        case "HS512": digest = EVP_sha512(); length = 64
        default: break
        }
    }
    var mac = [UInt8](repeating: 0, count: 64)
    var macLength: UInt32 = 0
    let produced = hmacSecret.withUnsafeBufferPointer { secret in
        signingInput.withUnsafeBufferPointer { input in
            HMAC(digest, secret.baseAddress, Int32(secret.count), input.baseAddress, input.count, &mac, &macLength)
        }
    }
    precondition(produced != nil && Int(macLength) == length, "HMAC failed")
    let signed = signingInput + [UInt8(ascii: ".")] + Array(base64URLEncode(Array(mac[0..<length])).utf8)

    // All algorithms allowed, so that only the token decides the answer.
    let verifier = JWTVerifier(keys: hmacKeySet, algorithms: Set(JWSAlgorithm.allCases),
                               issuer: control & 1 != 0 ? issuer : nil, audiences: control & 2 != 0 ? audiences : [],
                               clockSkewSeconds: 60, maxTokenBytes: 1 << 20, requiredClaims: control & 4 != 0 ? ["sub"] : [])
    switch verifier.verify(signed, now: now) {
    case .failure(let failure):
        precondition(failure != .badSignature, "a token signed with the set's own key has a bad signature")
    case .success(let jwt):
        guard let payloadBytes = base64URLDecode(payload), let claims = JSONValue.parse(payloadBytes) else {
            preconditionFailure("accepted a payload that does not parse alone")
        }
        precondition(claims == jwt.claims, "the claims differ from the payload parsed alone")
        precondition(jwt.algorithm.rawValue.hasPrefix("HS"))
    }
}

// MARK: base64

func checkBase64(_ bytes: [UInt8]) {
    // Strict decoding: one text per byte string.
    for segment in bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).prefix(4) {
        let text = Array(segment)
        if let decoded = base64URLDecode(text) {
            precondition(Array(base64URLEncode(decoded).utf8) == text, "base64url: another text decodes to the same bytes")
        }
        if let decoded = base64Decode(text) {
            precondition(Array(base64Encode(decoded).utf8) == text, "base64: another text decodes to the same bytes")
        }
    }
    precondition(base64URLDecode(Array(base64URLEncode(bytes).utf8)) == bytes, "base64url does not round-trip")
    precondition(base64Decode(Array(base64Encode(bytes).utf8)) == bytes, "base64 does not round-trip")
}
