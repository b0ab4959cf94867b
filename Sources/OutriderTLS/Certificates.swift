// Names read out of X.509 certificates: the SNI table of a server context and the identity of a
// verified peer. Runs at context creation and in rarely called accessors, never per read.
import COpenSSL

public enum TLSProtocolVersion: Sendable {
    case tls12, tls13

    var openSSLValue: Int32 {
        switch self {
        case .tls12: return TLS1_2_VERSION
        case .tls13: return TLS1_3_VERSION
        }
    }
}

enum CertificateNames {
    /// The subject alternative names of the given kinds (GEN_URI, GEN_DNS…), in certificate order.
    static func alternativeNames(of certificate: OpaquePointer, type: Int32) -> [String] {
        guard let raw = X509_get_ext_d2i(certificate, NID_subject_alt_name, nil, nil) else {
            // Absent is normal; a malformed extension leaves an entry behind.
            ERR_clear_error()
            return []
        }
        let names = OpaquePointer(raw)
        defer { GENERAL_NAMES_free(names) }
        var result: [String] = []
        for index in 0..<OPENSSL_sk_num(names) {
            guard let entry = OPENSSL_sk_value(names, index)?.assumingMemoryBound(to: GENERAL_NAME.self),
                  entry.pointee.type == type,
                  // dNSName and uniformResourceIdentifier share the union slot `ia5`.
                  let string = entry.pointee.d.ia5 else { continue }
            if let text = text(of: string) { result.append(text) }
        }
        return result
    }

    /// The last common name of the subject (the most specific one when there are several).
    static func commonName(of certificate: OpaquePointer) -> String? {
        guard let subject = X509_get_subject_name(certificate) else { return nil }
        var index: Int32 = -1
        var last: Int32 = -1
        while true {
            index = X509_NAME_get_index_by_NID(subject, NID_commonName, index)
            if index < 0 { break }
            last = index
        }
        guard last >= 0, let entry = X509_NAME_get_entry(subject, last),
              let data = X509_NAME_ENTRY_get_data(entry) else { return nil }
        var utf8: UnsafeMutablePointer<UInt8>? = nil
        let length = ASN1_STRING_to_UTF8(&utf8, data)
        guard length >= 0, let utf8 else {
            ERR_clear_error()
            return nil
        }
        defer { coutrider_openssl_free(utf8) }
        return String(decoding: UnsafeBufferPointer(start: utf8, count: Int(length)), as: UTF8.self)
    }

    /// SPIFFE-style identity: the first URI SAN, else the first DNS SAN, else the subject CN.
    static func identity(of certificate: OpaquePointer) -> String? {
        if let uri = alternativeNames(of: certificate, type: GEN_URI).first { return uri }
        if let dns = alternativeNames(of: certificate, type: GEN_DNS).first { return dns }
        return commonName(of: certificate)
    }

    /// Names a server certificate answers to for SNI: its DNS SANs, else (none at all) its CN.
    static func serverNames(of certificate: OpaquePointer) -> [String] {
        let dnsNames = alternativeNames(of: certificate, type: GEN_DNS)
        if !dnsNames.isEmpty { return dnsNames }
        return commonName(of: certificate).map { [$0] } ?? []
    }

    private static func text(of string: UnsafeMutablePointer<ASN1_STRING>) -> String? {
        guard let bytes = ASN1_STRING_get0_data(string) else { return nil }
        let count = Int(ASN1_STRING_length(string))
        return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
    }
}

/// ALPN protocol names in the wire format (each prefixed by its length), validated.
func alpnWireFormat(_ protocols: [String]) throws(TLSError) -> [UInt8] {
    var wire: [UInt8] = []
    for name in protocols {
        let bytes = Array(name.utf8)
        guard (1...255).contains(bytes.count) else {
            throw TLSError("ALPN protocol name \"\(name)\" must be 1 to 255 bytes")
        }
        wire.append(UInt8(bytes.count))
        wire.append(contentsOf: bytes)
    }
    return wire
}
