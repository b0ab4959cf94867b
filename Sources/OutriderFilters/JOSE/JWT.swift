// JWT verification (RFC 7519, compact JWS of RFC 7515, algorithms of RFC 7518/8037), with the
// RFC 8725 rules: an allow-list of algorithms, `none` always refused, the algorithm must fit
// the key type, `crit` refused, strict base64url and JSON.
import COpenSSL

public enum JWSAlgorithm: String, Sendable, CaseIterable {
    case HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA

    /// Output bytes of the hash (0 for EdDSA, which hashes internally).
    var hashLength: Int {
        switch self {
        case .HS256, .RS256, .PS256, .ES256: return 32
        case .HS384, .RS384, .PS384, .ES384: return 48
        case .HS512, .RS512, .PS512: return 64
        case .EdDSA: return 0
        }
    }

    /// The hash, fetched from the default provider once per process (EVP_sha256() & co. would
    /// fetch it again on every use). Never freed.
    var digest: OpaquePointer? {
        switch self {
        case .HS256, .RS256, .PS256, .ES256: return FetchedDigest.sha256
        case .HS384, .RS384, .PS384, .ES384: return FetchedDigest.sha384
        case .HS512, .RS512, .PS512: return FetchedDigest.sha512
        case .EdDSA: return nil
        }
    }
}

private enum FetchedDigest {
    nonisolated(unsafe) static let sha256 = EVP_MD_fetch(nil, "SHA2-256", nil) ?? EVP_sha256()
    nonisolated(unsafe) static let sha384 = EVP_MD_fetch(nil, "SHA2-384", nil) ?? EVP_sha384()
    nonisolated(unsafe) static let sha512 = EVP_MD_fetch(nil, "SHA2-512", nil) ?? EVP_sha512()
}

public enum JWTFailure: String, Sendable, Error {
    /// Not three base64url segments, header/payload not strict JSON objects, no string `alg`,
    /// `typ` other than JWT/at+jwt, `crit` present, a non-numeric `exp`/`nbf`, a non-string `kid`.
    case malformed
    /// Longer than `maxTokenBytes`.
    case tooLarge
    /// `alg` is "none" in any casing.
    case algorithmNone
    /// `alg` is not in the configured list (or is no JWS algorithm Outrider knows).
    case algorithmNotAllowed
    /// No key with the header's `kid`; or, without `kid`, no key that can verify `alg`.
    case unknownKey
    /// Keys with the header's `kid` exist but none fits `alg` (wrong type, curve, own `alg`, or
    /// an HMAC secret shorter than the hash).
    case keyTypeMismatch
    case badSignature
    case expired
    case notYetValid
    case wrongIssuer
    case wrongAudience
    /// A claim listed in `requiredClaims` is absent (or null).
    case missingClaim
    /// OIDC: `email_verified` is false, so the email cannot name the user.
    case unverifiedEmail
}

public struct VerifiedJWT: Sendable {
    /// The payload: always a JSON object.
    public let claims: JSONValue
    /// `exp` in unix seconds (rounded down), if the token has one.
    public let expiresAt: Int64?
    public let algorithm: JWSAlgorithm
    /// The `kid` of the header, if any.
    public let keyID: String?

    public init(claims: JSONValue, expiresAt: Int64?, algorithm: JWSAlgorithm, keyID: String? = nil) {
        self.claims = claims
        self.expiresAt = expiresAt
        self.algorithm = algorithm
        self.keyID = keyID
    }

    /// A claim as text: strings as they are, integral numbers in decimal, other numbers as
    /// Swift prints a Double, booleans as true/false, arrays of such scalars joined with ",".
    /// nil for a missing claim, null, objects, and arrays holding objects, arrays or null.
    /// The text is the issuer's: a caller putting it into a header must refuse CR, LF and
    /// other control characters.
    public func claimString(_ name: String) -> String? {
        guard let value = claims[name] else { return nil }
        if let scalar = Self.render(value) { return scalar }
        guard let elements = value.array else { return nil }
        var parts: [String] = []
        parts.reserveCapacity(elements.count)
        for element in elements {
            guard let part = Self.render(element) else { return nil }
            parts.append(part)
        }
        return parts.joined(separator: ",")
    }

    private static func render(_ value: JSONValue) -> String? {
        switch value {
        case .string(let string): return string
        case .bool(let bool): return bool ? "true" : "false"
        case .number(let double, let exact):
            if let exact { return String(exact) }
            return String(double)
        default: return nil
        }
    }
}

public struct JWTVerifier: Sendable {
    public let keys: JSONWebKeySet
    public let algorithms: Set<JWSAlgorithm>
    public let issuer: String?
    public let audiences: [String]
    public let clockSkewSeconds: Int64
    public let maxTokenBytes: Int
    /// Claims that must be present (not null), checked after the others (e.g. the identity claim).
    public let requiredClaims: [String]

