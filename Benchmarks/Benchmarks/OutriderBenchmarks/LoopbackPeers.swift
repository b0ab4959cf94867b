// Loopback peers for the round-trip benchmarks: a blocking HTTP/1.1 client and a poll(2)
// upstream, both in plain Glibc with every buffer allocated once up front, so that the only
// allocations the malloc counter sees during a measured iteration are the proxy's. The control
// benchmark `UpstreamDirectRoundTrip` (client → upstream, no proxy) proves they allocate nothing.
//
// Deliberately not here: Foundation, String, Array growth, closures per request.

import Glibc

enum Loopback {
    /// 127.0.0.1 in network byte order.
    static let loopbackAddress = in_addr(s_addr: UInt32(0x7F00_0001).bigEndian)

    static func fail(_ what: StaticString, _ error: Int32 = errno) -> Never {
        let message = String(cString: strerror(error))
        fatalError("\(what): \(message)")
    }

    static func socketAddress(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr = loopbackAddress
        return address
    }

    /// A listening socket on 127.0.0.1 with a kernel-chosen port.
    static func listen() -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { fail("socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = socketAddress(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { fail("bind") }
        guard Glibc.listen(fd, 128) == 0 else { fail("listen") }
        return (fd, boundPort(fd))
    }

    static func boundPort(_ fd: Int32) -> UInt16 {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let result = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard result == 0 else { fail("getsockname") }
        return UInt16(bigEndian: address.sin_port)
    }

    /// A port that was free a moment ago (the config refuses port 0, so the proxy needs a number).
    static func freePort() -> UInt16 {
        let (fd, port) = listen()
        close(fd)
        return port
    }

    static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Connects to 127.0.0.1:port, retrying for up to `seconds` while nothing listens yet.
    static func connect(port: UInt16, seconds: Int = 10) -> Int32 {
        var attempts = seconds * 100
        while true {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { fail("socket") }
            var address = socketAddress(port: port)
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if result == 0 {
                setNoDelay(fd)
                return fd
            }
            let error = errno
            close(fd)
            attempts -= 1
            guard attempts > 0, error == ECONNREFUSED else { fail("connect", error) }
            usleep(10_000)
        }
    }

    /// Offset just past the first CRLFCRLF in `bytes[from..<count]`, or -1.
    @inline(__always)
    static func headEnd(_ bytes: UnsafeMutablePointer<UInt8>, from: Int, count: Int) -> Int {
        var index = max(from, 3)
        while index < count {
            if bytes[index] == 0x0A && bytes[index - 1] == 0x0D && bytes[index - 2] == 0x0A && bytes[index - 3] == 0x0D {
                return index + 1
            }
            index += 1
        }
        return -1
    }

    /// Copies a static string into a buffer allocated once (never freed: fixtures live as long
    /// as the benchmark process).
    static func bytes(_ text: StaticString) -> (UnsafeMutablePointer<UInt8>, Int) {
        let count = text.utf8CodeUnitCount
        let pointer = UnsafeMutablePointer<UInt8>.allocate(capacity: count)
        pointer.initialize(from: text.utf8Start, count: count)
        return (pointer, count)
    }
}

/// Runs `body` on a new detached pthread (never on the main thread or a Swift concurrency
/// thread, whose executors must not be blocked).
final class ThreadBody {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }

    static func start(_ body: @escaping () -> Void) {
        let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { argument in
            let box = Unmanaged<ThreadBody>.fromOpaque(argument!).takeRetainedValue()
            box.body()
            return nil
        }, context)
        guard result == 0 else { Loopback.fail("pthread_create", result) }
        pthread_detach(thread)
    }
}

/// A tiny keep-alive HTTP/1.1 origin: one thread, poll(2) over a fixed table of connections,
/// answers every request head (requests are bodyless GETs) with the same 200 and
/// `content-length`. Allocates only in `init`.
final class LoopbackUpstream: @unchecked Sendable {
    static let maxConnections = 64
    static let bufferSize = 64 * 1024
    static let responseText: StaticString =
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\nhello, world\n"

