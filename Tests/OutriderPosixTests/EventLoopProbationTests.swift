// The loop runs established handlers' events before those of handlers on probation (new
// connections, listeners), and gives the latter a time budget per turn.
import OutriderPosix
import Testing

private final class Journal {
    var entries: [String] = []
}

private final class RecordingHandler: LoopHandler {
    let name: String
    let journal: Journal
    unowned let loop: EventLoop
    var busyNanoseconds: Int64 = 0
    var stopsLoop = false

    init(_ name: String, _ journal: Journal, _ loop: EventLoop) {
        self.name = name
        self.journal = journal
        self.loop = loop
    }

    override func handleEvents(_ events: UInt32) {
        journal.entries.append(name)
        let end = Sys.monotonicNanoseconds() + busyNanoseconds
        while Sys.monotonicNanoseconds() < end {}
        if stopsLoop { loop.stop() }
    }
}

/// Registers each handler on an eventfd and makes them readable in this order (the order
/// epoll reports them in); the caller closes the descriptors.
private func makeReadable(_ handlers: [RecordingHandler], on loop: EventLoop) throws -> [Int32] {
    var fds: [Int32] = []
    for handler in handlers {
        let fd = try Sys.eventFD()
        fds.append(fd)
        #expect(loop.register(fd, handler, events: Epoll.input | Epoll.edgeTriggered) >= 0)
    }
    for fd in fds { Sys.eventFDSignal(fd) }
    return fds
}

@Suite struct EventLoopProbationTests {
    /// Both become readable in one turn, the new one first: the established one runs first.
    @Test func establishedHandlersRunFirst() throws {
        let loop = try EventLoop()
        let journal = Journal()
        let fresh = RecordingHandler("new", journal, loop)
        fresh.probationEndsAt = .max
        fresh.stopsLoop = true
        let established = RecordingHandler("established", journal, loop)
        let fds = try makeReadable([fresh, established], on: loop)
        defer { for fd in fds { Sys.close(fd) } }
        loop.run()
        #expect(journal.entries == ["established", "new"])
    }

    /// Three on probation, 150 µs each, a 200 µs budget: two in the first turn (the budget is
    /// looked at after each), the third in the next one, which does not wait for new events.
    @Test func probationWorkBeyondTheBudgetWaitsForTheNextTurn() throws {
        let loop = try EventLoop()
        loop.probationBudget = 200_000
        let journal = Journal()
        loop.endOfIterationHook = { journal.entries.append("|") }
        let handlers = (1...3).map { index in
            let handler = RecordingHandler("p\(index)", journal, loop)
            handler.probationEndsAt = .max
            handler.busyNanoseconds = 150_000
            handler.stopsLoop = index == 3
            return handler
        }
        let fds = try makeReadable(handlers, on: loop)
        defer { for fd in fds { Sys.close(fd) } }
        loop.run()
        #expect(journal.entries == ["p1", "p2", "|", "p3", "|"])
    }

    /// Probation ends with the time set: the handler is then established.
    @Test func probationEndsAtItsTime() throws {
        let loop = try EventLoop()
        let journal = Journal()
        let former = RecordingHandler("former", journal, loop)
        former.probationEndsAt = Sys.monotonicNanoseconds() - 1
        former.stopsLoop = true
        let fresh = RecordingHandler("new", journal, loop)
        fresh.probationEndsAt = .max
        let fds = try makeReadable([fresh, former], on: loop)
        defer { for fd in fds { Sys.close(fd) } }
        loop.run()
        #expect(journal.entries == ["former", "new"])
    }
}
