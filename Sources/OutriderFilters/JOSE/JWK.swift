// JSON Web Keys (RFC 7517/7518/8037) turned into libcrypto EVP_PKEYs (public keys only) or
// HMAC secrets. Keys that cannot be used for JWS verification are skipped with a reason.
import COpenSSL

public enum JWKSError: Error, Sendable, Equatable {
    /// More than 1 MiB.
    case tooLarge
    /// Not strict RFC 8259 JSON (see `JSONValue`).
    case invalidJSON
    /// Not an object with a `keys` array.
    case notAKeySet
}

/// Why one JWK of a set was not loaded.
public enum JWKRejection: Error, Sendable, Equatable, CustomStringConvertible {
    case notAnObject
    case unsupportedKeyType(String)
    case unsupportedCurve(String)
    /// `use` is not "sig", or `key_ops` does not include "verify".
    case notForSignatures
    /// `alg` names no supported JWS algorithm, or one that does not fit the key.
    case unsupportedAlgorithm(String)
    case missingMember(String)
    case invalidMember(String)
    /// RSA modulus under 2048 bits, HMAC secret under 32 bytes (or under the hash length of its `alg`).
    case keyTooSmall(bits: Int)
    case keyTooLarge(bits: Int)
    /// libcrypto refused the key material (e.g. an EC point not on the curve).
    case invalidKey

    public var description: String {
        switch self {
        case .notAnObject: return "not a JSON object"
        case .unsupportedKeyType(let kty): return "unsupported kty \"\(kty)\""
        case .unsupportedCurve(let crv): return "unsupported crv \"\(crv)\""
        case .notForSignatures: return "not a signature verification key (use/key_ops)"
        case .unsupportedAlgorithm(let alg): return "unsupported or mismatched alg \"\(alg)\""
        case .missingMember(let name): return "missing \"\(name)\""
        case .invalidMember(let name): return "invalid \"\(name)\""
        case .keyTooSmall(let bits): return "key too small (\(bits) bits)"
        case .keyTooLarge(let bits): return "key too large (\(bits) bits)"
        case .invalidKey: return "key material refused by libcrypto"
        }
    }
}

public final class JSONWebKey: @unchecked Sendable {
    public let kid: String?
    /// "RSA", "EC", "OKP" or "oct".
    public let keyType: String
    /// "P-256", "P-384" (EC), "Ed25519" (OKP), nil otherwise.
    public let curve: String?
    /// From the JWK's `alg`, when present: the only algorithm this key verifies.
    public let algorithm: JWSAlgorithm?
    public let use: String?
    /// RSA modulus size, EC/OKP field size, HMAC secret size, in bits.
    public let bits: Int

    /// EVP_PKEY* (public key) for RSA, EC and OKP; nil for oct. Immutable after init, so it
    /// can be used for verification from several threads at once.
    let pkey: OpaquePointer?
    /// The HMAC secret for oct; cleansed in deinit.
    let secret: UnsafeMutableRawBufferPointer

    public static let minimumRSABits = 2048
    public static let maximumRSABits = 16384
    public static let minimumHMACBytes = 32

