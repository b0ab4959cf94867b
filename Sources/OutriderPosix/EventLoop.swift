import CLinux
import Glibc
import OutriderCore

/// Something registered with an `EventLoop`: a socket's readiness and, optionally, one
/// deadline. Subclassed (vtable dispatch, no existential boxes on the hot path).
open class LoopHandler {
    /// Slot in the loop's table; -1 when not registered.
    public final var slot: Int32 = -1
    public final var generation: UInt32 = 0
    /// Monotonic nanoseconds at which `deadlineReached` runs; 0 = none.
    public final var deadline: Int64 = 0
    /// The wheel tick of this handler's earliest queued wheel entry; 0 = none.
    final var wheelTick: Int64 = 0
    /// Until this monotonic time the handler's events wait until the established handlers'
    /// events of the same turn have run, and share a time budget per turn (new connections,
    /// listeners): a flood of new connections cannot make the loop's turns long for the
    /// clients already there. 0 = established.
    public final var probationEndsAt: Int64 = 0

    public init() {}

    /// Called with the epoll event mask.
    open func handleEvents(_ events: UInt32) {}
    /// Called once `deadline` has passed.
    open func deadlineReached(now: Int64) {}
}

public struct Epoll {
    public static let input = EPOLLIN.rawValue
    public static let output = EPOLLOUT.rawValue
    public static let readHangup = EPOLLRDHUP.rawValue
    public static let hangup = EPOLLHUP.rawValue
    public static let error = EPOLLERR.rawValue
    public static let edgeTriggered = EPOLLET.rawValue
}

/// One epoll loop, owned by one thread. Handlers are registered edge-triggered for both
/// directions once, so interest never has to change (`epoll_ctl` only on add and remove).
/// Deadlines live in a hashed timer wheel that handlers re-arm lazily: moving a deadline later
/// is a field write, not a data-structure operation.
public final class EventLoop {
    public let epollFD: Int32
    private let wakeFD: Int32
    private var handlers: [LoopHandler?] = []
    private var generations: [UInt32] = []
    private var freeSlots: [Int32] = []
    private var events: UnsafeMutablePointer<epoll_event>
    private let maxEvents: Int32 = 256

    /// Cached monotonic time of the current iteration.
    public private(set) var now: Int64

    // Timer wheel: tick ≈ 8.4 ms (2^23 ns), 512 buckets ≈ 4.3 s; later deadlines are
    // re-queued when their bucket comes round.
    private static let tickShift: Int64 = 23
    private static let bucketCount = 512
    private var buckets: [[(slot: Int32, generation: UInt32)]]
    private var spareBucket: [(slot: Int32, generation: UInt32)] = []
    private var processedTick: Int64
    private var wheelEntries = 0
    private var lastIterationHadEvents = false
    /// Events of handlers on probation, in arrival order, not yet handled.
    private var probationEvents: [(slot: Int32, generation: UInt32, events: UInt32)] = []
    /// Time per turn for handlers on probation once the established ones ran; what is left
    /// over waits for the next turn (which then does not block in epoll_wait).
    public var probationBudget: Int64 = 200_000

    // Cross-thread messages.
    private let mailboxLock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var mailbox: [@Sendable () -> Void] = []
    private var running = true

    public init() throws(SystemError) {
        epollFD = try Sys.epollCreate()
        wakeFD = try Sys.eventFD()
        events = .allocate(capacity: Int(maxEvents))
        now = Sys.monotonicNanoseconds()
        processedTick = now >> Self.tickShift
        // Room for a few entries per bucket up front, so steady traffic never grows them.
        var empty: [(slot: Int32, generation: UInt32)] = []
        empty.reserveCapacity(8)
        buckets = (0..<Self.bucketCount).map { _ in
            var bucket: [(slot: Int32, generation: UInt32)] = []
            bucket.reserveCapacity(8)
            return bucket
        }
        spareBucket = empty
        pthread_mutex_init(mailboxLock, nil)
        _ = Sys.epollAdd(epollFD, wakeFD, events: Epoll.input | Epoll.edgeTriggered, data: UInt64.max)
        handlers.reserveCapacity(1024)
        generations.reserveCapacity(1024)
    }

    deinit {
        Sys.close(epollFD)
        Sys.close(wakeFD)
        events.deallocate()
        pthread_mutex_destroy(mailboxLock)
        mailboxLock.deallocate()
    }

    // MARK: registration

