import OutriderCore
import OutriderHTTP

// The filter contract (DESIGN.md §3), Envoy's shape: a filter sees the request head on the way
// in (`decodeHeaders`) and the response head on the way out (`encodeHeaders`). Filter objects
// are built once per configuration and shared by every worker; what belongs to one request
// lives in the `FilterContext` of its connection, which is reused from request to request.

/// What a filter answers for a request head.
public enum FilterVerdict: Sendable {
    /// Go on with the next filter.
    case proceed
    /// Work is under way off the loop; the chain resumes at this filter when it completes
    /// (`FilterContext.resume`), and the filter is asked again.
    case pause
    /// `context.reply` holds the answer; the request goes no further.
    case respond
}

public protocol HTTPFilter: AnyObject, Sendable {
    /// Short name for logs and metrics ("auth", "rate_limit", "headers").
    var kind: StaticString { get }
    func decodeHeaders(_ context: FilterContext) -> FilterVerdict
    /// Adjusts the response head: headers to drop are asked for one by one, headers to add are
    /// appended to `context`'s response additions.
    func encodeHeaders(_ context: FilterContext)
    /// True when this filter removes a response header with this (lower-case) name.
    func removesResponseHeader(_ name: UnsafePointer<UInt8>, _ count: Int) -> Bool
}

extension HTTPFilter {
    public func encodeHeaders(_ context: FilterContext) {}
    public func removesResponseHeader(_ name: UnsafePointer<UInt8>, _ count: Int) -> Bool { false }
}

/// Runs slow work (bcrypt, a JWKS fetch) off the event loop and brings its result back to the
/// loop that asked. Implemented by the proxy, which owns threads and loops.
public protocol OffLoopRunner: AnyObject, Sendable {
    /// Runs `work` on a pool thread, then `completion` on the calling worker's loop.
    func run(_ work: @escaping @Sendable () -> Bool, completion: @escaping @Sendable (Bool) -> Void)
}

/// A local answer a filter makes (401, 403, 429, a relayed external-auth answer).
public struct FilterReply {
    public var status: Int = 0
    public var reason: LocalReplyReason = .forbidden
    /// Extra header lines ("name: value\r\n" each) in the context's scratch buffer.
    public var headerLines: Range<Int> = 0..<0
    /// A body other than the reason's default text, in the scratch buffer.
    public var body: Range<Int>?
    public var contentType: Range<Int>?
    /// False for answers that are no error (the OIDC endpoints' 302, 202 and 200): sent
    /// without `x-outrider-error`, not counted as denials.
    public var isError = true

    public init(status: Int = 0, reason: LocalReplyReason = .forbidden, headerLines: Range<Int> = 0..<0,
                body: Range<Int>? = nil, contentType: Range<Int>? = nil) {
        self.status = status
        self.reason = reason
        self.headerLines = headerLines
        self.body = body
        self.contentType = contentType
    }
}

/// One request's view for the filters, and what they decided. Owned by a client connection and
/// reused; the proxy fills the inputs before the chain runs.
public final class FilterContext: @unchecked Sendable {
    // MARK: inputs (set by the proxy)

    /// The buffer holding the parsed request head, and its header table.
    public var headBase: UnsafePointer<UInt8> = UnsafePointer(bitPattern: 1)!
    public var headers: HeaderTable?
    public var methodRange: Range<Int> = 0..<0     // in the head buffer
    public var method: MethodKind = .get
    public var hostRange: Range<Int> = 0..<0       // in the head buffer (may be empty)
    /// Normalized path, query (with "?"), client IP text and request id, in `scratch`.
    public var pathRange: Range<Int> = 0..<0
    public var queryRange: Range<Int> = 0..<0
    public var clientIPRange: Range<Int> = 0..<0
    public var requestIDRange: Range<Int> = 0..<0
    public var clientPort: UInt16 = 0
    public var isTLS = false
    /// Unix time in seconds, and monotonic nanoseconds, when the chain started.
    public var unixNow: Int64 = 0
    public var monotonicNow: Int64 = 0
    public let worker: FilterWorkerState
    /// Counts requests on this context; work finished off the loop checks it is still for
    /// the same request before touching the context.
    public var serial: UInt64 = 0
    /// Re-enters the chain after a `.pause`; set once by the proxy.
    public var onResume: (() -> Void)?

    // MARK: outputs

