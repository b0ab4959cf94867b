// Per-stream state the session keeps beside nghttp2's: the bytes submitted but not yet taken by
// nghttp2's data provider, pending trailers, and receive-side accounting.

/// One stream's bookkeeping. Pooled by the session: reused across streams, so opening a stream
/// allocates nothing once the pool is warm.
final class HTTP2Stream {
    var id: Int32 = 0
    /// Bytes queued by `submitData`, waiting for nghttp2 to pull them (flow control permitting).
    private(set) var sendStorage: UnsafeMutablePointer<UInt8>?
    private(set) var sendCapacity = 0
    private(set) var sendStart = 0
    private(set) var sendEnd = 0
    /// A data provider was attached to the headers submitted (the body comes via `submitData`).
    var hasDataProvider = false
    /// The provider answered NGHTTP2_ERR_DEFERRED: nghttp2 will not ask again until resumed.
    var isDeferred = false
    /// `submitData(endStream: true)` or `submitTrailers` was called: no more bytes will come.
    var endSubmitted = false
    /// Trailers to send once the buffer drained.
    var pendingTrailers: HTTP2HeaderBlock?
    var hasPendingTrailers = false
    /// `submitData` said "stop" and the delegate waits for `streamWindowOpened`.
    var writerIsBlocked = false
    /// The delegate saw this stream (server: its request headers; client: it submitted it).
    var knownToDelegate = false
    /// A final (non-1xx) head was received, so a later HEADERS block is trailers.
    var receivedFinalHeaders = false
    /// DATA bytes delivered and not yet consumed: credited back to the connection at close.
    var unconsumedBytes = 0
    /// The session reset the stream itself; the close is reported with this code.
    var localResetCode: UInt32?
    /// Body bytes nghttp2 has taken from the send buffer (the stream's write progress).
    var sentCount = 0
    /// Waits for the connection's send buffers to drain (`HTTP2Session.sendRoom`).
    var waitsForConnectionRoom = false

    var bufferedCount: Int { sendEnd - sendStart }

    func reset(id: Int32) {
        self.id = id
        sendStart = 0
        sendEnd = 0
        hasDataProvider = false
        isDeferred = false
        endSubmitted = false
        hasPendingTrailers = false
        pendingTrailers?.removeAll()
        writerIsBlocked = false
        knownToDelegate = false
        receivedFinalHeaders = false
        unconsumedBytes = 0
        localResetCode = nil
        sentCount = 0
        waitsForConnectionRoom = false
    }

    /// Gives back a large send buffer when the stream goes back to the pool: a 1 MiB burst
    /// should not stay allocated in an idle pool.
    func releaseLargeBuffers(keeping limit: Int) {
        if sendCapacity > limit {
            sendStorage?.deallocate()
            sendStorage = nil
            sendCapacity = 0
        }
    }

    deinit { sendStorage?.deallocate() }

    func appendToSendBuffer(_ bytes: UnsafePointer<UInt8>, _ count: Int) {
        guard count > 0 else { return }
        if sendEnd + count > sendCapacity {
            let live = bufferedCount
            if live + count <= sendCapacity, let storage = sendStorage {
                // Room enough once the taken bytes are dropped from the front.
                if live > 0 { storage.update(from: storage + sendStart, count: live) }
            } else {
                var newCapacity = max(sendCapacity * 2, 4096)
                while newCapacity < live + count { newCapacity *= 2 }
                let newStorage = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
                if live > 0, let storage = sendStorage { newStorage.update(from: storage + sendStart, count: live) }
                sendStorage?.deallocate()
                sendStorage = newStorage
                sendCapacity = newCapacity
            }
            sendStart = 0
            sendEnd = live
        }
        (sendStorage! + sendEnd).update(from: bytes, count: count)
        sendEnd += count
    }

    /// Moves up to `capacity` buffered bytes into `destination`; returns the count.
    func takeFromSendBuffer(into destination: UnsafeMutablePointer<UInt8>, capacity: Int) -> Int {
        let count = min(capacity, bufferedCount)
        guard count > 0, let storage = sendStorage else { return 0 }
        destination.update(from: storage + sendStart, count: count)
        sendStart += count
        sentCount += count
        if sendStart == sendEnd { sendStart = 0; sendEnd = 0 }
        return count
    }
}
