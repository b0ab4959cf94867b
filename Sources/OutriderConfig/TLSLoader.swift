import Yams

// A listener's `tls` (terminate) and a cluster's `tls` (originate), SPEC §2. The files they
// name are read here, at load, and checked for their PEM markers only, so that a wrong path,
// an unreadable file or a certificate given for a key is a config error at the value's
// FILE:LINE:COL. The full parse of certificates and keys happens at start-up, where the TLS
// contexts are built.

extension ConfigurationBuilder {
    static let listenerTLSKeys = ["certificate", "private_key", "client_ca", "min_version", "sni_certificates"]
    static let clusterTLSKeys = ["sni", "ca", "verify", "certificate", "private_key"]

    // MARK: listener tls

    /// `keyNode` is the listener's `tls` key: "missing required key" errors point there.
    func listenerTLS(_ node: Node, keyNode: Node) -> ListenerTLSConfig? {
        guard let fields = session.fields(of: node, section: "tls", supported: Self.listenerTLSKeys) else { return nil }
        let certificate = certificatePair(fields, section: "tls", missingAt: keyNode)
        var config = certificate.map { ListenerTLSConfig(certificate: $0.pair) }
        var valid = config != nil

        if let node = fields.value("client_ca") {
            if let path = pemFile(node, key: "client_ca", holding: .certificate) {
                config?.clientCA = path
            } else {
                valid = false
            }
        }
        if let node = fields.value("min_version") {
            if let version = minVersion(node) { config?.minVersion = version } else { valid = false }
        }
        if let node = fields.value("sni_certificates") {
            if let pairs = sniCertificates(node, defaultCertificate: certificate) {
                config?.sniCertificates = pairs
            } else {
                valid = false
            }
        }
        return valid ? config : nil
    }

