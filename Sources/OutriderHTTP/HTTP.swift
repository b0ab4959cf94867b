import OutriderCore

/// Methods the proxy treats specially; anything else is `.other` (a valid token).
public enum MethodKind: UInt8, Sendable {
    case get, head, post, put, delete, options, patch, connect, trace, other

    /// RFC 9110 §9.2.2.
    public var isIdempotent: Bool {
        switch self {
        case .get, .head, .put, .delete, .options, .trace: return true
        case .post, .patch, .connect, .other: return false
        }
    }

    public static func classify(_ pointer: UnsafePointer<UInt8>, _ count: Int) -> MethodKind {
        switch count {
        case 3:
            if equalsBytes(pointer, 3, "GET") { return .get }
            if equalsBytes(pointer, 3, "PUT") { return .put }
        case 4:
            if equalsBytes(pointer, 4, "POST") { return .post }
            if equalsBytes(pointer, 4, "HEAD") { return .head }
        case 5:
            if equalsBytes(pointer, 5, "PATCH") { return .patch }
            if equalsBytes(pointer, 5, "TRACE") { return .trace }
        case 6:
            if equalsBytes(pointer, 6, "DELETE") { return .delete }
        case 7:
            if equalsBytes(pointer, 7, "OPTIONS") { return .options }
            if equalsBytes(pointer, 7, "CONNECT") { return .connect }
        default: break
        }
        return .other
    }
}

/// Headers the codecs and the proxy look at, recognized once while parsing.
public enum HeaderKind: UInt8, Sendable {
    case other = 0
    case host, contentLength, transferEncoding, connection, keepAlive, proxyConnection, te,
         upgrade, expect, trailer, xRequestID, traceparent, tracestate, xForwardedFor,
         xForwardedProto, xForwardedHost
    /// A header named by the `Connection` header: hop-by-hop for this message.
    case listedInConnection
    /// Removed by a filter (a client copy of a header the proxy sets, or `remove`).
    case removed

    public static func classify(_ name: UnsafePointer<UInt8>, _ count: Int) -> HeaderKind {
        switch count {
        case 2: if equalsLowercase(name, count, "te") { return .te }
        case 4: if equalsLowercase(name, count, "host") { return .host }
        case 6: if equalsLowercase(name, count, "expect") { return .expect }
        case 7:
            if equalsLowercase(name, count, "upgrade") { return .upgrade }
            if equalsLowercase(name, count, "trailer") { return .trailer }
        case 10:
            if equalsLowercase(name, count, "connection") { return .connection }
            if equalsLowercase(name, count, "keep-alive") { return .keepAlive }
            if equalsLowercase(name, count, "tracestate") { return .tracestate }
        case 11: if equalsLowercase(name, count, "traceparent") { return .traceparent }
        case 12: if equalsLowercase(name, count, "x-request-id") { return .xRequestID }
        case 14: if equalsLowercase(name, count, "content-length") { return .contentLength }
        case 15:
            if equalsLowercase(name, count, "x-forwarded-for") { return .xForwardedFor }
        case 16:
            if equalsLowercase(name, count, "proxy-connection") { return .proxyConnection }
            if equalsLowercase(name, count, "x-forwarded-host") { return .xForwardedHost }
        case 17:
            if equalsLowercase(name, count, "transfer-encoding") { return .transferEncoding }
            if equalsLowercase(name, count, "x-forwarded-proto") { return .xForwardedProto }
        default: break
        }
        return .other
    }

