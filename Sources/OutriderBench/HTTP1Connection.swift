import Glibc
import OutriderCore
import OutriderHTTP
import OutriderHTTP1
import OutriderPosix
import OutriderTLS

/// One keep-alive HTTP/1.1 connection to the target: it writes the pre-serialized request
/// (pipelined up to the depth asked, several copies in one writev), parses the answers with
/// the proxy's own response parser, and reconnects when the target closes or fails.
final class HTTP1Connection: BenchConnection {
    enum Body { case head, fixed, chunked, untilClose }

    let pipeline: Int
    let inBuffer: ByteBuffer

    // Requests in flight, oldest first: intended start (latency base) and actual send time
    // (timeout base), in a ring of `pipeline` slots.
    let starts: UnsafeMutablePointer<Int64>
    let sentAt: UnsafeMutablePointer<Int64>
    var ringHead = 0
    /// Issued and not completely written yet.
    var unsent = 0
    /// Bytes of the first unsent request already written.
    var partialOffset = 0

    // The answer being read.
    var parser: HeadParser
    var head = MessageHead()
    let headers = HeaderTable(capacity: 256)
    var body: Body = .head
    var bodyRemaining: Int64 = 0
    var chunked = ChunkedDecoder()
    var keepAlive = true

    static let bufferCapacity = 16 * 1024
    static let headLimits = HeadLimits(maxHeaderBytes: 15 * 1024, maxHeaders: 256)

    override init(worker: BenchWorker, localIndex: Int, globalIndex: Int) {
        pipeline = worker.plan.options.pipeline
        inBuffer = ByteBuffer(capacity: Self.bufferCapacity)
        starts = .allocate(capacity: pipeline)
        sentAt = .allocate(capacity: pipeline)
        parser = HeadParser(kind: .response, limits: Self.headLimits)
        super.init(worker: worker, localIndex: localIndex, globalIndex: globalIndex)
    }

    deinit {
        starts.deallocate()
        sentAt.deallocate()
    }

    // MARK: deadlines

    override func readyDeadline(now: Int64) {
        guard inFlight > 0 else { return }
        let due = sentAt[ringHead] + worker.plan.options.timeoutNanos
        if due <= now {
            fail(.timeout, count: inFlight)
        } else {
            worker.loop.setDeadline(self, due)
        }
    }

    // MARK: reading