    /// Bytes the filters produce (header lines, identity, reply bodies). The inputs above that
    /// point into it come first. A pooled buffer, held only while a request is in the chain.
    public var scratch: ByteBuffer
    /// Header lines "name: value\r\n" to add to the upstream request, in scratch.
    public var requestHeaderLines: [Range<Int>] = []
    /// Header lines to add to the response.
    public var responseHeaderLines: [Range<Int>] = []
    public var identity: Range<Int>?
    public var identityEmail: Range<Int>?
    /// The request's verified token, for later filters (templates); a value, so keeping it
    /// costs no allocation.
    public var verifiedToken: VerifiedJWT?
    public var reply = FilterReply()
    /// Filled by work finished off the loop, read by the filter when it is asked again.
    public var asyncOutcome: AsyncOutcome = .none
    /// Index of the filter that paused.
    public var pausedAt = -1
    /// Per-request scratch a filter may keep across a pause (e.g. which method is pending).
    public var filterState: Int = 0
    /// Auth denials to count: method and reason tokens.
    public var deniedMethod: StaticString = ""
    public var deniedReason: StaticString = ""
    /// Rate-limit headers to add to the response.
    public var rateLimitLines: Range<Int>?
    /// The external auth service's answer while the chain was paused for it.
    public var subrequestOutcome: SubrequestOutcome?

    public enum AsyncOutcome: Sendable, Equatable { case none, allowed, denied, failed }

    public init(worker: FilterWorkerState, scratch: ByteBuffer) {
        self.worker = worker
        self.scratch = scratch
        responseHeaderLines.reserveCapacity(8)
        requestHeaderLines.reserveCapacity(8)
    }

    /// Clears what the previous request left.
    public func reset(scratch: ByteBuffer) {
        self.scratch = scratch
        serial &+= 1
        scratch.clear()
        requestHeaderLines.removeAll(keepingCapacity: true)
        responseHeaderLines.removeAll(keepingCapacity: true)
        identity = nil
        identityEmail = nil
        verifiedToken = nil
        reply = FilterReply()
        asyncOutcome = .none
        pausedAt = -1
        filterState = 0
        deniedMethod = ""
        deniedReason = ""
        rateLimitLines = nil
        subrequestOutcome = nil
    }

    // MARK: reading the request

    @inline(__always)
    public func bytes(_ range: Range<Int>) -> (UnsafePointer<UInt8>, Int) {
        (UnsafePointer(scratch.base) + range.lowerBound, range.count)
    }

    @inline(__always)
    public func headBytes(_ range: Range<Int>) -> (UnsafePointer<UInt8>, Int) {
        (headBase + range.lowerBound, range.count)
    }

    /// The first value of a header (name lower-case), skipping removed ones.
    public func headerValue(_ name: ByteString) -> (UnsafePointer<UInt8>, Int)? {
        guard let headers else { return nil }
        for index in 0..<headers.count {
            let entry = headers[index]
            if entry.kind == .removed { continue }
            if name.equalsIgnoringCase(headBase + Int(entry.nameStart), count: Int(entry.nameLength)) {
                return (headBase + Int(entry.valueStart), Int(entry.valueLength))
            }
        }
        return nil
    }

    /// Marks every client header with this name (lower-case) as removed, and drops lines an
    /// earlier filter added under that name (a later `headers` filter has the last word).
    public func removeHeader(_ name: ByteString) {
        if !requestHeaderLines.isEmpty {
            requestHeaderLines.removeAll { line in
                let start = UnsafePointer(scratch.base) + line.lowerBound
                return line.count > name.count && start[name.count] == UInt8(ascii: ":")
                    && name.equalsIgnoringCase(start, count: name.count)
            }
        }
        guard let headers else { return }
        for index in 0..<headers.count {
            let entry = headers[index]
            if name.equalsIgnoringCase(headBase + Int(entry.nameStart), count: Int(entry.nameLength)) {
                headers[index].kind = .removed
            }
        }
    }

    /// Marks every client header starting with `prefix` (lower-case) as removed. With
    /// `underscoresAsDashes`, `_` in a client's name counts as `-`: CGI-style apps read
    /// `X_Auth_Request_User` as `X-Auth-Request-User`, so a spoof must not pass that way.
    public func removeHeaders(prefix: ByteString, underscoresAsDashes: Bool = false) {
        guard let headers else { return }
        for index in 0..<headers.count {
            let entry = headers[index]
            guard Int(entry.nameLength) >= prefix.count else { continue }
            if namesMatch(prefix, headBase + Int(entry.nameStart), prefix.count, underscoresAsDashes) {
                headers[index].kind = .removed
            }
        }
    }

