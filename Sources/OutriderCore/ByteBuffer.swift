/// A fixed-capacity byte buffer with a read and a write index. Owned by one thread at a time;
/// buffers come from a `BufferPool` and go back to it, so the data path never allocates.
public final class ByteBuffer: FreeListNode, @unchecked Sendable {
    public let base: UnsafeMutablePointer<UInt8>
    public let capacity: Int
    public var readerIndex: Int = 0
    public var writerIndex: Int = 0
    /// The next buffer on its pool's free list (the list holds the reference); nil in use.
    public var nextFree: Unmanaged<ByteBuffer>?

    public init(capacity: Int) {
        self.capacity = capacity
        self.base = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
    }

    deinit { base.deallocate() }

    @inlinable @inline(__always) public var readableBytes: Int { writerIndex - readerIndex }
    @inlinable @inline(__always) public var writableBytes: Int { capacity - writerIndex }
    @inlinable @inline(__always) public var isEmpty: Bool { writerIndex == readerIndex }
    @inlinable @inline(__always) public var readPointer: UnsafeMutablePointer<UInt8> { base + readerIndex }
    @inlinable @inline(__always) public var writePointer: UnsafeMutablePointer<UInt8> { base + writerIndex }

    @inlinable @inline(__always) public func clear() { readerIndex = 0; writerIndex = 0 }

    /// Moves unread bytes to the front so the free space is contiguous at the end.
    public func compact() {
        if readerIndex == 0 { return }
        let count = readableBytes
        if count > 0 { (base).update(from: base + readerIndex, count: count) }
        readerIndex = 0
        writerIndex = count
    }

    @inlinable @inline(__always) public func consume(_ count: Int) {
        readerIndex += count
        if readerIndex == writerIndex { readerIndex = 0; writerIndex = 0 }
    }

    @inlinable @inline(__always) public subscript(offset: Int) -> UInt8 { base[offset] }

    // MARK: appending — callers check `writableBytes` first where overflow is possible;
    // these return false instead of writing past the end.

    @discardableResult @inlinable @inline(__always)
    public func append(_ byte: UInt8) -> Bool {
        guard writerIndex < capacity else { return false }
        base[writerIndex] = byte
        writerIndex += 1
        return true
    }

    @discardableResult @inlinable @inline(__always)
    public func append(_ pointer: UnsafePointer<UInt8>, count: Int) -> Bool {
        guard count <= writableBytes else { return false }
        (base + writerIndex).update(from: pointer, count: count)
        writerIndex += count
        return true
    }

    @discardableResult @inlinable @inline(__always)
    public func append(_ text: StaticString) -> Bool {
        append(text.utf8Start, count: text.utf8CodeUnitCount)
    }

    @discardableResult
    public func append(_ bytes: ByteString) -> Bool {
        bytes.withPointer { append($0, count: $1) }
    }

    /// Appends `count` bytes starting at `offset` of `other` (a view into another buffer).
    @discardableResult
    public func append(from other: ByteBuffer, offset: Int, count: Int) -> Bool {
        append(UnsafePointer(other.base + offset), count: count)
    }

    @discardableResult
    public func appendDecimal(_ value: Int64) -> Bool {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var remaining = value.magnitude
        var count = 0
        withUnsafeMutableBytes(of: &digits) { raw in
            repeat {
                raw[19 - count] = UInt8(truncatingIfNeeded: remaining % 10) &+ 0x30
                remaining /= 10
                count += 1
            } while remaining > 0
        }
        if value < 0 { guard append(UInt8(ascii: "-")) else { return false } }
        return withUnsafeBytes(of: &digits) { raw in
            append(raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + (20 - count), count: count)
        }
    }

    @discardableResult
    public func appendHex(_ value: UInt64) -> Bool {
        let hexDigits: StaticString = "0123456789abcdef"
        var shift = 60
        while shift > 0 && (value >> UInt64(shift)) & 0xF == 0 { shift -= 4 }
        guard writableBytes >= shift / 4 + 1 else { return false }
        while shift >= 0 {
            base[writerIndex] = hexDigits.utf8Start[Int((value >> UInt64(shift)) & 0xF)]
            writerIndex += 1
            shift -= 4
        }
        return true
    }

    /// Copies the readable bytes into a new array (tests and diagnostics only).
    public func readableArray() -> [UInt8] {
        Array(UnsafeBufferPointer(start: readPointer, count: readableBytes))
    }
}

/// Buffers of one size, recycled by one thread. `maxRetained` bounds the memory an idle
/// worker keeps after a burst.
public final class BufferPool {
    public let bufferCapacity: Int
    public let maxRetained: Int
    @usableFromInline var free = IntrusiveFreeList<ByteBuffer>()
    public var outstanding = 0

    public init(bufferCapacity: Int, maxRetained: Int) {
        self.bufferCapacity = bufferCapacity
        self.maxRetained = maxRetained
    }

    deinit { free.removeAll() }

    @inlinable @inline(__always)
    public func acquire() -> ByteBuffer {
        outstanding += 1
        return free.pop() ?? ByteBuffer(capacity: bufferCapacity)
    }

    @inlinable @inline(__always)
    public func release(_ buffer: consuming ByteBuffer) {
        outstanding -= 1
        buffer.clear()
        if free.count < maxRetained { free.push(buffer) }
    }

    public var retainedCount: Int { free.count }

    /// Frees the buffers unused since the last call (see `IntrusiveFreeList.dropUnused`).
    @discardableResult
    public func trimUnused(keeping floor: Int) -> Int { free.dropUnused(keeping: floor) }
}

/// An object that can wait on an `IntrusiveFreeList`.
public protocol FreeListNode: AnyObject {
    var nextFree: Unmanaged<Self>? { get set }
}

/// A stack of free objects linked through the objects themselves. The list holds one reference
/// per object (handed over by `pop`), so neither end touches an array's uniqueness check or
/// bounds: the pools of the request path take and return several objects per request.
public struct IntrusiveFreeList<Node: FreeListNode> {
    @usableFromInline var head: Unmanaged<Node>?
    public var count: Int { storedCount }
    @usableFromInline var storedCount = 0
    /// The fewest objects the list held since the last `dropUnused`: that many were not
    /// needed during the whole interval.
    @usableFromInline var lowWater = 0

    public init() {}

    @inlinable @inline(__always)
    public mutating func pop() -> Node? {
        guard let top = head else { return nil }
        let node = top.takeRetainedValue()
        head = node.nextFree
        node.nextFree = nil
        storedCount -= 1
        if storedCount < lowWater { lowWater = storedCount }
        return node
    }

    @inlinable @inline(__always)
    public mutating func push(_ node: consuming Node) {
        node.nextFree = head
        head = Unmanaged.passRetained(node)
        storedCount += 1
    }

    /// Releases the objects no one took since the last call, down to `floor` kept: after a
    /// burst, an idle pool gives its memory back one interval later. Returns how many went.
    @discardableResult
    public mutating func dropUnused(keeping floor: Int) -> Int {
        var surplus = min(lowWater, storedCount - floor)
        var dropped = 0
        while surplus > 0, let top = head {
            head = top.takeUnretainedValue().nextFree
            top.takeUnretainedValue().nextFree = nil
            top.release()
            storedCount -= 1
            surplus -= 1
            dropped += 1
        }
        lowWater = storedCount
        return dropped
    }

    /// Releases every object on the list (their owner is going away).
    public mutating func removeAll() {
        while let top = head {
            head = top.takeUnretainedValue().nextFree
            top.release()
        }
        storedCount = 0
    }
}