    public init(keys: JSONWebKeySet, algorithms: Set<JWSAlgorithm>, issuer: String?, audiences: [String],
                clockSkewSeconds: Int64, maxTokenBytes: Int = 8192, requiredClaims: [String] = []) {
        self.keys = keys
        self.algorithms = algorithms
        self.issuer = issuer
        self.audiences = audiences
        self.clockSkewSeconds = max(0, clockSkewSeconds)
        self.maxTokenBytes = maxTokenBytes
        self.requiredClaims = requiredClaims
    }

    public func verify(_ token: [UInt8], now: Int64) -> Result<VerifiedJWT, JWTFailure> {
        token.withUnsafeBytes { verify($0, now: now) }
    }

    public func verify(_ token: String, now: Int64) -> Result<VerifiedJWT, JWTFailure> {
        var token = token
        return token.withUTF8 { verify(UnsafeRawBufferPointer($0), now: now) }
    }

    public func verify(_ token: UnsafeRawBufferPointer, now: Int64) -> Result<VerifiedJWT, JWTFailure> {
        guard token.count <= maxTokenBytes else { return .failure(.tooLarge) }
        // Exactly three segments.
        var firstDot = -1, secondDot = -1
        for index in 0..<token.count where token[index] == UInt8(ascii: ".") {
            if firstDot < 0 { firstDot = index }
            else if secondDot < 0 { secondDot = index }
            else { return .failure(.malformed) }
        }
        guard secondDot > 0 else { return .failure(.malformed) }
        let headerSegment = UnsafeRawBufferPointer(rebasing: token[0..<firstDot])
        let payloadSegment = UnsafeRawBufferPointer(rebasing: token[(firstDot + 1)..<secondDot])
        let signatureSegment = UnsafeRawBufferPointer(rebasing: token[(secondDot + 1)...])
        let signingInput = UnsafeRawBufferPointer(rebasing: token[0..<secondDot])

        // Header.
        guard let headerBytes = base64URLDecode(headerSegment),
              let header = JSONValue.parse(headerBytes), case .object = header,
              let alg = header["alg"]?.string else { return .failure(.malformed) }
        if alg.lowercased() == "none" { return .failure(.algorithmNone) }
        if header["crit"] != nil { return .failure(.malformed) }
        if let typ = header["typ"] {
            guard let string = typ.string?.lowercased(), string == "jwt" || string == "at+jwt" else {
                return .failure(.malformed)
            }
        }
        var kid: String? = nil
        if let value = header["kid"] {
            guard let string = value.string else { return .failure(.malformed) }
            kid = string
        }
        guard let algorithm = JWSAlgorithm(rawValue: alg), algorithms.contains(algorithm) else {
            return .failure(.algorithmNotAllowed)
        }

        // The other two segments must be strict base64url before any key is touched.
        guard let signature = base64URLDecode(signatureSegment),
              let payloadBytes = base64URLDecode(payloadSegment) else { return .failure(.malformed) }

        // Key selection and signature.
        var sawKid = false, sawFit = false, verified = false
        for key in keys.keys {
            if let kid {
                guard key.kid == kid else { continue }
                sawKid = true
            }
            guard key.canVerify(algorithm) else { continue }
            sawFit = true
            if JOSESignature.verify(algorithm, key: key, signingInput: signingInput, signature: signature) {
                verified = true
                break
            }
        }
        if !verified {
            if kid != nil && !sawKid { return .failure(.unknownKey) }
            if !sawFit { return .failure(kid != nil ? .keyTypeMismatch : .unknownKey) }
            return .failure(.badSignature)
        }

        // Claims, after the signature: only authenticated bytes reach the payload parser.
        guard let claims = JSONValue.parse(payloadBytes), case .object = claims else { return .failure(.malformed) }
        let skew = Double(clockSkewSeconds)
        var expiresAt: Int64? = nil
        if let exp = claims["exp"] {
            guard let value = exp.double else { return .failure(.malformed) }
            // RFC 7519 §4.1.4: the current time must be before exp (plus leeway).
            guard Double(now) - skew < value else { return .failure(.expired) }
            expiresAt = exp.int64 ?? Int64(exactly: value.rounded(.down)) ?? Int64.max
        }
        if let nbf = claims["nbf"] {
            guard let value = nbf.double else { return .failure(.malformed) }
            guard value <= Double(now) + skew else { return .failure(.notYetValid) }
        }
        if let issuer {
            guard claims["iss"]?.string == issuer else { return .failure(.wrongIssuer) }
        }
        if !audiences.isEmpty {
            var matched = false
            switch claims["aud"] {
            case .string(let aud)?: matched = audiences.contains(aud)
            case .array(let list)?:
                matched = list.contains { element in element.string.map(audiences.contains) ?? false }
            default: matched = false
            }
            guard matched else { return .failure(.wrongAudience) }
        }
        for name in requiredClaims {
            guard let value = claims[name], !value.isNull else { return .failure(.missingClaim) }
        }
        return .success(VerifiedJWT(claims: claims, expiresAt: expiresAt, algorithm: algorithm, keyID: kid))
    }
}

