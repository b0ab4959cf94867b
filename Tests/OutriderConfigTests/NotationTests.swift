import Testing
@testable import OutriderConfig

@Suite struct DurationNotationTests {
    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)),
        ("5s", .seconds(5)),
        ("1m", .seconds(60)),
        ("1h", .seconds(3_600)),
        ("0", .zero),
        ("0s", .zero),
        ("0ms", .zero),
        ("1500ms", .milliseconds(1_500)),
        ("90s", .seconds(90)),
    ])
    func parsesValid(text: String, expected: Duration) {
        #expect(ConfigLoader.parseDuration(text) == expected)
    }

    @Test(arguments: [
        "", "5", "s", "ms", "1.5s", "-1s", "+5s", " 5s", "5s ", "5 s", "5S", "5sec", "1m30s", "1d",
        "10us", "0x10s", "99999999999999999999h", "9223372036854775807h", "٣s",
    ])
    func rejectsInvalid(text: String) {
        #expect(ConfigLoader.parseDuration(text) == nil)
    }

    @Test func formatsWithTheLargestExactUnit() {
        #expect(DurationNotation.format(.zero) == "0s")
        #expect(DurationNotation.format(.milliseconds(250)) == "250ms")
        #expect(DurationNotation.format(.milliseconds(1_500)) == "1500ms")
        #expect(DurationNotation.format(.seconds(90)) == "90s")
        #expect(DurationNotation.format(.seconds(120)) == "2m")
        #expect(DurationNotation.format(.seconds(7_200)) == "2h")
    }
}

@Suite struct SizeNotationTests {
    @Test(arguments: [
        ("512", Int64(512)),
        ("512B", 512),
        ("0", 0),
        ("0KiB", 0),
        ("64KiB", 65_536),
        ("1MiB", 1_048_576),
        ("1GiB", 1_073_741_824),
        ("10KB", 10_000),
        ("2MB", 2_000_000),
        ("3GB", 3_000_000_000),
        ("9223372036854775807", Int64.max),
    ])
    func parsesValid(text: String, expected: Int64) {
        #expect(ConfigLoader.parseSize(text) == expected)
    }

    @Test(arguments: [
        "", "-1", "-1KiB", "+1", "1.5KiB", "64kib", "64k", "64K", "64 KiB", "KiB", " 64KiB", "1TiB", "1KIB",
        "9223372036854775808", "9223372036854775807KiB", "99999999999999999999", "0x10",
    ])
    func rejectsInvalid(text: String) {
        #expect(ConfigLoader.parseSize(text) == nil)
    }

    @Test func formatsWithTheLargestExactBinaryUnit() {
        #expect(SizeNotation.format(0) == "0")
        #expect(SizeNotation.format(512) == "512")
        #expect(SizeNotation.format(65_536) == "64KiB")
        #expect(SizeNotation.format(10_000) == "10000")
        #expect(SizeNotation.format(3 * 1_048_576) == "3MiB")
        #expect(SizeNotation.format(1_073_741_824) == "1GiB")
        #expect(SizeNotation.format(1_536) == "1536")
    }
}

@Suite struct AddressNotationTests {
    @Test(arguments: [
        ("127.0.0.1:8080", "127.0.0.1", UInt16(8_080)),
        ("0.0.0.0:15006", "0.0.0.0", 15_006),
        (":15006", "0.0.0.0", 15_006),
        ("[::1]:15000", "::1", 15_000),
        ("[::]:1", "::", 1),
        ("[fd00::1:2]:65535", "fd00::1:2", 65_535),
        ("localhost:80", "localhost", 80),
        ("app.default.svc.cluster.local:8080", "app.default.svc.cluster.local", 8_080),
        ("my_service.internal:9000", "my_service.internal", 9_000),
    ])
    func parsesValid(text: String, host: String, port: UInt16) {
        #expect(ConfigLoader.parseAddress(text) == ConfigAddress(host: host, port: port))
    }

    @Test(arguments: [
        "", ":", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", ":0", "127.0.0.1:65536", "127.0.0.1:123456",
        "127.0.0.1:-1", "127.0.0.1:+80", "127.0.0.1:http", "::1:80", "[::1]80", "[::1]", "[::1]:",
        "[1.2.3.4]:80", "[zz::1]:80", "[fe80::1%eth0]:80", "1.2.3:80", "256.1.1.1:80", "a b:80",
        "-bad.example:80", "bad-.example:80", "foo..bar:80", "foo.:80", "http://host:80",
    ])
    func rejectsInvalid(text: String) {
        #expect(ConfigLoader.parseAddress(text) == nil)
    }

    @Test func describesWithBracketsForIPv6() {
        #expect(ConfigAddress(host: "::1", port: 15_000).description == "[::1]:15000")
        #expect(ConfigAddress(host: "10.0.0.1", port: 80).description == "10.0.0.1:80")
        #expect(ConfigAddress(host: "app.internal", port: 8_080).description == "app.internal:8080")
    }

    @Test func overlapTreatsWildcardsAsCoveringEveryHost() {
        func address(_ text: String) -> ConfigAddress { ConfigLoader.parseAddress(text) ?? ConfigAddress(host: "?", port: 1) }
        #expect(AddressNotation.bindingsOverlap(address("0.0.0.0:80"), address("127.0.0.1:80")))
        #expect(AddressNotation.bindingsOverlap(address("[::]:80"), address("10.1.2.3:80")))
        #expect(AddressNotation.bindingsOverlap(address("[::1]:80"), address("[0:0::1]:80")))
        #expect(!AddressNotation.bindingsOverlap(address("0.0.0.0:80"), address("0.0.0.0:81")))
        #expect(!AddressNotation.bindingsOverlap(address("127.0.0.1:80"), address("127.0.0.2:80")))
    }
}
