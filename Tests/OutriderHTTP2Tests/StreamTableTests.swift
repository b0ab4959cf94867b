import OutriderCore
import Testing

final class Box {
    let id: Int32
    init(_ id: Int32) { self.id = id }
}

/// `StreamTable` against `Dictionary` as the model: the same answers after every operation,
/// with keys from a narrow range so that probes collide, wrap and shift back on removal.
@Suite("StreamTable")
struct StreamTableTests {
    func check(_ table: StreamTable<Box>, _ model: [Int32: Box], keys: ClosedRange<Int32>) {
        #expect(table.count == model.count)
        #expect(table.isEmpty == model.isEmpty)
        for key in keys { #expect(table[key] === model[key], "key \(key)") }
        var seen: [Int32: Box] = [:]
        for (key, value) in table {
            #expect(seen[key] == nil, "key \(key) iterated twice")
            seen[key] = value
        }
        #expect(seen.count == model.count)
        for (key, value) in model { #expect(seen[key] === value) }
    }

    @Test func agreesWithDictionary() {
        for seed in 1...20 {
            var random = SeededRandom(seed: UInt64(seed))
            var table = StreamTable<Box>()
            var model: [Int32: Box] = [:]
            let keys: ClosedRange<Int32> = 1...Int32(8 + seed * 7)
            for _ in 0..<2000 {
                let key = Int32.random(in: keys, using: &random)
                switch Int.random(in: 0..<10, using: &random) {
                case 0..<5:
                    let box = Box(key)
                    table[key] = box
                    model[key] = box
                case 5..<9:
                    #expect(table.removeValue(forKey: key) === model.removeValue(forKey: key))
                default:
                    table[key] = nil
                    model[key] = nil
                }
                #expect(table[key] === model[key])
            }
            check(table, model, keys: keys)
            table.removeAll()
            model.removeAll()
            check(table, model, keys: keys)
        }
    }

    @Test func growsAndKeepsEverything() {
        var table = StreamTable<Box>()
        var model: [Int32: Box] = [:]
        // Client streams are odd and increasing, as on a long connection.
        for key in stride(from: Int32(1), through: 20001, by: 2) {
            let box = Box(key)
            table[key] = box
            model[key] = box
            if key > 401 { model.removeValue(forKey: key - 400); table.removeValue(forKey: key - 400) }
        }
        check(table, model, keys: 1...20001)
    }

    @Test func removingWhileIteratingIsSafe() {
        var table = StreamTable<Box>()
        for key in Int32(1)...200 { table[key] = Box(key) }
        var visited = 0
        for (key, value) in table {
            #expect(value.id == key)
            visited += 1
            table.removeValue(forKey: key)
            table.removeValue(forKey: key % 200 + 1)
        }
        #expect(visited == 200, "the loop walks the table as it was")
        #expect(table.isEmpty)
        #expect(table.allValues.isEmpty)
    }
}
