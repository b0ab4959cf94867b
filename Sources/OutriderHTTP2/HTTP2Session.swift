// One HTTP/2 connection as a byte transform over nghttp2's mem_recv/mem_send: bytes read from
// the socket (or the TLS engine) go in through `receive`, frames to write come out of
// `takeOutput`, and what happened on streams is told to a delegate. It knows no socket.
//
// Defences (HTTP2Configuration holds the numbers):
// - rapid reset (CVE-2023-44487): nghttp2_option_set_stream_reset_rate_limit, plus our own
//   bucket with the same budget that reports `.rapidReset` and sends GOAWAY(ENHANCE_YOUR_CALM);
// - CONTINUATION flood: nghttp2_option_set_max_continuations (Debian's 1.52 back-port) makes
//   mem_recv fail with NGHTTP2_ERR_TOO_MANY_CONTINUATIONS → `.continuationFlood`;
// - SETTINGS/PING floods: a server counts them on the frame headers before nghttp2 parses
//   them (`screenControlFrames`) → GOAWAY(ENHANCE_YOUR_CALM), `.flood`; behind it
//   nghttp2_option_set_max_outbound_ack → NGHTTP2_ERR_FLOODED → `.flood`;
//   nghttp2_option_set_max_settings → GOAWAY(ENHANCE_YOUR_CALM), reported once it goes out;
// - empty DATA frames: counted here (nghttp2 has no limit) → `.emptyFrameFlood`;
// - header list size: advertised and enforced here (431 for requests, CANCEL for responses).
// Failures nghttp2 decides alone (protocol errors, too many SETTINGS entries) become known when
// their GOAWAY goes out through `takeOutput`: `failure` is set then and `receive` answers
// `.fatal` from there on.
import CNGHTTP2
import Glibc
import OutriderCore
import OutriderHTTP

/// One connection's HTTP/2 session. Not thread-safe: one loop owns it.
///
/// The owner's duties: feed every byte read to `receive`; after every `receive` and every
/// submit, write out what `takeOutput` gives while `pendingOutput` says so; close the
/// connection when `receive` answers `.fatal` (after flushing the output: it carries the
/// GOAWAY) or when `isFinished` (both sides are done, or a GOAWAY that ends the session went out).
public final class HTTP2Session {
    public let role: HTTP2Role
    public let configuration: HTTP2Configuration
    /// The owner of the session, which must set it to nil before it goes away. Not `weak`: a
    /// weakly referenced object keeps its counts in a side table, and every retain and release
    /// of the connection (several per request) then took the slow path.
    public unowned(unsafe) var delegate: (any HTTP2SessionDelegate)?

    private var session: OpaquePointer!
    /// The rest of the chunk the last mem_send returned, owned by nghttp2 and valid until the
    /// next mem_send: copied out by later `takeOutput` calls before asking for more.
    private var outputRemainder: UnsafePointer<UInt8>?
    private var outputRemainderCount = 0

    /// Why the session must close; set once.
    public private(set) var failure: HTTP2SessionFailure?
    /// nghttp2 answered a fatal error: the session may not be used any more (only freed).
    private var isUnusable = false
    /// A GOAWAY was submitted through `goAway`, so one going out is not the library's own.
    private var applicationSubmittedGoAway = false
    /// A detector decided to end the session inside a frame callback; nghttp2 is told at the
    /// next frame header or when `mem_recv` returns (see `terminate`).
    private var pendingTermination: HTTP2ErrorCode?

    private var streams = StreamTable<HTTP2Stream>()
    /// Body bytes buffered for sending on all streams (submitted, not yet taken by nghttp2).
    public private(set) var bufferedSendTotal = 0
    /// Streams `sendRoom` turned away because of `connectionSendBufferLimit`: told
    /// `streamWindowOpened` once `bufferedSendTotal` is down to half of it.
    private var connectionRoomWaiters: [Int32] = []
    private var streamPool: [HTTP2Stream] = []
    private var streamPoolLimit: Int { configuration.streamPoolLimit }

    /// The header block being received (HEADERS + CONTINUATIONs are contiguous on the wire, so
    /// one per session is enough).
    private let receivingBlock = HTTP2HeaderBlock(entryCapacity: 32, storageCapacity: 2048)
    /// The block being received went over `maxHeaderListSize`; the rest of its fields are dropped.
    private var receivingBlockTooLarge = false
    /// Scratch for replies the session makes itself (431).
    private let localReplyBlock = HTTP2HeaderBlock(entryCapacity: 4, storageCapacity: 128)

