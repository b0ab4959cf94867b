// Strict base64 and base64url (RFC 4648) for JOSE: no whitespace, no line breaks, and one
// encoding for each byte string (non-canonical trailing bits are refused), so two different
// strings never decode to the same bytes.

/// 0...63 for an alphabet byte, 0xFF for anything else.
private let base64URLTable: [UInt8] = makeTable(url: true)
private let base64StdTable: [UInt8] = makeTable(url: false)

private func makeTable(url: Bool) -> [UInt8] {
    var table = [UInt8](repeating: 0xFF, count: 256)
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
        + (url ? [UInt8(ascii: "-"), UInt8(ascii: "_")] : [UInt8(ascii: "+"), UInt8(ascii: "/")])
    for (value, byte) in alphabet.enumerated() { table[Int(byte)] = UInt8(value) }
    return table
}

/// Decodes unpadded base64url (RFC 7515 §2). Refuses `=`, whitespace, characters outside the
/// URL-safe alphabet, a length of 4n+1, and trailing bits that are not zero.
public func base64URLDecode(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
    decodeBase64(input, table: base64URLTable, padded: false)
}

public func base64URLDecode(_ input: some StringProtocol) -> [UInt8]? {
    var string = String(input)
    return string.withUTF8 { base64URLDecode(UnsafeRawBufferPointer($0)) }
}

public func base64URLDecode(_ input: [UInt8]) -> [UInt8]? {
    input.withUnsafeBytes { base64URLDecode($0) }
}

/// Decodes padded standard base64 (RFC 4648 §4): the length must be a multiple of 4, `=` only
/// as the last one or two characters, no whitespace, canonical trailing bits.
public func base64Decode(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
    decodeBase64(input, table: base64StdTable, padded: true)
}

public func base64Decode(_ input: some StringProtocol) -> [UInt8]? {
    var string = String(input)
    return string.withUTF8 { base64Decode(UnsafeRawBufferPointer($0)) }
}

public func base64Decode(_ input: [UInt8]) -> [UInt8]? {
    input.withUnsafeBytes { base64Decode($0) }
}

/// Unpadded base64url.
public func base64URLEncode(_ input: UnsafeRawBufferPointer) -> String {
    encodeBase64(input, alphabet: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", padded: false)
}

public func base64URLEncode(_ input: [UInt8]) -> String {
    input.withUnsafeBytes { base64URLEncode($0) }
}

/// Padded standard base64.
public func base64Encode(_ input: [UInt8]) -> String {
    input.withUnsafeBytes {
        encodeBase64($0, alphabet: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", padded: true)
    }
}

private func decodeBase64(_ input: UnsafeRawBufferPointer, table: [UInt8], padded: Bool) -> [UInt8]? {
    var count = input.count
    if padded {
        guard count % 4 == 0 else { return nil }
        if count > 0 && input[count - 1] == UInt8(ascii: "=") {
            count -= 1
            if input[count - 1] == UInt8(ascii: "=") { count -= 1 }
        }
    }
    let remainder = count % 4
    if remainder == 1 { return nil }
    var output = [UInt8]()
    output.reserveCapacity(count / 4 * 3 + 2)
    return table.withUnsafeBufferPointer { table -> [UInt8]? in
        var index = 0
        let whole = count - remainder
        while index < whole {
            let a = table[Int(input[index])], b = table[Int(input[index + 1])]
            let c = table[Int(input[index + 2])], d = table[Int(input[index + 3])]
            if (a | b | c | d) & 0xC0 != 0 { return nil }
            let word = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
            output.append(UInt8(truncatingIfNeeded: word >> 16))
            output.append(UInt8(truncatingIfNeeded: word >> 8))
            output.append(UInt8(truncatingIfNeeded: word))
            index += 4
        }
        if remainder == 2 {
            let a = table[Int(input[index])], b = table[Int(input[index + 1])]
            if (a | b) & 0xC0 != 0 || b & 0x0F != 0 { return nil }
            output.append(a << 2 | b >> 4)
        } else if remainder == 3 {
            let a = table[Int(input[index])], b = table[Int(input[index + 1])], c = table[Int(input[index + 2])]
            if (a | b | c) & 0xC0 != 0 || c & 0x03 != 0 { return nil }
            output.append(a << 2 | b >> 4)
            output.append(b << 4 | c >> 2)
        }
        return output
    }
}

private func encodeBase64(_ input: UnsafeRawBufferPointer, alphabet: StaticString, padded: Bool) -> String {
    let symbols = UnsafeBufferPointer(start: alphabet.utf8Start, count: 64)
    var output = [UInt8]()
    output.reserveCapacity((input.count + 2) / 3 * 4)
    var index = 0
    while index + 3 <= input.count {
        let word = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2])
        output.append(symbols[Int(word >> 18 & 63)])
        output.append(symbols[Int(word >> 12 & 63)])
        output.append(symbols[Int(word >> 6 & 63)])
        output.append(symbols[Int(word & 63)])
        index += 3
    }
    let left = input.count - index
    if left > 0 {
        let word = UInt32(input[index]) << 16 | (left == 2 ? UInt32(input[index + 1]) << 8 : 0)
        output.append(symbols[Int(word >> 18 & 63)])
        output.append(symbols[Int(word >> 12 & 63)])
        if left == 2 { output.append(symbols[Int(word >> 6 & 63)]) }
        if padded { output.append(contentsOf: left == 2 ? [61] : [61, 61]) }
    }
    return String(decoding: output, as: UTF8.self)
}
