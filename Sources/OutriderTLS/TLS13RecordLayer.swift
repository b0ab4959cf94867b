// TLS 1.3 record protection (RFC 8446 §5, §7.1–7.2) for a connection whose handshake OpenSSL
// completed: ciphertext in, plaintext out, and back, keyed from the application traffic
// secrets. OpenSSL 3.0 keeps a 7.6 KiB SSL object and 1.9 KiB of cipher state for every open
// connection; this keeps the secrets, keys and sequence numbers (about 0.5 KiB), and cipher
// contexts and buffers only while the connection is busy.
import COpenSSL
import Glibc

/// The TLS 1.3 suites whose records `TLS13RecordLayer` protects (OpenSSL's default set).
public enum TLS13CipherSuite: Sendable, CaseIterable {
    case aes128GCMSHA256, aes256GCMSHA384, chacha20Poly1305SHA256

    public init?(protocolID: UInt16) {
        switch protocolID {
        case 0x1301: self = .aes128GCMSHA256
        case 0x1302: self = .aes256GCMSHA384
        case 0x1303: self = .chacha20Poly1305SHA256
        default: return nil
        }
    }

    public var keyLength: Int { self == .aes128GCMSHA256 ? 16 : 32 }
    public var hashLength: Int { self == .aes256GCMSHA384 ? 48 : 32 }

    nonisolated(unsafe) private static let aes128GCM = EVP_CIPHER_fetch(nil, "AES-128-GCM", nil)
    nonisolated(unsafe) private static let aes256GCM = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)
    nonisolated(unsafe) private static let chacha20Poly1305 = EVP_CIPHER_fetch(nil, "ChaCha20-Poly1305", nil)
    nonisolated(unsafe) private static let sha256 = EVP_MD_fetch(nil, "SHA2-256", nil)
    nonisolated(unsafe) private static let sha384 = EVP_MD_fetch(nil, "SHA2-384", nil)

    /// Fetched once per process: an implicit fetch per cipher initialisation costs a lock and
    /// a lookup in OpenSSL 3.
    var cipher: OpaquePointer? {
        switch self {
        case .aes128GCMSHA256: return Self.aes128GCM
        case .aes256GCMSHA384: return Self.aes256GCM
        case .chacha20Poly1305SHA256: return Self.chacha20Poly1305
        }
    }

    var digest: OpaquePointer? { self == .aes256GCMSHA384 ? Self.sha384 : Self.sha256 }
}

/// A FIFO of bytes on the C heap: appended at the end, consumed from the front, its memory
/// given back on request (an idle connection holds none).
struct CiphertextQueue {
    private(set) var base: UnsafeMutablePointer<UInt8>?
    private(set) var capacity = 0
    private var start = 0
    private var end = 0

    var count: Int { end - start }
    var isEmpty: Bool { end == start }
    /// The first unconsumed byte; only while `count > 0`.
    var front: UnsafeMutablePointer<UInt8> { base.unsafelyUnwrapped + start }

    /// Where `extra` more bytes go (then `commit`); nil when memory runs out.
    mutating func reserve(_ extra: Int) -> UnsafeMutablePointer<UInt8>? {
        if let base, capacity - end >= extra { return base + end }
        let live = count
        if let base, start > 0 {
            memmove(base, base + start, live)
            start = 0
            end = live
            if capacity - end >= extra { return base + end }
        }
        var grown = max(capacity * 2, 1024)
        while grown < live + extra { grown *= 2 }
        guard let memory = realloc(base, grown) else { return nil }
        base = memory.assumingMemoryBound(to: UInt8.self)
        capacity = grown
        return base.unsafelyUnwrapped + end
    }

    mutating func commit(_ count: Int) { end += count }

    mutating func consume(_ count: Int) {
        start += count
        if start == end {
            start = 0
            end = 0
        }
    }

    /// Frees the memory when nothing is queued and it holds more than `limit` bytes.
    mutating func releaseIfEmpty(above limit: Int = 0) {
        guard isEmpty, capacity > limit else { return }
        free(base)
        base = nil
        capacity = 0
    }

    mutating func deallocate() {
        free(base)
        base = nil
        capacity = 0
        start = 0
        end = 0
    }
}