    // Flood accounting.
    private var resetBucket: TokenBucket
    private var consecutiveEmptyDataFrames = 0
    private var controlBucket: TokenBucket
    /// The frame-header walk of `screenControlFrames`: bytes still to pass before the next
    /// frame header (the client preface first), and a header split across reads.
    private var screenSkip: Int
    private var screenHeader = (UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0))
    private var screenHeaderCount = 0

    // Counters (for metrics and tests).
    public private(set) var resetsReceived = 0
    public private(set) var streamsRefusedForHeaderSize = 0

    /// Where nghttp2's own allocations come from (nil: malloc); kept as long as the session.
    private let allocator: HTTP2Allocator?

    /// `allocator`: nghttp2's small per-stream blocks are recycled through it; it must belong
    /// to the thread that uses this session.
    public init(role: HTTP2Role, configuration: HTTP2Configuration = HTTP2Configuration(),
                allocator: HTTP2Allocator? = nil) throws(HTTP2SubmitError) {
        self.role = role
        self.configuration = configuration
        self.allocator = allocator
        self.resetBucket = TokenBucket(burst: Double(configuration.resetBurst), perSecond: Double(configuration.resetRatePerSecond))
        self.controlBucket = TokenBucket(burst: Double(configuration.controlFrameBurst),
                                         perSecond: Double(configuration.controlFrameRatePerSecond))
        // 24 bytes of client preface come before the first frame.
        self.screenSkip = role == .server ? 24 : 0
        streamPool.reserveCapacity(max(0, configuration.streamPoolLimit))

        var options: OpaquePointer?
        guard nghttp2_option_new(&options) == 0, let options else {
            throw HTTP2SubmitError(code: NGHTTP2_ERR_NOMEM.rawValue, description: "creating nghttp2 options")
        }
        defer { nghttp2_option_del(options) }
        // Backpressure: the window reopens only as the proxy passes the bytes on (`consume`).
        nghttp2_option_set_no_auto_window_update(options, 1)
        nghttp2_option_set_max_settings(options, configuration.maxSettingsEntries)
        nghttp2_option_set_max_outbound_ack(options, configuration.maxOutboundAcknowledgements)
        nghttp2_option_set_max_continuations(options, configuration.maxContinuations)
        // Our own bucket (`noteResetReceived`) runs first with the same budget and closes the
        // connection with a reason; nghttp2's stays as the backstop.
        nghttp2_option_set_stream_reset_rate_limit(options, configuration.resetBurst, configuration.resetRatePerSecond)
        // Closed streams are kept only for RFC 7540 priorities, which the proxy does not use.
        nghttp2_option_set_no_closed_streams(options, 1)
        // A small HPACK table for the blocks we send: the fields every response of an app
        // repeats (server, content-type, the date of this second) go out as one byte instead of
        // being Huffman-coded again, 5% of an h2c request's user-space instructions; a request
        // id, unique per response, is sent never-indexed (`append(_:uniqueValue:)`) so it does not
        // churn the table. 1 KiB holds a dozen such fields and caps what a connection keeps.
        nghttp2_option_set_max_deflate_dynamic_table_size(options, 1024)

        var created: OpaquePointer?
        let result: Int32
        switch role {
        case .server: result = nghttp2_session_server_new3(&created, sessionCallbacks, nil, options, allocator?.memory)
        case .client: result = nghttp2_session_client_new3(&created, sessionCallbacks, nil, options, allocator?.memory)
        }
        guard result == 0, let created else {
            throw HTTP2SubmitError(code: result, description: "creating an nghttp2 session: \(errorText(result))")
        }
        session = created
        // The user data is set after creation because `self` is complete only now.
        nghttp2_session_set_user_data(created, Unmanaged.passUnretained(self).toOpaque())

        try submitInitialSettings()
        if configuration.connectionWindowSize > 65_535 {
            let window = nghttp2_session_set_local_window_size(created, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0,
                                                               configuration.connectionWindowSize)
            guard window == 0 else {
                throw HTTP2SubmitError(code: window, description: "connection window: \(errorText(window))")
            }
        }
    }

    deinit {
        // nghttp2_session_del calls no callbacks; the streams go with the dictionary.
        nghttp2_session_del(session)
    }

    private func submitInitialSettings() throws(HTTP2SubmitError) {
        var settings: [nghttp2_settings_entry] = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                   value: configuration.initialWindowSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                                   value: configuration.maxHeaderListSize),
        ]
        switch role {
        case .server:
            settings.append(nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                                                   value: configuration.maxConcurrentStreams))
        case .client:
            // The proxy never accepts pushed streams.
            settings.append(nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0))
        }
        let result = nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), settings, settings.count)
        guard result == 0 else { throw HTTP2SubmitError(code: result, description: "SETTINGS: \(errorText(result))") }
    }

    // MARK: Bytes in

    /// Feeds bytes read from the connection. The delegate hears about streams during the call.
    public func receive(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> HTTP2ReceiveResult {
        if let failure { return .fatal(failure) }
        var count = count
        var flooded = false
        if role == .server, let cut = screenControlFrames(bytes, count) {
            // nghttp2 acknowledges the frames before the one over budget, then sends GOAWAY.
            count = cut
            flooded = true
        }
        var offset = 0
        while offset < count {
            let processed = nghttp2_session_mem_recv(session, bytes + offset, count - offset)
            if processed < 0 {
                recordLibraryFailure(Int32(truncatingIfNeeded: processed))
                if !isUnusable { applyPendingTermination() }
                return .fatal(failure!)
            }
            // A detector in a callback may have ended the session; nghttp2 then ignores the rest.
            applyPendingTermination()
            if let failure { return .fatal(failure) }
            // mem_recv takes everything unless a callback paused it; none of ours does.
            if processed == 0 { break }
            offset += processed
        }
        if flooded {
            if failure == nil {
                fail(.flood, code: .enhanceYourCalm, "flood: SETTINGS/PING frames beyond \(configuration.controlFrameBurst) "
                     + "at \(configuration.controlFrameRatePerSecond)/s")
                _ = nghttp2_session_terminate_session(session, HTTP2ErrorCode.enhanceYourCalm.rawValue)
            }
            return .fatal(failure!)
        }
        return .ok
    }

    /// Walks the frame headers in `bytes` and spends a control token on every SETTINGS or PING
    /// that is not an acknowledgement; returns the offset of the first frame over budget (the
    /// bytes nghttp2 may still see), nil while within it.
    private func screenControlFrames(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Int? {
        var offset = 0
        while offset < count {
            if screenSkip > 0 {
                let step = min(screenSkip, count - offset)
                screenSkip -= step
                offset += step
                continue
            }
            // A frame header: 3 bytes length, type, flags, 4 bytes stream id (not needed).
            let headerStart = offset - screenHeaderCount
            while screenHeaderCount < 5 && offset < count {
                switch screenHeaderCount {
                case 0: screenHeader.0 = bytes[offset]
                case 1: screenHeader.1 = bytes[offset]
                case 2: screenHeader.2 = bytes[offset]
                case 3: screenHeader.3 = bytes[offset]
                default: screenHeader.4 = bytes[offset]
                }
                screenHeaderCount += 1
                offset += 1
            }
            guard screenHeaderCount == 5 else { break }
            screenHeaderCount = 0
            let length = Int(screenHeader.0) << 16 | Int(screenHeader.1) << 8 | Int(screenHeader.2)
            screenSkip = 4 + length
            let type = screenHeader.3
            let isAck = screenHeader.4 & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0
            guard !isAck, type == UInt8(NGHTTP2_SETTINGS.rawValue) || type == UInt8(NGHTTP2_PING.rawValue) else { continue }
            if !controlBucket.take() {
                // A header begun in an earlier read was already handed on: nghttp2 holds its
                // first bytes, which the termination makes it drop.
                return max(0, headerStart)
            }
        }
        return nil
    }

    private func recordLibraryFailure(_ code: Int32) {
        let text = errorText(code)
        switch code {
        case NGHTTP2_ERR_BAD_CLIENT_MAGIC.rawValue:
            fail(.badPreface, code: nil, "the client did not send the HTTP/2 connection preface")
        case NGHTTP2_ERR_FLOODED.rawValue:
            fail(.flood, code: nil, "flood: more than \(configuration.maxOutboundAcknowledgements) SETTINGS/PING "
                 + "acknowledgements queued while the peer does not read")
        case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS.rawValue:
            fail(.continuationFlood, code: nil, "CONTINUATION flood: more than \(configuration.maxContinuations) "
                 + "CONTINUATION frames after one HEADERS")
        case NGHTTP2_ERR_NOMEM.rawValue:
            fail(.internalError, code: nil, "nghttp2: \(text)")
        default:
            // A callback of ours failing is a bug; say so rather than blame the peer.
            fail(code == NGHTTP2_ERR_CALLBACK_FAILURE.rawValue ? .internalError : .protocolError, code: nil, "nghttp2: \(text)")
        }
        isUnusable = code <= NGHTTP2_ERR_FATAL.rawValue
    }

    fileprivate func fail(_ kind: HTTP2SessionFailure.Kind, code: HTTP2ErrorCode?, _ reason: String) {
        if failure == nil { failure = HTTP2SessionFailure(kind: kind, code: code, reason: reason) }
    }

    /// Ends the session with GOAWAY `code` from inside a detector: nghttp2 ignores all further
    /// input and the owner closes once the GOAWAY is out.
    ///
    /// nghttp2 is told at the next frame header (`onBeginFrame`) or when `mem_recv` returns, not
    /// from the frame callback itself: after a DATA frame's on_frame_recv, nghttp2 1.52 resets
    /// its input state without checking for a termination (nghttp2 PR #2509 added the check), so
    /// it would go on parsing the frames after it in the same buffer, and a connection error
    /// among them (a WINDOW_UPDATE of the wrong length after an empty-DATA flood) would then
    /// abort the process on `assert(iframe->state == NGHTTP2_IB_IGN_ALL)`. Terminated at a frame
    /// header, nghttp2 drops the rest of the input at once.
    fileprivate func terminate(_ kind: HTTP2SessionFailure.Kind, code: HTTP2ErrorCode, _ reason: String) {
        fail(kind, code: code, reason)
        if pendingTermination == nil { pendingTermination = code }
    }

    private func applyPendingTermination() {
        guard let code = pendingTermination else { return }
        pendingTermination = nil
        _ = nghttp2_session_terminate_session(session, code.rawValue)
    }

    /// A frame header was read (nghttp2 has not acted on the frame yet).
    fileprivate func onBeginFrame() -> Int32 {
        applyPendingTermination()
        return 0
    }

    // MARK: Bytes out

    /// Frames are waiting to be taken.
    public var pendingOutput: Bool {
        if outputRemainderCount > 0 { return true }
        return !isUnusable && nghttp2_session_want_write(session) != 0
    }

    /// Moves up to `capacity` bytes of frames into `destination`; returns the count. Streams may
    /// close (and the delegate hear so) as their last frames are produced.
    public func takeOutput(into destination: UnsafeMutablePointer<UInt8>, capacity: Int) -> Int {
        var written = 0
        while written < capacity {
            if outputRemainderCount == 0 {
                if isUnusable { break }
                var chunk: UnsafePointer<UInt8>?
                let produced = nghttp2_session_mem_send(session, &chunk)
                if produced < 0 {
                    recordLibraryFailure(Int32(truncatingIfNeeded: produced))
                    break
                }
                guard produced > 0, let chunk else { break }
                outputRemainder = chunk
                outputRemainderCount = produced
            }
            let count = min(outputRemainderCount, capacity - written)
            (destination + written).update(from: outputRemainder!, count: count)
            written += count
            outputRemainderCount -= count
            outputRemainder = outputRemainderCount == 0 ? nil : outputRemainder! + count
        }
        return written
    }

    /// Nothing more will be read or written: close the connection (after the last output).
    public var isFinished: Bool {
        if outputRemainderCount > 0 { return false }
        if isUnusable { return true }
        return nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0
    }

    // MARK: Submitting

    /// Server: the response head for `stream`. Without `endStream`, the body follows through
    /// `submitData`/`submitTrailers`.
    public func submitResponse(stream: Int32, headers: HTTP2HeaderBlock, endStream: Bool) throws(HTTP2SubmitError) {
        precondition(role == .server, "submitResponse is for server sessions")
        guard let state = streams[stream] else { throw Self.noSuchStream(stream) }
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: Unmanaged.passUnretained(state).toOpaque()),
                                             read_callback: readStreamData)
        let result = headers.withNameValuePairs { pairs, count in
            endStream ? nghttp2_submit_response(session, stream, pairs, count, nil)
                      : nghttp2_submit_response(session, stream, pairs, count, &provider)
        }
        guard result == 0 else { throw HTTP2SubmitError(code: result, description: "response: \(errorText(result))") }
        state.hasDataProvider = !endStream
    }

    /// Client: a request; returns its stream number. Without `endStream`, the body follows
    /// through `submitData`/`submitTrailers`.
    public func submitRequest(headers: HTTP2HeaderBlock, endStream: Bool) throws(HTTP2SubmitError) -> Int32 {
        precondition(role == .client, "submitRequest is for client sessions")
        // nghttp2 checks GOAWAY only when the HEADERS would go out; refuse now so the caller
        // can pick another connection at once.
        guard failure == nil, !isUnusable, nghttp2_session_check_request_allowed(session) != 0 else {
            throw HTTP2SubmitError(code: NGHTTP2_ERR_START_STREAM_NOT_ALLOWED.rawValue,
                                   description: "no new streams: the session is closing or the peer sent GOAWAY")
        }
        let state = acquireStream()
        let statePointer = Unmanaged.passUnretained(state).toOpaque()
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: statePointer), read_callback: readStreamData)
        let streamID = headers.withNameValuePairs { pairs, count in
            endStream ? nghttp2_submit_request(session, nil, pairs, count, nil, statePointer)
                      : nghttp2_submit_request(session, nil, pairs, count, &provider, statePointer)
        }
        guard streamID > 0 else {
            releaseStream(state)
            throw HTTP2SubmitError(code: streamID, description: "request: \(errorText(streamID))")
        }
        state.reset(id: streamID)
        state.hasDataProvider = !endStream
        state.knownToDelegate = true
        streams[streamID] = state
        return streamID
    }

    /// Queues body bytes (copied) for a stream whose head went without `endStream`. nghttp2
    /// sends them as the peer's flow-control windows allow. Returns false when the stream's
    /// buffer is over `streamSendBufferHighWater`: stop reading the source until
    /// `streamWindowOpened`.
    @discardableResult
    public func submitData(stream: Int32, _ bytes: UnsafePointer<UInt8>, _ count: Int, endStream: Bool) throws(HTTP2SubmitError) -> Bool {
        guard let state = streams[stream] else { throw Self.noSuchStream(stream) }
        guard state.hasDataProvider, !state.endSubmitted else {
            throw HTTP2SubmitError(code: NGHTTP2_ERR_INVALID_STATE.rawValue,
                                   description: "stream \(stream): its body was ended or never announced")
        }
        state.appendToSendBuffer(bytes, count)
        bufferedSendTotal += count
        if endStream { state.endSubmitted = true }
        resumeIfDeferred(state)
        let belowHighWater = state.bufferedCount < configuration.streamSendBufferHighWater
        if !belowHighWater { state.writerIsBlocked = true }
        return belowHighWater
    }

    /// Ends a stream's body with trailers (gRPC's `grpc-status`); the stream's head must have
    /// gone without `endStream`. Sent after every byte already submitted.
    public func submitTrailers(stream: Int32, trailers: HTTP2HeaderBlock) throws(HTTP2SubmitError) {
        guard let state = streams[stream] else { throw Self.noSuchStream(stream) }
        guard state.hasDataProvider, !state.endSubmitted else {
            throw HTTP2SubmitError(code: NGHTTP2_ERR_INVALID_STATE.rawValue,
                                   description: "stream \(stream): its body was ended or never announced")
        }
        let copy = state.pendingTrailers ?? HTTP2HeaderBlock(entryCapacity: 4, storageCapacity: 256)
        copy.removeAll()
        for index in 0..<trailers.count { copy.append(name: trailers.name(at: index), value: trailers.value(at: index)) }
        state.pendingTrailers = copy
        state.hasPendingTrailers = true
        state.endSubmitted = true
        resumeIfDeferred(state)
    }

    private func resumeIfDeferred(_ state: HTTP2Stream) {
        guard state.isDeferred else { return }
        state.isDeferred = false
        _ = nghttp2_session_resume_data(session, state.id)
    }

    /// RST_STREAM for a stream (the proxy gave up on it: upstream failed, client went away).
    public func resetStream(stream: Int32, code: HTTP2ErrorCode) {
        guard !isUnusable else { return }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, code.rawValue)
    }

    /// GOAWAY: streams up to `lastStream` finish, later ones are refused; with a code other than
    /// `.noError` the session ends once the GOAWAY went out. `lastStream` nil: the last stream
    /// the peer opened.
    public func goAway(lastStream: Int32? = nil, code: HTTP2ErrorCode = .noError) {
        guard !isUnusable else { return }
        applicationSubmittedGoAway = true
        let last = lastStream ?? nghttp2_session_get_last_proc_stream_id(session)
        _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, code.rawValue, nil, 0)
    }

    /// Server drain, first step: a GOAWAY with the maximum stream number tells the client to
    /// stop opening streams while in-flight ones may still arrive; follow with `goAway()`.
    public func announceShutdown() {
        guard !isUnusable, role == .server else { return }
        _ = nghttp2_submit_shutdown_notice(session)
    }

    /// Credits `bytes` of received DATA back to the stream's and the connection's windows (the
    /// proxy passed them on). WINDOW_UPDATEs go out once half a window is consumed.
    public func consume(stream: Int32, bytes: Int) {
        guard !isUnusable, bytes > 0 else { return }
        guard let state = streams[stream] else {
            // The stream closed; its unconsumed bytes were credited to the connection then.
            return
        }
        let credited = min(bytes, state.unconsumedBytes)
        guard credited > 0 else { return }
        state.unconsumedBytes -= credited
        _ = nghttp2_session_consume(session, stream, credited)
    }

    /// Bytes the peer may still send on a stream before it needs a WINDOW_UPDATE (tests, metrics).
    public func receiveWindowRemaining(stream: Int32) -> Int {
        Int(nghttp2_session_get_stream_effective_local_window_size(session, stream))
            - Int(nghttp2_session_get_stream_effective_recv_data_length(session, stream))
    }

    /// Streams open now (tests, metrics).
    public var openStreamCount: Int { streams.count }

    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS (unlimited until its SETTINGS arrive).
    public var peerMaxConcurrentStreams: Int {
        Int(nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS))
    }

    /// A client session may still open streams (no GOAWAY either way, no failure).
    public var acceptsNewStreams: Bool {
        failure == nil && !isUnusable && nghttp2_session_check_request_allowed(session) != 0
    }

    /// Stream objects waiting for reuse (tests).
    var pooledStreamCount: Int { streamPool.count }

    /// The peer's window for `stream` is shut: not one byte of body could go out (it announced
    /// INITIAL_WINDOW_SIZE 0 and sent no WINDOW_UPDATE for the stream yet, or the stream used
    /// it up). Also true for a stream that is not open.
    public func sendWindowIsShut(stream: Int32) -> Bool {
        nghttp2_session_get_stream_remote_window_size(session, stream) <= 0
    }

    /// Bytes buffered for sending on a stream, not yet taken by nghttp2.
    public func bufferedSendBytes(stream: Int32) -> Int { streams[stream]?.bufferedCount ?? 0 }

    /// Body bytes of a stream nghttp2 has taken for sending so far: its write progress.
    public func sentBytes(stream: Int32) -> Int { streams[stream]?.sentCount ?? 0 }

    /// How many more body bytes `stream` should be given now: what its flow-control windows
    /// (the stream's and the connection's) let out, plus `sendBufferSlack`, with at most
    /// `streamSendBufferHighWater` buffered for the stream and `connectionSendBufferLimit` for
    /// all streams together. At 0 (less than `minimumSendRoom`), the writer is told
    /// `streamWindowOpened` when that changes: its bytes went out, or the connection's buffers
    /// drained to half their limit. So a stream whose client never opens its window holds
    /// `sendBufferSlack` bytes here, and one connection about its limit at most (plus what
    /// writers put in past their room).
    public func sendRoom(stream: Int32) -> Int {
        let room = rawSendRoom(stream: stream)
        return room < Self.minimumSendRoom ? 0 : room
    }

    /// Less room than this counts as none (`sendRoom` answers 0): room for a chunk's framing.
    public static let minimumSendRoom = 64

    private func rawSendRoom(stream: Int32) -> Int {
        guard !isUnusable, let state = streams[stream] else { return 0 }
        let streamWindow = Int(nghttp2_session_get_stream_remote_window_size(session, stream))
        let connectionWindow = Int(nghttp2_session_get_remote_window_size(session))
        let window = max(0, min(streamWindow, connectionWindow))
        // Bytes beyond the windows (the slack) only while the connection's buffers are under
        // half their limit: streams whose client keeps its window shut fill half at most, and
        // the other half stays for streams whose bytes can leave at once.
        let slackAllowed = bufferedSendTotal < configuration.connectionSendBufferLimit / 2
        let streamRoom = min(configuration.streamSendBufferHighWater,
                             window + (slackAllowed ? configuration.sendBufferSlack : 0)) - state.bufferedCount
        let connectionRoom = configuration.connectionSendBufferLimit - bufferedSendTotal
        // What the windows let out now is always given (up to the stream's high-water mark):
        // it leaves as fast as the client reads, so streams whose clients keep their windows
        // shut cannot starve the others of the connection's budget.
        let windowRoom = min(configuration.streamSendBufferHighWater, window) - state.bufferedCount
        let room = max(windowRoom, min(streamRoom, connectionRoom))
        if room < Self.minimumSendRoom {
            // Woken when its bytes leave (`readData`) or its window grows (WINDOW_UPDATE), or
            // when the connection's buffers drained (the slack may be given again).
            state.writerIsBlocked = true
            if connectionRoom < Self.minimumSendRoom || !slackAllowed { waitForConnectionRoom(state) }
        }
        return room
    }

    private func waitForConnectionRoom(_ state: HTTP2Stream) {
        guard !state.waitsForConnectionRoom else { return }
        state.waitsForConnectionRoom = true
        connectionRoomWaiters.append(state.id)
    }

    /// A WINDOW_UPDATE arrived: writers blocked with nothing buffered (their window was shut and
    /// no slack was left) learn of it here; nghttp2 calls `readData` only for buffered bytes.
    private func windowUpdated(stream: Int32) {
        if stream == 0 {
            for (_, state) in streams where state.writerIsBlocked && state.bufferedCount == 0 {
                state.writerIsBlocked = false
                delegate?.http2Session(self, streamWindowOpened: state.id)
            }
        } else if let state = streams[stream], state.writerIsBlocked, state.bufferedCount == 0 {
            state.writerIsBlocked = false
            delegate?.http2Session(self, streamWindowOpened: stream)
        }
    }

    /// Tells the streams waiting for connection room, once the buffers drained to half the limit.
    /// As many as the room freed can take (a slack each), oldest first: all of them at once
    /// would each be given room before any had used it, overshooting the limit.
    private func wakeConnectionRoomWaiters() {
        var room = configuration.connectionSendBufferLimit / 2 - bufferedSendTotal
        while room > 0 && !connectionRoomWaiters.isEmpty {
            let id = connectionRoomWaiters.removeFirst()
            guard let state = streams[id], state.waitsForConnectionRoom else { continue }
            state.waitsForConnectionRoom = false
            room -= configuration.sendBufferSlack
            delegate?.http2Session(self, streamWindowOpened: id)
        }
    }

    private static func noSuchStream(_ stream: Int32) -> HTTP2SubmitError {
        HTTP2SubmitError(code: NGHTTP2_ERR_STREAM_CLOSED.rawValue, description: "stream \(stream) is not open")
    }

    // MARK: Stream objects

    private func acquireStream() -> HTTP2Stream {
        streamPool.popLast() ?? HTTP2Stream()
    }

    private func releaseStream(_ state: HTTP2Stream) {
        guard streamPool.count < streamPoolLimit else { return }
        state.releaseLargeBuffers(keeping: 16 * 1024)
        state.reset(id: 0)
        streamPool.append(state)
    }

    @inline(__always) private func stream(_ id: Int32) -> HTTP2Stream? {
        guard let pointer = nghttp2_session_get_stream_user_data(session, id) else { return nil }
        return Unmanaged<HTTP2Stream>.fromOpaque(pointer).takeUnretainedValue()
    }

    // MARK: Callbacks (called by nghttp2 during mem_recv and mem_send)

    fileprivate func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let streamID = frame.pointee.hd.stream_id
        receivingBlock.removeAll()
        receivingBlockTooLarge = false
        if role == .server, frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST {
            let state = acquireStream()
            state.reset(id: streamID)
            streams[streamID] = state
            _ = nghttp2_session_set_stream_user_data(session, streamID, Unmanaged.passUnretained(state).toOpaque())
        }
        return 0
    }

    fileprivate func onHeader(_ name: UnsafePointer<UInt8>, _ nameCount: Int, _ value: UnsafePointer<UInt8>,
                              _ valueCount: Int) -> Int32 {
        if receivingBlockTooLarge { return 0 }
        if receivingBlock.listSize + nameCount + valueCount + 32 > Int(configuration.maxHeaderListSize) {
            // nghttp2 advertises SETTINGS_MAX_HEADER_LIST_SIZE but does not enforce it; drop the
            // rest of the block (memory stays bounded) and refuse the stream when it ends.
            receivingBlockTooLarge = true
            return 0
        }
        receivingBlock.appendReceived(name: name, nameCount: nameCount, value: value, valueCount: valueCount)
        return 0
    }

    fileprivate func onFrameReceived(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let header = frame.pointee.hd
        let endStream = header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch header.type {
        case UInt8(NGHTTP2_DATA.rawValue):
            let payload = Int(header.length) - Int(frame.pointee.data.padlen)
            if payload == 0 && !endStream {
                consecutiveEmptyDataFrames += 1
                if consecutiveEmptyDataFrames > configuration.maxConsecutiveEmptyDataFrames {
                    terminate(.emptyFrameFlood, code: .enhanceYourCalm,
                              "empty-frame flood: \(consecutiveEmptyDataFrames) DATA frames in a row with no payload")
                    return 0
                }
            } else {
                consecutiveEmptyDataFrames = 0
            }
            if endStream, let state = stream(header.stream_id), state.knownToDelegate {
                delegate?.http2Session(self, didEndStream: header.stream_id)
            }
        case UInt8(NGHTTP2_HEADERS.rawValue):
            consecutiveEmptyDataFrames = 0
            headersReceived(frame, streamID: header.stream_id, endStream: endStream)
        case UInt8(NGHTTP2_RST_STREAM.rawValue):
            noteResetReceived()
            if failure == nil, let state = stream(header.stream_id), state.knownToDelegate {
                delegate?.http2Session(self, didResetStream: header.stream_id,
                                       errorCode: HTTP2ErrorCode(rawValue: frame.pointee.rst_stream.error_code))
            }
        case UInt8(NGHTTP2_GOAWAY.rawValue):
            delegate?.http2Session(self, didReceiveGoAway: frame.pointee.goaway.last_stream_id,
                                   errorCode: HTTP2ErrorCode(rawValue: frame.pointee.goaway.error_code))
        case UInt8(NGHTTP2_WINDOW_UPDATE.rawValue):
            consecutiveEmptyDataFrames = 0
            if role == .server {
                windowUpdated(stream: header.stream_id)
                delegate?.http2Session(self, sendWindowChanged: header.stream_id)
            }
        case UInt8(NGHTTP2_SETTINGS.rawValue):
            consecutiveEmptyDataFrames = 0
            if role == .server && header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0 {
                delegate?.http2Session(self, sendWindowChanged: 0)
            }
        default:
            consecutiveEmptyDataFrames = 0
        }
        return 0
    }

    private func headersReceived(_ frame: UnsafePointer<nghttp2_frame>, streamID: Int32, endStream: Bool) {
        guard let state = stream(streamID) else { return }
        if receivingBlockTooLarge {
            refuseOversizedHeaders(state)
            return
        }
        let isFinalHead = !state.receivedFinalHeaders
        if isFinalHead {
            // Client: a 1xx response is informational; the final head still comes.
            let informational = role == .client && receivingBlock.status >= 100 && receivingBlock.status < 200
            if !informational { state.receivedFinalHeaders = true }
            state.knownToDelegate = true
            delegate?.http2Session(self, didReceiveHeaders: receivingBlock, stream: streamID, endStream: endStream)
        } else {
            delegate?.http2Session(self, didReceiveTrailers: receivingBlock, stream: streamID)
        }
        if endStream { delegate?.http2Session(self, didEndStream: streamID) }
    }

    /// A header list over `maxHeaderListSize`. Server, request head: answered 431 here, with the
    /// proxy's usual local-reply shape (SPEC §3), and the delegate only told. Anything else
    /// (a response head, trailers): the stream is reset with CANCEL — it cannot be passed on.
    private func refuseOversizedHeaders(_ state: HTTP2Stream) {
        streamsRefusedForHeaderSize += 1
        let streamID = state.id
        if role == .server, !state.knownToDelegate {
            let reason = LocalReplyReason.headersTooLarge
            localReplyBlock.removeAll()
            localReplyBlock.appendStatus(reason.status)
            localReplyBlock.append("content-type", "text/plain")
            localReplyBlock.append("x-outrider-error", reason.token)
            do {
                try submitResponse(stream: streamID, headers: localReplyBlock, endStream: false)
                let message = reason.message
                try submitData(stream: streamID, message.utf8Start, message.utf8CodeUnitCount, endStream: true)
            } catch {
                resetStream(stream: streamID, code: .internalError)
            }
            delegate?.http2Session(self, didRefuseStream: streamID, reason: reason)
        } else {
            // The peer may have ended the stream in the same frame, closing it before the reset
            // goes out; the delegate hears CANCEL either way, never a head-less NO_ERROR close.
            state.localResetCode = HTTP2ErrorCode.cancel.rawValue
            resetStream(stream: streamID, code: .cancel)
        }
    }

    /// Rapid reset (CVE-2023-44487): a token bucket over RST_STREAMs received by a server.
    /// nghttp2 has the same limit, but it only queues a GOAWAY and keeps reading, telling the
    /// application nothing; this one reports the reason and ends the session at once.
    private func noteResetReceived() {
        resetsReceived += 1
        guard role == .server, failure == nil else { return }
        if resetBucket.take() { return }
        terminate(.rapidReset, code: .enhanceYourCalm,
                  "rapid reset: RST_STREAM beyond \(configuration.resetBurst) at \(configuration.resetRatePerSecond)/s "
                  + "(\(resetsReceived) received)")
    }

    fileprivate func onDataChunk(_ streamID: Int32, _ data: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
        guard let state = stream(streamID), state.knownToDelegate else {
            // Nobody will pass these on (a refused stream): give the window back now.
            _ = nghttp2_session_consume(session, streamID, count)
            return 0
        }
        state.unconsumedBytes += count
        delegate?.http2Session(self, didReceiveData: data, count: count, stream: streamID)
        return 0
    }

    fileprivate func onStreamClose(_ streamID: Int32, _ errorCode: UInt32) -> Int32 {
        guard let state = streams.removeValue(forKey: streamID) else { return 0 }
        // Bytes never sent (a reset stream's) leave the connection's account.
        bufferedSendTotal -= state.bufferedCount
        if state.unconsumedBytes > 0 {
            // The stream window goes with the stream; the connection's must not leak.
            _ = nghttp2_session_consume_connection(session, state.unconsumedBytes)
            state.unconsumedBytes = 0
        }
        if state.knownToDelegate {
            delegate?.http2Session(self, didCloseStream: streamID,
                                   errorCode: HTTP2ErrorCode(rawValue: state.localResetCode ?? errorCode))
        }
        releaseStream(state)
        wakeConnectionRoomWaiters()
        return 0
    }

    fileprivate func onFrameSent(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let type = frame.pointee.hd.type
        if type == UInt8(NGHTTP2_DATA.rawValue) || type == UInt8(NGHTTP2_HEADERS.rawValue) {
            // A client that is being served earns back what it spends on pings (see
            // `controlFrameBurst`).
            controlBucket.refund()
            return 0
        }
        guard type == UInt8(NGHTTP2_GOAWAY.rawValue), failure == nil else { return 0 }
        let code = HTTP2ErrorCode(rawValue: frame.pointee.goaway.error_code)
        if applicationSubmittedGoAway { return 0 }
        // nghttp2 ended the session on its own (a protocol error in what the peer sent, too many
        // SETTINGS entries, its reset limit…); its reason, if any, is the GOAWAY's debug data.
        var reason = "nghttp2 sent GOAWAY"
        let goAway = frame.pointee.goaway
        if let debugData = goAway.opaque_data, goAway.opaque_data_len > 0 {
            reason = String(decoding: UnsafeBufferPointer(start: debugData, count: goAway.opaque_data_len), as: UTF8.self)
        }
        let kind: HTTP2SessionFailure.Kind
        switch code {
        case .enhanceYourCalm: kind = .flood
        case .internalError where role == .server && goAway.opaque_data_len == 0 && resetsReceived > 0:
            kind = .rapidReset
            reason = "rapid reset: nghttp2's stream reset rate limit"
        case .internalError: kind = .internalError
        default: kind = .protocolError
        }
        fail(kind, code: code, reason)
        return 0
    }

    /// nghttp2 pulls body bytes for a stream (flow control permitting, up to `length`).
    fileprivate func readData(_ state: HTTP2Stream, _ destination: UnsafeMutablePointer<UInt8>, _ length: Int,
                              _ flags: UnsafeMutablePointer<UInt32>) -> Int {
        let count = state.takeFromSendBuffer(into: destination, capacity: length)
        bufferedSendTotal -= count
        if count > 0 { wakeConnectionRoomWaiters() }
        if state.writerIsBlocked, state.bufferedCount <= configuration.streamSendBufferHighWater / 2 {
            state.writerIsBlocked = false
            delegate?.http2Session(self, streamWindowOpened: state.id)
        }
        if state.bufferedCount == 0 {
            if state.endSubmitted {
                flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                if state.hasPendingTrailers, let trailers = state.pendingTrailers {
                    state.hasPendingTrailers = false
                    flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                    let result = trailers.withNameValuePairs { pairs, pairCount in
                        nghttp2_submit_trailer(session, state.id, pairs, pairCount)
                    }
                    if result != 0 { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
                }
            } else if count == 0 {
                state.isDeferred = true
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            }
        }
        return count
    }
}