    /// `"1.2"` or `"1.3"`, quoted or not: YAML reads a plain `1.2` as a number, and either way
    /// the text is what counts.
    private func minVersion(_ node: Node) -> TLSVersion? {
        let choices = TLSVersion.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: " or ")
        guard let value = session.text(node, key: "min_version", expected: choices) else { return nil }
        if let version = TLSVersion(rawValue: value) { return version }
        if ["1.0", "1.1", "1"].contains(value) {
            session.report("'min_version' \(value) is refused: TLS below 1.2 is not offered; use \(choices)", at: node)
        } else {
            session.report("invalid value '\(value)' for 'min_version'; expected \(choices)", at: node)
        }
        return nil
    }

    /// The extra certificates, each chosen by its own names (SPEC §2): both files of each
    /// entry required, no certificate twice. Nil when an entry was refused.
    private func sniCertificates(_ node: Node, defaultCertificate: WrittenPair?) -> [CertificatePair]? {
        guard let items = session.list(node, key: "sni_certificates") else { return nil }
        var pairs: [WrittenPair] = []
        var valid = true
        for item in items {
            guard let fields = session.fields(of: item, section: "sni_certificates",
                                              supported: ["certificate", "private_key"]) else {
                valid = false
                continue
            }
            guard let pair = certificatePair(fields, section: "sni_certificates entry", missingAt: item) else {
                valid = false
                continue
            }
            let path = pair.pair.certificate
            if let defaultCertificate, defaultCertificate.pair.certificate == path {
                session.report("certificate '\(path)' is already this listener's default certificate (at \(defaultCertificate.certificateNode.position.description))",
                               at: pair.certificateNode)
                valid = false
            } else if let first = pairs.first(where: { $0.pair.certificate == path }) {
                session.report("duplicate certificate '\(path)' in sni_certificates (first at \(first.certificateNode.position.description))",
                               at: pair.certificateNode)
                valid = false
            } else {
                pairs.append(pair)
            }
        }
        return valid ? pairs.map(\.pair) : nil
    }

    // MARK: cluster tls

    /// Every key optional: `tls: {}` verifies the endpoints against the system CAs, with the
    /// endpoint's host name as SNI.
    func clusterTLS(_ node: Node) -> ClusterTLSConfig? {
        guard let fields = session.fields(of: node, section: "tls", supported: Self.clusterTLSKeys) else { return nil }
        var config = ClusterTLSConfig()
        var valid = true
        if let node = fields.value("sni") {
            if let name = serverName(node) { config.sni = name } else { valid = false }
        }
        let caNode = fields.value("ca")
        if let caNode {
            if let path = pemFile(caNode, key: "ca", holding: .certificate) { config.ca = path } else { valid = false }
        }
        var verifyIsValid = true
        if let node = fields.value("verify") {
            if let verify = session.bool(node, key: "verify") {
                config.verify = verify
            } else {
                verifyIsValid = false
                valid = false
            }
        }
        // The same rule as for other settings that would do nothing: refused, not ignored.
        if verifyIsValid, !config.verify, caNode != nil, let keyNode = fields.keyNode("ca") {
            session.report("'ca' has no effect with 'verify: false': the server's certificate is not checked", at: keyNode)
            valid = false
        }

        // A client certificate (mTLS to the upstream): both files or neither. Each file given is
        // checked either way, so one run reports everything.
        let certificateNode = fields.value("certificate")
        let privateKeyNode = fields.value("private_key")
        let certificate = certificateNode.flatMap { pemFile($0, key: "certificate", holding: .certificate) }
        let privateKey = privateKeyNode.flatMap { pemFile($0, key: "private_key", holding: .privateKey) }
        if certificateNode != nil, privateKeyNode == nil, let keyNode = fields.keyNode("certificate") {
            session.report("tls has 'certificate' but no 'private_key': a client certificate needs its key", at: keyNode)
            valid = false
        } else if privateKeyNode != nil, certificateNode == nil, let keyNode = fields.keyNode("private_key") {
            session.report("tls has 'private_key' but no 'certificate': a client key needs its certificate", at: keyNode)
            valid = false
        } else if certificateNode != nil {
            if let certificate, let privateKey {
                if let problem = ConfigLoader.certificatePairCheck?(certificate, privateKey), let certificateNode {
                    session.report("certificate and private_key cannot be used together: \(problem)", at: certificateNode)
                    valid = false
                }
                config.clientCertificate = CertificatePair(certificate: certificate, privateKey: privateKey)
            } else {
                valid = false
            }
        }
        return valid ? config : nil
    }

    /// A DNS name (RFC 6066 forbids IP literals in SNI), kept lower-case: names compare
    /// case-insensitively.
    private func serverName(_ node: Node) -> String? {
        guard let value = session.nonEmptyString(node, key: "sni") else { return nil }
        if IPLiteral.isLiteral(value) || (value.hasPrefix("[") && value.hasSuffix("]")) {
            session.report("invalid sni '\(value)': a server name is a DNS name, not an IP address; leave 'sni' out to verify the endpoint's IP address",
                           at: node)
            return nil
        }
        guard HostName.isValid(value[...]) else {
            session.report("invalid sni '\(value)': expected a DNS name like api.example.com, without port or wildcard",
                           at: node)
            return nil
        }
        return value.lowercased()
    }

    // MARK: Files

    /// A certificate and its key as written, with where the certificate was written (for
    /// duplicate errors).
    struct WrittenPair {
        var pair: CertificatePair
        var certificateNode: Node
    }

    /// `certificate` and `private_key` of `fields`, both required: a missing one is reported
    /// at `missingAt` as "`section` is missing required key …". Both files are checked even
    /// when one is refused, so one run reports both.
    private func certificatePair(_ fields: Fields, section: String, missingAt: Node) -> WrittenPair? {
        var certificate: String?
        var privateKey: String?
        let certificateNode = fields.value("certificate")
        if let certificateNode {
            certificate = pemFile(certificateNode, key: "certificate", holding: .certificate)
        } else {
            session.report("\(section) is missing required key 'certificate'", at: missingAt)
        }
        if let node = fields.value("private_key") {
            privateKey = pemFile(node, key: "private_key", holding: .privateKey)
        } else {
            session.report("\(section) is missing required key 'private_key'", at: missingAt)
        }
        guard let certificate, let privateKey, let certificateNode else { return nil }
        if let problem = ConfigLoader.certificatePairCheck?(certificate, privateKey) {
            session.report("certificate and private_key cannot be used together: \(problem)", at: certificateNode)
            return nil
        }
        return WrittenPair(pair: CertificatePair(certificate: certificate, privateKey: privateKey),
                           certificateNode: certificateNode)
    }

    /// Reads the PEM file `key` names (relative to the config's directory) and checks it holds
    /// what `key` needs: its absolute path, or nil with the error reported at the value.
    private func pemFile(_ node: Node, key: String, holding kind: PEMFile.Kind) -> String? {
        guard let written = session.nonEmptyString(node, key: key) else { return nil }
        let path = FilePaths.resolve(written, against: session.baseDirectory)
        switch FileReader.readBytes(path, limit: PEMFile.sizeLimit) {
        case .failure(let failure):
            session.report("cannot read \(key) '\(path)': \(failure.reason)", at: node)
            return nil
        case .success(let bytes):
            if let problem = PEMFile.problem(bytes, holding: kind) {
                session.report("\(key) '\(path)' \(problem)", at: node)
                return nil
            }
            return path
        }
    }
}

