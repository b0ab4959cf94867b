import OutriderCore

/// Normalizes an origin-form request target (SPEC §2 "Routing"): unreserved percent-escapes
/// decoded, other escapes kept with upper-case hex, repeated slashes merged, dot-segments
/// resolved. Refused: `%2F`, `%5C`, a raw `\`, a `#`, a malformed escape, dot-segments
/// that climb above the root, and `.;`/`..;` segments (dot-segments to servers that strip
/// path parameters). The query is copied as it came.
public enum PathNormalizer {
    public struct Result: Equatable, Sendable {
        /// Bytes of the normalized path at the start of what was written.
        public var pathLength: Int
        /// Bytes of the query including its "?", following the path; 0 when none.
        public var queryLength: Int
    }

    /// Writes the normalized target at `output.writerIndex`; nil when refused. `output` needs
    /// `count + 1` writable bytes (normalizing never lengthens a path).
    public static func normalize(_ target: UnsafePointer<UInt8>, _ count: Int, into output: ByteBuffer) -> Result? {
        guard count > 0, target[0] == UInt8(ascii: "/"), output.writableBytes > count else { return nil }
        let out = output.writePointer
        var written = 1
        out[0] = UInt8(ascii: "/")
        var index = 1
        var pathEnd = count
        for position in 0..<count where target[position] == UInt8(ascii: "?") { pathEnd = position; break }

        while index <= pathEnd {
            // One raw segment: target[index..<segmentEnd].
            var segmentEnd = index
            while segmentEnd < pathEnd && target[segmentEnd] != UInt8(ascii: "/") { segmentEnd += 1 }
            let isLast = segmentEnd >= pathEnd
            let segmentStart = written
            var cursor = index
            while cursor < segmentEnd {
                let byte = target[cursor]
                if byte == UInt8(ascii: "%") {
                    guard cursor + 2 < segmentEnd,
                          let high = hexValue(target[cursor + 1]), let low = hexValue(target[cursor + 2]) else { return nil }
                    let decoded = high << 4 | low
                    if decoded == UInt8(ascii: "/") || decoded == UInt8(ascii: "\\") { return nil }
                    if isUnreserved(decoded) {
                        out[written] = decoded
                        written += 1
                    } else {
                        out[written] = UInt8(ascii: "%")
                        out[written + 1] = upperHex(high)
                        out[written + 2] = upperHex(low)
                        written += 3
                    }
                    cursor += 3
                } else {
                    if byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "#") { return nil }
                    out[written] = byte
                    written += 1
                    cursor += 1
                }
            }
            let segmentLength = written - segmentStart
            // "..;x" and ".;x" are dot-segments to servers that strip path parameters (Tomcat,
            // Jetty): ambiguous, so refused.
            if segmentLength >= 2 && out[segmentStart] == UInt8(ascii: ".") {
                let second = out[segmentStart + 1]
                if second == UInt8(ascii: ";") { return nil }
                if segmentLength >= 3 && second == UInt8(ascii: ".") && out[segmentStart + 2] == UInt8(ascii: ";") { return nil }
            }
            if segmentLength == 1 && out[segmentStart] == UInt8(ascii: ".") {
                written = segmentStart
            } else if segmentLength == 2 && out[segmentStart] == UInt8(ascii: ".") && out[segmentStart + 1] == UInt8(ascii: ".") {
                written = segmentStart
                // Drop the previous segment; `out` ends with "/" here.
                guard written > 1 else { return nil }
                var back = written - 2
                while back > 0 && out[back] != UInt8(ascii: "/") { back -= 1 }
                written = back + 1
            } else if segmentLength > 0 && !isLast {
                out[written] = UInt8(ascii: "/")
                written += 1
            }
            index = segmentEnd + 1
        }

        let pathLength = written
        var queryLength = 0
        if pathEnd < count {
            for position in pathEnd..<count {
                if target[position] == UInt8(ascii: "#") { return nil }
                out[written] = target[position]
                written += 1
            }
            queryLength = count - pathEnd
        }
        output.writerIndex += written
        return Result(pathLength: pathLength, queryLength: queryLength)
    }

    @inline(__always)
    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "_"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    @inline(__always)
    static func upperHex(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? nibble + UInt8(ascii: "0") : nibble - 10 + UInt8(ascii: "A")
    }
}
