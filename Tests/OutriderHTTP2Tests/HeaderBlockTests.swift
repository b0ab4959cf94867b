import OutriderCore
import OutriderHTTP
import Testing
@testable import OutriderHTTP2

@Suite("HTTP2HeaderBlock")
struct HeaderBlockTests {
    /// Names are lower-cased eight bytes at a time: every byte value, at every position and
    /// length, must come out as the byte-by-byte rule gives it.
    @Test func namesAreLowerCasedByteForByte() {
        let block = HTTP2HeaderBlock()
        let all = (0...255).map { UInt8($0) }
        for length in [1, 7, 8, 9, 15, 16, 17, 31, 256] {
            for start in stride(from: 0, to: 256, by: 5) {
                let name = (0..<length).map { all[(start + $0 * 7) % 256] }
                block.removeAll()
                name.withUnsafeBufferPointer { pointer in
                    block.append(name: pointer.baseAddress!, nameCount: length, value: pointer.baseAddress!, valueCount: 0)
                }
                let stored = Array(block.name(at: 0))
                #expect(stored == name.map(asciiLowercase), "length \(length) start \(start)")
            }
        }
    }

    @Test func numbersAndUniqueValues() {
        let block = HTTP2HeaderBlock()
        for number: Int64 in [0, 7, 10, 13, 1_048_576, Int64.max] {
            block.removeAll()
            block.append("content-length", decimal: number)
            #expect(block.text(named: "content-length") == String(number))
        }
        let id = Array("2e89c1e9-1fcf-4106-8b31-5f1ede110416".utf8)
        id.withUnsafeBufferPointer { block.append("x-request-id", uniqueValue: $0) }
        #expect(block[block.count - 1].neverIndexed)
        #expect(!block[0].neverIndexed)
    }
}
