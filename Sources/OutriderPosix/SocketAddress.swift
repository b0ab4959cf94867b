import CLinux
import Glibc
import OutriderCore

/// A resolved IPv4 or IPv6 socket address.
public struct SocketAddress: Sendable, CustomStringConvertible {
    public var storage: sockaddr_storage
    public var length: socklen_t

    public init(storage: sockaddr_storage, length: socklen_t) {
        self.storage = storage
        self.length = length
    }

    public var family: Int32 { Int32(storage.ss_family) }

    /// Parses an IP literal (no brackets) and port; nil when `host` is not a literal.
    public static func literal(host: String, port: UInt16) -> SocketAddress? {
        var storage = sockaddr_storage()
        var ipv4 = in_addr()
        if inet_pton(AF_INET, host, &ipv4) == 1 {
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                    pointer.pointee.sin_family = sa_family_t(AF_INET)
                    pointer.pointee.sin_port = port.bigEndian
                    pointer.pointee.sin_addr = ipv4
                }
            }
            return SocketAddress(storage: storage, length: socklen_t(MemoryLayout<sockaddr_in>.size))
        }
        var ipv6 = in6_addr()
        if inet_pton(AF_INET6, host, &ipv6) == 1 {
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                    pointer.pointee.sin6_family = sa_family_t(AF_INET6)
                    pointer.pointee.sin6_port = port.bigEndian
                    pointer.pointee.sin6_addr = ipv6
                }
            }
            return SocketAddress(storage: storage, length: socklen_t(MemoryLayout<sockaddr_in6>.size))
        }
        return nil
    }

    /// Resolves a DNS name with getaddrinfo (blocking: start-up and off-loop only).
    public static func resolve(host: String, port: UInt16) throws(SystemError) -> [SocketAddress] {
        if let literal = literal(host: host, port: port) { return [literal] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &result)
        if status != 0 {
            let text = gai_strerror(status).map { String(cString: $0) } ?? "error \(status)"
            throw SystemError("resolve \(host): \(text)", code: 0)
        }
        defer { freeaddrinfo(result) }
        var addresses: [SocketAddress] = []
        var cursor = result
        while let entry = cursor {
            if let address = entry.pointee.ai_addr {
                var storage = sockaddr_storage()
                withUnsafeMutableBytes(of: &storage) { raw in
                    raw.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(entry.pointee.ai_addrlen)))
                }
                addresses.append(SocketAddress(storage: storage, length: entry.pointee.ai_addrlen))
            }
            cursor = entry.pointee.ai_next
        }
        return addresses
    }

    public var peer: PeerAddress { PeerAddress(self) }
    public var description: String { peer.description }
    /// The IP alone, as text (no port, no brackets).
    public var ipString: String {
        let buffer = ByteBuffer(capacity: 64)
        peer.appendIP(to: buffer)
        return String(decoding: buffer.readableArray(), as: UTF8.self)
    }
}

/// A compact peer address kept per connection (24 bytes, not a 128-byte sockaddr_storage).
public struct PeerAddress: Sendable, CustomStringConvertible {
    public var high: UInt64 = 0
    public var low: UInt64 = 0
    public var port: UInt16 = 0
    public var isIPv6 = false

    public init() {}

    public func sameEndpoint(as other: PeerAddress) -> Bool {
        high == other.high && low == other.low && port == other.port && isIPv6 == other.isIPv6
    }

    public init(_ address: SocketAddress) {
        var storage = address.storage
        withUnsafePointer(to: &storage) { raw in
            if address.family == AF_INET6 {
                raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                    isIPv6 = true
                    port = UInt16(bigEndian: pointer.pointee.sin6_port)
                    withUnsafeBytes(of: pointer.pointee.sin6_addr) { bytes in
                        high = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
                        low = bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                    }
                }
            } else {
                raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                    port = UInt16(bigEndian: pointer.pointee.sin_port)
                    high = UInt64(pointer.pointee.sin_addr.s_addr)
                }
            }
        }
    }

    public init(storage: UnsafePointer<sockaddr_storage>) {
        self.init(SocketAddress(storage: storage.pointee, length: socklen_t(MemoryLayout<sockaddr_storage>.size)))
    }

    /// Writes the IP (no port, no brackets) as text; returns false when it did not fit.
    @discardableResult
    public func appendIP(to buffer: ByteBuffer) -> Bool {
        guard buffer.writableBytes >= 46 else { return false }
        if !isIPv6 {
            // Dotted quad by hand: inet_ntop formats through sprintf, which showed in profiles.
            let address = UInt32(truncatingIfNeeded: high)   // network order in memory
            for index in 0..<4 {
                if index > 0 { buffer.append(UInt8(ascii: ".")) }
                let octet = UInt8(truncatingIfNeeded: address >> (8 * UInt32(index)))
                if octet >= 100 { buffer.append(octet / 100 + 0x30) }
                if octet >= 10 { buffer.append(octet / 10 % 10 + 0x30) }
                buffer.append(octet % 10 + 0x30)
            }
            return true
        }
        var raw = (high, low)   // in network order, as copied out of the sockaddr
        let family = isIPv6 ? AF_INET6 : AF_INET
        let length: Int? = withUnsafePointer(to: &raw) { source in
            buffer.writePointer.withMemoryRebound(to: CChar.self, capacity: 46) { text in
                inet_ntop(family, source, text, 46) == nil ? nil : strlen(text)
            }
        }
        guard let length else { return false }
        buffer.writerIndex += length
        return true
    }

    public var description: String {
        let buffer = ByteBuffer(capacity: 64)
        if isIPv6 { buffer.append(UInt8(ascii: "[")) }
        appendIP(to: buffer)
        if isIPv6 { buffer.append(UInt8(ascii: "]")) }
        buffer.append(UInt8(ascii: ":"))
        buffer.appendDecimal(Int64(port))
        return String(decoding: buffer.readableArray(), as: UTF8.self)
    }
}

public enum Listening {
    /// Opens a non-blocking listening socket with SO_REUSEPORT so each worker can own one.
    public static func open(_ address: SocketAddress, backlog: Int32 = 4096) throws(SystemError) -> Int32 {
        let fd = Sys.socket(family: address.family)
        if fd < 0 { throw SystemError("socket", code: Int32(-fd)) }
        let socketFD = Int32(fd)
        _ = Sys.setOption(socketFD, SOL_SOCKET, SO_REUSEADDR, 1)
        _ = Sys.setOption(socketFD, SOL_SOCKET, SO_REUSEPORT, 1)
        if address.family == AF_INET6 { _ = Sys.setOption(socketFD, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        var result = Sys.bind(socketFD, address)
        if result < 0 { Sys.close(socketFD); throw SystemError("bind \(address)", code: Int32(-result)) }
        result = Sys.listen(socketFD, backlog: backlog)
        if result < 0 { Sys.close(socketFD); throw SystemError("listen \(address)", code: Int32(-result)) }
        return socketFD
    }
}