    let port: UInt16
    private let listenFD: Int32
    private let pollFDs: UnsafeMutablePointer<pollfd>      // [0] = listener, [1...] = connections
    private let buffers: UnsafeMutablePointer<UInt8>       // one bufferSize slice per connection
    private let filled: UnsafeMutablePointer<Int>
    private let response: UnsafeMutablePointer<UInt8>
    private let responseLength: Int

    init() {
        (listenFD, port) = Loopback.listen()
        let slots = Self.maxConnections + 1
        pollFDs = .allocate(capacity: slots)
        for index in 0..<slots { pollFDs[index] = pollfd(fd: -1, events: Int16(POLLIN), revents: 0) }
        pollFDs[0].fd = listenFD
        buffers = .allocate(capacity: Self.maxConnections * Self.bufferSize)
        filled = .allocate(capacity: Self.maxConnections)
        filled.initialize(repeating: 0, count: Self.maxConnections)
        (response, responseLength) = Loopback.bytes(Self.responseText)
    }

    func start() {
        ThreadBody.start { [self] in serve() }
    }

    private func serve() {
        let slots = nfds_t(Self.maxConnections + 1)
        while true {
            let ready = poll(pollFDs, slots, -1)
            if ready < 0 {
                if errno == EINTR { continue }
                Loopback.fail("upstream poll")
            }
            if pollFDs[0].revents != 0 { acceptOne() }
            for slot in 0..<Self.maxConnections where pollFDs[slot + 1].fd >= 0 && pollFDs[slot + 1].revents != 0 {
                serviceConnection(slot)
            }
        }
    }

    private func acceptOne() {
        let fd = accept(listenFD, nil, nil)
        guard fd >= 0 else { return }
        Loopback.setNoDelay(fd)
        for slot in 0..<Self.maxConnections where pollFDs[slot + 1].fd < 0 {
            pollFDs[slot + 1].fd = fd
            pollFDs[slot + 1].revents = 0
            filled[slot] = 0
            return
        }
        close(fd)   // table full
    }

    private func closeSlot(_ slot: Int) {
        close(pollFDs[slot + 1].fd)
        pollFDs[slot + 1].fd = -1
        filled[slot] = 0
    }

    private func serviceConnection(_ slot: Int) {
        let fd = pollFDs[slot + 1].fd
        let buffer = buffers + slot * Self.bufferSize
        var count = filled[slot]
        if count == Self.bufferSize { closeSlot(slot); return }   // a head larger than we expect
        let received = read(fd, buffer + count, Self.bufferSize - count)
        if received <= 0 {
            if received < 0 && (errno == EINTR || errno == EAGAIN) { return }
            closeSlot(slot)
            return
        }
        count += received
        // Answer every complete head in the buffer (pipelined requests included).
        var start = 0
        while true {
            let end = Loopback.headEnd(buffer + start, from: 0, count: count - start)
            if end < 0 { break }
            if !writeAll(fd, response, responseLength) { closeSlot(slot); return }
            start += end
        }
        if start > 0 && start < count { memmove(buffer, buffer + start, count - start) }
        filled[slot] = count - start
    }

    private func writeAll(_ fd: Int32, _ bytes: UnsafeMutablePointer<UInt8>, _ length: Int) -> Bool {
        var sent = 0
        while sent < length {
            let result = send(fd, bytes + sent, length - sent, Int32(MSG_NOSIGNAL))
            if result < 0 {
                if errno == EINTR { continue }
                return false
            }
            sent += result
        }
        return true
    }
}

/// One persistent keep-alive client connection: sends a fixed request and reads one whole
/// response (head + `content-length` body) with blocking syscalls into a preallocated buffer.
final class LoopbackClient: @unchecked Sendable {
    static let bufferSize = 64 * 1024

