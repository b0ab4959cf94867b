// The pools give back what a burst left them once it sat unused for a whole interval.
import OutriderCore
import OutriderHTTP
import Testing

@Suite struct PoolTrimTests {
    @Test func buffersUnusedForAWholeIntervalGoDownToTheFloor() {
        let pool = BufferPool(bufferCapacity: 128, maxRetained: 256)
        // A burst of 100 at once, all returned.
        var burst: [ByteBuffer] = (0..<100).map { _ in pool.acquire() }
        while let buffer = burst.popLast() { pool.release(buffer) }
        #expect(pool.retainedCount == 100)
        // The interval that saw the burst: nothing was unused throughout it (the list started
        // empty), so nothing goes yet.
        #expect(pool.trimUnused(keeping: 8) == 0)
        #expect(pool.retainedCount == 100)
        // A quiet interval with at most 3 in use at once: 97 sat unused, down to the floor.
        var inUse = (0..<3).map { _ in pool.acquire() }
        while let buffer = inUse.popLast() { pool.release(buffer) }
        #expect(pool.trimUnused(keeping: 8) == 92)
        #expect(pool.retainedCount == 8)
        #expect(pool.trimUnused(keeping: 8) == 0)
        #expect(pool.outstanding == 0)
    }

    @Test func aBusyPoolKeepsWhatItUses() {
        let pool = BufferPool(bufferCapacity: 64, maxRetained: 256)
        for _ in 0..<3 {
            var inUse = (0..<40).map { _ in pool.acquire() }
            while let buffer = inUse.popLast() { pool.release(buffer) }
            _ = pool.trimUnused(keeping: 8)
        }
        // Every interval used all 40: none was surplus.
        #expect(pool.retainedCount == 40)
    }

    @Test func headerTablesToo() {
        let pool = HeaderTablePool(tableCapacity: 4, maxRetained: 256)
        var tables = (0..<30).map { _ in pool.acquire() }
        while let table = tables.popLast() { pool.release(table) }
        _ = pool.trimUnused(keeping: 2)
        #expect(pool.trimUnused(keeping: 2) == 28)
        #expect(pool.retainedCount == 2)
    }
}