    /// `classify` for a name already checked to be a token (every byte a tchar), as the
    /// HTTP/1 parser has: compares eight bytes at a time.
    public static func classifyToken(_ name: UnsafePointer<UInt8>, _ count: Int) -> HeaderKind {
        switch count {
        case 2: if tokenEqualsLowercase(name, "te") { return .te }
        case 4: if tokenEqualsLowercase(name, "host") { return .host }
        case 6: if tokenEqualsLowercase(name, "expect") { return .expect }
        case 7:
            if tokenEqualsLowercase(name, "upgrade") { return .upgrade }
            if tokenEqualsLowercase(name, "trailer") { return .trailer }
        case 10:
            if tokenEqualsLowercase(name, "connection") { return .connection }
            if tokenEqualsLowercase(name, "keep-alive") { return .keepAlive }
            if tokenEqualsLowercase(name, "tracestate") { return .tracestate }
        case 11: if tokenEqualsLowercase(name, "traceparent") { return .traceparent }
        case 12: if tokenEqualsLowercase(name, "x-request-id") { return .xRequestID }
        case 14: if tokenEqualsLowercase(name, "content-length") { return .contentLength }
        case 15: if tokenEqualsLowercase(name, "x-forwarded-for") { return .xForwardedFor }
        case 16:
            if tokenEqualsLowercase(name, "proxy-connection") { return .proxyConnection }
            if tokenEqualsLowercase(name, "x-forwarded-host") { return .xForwardedHost }
        case 17:
            if tokenEqualsLowercase(name, "transfer-encoding") { return .transferEncoding }
            if tokenEqualsLowercase(name, "x-forwarded-proto") { return .xForwardedProto }
        default: break
        }
        return .other
    }

    /// Never forwarded as-is: connection-scoped, or re-generated by the proxy.
    public var isHopByHop: Bool {
        switch self {
        case .connection, .keepAlive, .proxyConnection, .te, .upgrade, .transferEncoding,
             .contentLength, .listedInConnection, .removed:
            return true
        default:
            return false
        }
    }
}

/// One parsed header: offsets into the buffer holding the head.
public struct HeaderEntry: Sendable {
    public var nameStart: Int32
    public var nameLength: Int32
    public var valueStart: Int32
    public var valueLength: Int32
    public var kind: HeaderKind

    public init(nameStart: Int32, nameLength: Int32, valueStart: Int32, valueLength: Int32, kind: HeaderKind) {
        self.nameStart = nameStart
        self.nameLength = nameLength
        self.valueStart = valueStart
        self.valueLength = valueLength
        self.kind = kind
    }
}

/// A fixed-capacity list of header entries, reused across messages.
public final class HeaderTable: FreeListNode {
    public let capacity: Int
    public private(set) var count = 0
    public let entries: UnsafeMutablePointer<HeaderEntry>
    /// The next table on a `HeaderTablePool`'s free list; nil in use.
    public var nextFree: Unmanaged<HeaderTable>?

    public init(capacity: Int) {
        self.capacity = capacity
        entries = .allocate(capacity: max(1, capacity))
    }

    deinit { entries.deallocate() }

    @inline(__always) public func reset() { count = 0 }

    @inline(__always)
    public func append(_ entry: HeaderEntry) -> Bool {
        guard count < capacity else { return false }
        entries[count] = entry
        count += 1
        return true
    }

    @inline(__always) public subscript(index: Int) -> HeaderEntry {
        get { entries[index] }
        set { entries[index] = newValue }
    }

    /// Shifts every offset after the buffer holding the head was compacted.
    public func rebase(by delta: Int32) {
        for index in 0..<count {
            entries[index].nameStart -= delta
            entries[index].valueStart -= delta
        }
    }
}

/// Header tables for one worker, kept on an intrusive free list like `BufferPool`.
public final class HeaderTablePool {
    public let tableCapacity: Int
    public let maxRetained: Int
    @usableFromInline var free = IntrusiveFreeList<HeaderTable>()

    public init(tableCapacity: Int, maxRetained: Int) {
        self.tableCapacity = tableCapacity
        self.maxRetained = maxRetained
    }

    deinit { free.removeAll() }

    @inlinable @inline(__always)
    public func acquire() -> HeaderTable {
        free.pop() ?? HeaderTable(capacity: tableCapacity)
    }

    @inlinable @inline(__always)
    public func release(_ table: consuming HeaderTable) {
        table.reset()
        if free.count < maxRetained { free.push(table) }
    }

    public var retainedCount: Int { free.count }

