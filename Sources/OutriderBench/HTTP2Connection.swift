import Glibc
import OutriderCore
import OutriderHTTP2
import OutriderPosix
import OutriderTLS

/// One HTTP/2 connection to the target (h2c with prior knowledge, or h2 negotiated by ALPN)
/// keeping up to `-m` streams in flight, through Outrider's nghttp2 session (`OutriderHTTP2`).
///
/// The request head is the thread's one header block, submitted for every request (nghttp2
/// copies it); frames are read into the thread's scratch space and fed to the session whole;
/// the session's delegate calls only do the accounting, and new requests are submitted after
/// each read, so the answers of one read and the requests they make room for go out in one
/// write. Streams live in fixed slots found by stream number in a small open-addressed table:
/// the steady state allocates nothing on this side (nghttp2 allocates its own stream state).
///
/// Errors: a stream the target resets (RST_STREAM) or closes unanswered counts as `reset`; a
/// stream refused unprocessed (REFUSED_STREAM, or above a GOAWAY's last stream) is sent again,
/// on this connection or the next, keeping its intended time; past `-m` refusals in a row with
/// no answer in between, refusals count as `reset` too. A stream unanswered after `--timeout`
/// is cancelled (RST_STREAM CANCEL) and counts as `timeout`; when not a byte was read since it
/// was sent, the connection is given up instead (its streams count as `timeout`).
final class HTTP2Connection: BenchConnection, HTTP2SessionDelegate {
    let maxStreams: Int
    let hasBody: Bool
    // Read on every request: kept here as constants (no reference counting on the way).
    let headers: HTTP2HeaderBlock
    let body: UnsafeMutablePointer<UInt8>
    let bodyLength: Int
    let timeoutNanos: Int64
    let schedule: OpenLoopSchedule?
    var session: HTTP2Session?
    /// Cleartext: frames taken from the session that the socket has not accepted yet.
    let frameOut: ByteBuffer?

    // Streams in flight: `maxStreams` slots (stream number 0 = free) and a free list.
    let slotStream: UnsafeMutablePointer<Int32>
    let slotIntended: UnsafeMutablePointer<Int64>
    let slotSentAt: UnsafeMutablePointer<Int64>
    let slotStatus: UnsafeMutablePointer<Int>
    let freeSlots: UnsafeMutablePointer<Int32>
    var freeCount: Int
    /// Stream number → slot, linear probing (-1 = empty) over at least twice `maxStreams` entries.
    let table: UnsafeMutablePointer<Int32>
    let tableMask: Int

    /// Intended send times of requests refused unprocessed, to send again first (a ring of
    /// `maxStreams`; `inFlight + retryCount` never exceeds it). Still counted in the thread's
    /// `inFlight`, so `-n` waits for them.
    let retryIntended: UnsafeMutablePointer<Int64>
    var retryHead = 0
    var retryCount = 0
    /// Refusals since the last answer (across reconnects): beyond `maxStreams` they are errors.
    var refusedInARow = 0

    /// The target sent GOAWAY (or the session takes no more streams): no new requests here;
    /// the connection closes once its streams are done and the next one takes over.
    var goingAway = false
    /// When bytes last arrived (a connection silent since a timed-out request was sent is given up).
    var lastReadAt: Int64 = 0

    static let frameOutCapacity = 32 * 1024

    override init(worker: BenchWorker, localIndex: Int, globalIndex: Int) {
        maxStreams = worker.plan.options.streams
        hasBody = worker.plan.options.hasBody
        headers = worker.http2Headers
        body = worker.request
        bodyLength = worker.requestLength
        timeoutNanos = worker.plan.options.timeoutNanos
        schedule = worker.plan.schedule
        frameOut = worker.plan.tlsContext == nil ? ByteBuffer(capacity: Self.frameOutCapacity) : nil
        slotStream = .allocate(capacity: maxStreams)
        slotStream.initialize(repeating: 0, count: maxStreams)
        slotIntended = .allocate(capacity: maxStreams)
        slotIntended.initialize(repeating: 0, count: maxStreams)
        slotSentAt = .allocate(capacity: maxStreams)
        slotSentAt.initialize(repeating: 0, count: maxStreams)
        slotStatus = .allocate(capacity: maxStreams)
        slotStatus.initialize(repeating: 0, count: maxStreams)
        freeSlots = .allocate(capacity: maxStreams)
        for index in 0..<maxStreams { (freeSlots + index).initialize(to: Int32(maxStreams - 1 - index)) }
        freeCount = maxStreams
        var tableSize = 4
        while tableSize < 2 * maxStreams { tableSize *= 2 }
        table = .allocate(capacity: tableSize)
        table.initialize(repeating: -1, count: tableSize)
        tableMask = tableSize - 1
        retryIntended = .allocate(capacity: maxStreams)
        retryIntended.initialize(repeating: 0, count: maxStreams)
        super.init(worker: worker, localIndex: localIndex, globalIndex: globalIndex)
    }

