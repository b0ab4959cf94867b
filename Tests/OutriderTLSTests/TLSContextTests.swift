import Testing
@testable import OutriderTLS

private var pki: TestPKI { TestPKI.shared }

@Suite struct ServerContextErrorTests {
    /// The TLSError's message ("" when nothing was thrown).
    private func message(_ build: () throws -> Void) -> String {
        do {
            try build()
            return ""
        } catch {
            #expect(drainOpenSSLErrors().isEmpty)
            return (error as? TLSError)?.description ?? "not a TLSError: \(error)"
        }
    }

    @Test func missingCertificateFile() {
        let missing = pki.path("missing.crt")
        let text = message { _ = try TLSServerContext(certificateChainPath: missing, privateKeyPath: pki.serverKey) }
        #expect(text.contains(missing), "\(text)")
        #expect(text.contains("No such file"), "\(text)")
    }

    @Test func missingKeyFile() {
        let missing = pki.path("missing.key")
        let text = message { _ = try TLSServerContext(certificateChainPath: pki.serverChain, privateKeyPath: missing) }
        #expect(text.contains(missing), "\(text)")
    }

    @Test func certificateThatIsNotPEM() {
        let text = message {
            _ = try TLSServerContext(certificateChainPath: pki.garbageFile, privateKeyPath: pki.serverKey)
        }
        #expect(text.contains(pki.garbageFile), "\(text)")
        #expect(text.contains("no start line"), "\(text)")
    }

    @Test func keyOfTheSameTypeThatDoesNotMatch() {
        let text = message {
            _ = try TLSServerContext(certificateChainPath: pki.serverChain, privateKeyPath: pki.wildcardKey)
        }
        #expect(text.contains(pki.wildcardKey), "\(text)")
        #expect(text.contains("key values mismatch"), "\(text)")
    }

    @Test func keyOfAnotherTypeThatDoesNotMatch() {
        // An RSA key for an EC certificate loads into another slot; the explicit check catches it.
        let text = message {
            _ = try TLSServerContext(certificateChainPath: pki.serverChain, privateKeyPath: pki.otherKey)
        }
        #expect(text.contains(pki.otherKey), "\(text)")
        #expect(text.contains("does not match"), "\(text)")
    }

    @Test func brokenSNICertificate() {
        let missing = pki.path("missing-sni.crt")
        let text = message {
            _ = try TLSServerContext(certificateChainPath: pki.serverChain, privateKeyPath: pki.serverKey,
                                     sniCertificates: [(pki.otherChain, pki.otherKey), (missing, pki.otherKey)])
        }
        #expect(text.contains(missing), "\(text)")
    }

    @Test func missingClientCA() {
        let missing = pki.path("missing-ca.crt")
        let text = message {
            _ = try TLSServerContext(certificateChainPath: pki.serverChain, privateKeyPath: pki.serverKey,
                                     clientCAPath: missing)
        }
        #expect(text.contains(missing), "\(text)")
    }

    @Test func unusableALPNNames() {
        let empty = message {
            _ = try TLSServerContext(certificateChainPath: pki.serverChain, privateKeyPath: pki.serverKey, alpn: [""])
        }
        #expect(empty.contains("ALPN"), "\(empty)")
        let long = String(repeating: "x", count: 256)
        #expect(message { _ = try TLSClientContext(caPath: nil, verify: false, alpn: [long]) }.contains("ALPN"))
    }

    @Test func clientContextErrors() {
        let missingCA = pki.path("missing-bundle.crt")
        #expect(message { _ = try TLSClientContext(caPath: missingCA, verify: true) }.contains(missingCA))
        #expect(message {
            _ = try TLSClientContext(caPath: nil, verify: true, clientCertificateChainPath: pki.clientChain)
        }.contains("without its private key"))
        let mismatch = message {
            _ = try TLSClientContext(caPath: nil, verify: true, clientCertificateChainPath: pki.clientChain,
                                     clientPrivateKeyPath: pki.serverKey)
        }
        #expect(mismatch.contains(pki.serverKey), "\(mismatch)")
    }

    @Test func validContextsBuild() throws {
        _ = try TLSServerContext(certificateChainPath: pki.serverChain, privateKeyPath: pki.serverKey,
                                 sniCertificates: [(pki.otherChain, pki.otherKey)], clientCAPath: pki.caCertificate,
                                 minimumVersion: .tls13, alpn: ["h2", "http/1.1"])
        _ = try TLSClientContext(caPath: pki.caCertificate, verify: true, clientCertificateChainPath: pki.clientChain,
                                 clientPrivateKeyPath: pki.clientKey, alpn: ["h2"])
        #expect(drainOpenSSLErrors().isEmpty)
    }
}

@Suite struct SNIMatchingTests {
    private func match(_ names: [String], _ serverName: String) -> Bool {
        let state = ServerCallbackState(alpnWire: [])
        // A placeholder context pointer: `context(forServerName:)` only compares names.
        let marker = OpaquePointer(bitPattern: 0x1000)!
        state.sniEntries = [SNIEntry(context: marker, names: names)]
        defer { state.sniEntries = [] }
        return Array(serverName.utf8).withUnsafeBytes { state.context(forServerName: $0) } == marker
    }

    @Test func exactAndWildcardNames() {
        #expect(match(["api.example.com"], "api.example.com"))
        #expect(match(["api.example.com"], "API.Example.COM"))
        #expect(match(["api.example.com"], "api.example.com."))
        #expect(!match(["api.example.com"], "example.com"))
        #expect(match(["*.example.com"], "x.example.com"))
        #expect(!match(["*.example.com"], "example.com"))
        #expect(!match(["*.example.com"], "a.b.example.com"))
        #expect(!match(["*.example.com"], ".example.com"))
        #expect(!match(["*.example.com"], "xexample.com"))
    }

    @Test func exactNamesWinOverEarlierWildcards() {
        let state = ServerCallbackState(alpnWire: [])
        let wildcard = OpaquePointer(bitPattern: 0x1000)!
        let exact = OpaquePointer(bitPattern: 0x2000)!
        state.sniEntries = [SNIEntry(context: wildcard, names: ["*.example.com"]),
                            SNIEntry(context: exact, names: ["api.example.com"])]
        defer { state.sniEntries = [] }
        #expect(Array("api.example.com".utf8).withUnsafeBytes { state.context(forServerName: $0) } == exact)
        #expect(Array("web.example.com".utf8).withUnsafeBytes { state.context(forServerName: $0) } == wildcard)
    }
}
