import CFuzzerShim
import OutriderCore
import OutriderHTTP1

// libFuzzer target for OutriderHTTP1.PathNormalizer.normalize (SPEC §2 "Routing"), on any bytes
// (the request parser only lets target bytes through; the normalizer must not rely on it).
// The input is the target, in an allocation of exactly its size (libFuzzer's copy), so ASan
// catches a read past its end. The output buffer already holds a few bytes (the first byte of
// the input, mod 8), which must stay as they were: the normalizer writes at the writer index.
// Invariants, any failure a `precondition` (a crash libFuzzer keeps):
// - refused (nil) ⇔ a reference normalizer written plainly below refuses too; when accepted,
//   the output is byte for byte the reference's;
// - a refusal writes nothing (the writer index stays);
// - the path starts with "/", has no "." or ".." segment (no "/./", "/../", no trailing "/."
//   or "/.."), no empty segment but a trailing one, no "\", "#" or "?", no encoded slash or
//   backslash (%2F, %5C in any case), escapes in upper-case hex, no unreserved byte encoded;
// - the query (from the first "?") is copied as it came; the output is never longer;
// - normalizing the output again gives the same bytes (idempotence).
//
// This lives outside main.swift on purpose: closures in main.swift top-level code are
// main-actor isolated and trap when C calls them (DESIGN §5).

/// Hands the command line to libFuzzer (or to CFuzzerShim's replaying fallback). The callback is
/// referenced in the file that defines it: referencing a `@_cdecl` function as a C function
/// pointer from another file emits a second definition of its symbol.
func runFuzzDriver() -> Int32 {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let target = UnsafeBufferPointer(start: data, count: size)
    let prefix = Int(data[0] % 8)

    let result = normalized(target, prefix: prefix)
    let expected = referenceNormalize(Array(target))
    switch (result, expected) {
    case (nil, nil):
        return 0
    case (nil, let expected?):
        preconditionFailure("refused a target the reference accepts as \(text(expected))")
    case (let result?, nil):
        preconditionFailure("accepted \(text(result.path + result.query)), the reference refuses it")
    case (let result?, let expected?):
        precondition(result.path + result.query == expected,
                     "normalized to \(text(result.path + result.query)), the reference to \(text(expected))")
        checkClean(target, path: result.path, query: result.query)
        let again = (result.path + result.query).withUnsafeBufferPointer { normalized($0, prefix: 0) }
        precondition(again != nil && again!.path == result.path && again!.query == result.query,
                     "normalizing twice changes the result")
    }
    return 0
}

func text(_ bytes: [UInt8]) -> String { "\"" + String(decoding: bytes, as: UTF8.self) + "\"" }

/// The normalizer's output split in path and query, nil when refused. `prefix` bytes are in the
/// output buffer before the call.
func normalized(_ target: UnsafeBufferPointer<UInt8>, prefix: Int) -> (path: [UInt8], query: [UInt8])? {
    let output = ByteBuffer(capacity: prefix + target.count + 1)
    for index in 0..<prefix { output.append(UInt8(0xA0 + index)) }
    let result = target.isEmpty ? nil : PathNormalizer.normalize(target.baseAddress!, target.count, into: output)
    for index in 0..<prefix { precondition(output.base[index] == UInt8(0xA0 + index), "bytes before the writer index changed") }
    guard let result else {
        precondition(output.writerIndex == prefix, "a refused target advanced the output")
        return nil
    }
    precondition(result.pathLength > 0 && result.queryLength >= 0)
    precondition(output.writerIndex == prefix + result.pathLength + result.queryLength, "lengths and writer index disagree")
    precondition(result.pathLength + result.queryLength <= target.count, "normalizing lengthened the target")
    let written = Array(UnsafeBufferPointer(start: output.base + prefix, count: output.writerIndex - prefix))
    return (Array(written[0..<result.pathLength]), Array(written[result.pathLength...]))
}