    deinit {
        slotStream.deallocate()
        slotIntended.deallocate()
        slotSentAt.deallocate()
        slotStatus.deallocate()
        freeSlots.deallocate()
        table.deallocate()
        retryIntended.deallocate()
    }

    // MARK: the stream table

    @inline(__always) private func home(_ stream: Int32) -> Int { Int(stream >> 1) & tableMask }

    /// The table position holding `stream`, or -1.
    @inline(__always) private func position(of stream: Int32) -> Int {
        var index = home(stream)
        while true {
            let slot = table[index]
            if slot < 0 { return -1 }
            if slotStream[Int(slot)] == stream { return index }
            index = (index + 1) & tableMask
        }
    }

    private func open(_ stream: Int32, intended: Int64, now: Int64) {
        freeCount -= 1
        let slot = freeSlots[freeCount]
        slotStream[Int(slot)] = stream
        slotIntended[Int(slot)] = intended
        slotSentAt[Int(slot)] = now
        slotStatus[Int(slot)] = 0
        var index = home(stream)
        while table[index] >= 0 { index = (index + 1) & tableMask }
        table[index] = slot
    }

    /// Frees the slot at table position `position` (backward-shift deletion keeps every probe
    /// sequence unbroken); returns the slot, valid until the next `open`.
    private func close(at position: Int) -> Int {
        let slot = table[position]
        var hole = position
        var index = (position + 1) & tableMask
        while table[index] >= 0 {
            let wanted = home(slotStream[Int(table[index])])
            // The entry may move back to the hole when its probe sequence passed through it.
            if (hole - wanted) & tableMask < (index - wanted) & tableMask {
                table[hole] = table[index]
                hole = index
            }
            index = (index + 1) & tableMask
        }
        table[hole] = -1
        slotStream[Int(slot)] = 0
        freeSlots[freeCount] = slot
        freeCount += 1
        return Int(slot)
    }

    private func pushRetry(_ intended: Int64) {
        var index = retryHead + retryCount
        if index >= maxStreams { index -= maxStreams }
        retryIntended[index] = intended
        retryCount += 1
    }

    // MARK: connection

    override func startProtocol() -> String? {
        if let tls {
            let agreed = tls.negotiatedALPN
            if agreed != "h2" {
                return "the target did not agree to HTTP/2 by ALPN (it chose \(agreed ?? "nothing"))"
            }
        }
        do {
            let session = try HTTP2Session(role: .client, configuration: worker.http2Configuration)
            session.delegate = self
            self.session = session
        } catch {
            return "HTTP/2 session: \(error)"
        }
        lastReadAt = Sys.monotonicNanoseconds()
        return nil
    }

    override func resetProtocolState() {
        session = nil
        frameOut?.clear()
        for index in 0...tableMask { table[index] = -1 }
        for index in 0..<maxStreams {
            slotStream[index] = 0
            freeSlots[index] = Int32(maxStreams - 1 - index)
        }
        freeCount = maxStreams
        goingAway = false
        if worker.stopping {
            worker.inFlight -= retryCount
            retryCount = 0
            retryHead = 0
        }
    }

    // MARK: sending