/// Signature checks over libcrypto's EVP interface. Every failure path clears the thread's
/// OpenSSL error queue, so that a TLS engine on the same thread never sees a stale error.
enum JOSESignature {
    static func verify(_ algorithm: JWSAlgorithm, key: JSONWebKey, signingInput: UnsafeRawBufferPointer,
                       signature: [UInt8]) -> Bool {
        let result = signature.withUnsafeBytes { signature -> Bool in
            switch algorithm {
            case .HS256, .HS384, .HS512:
                return verifyHMAC(algorithm, key: key, input: signingInput, signature: signature)
            case .RS256, .RS384, .RS512:
                guard signature.count == (key.bits + 7) / 8 else { return false }
                return digestVerify(algorithm, pkey: key.pkey, padding: RSA_PKCS1_PADDING,
                                    input: signingInput, signature: signature)
            case .PS256, .PS384, .PS512:
                guard signature.count == (key.bits + 7) / 8 else { return false }
                return digestVerify(algorithm, pkey: key.pkey, padding: RSA_PKCS1_PSS_PADDING,
                                    input: signingInput, signature: signature)
            case .ES256, .ES384:
                let size = algorithm == .ES256 ? 32 : 48
                guard signature.count == 2 * size else { return false }
                let der = ecdsaDER(signature, size: size)
                return der.withUnsafeBytes {
                    digestVerify(algorithm, pkey: key.pkey, padding: nil, input: signingInput, signature: $0)
                }
            case .EdDSA:
                guard signature.count == 64 else { return false }
                return digestVerify(algorithm, pkey: key.pkey, padding: nil, input: signingInput, signature: signature)
            }
        }
        if !result { ERR_clear_error() }
        return result
    }

    static func verifyHMAC(_ algorithm: JWSAlgorithm, key: JSONWebKey, input: UnsafeRawBufferPointer,
                           signature: UnsafeRawBufferPointer) -> Bool {
        // The length of a MAC is public; its bytes are compared in constant time.
        guard signature.count == algorithm.hashLength, let secret = key.secret.baseAddress,
              key.secret.count >= algorithm.hashLength else { return false }
        var mac = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &mac) { mac -> Bool in
            var length: UInt32 = 0
            let out = mac.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard HMAC(algorithm.digest, secret, Int32(key.secret.count),
                       input.baseAddress?.assumingMemoryBound(to: UInt8.self), input.count, out, &length) != nil,
                  Int(length) == algorithm.hashLength else { return false }
            let equal = constantTimeEquals(UnsafeRawBufferPointer(rebasing: mac[0..<Int(length)]), signature)
            OPENSSL_cleanse(mac.baseAddress, mac.count)
            return equal
        }
    }

    static func digestVerify(_ algorithm: JWSAlgorithm, pkey: OpaquePointer?, padding: Int32?,
                             input: UnsafeRawBufferPointer, signature: UnsafeRawBufferPointer) -> Bool {
        guard let pkey, let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx) }
        var pctx: OpaquePointer? = nil
        let md = algorithm.digest
        guard EVP_DigestVerifyInit(ctx, &pctx, md, nil, pkey) == 1 else { return false }
        if let padding {
            guard let pctx, EVP_PKEY_CTX_set_rsa_padding(pctx, padding) == 1 else { return false }
            if padding == RSA_PKCS1_PSS_PADDING {
                // RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash.
                guard EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) == 1,
                      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, Int32(algorithm.hashLength)) == 1 else { return false }
            }
        }
        // An empty buffer may have a nil base; libcrypto wants a pointer.
        var empty: UInt8 = 0
        return withUnsafePointer(to: &empty) { emptyPointer in
            let sig = signature.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? emptyPointer
            let tbs = input.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? emptyPointer
            return EVP_DigestVerify(ctx, sig, signature.count, tbs, input.count) == 1
        }
    }

    /// JWS r||s (each `size` bytes, big-endian) to a DER ECDSA-Sig-Value.
    static func ecdsaDER(_ raw: UnsafeRawBufferPointer, size: Int) -> [UInt8] {
        func integer(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
            var start = 0
            while start < bytes.count - 1 && bytes[start] == 0 { start += 1 }
            var body = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start...]))
            if body[0] & 0x80 != 0 { body.insert(0, at: 0) }
            return [0x02, UInt8(body.count)] + body
        }
        let r = integer(UnsafeRawBufferPointer(rebasing: raw[0..<size]))
        let s = integer(UnsafeRawBufferPointer(rebasing: raw[size..<(2 * size)]))
        // At most 2 * (2 + 49) = 102 content bytes: the short length form always applies.
        return [0x30, UInt8(r.count + s.count)] + r + s
    }
}

extension JOSESignature {
    /// For tests: nothing left on this thread's OpenSSL error queue.
    static var errorQueueIsEmpty: Bool { ERR_peek_error() == 0 }
}
