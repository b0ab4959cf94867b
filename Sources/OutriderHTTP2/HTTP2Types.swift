import OutriderHTTP

public enum HTTP2Role: Sendable { case server, client }

/// An RFC 9113 §7 error code (RST_STREAM, GOAWAY). A struct, not an enum: peers may send codes
/// this list does not name, and they must pass through.
public struct HTTP2ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let noError = HTTP2ErrorCode(rawValue: 0x0)
    public static let protocolError = HTTP2ErrorCode(rawValue: 0x1)
    public static let internalError = HTTP2ErrorCode(rawValue: 0x2)
    public static let flowControlError = HTTP2ErrorCode(rawValue: 0x3)
    public static let settingsTimeout = HTTP2ErrorCode(rawValue: 0x4)
    public static let streamClosed = HTTP2ErrorCode(rawValue: 0x5)
    public static let frameSizeError = HTTP2ErrorCode(rawValue: 0x6)
    public static let refusedStream = HTTP2ErrorCode(rawValue: 0x7)
    public static let cancel = HTTP2ErrorCode(rawValue: 0x8)
    public static let compressionError = HTTP2ErrorCode(rawValue: 0x9)
    public static let connectError = HTTP2ErrorCode(rawValue: 0xa)
    public static let enhanceYourCalm = HTTP2ErrorCode(rawValue: 0xb)
    public static let inadequateSecurity = HTTP2ErrorCode(rawValue: 0xc)
    public static let http11Required = HTTP2ErrorCode(rawValue: 0xd)

    public var description: String {
        switch rawValue {
        case 0x0: return "NO_ERROR"
        case 0x1: return "PROTOCOL_ERROR"
        case 0x2: return "INTERNAL_ERROR"
        case 0x3: return "FLOW_CONTROL_ERROR"
        case 0x4: return "SETTINGS_TIMEOUT"
        case 0x5: return "STREAM_CLOSED"
        case 0x6: return "FRAME_SIZE_ERROR"
        case 0x7: return "REFUSED_STREAM"
        case 0x8: return "CANCEL"
        case 0x9: return "COMPRESSION_ERROR"
        case 0xa: return "CONNECT_ERROR"
        case 0xb: return "ENHANCE_YOUR_CALM"
        case 0xc: return "INADEQUATE_SECURITY"
        case 0xd: return "HTTP_1_1_REQUIRED"
        default: return "error 0x\(String(rawValue, radix: 16))"
        }
    }
}

/// Settings and defences of one session. Defaults follow nghttp2's and Envoy's where the
/// proxy has no reason to differ.
public struct HTTP2Configuration: Sendable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server advertises and enforces (`h2_max_concurrent_streams`);
    /// excess streams are refused with REFUSED_STREAM. Ignored by clients (they advertise none).
    public var maxConcurrentStreams: UInt32 = 100
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much each stream may send us before we `consume`.
    public var initialWindowSize: UInt32 = 65_535
    /// The connection-level receive window (all streams together), raised from the protocol's
    /// 65,535 at start so that one slow stream does not stall the others.
    public var connectionWindowSize: Int32 = 1 << 20
    /// SETTINGS_MAX_HEADER_LIST_SIZE advertised, and enforced on what arrives (nghttp2 only
    /// advertises it): a request over it is answered 431, a response over it is reset (CANCEL).
    public var maxHeaderListSize: UInt32 = 64 * 1024
    /// Rapid reset (CVE-2023-44487): a token bucket of RST_STREAMs received by a server,
    /// `resetBurst` tokens refilled at `resetRatePerSecond`. nghttp2's defaults.
    public var resetBurst: UInt64 = 1000
    public var resetRatePerSecond: UInt64 = 33
    /// SETTINGS and PING frames (not acknowledgements) a server accepts: a token bucket of
    /// `controlFrameBurst`, refilled at `controlFrameRatePerSecond` and by one for every
    /// HEADERS or DATA frame the session sends (so a client that pings as it receives, gRPC's
    /// BDP probe, never runs dry). Past it: GOAWAY(ENHANCE_YOUR_CALM), `.flood`. Counted on
    /// the frame headers before nghttp2 sees them, so a flooder costs at most this many
    /// acknowledgements, and they fit in the peer's receive window together with the GOAWAY;
    /// `maxOutboundAcknowledgements` alone lets a peer that never reads push a socket buffer
    /// of them first (the attacker of `scripts/flood.sh h2` got ~100,000 frames processed per
    /// connection that way). A browser sends 1–3, gRPC keepalive one per 10 s or more.
    public var controlFrameBurst: Int = 100
    public var controlFrameRatePerSecond: Int = 10
    /// Entries accepted in one SETTINGS frame (nghttp2's default).
    public var maxSettingsEntries: Int = 32
    /// SETTINGS/PING acknowledgements queued unsent before the peer counts as flooding (a peer
    /// that sends them and never reads). nghttp2's default.
    public var maxOutboundAcknowledgements: Int = 1000
    /// CONTINUATION frames accepted after one HEADERS (nghttp2's default).
    public var maxContinuations: Int = 8
    /// Consecutive DATA frames with no payload and no END_STREAM accepted (CVE-2019-9518);
    /// Envoy's default. nghttp2 has no such limit.
    public var maxConsecutiveEmptyDataFrames: Int = 1
    /// Bytes buffered per stream for sending before `submitData` says to stop writing; the
    /// delegate hears `streamWindowOpened` once the buffer drains to half of it.
    public var streamSendBufferHighWater: Int = 64 * 1024
    /// `sendRoom`: bytes a stream may hold beyond what its flow-control windows let out now,
    /// so that a stream whose client keeps its window shut holds this much, not a full
    /// `streamSendBufferHighWater`.
    public var sendBufferSlack: Int = 16 * 1024
    /// `sendRoom`: bytes all streams of the connection together may hold for sending (Envoy's
    /// `per_connection_buffer_limit_bytes`, 1 MiB); past it, no stream is given more.
    public var connectionSendBufferLimit: Int = 1 << 20
    /// Closed streams' bookkeeping objects kept for reuse: opening a stream allocates nothing
    /// while no more than this many close between two opens. A client keeping N streams in
    /// flight (a load generator's `-m`) sets it to N.
    public var streamPoolLimit: Int = 64

    public init() {}
}