/// One connection's TLS 1.3 records after the handshake. Not thread-safe: one loop owns it.
public final class TLS13RecordLayer {
    public static let maximumPlaintext = 16_384
    /// RFC 8446 §5.2: a TLSCiphertext fragment may exceed the plaintext limit by 256 bytes.
    static let maximumCiphertext = 16_384 + 256
    static let tagLength = 16
    static let headerLength = 5
    /// Drained buffers above this are freed at once; smaller ones stay for the next request
    /// until the connection goes idle.
    static let retainedBufferLimit = 4 * 1024

    private enum ContentType {
        static let alert: UInt8 = 21
        static let handshake: UInt8 = 22
        static let applicationData: UInt8 = 23
    }

    private enum Alert {
        static let closeNotify: UInt8 = 0
        static let unexpectedMessage: UInt8 = 10
        static let badRecordMAC: UInt8 = 20
        static let recordOverflow: UInt8 = 22
        static let illegalParameter: UInt8 = 47
        static let decodeError: UInt8 = 50
        static let internalError: UInt8 = 80
        static let userCanceled: UInt8 = 90
    }

    private enum Direction { case read, write }

    private let suite: TLS13CipherSuite
    /// readSecret, writeSecret (64 bytes each), readKey, writeKey (32), readIV, writeIV (12):
    /// one allocation, wiped when freed.
    private let keyMaterial: UnsafeMutablePointer<UInt8>
    private static let keyMaterialSize = 64 + 64 + 32 + 32 + 12 + 12
    private var readSecret: UnsafeMutablePointer<UInt8> { keyMaterial }
    private var writeSecret: UnsafeMutablePointer<UInt8> { keyMaterial + 64 }
    private var readKey: UnsafeMutablePointer<UInt8> { keyMaterial + 128 }
    private var writeKey: UnsafeMutablePointer<UInt8> { keyMaterial + 160 }
    private var readIV: UnsafeMutablePointer<UInt8> { keyMaterial + 192 }
    private var writeIV: UnsafeMutablePointer<UInt8> { keyMaterial + 204 }

    private var readSequence: UInt64
    private var writeSequence: UInt64
    /// EVP_CIPHER_CTX keyed for each direction, made when needed and freed while idle.
    private var readContext: OpaquePointer?
    private var writeContext: OpaquePointer?

    private(set) var input = CiphertextQueue()
    private(set) var output = CiphertextQueue()
    /// A decrypted application data record at the front of `input`, not yet all read out:
    /// where its unread plaintext starts (from the queue's front), how much is left, and how
    /// many queue bytes the record occupies.
    private var plaintextOffset = 0
    private var plaintextRemaining = 0
    private var frontRecordLength = 0
    /// A post-handshake message split across records: its header so far and bytes seen.
    private var handshakeHeader: UInt32 = 0
    private var handshakeBytesSeen = 0
    /// Records in a row that carried no application data (empty ones, KeyUpdates, warnings):
    /// each costs a decryption and gives nothing, so a peer gets as many as OpenSSL allows.
    private var recordsWithoutData = 0
    static let maximumRecordsWithoutData = 32

    public private(set) var receivedCloseNotify = false
    public private(set) var sentCloseNotify = false
    public private(set) var failed = false
    public private(set) var failureReason: String?

    /// nil when the secrets do not fit the suite or memory runs out.
    public init?(suite: TLS13CipherSuite, readSecret peerSecret: UnsafePointer<UInt8>, readSequence: UInt64,
          writeSecret ourSecret: UnsafePointer<UInt8>, writeSequence: UInt64) {
        self.suite = suite
        keyMaterial = .allocate(capacity: Self.keyMaterialSize)
        keyMaterial.initialize(repeating: 0, count: Self.keyMaterialSize)
        self.readSequence = readSequence
        self.writeSequence = writeSequence
        readSecret.update(from: peerSecret, count: suite.hashLength)
        writeSecret.update(from: ourSecret, count: suite.hashLength)
        guard suite.cipher != nil, suite.digest != nil, deriveTrafficKeys(.read), deriveTrafficKeys(.write) else {
            return nil
        }
    }