    let port: UInt16
    private var fd: Int32
    private let request: UnsafeMutablePointer<UInt8>
    private let requestLength: Int
    private let buffer: UnsafeMutablePointer<UInt8>

    init(port: UInt16, request text: StaticString) {
        self.port = port
        (request, requestLength) = Loopback.bytes(text)
        buffer = .allocate(capacity: Self.bufferSize)
        fd = Loopback.connect(port: port)
    }

    /// Closes the connection and opens a new one (warm-up only: it allocates nothing itself,
    /// but the proxy sees a new connection).
    func reconnect() {
        disconnect()
        fd = Loopback.connect(port: port)
    }

    /// Closes with a reset (SO_LINGER 0): thousands of warm-up connections leave no
    /// TIME_WAIT sockets holding loopback ports.
    func disconnect() {
        guard fd >= 0 else { return }
        var noLinger = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &noLinger, socklen_t(MemoryLayout<linger>.size))
        close(fd)
        fd = -1
    }

    /// One request/response exchange; returns the response's size in bytes. Traps on anything
    /// but a complete `200` with a `content-length` body, so a misconfigured proxy (a 502, a
    /// closed connection) cannot pass for a fast one.
    @inline(never)
    func roundTrip() -> Int {
        var sent = 0
        while sent < requestLength {
            let result = send(fd, request + sent, requestLength - sent, Int32(MSG_NOSIGNAL))
            if result < 0 {
                if errno == EINTR { continue }
                Loopback.fail("client send")
            }
            sent += result
        }
        var count = 0
        var head = -1
        var total = Int.max
        while count < total {
            let received = recv(fd, buffer + count, Self.bufferSize - count, 0)
            if received < 0 {
                if errno == EINTR { continue }
                Loopback.fail("client recv")
            }
            if received == 0 { fatalError("the connection closed mid-response (\(count) bytes read)") }
            let scannedFrom = max(count - 3, 0)
            count += received
            if head < 0 {
                head = Loopback.headEnd(buffer, from: scannedFrom, count: count)
                if head >= 0 { total = head + contentLength(headEnd: head) }
                else if count == Self.bufferSize { fatalError("response head too large") }
            }
        }
        precondition(count == total, "more bytes than one response")
        return total
    }

    /// Checks the status line says 200 and returns the `content-length` value.
    private func contentLength(headEnd: Int) -> Int {
        // "HTTP/1.1 200 "
        guard headEnd > 12, buffer[9] == UInt8(ascii: "2"), buffer[10] == UInt8(ascii: "0"), buffer[11] == UInt8(ascii: "0") else {
            let status = String(decoding: UnsafeBufferPointer(start: buffer, count: min(headEnd, 512)), as: UTF8.self)
            fatalError("expected a 200, got:\n\(status)")
        }
        let name: StaticString = "content-length:"
        let nameBytes = name.utf8Start
        let nameLength = name.utf8CodeUnitCount
        var lineStart = 0
        while lineStart < headEnd {
            var lineEnd = lineStart
            while lineEnd < headEnd && buffer[lineEnd] != 0x0A { lineEnd += 1 }
            if lineEnd - lineStart > nameLength {
                var matches = true
                for offset in 0..<nameLength {
                    var byte = buffer[lineStart + offset]
                    if byte >= 0x41 && byte <= 0x5A { byte |= 0x20 }
                    if byte != nameBytes[offset] { matches = false; break }
                }
                if matches {
                    var value = 0
                    var index = lineStart + nameLength
                    while buffer[index] == 0x20 || buffer[index] == 0x09 { index += 1 }
                    while buffer[index] >= 0x30 && buffer[index] <= 0x39 {
                        value = value * 10 + Int(buffer[index] - 0x30)
                        index += 1
                    }
                    return value
                }
            }
            lineStart = lineEnd + 1
        }
        fatalError("response without content-length")
    }
}