    /// Registers `fd` for edge-triggered input and output readiness.
    public func register(_ fd: Int32, _ handler: LoopHandler, events: UInt32 = Epoll.input | Epoll.output | Epoll.readHangup | Epoll.edgeTriggered) -> Int {
        let slot: Int32
        if let reused = freeSlots.popLast() {
            slot = reused
            handlers[Int(slot)] = handler
        } else {
            slot = Int32(handlers.count)
            handlers.append(handler)
            generations.append(1)
        }
        handler.slot = slot
        handler.generation = generations[Int(slot)]
        let data = UInt64(handler.generation) << 32 | UInt64(UInt32(bitPattern: slot))
        let result = Sys.epollAdd(epollFD, fd, events: events, data: data)
        if result < 0 { unregisterSlot(handler) }
        return result
    }

    /// Gives a handler a slot for deadlines only (no descriptor).
    public func attach(_ handler: LoopHandler) {
        if let reused = freeSlots.popLast() {
            handler.slot = reused
            handlers[Int(reused)] = handler
        } else {
            handler.slot = Int32(handlers.count)
            handlers.append(handler)
            generations.append(1)
        }
        handler.generation = generations[Int(handler.slot)]
    }

    /// Gives `old`'s registration (descriptor and slot) to `new`: events for the descriptor go
    /// to `new` from now on, without an epoll_ctl. Neither keeps a deadline.
    public func transfer(_ old: LoopHandler, to new: LoopHandler) {
        guard old.slot >= 0 else { return }
        handlers[Int(old.slot)] = new
        new.slot = old.slot
        new.generation = old.generation
        new.deadline = 0
        new.wheelTick = 0
        new.probationEndsAt = old.probationEndsAt
        old.slot = -1
        old.deadline = 0
        old.wheelTick = 0
    }

    /// Removes the handler; the caller closes the descriptor. Events already fetched for it
    /// are dropped by the generation check.
    public func unregister(_ fd: Int32, _ handler: LoopHandler) {
        guard handler.slot >= 0 else { return }
        Sys.epollDelete(epollFD, fd)
        unregisterSlot(handler)
    }

    /// Forgets the handler without epoll_ctl (the descriptor is about to be closed, which
    /// removes it from the epoll set).
    public func forget(_ handler: LoopHandler) {
        guard handler.slot >= 0 else { return }
        unregisterSlot(handler)
    }

    private func unregisterSlot(_ handler: LoopHandler) {
        let slot = Int(handler.slot)
        handlers[slot] = nil
        generations[slot] &+= 1
        if generations[slot] == 0 { generations[slot] = 1 }
        freeSlots.append(handler.slot)
        handler.slot = -1
        handler.deadline = 0
        handler.wheelTick = 0
    }

    // MARK: deadlines

    /// Sets (or clears with 0) the handler's deadline.
    @inline(__always)
    public func setDeadline(_ handler: LoopHandler, _ deadline: Int64) {
        handler.deadline = deadline
        guard deadline != 0, handler.slot >= 0 else { return }
        let tick = max(deadline >> Self.tickShift, processedTick + 1)
        if handler.wheelTick == 0 || tick < handler.wheelTick { enqueue(handler, tick: tick) }
    }

    private func enqueue(_ handler: LoopHandler, tick: Int64) {
        let clamped = min(tick, processedTick + Int64(Self.bucketCount) - 1)
        handler.wheelTick = clamped
        buckets[Int(clamped & Int64(Self.bucketCount - 1))].append((handler.slot, handler.generation))
        wheelEntries += 1
    }

    private func runDueTimers() {
        let currentTick = now >> Self.tickShift
        var tick = processedTick + 1
        let last = min(currentTick, processedTick + Int64(Self.bucketCount))
        while tick <= last {
            let index = Int(tick & Int64(Self.bucketCount - 1))
            if !buckets[index].isEmpty {
                swap(&spareBucket, &buckets[index])
                processedTick = tick   // so re-queued entries land in later buckets
                for entry in spareBucket {
                    wheelEntries -= 1
                    guard let handler = handlers[Int(entry.slot)], handler.generation == entry.generation,
                          handler.wheelTick == tick else { continue }
                    handler.wheelTick = 0
                    let deadline = handler.deadline
                    if deadline == 0 { continue }
                    if deadline <= now {
                        handler.deadline = 0
                        handler.deadlineReached(now: now)
                    } else {
                        enqueue(handler, tick: max(deadline >> Self.tickShift, tick + 1))
                    }
                }
                spareBucket.removeAll(keepingCapacity: true)
            }
            tick += 1
        }
        processedTick = max(processedTick, currentTick)
    }