/// Why a session must be closed.
public struct HTTP2SessionFailure: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// A server's peer did not start with the client preface (not HTTP/2, or garbage).
        case badPreface
        /// The peer broke the protocol; GOAWAY with the code below went (or goes) out.
        case protocolError
        /// SETTINGS/PING acknowledgements piling up unread, or too many SETTINGS entries.
        case flood
        /// RST_STREAMs faster than the reset rate limit (CVE-2023-44487).
        case rapidReset
        /// Empty DATA frames in a row (CVE-2019-9518).
        case emptyFrameFlood
        /// Too many CONTINUATION frames after one HEADERS (CVE-2024-27316 / 28182).
        case continuationFlood
        /// Out of memory or a broken invariant in nghttp2.
        case internalError
    }

    public let kind: Kind
    /// The GOAWAY code sent to the peer ; nil when none could be.
    public let code: HTTP2ErrorCode?
    public let reason: String

    public var description: String {
        code.map { "\(reason) (\($0))" } ?? reason
    }
}

public enum HTTP2ReceiveResult: Equatable, Sendable {
    /// All bytes were taken; send what `takeOutput` has.
    case ok
    /// Flush what `takeOutput` has (usually a GOAWAY), then close the connection.
    case fatal(HTTP2SessionFailure)
}

/// Submitting a frame failed: nghttp2's error code and text.
public struct HTTP2SubmitError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: Int32
    public let description: String
}

/// What an HTTP/2 connection reports. Called during `receive` (the peer's frames) and during
/// `takeOutput` (streams that closed or drained as frames went out); never re-entered.
/// Header blocks and data pointers are valid only during the call.
public protocol HTTP2SessionDelegate: AnyObject {
    /// A request (server) or response (client; 1xx included) head. `endStream`: no body follows
    /// (`didEndStream` is called too).
    func http2Session(_ session: HTTP2Session, didReceiveHeaders headers: HTTP2HeaderBlock, stream: Int32, endStream: Bool)
    /// Body bytes. Call `consume(stream:bytes:)` once they are passed on: until then they count
    /// against the stream's and the connection's receive window (backpressure).
    func http2Session(_ session: HTTP2Session, didReceiveData bytes: UnsafePointer<UInt8>, count: Int, stream: Int32)
    /// Trailers (always the end of the stream; `didEndStream` follows).
    func http2Session(_ session: HTTP2Session, didReceiveTrailers trailers: HTTP2HeaderBlock, stream: Int32)
    /// The peer finished its side of the stream (END_STREAM).
    func http2Session(_ session: HTTP2Session, didEndStream stream: Int32)
    /// The peer reset the stream (RST_STREAM); `didCloseStream` follows.
    func http2Session(_ session: HTTP2Session, didResetStream stream: Int32, errorCode: HTTP2ErrorCode)
    /// The stream is gone (both sides ended, or a reset either way: `errorCode` is not `.noError`).
    /// Its number is no longer valid for submits.
    func http2Session(_ session: HTTP2Session, didCloseStream stream: Int32, errorCode: HTTP2ErrorCode)
    /// The peer is going away: streams above `lastStreamID` were not processed (safe to retry).
    func http2Session(_ session: HTTP2Session, didReceiveGoAway lastStreamID: Int32, errorCode: HTTP2ErrorCode)
    /// The stream's send buffer drained below half of `streamSendBufferHighWater` after
    /// `submitData` had said to stop: write more.
    func http2Session(_ session: HTTP2Session, streamWindowOpened stream: Int32)
    /// The peer changed what this side may send: a WINDOW_UPDATE for `stream`, or (stream 0) a
    /// SETTINGS frame, which may move every stream's window (INITIAL_WINDOW_SIZE).
    func http2Session(_ session: HTTP2Session, sendWindowChanged stream: Int32)
    /// Server: a request the session answered itself (431 for a header list over the limit); the
    /// delegate never saw its headers and hears nothing more of the stream.
    func http2Session(_ session: HTTP2Session, didRefuseStream stream: Int32, reason: LocalReplyReason)
}

extension HTTP2SessionDelegate {
    public func http2Session(_ session: HTTP2Session, didResetStream stream: Int32, errorCode: HTTP2ErrorCode) {}
    public func http2Session(_ session: HTTP2Session, didReceiveGoAway lastStreamID: Int32, errorCode: HTTP2ErrorCode) {}
    public func http2Session(_ session: HTTP2Session, streamWindowOpened stream: Int32) {}
    public func http2Session(_ session: HTTP2Session, sendWindowChanged stream: Int32) {}
    public func http2Session(_ session: HTTP2Session, didRefuseStream stream: Int32, reason: LocalReplyReason) {}
}
