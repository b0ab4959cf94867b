import CLinux
import Glibc

// Every system call Outrider makes goes through here: EINTR is retried, EAGAIN comes back as
// a value (`-EAGAIN`), and errors carry the errno text. Results are `Int`: >= 0 success,
// negative = -errno, so the data path never allocates an error.

public struct SystemError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var code: Int32
    public init(_ operation: String, code: Int32) { self.operation = operation; self.code = code }
    public var description: String { "\(operation): \(errnoText(code)) (errno \(code))" }
}

public func errnoText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}

@inline(__always) private func retryingEINTR(_ body: () -> Int) -> Int {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code = errno
        if code == EINTR { continue }
        return -Int(code)
    }
}

public enum Sys {
    public static let wouldBlock = -Int(EAGAIN)

    @inline(__always)
    public static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
        retryingEINTR { Glibc.read(fd, buffer, count) }
    }

    @inline(__always)
    public static func write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
        retryingEINTR { Glibc.write(fd, buffer, count) }
    }

    /// recv(2) on a socket, as a bare system call (see CLinux.h for why not read(2)).
    @inlinable @inline(__always)
    public static func receive(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
        while true {
            let result = clinux_recv(fd, buffer, count)
            if result != -Int(EINTR) { return result }
        }
    }

    /// send(2) with MSG_NOSIGNAL so a peer that closed gives EPIPE, not SIGPIPE; a bare
    /// system call like `receive`.
    @inlinable @inline(__always)
    public static func send(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
        while true {
            let result = clinux_send(fd, buffer, count, Int32(MSG_NOSIGNAL))
            if result != -Int(EINTR) { return result }
        }
    }

    @inline(__always)
    public static func writev(_ fd: Int32, _ vectors: UnsafePointer<iovec>, _ count: Int32) -> Int {
        retryingEINTR { Glibc.writev(fd, vectors, count) }
    }

    @inline(__always)
    public static func close(_ fd: Int32) {
        // Linux releases the descriptor even when close reports EINTR: never retry.
        _ = Glibc.close(fd)
    }

    /// Wakes a thread blocked in poll/accept on a listening socket.
    public static func shutdownBoth(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    @inline(__always)
    public static func shutdownWrite(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// Returns the new descriptor, or -errno. The peer address is written to `address`.
    @inline(__always)
    public static func accept(_ fd: Int32, _ address: UnsafeMutablePointer<sockaddr_storage>) -> Int {
        retryingEINTR {
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            return address.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Int(accept4(fd, $0, &length, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue)))
            }
        }
    }

    public static func socket(family: Int32) -> Int {
        retryingEINTR {
            Int(Glibc.socket(family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0))
        }
    }

    /// Non-blocking connect: 0 when connected at once, -EINPROGRESS while under way, else -errno.
    public static func connect(_ fd: Int32, _ address: SocketAddress) -> Int {
        var storage = address.storage
        let length = address.length
        let result = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
        }
        if result == 0 { return 0 }
        return -Int(errno)
    }

    public static func bind(_ fd: Int32, _ address: SocketAddress) -> Int {
        var storage = address.storage
        let length = address.length
        let result = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) }
        }
        return result == 0 ? 0 : -Int(errno)
    }

    public static func listen(_ fd: Int32, backlog: Int32) -> Int {
        Glibc.listen(fd, backlog) == 0 ? 0 : -Int(errno)
    }

    public static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) -> Int {
        var value = value
        return setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 ? 0 : -Int(errno)
    }

    /// The pending error of a socket (after a non-blocking connect), 0 when none.
    public static func socketError(_ fd: Int32) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) != 0 { return errno }
        return value
    }

    public static func localAddress(_ fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return result == 0 ? SocketAddress(storage: storage, length: length) : nil
    }

    /// The address a connection was sent to before an iptables REDIRECT (transparent mode).
    /// `ipv6`: the socket is AF_INET6 (ip6tables keeps the address under SOL_IPV6, same option).
    public static func originalDestination(_ fd: Int32, ipv6: Bool = false) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(ipv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            getsockopt(fd, ipv6 ? Int32(IPPROTO_IPV6) : Int32(SOL_IP), SO_ORIGINAL_DST, $0, &length)
        }
        return result == 0 ? SocketAddress(storage: storage, length: length) : nil
    }

    // MARK: epoll, eventfd, signalfd

    public static func epollCreate() throws(SystemError) -> Int32 {
        let fd = epoll_create1(Int32(EPOLL_CLOEXEC))
        if fd < 0 { throw SystemError("epoll_create1", code: errno) }
        return fd
    }

    public static func epollAdd(_ epoll: Int32, _ fd: Int32, events: UInt32, data: UInt64) -> Int {
        var event = epoll_event()
        event.events = events
        event.data = epoll_data_t(u64: data)
        return epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) == 0 ? 0 : -Int(errno)
    }

    public static func epollModify(_ epoll: Int32, _ fd: Int32, events: UInt32, data: UInt64) -> Int {
        var event = epoll_event()
        event.events = events
        event.data = epoll_data_t(u64: data)
        return epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &event) == 0 ? 0 : -Int(errno)
    }

    public static func epollDelete(_ epoll: Int32, _ fd: Int32) {
        var event = epoll_event()
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, fd, &event)
    }

    @inline(__always)
    public static func epollWait(_ epoll: Int32, _ events: UnsafeMutablePointer<epoll_event>, _ max: Int32, _ timeoutMs: Int32) -> Int {
        let result = clinux_epoll_wait(epoll, events, max, timeoutMs)
        return result == -Int(EINTR) ? 0 : result
    }

    public static func eventFD() throws(SystemError) -> Int32 {
        let fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        if fd < 0 { throw SystemError("eventfd", code: errno) }
        return fd
    }

    public static func eventFDSignal(_ fd: Int32) {
        var one: UInt64 = 1
        _ = retryingEINTR { Glibc.write(fd, &one, 8) }
    }

    public static func eventFDDrain(_ fd: Int32) {
        var value: UInt64 = 0
        _ = retryingEINTR { Glibc.read(fd, &value, 8) }
    }

    // MARK: timerfd (a precise per-loop clock; the loop's wheel ticks at ~8 ms)

    /// A non-blocking CLOCK_MONOTONIC timerfd.
    public static func timerFD() throws(SystemError) -> Int32 {
        let fd = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC))
        if fd < 0 { throw SystemError("timerfd_create", code: errno) }
        return fd
    }

    /// Arms `fd` to fire once at the monotonic time `nanoseconds` (at once when it has passed);
    /// 0 disarms it.
    public static func timerFDArm(_ fd: Int32, atMonotonicNanoseconds nanoseconds: Int64) {
        var spec = itimerspec()
        // An all-zero it_value disarms: an armed time in the past still needs a non-zero value.
        let when = nanoseconds > 0 ? nanoseconds : 0
        spec.it_value.tv_sec = Int(when / 1_000_000_000)
        spec.it_value.tv_nsec = Int(when % 1_000_000_000)
        _ = timerfd_settime(fd, nanoseconds > 0 ? Int32(TFD_TIMER_ABSTIME) : 0, &spec, nil)
    }

    /// Clears a fired timerfd (or eventfd); returns the expiration count (0 when none).
    @discardableResult
    public static func timerFDDrain(_ fd: Int32) -> UInt64 {
        var value: UInt64 = 0
        let count = retryingEINTR { Glibc.read(fd, &value, 8) }
        return count == 8 ? value : 0
    }

    /// Disables Nagle on a TCP socket (small requests go out at once).
    public static func setNoDelay(_ fd: Int32) {
        _ = setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    }

    /// Whether `fd` is a terminal.
    public static func isTerminal(_ fd: Int32) -> Bool { isatty(fd) == 1 }

    /// Blocks `signals` in the calling thread (and the threads it starts later) and returns a
    /// signalfd that reports them.
    public static func signalFD(_ signals: [Int32]) throws(SystemError) -> Int32 {
        var set = sigset_t()
        let blocked = signals.withUnsafeBufferPointer {
            clinux_block_signals($0.baseAddress, Int32($0.count), &set)
        }
        if blocked != 0 { throw SystemError("pthread_sigmask", code: blocked) }
        let fd = signalfd(-1, &set, Int32(SFD_CLOEXEC))
        if fd < 0 { throw SystemError("signalfd", code: errno) }
        return fd
    }

    /// Blocks until a signal arrives on `fd`; returns its number.
    public static func readSignal(_ fd: Int32) -> Int32 {
        var info = signalfd_siginfo()
        let count = retryingEINTR { Glibc.read(fd, &info, MemoryLayout<signalfd_siginfo>.size) }
        return count == MemoryLayout<signalfd_siginfo>.size ? Int32(info.ssi_signo) : -1
    }

    public static func ignoreSIGPIPE() {
        _ = Glibc.signal(SIGPIPE, SIG_IGN)
    }

    // MARK: time and process facts

    /// Waits on `condition` (with `mutex` held) for at most `nanoseconds`; a signal or a
    /// spurious wake-up returns early, so callers re-check their predicate.
    public static func conditionWait(_ condition: UnsafeMutablePointer<pthread_cond_t>,
                                     _ mutex: UnsafeMutablePointer<pthread_mutex_t>, nanoseconds: Int64) {
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        let wait = max(0, nanoseconds)
        let total = Int64(deadline.tv_nsec) + wait % 1_000_000_000
        deadline.tv_sec += Int(wait / 1_000_000_000) + Int(total / 1_000_000_000)
        deadline.tv_nsec = Int(total % 1_000_000_000)
        pthread_cond_timedwait(condition, mutex, &deadline)
    }

    @inline(__always)
    public static func monotonicNanoseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Int64(spec.tv_sec) &* 1_000_000_000 &+ Int64(spec.tv_nsec)
    }

    @inline(__always)
    public static func wallClockNanoseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) &* 1_000_000_000 &+ Int64(spec.tv_nsec)
    }

    /// Gives the kernel back the whole free pages inside malloc's heaps (all arenas). free()
    /// returns memory only from the top of a heap, so after a burst the freed buffers of a
    /// worker's arena would stay resident; the pools call this after they dropped some.
    public static func returnFreeHeapPages() {
        _ = clinux_malloc_trim()
    }

    public static func randomSeed() -> UInt64 {
        var seed: UInt64 = 0
        if getrandom(&seed, 8, 0) != 8 { seed = UInt64(bitPattern: monotonicNanoseconds()) ^ UInt64(getpid()) }
        return seed
    }

    /// CPUs this process may use: the affinity mask, capped by the cgroup v2 quota
    /// (`cpu.max`, rounded up), at least 1.
    public static func usableCPUCount(cgroupCPUMaxPath: String = "/sys/fs/cgroup/cpu.max") -> Int {
        var count = Int(clinux_cpu_count_allowed())
        if count < 1 { count = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
        if let quota = readSmallFile(cgroupCPUMaxPath), let limit = cgroupCPULimit(quota) {
            count = min(count, limit)
        }
        return max(1, count)
    }

    public static func environmentValue(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// `cpu.max` is "QUOTA PERIOD" or "max PERIOD".
    public static func cgroupCPULimit(_ text: String) -> Int? {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count >= 2, let quota = Int(fields[0]), let period = Int(fields[1]), period > 0, quota > 0
        else { return nil }
        return max(1, (quota + period - 1) / period)
    }

    public static func readSmallFile(_ path: String, limit: Int = 1 << 20) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < limit {
            let count = chunk.withUnsafeMutableBytes { raw in retryingEINTR { Glibc.read(fd, raw.baseAddress, 4096) } }
            if count <= 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The bytes of a file (up to `limit`), or the errno when it cannot be opened or read.
    public static func readFileBytes(_ path: String, limit: Int = 64 << 20) -> Result<[UInt8], SystemError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return .failure(SystemError("open \(path)", code: errno)) }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while bytes.count < limit {
            let count = chunk.withUnsafeMutableBytes { raw in retryingEINTR { Glibc.read(fd, raw.baseAddress, raw.count) } }
            if count < 0 { return .failure(SystemError("read \(path)", code: Int32(-count))) }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return .success(bytes)
    }

    public static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    /// What identifies a file's current content cheaply: modification time, size and inode
    /// (a rename-into-place, as Kubernetes does for Secret volumes, changes the inode).
    public static func fileStamp(_ path: String) -> [Int64]? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return [Int64(info.st_mtim.tv_sec), Int64(info.st_mtim.tv_nsec), Int64(info.st_size), Int64(bitPattern: UInt64(info.st_ino))]
    }

    public static func openAppend(_ path: String) throws(SystemError) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        if fd < 0 { throw SystemError("open \(path)", code: errno) }
        return fd
    }

    /// Writes everything, blocking (for log threads, never the event loops).
    public static func writeAll(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int) {
        var offset = 0
        while offset < count {
            let written = retryingEINTR { Glibc.write(fd, pointer + offset, count - offset) }
            if written <= 0 { return }
            offset += written
        }
    }

    /// A blocking TCP connection with send/receive timeouts, for background threads (never an
    /// event loop). Returns the descriptor or throws with the errno text.
    public static func connectBlocking(_ address: SocketAddress, timeoutSeconds: Int) throws(SystemError) -> Int32 {
        let fd = Glibc.socket(address.family, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError("socket", code: errno) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var storage = address.storage
        let result = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, address.length) }
        }
        if result != 0 {
            let code = errno
            Glibc.close(fd)
            throw SystemError("connect \(address)", code: code)
        }
        return fd
    }

    /// Waits up to `timeoutMs` for `fd` to be readable (background threads only).
    public static func waitReadable(_ fd: Int32, timeoutMs: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, timeoutMs) > 0
    }

    /// Makes a socket blocking with send/receive timeouts (background threads only).
    public static func makeBlocking(_ fd: Int32, timeoutSeconds: Int) {
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    // MARK: child processes

    /// Runs a program to completion, blocking (command-line tools only, never an event loop):
    /// `arguments[0]` is looked up in `PATH` (posix_spawnp), `input` is written to its stdin,
    /// which is then closed, and its stdout and stderr are collected (each up to `outputLimit`
    /// bytes; the rest is read and dropped so the child never blocks on a full pipe). The child
    /// gets this process's environment, the default SIGPIPE disposition and an empty signal
    /// mask. A child that exits without reading all of `input` is not an error here, but the
    /// caller must ignore SIGPIPE (`ignoreSIGPIPE`) or that write would kill the caller.
    /// Throws when the program cannot be started (the errno text names why, e.g. ENOENT).
    public static func runProcess(_ arguments: [String], input: [UInt8] = [],
                                  outputLimit: Int = 1 << 20) throws(SystemError) -> ProcessResult {
        precondition(!arguments.isEmpty, "runProcess needs a program name")
        var stdinPipe: [Int32] = [-1, -1], stdoutPipe: [Int32] = [-1, -1], stderrPipe: [Int32] = [-1, -1]
        func closeAll() { for fd in stdinPipe + stdoutPipe + stderrPipe where fd >= 0 { Glibc.close(fd) } }
        for index in 0..<3 {
            var fds: [Int32] = [-1, -1]
            if pipe2(&fds, O_CLOEXEC) != 0 {
                let code = errno
                closeAll()
                throw SystemError("pipe2", code: code)
            }
            switch index {
            case 0: stdinPipe = fds
            case 1: stdoutPipe = fds
            default: stderrPipe = fds
            }
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 clears close-on-exec on the copies; the originals all close at exec.
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawnp(&pid, arguments[0], &actions, &attributes, argv, environ)
        // The child's ends belong to the child now (or to nobody, on failure).
        Glibc.close(stdinPipe[0]); stdinPipe[0] = -1
        Glibc.close(stdoutPipe[1]); stdoutPipe[1] = -1
        Glibc.close(stderrPipe[1]); stderrPipe[1] = -1
        if spawned != 0 {
            closeAll()
            throw SystemError(arguments[0], code: spawned)
        }

        // Feed stdin and drain stdout/stderr together, so neither side waits on a full pipe.
        var writeFD = stdinPipe[1], outFD = stdoutPipe[0], errFD = stderrPipe[0]
        stdinPipe[1] = -1; stdoutPipe[0] = -1; stderrPipe[0] = -1
        if input.isEmpty { Glibc.close(writeFD); writeFD = -1 }
        for fd in [writeFD, outFD, errFD] where fd >= 0 { setNonBlocking(fd) }
        var result = ProcessResult()
        var written = 0
        var chunk = [UInt8](repeating: 0, count: 16384)
        while writeFD >= 0 || outFD >= 0 || errFD >= 0 {
            var entries = [
                pollfd(fd: writeFD, events: Int16(POLLOUT), revents: 0),
                pollfd(fd: outFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: errFD, events: Int16(POLLIN), revents: 0),
            ]  // negative descriptors are ignored by poll
            let ready = poll(&entries, 3, -1)
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            if writeFD >= 0, entries[0].revents != 0 {
                let count = input.withUnsafeBytes { raw in
                    retryingEINTR { Glibc.write(writeFD, raw.baseAddress! + written, raw.count - written) }
                }
                if count > 0 { written += count }
                // Done, or the child closed its stdin (EPIPE): either way no more input.
                if written == input.count || (count < 0 && count != wouldBlock) {
                    Glibc.close(writeFD); writeFD = -1
                }
            }
            for (slot, isOut) in [(1, true), (2, false)] where entries[slot].revents != 0 {
                let fd = isOut ? outFD : errFD
                let count = chunk.withUnsafeMutableBytes { raw in retryingEINTR { Glibc.read(fd, raw.baseAddress, raw.count) } }
                if count > 0 {
                    if isOut {
                        result.stdout.append(contentsOf: chunk[0..<min(count, max(0, outputLimit - result.stdout.count))])
                    } else {
                        result.stderr.append(contentsOf: chunk[0..<min(count, max(0, outputLimit - result.stderr.count))])
                    }
                } else if count == 0 || count != wouldBlock {
                    Glibc.close(fd)
                    if isOut { outFD = -1 } else { errFD = -1 }
                }
            }
        }
        for fd in [writeFD, outFD, errFD] where fd >= 0 { Glibc.close(fd) }

        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { throw SystemError("waitpid \(arguments[0])", code: errno) }
        }
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import (they are macros).
        if status & 0x7f == 0 {
            result.exitStatus = (status >> 8) & 0xff
        } else {
            result.signal = status & 0x7f
        }
        return result
    }

    public static func raiseFileLimit() {
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        }
    }
}

/// How a child process ended, and what it wrote.
public struct ProcessResult: Sendable, Equatable {
    /// The exit status when it exited; nil when a signal ended it.
    public var exitStatus: Int32? = nil
    /// The signal that ended it, if one did.
    public var signal: Int32? = nil
    public var stdout: [UInt8] = []
    public var stderr: [UInt8] = []

    public init() {}

    /// Exited with status 0.
    public var succeeded: Bool { exitStatus == 0 }

    /// "exit status N" or "killed by signal N (NAME)".
    public var statusDescription: String {
        if let exitStatus { return "exit status \(exitStatus)" }
        let number = signal ?? 0
        if let name = strsignal(number) { return "killed by signal \(number) (\(String(cString: name)))" }
        return "killed by signal \(number)"
    }
}