    /// Marks every client header with this name (lower-case) as removed, `_` counting as `-`.
    public func removeHeaderAnySpelling(_ name: ByteString) {
        guard let headers else { return }
        for index in 0..<headers.count {
            let entry = headers[index]
            if Int(entry.nameLength) == name.count && namesMatch(name, headBase + Int(entry.nameStart), name.count, true) {
                headers[index].kind = .removed
            }
        }
    }

    @inline(__always)
    private func namesMatch(_ lower: ByteString, _ name: UnsafePointer<UInt8>, _ count: Int, _ loose: Bool) -> Bool {
        lower.withPointer { expected, _ in
            for offset in 0..<count {
                var byte = asciiLowercase(name[offset])
                if loose && byte == UInt8(ascii: "_") { byte = UInt8(ascii: "-") }
                if byte != expected[offset] { return false }
            }
            return true
        }
    }

    // MARK: writing

    /// Appends "name: value\r\n" for the upstream request.
    public func addRequestHeader(_ name: ByteString, _ value: UnsafePointer<UInt8>, _ count: Int) {
        let start = scratch.writerIndex
        guard scratch.writableBytes >= name.count + count + 4 else { return }
        scratch.append(name)
        scratch.append(": ")
        scratch.append(value, count: count)
        scratch.append("\r\n")
        requestHeaderLines.append(start..<scratch.writerIndex)
    }

    @discardableResult
    public func store(_ bytes: ByteString) -> Range<Int> {
        bytes.withPointer { store($0, $1) }
    }

    /// Appends bytes to the scratch buffer and returns where they are.
    @discardableResult
    public func store(_ pointer: UnsafePointer<UInt8>, _ count: Int) -> Range<Int> {
        let start = scratch.writerIndex
        scratch.append(pointer, count: min(count, scratch.writableBytes))
        return start..<scratch.writerIndex
    }
}

/// Per-worker state the shared filter objects need: caches keyed by filter, without locks.
public final class FilterWorkerState {
    public let workerIndex: Int
    public let offLoop: OffLoopRunner?
    /// HTTP requests to other services from this worker's loop (set by the proxy).
    public var subrequests: SubrequestClient?
    /// Caches, one slot per filter that asks for one (by the filter's `cacheSlot`).
    public var caches: [AnyObject?] = []

    public init(workerIndex: Int, offLoop: OffLoopRunner?) {
        self.workerIndex = workerIndex
        self.offLoop = offLoop
    }

    /// The cache in `slot`, made on first use. Each slot is owned by one filter, which always
    /// asks for the same type.
    @inline(__always)
    public func cache<T: AnyObject>(_ slot: Int, make: () -> T) -> T {
        if slot < caches.count, let existing = caches[slot] { return unsafeDowncast(existing, to: T.self) }
        if slot >= caches.count { caches.append(contentsOf: repeatElement(nil, count: slot - caches.count + 1)) }
        let made = make()
        caches[slot] = made
        return made
    }
}

/// Hands out cache slots to filters as they are built.
public final class FilterBuildContext {
    private var nextSlot = 0
    /// Background services the filters need started (JWKS fetchers), started by the proxy.
    public private(set) var services: [AnyObject] = []
    public init() {}
    public func register(_ service: AnyObject) { services.append(service) }
    public func allocateCacheSlot() -> Int {
        defer { nextSlot += 1 }
        return nextSlot
    }
}

// MARK: subrequests (external auth)

/// An answer from a service a filter asked (the external auth service).
public final class SubrequestResponse: @unchecked Sendable {
    public let status: Int
    /// Header names lower-case, values as received (validated header bytes).
    public let headers: [(name: [UInt8], value: [UInt8])]
    public let body: [UInt8]
    public init(status: Int, headers: [(name: [UInt8], value: [UInt8])], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func values(_ name: String) -> [[UInt8]] {
        let lower = Array(name.utf8)
        return headers.filter { $0.name == lower }.map(\.value)
    }
}

public enum SubrequestOutcome: Sendable {
    case response(SubrequestResponse)
    /// Refused, reset, timed out or not HTTP.
    case failed
}

/// Sends one HTTP/1.1 request without blocking the loop; the completion runs on the same loop.
/// Implemented by the proxy.
public protocol SubrequestClient: AnyObject {
    func send(head: [UInt8], host: String, port: UInt16, timeoutNanos: Int64,
              completion: @escaping (SubrequestOutcome) -> Void)
    /// `request` (head and body) to a target the proxy resolved (HTTP or HTTPS).
    func send(_ request: [UInt8], to target: SubrequestTarget, timeoutNanos: Int64,
              completion: @escaping (SubrequestOutcome) -> Void)
}
