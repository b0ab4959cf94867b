// Header blocks as bytes: received ones (views valid during a delegate call) and ones being
// built for a submit. One reusable storage each, so steady state allocates nothing.
import CNGHTTP2
import OutriderCore
import OutriderHTTP

/// The pseudo-headers of RFC 9113 §8.3 (and `:protocol` of RFC 8441), recognized once.
public enum HTTP2PseudoHeader: UInt8, Sendable {
    /// A regular header.
    case none = 0
    case method, path, authority, scheme, status, `protocol`

    static func classify(_ name: UnsafePointer<UInt8>, _ count: Int) -> HTTP2PseudoHeader {
        guard count > 1, name[0] == UInt8(ascii: ":") else { return .none }
        switch count {
        case 5: if equalsBytes(name, count, ":path") { return .path }
        case 7:
            if equalsBytes(name, count, ":method") { return .method }
            if equalsBytes(name, count, ":scheme") { return .scheme }
            if equalsBytes(name, count, ":status") { return .status }
        case 9: if equalsBytes(name, count, ":protocol") { return .protocol }
        case 10: if equalsBytes(name, count, ":authority") { return .authority }
        default: break
        }
        return .none
    }
}

/// One header of a block: offsets into the block's byte storage.
public struct HTTP2HeaderEntry: Sendable {
    public var nameOffset: Int32
    public var nameLength: Int32
    public var valueOffset: Int32
    public var valueLength: Int32
    /// The regular header's meaning to the proxy (`.other` for pseudo-headers and the rest).
    public var kind: HeaderKind
    public var pseudo: HTTP2PseudoHeader
    /// Sent as a literal HPACK never adds to its table: a value no later block repeats.
    public var neverIndexed = false
}

/// An ordered list of header fields with its own byte storage.
///
/// Received blocks (handed to the delegate) keep the wire order: pseudo-headers first (nghttp2
/// enforces it), then the regular ones; `method`, `status` and the offsets of the other
/// pseudo-headers are filled in as they arrive. Blocks being built for a submit copy the bytes
/// given, lower-casing names (HTTP/2 requires lower-case names; an HTTP/1 head may have any case).
public final class HTTP2HeaderBlock {
    public private(set) var count = 0
    private var entryCapacity: Int
    private var entries: UnsafeMutablePointer<HTTP2HeaderEntry>
    private var storageCapacity: Int
    private var storage: UnsafeMutablePointer<UInt8>
    private var storageUsed = 0
    /// nghttp2's view of the entries, rebuilt at each submit (storage may have moved since).
    private var nameValuePairs: UnsafeMutablePointer<nghttp2_nv>
    /// Bytes by RFC 9113 §6.5.2's measure (name + value + 32 per field).
    public private(set) var listSize = 0

    /// The request method, classified; `.other` with no `:method` (see `hasMethod`).
    public private(set) var method: MethodKind = .other
    /// The `:status` as a number; 0 without one.
    public private(set) var status = 0
    private var pseudoIndex: (method: Int16, path: Int16, authority: Int16, scheme: Int16, status: Int16, protocol: Int16) =
        (-1, -1, -1, -1, -1, -1)

    public init(entryCapacity: Int = 16, storageCapacity: Int = 1024) {
        self.entryCapacity = max(1, entryCapacity)
        self.storageCapacity = max(16, storageCapacity)
        entries = .allocate(capacity: self.entryCapacity)
        storage = .allocate(capacity: self.storageCapacity)
        nameValuePairs = .allocate(capacity: self.entryCapacity)
    }

    deinit {
        entries.deallocate()
        storage.deallocate()
        nameValuePairs.deallocate()
    }

    /// Empties the block, keeping its storage.
    public func removeAll() {
        count = 0
        storageUsed = 0
        listSize = 0
        method = .other
        status = 0
        pseudoIndex = (-1, -1, -1, -1, -1, -1)
    }

    // MARK: Reading

    @inline(__always) public subscript(index: Int) -> HTTP2HeaderEntry { entries[index] }

    @inline(__always) public func name(at index: Int) -> UnsafeBufferPointer<UInt8> {
        let entry = entries[index]
        return UnsafeBufferPointer(start: storage + Int(entry.nameOffset), count: Int(entry.nameLength))
    }

    @inline(__always) public func value(at index: Int) -> UnsafeBufferPointer<UInt8> {
        let entry = entries[index]
        return UnsafeBufferPointer(start: storage + Int(entry.valueOffset), count: Int(entry.valueLength))
    }

