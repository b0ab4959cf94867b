// Test-only certificates and keys, made with the `openssl` command at test time in a
// temporary directory (removed when the test process exits). Never used outside tests.
import Foundation

struct TestPKI: Sendable {
    let directory: String

    func path(_ file: String) -> String { directory + "/" + file }

    /// CA → localhost (EC, DNS:localhost + IP:127.0.0.1).
    var serverChain: String { path("server.crt") }
    var serverKey: String { path("server.key") }
    /// CA → intermediate → other.test (RSA); the chain file holds leaf and intermediate.
    var otherChain: String { path("other-chain.crt") }
    var otherKey: String { path("other.key") }
    /// CA → *.wild.test (EC).
    var wildcardChain: String { path("wildcard.crt") }
    var wildcardKey: String { path("wildcard.key") }
    /// CA → CN=cn-only.test, no subject alternative names.
    var commonNameOnlyChain: String { path("cn-only.crt") }
    var commonNameOnlyKey: String { path("cn-only.key") }
    /// CA → client with URI:spiffe://test/client and DNS:client.test.
    var clientChain: String { path("client.crt") }
    var clientKey: String { path("client.key") }
    /// CA → client with DNS:client.test only.
    var dnsClientChain: String { path("client-dns.crt") }
    var dnsClientKey: String { path("client-dns.key") }
    /// CA → client with CN=client-cn only.
    var commonNameClientChain: String { path("client-cn.crt") }
    var commonNameClientKey: String { path("client-cn.key") }
    /// Self-signed localhost certificate no test CA knows.
    var selfSignedChain: String { path("self-signed.crt") }
    var selfSignedKey: String { path("self-signed.key") }
    var caCertificate: String { path("ca.crt") }
    /// Not PEM at all.
    var garbageFile: String { path("garbage.pem") }

    static let shared: TestPKI = {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("outrider-tls-tests-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let pki = TestPKI(directory: directory)
        pki.generate()
        directoryToRemove = strdup(directory)
        atexit {
            if let directory = directoryToRemove { try? FileManager.default.removeItem(atPath: String(cString: directory)) }
        }
        return pki
    }()

    private func generate() {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        let rsa = ["-newkey", "rsa:2048"]
        selfSigned("ca", key: ec, subject: "/CN=Outrider Test CA",
                   extensions: ["basicConstraints=critical,CA:true", "keyUsage=critical,keyCertSign,cRLSign"])
        issue("intermediate", key: ec, subject: "/CN=Outrider Test Intermediate", issuer: "ca",
              extensions: ["basicConstraints=critical,CA:true,pathlen:0", "keyUsage=critical,keyCertSign,cRLSign"])
        let serverUse = ["basicConstraints=CA:false", "extendedKeyUsage=serverAuth"]
        let clientUse = ["basicConstraints=CA:false", "extendedKeyUsage=clientAuth"]
        issue("server", key: ec, subject: "/CN=localhost", issuer: "ca",
              extensions: serverUse + ["subjectAltName=DNS:localhost,IP:127.0.0.1"])
        issue("other", key: rsa, subject: "/CN=other.test", issuer: "intermediate",
              extensions: serverUse + ["subjectAltName=DNS:other.test"])
        concatenate(["other.crt", "intermediate.crt"], into: "other-chain.crt")
        issue("wildcard", key: ec, subject: "/CN=wildcard", issuer: "ca",
              extensions: serverUse + ["subjectAltName=DNS:*.wild.test"])
        issue("cn-only", key: ec, subject: "/CN=cn-only.test", issuer: "ca", extensions: serverUse)
        issue("client", key: ec, subject: "/CN=client", issuer: "ca",
              extensions: clientUse + ["subjectAltName=URI:spiffe://test/client,DNS:client.test"])
        issue("client-dns", key: ec, subject: "/CN=client-dns", issuer: "ca",
              extensions: clientUse + ["subjectAltName=DNS:client.test"])
        issue("client-cn", key: ec, subject: "/CN=client-cn", issuer: "ca", extensions: clientUse)
        selfSigned("self-signed", key: ec, subject: "/CN=localhost",
                   extensions: ["subjectAltName=DNS:localhost,IP:127.0.0.1"])
        _ = FileManager.default.createFile(atPath: garbageFile, contents: Data("this is not a certificate\n".utf8))
    }

    private func selfSigned(_ name: String, key: [String], subject: String, extensions: [String]) {
        openssl(["req", "-x509"] + key + ["-nodes", "-keyout", path("\(name).key"), "-out", path("\(name).crt"),
                 "-days", "2", "-subj", subject] + extensions.flatMap { ["-addext", $0] })
    }

    private func issue(_ name: String, key: [String], subject: String, issuer: String, extensions: [String]) {
        openssl(["req"] + key + ["-nodes", "-keyout", path("\(name).key"), "-out", path("\(name).csr"),
                 "-subj", subject])
        let extensionFile = path("\(name).ext")
        _ = FileManager.default.createFile(atPath: extensionFile,
                                       contents: Data((extensions.joined(separator: "\n") + "\n").utf8))
        openssl(["x509", "-req", "-in", path("\(name).csr"), "-CA", path("\(issuer).crt"),
                 "-CAkey", path("\(issuer).key"), "-set_serial", "\(UInt32.random(in: 1...UInt32.max))",
                 "-days", "2", "-extfile", extensionFile, "-out", path("\(name).crt")])
    }

    private func concatenate(_ files: [String], into target: String) {
        var joined = Data()
        for file in files { joined.append(FileManager.default.contents(atPath: path(file))!) }
        _ = FileManager.default.createFile(atPath: path(target), contents: joined)
    }

    private func openssl(_ arguments: [String]) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try! process.run()
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        precondition(process.terminationStatus == 0,
                     "openssl \(arguments.joined(separator: " ")) failed: \(String(decoding: output, as: UTF8.self))")
    }
}

nonisolated(unsafe) private var directoryToRemove: UnsafeMutablePointer<CChar>?
