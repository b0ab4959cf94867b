import OutriderCore
import OutriderHTTP
import Testing
@testable import OutriderHTTP2

@Suite("HTTP2Allocator")
struct HTTP2AllocatorTests {
    /// Blocks of every class and beyond, reallocated up and down and freed in random order:
    /// each keeps its bytes, none overlaps another (each is filled with its own pattern).
    @Test func blocksKeepTheirBytes() {
        let allocator = HTTP2Allocator(maximumCached: 16)
        var random = SeededRandom(seed: 7)
        var live: [(pointer: UnsafeMutableRawPointer, size: Int, tag: UInt8)] = []
        func fill(_ pointer: UnsafeMutableRawPointer, _ size: Int, _ tag: UInt8) {
            pointer.initializeMemory(as: UInt8.self, repeating: tag, count: size)
        }
        func intact(_ block: (pointer: UnsafeMutableRawPointer, size: Int, tag: UInt8)) -> Bool {
            let bytes = block.pointer.assumingMemoryBound(to: UInt8.self)
            return (0..<block.size).allSatisfy { bytes[$0] == block.tag }
        }
        let sizes = [1, 16, 48, 49, 100, 112, 113, 240, 241, 496, 497, 1008, 1009, 4000]
        for round in 0..<3000 {
            let tag = UInt8(truncatingIfNeeded: round)
            switch Int.random(in: 0..<4, using: &random) {
            case 0, 1:
                let size = sizes.randomElement(using: &random)!
                guard let pointer = allocator.allocate(size) else { Issue.record("allocation failed"); return }
                fill(pointer, size, tag)
                live.append((pointer, size, tag))
            case 2 where !live.isEmpty:
                let index = Int.random(in: 0..<live.count, using: &random)
                let block = live.remove(at: index)
                #expect(intact(block))
                allocator.release(block.pointer)
            case 3 where !live.isEmpty:
                let index = Int.random(in: 0..<live.count, using: &random)
                let block = live[index]
                #expect(intact(block))
                let size = sizes.randomElement(using: &random)!
                guard let moved = allocator.reallocate(block.pointer, size) else { Issue.record("reallocation failed"); return }
                let kept = min(size, block.size)
                let bytes = moved.assumingMemoryBound(to: UInt8.self)
                #expect((0..<kept).allSatisfy { bytes[$0] == block.tag }, "realloc \(block.size) -> \(size) kept the bytes")
                fill(moved, size, tag)
                live[index] = (moved, size, tag)
            default:
                break
            }
            #expect(allocator.cachedBlocks <= 16 * 5)
        }
        for block in live {
            #expect(intact(block))
            allocator.release(block.pointer)
        }
    }

    @Test func trimFreesWhatSatUnused() {
        let allocator = HTTP2Allocator(maximumCached: 100)
        let blocks = (0..<50).map { _ in allocator.allocate(200)! }
        for block in blocks { allocator.release(block) }
        #expect(allocator.cachedBlocks == 50)
        allocator.trim(keeping: 8)   // the first trim sets the low-water mark
        let busy = (0..<10).map { _ in allocator.allocate(200)! }   // 40 stay unused
        for block in busy { allocator.release(block) }
        #expect(allocator.trim(keeping: 8) == 40 * (240 + 16), "what sat unused goes")
        #expect(allocator.cachedBlocks == 10)
        #expect(allocator.trim(keeping: 8) == 2 * (240 + 16), "an idle interval: down to the floor")
        #expect(allocator.cachedBlocks == 8)
    }

    /// Sessions on both sides take their streams' memory from one allocator: many rounds of a
    /// hundred concurrent streams, and the allocator ends with blocks cached for the next.
    @Test func sessionsUseIt() throws {
        let allocator = HTTP2Allocator()
        let client = try HTTP2Session(role: .client, allocator: allocator)
        let server = try HTTP2Session(role: .server, allocator: allocator)
        let clientEvents = Recorder(), serverEvents = Recorder()
        client.delegate = clientEvents
        server.delegate = serverEvents
        defer { withExtendedLifetime((clientEvents, serverEvents)) {} }
        for _ in 0..<5 {
            var streams: [Int32] = []
            for index in 0..<100 {
                streams.append(try client.submitRequest(headers: getRequest("/item/\(index)"), endStream: true))
            }
            pump(client, server)
            for stream in streams {
                try server.submitResponse(stream: stream, headers: block([(":status", "200"), ("x-stream", "\(stream)")]),
                                          endStream: false)
                try server.sendData(stream: stream, Array("body \(stream)".utf8), endStream: true)
            }
            pump(client, server)
            for stream in streams {
                #expect(clientEvents.bodies[stream] == Array("body \(stream)".utf8))
                #expect(clientEvents.heads[stream]?.value("x-stream") == "\(stream)")
            }
            #expect(client.openStreamCount == 0 && server.openStreamCount == 0)
        }
        #expect(allocator.cachedBlocks > 0)
    }
}
