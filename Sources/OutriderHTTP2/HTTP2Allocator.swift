// nghttp2's small allocations, recycled on the thread that owns the sessions.
import CNGHTTP2
import Glibc

/// A cache of the small blocks nghttp2 allocates and frees for every stream: the stream itself,
/// its outbound frames and the copy of each submitted header list, four `malloc`s and `free`s
/// per request. With a hundred streams in flight they overflow glibc's per-thread cache and
/// take its slow paths (3% of an h2c request's user-space instructions); kept here in five size
/// classes they are a pointer swap each way.
///
/// Single-threaded: give it only to sessions of one thread (a worker's), and keep it alive as
/// long as any of them. `trim` hands cached blocks back to malloc.
public final class HTTP2Allocator {
    /// Usable bytes of each class; a request over the largest goes to malloc as it is.
    static let classSizes = [48, 112, 240, 496, 1008]
    /// Bytes before each block: its class (or -1 for a malloc'd large block) and its usable
    /// size, keeping the 16-byte alignment malloc gives.
    static let headerSize = 16
    /// Blocks kept per class at most (a burst beyond goes back to malloc as it is freed).
    public let maximumCached: Int
    private var freeLists: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private var cachedCounts: UnsafeMutablePointer<Int>
    /// The lowest count of each class since the last `trim`: what sat unused all along.
    private var lowWater: UnsafeMutablePointer<Int>
    /// The table nghttp2 copies into a session (`nghttp2_session_*_new3`).
    let memory: UnsafeMutablePointer<nghttp2_mem>

    public init(maximumCached: Int = 128) {
        self.maximumCached = maximumCached
        let classes = Self.classSizes.count
        freeLists = .allocate(capacity: classes)
        freeLists.initialize(repeating: nil, count: classes)
        cachedCounts = .allocate(capacity: classes)
        cachedCounts.initialize(repeating: 0, count: classes)
        lowWater = .allocate(capacity: classes)
        lowWater.initialize(repeating: 0, count: classes)
        memory = .allocate(capacity: 1)
        memory.initialize(to: nghttp2_mem(mem_user_data: nil, malloc: allocatorMalloc, free: allocatorFree,
                                          calloc: allocatorCalloc, realloc: allocatorRealloc))
        memory.pointee.mem_user_data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        releaseAll()
        memory.deallocate()
        freeLists.deallocate()
        cachedCounts.deallocate()
        lowWater.deallocate()
    }

    /// Blocks in the cache, all classes together.
    public var cachedBlocks: Int {
        var total = 0
        for index in 0..<Self.classSizes.count { total += cachedCounts[index] }
        return total
    }

    @inline(__always) private static func classIndex(_ size: Int) -> Int {
        if size <= 48 { return 0 }
        if size <= 112 { return 1 }
        if size <= 240 { return 2 }
        if size <= 496 { return 3 }
        if size <= 1008 { return 4 }
        return -1
    }

    func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        let index = Self.classIndex(size)
        let base: UnsafeMutableRawPointer
        if index >= 0, let cached = popCached(index) {
            if cachedCounts[index] < lowWater[index] { lowWater[index] = cachedCounts[index] }
            base = cached
        } else {
            let bytes = index >= 0 ? Self.classSizes[index] : size
            guard let fresh = malloc(bytes + Self.headerSize) else { return nil }
            base = fresh
            base.storeBytes(of: index, as: Int.self)
            base.storeBytes(of: bytes, toByteOffset: 8, as: Int.self)
        }
        return base + Self.headerSize
    }

    /// The block (its header's address) on top of class `index`'s free list, taken off it.
    @inline(__always) private func popCached(_ index: Int) -> UnsafeMutableRawPointer? {
        guard let block = freeLists[index] else { return nil }
        freeLists[index] = block.load(fromByteOffset: Self.headerSize, as: UnsafeMutableRawPointer?.self)
        cachedCounts[index] -= 1
        return block
    }

    func release(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        let base = pointer - Self.headerSize
        let index = base.load(as: Int.self)
        guard index >= 0, cachedCounts[index] < maximumCached else {
            free(base)
            return
        }
        base.storeBytes(of: freeLists[index], toByteOffset: Self.headerSize, as: UnsafeMutableRawPointer?.self)
        freeLists[index] = base
        cachedCounts[index] += 1
    }

    func reallocate(_ pointer: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
        guard let pointer else { return allocate(size) }
        let base = pointer - Self.headerSize
        let index = base.load(as: Int.self)
        if index < 0 && Self.classIndex(size) < 0 {
            guard let moved = realloc(base, size + Self.headerSize) else { return nil }
            moved.storeBytes(of: size, toByteOffset: 8, as: Int.self)
            return moved + Self.headerSize
        }
        let usable = base.load(fromByteOffset: 8, as: Int.self)
        if index >= 0 && size <= usable { return pointer }
        guard let fresh = allocate(size) else { return nil }
        fresh.copyMemory(from: pointer, byteCount: min(usable, size))
        release(pointer)
        return fresh
    }

    /// Frees the cached blocks no allocation needed since the last trim (the low-water mark of
    /// each class), keeping `keeping` per class. Returns the bytes freed.
    @discardableResult
    public func trim(keeping: Int) -> Int {
        var freed = 0
        for index in 0..<Self.classSizes.count {
            var excess = min(lowWater[index], cachedCounts[index] - max(0, keeping))
            while excess > 0, let block = popCached(index) {
                free(block)
                freed += Self.classSizes[index] + Self.headerSize
                excess -= 1
            }
            lowWater[index] = cachedCounts[index]
        }
        return freed
    }

    private func releaseAll() {
        for index in 0..<Self.classSizes.count {
            while let block = popCached(index) { free(block) }
            lowWater[index] = 0
        }
    }
}

@inline(__always) private func allocator(_ userData: UnsafeMutableRawPointer?) -> Unmanaged<HTTP2Allocator> {
    Unmanaged<HTTP2Allocator>.fromOpaque(userData!)
}

private let allocatorMalloc: nghttp2_malloc = { size, userData in
    allocator(userData)._withUnsafeGuaranteedRef { $0.allocate(size) }
}

private let allocatorFree: nghttp2_free = { pointer, userData in
    allocator(userData)._withUnsafeGuaranteedRef { $0.release(pointer) }
}

private let allocatorCalloc: nghttp2_calloc = { count, size, userData in
    let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
    guard !overflow, let pointer = allocator(userData)._withUnsafeGuaranteedRef({ $0.allocate(bytes) }) else { return nil }
    pointer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    return pointer
}

private let allocatorRealloc: nghttp2_realloc = { pointer, size, userData in
    allocator(userData)._withUnsafeGuaranteedRef { $0.reallocate(pointer, size) }
}