    /// Submits the requests that are due (requests to send again first; closed loop, as many
    /// as `-m` allows; open loop, those whose intended time has come), writes the session's
    /// frames, and closes the connection once a GOAWAY's streams are done.
    override func pump() {
        guard phase == .ready, let session else { return }
        if !worker.stopping && !goingAway {
            let now = Sys.monotonicNanoseconds()
            while retryCount > 0 && inFlight < maxStreams {
                if !submit(session, intended: retryIntended[retryHead], now: now) { break }
                retryHead = retryHead + 1 == maxStreams ? 0 : retryHead + 1
                retryCount -= 1
            }
            if !goingAway, let schedule {
                while inFlight + retryCount < maxStreams {
                    if nextIntended > now {
                        if scheduledAt == 0 {
                            scheduledAt = nextIntended
                            worker.schedule(self, at: nextIntended)
                        }
                        break
                    }
                    if nextIntended >= worker.plan.endTime || !worker.takeBudget(start: nextIntended) { break }
                    let intended = nextIntended
                    sequence += 1
                    nextIntended = schedule.intendedTime(start: worker.plan.startTime, connection: globalIndex, request: sequence)
                    worker.inFlight += 1
                    if !submit(session, intended: intended, now: now) {
                        pushRetry(intended)
                        break
                    }
                }
            } else if !goingAway {
                // One clock reading for the batch: its requests go out in the same write.
                while inFlight + retryCount < maxStreams {
                    guard worker.takeBudget(start: now) else { break }
                    worker.inFlight += 1
                    if !submit(session, intended: now, now: now) {
                        pushRetry(now)
                        break
                    }
                }
            }
        }
        if !flushOutput(session) { return }
        if (goingAway && inFlight == 0) || session.isFinished {
            // Done with this connection: the next one takes over (and the requests to send again).
            closeAndReconnect(failedKind: inFlight > 0 ? .read : nil, count: inFlight)
        }
    }

    /// One request on a new stream. False (and `goingAway` set) when the session opens no more.
    @inline(__always)
    private func submit(_ session: HTTP2Session, intended: Int64, now: Int64) -> Bool {
        let stream: Int32
        do {
            stream = try session.submitRequest(headers: headers, endStream: !hasBody)
        } catch {
            goingAway = true
            return false
        }
        if hasBody {
            // Cannot fail: the stream was just opened with a body to come.
            _ = try? session.submitData(stream: stream, body, bodyLength, endStream: true)
        }
        open(stream, intended: intended, now: now)
        inFlight += 1
        if deadline == 0 { worker.loop.setDeadline(self, now + timeoutNanos) }
        return true
    }

    /// Writes what the session has to send. False when the connection went away.
    private func flushOutput(_ session: HTTP2Session) -> Bool {
        if let tls {
            let scratch = worker.frameOutScratch
            while session.pendingOutput {
                let count = session.takeOutput(into: scratch.base, capacity: scratch.capacity)
                if count == 0 { break }
                if tls.writePlaintext(scratch.base, count) < 0 {
                    fail(.write, count: max(inFlight, 1))
                    return false
                }
            }
            return flushCipher()
        }
        guard let out = frameOut else { return true }
        while true {
            if out.isEmpty {
                out.clear()
                if !session.pendingOutput { return true }
                out.writerIndex = session.takeOutput(into: out.base, capacity: out.capacity)
                if out.isEmpty { return true }
            }
            guard writable else { return true }
            let sent = Sys.send(fd, out.readPointer, out.readableBytes)
            if sent > 0 {
                out.consume(sent)
                continue
            }
            if sent == Sys.wouldBlock {
                writable = false
                return true
            }
            fail(.write, count: max(inFlight, 1))
            return false
        }
    }

    override func writeReady() -> Bool {
        guard let session else { return true }
        return flushOutput(session)
    }

    // MARK: reading

    override func readCleartext() {
        let scratch = worker.bodyScratch
        while fd >= 0 {
            let count = Sys.receive(fd, scratch.base, scratch.capacity)
            if count > 0 {
                worker.countBytes(count)
                if !receive(scratch.base, count) { return }
                if count < scratch.capacity && !hangupSeen { break }
                continue
            }
            if count == 0 {
                peerClosed()
                return
            }
            if count == Sys.wouldBlock { break }
            fail(.read, count: max(inFlight, 1))
            return
        }
        pump()
    }