    private init(kid: String?, keyType: String, curve: String?, algorithm: JWSAlgorithm?, use: String?,
                 bits: Int, pkey: OpaquePointer?, secret: [UInt8]) {
        self.kid = kid
        self.keyType = keyType
        self.curve = curve
        self.algorithm = algorithm
        self.use = use
        self.bits = bits
        self.pkey = pkey
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(secret.count, 1), alignment: 1)
        secret.withUnsafeBytes { storage.copyMemory(from: $0) }
        self.secret = UnsafeMutableRawBufferPointer(rebasing: storage[0..<secret.count])
    }

    deinit {
        if let pkey { EVP_PKEY_free(pkey) }
        if let base = secret.baseAddress {
            OPENSSL_cleanse(base, secret.count)
            base.deallocate()
        }
    }

    /// Whether this key can verify `algorithm`: its type (and curve) fits, its own `alg` (if
    /// any) is the same, and an HMAC secret is at least as long as the hash.
    public func canVerify(_ algorithm: JWSAlgorithm) -> Bool {
        if let own = self.algorithm, own != algorithm { return false }
        return fits(algorithm)
    }

    /// The type check alone (no `alg` comparison).
    func fits(_ algorithm: JWSAlgorithm) -> Bool {
        switch algorithm {
        case .HS256, .HS384, .HS512:
            return keyType == "oct" && secret.count >= algorithm.hashLength
        case .RS256, .RS384, .RS512, .PS256, .PS384, .PS512:
            return keyType == "RSA"
        case .ES256:
            return keyType == "EC" && curve == "P-256"
        case .ES384:
            return keyType == "EC" && curve == "P-384"
        case .EdDSA:
            return keyType == "OKP" && curve == "Ed25519"
        }
    }

    /// Builds a public verification key from one JWK object. Private members (`d`, `p`, ...)
    /// are ignored.
    public static func parse(_ jwk: JSONValue) -> Result<JSONWebKey, JWKRejection> {
        guard case .object = jwk else { return .failure(.notAnObject) }
        guard let ktyValue = jwk["kty"] else { return .failure(.missingMember("kty")) }
        guard let kty = ktyValue.string else { return .failure(.invalidMember("kty")) }

        var kid: String? = nil
        if let value = jwk["kid"] {
            guard let string = value.string else { return .failure(.invalidMember("kid")) }
            kid = string
        }
        var use: String? = nil
        if let value = jwk["use"] {
            guard let string = value.string else { return .failure(.invalidMember("use")) }
            guard string == "sig" else { return .failure(.notForSignatures) }
            use = string
        }
        if let value = jwk["key_ops"] {
            guard let ops = value.array else { return .failure(.invalidMember("key_ops")) }
            guard ops.contains(.string("verify")) else { return .failure(.notForSignatures) }
        }
        var algorithm: JWSAlgorithm? = nil
        if let value = jwk["alg"] {
            guard let string = value.string else { return .failure(.invalidMember("alg")) }
            guard let alg = JWSAlgorithm(rawValue: string) else { return .failure(.unsupportedAlgorithm(string)) }
            algorithm = alg
        }

        let built: Result<JSONWebKey, JWKRejection>
        switch kty {
        case "RSA": built = rsaKey(jwk, kid: kid, algorithm: algorithm, use: use)
        case "EC": built = ecKey(jwk, kid: kid, algorithm: algorithm, use: use)
        case "OKP": built = okpKey(jwk, kid: kid, algorithm: algorithm, use: use)
        case "oct": built = octKey(jwk, kid: kid, algorithm: algorithm, use: use)
        default: return .failure(.unsupportedKeyType(kty))
        }
        ERR_clear_error()
        if case .success(let key) = built, let algorithm, !key.fits(algorithm) {
            return .failure(.unsupportedAlgorithm(algorithm.rawValue))
        }
        return built
    }

    private static func member(_ jwk: JSONValue, _ name: String) -> Result<[UInt8], JWKRejection> {
        guard let value = jwk[name] else { return .failure(.missingMember(name)) }
        guard let string = value.string, let bytes = base64URLDecode(string), !bytes.isEmpty else {
            return .failure(.invalidMember(name))
        }
        return .success(bytes)
    }

    private static func rsaKey(_ jwk: JSONValue, kid: String?, algorithm: JWSAlgorithm?,
                               use: String?) -> Result<JSONWebKey, JWKRejection> {
        let n: [UInt8], e: [UInt8]
        switch member(jwk, "n") { case .success(let v): n = v; case .failure(let f): return .failure(f) }
        switch member(jwk, "e") { case .success(let v): e = v; case .failure(let f): return .failure(f) }
        let modulus = Array(n.drop(while: { $0 == 0 }))
        let exponent = Array(e.drop(while: { $0 == 0 }))
        guard let top = modulus.first else { return .failure(.invalidMember("n")) }
        let bits = modulus.count * 8 - top.leadingZeroBitCount
        guard bits >= minimumRSABits else { return .failure(.keyTooSmall(bits: bits)) }
        guard bits <= maximumRSABits else { return .failure(.keyTooLarge(bits: bits)) }
        guard modulus.last! & 1 == 1 else { return .failure(.invalidMember("n")) }
        // e odd, > 1, at most 64 bits (what libcrypto accepts for large moduli).
        guard let low = exponent.last, low & 1 == 1, exponent.count <= 8,
              exponent.count > 1 || low > 1 else { return .failure(.invalidMember("e")) }

        let nBN = modulus.withUnsafeBufferPointer { BN_bin2bn($0.baseAddress, Int32($0.count), nil) }
        let eBN = exponent.withUnsafeBufferPointer { BN_bin2bn($0.baseAddress, Int32($0.count), nil) }
        defer { BN_free(nBN); BN_free(eBN) }
        guard nBN != nil, eBN != nil else { return .failure(.invalidKey) }
        let pkey = fromData(keyType: "RSA") { bld in
            OSSL_PARAM_BLD_push_BN(bld, cString(ParamName.rsaN), nBN) == 1
                && OSSL_PARAM_BLD_push_BN(bld, cString(ParamName.rsaE), eBN) == 1
        }
        guard let pkey else { return .failure(.invalidKey) }
        return .success(JSONWebKey(kid: kid, keyType: "RSA", curve: nil, algorithm: algorithm, use: use,
                                   bits: bits, pkey: pkey, secret: []))
    }

    private static func ecKey(_ jwk: JSONValue, kid: String?, algorithm: JWSAlgorithm?,
                              use: String?) -> Result<JSONWebKey, JWKRejection> {
        guard let crvValue = jwk["crv"] else { return .failure(.missingMember("crv")) }
        guard let crv = crvValue.string else { return .failure(.invalidMember("crv")) }
        let group: StaticString, size: Int
        switch crv {
        case "P-256": group = "prime256v1"; size = 32
        case "P-384": group = "secp384r1"; size = 48
        default: return .failure(.unsupportedCurve(crv))
        }
        let x: [UInt8], y: [UInt8]
        switch member(jwk, "x") { case .success(let v): x = v; case .failure(let f): return .failure(f) }
        switch member(jwk, "y") { case .success(let v): y = v; case .failure(let f): return .failure(f) }
        // RFC 7518 §6.2.1.2: the full coordinate length, leading zeros included.
        guard x.count == size else { return .failure(.invalidMember("x")) }
        guard y.count == size else { return .failure(.invalidMember("y")) }
        let point: [UInt8] = [0x04] + x + y

        let pkey = point.withUnsafeBytes { raw in
            fromData(keyType: "EC") { bld in
                OSSL_PARAM_BLD_push_utf8_string(bld, cString(ParamName.group), cString(group), 0) == 1
                    && OSSL_PARAM_BLD_push_octet_string(bld, cString(ParamName.publicKey), raw.baseAddress, raw.count) == 1
            }
        }
        guard let pkey else { return .failure(.invalidKey) }
        // The point is on the curve, not the point at infinity, and of the right order.
        guard publicCheck(pkey) else {
            EVP_PKEY_free(pkey)
            return .failure(.invalidKey)
        }
        return .success(JSONWebKey(kid: kid, keyType: "EC", curve: crv, algorithm: algorithm, use: use,
                                   bits: size * 8, pkey: pkey, secret: []))
    }

    private static func okpKey(_ jwk: JSONValue, kid: String?, algorithm: JWSAlgorithm?,
                               use: String?) -> Result<JSONWebKey, JWKRejection> {
        guard let crvValue = jwk["crv"] else { return .failure(.missingMember("crv")) }
        guard let crv = crvValue.string else { return .failure(.invalidMember("crv")) }
        guard crv == "Ed25519" else { return .failure(.unsupportedCurve(crv)) }
        let x: [UInt8]
        switch member(jwk, "x") { case .success(let v): x = v; case .failure(let f): return .failure(f) }
        guard x.count == 32 else { return .failure(.invalidMember("x")) }
        let pkey = x.withUnsafeBufferPointer {
            EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.baseAddress, $0.count)
        }
        guard let pkey else { return .failure(.invalidKey) }
        return .success(JSONWebKey(kid: kid, keyType: "OKP", curve: crv, algorithm: algorithm, use: use,
                                   bits: 256, pkey: pkey, secret: []))
    }

    private static func octKey(_ jwk: JSONValue, kid: String?, algorithm: JWSAlgorithm?,
                               use: String?) -> Result<JSONWebKey, JWKRejection> {
        let k: [UInt8]
        switch member(jwk, "k") { case .success(let v): k = v; case .failure(let f): return .failure(f) }
        let needed = max(minimumHMACBytes, algorithm?.hashLength ?? 0)
        guard k.count >= needed else { return .failure(.keyTooSmall(bits: k.count * 8)) }
        return .success(JSONWebKey(kid: kid, keyType: "oct", curve: nil, algorithm: algorithm, use: use,
                                   bits: k.count * 8, pkey: nil, secret: k))
    }

    /// OSSL_PARAM names. OSSL_PARAM_BLD keeps the name and value pointers it is given until
    /// OSSL_PARAM_BLD_to_param, so they must outlive the push calls: static strings, and value
    /// buffers held open around the whole build (never a String bridged for one call).
    private enum ParamName {
        static let rsaN: StaticString = "n"          // OSSL_PKEY_PARAM_RSA_N
        static let rsaE: StaticString = "e"          // OSSL_PKEY_PARAM_RSA_E
        static let group: StaticString = "group"     // OSSL_PKEY_PARAM_GROUP_NAME
        static let publicKey: StaticString = "pub"   // OSSL_PKEY_PARAM_PUB_KEY
    }

    /// EVP_PKEY_fromdata with the public-key selection, over the parameters `push` adds.
    private static func fromData(keyType: StaticString, push: (OpaquePointer) -> Bool) -> OpaquePointer? {
        guard let bld = OSSL_PARAM_BLD_new() else { return nil }
        defer { OSSL_PARAM_BLD_free(bld) }
        guard push(bld), let params = OSSL_PARAM_BLD_to_param(bld) else { return nil }
        defer { OSSL_PARAM_free(params) }
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, cString(keyType), nil)
        else { return nil }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_fromdata_init(ctx) == 1 else { return nil }
        var pkey: OpaquePointer? = nil
        // EVP_PKEY_PUBLIC_KEY is a macro expression Swift does not import.
        let selection = OSSL_KEYMGMT_SELECT_PUBLIC_KEY | OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS
            | OSSL_KEYMGMT_SELECT_OTHER_PARAMETERS
        guard EVP_PKEY_fromdata(ctx, &pkey, Int32(selection), params) == 1 else { return nil }
        return pkey
    }

    /// A static string's bytes, NUL-terminated and immortal, as `const char *`.
    private static func cString(_ string: StaticString) -> UnsafePointer<CChar> {
        UnsafeRawPointer(string.utf8Start).assumingMemoryBound(to: CChar.self)
    }

    private static func publicCheck(_ pkey: OpaquePointer) -> Bool {
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, pkey, nil) else { return false }
        defer { EVP_PKEY_CTX_free(ctx) }
        return EVP_PKEY_public_check(ctx) == 1
    }
}

