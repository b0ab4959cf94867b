// SHA-256 and constant-time comparison over libcrypto, for token caches, key hashing and
// secret comparisons. Neither allocates.
import COpenSSL

/// SHA-256 of `bytes` as four big-endian 64-bit words (word 0 holds digest bytes 0..<8).
public func sha256(_ bytes: UnsafeRawBufferPointer) -> (UInt64, UInt64, UInt64, UInt64) {
    var digest: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    withUnsafeMutableBytes(of: &digest) { out in
        stackSHA256.hash(bytes, into: out.baseAddress!.assumingMemoryBound(to: UInt8.self))
    }
    return (UInt64(bigEndian: digest.0), UInt64(bigEndian: digest.1),
            UInt64(bigEndian: digest.2), UInt64(bigEndian: digest.3))
}

public func sha256(_ bytes: [UInt8]) -> (UInt64, UInt64, UInt64, UInt64) {
    bytes.withUnsafeBytes { sha256($0) }
}

/// SHA-256 with the context on the stack: no allocation, no lock.
///
/// OpenSSL 3.0's EVP digests allocate on every init (the provider context; 3.0 never reuses
/// it) and the one-shot SHA256() also fetches the algorithm (a global lock) and allocates 3
/// times; both measured with a malloc counter. The token-cache path must not allocate, so this
/// uses SHA256_Init/Update/Final, which 3.0 marks deprecated but still ships. The calls sit in
/// a deprecated witness reached through a protocol, which keeps the build free of warnings.
private protocol SHA256Hasher: Sendable { func hash(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) }

private struct LowLevelSHA256: SHA256Hasher {
    @available(*, deprecated, message: "SHA256_Init/Update/Final: deprecated in OpenSSL 3.0, allocation-free")
    func hash(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) {
        var context = SHA256_CTX()
        _ = SHA256_Init(&context)
        if let base = bytes.baseAddress, bytes.count > 0 { _ = SHA256_Update(&context, base, bytes.count) }
        _ = SHA256_Final(out, &context)
        OPENSSL_cleanse(&context, MemoryLayout<SHA256_CTX>.size)
    }
}

private let stackSHA256: any SHA256Hasher = LowLevelSHA256()

/// The 32 digest bytes.
public func sha256Bytes(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: 32) { out, count in
        stackSHA256.hash(bytes, into: out.baseAddress!)
        count = 32
    }
}

/// True when `a` and `b` hold the same bytes. The time taken depends only on the lengths:
/// the contents are always compared in full (CRYPTO_memcmp) over the shorter length, and a
/// length mismatch answers false after that comparison.
public func constantTimeEquals(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    let length = min(a.count, b.count)
    var differ: Int32 = 0
    if length > 0 {
        differ = CRYPTO_memcmp(a.baseAddress!, b.baseAddress!, length)
    }
    return (differ == 0) && a.count == b.count
}

public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.withUnsafeBytes { a in b.withUnsafeBytes { b in constantTimeEquals(a, b) } }
}
