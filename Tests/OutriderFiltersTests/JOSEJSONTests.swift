// The strict JSON parser: RFC 8259 edge cases.
import Testing
@testable import OutriderFilters

@Suite("JOSE JSON parser")
struct JOSEJSONTests {
    func parse(_ text: String) -> JSONValue? { JSONValue.parse(text) }
    func parse(_ raw: [UInt8]) -> JSONValue? { JSONValue.parse(raw) }

    @Test(arguments: [
        "{}", "[]", "0", "-0", "1", "-1", "1.5", "1e10", "1E+2", "1e-2", "0.0", "-0.5e-3", "true", "false", "null",
        "\"\"", " \t\r\n{ \"a\" : [ 1 , 2 ] } \n", "[[[]]]", #"{"a":{"b":{"c":null}}}"#, "123456789012345678901234567890",
        #""\u0000""#, #"["\/"]"#,
    ])
    func accepts(_ text: String) {
        #expect(parse(text) != nil, "\(text)")
    }

    @Test(arguments: [
        "", " ", "{", "}", "[", "[1,]", "[1 2]", #"{"a":1,}"#, #"{"a" 1}"#, #"{a:1}"#, "{'a':1}", #"{"a":1"#,
        "01", "-01", "00", "+1", "1.", ".5", "-", "1e", "1e+", "0x10", "NaN", "Infinity", "-Infinity", "nan",
        "1e400", "-1e400", "tru", "True", "nul", "NULL", "[1] [2]", "{} x", "// c\n{}", "{/*c*/}", "[1,/*c*/2]",
        "#{}", "\"abc", "\"\\x41\"", "\"\\u12\"", "\"\\u12G4\"", "\"\\U0041\"", "'a'", "\u{FEFF}{}",
        "[\u{0B}1]", "[\u{0C}1]", "[\u{A0}1]", "\"a\u{09}b\"", "\"a\nb\"",
        #""\ud800""#, #""\udc00""#, #""\ud800\u0041""#, #""\ud800x""#, #""\udbff\udbff""#,
        #"{"a":1,"a":2}"#, #"{"a":1,"\u0061":2}"#, #"{"a":{"b":1,"b":1}}"#, #"[{"x":1,"x":1}]"#,
    ])
    func rejects(_ text: String) {
        #expect(parse(text) == nil, "\(text.debugDescription)")
    }

    @Test func escapes() {
        #expect(parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{08}\u{0C}\n\r\t"))
        #expect(parse(#""\u0041\u00e9\u20AC""#) == .string("Aé€"))
        #expect(parse(#""\u0000x""#) == .string("\u{0}x"))
        #expect(parse(#""plain then \n escape""#) == .string("plain then \n escape"))
    }

    @Test func surrogatePairs() {
        #expect(parse(#""\ud83d\ude00""#) == .string("😀"))
        #expect(parse(#""\uD834\uDD1E""#) == .string("𝄞"))
        #expect(parse(#""\udbff\udfff""#) == .string("\u{10FFFF}"))
        #expect(parse("\"😀\"") == .string("😀"))  // raw 4-byte UTF-8
    }

    @Test func utf8Validation() {
        func quoted(_ middle: [UInt8]) -> [UInt8] { [0x22] + middle + [0x22] }
        #expect(parse(quoted([0xC3, 0xA9])) == .string("é"))
        #expect(parse(quoted([0xE2, 0x82, 0xAC])) == .string("€"))
        #expect(parse(quoted([0xF4, 0x8F, 0xBF, 0xBF])) == .string("\u{10FFFF}"))
        for bad: [UInt8] in [
            [0xFF], [0xFE], [0x80], [0xBF], [0xC0, 0x80], [0xC1, 0xBF], [0xC3], [0xC3, 0x41],
            [0xE0, 0x80, 0x80], [0xE0, 0x9F, 0xBF], [0xED, 0xA0, 0x80], [0xED, 0xBF, 0xBF], [0xE2, 0x82],
            [0xF0, 0x80, 0x80, 0x80], [0xF0, 0x8F, 0xBF, 0xBF], [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80],
            [0xF8, 0x88, 0x80, 0x80, 0x80],
        ] {
            #expect(parse(quoted(bad)) == nil, "\(bad)")
            #expect(parse(quoted([0x5C, 0x6E] + bad)) == nil, "after an escape: \(bad)")  // slow path too
        }
        #expect(parse([0x7B, 0xFF, 0x7D]) == nil)  // outside strings
    }

