/// A binary min-heap of (time, connection index): the open-loop send times of one thread.
/// Capacity is reserved up front (one entry per connection at most), so pushes never allocate.
struct TimerHeap {
    struct Entry {
        var time: Int64
        var index: Int32
    }

    private(set) var entries: [Entry] = []

    init(capacity: Int) { entries.reserveCapacity(max(1, capacity)) }

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { entries.count }
    var top: Entry? { entries.first }

    mutating func push(_ time: Int64, _ index: Int32) {
        entries.append(Entry(time: time, index: index))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if entries[parent].time <= entries[child].time { break }
            entries.swapAt(parent, child)
            child = parent
        }
    }

    @discardableResult
    mutating func pop() -> Entry? {
        guard let first = entries.first else { return nil }
        let last = entries.removeLast()
        if !entries.isEmpty {
            entries[0] = last
            var parent = 0
            let count = entries.count
            while true {
                let left = 2 * parent + 1
                if left >= count { break }
                var smallest = left
                let right = left + 1
                if right < count && entries[right].time < entries[left].time { smallest = right }
                if entries[parent].time <= entries[smallest].time { break }
                entries.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return first
    }
}
