import Testing
@testable import OutriderBench

@Suite("outrider-bench arguments")
struct OptionsTests {
    func validate(url: String = "http://127.0.0.1:8080/", threads: Int? = nil, connections: Int = 10,
                  duration: String? = nil, requests: Int? = nil, warmup: String? = nil, rate: Double? = nil,
                  timeout: String = "5s", pipeline: Int = 1, streams: Int? = nil, h2c: Bool = false, h2: Bool = false,
                  method: String = "GET", headers: [String] = [], body: [UInt8]? = nil) throws(BenchArgumentError) -> BenchOptions {
        try BenchOptions.validate(url: url, threads: threads, connections: connections, duration: duration,
                                  requests: requests, warmup: warmup, rate: rate, timeout: timeout, pipeline: pipeline,
                                  streams: streams, h2c: h2c, h2: h2, method: method, headers: headers, body: body,
                                  insecure: false, json: false)
    }

    @Test func urls() throws {
        let plain = try TargetURL.parse("http://example.com")
        #expect(plain == TargetURL(isTLS: false, host: "example.com", port: 80, target: "/", authority: "example.com"))
        let tls = try TargetURL.parse("https://example.com:8443/a/b?c=d#frag")
        #expect(tls == TargetURL(isTLS: true, host: "example.com", port: 8443, target: "/a/b?c=d", authority: "example.com:8443"))
        let v6 = try TargetURL.parse("http://[::1]:9000?x")
        #expect(v6 == TargetURL(isTLS: false, host: "::1", port: 9000, target: "/?x", authority: "[::1]:9000"))
        #expect(try TargetURL.parse("https://h:443/").authority == "h")
        for bad in ["ftp://x/", "example.com", "http://", "http://h:0/", "http://h:99999/", "http://h:x/",
                    "http://[::1/", "http://u@h/", "http://h/a b"] {
            #expect(throws: BenchArgumentError.self, "\(bad)") { try TargetURL.parse(bad) }
        }
        #expect(throws: BenchArgumentError.self) { try TargetURL.parse("h2c://h/") }
    }

