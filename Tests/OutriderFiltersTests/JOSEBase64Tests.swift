// Strict base64url / base64, SHA-256 and constant-time comparison.
import Testing
@testable import OutriderFilters

@Suite("JOSE base64 and digests")
struct JOSEBase64Tests {
    @Test func base64URLRoundTrips() {
        for length in 0..<70 {
            let data = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 251) }
            let encoded = base64URLEncode(data)
            #expect(!encoded.contains("=") && !encoded.contains("+") && !encoded.contains("/"))
            #expect(base64URLDecode(encoded) == data)
            let standard = base64Encode(data)
            #expect(standard.count % 4 == 0)
            #expect(base64Decode(standard) == data)
        }
    }

    @Test func rfc4648Vectors() {
        let vectors = [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"),
                       ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy")]
        for (plain, encoded) in vectors {
            #expect(base64URLDecode(encoded) == Array(plain.utf8))
            #expect(base64URLEncode(Array(plain.utf8)) == encoded)
            let padded = encoded + String(repeating: "=", count: (4 - encoded.count % 4) % 4)
            #expect(base64Decode(padded) == Array(plain.utf8))
        }
        #expect(base64URLDecode("-_8") == [0xFB, 0xFF])
        #expect(base64Decode("+/8=") == [0xFB, 0xFF])
    }

    @Test(arguments: ["Zg==", "Zg=", "Zm8=", "Z", "Zm9vY", "Zm 9v", "Zm9v\n", " Zm9v", "Zm9v+", "Zm/v", "Zm9v.",
                      "Zh", "Zm9", "Zm8x=", "=", "===="])
    func base64URLRejects(_ text: String) {
        #expect(base64URLDecode(text) == nil, "\(text.debugDescription)")
    }

    @Test(arguments: ["Zg", "Zg=", "Zm8", "Zh==", "Zm9=", "Zm9v-_==", "Zm9v\n", "Z===", "=Zm9", "Zg==Zg==", "====",
                      "Zm 9v", "Zm9vYg=a"])
    func base64Rejects(_ text: String) {
        #expect(base64Decode(text) == nil, "\(text.debugDescription)")
    }

    @Test func sha256Vectors() {
        func hex(_ words: (UInt64, UInt64, UInt64, UInt64)) -> String {
            [words.0, words.1, words.2, words.3].map { word in
                let s = String(word, radix: 16)
                return String(repeating: "0", count: 16 - s.count) + s
            }.joined()
        }
        #expect(hex(sha256([UInt8]())) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex(sha256(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let bytes = Array("abc".utf8).withUnsafeBytes { sha256Bytes($0) }
        #expect(bytes.count == 32 && bytes.first == 0xBA && bytes.last == 0xAD)
    }

    @Test func constantTimeComparison() {
        #expect(constantTimeEquals(Array("secret".utf8), Array("secret".utf8)))
        #expect(!constantTimeEquals(Array("secret".utf8), Array("secreT".utf8)))
        #expect(!constantTimeEquals(Array("secret".utf8), Array("secret!".utf8)))
        #expect(!constantTimeEquals(Array("secret!".utf8), Array("secret".utf8)))
        #expect(!constantTimeEquals([UInt8](), [0]))
        #expect(constantTimeEquals([UInt8](), [UInt8]()))
    }
}
