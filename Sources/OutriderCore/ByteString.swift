/// An immutable byte string built once (config load) and compared on the data path without
/// allocation. Wraps a contiguous array so comparisons are plain memory loops.
public struct ByteString: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(_ text: String) { bytes = Array(text.utf8) }
    public init(bytes: [UInt8]) { self.bytes = bytes }
    public init(lowercased text: String) { bytes = Array(text.utf8).map(asciiLowercase) }

    public var count: Int { bytes.count }
    public var isEmpty: Bool { bytes.isEmpty }
    public var description: String { String(decoding: bytes, as: UTF8.self) }

    @inline(__always)
    public func withPointer<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        bytes.withUnsafeBufferPointer { body($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
    }

    /// Exact byte equality with a region.
    @inline(__always)
    public func equals(_ pointer: UnsafePointer<UInt8>, count: Int) -> Bool {
        guard count == bytes.count else { return false }
        return withPointer { own, _ in memoryEquals(own, pointer, count) }
    }

    /// ASCII case-insensitive equality; `self` must already be lower-case.
    @inline(__always)
    public func equalsIgnoringCase(_ pointer: UnsafePointer<UInt8>, count: Int) -> Bool {
        guard count == bytes.count else { return false }
        return withPointer { own, _ in
            for index in 0..<count where asciiLowercase(pointer[index]) != own[index] { return false }
            return true
        }
    }
}

@inlinable @inline(__always)
public func asciiLowercase(_ byte: UInt8) -> UInt8 {
    (byte &- 0x41) < 26 ? byte | 0x20 : byte
}

@inlinable @inline(__always)
public func memoryEquals(_ lhs: UnsafePointer<UInt8>, _ rhs: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    var index = 0
    while index < count {
        if lhs[index] != rhs[index] { return false }
        index += 1
    }
    return true
}

/// Case-insensitive comparison of a region with a lower-case static string.
@inlinable @inline(__always)
public func equalsLowercase(_ pointer: UnsafePointer<UInt8>, _ count: Int, _ lower: StaticString) -> Bool {
    guard count == lower.utf8CodeUnitCount else { return false }
    let own = lower.utf8Start
    for index in 0..<count where asciiLowercase(pointer[index]) != own[index] { return false }
    return true
}

/// Exact comparison of a region with a static string: 8 bytes at a time, inline (the names
/// and methods compared are short; a memcmp call costs more than the comparison).
@inlinable @inline(__always)
public func equalsBytes(_ pointer: UnsafePointer<UInt8>, _ count: Int, _ text: StaticString) -> Bool {
    guard count == text.utf8CodeUnitCount else { return false }
    let region = UnsafeRawPointer(pointer), own = UnsafeRawPointer(text.utf8Start)
    var index = 0
    while count - index >= 8 {
        if region.loadUnaligned(fromByteOffset: index, as: UInt64.self) != own.loadUnaligned(fromByteOffset: index, as: UInt64.self) {
            return false
        }
        index += 8
    }
    while index < count {
        if pointer[index] != text.utf8Start[index] { return false }
        index += 1
    }
    return true
}
