// Objects keyed by HTTP/2 stream number, looked up several times per request.

/// A map from positive stream numbers to objects: open addressing with linear probing, keys
/// mixed by one multiplication. A `Dictionary` keyed by `Int32` hashes every lookup with
/// SipHash (tens of instructions per call), and a request looks its stream up half a dozen
/// times on each side of the proxy.
///
/// Value semantics as `Dictionary`'s: iterating walks the table as it was when the loop began,
/// so removing entries inside the loop is safe (the first change copies the table).
public struct StreamTable<Value: AnyObject> {
    /// 0 marks a free slot; stream numbers are positive.
    @usableFromInline var keys: [Int32]
    @usableFromInline var values: [Value?]
    @usableFromInline var shift: UInt32
    @usableFromInline var storedCount = 0

    public var count: Int { storedCount }

    /// Room for 8 streams; the table doubles as more are open at once (and never shrinks).
    public init() {
        let slots = 16
        keys = Array(repeating: 0, count: slots)
        values = Array(repeating: nil, count: slots)
        shift = UInt32(32 - slots.trailingZeroBitCount)
    }

    public var isEmpty: Bool { storedCount == 0 }

    @inlinable @inline(__always)
    func home(_ key: Int32) -> Int {
        Int((UInt32(bitPattern: key) &* 0x9E37_79B1) >> shift)
    }

    /// The slot holding `key`, or -1.
    @inlinable @inline(__always)
    func slot(of key: Int32) -> Int {
        let mask = keys.count - 1
        var index = home(key)
        return keys.withUnsafeBufferPointer { keys in
            while true {
                let found = keys[index]
                if found == key { return index }
                if found == 0 { return -1 }
                index = (index + 1) & mask
            }
        }
    }

    public subscript(key: Int32) -> Value? {
        @inlinable get {
            let index = slot(of: key)
            return index < 0 ? nil : values[index]
        }
        @inlinable set {
            if let newValue { insert(key, newValue) } else { removeValue(forKey: key) }
        }
    }

    @inlinable
    mutating func insert(_ key: Int32, _ value: Value) {
        precondition(key > 0, "stream numbers are positive")
        let existing = slot(of: key)
        if existing >= 0 {
            values[existing] = value
            return
        }
        if (storedCount + 1) * 2 > keys.count { grow() }
        let mask = keys.count - 1
        var index = home(key)
        while keys[index] != 0 { index = (index + 1) & mask }
        keys[index] = key
        values[index] = value
        storedCount += 1
    }

    /// Removes and returns the value for `key` (backward-shift deletion: no tombstones).
    @inlinable @discardableResult
    public mutating func removeValue(forKey key: Int32) -> Value? {
        var hole = slot(of: key)
        guard hole >= 0 else { return nil }
        let removed = values[hole]
        let mask = keys.count - 1
        var index = (hole + 1) & mask
        while keys[index] != 0 {
            let wanted = home(keys[index])
            // The entry at `index` may move into the hole when its home is not in (hole, index].
            let distanceToEntry = (index - wanted) & mask
            let distanceToHole = (index - hole) & mask
            if distanceToEntry >= distanceToHole {
                keys[hole] = keys[index]
                values[hole] = values[index]
                hole = index
            }
            index = (index + 1) & mask
        }
        keys[hole] = 0
        values[hole] = nil
        storedCount -= 1
        return removed
    }

    @inlinable
    public mutating func removeAll() {
        guard storedCount > 0 else { return }
        for index in keys.indices where keys[index] != 0 {
            keys[index] = 0
            values[index] = nil
        }
        storedCount = 0
    }

    @inlinable
    mutating func grow() {
        let oldKeys = keys
        let oldValues = values
        let slots = keys.count * 2
        keys = Array(repeating: 0, count: slots)
        values = Array(repeating: nil, count: slots)
        shift = UInt32(32 - slots.trailingZeroBitCount)
        storedCount = 0
        for index in oldKeys.indices where oldKeys[index] != 0 {
            insert(oldKeys[index], oldValues[index]!)
        }
    }

    /// The values, in table order (allocates: for closing and diagnostics).
    public var allValues: [Value] {
        var result: [Value] = []
        result.reserveCapacity(count)
        for (_, value) in self { result.append(value) }
        return result
    }
}

extension StreamTable: Sequence {
    public struct Iterator: IteratorProtocol {
        @usableFromInline let keys: [Int32]
        @usableFromInline let values: [Value?]
        @usableFromInline var index = 0

        @inlinable init(keys: [Int32], values: [Value?]) {
            self.keys = keys
            self.values = values
        }

        @inlinable
        public mutating func next() -> (key: Int32, value: Value)? {
            while index < keys.count {
                let current = index
                index += 1
                if keys[current] != 0, let value = values[current] { return (keys[current], value) }
            }
            return nil
        }
    }

    @inlinable
    public func makeIterator() -> Iterator { Iterator(keys: keys, values: values) }
}