    deinit {
        if let readContext { EVP_CIPHER_CTX_free(readContext) }
        if let writeContext { EVP_CIPHER_CTX_free(writeContext) }
        OPENSSL_cleanse(keyMaterial, Self.keyMaterialSize)
        keyMaterial.deallocate()
        input.deallocate()
        output.deallocate()
    }

    // MARK: Ciphertext in, plaintext out

    /// Appends received ciphertext; false when memory ran out (the layer has failed then).
    @discardableResult
    public func receiveCiphertext(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        guard !failed, count > 0 else { return true }
        guard let destination = input.reserve(count) else {
            fail(Alert.internalError, "buffering received ciphertext failed (out of memory)")
            return false
        }
        destination.update(from: bytes, count: count)
        input.commit(count)
        return true
    }

    /// Decrypts whole records into `destination`, as much as fits; a record that does not
    /// fit stays decrypted for the next call.
    public func readPlaintext(into destination: UnsafeMutablePointer<UInt8>, capacity: Int) -> TLSReadResult {
        var total = 0
        while total < capacity {
            if plaintextRemaining > 0 {
                let count = min(plaintextRemaining, capacity - total)
                (destination + total).update(from: input.front + plaintextOffset, count: count)
                total += count
                plaintextOffset += count
                plaintextRemaining -= count
                if plaintextRemaining == 0 { consumeFrontRecord() }
                continue
            }
            guard !failed, !receivedCloseNotify, openNextRecord() else { break }
        }
        if plaintextRemaining == 0 { input.releaseIfEmpty(above: Self.retainedBufferLimit) }
        if total > 0 { return .bytes(total) }
        if failed { return .failed }
        if receivedCloseNotify { return .closed }
        return .needMoreInput
    }

    /// Opens the record at the front of `input` when it is all there; false when it is not,
    /// or after a failure or close_notify.
    private func openNextRecord() -> Bool {
        guard input.count >= Self.headerLength else { return false }
        let header = input.front
        let length = Int(header[3]) << 8 | Int(header[4])
        // After the handshake every record is protected: its outer type is application_data.
        guard header[0] == ContentType.applicationData else {
            fail(Alert.unexpectedMessage, "a record of type \(header[0]) after the handshake")
            return false
        }
        guard header[1] == 3, header[2] == 3 else {
            fail(Alert.decodeError, "a record with version bytes \(header[1]).\(header[2])")
            return false
        }
        guard length <= Self.maximumCiphertext else {
            fail(Alert.recordOverflow, "a record of \(length) bytes")
            return false
        }
        guard length > Self.tagLength else {
            fail(Alert.decodeError, "a record of \(length) bytes, too short to be protected")
            return false
        }
        guard input.count >= Self.headerLength + length else { return false }
        let body = header + Self.headerLength
        guard decrypt(header: header, body: body, length: length) else {
            fail(Alert.badRecordMAC, "a record failed authentication")
            return false
        }
        frontRecordLength = Self.headerLength + length
        // TLSInnerPlaintext: content, its type, then zeros of padding.
        var end = length - Self.tagLength
        while end > 0 && body[end - 1] == 0 { end -= 1 }
        guard end > 0 else {
            fail(Alert.unexpectedMessage, "a record with no content type")
            return false
        }
        let contentLength = end - 1
        guard contentLength <= Self.maximumPlaintext else {
            fail(Alert.recordOverflow, "a record of \(contentLength) plaintext bytes")
            return false
        }
        let type = body[contentLength]
        if type == ContentType.applicationData && contentLength > 0 {
            recordsWithoutData = 0
        } else {
            recordsWithoutData += 1
            guard recordsWithoutData <= Self.maximumRecordsWithoutData else {
                fail(Alert.unexpectedMessage, "more than \(Self.maximumRecordsWithoutData) records in a row without data")
                return false
            }
        }
        if type != ContentType.handshake, handshakeBytesSeen > 0 {
            fail(Alert.unexpectedMessage, "a record between the parts of a handshake message")
            return false
        }
        switch type {
        case ContentType.applicationData:
            plaintextOffset = Self.headerLength
            plaintextRemaining = contentLength
            if contentLength == 0 { consumeFrontRecord() }
            return true
        case ContentType.alert:
            guard contentLength == 2 else {
                fail(Alert.decodeError, "an alert record of \(contentLength) bytes")
                return false
            }
            let description = body[1]
            consumeFrontRecord()
            switch description {
            case Alert.closeNotify:
                receivedCloseNotify = true
                return false
            case Alert.userCanceled:
                // A warning; close_notify follows (RFC 8446 §6.1).
                return true
            default:
                failed = true
                failureReason = "TLS read failed: the peer sent alert \(description)"
                return false
            }
        case ContentType.handshake:
            guard contentLength > 0 else {
                fail(Alert.unexpectedMessage, "an empty handshake record")
                return false
            }
            let processed = processHandshake(body, contentLength)
            if !failed { consumeFrontRecord() }
            return processed
        default:
            fail(Alert.unexpectedMessage, "a record of content type \(type)")
            return false
        }
    }