    /// Frees the tables unused since the last call (see `IntrusiveFreeList.dropUnused`).
    @discardableResult
    public func trimUnused(keeping floor: Int) -> Int { free.dropUnused(keeping: floor) }
}

/// Why the proxy answered by itself; the `x-outrider-error` value.
public enum LocalReplyReason: UInt8, Sendable {
    case badRequest, unauthenticated, forbidden, noRoute, headerTimeout, bodyTooLarge,
         rateLimited, headersTooLarge, upstreamConnect, upstreamReset, upstreamProtocol,
         noHealthyUpstream, overflow, authUnavailable, upstreamTimeout, uriTooLong,
         notImplemented, draining

    public var token: StaticString {
        switch self {
        case .badRequest, .uriTooLong, .notImplemented: return "bad_request"
        case .unauthenticated: return "unauthenticated"
        case .forbidden: return "forbidden"
        case .noRoute: return "no_route"
        case .headerTimeout: return "header_timeout"
        case .bodyTooLarge: return "body_too_large"
        case .rateLimited: return "rate_limited"
        case .headersTooLarge: return "headers_too_large"
        case .upstreamConnect: return "upstream_connect"
        case .upstreamReset: return "upstream_reset"
        case .upstreamProtocol: return "upstream_protocol"
        case .noHealthyUpstream: return "no_healthy_upstream"
        case .overflow: return "overflow"
        case .authUnavailable: return "auth_unavailable"
        case .upstreamTimeout: return "upstream_timeout"
        case .draining: return "draining"
        }
    }

    public var status: Int {
        switch self {
        case .badRequest: return 400
        case .unauthenticated: return 401
        case .forbidden: return 403
        case .noRoute: return 404
        case .headerTimeout: return 408
        case .bodyTooLarge: return 413
        case .uriTooLong: return 414
        case .rateLimited: return 429
        case .headersTooLarge: return 431
        case .notImplemented: return 501
        case .upstreamConnect, .upstreamReset, .upstreamProtocol: return 502
        case .noHealthyUpstream, .overflow, .authUnavailable, .draining: return 503
        case .upstreamTimeout: return 504
        }
    }

    /// The short plain-text body.
    public var message: StaticString {
        switch self {
        case .badRequest: return "bad request\n"
        case .unauthenticated: return "unauthenticated\n"
        case .forbidden: return "forbidden\n"
        case .noRoute: return "no route\n"
        case .headerTimeout: return "request header timeout\n"
        case .bodyTooLarge: return "request body too large\n"
        case .uriTooLong: return "request target too long\n"
        case .rateLimited: return "rate limited\n"
        case .headersTooLarge: return "request headers too large\n"
        case .notImplemented: return "transfer-encoding not implemented\n"
        case .upstreamConnect: return "upstream connect error\n"
        case .upstreamReset: return "upstream reset\n"
        case .upstreamProtocol: return "upstream protocol error\n"
        case .noHealthyUpstream: return "no healthy upstream\n"
        case .overflow: return "upstream overflow\n"
        case .authUnavailable: return "auth service unavailable\n"
        case .upstreamTimeout: return "upstream timeout\n"
        case .draining: return "draining\n"
        }
    }
}

/// The status line text for a code: "200 OK".
public func appendStatusLine(_ buffer: ByteBuffer, status: Int) {
    buffer.append("HTTP/1.1 ")
    buffer.appendDecimal(Int64(status))
    buffer.append(UInt8(ascii: " "))
    buffer.append(reasonPhrase(status))
    buffer.append("\r\n")
}

public func reasonPhrase(_ status: Int) -> StaticString {
    switch status {
    case 100: return "Continue"
    case 101: return "Switching Protocols"
    case 200: return "OK"
    case 201: return "Created"
    case 202: return "Accepted"
    case 204: return "No Content"
    case 206: return "Partial Content"
    case 301: return "Moved Permanently"
    case 302: return "Found"
    case 304: return "Not Modified"
    case 400: return "Bad Request"
    case 401: return "Unauthorized"
    case 403: return "Forbidden"
    case 404: return "Not Found"
    case 405: return "Method Not Allowed"
    case 408: return "Request Timeout"
    case 413: return "Content Too Large"
    case 414: return "URI Too Long"
    case 429: return "Too Many Requests"
    case 431: return "Request Header Fields Too Large"
    case 500: return "Internal Server Error"
    case 501: return "Not Implemented"
    case 502: return "Bad Gateway"
    case 503: return "Service Unavailable"
    case 504: return "Gateway Timeout"
    default: return "Unknown"
    }
}

