import Testing
@testable import OutriderConfig

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// A listener's `tls` and a cluster's `tls` (SPEC §2). The loader checks PEM markers only, so
// the files here are PEM-shaped, not real certificates; the real ones under
// config/examples/tls/ are covered by ExampleConfigTests and at the end of this file.

let fakeCertificatePEM = "-----BEGIN CERTIFICATE-----\nTUlJQmZha2VjZXJ0aWZpY2F0ZQ==\n-----END CERTIFICATE-----\n"
let fakeKeyPEM = "-----BEGIN PRIVATE KEY-----\nTUlJRWZha2VrZXk=\n-----END PRIVATE KEY-----\n"

/// A temporary directory with PEM-shaped files, holding the config it loads (so relative
/// paths resolve into it).
final class TLSFiles {
    let directory = makeTemporaryDirectory()
    var configPath: String { directory + "/outrider.yaml" }

    init() {
        _ = write("server.crt", fakeCertificatePEM + fakeCertificatePEM)   // leaf and intermediate
        _ = write("server.key", fakeKeyPEM)
        _ = write("ca.crt", fakeCertificatePEM)
        _ = write("other.crt", fakeCertificatePEM)
        _ = write("other.key", "-----BEGIN EC PRIVATE KEY-----\nTUlJRWZha2U=\n-----END EC PRIVATE KEY-----\n")
        mkdir(directory + "/certs", 0o755)
        _ = write("certs/third.crt", "subject=CN=third\r\n" + fakeCertificatePEM)
        _ = write("certs/third.key", "-----BEGIN RSA PRIVATE KEY-----\r\nTUlJ\r\n-----END RSA PRIVATE KEY-----\r\n")
    }

    deinit { removeTree(directory) }

    func path(_ name: String) -> String { directory + "/" + name }

    func write(_ name: String, _ contents: String) -> String {
        writeFile(path(name), contents)
        return path(name)
    }