    public var hasMethod: Bool { pseudoIndex.method >= 0 }
    public var path: UnsafeBufferPointer<UInt8>? { pseudoValue(pseudoIndex.path) }
    public var authority: UnsafeBufferPointer<UInt8>? { pseudoValue(pseudoIndex.authority) }
    public var scheme: UnsafeBufferPointer<UInt8>? { pseudoValue(pseudoIndex.scheme) }
    public var methodBytes: UnsafeBufferPointer<UInt8>? { pseudoValue(pseudoIndex.method) }
    /// RFC 8441 extended CONNECT (`:protocol`), e.g. "websocket".
    public var protocolValue: UnsafeBufferPointer<UInt8>? { pseudoValue(pseudoIndex.protocol) }

    private func pseudoValue(_ index: Int16) -> UnsafeBufferPointer<UInt8>? {
        index < 0 ? nil : value(at: Int(index))
    }

    /// The first regular header with this (lower-case) name.
    public func firstValue(named lowercaseName: StaticString) -> UnsafeBufferPointer<UInt8>? {
        for index in 0..<count {
            let entry = entries[index]
            if equalsBytes(storage + Int(entry.nameOffset), Int(entry.nameLength), lowercaseName) {
                return value(at: index)
            }
        }
        return nil
    }

    /// Text of the first value with this name (tests and diagnostics: allocates).
    public func text(named lowercaseName: StaticString) -> String? {
        firstValue(named: lowercaseName).map { String(decoding: $0, as: UTF8.self) }
    }

    // MARK: Building

    /// Appends a field, copying both; the name is lower-cased.
    public func append(name: UnsafePointer<UInt8>, nameCount: Int, value: UnsafePointer<UInt8>, valueCount: Int) {
        appendField(name: name, nameCount: nameCount, value: value, valueCount: valueCount, lowercasingName: true, classifying: false)
    }

    public func append(name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) {
        let placeholder = UnsafePointer<UInt8>(bitPattern: 1)!
        append(name: name.baseAddress ?? placeholder, nameCount: name.count,
               value: value.baseAddress ?? placeholder, valueCount: value.count)
    }

    // Names given as StaticString are the proxy's own and written in lower case.

    public func append(_ name: StaticString, _ value: StaticString) {
        appendField(name: name.utf8Start, nameCount: name.utf8CodeUnitCount, value: value.utf8Start,
                    valueCount: value.utf8CodeUnitCount, lowercasingName: false, classifying: false)
    }

    public func append(_ name: StaticString, bytes value: UnsafeBufferPointer<UInt8>) {
        appendField(name: name.utf8Start, nameCount: name.utf8CodeUnitCount,
                    value: value.baseAddress ?? name.utf8Start, valueCount: value.count, lowercasingName: false, classifying: false)
    }

    /// A field whose value no later block on the connection repeats (a request id): HPACK
    /// sends it as a literal instead of filling its table with it.
    public func append(_ name: StaticString, uniqueValue value: UnsafeBufferPointer<UInt8>) {
        append(name, bytes: value)
        entries[count - 1].neverIndexed = true
    }

    /// A field whose value is a non-negative number, formatted without allocating.
    public func append(_ name: StaticString, decimal: Int64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { raw in
            var remaining = UInt64(max(0, decimal))
            var start = raw.count
            repeat {
                start -= 1
                raw[start] = UInt8(truncatingIfNeeded: remaining % 10) &+ 0x30
                remaining /= 10
            } while remaining > 0
            appendField(name: name.utf8Start, nameCount: name.utf8CodeUnitCount,
                        value: UnsafePointer(raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + start), valueCount: raw.count - start,
                        lowercasingName: false, classifying: false)
        }
    }