/// The PEM marker checks of the files `tls` names. Pure: bytes in, a problem out.
enum PEMFile {
    enum Kind {
        case certificate
        case privateKey
    }

    /// Certificate chains and CA bundles are text of a few KiB to a few hundred KiB (the
    /// Mozilla bundle is ~220 KiB); a limit keeps a `/dev/zero` typo from exhausting memory.
    static let sizeLimit = 1 << 20
    static let certificateBegin = "-----BEGIN CERTIFICATE-----"

    /// Nil when the file holds a `kind`, else what is wrong, phrased to follow "KEY 'PATH' ".
    static func problem(_ bytes: [UInt8], holding kind: Kind) -> String? {
        let lines = String(decoding: bytes, as: UTF8.self)
            .split(whereSeparator: \.isNewline)
            .map { $0.trimmed() }
        guard lines.contains(where: { !$0.isEmpty }) else { return "is empty" }
        let hasCertificate = lines.contains { $0 == certificateBegin }
        let privateKeyLines = lines.filter { $0.hasPrefix("-----BEGIN ") && $0.hasSuffix("PRIVATE KEY-----") }
        switch kind {
        case .certificate:
            if hasCertificate { return nil }
            let swapped = privateKeyLines.isEmpty ? "" : " (it holds a private key: are certificate and private_key swapped?)"
            return "holds no PEM certificate: no '\(certificateBegin)' line\(swapped)"
        case .privateKey:
            guard !privateKeyLines.isEmpty else {
                let swapped = hasCertificate ? " (it holds a certificate: are certificate and private_key swapped?)" : ""
                return "holds no PEM private key: no '-----BEGIN … PRIVATE KEY-----' line\(swapped)"
            }
            // PKCS#8 `ENCRYPTED PRIVATE KEY`, or OpenSSL's traditional `Proc-Type: 4,ENCRYPTED`:
            // there is no passphrase setting, so start-up could not read it.
            let encrypted = privateKeyLines.allSatisfy { $0 == "-----BEGIN ENCRYPTED PRIVATE KEY-----" }
                || lines.contains { $0.hasPrefix("Proc-Type:") && $0.hasSuffix("ENCRYPTED") }
            if encrypted {
                return "is encrypted with a passphrase, which this build cannot use; write it unencrypted (openssl pkey -in KEY -out KEY.plain) and deliver it as a Kubernetes Secret"
            }
            return nil
        }
    }
}