// Character classes as 256-bit maps: a shift and a mask per byte, no table loads.

/// RFC 9110 token characters.
@inlinable @inline(__always) public func isTokenByte(_ byte: UInt8) -> Bool {
    let word: UInt64
    switch byte >> 6 {
    case 0: word = 0x03FF6CFA00000000
    case 1: word = 0x57FFFFFFC7FFFFFE
    case 2: word = 0x0000000000000000
    default: word = 0x0000000000000000
    }
    return (word >> UInt64(byte & 63)) & 1 == 1
}

/// Bytes allowed in a field value: VCHAR, obs-text, SP, HTAB.
@inlinable @inline(__always) public func isFieldValueByte(_ byte: UInt8) -> Bool {
    let word: UInt64
    switch byte >> 6 {
    case 0: word = 0xFFFFFFFF00000200
    case 1: word = 0x7FFFFFFFFFFFFFFF
    case 2: word = 0xFFFFFFFFFFFFFFFF
    default: word = 0xFFFFFFFFFFFFFFFF
    }
    return (word >> UInt64(byte & 63)) & 1 == 1
}

/// Bytes allowed in a request target: visible ASCII.
@inlinable @inline(__always) public func isTargetByte(_ byte: UInt8) -> Bool {
    let word: UInt64
    switch byte >> 6 {
    case 0: word = 0xFFFFFFFE00000000
    case 1: word = 0x7FFFFFFFFFFFFFFF
    case 2: word = 0x0000000000000000
    default: word = 0x0000000000000000
    }
    return (word >> UInt64(byte & 63)) & 1 == 1
}

/// A route or `allow_anonymous` prefix as matched: whole segments, no trailing slash except
/// for the root ("/api/" is "/api").
public func segmentPrefix(_ text: String) -> ByteString {
    var prefix = text
    while prefix.count > 1 && prefix.hasSuffix("/") { prefix.removeLast() }
    return ByteString(prefix)
}

/// Segment-aware prefix match (SPEC §2): "/api" matches "/api" and "/api/x", not "/apix".
@inlinable @inline(__always)
public func pathHasSegmentPrefix(_ path: UnsafePointer<UInt8>, _ count: Int, _ prefix: ByteString) -> Bool {
    let prefixCount = prefix.count
    if prefixCount == 1 { return true }
    guard count >= prefixCount, prefix.equals(path, count: prefixCount) else { return false }
    return count == prefixCount || path[prefixCount] == UInt8(ascii: "/")
}

/// Whether the token `name` (as long as `lower`) equals the lower-case `lower`, ignoring ASCII
/// case. OR-ing 0x20 into a byte lowercases a letter and keeps "-"; the only other bytes it
/// could turn into a letter or "-" (0x40-0x5A's neighbours, CR) are not tchars, so on token
/// input the comparison is exact.
@inline(__always)
func tokenEqualsLowercase(_ name: UnsafePointer<UInt8>, _ lower: StaticString) -> Bool {
    let count = lower.utf8CodeUnitCount
    let own = UnsafeRawPointer(lower.utf8Start)
    let other = UnsafeRawPointer(name)
    var index = 0
    while count - index >= 8 {
        let word = other.loadUnaligned(fromByteOffset: index, as: UInt64.self) | 0x2020_2020_2020_2020
        if word != own.loadUnaligned(fromByteOffset: index, as: UInt64.self) { return false }
        index += 8
    }
    while index < count {
        if name[index] | 0x20 != lower.utf8Start[index] { return false }
        index += 1
    }
    return true
}
