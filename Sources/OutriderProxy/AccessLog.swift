import Glibc
import OutriderCore
import OutriderPosix

/// Where access-log batches go: a dedicated thread does the (blocking) writes, so an event loop
/// never waits on stdout or a file. Workers hand over whole buffers, not lines.
final class AccessLogSink: @unchecked Sendable {
    static let batchCapacity = 64 * 1024
    private static let maxQueuedBatches = 64

    private var fd: Int32
    private let closeOnExit: Bool
    /// The file a `path: FILE` log appends to (reopened on SIGUSR1); nil for stdout/stderr.
    private let path: String?
    private var reopenWanted = false
    private var lock = pthread_mutex_t()
    private var ready = pthread_cond_t()
    private var queue: [ByteBuffer] = []
    private var spare: [ByteBuffer] = []
    private var stopping = false
    private var thread: OSThread?
    private(set) var droppedBatches = 0

    /// `batches`: buffers made up front, so handing a batch over allocates nothing unless the
    /// log thread falls that many batches behind.
    init(fd: Int32, closeOnExit: Bool, batches: Int, path: String? = nil) {
        self.fd = fd
        self.closeOnExit = closeOnExit
        self.path = path
        self.spareLimit = batches
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&ready, nil)
        queue.reserveCapacity(Self.maxQueuedBatches)
        spare.reserveCapacity(batches + Self.maxQueuedBatches)
        for _ in 0..<batches { spare.append(ByteBuffer(capacity: Self.batchCapacity)) }
    }

    private let spareLimit: Int

    func start() throws(SystemError) {
        thread = try OSThread.start(name: "outrider-log") { [self] in run() }
    }

    /// SIGUSR1 (log rotation): the log thread opens the path again, between two batches, so
    /// lines after the rename go to the new file and none is lost or split.
    func reopen() {
        guard path != nil else { return }
        pthread_mutex_lock(&lock)
        reopenWanted = true
        pthread_cond_signal(&ready)
        pthread_mutex_unlock(&lock)
    }

    /// With `lock` held, on the log thread.
    private func reopenFile() {
        guard let path else { return }
        do {
            let next = try Sys.openAppend(path)
            let previous = fd
            fd = next
            Sys.close(previous)
            OperationalLog.info("access log reopened", ["path": path])
        } catch {
            OperationalLog.error("access log not reopened; still writing to the old file", ["path": path, "error": error.description])
        }
    }

    /// Hands a filled batch over; returns an empty one to keep filling.
    func exchange(_ full: ByteBuffer) -> ByteBuffer {
        pthread_mutex_lock(&lock)
        if queue.count < Self.maxQueuedBatches {
            queue.append(full)
            pthread_cond_signal(&ready)
        } else {
            droppedBatches += 1
            full.clear()
            spare.append(full)
        }
        let next = spare.popLast() ?? ByteBuffer(capacity: Self.batchCapacity)
        pthread_mutex_unlock(&lock)
        return next
    }

    private func run() {
        pthread_mutex_lock(&lock)
        while true {
            while queue.isEmpty && !stopping && !reopenWanted { pthread_cond_wait(&ready, &lock) }
            if queue.isEmpty && stopping { break }
            if reopenWanted {
                reopenWanted = false
                reopenFile()
            }
            if queue.isEmpty { continue }
            let batch = queue.removeFirst()
            pthread_mutex_unlock(&lock)
            Sys.writeAll(fd, batch.readPointer, batch.readableBytes)
            batch.clear()
            pthread_mutex_lock(&lock)
            if spare.count < spareLimit { spare.append(batch) }
        }
        pthread_mutex_unlock(&lock)
    }

    /// Writes what is queued and stops the thread.
    func stop() {
        pthread_mutex_lock(&lock)
        stopping = true
        pthread_cond_signal(&ready)
        pthread_mutex_unlock(&lock)
        thread?.join()
        if closeOnExit { Sys.close(fd) }
    }
}

/// A worker's access-log batch: lines are appended as bytes and handed to the sink when the
/// batch is nearly full or 100 ms old.
final class AccessLogBatch {
    private let sink: AccessLogSink
    private(set) var buffer: ByteBuffer
    private var firstLineAt: Int64 = 0
    static let flushAfter: Int64 = 100_000_000
    /// Longest line written; a batch with less room than this is handed over first.
    static let lineReserve = 12 * 1024

    init(sink: AccessLogSink) {
        self.sink = sink
        buffer = ByteBuffer(capacity: AccessLogSink.batchCapacity)
    }

    /// Makes room for one line and notes when the batch started.
    func prepareLine(now: Int64) -> ByteBuffer {
        if buffer.writableBytes < Self.lineReserve { handOver() }
        if buffer.isEmpty { firstLineAt = now }
        return buffer
    }

    var hasPendingLines: Bool { !buffer.isEmpty }
    var dueAt: Int64 { buffer.isEmpty ? 0 : firstLineAt + Self.flushAfter }

    func handOver() {
        guard !buffer.isEmpty else { return }
        buffer = sink.exchange(buffer)
    }
}

/// JSON string contents with escapes, for bytes from the wire (already validated as field
/// bytes: no controls except HTAB; obs-text is escaped so the line stays valid UTF-8 JSON).
@inline(__always)
func appendJSONEscaped(_ out: ByteBuffer, _ pointer: UnsafePointer<UInt8>, _ count: Int) {
    let digits: StaticString = "0123456789abcdef"
    for index in 0..<count {
        let byte = pointer[index]
        if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            out.append(UInt8(ascii: "\\"))
            out.append(byte)
        } else if byte < 0x20 || byte >= 0x7F {
            out.append("\\u00")
            out.append(digits.utf8Start[Int(byte >> 4)])
            out.append(digits.utf8Start[Int(byte & 0xF)])
        } else {
            out.append(byte)
        }
    }
}