    override func drainPlaintext(_ tls: TLSEngine) -> Bool {
        let scratch = worker.bodyScratch
        while true {
            let result = tls.readPlaintext(into: scratch.base, capacity: scratch.capacity)
            if tls.pendingCiphertextCount > 0 && !flushCipher() { return false }
            switch result {
            case .bytes(let count):
                worker.countBytes(count)
                if !receive(scratch.base, count) { return false }
            case .needMoreInput:
                return true
            case .closed:
                peerClosed()
                return false
            case .failed:
                fail(.read, count: max(inFlight, 1))
                return false
            }
        }
    }

    /// Hands received frames to the session. False when the connection went away.
    @inline(__always)
    private func receive(_ bytes: UnsafeMutablePointer<UInt8>, _ count: Int) -> Bool {
        guard let session else { return false }
        lastReadAt = worker.loop.now
        if case .fatal = session.receive(bytes, count) {
            // The target broke the protocol: send the session's GOAWAY if possible, start over.
            if flushOutput(session) { fail(.protocol, count: max(inFlight, 1)) }
            return false
        }
        return true
    }

    // MARK: timeouts

    override func readyDeadline(now: Int64) {
        guard inFlight > 0, let session else { return }
        let timeout = timeoutNanos
        var oldestExpired = Int64.max
        for slot in 0..<maxStreams where slotStream[slot] != 0 && slotSentAt[slot] + timeout <= now {
            oldestExpired = min(oldestExpired, slotSentAt[slot])
        }
        if oldestExpired != Int64.max && lastReadAt < oldestExpired {
            // Not a byte came back since that request went out: the connection (or the target)
            // is stuck. Give it up, as HTTP/1.1 does.
            fail(.timeout, count: inFlight)
            return
        }
        var next = Int64.max
        var expired = 0
        for slot in 0..<maxStreams {
            let stream = slotStream[slot]
            guard stream != 0 else { continue }
            let due = slotSentAt[slot] + timeout
            if due <= now {
                session.resetStream(stream: stream, code: .cancel)
                _ = close(at: position(of: stream))
                expired += 1
            } else if due < next {
                next = due
            }
        }
        if expired > 0 {
            inFlight -= expired
            worker.inFlight -= expired
            worker.countError(.timeout, expired)
            worker.requestsAbandoned()
        }
        if next != Int64.max { worker.loop.setDeadline(self, next) }
        pump()
    }

    // MARK: HTTP2SessionDelegate (accounting only: nothing here closes or submits)

    func http2Session(_ session: HTTP2Session, didReceiveHeaders headers: HTTP2HeaderBlock, stream: Int32, endStream: Bool) {
        let status = headers.status
        if status < 200 { return }   // 1xx: the final head still comes
        let position = position(of: stream)
        if position >= 0 { slotStatus[Int(table[position])] = status }
    }

    func http2Session(_ session: HTTP2Session, didReceiveData bytes: UnsafePointer<UInt8>, count: Int, stream: Int32) {
        // Read and dropped: give the window back at once.
        session.consume(stream: stream, bytes: count)
    }

    func http2Session(_ session: HTTP2Session, didReceiveTrailers trailers: HTTP2HeaderBlock, stream: Int32) {}

    func http2Session(_ session: HTTP2Session, didEndStream stream: Int32) {
        let position = position(of: stream)
        guard position >= 0 else { return }
        let slot = close(at: position)
        inFlight -= 1
        refusedInARow = 0
        worker.responseCompleted(intended: slotIntended[slot], status: slotStatus[slot])
    }

    func http2Session(_ session: HTTP2Session, didCloseStream stream: Int32, errorCode: HTTP2ErrorCode) {
        // Streams answered (END_STREAM seen) or timed out are gone from the table already.
        let position = position(of: stream)
        guard position >= 0 else { return }
        let slot = close(at: position)
        inFlight -= 1
        if errorCode == .refusedStream && refusedInARow < maxStreams && !worker.stopping {
            // Not processed (RFC 9113 §8.7): send it again, keeping its intended time.
            refusedInARow += 1
            pushRetry(slotIntended[slot])
            return
        }
        worker.inFlight -= 1
        worker.countError(.reset, 1)
        worker.requestsAbandoned()
    }

    func http2Session(_ session: HTTP2Session, didReceiveGoAway lastStreamID: Int32, errorCode: HTTP2ErrorCode) {
        // nghttp2 closes the streams above `lastStreamID` with REFUSED_STREAM right after this.
        goingAway = true
    }
}