    func load(_ yaml: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> OutriderConfiguration {
        try OutriderConfigTests.load(yaml, path: configPath, sourceLocation: sourceLocation)
    }

    func errors(_ yaml: String) -> [String] { errorLines(yaml, path: configPath) }

    func at(_ line: Int, _ column: Int, _ message: String) -> String { "\(configPath):\(line):\(column): \(message)" }

    func pair(_ certificate: String, _ key: String) -> CertificatePair {
        CertificatePair(certificate: path(certificate), privateKey: path(key))
    }
}

// MARK: - Listener tls

@Suite struct ListenerTLSTests {
    @Test func everyKeyIsParsed() throws {
        let files = TLSFiles()
        let config = try files.load("""
            listeners:
              - name: secure
                address: 0.0.0.0:8443
                tls:
                  certificate: server.crt
                  private_key: ./certs/../server.key
                  client_ca: \(files.path("ca.crt"))
                  min_version: "1.3"
                  sni_certificates:
                    - { certificate: other.crt, private_key: other.key }
                    - certificate: certs/third.crt
                      private_key: certs/third.key
            """)
        let listener = try #require(config.listeners.first)
        #expect(listener.tls == ListenerTLSConfig(
            certificate: files.pair("server.crt", "server.key"),
            sniCertificates: [files.pair("other.crt", "other.key"), files.pair("certs/third.crt", "certs/third.key")],
            clientCA: files.path("ca.crt"),
            minVersion: .v1_3))
        #expect(listener.protocols == [.http1, .h2])
    }

    @Test func defaults() throws {
        let files = TLSFiles()
        let config = try files.load("""
            listeners:
              - address: 0.0.0.0:8443
                tls: { certificate: server.crt, private_key: server.key }
              - address: 0.0.0.0:8080
            """)
        try #require(config.listeners.count == 2)
        // Only the certificate is required: no SNI certificates, no client certificates, TLS 1.2 up.
        #expect(config.listeners[0].tls == ListenerTLSConfig(certificate: files.pair("server.crt", "server.key"),
                                                              sniCertificates: [], clientCA: nil, minVersion: .v1_2))
        // Without `protocols`: HTTP/1.1 and h2 over TLS, chosen by ALPN (h2c is cleartext).
        #expect(config.listeners[0].protocols == [.http1, .h2])
        #expect(Defaults.tlsListenerProtocols == [.http1, .h2])
        // A cleartext listener keeps the cleartext defaults, as does the zero config.
        #expect(config.listeners[1].tls == nil)
        #expect(config.listeners[1].protocols == [.http1, .h2c])
        #expect(ConfigLoader.zeroConfig().listeners[0].tls == nil)
        #expect(ConfigLoader.zeroConfig().listeners[0].protocols == [.http1, .h2c])
        #expect(ListenerTLSConfig(certificate: files.pair("server.crt", "server.key")).minVersion == .v1_2)
    }

    /// YAML reads a plain 1.2 as a number; the loader reads its text, so both forms work.
    @Test(arguments: [("\"1.2\"", TLSVersion.v1_2), ("1.2", .v1_2), ("'1.3'", .v1_3), ("1.3", .v1_3), ("~", .v1_2)])
    func minVersionForms(written: String, version: TLSVersion) throws {
        let files = TLSFiles()
        let config = try files.load("""
            listeners:
              - tls: { certificate: server.crt, private_key: server.key, min_version: \(written) }
            """)
        #expect(config.listeners[0].tls?.minVersion == version)
    }

    @Test func minVersionProblems() {
        let files = TLSFiles()
        let yaml = """
            listeners:
              - address: 0.0.0.0:1
                tls: { certificate: server.crt, private_key: server.key, min_version: 1.0 }
              - address: 0.0.0.0:2
                tls: { certificate: server.crt, private_key: server.key, min_version: "1.1" }
              - address: 0.0.0.0:3
                tls: { certificate: server.crt, private_key: server.key, min_version: TLSv1.2 }
              - address: 0.0.0.0:4
                tls: { certificate: server.crt, private_key: server.key, min_version: [1.2] }
            """
        #expect(files.errors(yaml) == [
            files.at(3, 75, "'min_version' 1.0 is refused: TLS below 1.2 is not offered; use \"1.2\" or \"1.3\""),
            files.at(5, 75, "'min_version' 1.1 is refused: TLS below 1.2 is not offered; use \"1.2\" or \"1.3\""),
            files.at(7, 75, "invalid value 'TLSv1.2' for 'min_version'; expected \"1.2\" or \"1.3\""),
            files.at(9, 75, "expected \"1.2\" or \"1.3\" for 'min_version', got a list"),
        ])
    }

    @Test func requiredKeysAndShapes() {
        let files = TLSFiles()
        let yaml = """
            listeners:
              - address: 0.0.0.0:1
                tls: {}
              - address: 0.0.0.0:2
                tls: { certificate: server.crt, private_key: ~ }
              - address: 0.0.0.0:3
                tls: server.crt
              - address: 0.0.0.0:4
                tls:
                  certificate: server.crt
                  private_key: server.key
                  ocsp_staple: x
                  sni_certificates:
                    - { certificate: other.crt }
                    - { private_key: other.key, names: [a.example] }
                    - other.crt
                    - ~
              - address: 0.0.0.0:5
                tls: { certificate: server.crt, private_key: server.key, sni_certificates: other.crt }
              - address: 0.0.0.0:6
                tls: { certificate: "", private_key: [server.key] }
            """
        #expect(files.errors(yaml) == [
            files.at(3, 5, "tls is missing required key 'certificate'"),
            files.at(3, 5, "tls is missing required key 'private_key'"),
            files.at(5, 5, "tls is missing required key 'private_key'"),
            files.at(7, 10, "expected a mapping for tls, got a scalar"),
            files.at(12, 7, "unknown key 'ocsp_staple' in tls; expected one of: certificate, private_key, client_ca, min_version, sni_certificates"),
            files.at(14, 11, "sni_certificates entry is missing required key 'private_key'"),
            files.at(15, 11, "sni_certificates entry is missing required key 'certificate'"),
            files.at(15, 37, "unknown key 'names' in sni_certificates; expected one of: certificate, private_key"),
            files.at(16, 11, "expected a mapping for sni_certificates, got a scalar"),
            files.at(17, 11, "sni_certificates entry is missing required key 'certificate'"),
            files.at(17, 11, "sni_certificates entry is missing required key 'private_key'"),
            files.at(19, 80, "expected a list for 'sni_certificates', got a scalar"),
            files.at(21, 25, "'certificate' must not be empty"),
            files.at(21, 42, "expected a string for 'private_key', got a list"),
        ])
    }

    @Test func fileProblemsPointAtTheValue() {
        let files = TLSFiles()
        _ = files.write("empty.crt", "\n\n")
        _ = files.write("big.crt", fakeCertificatePEM + String(repeating: "A", count: 1 << 20))
        _ = files.write("der.crt", "\u{30}\u{82}\u{01}\u{0A}binary")
        _ = files.write("encrypted.key", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nTUlJ\n-----END ENCRYPTED PRIVATE KEY-----\n")
        _ = files.write("legacy-encrypted.key", """
            -----BEGIN RSA PRIVATE KEY-----
            Proc-Type: 4,ENCRYPTED
            DEK-Info: AES-128-CBC,0123456789ABCDEF0123456789ABCDEF

            TUlJ
            -----END RSA PRIVATE KEY-----

            """)
        _ = files.write("public.key", "-----BEGIN PUBLIC KEY-----\nTUlJ\n-----END PUBLIC KEY-----\n")
        let yaml = """
            listeners:
              - address: 0.0.0.0:1
                tls:
                  certificate: missing.crt
                  private_key: certs
                  client_ca: server.key
              - address: 0.0.0.0:2
                tls:
                  certificate: server.key
                  private_key: server.crt
                  client_ca: empty.crt
              - address: 0.0.0.0:3
                tls:
                  certificate: big.crt
                  private_key: encrypted.key
                  client_ca: der.crt
              - address: 0.0.0.0:4
                tls:
                  certificate: server.crt
                  private_key: legacy-encrypted.key
                  sni_certificates:
                    - { certificate: other.crt, private_key: public.key }
            """
        let noCertificate = "holds no PEM certificate: no '-----BEGIN CERTIFICATE-----' line"
        let noKey = "holds no PEM private key: no '-----BEGIN … PRIVATE KEY-----' line"
        let encrypted = "is encrypted with a passphrase, which this build cannot use; write it unencrypted (openssl pkey -in KEY -out KEY.plain) and deliver it as a Kubernetes Secret"
        #expect(files.errors(yaml) == [
            files.at(4, 20, "cannot read certificate '\(files.path("missing.crt"))': No such file or directory"),
            files.at(5, 20, "cannot read private_key '\(files.path("certs"))': is a directory"),
            files.at(6, 18, "client_ca '\(files.path("server.key"))' \(noCertificate) (it holds a private key: are certificate and private_key swapped?)"),
            files.at(9, 20, "certificate '\(files.path("server.key"))' \(noCertificate) (it holds a private key: are certificate and private_key swapped?)"),
            files.at(10, 20, "private_key '\(files.path("server.crt"))' \(noKey) (it holds a certificate: are certificate and private_key swapped?)"),
            files.at(11, 18, "client_ca '\(files.path("empty.crt"))' is empty"),
            files.at(14, 20, "cannot read certificate '\(files.path("big.crt"))': larger than 1MiB"),
            files.at(15, 20, "private_key '\(files.path("encrypted.key"))' \(encrypted)"),
            files.at(16, 18, "client_ca '\(files.path("der.crt"))' \(noCertificate)"),
            files.at(20, 20, "private_key '\(files.path("legacy-encrypted.key"))' \(encrypted)"),
            files.at(22, 50, "private_key '\(files.path("public.key"))' \(noKey)"),
        ])
    }

    @Test func unreadableFileGivesTheErrnoText() throws {
        // Root reads files whatever their mode, so only an unprivileged run can see EACCES.
        guard geteuid() != 0 else { return }
        let files = TLSFiles()
        chmod(files.path("server.key"), 0)
        #expect(files.errors("listeners: [{ tls: { certificate: server.crt, private_key: server.key } }]\n") == [
            files.at(1, 60, "cannot read private_key '\(files.path("server.key"))': Permission denied"),
        ])
    }

    @Test func aFileOfExactlyTheLimitIsRead() throws {
        let files = TLSFiles()
        let padding = String(repeating: "#", count: PEMFile.sizeLimit - fakeCertificatePEM.utf8.count - 1) + "\n"
        _ = files.write("bundle.crt", fakeCertificatePEM + padding)
        let config = try files.load("listeners: [{ tls: { certificate: bundle.crt, private_key: server.key } }]\n")
        #expect(config.listeners[0].tls?.certificate.certificate == files.path("bundle.crt"))
    }

    @Test func sniCertificatesAreDistinct() {
        let files = TLSFiles()
        let yaml = """
            listeners:
              - tls:
                  certificate: server.crt
                  private_key: server.key
                  sni_certificates:
                    - { certificate: other.crt, private_key: other.key }
                    - { certificate: ./server.crt, private_key: server.key }
                    - { certificate: certs/../other.crt, private_key: other.key }
            """
        #expect(files.errors(yaml) == [
            files.at(7, 26, "certificate '\(files.path("server.crt"))' is already this listener's default certificate (at 3:20)"),
            files.at(8, 26, "duplicate certificate '\(files.path("other.crt"))' in sni_certificates (first at 6:26)"),
        ])
    }

    /// How Kubernetes Secrets arrive: the path itself may come from the environment.
    @Test func pathsComeThroughSubstitution() throws {
        let files = TLSFiles()
        let fromEnvironment = try OutriderConfigTests.load(
            "listeners: [{ tls: { certificate: \"${env:CERT}\", private_key: \"${env:KEY}\" } }]\n",
            path: files.configPath, environment: ["CERT": "server.crt", "KEY": files.path("server.key")])
        #expect(fromEnvironment.listeners[0].tls?.certificate == files.pair("server.crt", "server.key"))
    }
}

