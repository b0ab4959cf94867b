// Helpers shared by the JOSE*Tests files.
import Foundation
import Testing
@testable import OutriderFilters

func joseBytes(_ string: String) -> [UInt8] { Array(string.utf8) }

func joseB64u(_ string: String) -> String { base64URLEncode(Array(string.utf8)) }

/// A verifier over a JWKS given as JSON text.
func joseVerifier(jwks: String, algorithms: Set<JWSAlgorithm> = Set(JWSAlgorithm.allCases), issuer: String? = nil,
              audiences: [String] = [], skew: Int64 = 0, maxTokenBytes: Int = 8192,
              requiredClaims: [String] = []) -> JWTVerifier {
    guard case .success(let set) = JSONWebKeySet.parse(joseBytes(jwks)) else { fatalError("bad test JWKS: \(jwks)") }
    return JWTVerifier(keys: set, algorithms: algorithms, issuer: issuer, audiences: audiences,
                       clockSkewSeconds: skew, maxTokenBytes: maxTokenBytes, requiredClaims: requiredClaims)
}

extension Result {
    var joseFailure: Failure? { if case .failure(let f) = self { return f }; return nil }
    var joseSuccess: Success? { if case .success(let s) = self { return s }; return nil }
}

/// Tests/OutriderFiltersTests/Fixtures/jwt_fixtures.json, written by make_jwt_fixtures.py.
struct JWTFixtures: @unchecked Sendable {
    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let token: String
        let expect: String
        let algorithms: [String]?
        let maxTokenBytes: Int?
        let sub: String?
        /// nil: not checked; .some(nil): the token has no exp.
        let exp: Int64??
        var testDescription: String { name }
    }

    let now: Int64
    let skew: Int64
    let issuer: String
    let audiences: [String]
    let jwks: String
    let loaded: [String]
    let skipped: [String]
    let cases: [Case]

    static let shared = JWTFixtures()

    private init() {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/jwt_fixtures.json")
        let data = try! Data(contentsOf: url)
        let root = try! JSONSerialization.jsonObject(with: data) as! [String: Any]
        now = (root["now"] as! NSNumber).int64Value
        skew = (root["skew"] as! NSNumber).int64Value
        issuer = root["issuer"] as! String
        audiences = root["audiences"] as! [String]
        jwks = root["jwks"] as! String
        loaded = root["loaded"] as! [String]
        skipped = root["skipped"] as! [String]
        cases = (root["cases"] as! [[String: Any]]).map { entry in
            var exp: Int64?? = nil
            if entry.keys.contains("exp") {
                exp = .some((entry["exp"] as? NSNumber)?.int64Value)
            }
            return Case(name: entry["name"] as! String, token: entry["token"] as! String,
                        expect: entry["expect"] as! String, algorithms: entry["algorithms"] as? [String],
                        maxTokenBytes: (entry["maxTokenBytes"] as? NSNumber)?.intValue,
                        sub: entry["sub"] as? String, exp: exp)
        }
    }
}