    private func epollTimeout() -> Int32 {
        if wheelEntries == 0 { return -1 }
        let nextTick: Int64
        if lastIterationHadEvents {
            nextTick = processedTick + 1
        } else {
            var tick = processedTick + 1
            while tick <= processedTick + Int64(Self.bucketCount),
                  buckets[Int(tick & Int64(Self.bucketCount - 1))].isEmpty { tick += 1 }
            nextTick = tick
        }
        let waitNanos = (nextTick << Self.tickShift) - Sys.monotonicNanoseconds()
        if waitNanos <= 0 { return 0 }
        return Int32(min((waitNanos + 999_999) / 1_000_000, 60_000))
    }

    // MARK: running

    public func run() {
        probationEvents.reserveCapacity(1024)
        while running {
            let count = Sys.epollWait(epollFD, events, maxEvents, probationEvents.isEmpty ? epollTimeout() : 0)
            now = Sys.monotonicNanoseconds()
            lastIterationHadEvents = count > 0
            var index = 0
            while index < count {
                let event = events[index]
                index += 1
                let data = event.data.u64
                if data == UInt64.max { drainMailbox(); continue }
                let slot = Int(UInt32(truncatingIfNeeded: data))
                let generation = UInt32(truncatingIfNeeded: data >> 32)
                guard slot < handlers.count, let handler = handlers[slot], handler.generation == generation else { continue }
                if handler.probationEndsAt > now {
                    probationEvents.append((Int32(slot), generation, event.events))
                    continue
                }
                handler.handleEvents(event.events)
            }
            if !probationEvents.isEmpty { runProbationEvents() }
            runDueTimers()
            runEndOfIteration()
        }
    }

    /// Oldest first, until the turn's budget is spent (at least one each turn).
    private func runProbationEvents() {
        let started = Sys.monotonicNanoseconds()
        var handled = 0
        while handled < probationEvents.count {
            let entry = probationEvents[handled]
            handled += 1
            let slot = Int(entry.slot)
            if slot < handlers.count, let handler = handlers[slot], handler.generation == entry.generation {
                handler.handleEvents(entry.events)
            }
            if Sys.monotonicNanoseconds() - started >= probationBudget { break }
        }
        if handled == probationEvents.count {
            probationEvents.removeAll(keepingCapacity: true)
        } else {
            probationEvents.removeFirst(handled)
        }
    }

    /// Runs after each iteration's events and timers (e.g. flushing batched output).
    public var endOfIterationHook: (() -> Void)?

    private func runEndOfIteration() {
        endOfIterationHook?()
    }

    public func stop() { running = false }

    /// Runs `work` on this loop's thread. Safe from any thread.
    public func post(_ work: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(mailboxLock)
        mailbox.append(work)
        pthread_mutex_unlock(mailboxLock)
        Sys.eventFDSignal(wakeFD)
    }

    private func drainMailbox() {
        Sys.eventFDDrain(wakeFD)
        pthread_mutex_lock(mailboxLock)
        let work = mailbox
        mailbox.removeAll()
        pthread_mutex_unlock(mailboxLock)
        for item in work { item() }
    }
}

extension EventLoop: @unchecked Sendable {}

/// Starts a detached-from-Swift-concurrency OS thread. Kept out of `main.swift` on purpose:
/// closures written there are main-actor isolated and trap when run on another thread.
public final class OSThread: @unchecked Sendable {
    private var handle = pthread_t()
    private let body: () -> Void

    private init(body: @escaping () -> Void) { self.body = body }

    public static func start(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) -> OSThread {
        let thread = OSThread(body: body)
        let context = Unmanaged.passRetained(thread).toOpaque()
        let result = pthread_create(&thread.handle, nil, { raw in
            let thread = Unmanaged<OSThread>.fromOpaque(raw!).takeRetainedValue()
            thread.body()
            return nil
        }, context)
        if result != 0 {
            Unmanaged<OSThread>.fromOpaque(context).release()
            throw SystemError("pthread_create \(name)", code: result)
        }
        _ = clinux_set_thread_name(thread.handle, String(name.prefix(15)))
        return thread
    }

    public func join() { pthread_join(handle, nil) }
}