// MARK: - Protocols with and without tls

@Suite struct ListenerProtocolTLSTests {
    @Test func tlsListenersOfferHTTP1() throws {
        let files = TLSFiles()
        let config = try files.load("""
            listeners:
              - address: 0.0.0.0:8443
                protocols: [http1]
                tls: { certificate: server.crt, private_key: server.key }
              - address: 0.0.0.0:8080
                protocols: [h2c, http1]
            """)
        #expect(config.listeners.map(\.protocols) == [[.http1], [.h2c, .http1]])
    }

    @Test func protocolProblems() {
        let files = TLSFiles()
        let yaml = """
            listeners:
              - address: 0.0.0.0:1
                protocols: [http1, h2]
                tls: { certificate: server.crt, private_key: server.key }
              - address: 0.0.0.0:2
                protocols: [h2c, http1, http1]
                tls: { certificate: server.crt, private_key: server.key }
              - address: 0.0.0.0:3
                protocols: [h2, http1]
              - address: 0.0.0.0:4
                protocols: [h2]
                tls: { certificate: missing.crt, private_key: server.key }
            """
        // h2 with tls (listeners 1 and 4) is fine; a broken tls block still makes listener 4 a
        // TLS listener, so only its certificate is reported.
        #expect(files.errors(yaml) == [
            files.at(6, 17, "protocol 'h2c' is cleartext HTTP/2 and cannot be used with tls; with tls, use h2 (ALPN)"),
            files.at(6, 29, "duplicate protocol 'http1' in 'protocols'"),
            files.at(9, 17, "protocol 'h2' needs tls; use h2c for cleartext HTTP/2"),
            files.at(12, 25, "cannot read certificate '\(files.path("missing.crt"))': No such file or directory"),
        ])
    }
}