    @Test func durations() {
        #expect(DurationText.nanoseconds("2s") == 2_000_000_000)
        #expect(DurationText.nanoseconds("1.5s") == 1_500_000_000)
        #expect(DurationText.nanoseconds("500ms") == 500_000_000)
        #expect(DurationText.nanoseconds("250us") == 250_000)
        #expect(DurationText.nanoseconds("1m") == 60_000_000_000)
        #expect(DurationText.nanoseconds("3") == 3_000_000_000)
        for bad in ["", "s", "-1s", "1x", "1e3s", "abc", "1..2s"] { #expect(DurationText.nanoseconds(bad) == nil, "\(bad)") }
    }

    @Test func defaultsAndThreadSplit() throws {
        let options = try validate(connections: 7)
        #expect(options.threads == 2)
        #expect(options.durationNanos == BenchOptions.defaultDurationNanos)
        #expect(options.connections(ofThread: 0) == 4 && options.connections(ofThread: 1) == 3)
        #expect(options.firstConnection(ofThread: 1) == 4)
        #expect(try validate(connections: 1).threads == 1)
        let counted = try validate(threads: 3, connections: 10, requests: 1001)
        #expect(counted.durationNanos == nil)
        let budgets = (0..<3).map { counted.requestBudget(ofThread: $0)! }
        #expect(budgets.reduce(0, +) == 1001)
        #expect(budgets.allSatisfy { $0 >= 300 && $0 <= 401 })
        #expect(try validate(requests: nil).requestBudget(ofThread: 0) == nil)
    }

    @Test func refusals() {
        let cases: [(String, () throws(BenchArgumentError) -> BenchOptions)] = [
            ("threads > connections", { () throws(BenchArgumentError) in try validate(threads: 4, connections: 2) }),
            ("zero threads", { () throws(BenchArgumentError) in try validate(threads: 0) }),
            ("zero connections", { () throws(BenchArgumentError) in try validate(connections: 0) }),
            ("-d and -n", { () throws(BenchArgumentError) in try validate(duration: "1s", requests: 10) }),
            ("bad duration", { () throws(BenchArgumentError) in try validate(duration: "soon") }),
            ("zero duration", { () throws(BenchArgumentError) in try validate(duration: "0s") }),
            ("zero requests", { () throws(BenchArgumentError) in try validate(requests: 0) }),
            ("bad warmup", { () throws(BenchArgumentError) in try validate(warmup: "x") }),
            ("zero rate", { () throws(BenchArgumentError) in try validate(rate: 0) }),
            ("infinite rate", { () throws(BenchArgumentError) in try validate(rate: .infinity) }),
            ("bad timeout", { () throws(BenchArgumentError) in try validate(timeout: "0ms") }),
            ("pipeline 0", { () throws(BenchArgumentError) in try validate(pipeline: 0) }),
            ("streams without HTTP/2", { () throws(BenchArgumentError) in try validate(streams: 10) }),
            ("h2c and h2", { () throws(BenchArgumentError) in try validate(h2c: true, h2: true) }),
            ("h2c over https", { () throws(BenchArgumentError) in try validate(url: "https://h/", h2c: true) }),
            ("h2 over http", { () throws(BenchArgumentError) in try validate(url: "http://h/", h2: true) }),
            ("zero streams", { () throws(BenchArgumentError) in try validate(streams: 0, h2c: true) }),
            ("too many streams", { () throws(BenchArgumentError) in try validate(streams: 5000, h2c: true) }),
            ("pipeline with h2c", { () throws(BenchArgumentError) in try validate(pipeline: 2, h2c: true) }),
            ("connection header in h2", { () throws(BenchArgumentError) in try validate(h2c: true, headers: ["Connection: close"]) }),
            ("upgrade header in h2", { () throws(BenchArgumentError) in try validate(h2c: true, headers: ["Upgrade: x"]) }),
            ("TE gzip in h2", { () throws(BenchArgumentError) in try validate(h2c: true, headers: ["TE: gzip"]) }),
            ("bad method", { () throws(BenchArgumentError) in try validate(method: "GE T") }),
            ("header without colon", { () throws(BenchArgumentError) in try validate(headers: ["NoColon"]) }),
            ("header bad name", { () throws(BenchArgumentError) in try validate(headers: ["Bad Name: x"]) }),
            ("header control byte", { () throws(BenchArgumentError) in try validate(headers: ["X: a\u{1}b"]) }),
            ("transfer-encoding", { () throws(BenchArgumentError) in try validate(headers: ["Transfer-Encoding: chunked"]) }),
            ("content-length with body", { () throws(BenchArgumentError) in try validate(headers: ["Content-Length: 3"], body: [1]) }),
        ]
        for (name, make) in cases {
            #expect(throws: BenchArgumentError.self, "\(name)") { try make() }
        }
        do {
            _ = try validate(streams: 4)
        } catch {
            #expect(error.description.contains("--h2c") && error.description.contains("--h2"))
        }
    }

    @Test func http2Choices() throws {
        let plain = try validate()
        #expect(plain.protocolVersion == .http1 && plain.streams == 1 && plain.requestsPerConnection == 1)
        let h2c = try validate(streams: 10, h2c: true)
        #expect(h2c.protocolVersion == .h2c && h2c.streams == 10 && h2c.requestsPerConnection == 10)
        #expect(try validate(h2c: true).streams == 1)
        let h2 = try validate(url: "https://h:8443/", streams: 100, h2: true)
        #expect(h2.protocolVersion == .h2 && h2.streams == 100)
        // Connection-specific headers are fine in HTTP/1.1, and TE: trailers in HTTP/2.
        _ = try validate(headers: ["Connection: close"])
        _ = try validate(h2c: true, headers: ["TE: trailers"])
    }

    @Test func http2HeaderFields() throws {
        func text(_ options: BenchOptions) -> [String] { options.http2HeaderFields().map { "\($0.name): \($0.value)" } }
        let get = try validate(url: "http://example.com:8080/p?q=1", h2c: true, headers: ["X-A: 1", "Accept:  */*  "])
        #expect(text(get) == [":method: GET", ":scheme: http", ":authority: example.com:8080", ":path: /p?q=1",
                              "x-a: 1", "accept: */*"])
        let post = try validate(url: "https://h/", h2: true, method: "POST", headers: ["Host: other", "X-B: 2"],
                                body: Array("abc".utf8))
        #expect(text(post) == [":method: POST", ":scheme: https", ":authority: other", ":path: /", "x-b: 2",
                               "content-length: 3"])
    }

    @Test func serializedRequest() throws {
        let get = try validate(url: "http://example.com:8080/p?q=1", headers: ["X-A: 1", "Accept:  */*  "])
        #expect(String(decoding: get.serializedRequest(), as: UTF8.self)
                == "GET /p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nX-A: 1\r\nAccept: */*\r\n\r\n")
        let post = try validate(url: "http://h/", method: "POST", headers: ["Host: other"], body: Array("abc".utf8))
        #expect(String(decoding: post.serializedRequest(), as: UTF8.self)
                == "POST / HTTP/1.1\r\nHost: other\r\nContent-Length: 3\r\n\r\nabc")
    }
}