    /// `:status` with a number, formatted without allocating.
    public func appendStatus(_ code: Int) {
        var digits: (UInt8, UInt8, UInt8) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { raw in
            raw[0] = UInt8(truncatingIfNeeded: (code / 100) % 10) &+ 0x30
            raw[1] = UInt8(truncatingIfNeeded: (code / 10) % 10) &+ 0x30
            raw[2] = UInt8(truncatingIfNeeded: code % 10) &+ 0x30
        }
        let name: StaticString = ":status"
        withUnsafeBytes(of: &digits) { raw in
            appendField(name: name.utf8Start, nameCount: name.utf8CodeUnitCount,
                        value: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), valueCount: 3,
                        lowercasingName: false, classifying: false)
        }
    }

    /// Appends a field as received (nghttp2 has validated it: names are lower-case already).
    func appendReceived(name: UnsafePointer<UInt8>, nameCount: Int, value: UnsafePointer<UInt8>, valueCount: Int) {
        appendField(name: name, nameCount: nameCount, value: value, valueCount: valueCount, lowercasingName: false, classifying: true)
    }

    private func appendField(name: UnsafePointer<UInt8>, nameCount: Int, value: UnsafePointer<UInt8>, valueCount: Int,
                             lowercasingName: Bool, classifying: Bool) {
        if count == entryCapacity { growEntries() }
        let needed = storageUsed + nameCount + valueCount
        if needed > storageCapacity { growStorage(atLeast: needed) }
        let nameOffset = storageUsed
        if lowercasingName {
            copyLowercasing(from: name, to: storage + nameOffset, count: nameCount)
        } else if nameCount > 0 {
            (storage + nameOffset).update(from: name, count: nameCount)
        }
        let valueOffset = nameOffset + nameCount
        if valueCount > 0 { (storage + valueOffset).update(from: value, count: valueCount) }
        storageUsed = valueOffset + valueCount
        let storedName = UnsafePointer(storage + nameOffset)
        let pseudo = nameCount > 1 && storedName[0] == UInt8(ascii: ":") ? HTTP2PseudoHeader.classify(storedName, nameCount) : .none
        // Received names are lower-case tokens (validated by nghttp2) whose meaning the proxy
        // reads; a block built for a submit only goes out, so its fields stay `.other`.
        let kind: HeaderKind = pseudo == .none && classifying ? HeaderKind.classifyToken(storedName, nameCount) : .other
        entries[count] = HTTP2HeaderEntry(nameOffset: Int32(nameOffset), nameLength: Int32(nameCount),
                                          valueOffset: Int32(valueOffset), valueLength: Int32(valueCount),
                                          kind: kind, pseudo: pseudo)
        let index = Int16(truncatingIfNeeded: count)
        switch pseudo {
        case .none: break
        case .method:
            pseudoIndex.method = index
            method = MethodKind.classify(storage + valueOffset, valueCount)
        case .path: pseudoIndex.path = index
        case .authority: pseudoIndex.authority = index
        case .scheme: pseudoIndex.scheme = index
        case .protocol: pseudoIndex.protocol = index
        case .status:
            pseudoIndex.status = index
            status = Self.parseStatus(storage + valueOffset, valueCount)
        }
        count += 1
        listSize += nameCount + valueCount + 32
    }

    /// ASCII lower-casing, eight bytes at a time (a header name is a dozen bytes or so).
    private func copyLowercasing(from source: UnsafePointer<UInt8>, to target: UnsafeMutablePointer<UInt8>, count: Int) {
        let ones: UInt64 = 0x0101_0101_0101_0101
        var index = 0
        while count - index >= 8 {
            let word = UnsafeRawPointer(source + index).loadUnaligned(as: UInt64.self)
            // Per byte, on its low seven bits (no carry can cross into the next byte): the high
            // bit of `low + 0x3F` is set from "A" up, that of `low + 0x25` above "Z".
            let low = word & (ones &* 0x7F)
            let upper = (low &+ ones &* 0x3F) & ~(low &+ ones &* 0x25) & ~word & (ones &* 0x80)
            UnsafeMutableRawPointer(target + index).storeBytes(of: word | (upper >> 2), as: UInt64.self)
            index += 8
        }
        while index < count {
            target[index] = asciiLowercase(source[index])
            index += 1
        }
    }

    private static func parseStatus(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Int {
        guard count == 3 else { return 0 }
        var value = 0
        for index in 0..<3 {
            let digit = bytes[index] &- 0x30
            guard digit < 10 else { return 0 }
            value = value * 10 + Int(digit)
        }
        return value
    }

    private func growEntries() {
        let newCapacity = entryCapacity * 2
        let newEntries = UnsafeMutablePointer<HTTP2HeaderEntry>.allocate(capacity: newCapacity)
        newEntries.moveInitialize(from: entries, count: count)
        entries.deallocate()
        entries = newEntries
        nameValuePairs.deallocate()
        nameValuePairs = .allocate(capacity: newCapacity)
        entryCapacity = newCapacity
    }

    private func growStorage(atLeast needed: Int) {
        var newCapacity = storageCapacity * 2
        while newCapacity < needed { newCapacity *= 2 }
        let newStorage = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        if storageUsed > 0 { newStorage.update(from: storage, count: storageUsed) }
        storage.deallocate()
        storage = newStorage
        storageCapacity = newCapacity
    }

    /// The block as nghttp2 name/value pairs, valid during `body`; nghttp2's submit functions
    /// copy them (no NO_COPY flags), so the block may be reused right after.
    func withNameValuePairs<Result>(_ body: (UnsafePointer<nghttp2_nv>, Int) -> Result) -> Result {
        for index in 0..<count {
            let entry = entries[index]
            nameValuePairs[index] = nghttp2_nv(
                name: storage + Int(entry.nameOffset), value: storage + Int(entry.valueOffset),
                namelen: Int(entry.nameLength), valuelen: Int(entry.valueLength),
                flags: UInt8(entry.neverIndexed ? NGHTTP2_NV_FLAG_NO_INDEX.rawValue : NGHTTP2_NV_FLAG_NONE.rawValue))
        }
        return body(UnsafePointer(nameValuePairs), count)
    }
}