    override func readCleartext() {
        while fd >= 0 {
            let room: Int
            let count: Int
            if body == .fixed && inBuffer.isEmpty && bodyRemaining >= 4096 {
                // The middle of a large body: read it straight into the thread's scratch
                // space in big reads, never past its end, and drop it.
                let scratch = worker.bodyScratch
                room = Int(min(bodyRemaining, Int64(scratch.capacity)))
                count = Sys.receive(fd, scratch.base, room)
                if count > 0 {
                    worker.countBytes(count)
                    bodyRemaining -= Int64(count)
                    if bodyRemaining == 0 && !complete(head.status) { return }
                    if count < room && !hangupSeen { break }
                    continue
                }
            } else {
                guard ensureRoom() else { return }
                room = inBuffer.writableBytes
                count = Sys.receive(fd, inBuffer.writePointer, room)
                if count > 0 {
                    inBuffer.writerIndex += count
                    worker.countBytes(count)
                    if !processInput() { return }
                    if count < room && !hangupSeen { break }
                    continue
                }
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

    /// Decrypts what the engine holds into the input buffer and parses it. False when the
    /// connection went away.
    override func drainPlaintext(_ tls: TLSEngine) -> Bool {
        while true {
            guard ensureRoom() else { return false }
            let result = tls.readPlaintext(into: inBuffer.writePointer, capacity: inBuffer.writableBytes)
            if tls.pendingCiphertextCount > 0 && !flushCipher() { return false }
            switch result {
            case .bytes(let count):
                inBuffer.writerIndex += count
                worker.countBytes(count)
                if !processInput() { return false }
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

    /// Makes room in the input buffer; false (and the connection failed) when a head does not
    /// fit in it.
    private func ensureRoom() -> Bool {
        if inBuffer.writableBytes >= 4096 || inBuffer.readerIndex == 0 {
            if inBuffer.writableBytes > 0 { return true }
            fail(.protocol, count: max(inFlight, 1))
            return false
        }
        let delta = inBuffer.readerIndex
        inBuffer.compact()
        if body == .head && parser.isInProgress { parser.rebase(by: delta, head: &head, headers: headers) }
        return true
    }

    /// Parses every complete answer in the input buffer. False when the connection went away.
    private func processInput() -> Bool {
        while true {
            switch body {
            case .head:
                if inBuffer.isEmpty { return true }
                if inFlight == 0 {
                    // An answer nobody asked for.
                    fail(.protocol, count: 1)
                    return false
                }
                switch parser.parse(inBuffer, headers: headers, head: &head) {
                case .needMore:
                    return true
                case .failed:
                    fail(.protocol, count: inFlight)
                    return false
                case .complete:
                    inBuffer.consume(Int(head.headEnd) - inBuffer.readerIndex)
                    let status = head.status
                    if status < 200 {
                        if status == 101 {
                            fail(.protocol, count: inFlight)
                            return false
                        }
                        continue   // interim answer (100 Continue, 103 Early Hints)
                    }
                    keepAlive = head.keepAlive
                    if worker.isHead || status == 204 || status == 304 {
                        if !complete(status) { return false }
                    } else if head.isChunked {
                        chunked = ChunkedDecoder()
                        body = .chunked
                    } else if head.contentLength >= 0 {
                        bodyRemaining = head.contentLength
                        body = .fixed
                        if bodyRemaining == 0 && !complete(status) { return false }
                    } else {
                        body = .untilClose
                        keepAlive = false
                    }
                }
            case .fixed:
                let take = Int(min(bodyRemaining, Int64(inBuffer.readableBytes)))
                inBuffer.consume(take)
                bodyRemaining -= Int64(take)
                if bodyRemaining > 0 { return true }
                if !complete(head.status) { return false }
            case .chunked:
                switch chunked.next(inBuffer) {
                case .data(_, let count):
                    chunked.consumeData(inBuffer, count)
                case .trailer:
                    continue
                case .needMore:
                    return true
                case .end:
                    if !complete(head.status) { return false }
                case .failed:
                    fail(.protocol, count: inFlight)
                    return false
                }
            case .untilClose:
                inBuffer.clear()
                return true
            }
        }
    }

    /// One answer is complete. False when the connection closed (not keep-alive).
    private func complete(_ status: Int) -> Bool {
        let intended = starts[ringHead]
        ringHead = ringHead + 1 == pipeline ? 0 : ringHead + 1
        inFlight -= 1
        // The answer came before its request was fully written: the stream cannot go on.
        if unsent > inFlight { keepAlive = false }
        body = .head
        worker.responseCompleted(intended: intended, status: status)
        if !keepAlive {
            closeAndReconnect(failedKind: nil)
            return false
        }
        if inFlight == 0 {
            worker.loop.setDeadline(self, 0)
        } else {
            worker.loop.setDeadline(self, sentAt[ringHead] + worker.plan.options.timeoutNanos)
        }
        return true
    }

    override func peerClosed() {
        if body == .untilClose && inFlight > 0 {
            // The close ends the body.
            keepAlive = false
            _ = complete(head.status)
            return
        }
        super.peerClosed()
    }

    // MARK: sending

    /// Issues the requests that are due: closed loop, as many as the depth allows; open loop,
    /// those whose intended time has come (a late connection catches up at once).
    override func pump() {
        guard phase == .ready, !worker.stopping else { return }
        if let schedule = worker.plan.schedule {
            let now = Sys.monotonicNanoseconds()
            while inFlight < pipeline {
                if nextIntended > now {
                    if scheduledAt == 0 {
                        scheduledAt = nextIntended
                        worker.schedule(self, at: nextIntended)
                    }
                    break
                }
                if nextIntended >= worker.plan.endTime || !worker.takeBudget(start: nextIntended) { break }
                enqueue(start: nextIntended, now: now)
                sequence += 1
                nextIntended = schedule.intendedTime(start: worker.plan.startTime, connection: globalIndex, request: sequence)
            }
        } else {
            while inFlight < pipeline {
                let now = Sys.monotonicNanoseconds()
                guard worker.takeBudget(start: now) else { break }
                enqueue(start: now, now: now)
            }
        }
        if unsent > 0 { _ = writeOut() }
    }

    @inline(__always)
    private func enqueue(start: Int64, now: Int64) {
        var slotIndex = ringHead + inFlight
        if slotIndex >= pipeline { slotIndex -= pipeline }
        starts[slotIndex] = start
        sentAt[slotIndex] = now
        if inFlight == 0 { worker.loop.setDeadline(self, now + worker.plan.options.timeoutNanos) }
        inFlight += 1
        unsent += 1
        worker.inFlight += 1
    }

    /// Writes the unsent requests. False when the connection went away.
    private func writeOut() -> Bool {
        if let tls {
            while unsent > 0 {
                if tls.writePlaintext(worker.request, worker.requestLength) < 0 {
                    fail(.write, count: inFlight)
                    return false
                }
                unsent -= 1
            }
            return flushCipher()
        }
        let length = worker.requestLength
        let vectors = worker.iovecs
        while unsent > 0 && writable {
            let count = min(unsent, BenchWorker.iovecCapacity)
            vectors[0] = iovec(iov_base: UnsafeMutableRawPointer(worker.request + partialOffset), iov_len: length - partialOffset)
            var index = 1
            while index < count {
                vectors[index] = iovec(iov_base: UnsafeMutableRawPointer(worker.request), iov_len: length)
                index += 1
            }
            let written = Sys.writev(fd, vectors, Int32(count))
            if written > 0 {
                var remaining = written
                let first = length - partialOffset
                if remaining >= first {
                    remaining -= first
                    unsent -= 1
                    unsent -= remaining / length
                    partialOffset = remaining % length
                } else {
                    partialOffset += remaining
                }
                continue
            }
            if written == Sys.wouldBlock {
                writable = false
                return true
            }
            fail(.write, count: max(inFlight, 1))
            return false
        }
        return true
    }

    /// Sends the engine's ciphertext. False when the connection went away.
    override func writeReady() -> Bool { writeOut() }

    // MARK: closing

    override func resetProtocolState() {
        unsent = 0
        partialOffset = 0
        ringHead = 0
        body = .head
        keepAlive = true
        parser = HeadParser(kind: .response, limits: Self.headLimits)
        inBuffer.clear()
    }
}