func checkClean(_ target: UnsafeBufferPointer<UInt8>, path: [UInt8], query: [UInt8]) {
    if let questionMark = target.firstIndex(of: UInt8(ascii: "?")) {
        precondition(query == Array(target[questionMark...]), "query changed")
    } else {
        precondition(query.isEmpty, "a query out of nowhere")
    }
    precondition(path.first == UInt8(ascii: "/"), "path does not start with /")
    var segmentStart = 1
    for index in 1...path.count where index == path.count || path[index] == UInt8(ascii: "/") {
        let segment = path[segmentStart..<index]
        precondition(!segment.isEmpty || index == path.count, "empty segment")
        precondition(!segment.elementsEqual([0x2E]) && !segment.elementsEqual([0x2E, 0x2E]), "dot segment left")
        segmentStart = index + 1
    }
    for (position, byte) in path.enumerated() {
        precondition(byte != UInt8(ascii: "\\") && byte != UInt8(ascii: "#") && byte != UInt8(ascii: "?"),
                     "\\, # or ? in the path")
        guard byte == UInt8(ascii: "%") else { continue }
        precondition(position + 2 < path.count, "truncated escape")
        guard let high = upperHexValue(path[position + 1]), let low = upperHexValue(path[position + 2]) else {
            preconditionFailure("escape not in upper-case hex")
        }
        let decoded = high << 4 | low
        precondition(decoded != UInt8(ascii: "/") && decoded != UInt8(ascii: "\\"), "encoded slash passed")
        precondition(!isUnreserved(decoded), "unreserved byte left encoded")
    }
}

func upperHexValue(_ digit: UInt8) -> UInt8? {
    switch digit {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - 0x30
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - 0x37
    default: return nil
    }
}

func anyHexValue(_ digit: UInt8) -> UInt8? {
    switch digit {
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - 0x57
    default: return upperHexValue(digit)
    }
}

func isUnreserved(_ byte: UInt8) -> Bool {
    (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
        || byte == 0x2D || byte == 0x2E || byte == 0x5F || byte == 0x7E
}

/// The normalization SPEC §2 describes, written for clarity rather than speed: split the path
/// at "/", decode each segment's escapes (unreserved bytes decoded, others kept in upper-case
/// hex; %2F, %5C, a raw "\" or "#" and malformed escapes refused), refuse ".;" / "..;" segments,
/// drop "." and empty segments, let ".." remove the segment before it (refused at the root),
/// keep a trailing "/" when the last segment was empty, "." or "..", and copy the query.
func referenceNormalize(_ target: [UInt8]) -> [UInt8]? {
    guard target.first == UInt8(ascii: "/") else { return nil }
    let pathEnd = target.firstIndex(of: UInt8(ascii: "?")) ?? target.count
    let query = target[pathEnd...]
    if query.contains(UInt8(ascii: "#")) { return nil }
    let raw = target[1..<pathEnd].split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
    var stack: [[UInt8]] = []
    var trailingSlash = false
    for (index, rawSegment) in raw.enumerated() {
        let isLast = index == raw.count - 1
        var segment: [UInt8] = []
        var cursor = rawSegment.startIndex
        while cursor < rawSegment.endIndex {
            let byte = rawSegment[cursor]
            if byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "#") { return nil }
            if byte != UInt8(ascii: "%") {
                segment.append(byte)
                cursor += 1
                continue
            }
            guard cursor + 2 < rawSegment.endIndex, let high = anyHexValue(rawSegment[cursor + 1]),
                  let low = anyHexValue(rawSegment[cursor + 2]) else { return nil }
            let decoded = high << 4 | low
            if decoded == UInt8(ascii: "/") || decoded == UInt8(ascii: "\\") { return nil }
            if isUnreserved(decoded) {
                segment.append(decoded)
            } else {
                let digits = Array("0123456789ABCDEF".utf8)
                segment += [UInt8(ascii: "%"), digits[Int(high)], digits[Int(low)]]
            }
            cursor += 3
        }
        if segment.starts(with: [0x2E, 0x3B]) || segment.starts(with: [0x2E, 0x2E, 0x3B]) { return nil }
        if segment == [0x2E] || segment.isEmpty {
            if isLast { trailingSlash = true }
        } else if segment == [0x2E, 0x2E] {
            guard !stack.isEmpty else { return nil }
            stack.removeLast()
            if isLast { trailingSlash = true }
        } else {
            stack.append(segment)
        }
    }
    var path: [UInt8] = [UInt8(ascii: "/")]
    for (index, segment) in stack.enumerated() {
        if index > 0 { path.append(UInt8(ascii: "/")) }
        path += segment
    }
    if trailingSlash && !stack.isEmpty { path.append(UInt8(ascii: "/")) }
    return path + query
}