// MARK: - Cluster tls

@Suite struct ClusterTLSTests {
    /// A config with one listener and cluster `app` with the given extra keys.
    static func yaml(_ keys: String) -> String {
        "clusters:\n  - name: app\n    endpoints: [127.0.0.1:8443]\n" + keys
    }

    @Test func emptyBlockOriginatesWithSystemCAsAndVerification() throws {
        let files = TLSFiles()
        let config = try files.load(Self.yaml("    tls: {}\n"))
        #expect(config.clusters[0].tls == ClusterTLSConfig(sni: nil, ca: nil, verify: true, clientCertificate: nil))
        #expect(config.clusters[0].protocol == .http1)
        // Null is no tls, like every other optional section.
        #expect(try files.load(Self.yaml("    tls: ~\n")).clusters[0].tls == nil)
        #expect(try files.load(Self.yaml("")).clusters[0].tls == nil)
    }

    @Test func everyKeyIsParsed() throws {
        let files = TLSFiles()
        let config = try files.load(Self.yaml("""
                protocol: http1
                tls:
                  sni: API.Example.com
                  ca: ca.crt
                  verify: true
                  certificate: other.crt
                  private_key: \(files.path("other.key"))

            """))
        #expect(config.clusters[0].tls == ClusterTLSConfig(
            sni: "api.example.com", ca: files.path("ca.crt"), verify: true,
            clientCertificate: files.pair("other.crt", "other.key")))
        let unverified = try files.load(Self.yaml("    tls: { sni: internal_svc.local, verify: \"false\" }\n"))
        #expect(unverified.clusters[0].tls == ClusterTLSConfig(sni: "internal_svc.local", ca: nil, verify: false))
    }

    @Test func serverNameProblems() {
        let files = TLSFiles()
        var yaml = "clusters:\n"
        let names = ["10.0.0.1", "\"[::1]\"", "\"::1\"", "\"*.example.com\"", "api.example.com:443", "a b", "\"\"", "-bad.example"]
        for (index, name) in names.enumerated() {
            yaml += "  - { name: c\(index), endpoints: [127.0.0.1:80], tls: { sni: \(name) } }\n"
        }
        yaml += "listeners: [{ routes: [{ cluster: c0 }] }]\n"
        let ip = "a server name is a DNS name, not an IP address; leave 'sni' out to verify the endpoint's IP address"
        let syntax = "expected a DNS name like api.example.com, without port or wildcard"
        #expect(files.errors(yaml) == [
            files.at(2, 56, "invalid sni '10.0.0.1': \(ip)"),
            files.at(3, 56, "invalid sni '[::1]': \(ip)"),
            files.at(4, 56, "invalid sni '::1': \(ip)"),
            files.at(5, 56, "invalid sni '*.example.com': \(syntax)"),
            files.at(6, 56, "invalid sni 'api.example.com:443': \(syntax)"),
            files.at(7, 56, "invalid sni 'a b': \(syntax)"),
            files.at(8, 56, "'sni' must not be empty"),
            files.at(9, 56, "invalid sni '-bad.example': \(syntax)"),
        ])
    }

    @Test func fileAndVerifyProblems() {
        let files = TLSFiles()
        let yaml = """
            clusters:
              - name: app
                endpoints: [127.0.0.1:80]
                tls: { ca: missing.crt, verify: yes, sni: x.example }
              - name: b
                endpoints: [127.0.0.1:80]
                tls:
                  ca: server.key
                  verify: false
              - name: c
                endpoints: [127.0.0.1:80]
                tls: { verify: false, ca: ca.crt }
              - name: d
                endpoints: [127.0.0.1:80]
                tls: { certificate: other.crt, trust: x }
            """
        #expect(files.errors(yaml) == [
            files.at(4, 16, "cannot read ca '\(files.path("missing.crt"))': No such file or directory"),
            files.at(4, 37, "invalid value 'yes' for 'verify': expected true or false"),
            files.at(8, 7, "'ca' has no effect with 'verify: false': the server's certificate is not checked"),
            files.at(8, 11, "ca '\(files.path("server.key"))' holds no PEM certificate: no '-----BEGIN CERTIFICATE-----' line (it holds a private key: are certificate and private_key swapped?)"),
            files.at(12, 27, "'ca' has no effect with 'verify: false': the server's certificate is not checked"),
            files.at(15, 12, "tls has 'certificate' but no 'private_key': a client certificate needs its key"),
            files.at(15, 36, "unknown key 'trust' in tls; expected one of: sni, ca, verify, certificate, private_key"),
        ])
    }

    @Test func clientCertificateComesWithItsKey() {
        let files = TLSFiles()
        let yaml = """
            clusters:
              - name: app
                endpoints: [127.0.0.1:80]
                tls: { private_key: other.key }
              - name: b
                endpoints: [127.0.0.1:80]
                tls: { certificate: missing.crt, private_key: other.crt }
              - name: c
                endpoints: [127.0.0.1:80]
                tls: { private_key: nothing.key, certificate: ~ }
            """
        #expect(files.errors(yaml) == [
            files.at(4, 12, "tls has 'private_key' but no 'certificate': a client key needs its certificate"),
            files.at(7, 25, "cannot read certificate '\(files.path("missing.crt"))': No such file or directory"),
            files.at(7, 51, "private_key '\(files.path("other.crt"))' holds no PEM private key: no '-----BEGIN … PRIVATE KEY-----' line (it holds a certificate: are certificate and private_key swapped?)"),
            files.at(10, 12, "tls has 'private_key' but no 'certificate': a client key needs its certificate"),
            files.at(10, 25, "cannot read private_key '\(files.path("nothing.key"))': No such file or directory"),
        ])
    }

    /// HTTP/2 upstreams: h2 over TLS, h2c in cleartext only.
    @Test func upstreamHTTP2Loads() throws {
        let files = TLSFiles()
        let refused = """
            clusters:
              - name: app
                endpoints: [127.0.0.1:80]
                protocol: h2c
                tls: { sni: b.example }
            """
        #expect(files.errors(refused) == [
            files.at(4, 15, "cluster protocol 'h2c' is cleartext HTTP/2 and cannot be used with tls; with tls, use h2"),
        ])
        let yaml = """
            clusters:
              - name: app
                endpoints: [127.0.0.1:80]
                protocol: h2
                tls: {}
              - name: b
                endpoints: [127.0.0.1:80]
                protocol: h2c
            """
        #expect(files.errors(yaml) == [])
        let config = try files.load(yaml)
        #expect(config.clusters.map(\.protocol) == [.h2, .h2c])
    }
}