    @Test func numbers() {
        #expect(parse("0") == .number(0, 0))
        #expect(parse("-0")?.int64 == 0)
        #expect(parse("42")?.int64 == 42)
        #expect(parse("-42")?.double == -42)
        #expect(parse("1300819380")?.int64 == 1_300_819_380)
        #expect(parse("9223372036854775807")?.int64 == Int64.max)
        #expect(parse("-9223372036854775808")?.int64 == Int64.min)
        #expect(parse("9223372036854775808")?.int64 == nil)
        #expect(parse("9223372036854775808")?.double == 9_223_372_036_854_775_808)
        #expect(parse("1.5")?.int64 == nil)
        #expect(parse("1.5")?.double == 1.5)
        #expect(parse("1.0")?.int64 == 1)
        #expect(parse("1e3")?.int64 == 1000)
        #expect(parse("2.5e1")?.int64 == 25)
        #expect(parse("1e300")?.int64 == nil)
        #expect(parse("1e300")?.double == 1e300)
        #expect(parse("123456789.123")?.double == 123_456_789.123)
        #expect(parse("\"12\"")?.int64 == nil)
    }

    @Test func depthLimit() {
        func nested(_ depth: Int) -> String { String(repeating: "[", count: depth) + String(repeating: "]", count: depth) }
        #expect(parse(nested(32)) != nil)
        #expect(parse(nested(33)) == nil)
        #expect(parse(nested(100_000)) == nil)  // no stack overflow
        let objects = String(repeating: "{\"a\":", count: 32) + "1" + String(repeating: "}", count: 32)
        #expect(parse(objects) != nil)
        let tooDeep = String(repeating: "{\"a\":", count: 33) + "1" + String(repeating: "}", count: 33)
        #expect(parse(tooDeep) == nil)
    }

    @Test func sizeLimit() {
        let big = "\"" + String(repeating: "a", count: JSONValue.maxInputBytes - 2) + "\""
        #expect(parse(big) != nil)
        let tooBig = "\"" + String(repeating: "a", count: JSONValue.maxInputBytes - 1) + "\""
        #expect(parse(tooBig) == nil)
    }

    @Test func accessors() throws {
        let value = try #require(parse(#"{"s":"x","n":7,"f":0.25,"b":true,"a":[1,"two"],"o":{"k":null}}"#))
        #expect(value["s"]?.string == "x")
        #expect(value["n"]?.int64 == 7)
        #expect(value["f"]?.double == 0.25)
        #expect(value["b"]?.bool == true)
        #expect(value["a"]?.array == [.number(1, 1), .string("two")])
        #expect(value["o"]?["k"]?.isNull == true)
        #expect(value["missing"] == nil)
        #expect(value["s"]?["x"] == nil)
        #expect(value.object?.map(\.0) == ["s", "n", "f", "b", "a", "o"])  // document order
    }

    @Test func manyMembersDuplicateDetection() {
        // Past 16 members the duplicate check switches to a set.
        let members = (0..<40).map { "\"k\($0)\":\($0)" }
        #expect(parse("{" + members.joined(separator: ",") + "}") != nil)
        #expect(parse("{" + (members + ["\"k3\":0"]).joined(separator: ",") + "}") == nil)
        #expect(parse("{" + (members + ["\"k39\":0"]).joined(separator: ",") + "}") == nil)
    }

    @Test func equality() {
        #expect(parse(#"{"a":1,"b":2}"#) != parse(#"{"b":2,"a":1}"#))  // order is kept
        #expect(parse(#"[1,2]"#) == parse(#"[ 1 , 2 ]"#))
        #expect(parse("1") != parse("\"1\""))
    }
}
