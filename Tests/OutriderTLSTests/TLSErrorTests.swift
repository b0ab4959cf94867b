import COpenSSL
import Testing
@testable import OutriderTLS

@Test func errorCarriesOpenSSLReason() {
    let garbage = Array("not a certificate".utf8)
    let bio = garbage.withUnsafeBufferPointer { BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }
    defer { BIO_free(bio) }
    #expect(PEM_read_bio_X509(bio, nil, nil, nil) == nil)
    let error = TLSError("loading test certificate")
    #expect(error.description.hasPrefix("loading test certificate: "))
    #expect(drainOpenSSLErrors().isEmpty)
}