// MARK: - PEM markers

@Suite struct PEMFileTests {
    @Test func certificateMarkers() {
        let bytes = { (text: String) in Array(text.utf8) }
        #expect(PEMFile.problem(bytes(fakeCertificatePEM), holding: .certificate) == nil)
        #expect(PEMFile.problem(bytes("Bag Attributes\n  " + fakeCertificatePEM + fakeKeyPEM), holding: .certificate) == nil)
        #expect(PEMFile.problem(bytes("-----BEGIN CERTIFICATE-----  \r\nx\r\n"), holding: .certificate) == nil)
        #expect(PEMFile.problem(bytes("-----BEGIN TRUSTED CERTIFICATE-----\n"), holding: .certificate)
            == "holds no PEM certificate: no '-----BEGIN CERTIFICATE-----' line")
        #expect(PEMFile.problem(bytes("x -----BEGIN CERTIFICATE-----\n"), holding: .certificate) != nil)
        #expect(PEMFile.problem([], holding: .certificate) == "is empty")
        #expect(PEMFile.problem(bytes(" \n\t\n"), holding: .privateKey) == "is empty")
    }

    @Test(arguments: ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    func privateKeyMarkers(label: String) {
        let pem = "-----BEGIN \(label)-----\nTUlJ\n-----END \(label)-----\n"
        #expect(PEMFile.problem(Array(pem.utf8), holding: .privateKey) == nil)
        // A key and its certificate in one file is fine for either key.
        #expect(PEMFile.problem(Array((fakeCertificatePEM + pem).utf8), holding: .privateKey) == nil)
    }

    @Test func keyProblems() {
        #expect(PEMFile.problem(Array("-----BEGIN PUBLIC KEY-----\n".utf8), holding: .privateKey)
            == "holds no PEM private key: no '-----BEGIN … PRIVATE KEY-----' line")
        #expect(PEMFile.problem(Array("-----BEGIN ENCRYPTED PRIVATE KEY-----\n".utf8), holding: .privateKey)?
            .hasPrefix("is encrypted with a passphrase") == true)
    }
}