private func errorText(_ code: Int32) -> String { String(cString: nghttp2_strerror(code)) }

/// `burst` tokens refilled at `perSecond` (the session's abuse limits).
private struct TokenBucket {
    let burst: Double
    let perSecond: Double
    private var tokens: Double
    private var updatedAt: Double = 0

    init(burst: Double, perSecond: Double) {
        self.burst = burst
        self.perSecond = perSecond
        tokens = burst
    }

    /// Spends a token; false when none is left.
    mutating func take() -> Bool {
        let now = monotonicSeconds()
        tokens = min(burst, tokens + (now - updatedAt) * perSecond)
        updatedAt = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Gives one back (up to `burst`).
    mutating func refund() {
        if tokens < burst { tokens += 1 }
    }
}

private func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Runs `body` on the session behind `user_data` without retaining it (nghttp2 calls back only
/// from inside the session's own `mem_recv`/`mem_send`, while the session is alive).
@inline(__always) private func withOwner<Result>(_ userData: UnsafeMutableRawPointer?, _ body: (HTTP2Session) -> Result) -> Result {
    Unmanaged<HTTP2Session>.fromOpaque(userData!)._withUnsafeGuaranteedRef(body)
}

// The callbacks are plain C functions (no captures); the session comes back through user_data.
// nghttp2 copies the table into each session, so one table serves every session.
nonisolated(unsafe) private let sessionCallbacks: OpaquePointer = {
    var callbacks: OpaquePointer?
    precondition(nghttp2_session_callbacks_new(&callbacks) == 0, "nghttp2_session_callbacks_new failed")
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
        withOwner(userData) { $0.onBeginHeaders(frame!) }
    }
    nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, _, name, nameCount, value, valueCount, _, userData in
        withOwner(userData) { $0.onHeader(name!, nameCount, value!, valueCount) }
    }
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
        withOwner(userData) { $0.onFrameReceived(frame!) }
    }
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, count, userData in
        withOwner(userData) { $0.onDataChunk(streamID, data!, count) }
    }
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, userData in
        withOwner(userData) { $0.onStreamClose(streamID, errorCode) }
    }
    nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks) { _, _, userData in
        withOwner(userData) { $0.onBeginFrame() }
    }
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks) { _, frame, userData in
        withOwner(userData) { $0.onFrameSent(frame!) }
    }
    return callbacks!
}()

private let readStreamData: nghttp2_data_source_read_callback = { _, _, destination, length, flags, source, userData in
    return Unmanaged<HTTP2Stream>.fromOpaque(source!.pointee.ptr!)._withUnsafeGuaranteedRef { state in
        withOwner(userData) { $0.readData(state, destination!, length, flags!) }
    }
}