    private func consumeFrontRecord() {
        input.consume(frontRecordLength)
        frontRecordLength = 0
        plaintextOffset = 0
        plaintextRemaining = 0
    }

    /// After the handshake a client may send KeyUpdate only (no post-handshake authentication
    /// is offered, and NewSessionTicket goes the other way).
    private func processHandshake(_ bytes: UnsafeMutablePointer<UInt8>, _ count: Int) -> Bool {
        for index in 0..<count {
            let byte = bytes[index]
            if handshakeBytesSeen < 4 {
                handshakeHeader = handshakeHeader << 8 | UInt32(byte)
                handshakeBytesSeen += 1
                if handshakeBytesSeen == 4 {
                    let type = handshakeHeader >> 24, length = handshakeHeader & 0xff_ffff
                    guard type == 24, length == 1 else {
                        fail(Alert.unexpectedMessage, "a handshake message of type \(type) after the handshake")
                        return false
                    }
                }
                continue
            }
            handshakeBytesSeen = 0
            handshakeHeader = 0
            guard byte <= 1 else {
                fail(Alert.illegalParameter, "a KeyUpdate with request_update \(byte)")
                return false
            }
            // RFC 8446 §5.1: a message before a key change must end its record.
            guard index == count - 1 else {
                fail(Alert.unexpectedMessage, "a KeyUpdate not at the end of its record")
                return false
            }
            guard updateSecret(.read) else { return false }
            if byte == 1 {
                // update_requested: answer with our own KeyUpdate before more application
                // data, then protect with the next secret.
                let keyUpdate: (UInt8, UInt8, UInt8, UInt8, UInt8) = (24, 0, 0, 1, 0)
                let sealed = withUnsafeBytes(of: keyUpdate) { raw in
                    seal(type: ContentType.handshake, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), 5)
                }
                guard sealed, updateSecret(.write) else { return false }
            }
        }
        return true
    }

    // MARK: Plaintext in, ciphertext out

    /// Protects `count` bytes as application data records of at most 16 KiB; false on failure.
    public func writePlaintext(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        guard !failed, !sentCloseNotify else { return false }
        var offset = 0
        while offset < count {
            let chunk = min(count - offset, Self.maximumPlaintext)
            guard seal(type: ContentType.applicationData, bytes + offset, chunk) else { return false }
            offset += chunk
        }
        return true
    }

    /// Queues close_notify (once).
    public func shutdown() {
        guard !failed, !sentCloseNotify else { return }
        let alert: (UInt8, UInt8) = (1, Alert.closeNotify)
        _ = withUnsafeBytes(of: alert) { raw in
            seal(type: ContentType.alert, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), 2)
        }
        sentCloseNotify = true
    }

    /// Ciphertext produced before the hand-off (OpenSSL's last records), queued as is.
    func queueCiphertext(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        guard count > 0 else { return true }
        guard let destination = output.reserve(count) else { return false }
        destination.update(from: bytes, count: count)
        output.commit(count)
        return true
    }

    public var pendingCiphertextCount: Int { output.count }

    public func takeCiphertext(into destination: UnsafeMutablePointer<UInt8>, capacity: Int) -> Int {
        let count = min(capacity, output.count)
        guard count > 0 else { return 0 }
        destination.update(from: output.front, count: count)
        output.consume(count)
        output.releaseIfEmpty(above: Self.retainedBufferLimit)
        return count
    }

    /// The connection went idle: buffers and cipher contexts go back; keys and sequence
    /// numbers stay.
    public func releaseIdleMemory() {
        if plaintextRemaining == 0 { input.releaseIfEmpty() }
        output.releaseIfEmpty()
        if let readContext {
            EVP_CIPHER_CTX_free(readContext)
            self.readContext = nil
        }
        if let writeContext {
            EVP_CIPHER_CTX_free(writeContext)
            self.writeContext = nil
        }
    }

    /// Heap bytes behind the two buffers (tests watch them go).
    var bufferedCapacity: Int { input.capacity + output.capacity }
    var holdsCipherContexts: Bool { readContext != nil || writeContext != nil }

    // MARK: Protection

    /// Protects one record of `type` (tests make records a well-behaved peer would not send).
    public func seal(type: UInt8, _ bytes: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        let length = count + 1 + Self.tagLength
        guard writeSequence < UInt64.max, let context = cipherContext(.write),
              let record = output.reserve(Self.headerLength + length) else {
            failed = true
            failureReason = failureReason ?? "TLS write failed: protecting a record (out of memory or sequence numbers)"
            return false
        }
        record[0] = ContentType.applicationData
        record[1] = 3
        record[2] = 3
        record[3] = UInt8(truncatingIfNeeded: length >> 8)
        record[4] = UInt8(truncatingIfNeeded: length)
        var innerType = type
        var produced: Int32 = 0
        let body = record + Self.headerLength
        let sealed = withNonce(writeIV, writeSequence) { nonce in
            EVP_EncryptInit_ex(context, nil, nil, nil, nonce) == 1
                && EVP_EncryptUpdate(context, nil, &produced, record, Int32(Self.headerLength)) == 1
                && (count == 0 || EVP_EncryptUpdate(context, body, &produced, bytes, Int32(count)) == 1)
                && EVP_EncryptUpdate(context, body + count, &produced, &innerType, 1) == 1
                && EVP_EncryptFinal_ex(context, body + count + 1, &produced) == 1
                && EVP_CIPHER_CTX_ctrl(context, coutrider_evp_ctrl_aead_get_tag(), Int32(Self.tagLength), body + count + 1) == 1
        }
        guard sealed else {
            ERR_clear_error()
            failed = true
            failureReason = "TLS write failed: encrypting a record"
            return false
        }
        output.commit(Self.headerLength + length)
        writeSequence += 1
        return true
    }

    /// Decrypts `body` in place and checks its tag.
    private func decrypt(header: UnsafeMutablePointer<UInt8>, body: UnsafeMutablePointer<UInt8>, length: Int) -> Bool {
        guard readSequence < UInt64.max, let context = cipherContext(.read) else { return false }
        let encrypted = length - Self.tagLength
        var produced: Int32 = 0
        let opened = withNonce(readIV, readSequence) { nonce in
            EVP_DecryptInit_ex(context, nil, nil, nil, nonce) == 1
                && EVP_DecryptUpdate(context, nil, &produced, header, Int32(Self.headerLength)) == 1
                && EVP_DecryptUpdate(context, body, &produced, body, Int32(encrypted)) == 1
                && EVP_CIPHER_CTX_ctrl(context, coutrider_evp_ctrl_aead_set_tag(), Int32(Self.tagLength), body + encrypted) == 1
                && EVP_DecryptFinal_ex(context, body + encrypted, &produced) == 1
        }
        if !opened { ERR_clear_error() }
        readSequence += 1
        return opened
    }

    /// RFC 8446 §5.3: the IV with the 64-bit sequence number XORed into its last 8 bytes.
    private func withNonce(_ iv: UnsafeMutablePointer<UInt8>, _ sequence: UInt64,
                           _ body: (UnsafeMutablePointer<UInt8>) -> Bool) -> Bool {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 12) { nonce in
            let pointer = nonce.baseAddress!
            pointer.update(from: iv, count: 12)
            for index in 0..<8 {
                pointer[4 + index] ^= UInt8(truncatingIfNeeded: sequence >> (56 - 8 * UInt64(index)))
            }
            return body(pointer)
        }
    }

    private func cipherContext(_ direction: Direction) -> OpaquePointer? {
        if let existing = direction == .read ? readContext : writeContext { return existing }
        guard let context = EVP_CIPHER_CTX_new() else { return nil }
        let key = direction == .read ? readKey : writeKey
        guard EVP_CipherInit_ex(context, suite.cipher, nil, key, nil, direction == .read ? 0 : 1) == 1 else {
            ERR_clear_error()
            EVP_CIPHER_CTX_free(context)
            return nil
        }
        if direction == .read { readContext = context } else { writeContext = context }
        return context
    }

    // MARK: Key schedule

    /// key and iv from the direction's traffic secret (RFC 8446 §7.3).
    private func deriveTrafficKeys(_ direction: Direction) -> Bool {
        let secret = direction == .read ? readSecret : writeSecret
        return expandLabel(secret, label: "key", into: direction == .read ? readKey : writeKey, length: suite.keyLength)
            && expandLabel(secret, label: "iv", into: direction == .read ? readIV : writeIV, length: 12)
    }

    /// KeyUpdate: the next secret is HKDF-Expand-Label(secret, "traffic upd", "", Hash.length).
    private func updateSecret(_ direction: Direction) -> Bool {
        let secret = direction == .read ? readSecret : writeSecret
        let next = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 64) { scratch -> Bool in
            guard expandLabel(secret, label: "traffic upd", into: scratch.baseAddress!, length: suite.hashLength) else {
                return false
            }
            secret.update(from: scratch.baseAddress!, count: suite.hashLength)
            OPENSSL_cleanse(scratch.baseAddress!, 64)
            return true
        }
        guard next, deriveTrafficKeys(direction) else {
            fail(Alert.internalError, "deriving the keys of a KeyUpdate")
            return false
        }
        if direction == .read { readSequence = 0 } else { writeSequence = 0 }
        // The context holds the old key: re-key it on next use.
        if direction == .read, let readContext {
            EVP_CIPHER_CTX_free(readContext)
            self.readContext = nil
        } else if direction == .write, let writeContext {
            EVP_CIPHER_CTX_free(writeContext)
            self.writeContext = nil
        }
        return true
    }

    /// HKDF-Expand-Label(secret, label, "", length) for length ≤ Hash.length: one HMAC block,
    /// HMAC(secret, HkdfLabel || 0x01).
    private func expandLabel(_ secret: UnsafeMutablePointer<UInt8>, label: StaticString,
                             into destination: UnsafeMutablePointer<UInt8>, length: Int) -> Bool {
        let prefix: StaticString = "tls13 "
        let labelLength = prefix.utf8CodeUnitCount + label.utf8CodeUnitCount
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 64 + 64) { scratch -> Bool in
            let info = scratch.baseAddress!
            let mac = info + 64
            var size = 0
            info[size] = UInt8(truncatingIfNeeded: length >> 8); size += 1
            info[size] = UInt8(truncatingIfNeeded: length); size += 1
            info[size] = UInt8(labelLength); size += 1
            (info + size).update(from: prefix.utf8Start, count: prefix.utf8CodeUnitCount); size += prefix.utf8CodeUnitCount
            (info + size).update(from: label.utf8Start, count: label.utf8CodeUnitCount); size += label.utf8CodeUnitCount
            info[size] = 0; size += 1  // empty context
            info[size] = 1; size += 1  // HKDF-Expand block counter
            var macLength: UInt32 = 0
            guard length <= suite.hashLength,
                  HMAC(suite.digest, secret, Int32(suite.hashLength), info, size, mac, &macLength) != nil,
                  Int(macLength) == suite.hashLength else {
                ERR_clear_error()
                return false
            }
            destination.update(from: mac, count: length)
            OPENSSL_cleanse(mac, 64)
            return true
        }
    }

    // MARK: Failures

    /// Fails the connection for a reason of ours, telling the peer with an alert.
    private func fail(_ alert: UInt8, _ reason: String) {
        guard !failed else { return }
        if !sentCloseNotify {
            let record: (UInt8, UInt8) = (2, alert)
            _ = withUnsafeBytes(of: record) { raw in
                seal(type: ContentType.alert, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), 2)
            }
            sentCloseNotify = true
        }
        failed = true
        failureReason = "TLS read failed: \(reason)"
    }
}