// MARK: - Rendering

@Suite struct TLSRenderTests {
    static func config(_ files: TLSFiles) throws -> OutriderConfiguration {
        _ = files.write("my certs.crt", fakeCertificatePEM)
        return try files.load("""
            listeners:
              - name: secure
                address: 0.0.0.0:8443
                tls:
                  certificate: server.crt
                  private_key: server.key
                  client_ca: ca.crt
                  min_version: 1.3
                  sni_certificates:
                    - { certificate: other.crt, private_key: other.key }
                    - { certificate: my certs.crt, private_key: server.key }
              - name: plain
                address: 0.0.0.0:8080
                routes: [{ cluster: upstream }]
              - name: minimal
                address: 0.0.0.0:8444
                tls: { certificate: server.crt, private_key: server.key }
            clusters:
              - name: app
                endpoints: [127.0.0.1:8080]
                tls: { sni: app.example, ca: ca.crt, verify: true, certificate: other.crt, private_key: other.key }
              - name: upstream
                endpoints: [upstream.example:443]
                tls: {}
            """)
    }

    @Test func yamlShowsBothBlocks() throws {
        let files = TLSFiles()
        let yaml = try Self.config(files).renderYAML()
        let d = files.directory
        #expect(yaml.contains("""
              - name: secure
                address: 0.0.0.0:8443
                direction: inbound
                protocols: [http1, h2]
                tls:
                  certificate: \(d)/server.crt
                  private_key: \(d)/server.key
                  client_ca: \(d)/ca.crt
                  min_version: "1.3"
                  sni_certificates:
                    - certificate: \(d)/other.crt
                      private_key: \(d)/other.key
                    - certificate: "\(d)/my certs.crt"
                      private_key: \(d)/server.key
                original_destination: false

            """), "rendered YAML:\n\(yaml)")
        #expect(yaml.contains("""
                tls:
                  certificate: \(d)/server.crt
                  private_key: \(d)/server.key
                  min_version: "1.2"
                  sni_certificates: []
                original_destination: false

            """), "rendered YAML:\n\(yaml)")
        #expect(yaml.contains("""
                protocol: http1
                tls:
                  sni: app.example
                  ca: \(d)/ca.crt
                  verify: true
                  certificate: \(d)/other.crt
                  private_key: \(d)/other.key
                lb:

            """), "rendered YAML:\n\(yaml)")
        #expect(yaml.contains("""
                protocol: http1
                tls:
                  verify: true
                lb:

            """), "rendered YAML:\n\(yaml)")
        // The cleartext listener has no tls block at all.
        #expect(yaml.ranges(of: "\n    tls:\n").count == 4)
        #expect(!yaml.contains("<redacted>"))
    }

    @Test func roundTripsThroughYAMLAndJSON() throws {
        let files = TLSFiles()
        let config = try Self.config(files)
        let yaml = config.renderYAML()
        #expect(try files.load(yaml) == config, "rendered YAML:\n\(yaml)")
        let json = config.renderJSON()
        #expect(try files.load(json) == config, "rendered JSON:\n\(json)")
        #expect(json.contains("\"min_version\": \"1.3\""))
        #expect(try files.load(yaml).renderYAML() == yaml)
    }
}

// MARK: - The example files

@Suite struct TLSExampleFilesTests {
    static let directory = repositoryConfigDirectory() + "/examples/tls"

    /// The CA's key is never published: only what the example configs name, and the README.
    @Test func theDirectoryHoldsTheExamplesAndNoCAKey() {
        #expect(listDirectory(Self.directory) == ["README.md", "ca.crt", "client.crt", "client.key", "server.crt", "server.key"])
    }

    @Test(arguments: [("ca.crt", PEMFile.Kind.certificate), ("server.crt", .certificate), ("client.crt", .certificate),
                      ("server.key", .privateKey), ("client.key", .privateKey)])
    func eachFileHoldsWhatItsNameSays(file: String, kind: PEMFile.Kind) throws {
        let bytes = try FileReader.readBytes(Self.directory + "/" + file, limit: PEMFile.sizeLimit).get()
        #expect(PEMFile.problem(bytes, holding: kind) == nil)
        // No file is both: the certificates hold no key, the keys no certificate.
        #expect(PEMFile.problem(bytes, holding: kind == .certificate ? .privateKey : .certificate) != nil)
    }

    @Test func readmeSaysExamplesOnlyAndHowToRegenerate() throws {
        let readme = try FileReader.readText(Self.directory + "/README.md", limit: 1 << 20).get()
        #expect(readme.hasPrefix("# EXAMPLES ONLY — never use these certificates or keys in production"))
        for command in ["openssl genpkey", "openssl req -x509", "-days 3650",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:outrider.example",
                        "subjectAltName=URI:spiffe://example/app"] {
            #expect(readme.contains(command), "\(command)")
        }
    }
}