public struct JSONWebKeySet: Sendable {
    public struct Skipped: Sendable, Equatable {
        /// Position in the `keys` array.
        public let index: Int
        public let kid: String?
        public let reason: JWKRejection
    }

    public let keys: [JSONWebKey]
    /// Keys present in the document but not loaded, with why (for a log line).
    public let skipped: [Skipped]
    public var skippedCount: Int { skipped.count }

    public init(keys: [JSONWebKey], skipped: [Skipped] = []) {
        self.keys = keys
        self.skipped = skipped
    }

    /// Parses `{"keys": [...]}`. Only a document that is not a key set is an error; unusable keys
    /// are skipped (see `skipped`), so the result may hold no keys at all.
    public static func parse(_ json: [UInt8]) -> Result<JSONWebKeySet, JWKSError> {
        guard json.count <= JSONValue.maxInputBytes else { return .failure(.tooLarge) }
        guard let document = JSONValue.parse(json) else { return .failure(.invalidJSON) }
        guard let array = document["keys"]?.array else { return .failure(.notAKeySet) }
        var keys: [JSONWebKey] = []
        var skipped: [Skipped] = []
        for (index, element) in array.enumerated() {
            switch JSONWebKey.parse(element) {
            case .success(let key): keys.append(key)
            case .failure(let reason): skipped.append(Skipped(index: index, kid: element["kid"]?.string, reason: reason))
            }
        }
        return .success(JSONWebKeySet(keys: keys, skipped: skipped))
    }
}
