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

@Suite struct EventLoopProbationTests {
    /// Both become readable in one turn, the new one first: the established one runs first.
    @Test func establishedHandlersRunFirst() throws {
        let loop = try EventLoop()
        let journal = Journal()
        let fresh = RecordingHandler("new", journal, loop)
        fresh.probationEndsAt = .max
        fresh.stopsLoop = true
        let established = RecordingHandler("established", journal, loop)
        let freshFD = try Sys.eventFD(), establishedFD = try Sys.eventFD()
        defer { Sys.close(freshFD); Sys.close(establishedFD) }
        #expect(loop.register(freshFD, fresh, events: Epoll.input | Epoll.edgeTriggered) >= 0)
        #expect(loop.register(establishedFD, established, events: Epoll.input | Epoll.edgeTriggered) >= 0)
        Sys.eventFDSignal(freshFD)
        Sys.eventFDSignal(establishedFD)
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
        var handlers: [RecordingHandler] = []
        var fds: [Int32] = []
        defer { for fd in fds { Sys.close(fd) } }
        for index in 1...3 {
            let handler = RecordingHandler("p\(index)", journal, loop)
            handler.probationEndsAt = .max
            handler.busyNanoseconds = 150_000
            handler.stopsLoop = index == 3
            let fd = try Sys.eventFD()
            fds.append(fd)
            #expect(loop.register(fd, handler, events: Epoll.input | Epoll.edgeTriggered) >= 0)
            handlers.append(handler)
        }
        for fd in fds { Sys.eventFDSignal(fd) }
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
        let freshFD = try Sys.eventFD(), formerFD = try Sys.eventFD()
        defer { Sys.close(freshFD); Sys.close(formerFD) }
        #expect(loop.register(freshFD, fresh, events: Epoll.input | Epoll.edgeTriggered) >= 0)
        #expect(loop.register(formerFD, former, events: Epoll.input | Epoll.edgeTriggered) >= 0)
        Sys.eventFDSignal(freshFD)
        Sys.eventFDSignal(formerFD)
        loop.run()
        #expect(journal.entries == ["former", "new"])
    }
}
