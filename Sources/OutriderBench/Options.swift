// What a run is asked to do, validated once before any thread starts. Pure: no sockets, so the
// rules are unit-tested.

/// A problem with the command line: exit 1 (SPEC §11).
public struct BenchArgumentError: Error, CustomStringConvertible, Equatable, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// `http://host[:port][/path][?query]` or `https://…`; IPv6 literals in brackets.
public struct TargetURL: Equatable, Sendable {
    public var isTLS: Bool
    /// Host as written, without brackets (for DNS, SNI and certificate checks).
    public var host: String
    public var port: UInt16
    /// Path and query, at least "/".
    public var target: String
    /// The Host header value: host (bracketed for IPv6) and the port when not the default.
    public var authority: String

    public static func parse(_ text: String) throws(BenchArgumentError) -> TargetURL {
        let isTLS: Bool
        var rest: Substring
        if text.hasPrefix("http://") {
            isTLS = false
            rest = text.dropFirst(7)
        } else if text.hasPrefix("https://") {
            isTLS = true
            rest = text.dropFirst(8)
        } else if text.hasPrefix("h2c://") || text.hasPrefix("h2://") {
            throw BenchArgumentError("\(text): for HTTP/2 use http:// with --h2c or https:// with --h2")
        } else {
            throw BenchArgumentError("\(text): the URL must start with http:// or https://")
        }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authorityText = rest[rest.startIndex..<authorityEnd]
        rest = rest[authorityEnd...]
        if let fragment = rest.firstIndex(of: "#") { rest = rest[rest.startIndex..<fragment] }
        var target = String(rest)
        if target.isEmpty { target = "/" } else if target.hasPrefix("?") { target = "/" + target }
        guard !authorityText.contains("@") else { throw BenchArgumentError("\(text): user information in the URL is not supported") }

        var host: Substring
        var portText: Substring? = nil
        if authorityText.hasPrefix("[") {
            guard let close = authorityText.firstIndex(of: "]") else { throw BenchArgumentError("\(text): unterminated IPv6 literal") }
            host = authorityText[authorityText.index(after: authorityText.startIndex)..<close]
            let after = authorityText[authorityText.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw BenchArgumentError("\(text): invalid authority") }
                portText = after.dropFirst()
            }
        } else {
            if let colon = authorityText.lastIndex(of: ":") {
                host = authorityText[authorityText.startIndex..<colon]
                portText = authorityText[authorityText.index(after: colon)...]
            } else {
                host = authorityText
            }
        }
        guard !host.isEmpty else { throw BenchArgumentError("\(text): no host in the URL") }
        let defaultPort: UInt16 = isTLS ? 443 : 80
        var port = defaultPort
        if let portText {
            guard let parsed = UInt16(portText), parsed > 0 else { throw BenchArgumentError("\(text): invalid port '\(portText)'") }
            port = parsed
        }
        for byte in target.utf8 where !(byte > 0x20 && byte < 0x7F) {
            throw BenchArgumentError("\(text): the path holds a space or a control character (percent-encode it)")
        }
        let hostText = String(host)
        let bracketed = hostText.contains(":") ? "[\(hostText)]" : hostText
        let authority = port == defaultPort ? bracketed : "\(bracketed):\(port)"
        return TargetURL(isTLS: isTLS, host: hostText, port: port, target: target, authority: authority)
    }
}

/// Durations as `500ms`, `2s`, `1.5s`, `1m`, `1h`, `250us`; a bare number is seconds.
public enum DurationText {
    public static func nanoseconds(_ text: String) -> Int64? {
        let units: [(String, Double)] = [("ns", 1), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
        var number = Substring(text)
        var scale = 1e9
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            number = text.dropLast(suffix.count)
            scale = factor
            break
        }
        guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
              let value = Double(number), value.isFinite, value >= 0 else { return nil }
        let nanos = value * scale
        guard nanos < 9e18 else { return nil }
        return Int64(nanos.rounded())
    }
}

/// What the connections speak.
public enum BenchProtocol: Sendable, Equatable {
    /// HTTP/1.1 keep-alive (over TLS with an https:// URL).
    case http1
    /// HTTP/2 over cleartext with prior knowledge (`--h2c`, http:// URL).
    case h2c
    /// HTTP/2 over TLS, negotiated by ALPN (`--h2`, https:// URL).
    case h2

    public var isHTTP2: Bool { self != .http1 }
}

/// The validated run: everything the engine needs, immutable and shared by the threads.
public struct BenchOptions: Sendable {
    public var url: TargetURL
    public var protocolVersion: BenchProtocol
    public var threads: Int
    public var connections: Int
    /// Measured run length; nil with `requests`.
    public var durationNanos: Int64?
    /// Total requests to send after the warmup; nil with `durationNanos`.
    public var requests: Int?
    public var warmupNanos: Int64
    /// Requests per second across all connections (open loop); nil = closed loop.
    public var rate: Double?
    public var timeoutNanos: Int64
    public var pipeline: Int
    /// HTTP/2: concurrent streams per connection (`-m`); 1 with HTTP/1.1.
    public var streams: Int
    public var method: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    public var insecure: Bool
    public var json: Bool

    public static let defaultDurationNanos: Int64 = 10_000_000_000
    public static let maximumPipeline = 1024
    public static let maximumStreams = 4096

    /// Checks and combines the raw command-line values.
    public static func validate(url: String, threads: Int?, connections: Int, duration: String?, requests: Int?,
                                warmup: String?, rate: Double?, timeout: String, pipeline: Int, streams: Int?,
                                h2c: Bool = false, h2: Bool = false,
                                method: String, headers: [String], body: [UInt8]?,
                                insecure: Bool, json: Bool) throws(BenchArgumentError) -> BenchOptions {
        let target = try TargetURL.parse(url)
        if h2c && h2 { throw BenchArgumentError("--h2c and --h2 exclude each other") }
        let protocolVersion: BenchProtocol = h2c ? .h2c : h2 ? .h2 : .http1
        switch protocolVersion {
        case .http1:
            if streams != nil {
                throw BenchArgumentError("-m/--streams is for HTTP/2: add --h2c (http:// URL) or --h2 (https:// URL)")
            }
        case .h2c:
            guard !target.isTLS else {
                throw BenchArgumentError("--h2c is HTTP/2 over cleartext: give an http:// URL (--h2 for https://)")
            }
        case .h2:
            guard target.isTLS else {
                throw BenchArgumentError("--h2 is HTTP/2 over TLS: give an https:// URL (--h2c for http://)")
            }
        }
        if protocolVersion.isHTTP2 && pipeline != 1 {
            throw BenchArgumentError("--pipeline is HTTP/1.1 pipelining; with --h2c/--h2 use -m/--streams")
        }
        let streamCount = streams ?? 1
        guard streamCount >= 1, streamCount <= maximumStreams else {
            throw BenchArgumentError("-m/--streams must be between 1 and \(maximumStreams) (got \(streamCount))")
        }
        guard connections >= 1 else { throw BenchArgumentError("-c/--connections must be at least 1 (got \(connections))") }
        guard connections <= 1_000_000 else { throw BenchArgumentError("-c/--connections: \(connections) is too many") }
        let threadCount: Int
        if let threads {
            guard threads >= 1 else { throw BenchArgumentError("-t/--threads must be at least 1 (got \(threads))") }
            guard threads <= connections else {
                throw BenchArgumentError("-t/--threads (\(threads)) cannot exceed -c/--connections (\(connections)): each thread needs a connection")
            }
            threadCount = threads
        } else {
            threadCount = min(2, connections)
        }
        if duration != nil && requests != nil { throw BenchArgumentError("-d/--duration and -n/--requests exclude each other") }
        var durationNanos: Int64? = nil
        if let duration {
            guard let nanos = DurationText.nanoseconds(duration), nanos > 0 else {
                throw BenchArgumentError("-d/--duration: invalid duration '\(duration)' (e.g. 10s, 500ms, 2m)")
            }
            durationNanos = nanos
        } else if requests == nil {
            durationNanos = defaultDurationNanos
        }
        if let requests { guard requests >= 1 else { throw BenchArgumentError("-n/--requests must be at least 1 (got \(requests))") } }
        var warmupNanos: Int64 = 0
        if let warmup {
            guard let nanos = DurationText.nanoseconds(warmup) else {
                throw BenchArgumentError("--warmup: invalid duration '\(warmup)'")
            }
            warmupNanos = nanos
        }
        if let rate {
            guard rate.isFinite, rate > 0 else { throw BenchArgumentError("--rate must be a positive number of requests per second") }
            guard rate <= 100_000_000 else { throw BenchArgumentError("--rate: \(rate) is too high") }
        }
        guard let timeoutNanos = DurationText.nanoseconds(timeout), timeoutNanos > 0 else {
            throw BenchArgumentError("--timeout: invalid duration '\(timeout)'")
        }
        guard pipeline >= 1, pipeline <= maximumPipeline else {
            throw BenchArgumentError("--pipeline must be between 1 and \(maximumPipeline) (got \(pipeline))")
        }
        guard !method.isEmpty, method.utf8.allSatisfy(isMethodByte) else {
            throw BenchArgumentError("-X/--method: invalid method '\(method)'")
        }
        var parsedHeaders: [(name: String, value: String)] = []
        for header in headers {
            guard let colon = header.firstIndex(of: ":") else {
                throw BenchArgumentError("-H/--header: '\(header)' is not 'Name: value'")
            }
            let name = String(header[header.startIndex..<colon])
            let value = String(header[header.index(after: colon)...].drop(while: { $0 == " " || $0 == "\t" }))
            guard !name.isEmpty, name.utf8.allSatisfy(isMethodByte) else {
                throw BenchArgumentError("-H/--header: invalid header name in '\(header)'")
            }
            guard value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                throw BenchArgumentError("-H/--header: invalid byte in the value of '\(header)'")
            }
            let lower = name.lowercased()
            if lower == "transfer-encoding" {
                throw BenchArgumentError("-H/--header: Transfer-Encoding is not supported (the body is sent with Content-Length)")
            }
            if lower == "content-length" && body != nil {
                throw BenchArgumentError("-H/--header: Content-Length is set from --body/--body-file; do not give it as well")
            }
            if protocolVersion.isHTTP2 && http2ForbiddenHeaders.contains(lower) {
                // RFC 9113 §8.2.2: connection-specific fields make the request malformed.
                throw BenchArgumentError("-H/--header: \(name) is a connection-specific header, not allowed in HTTP/2")
            }
            if protocolVersion.isHTTP2 && lower == "te" && value.lowercased() != "trailers" {
                throw BenchArgumentError("-H/--header: in HTTP/2, TE may only be 'trailers'")
            }
            parsedHeaders.append((name, value.trimmingTrailingWhitespace()))
        }
        return BenchOptions(url: target, protocolVersion: protocolVersion, threads: threadCount, connections: connections,
                            durationNanos: durationNanos, requests: requests, warmupNanos: warmupNanos, rate: rate,
                            timeoutNanos: timeoutNanos, pipeline: pipeline, streams: streamCount, method: method,
                            headers: parsedHeaders, body: body ?? [], hasBody: body != nil, insecure: insecure, json: json)
    }

    /// Header fields RFC 9113 §8.2.2 forbids in HTTP/2 (lower case).
    static let http2ForbiddenHeaders: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]

    /// Whether a body (possibly empty) was given: Content-Length is sent then.
    public var hasBody: Bool

    public init(url: TargetURL, protocolVersion: BenchProtocol = .http1, threads: Int, connections: Int, durationNanos: Int64?,
                requests: Int?, warmupNanos: Int64, rate: Double?, timeoutNanos: Int64, pipeline: Int, streams: Int = 1,
                method: String, headers: [(name: String, value: String)], body: [UInt8], hasBody: Bool, insecure: Bool,
                json: Bool) {
        self.url = url
        self.protocolVersion = protocolVersion
        self.streams = streams
        self.threads = threads
        self.connections = connections
        self.durationNanos = durationNanos
        self.requests = requests
        self.warmupNanos = warmupNanos
        self.rate = rate
        self.timeoutNanos = timeoutNanos
        self.pipeline = pipeline
        self.method = method
        self.headers = headers
        self.body = body
        self.hasBody = hasBody
        self.insecure = insecure
        self.json = json
    }

    public var isHead: Bool { method == "HEAD" }

    /// Requests one connection keeps in flight: the pipeline depth (HTTP/1.1) or the streams (HTTP/2).
    public var requestsPerConnection: Int { protocolVersion.isHTTP2 ? streams : pipeline }

    /// Connections of thread `index`: the remainder goes to the first threads.
    public func connections(ofThread index: Int) -> Int {
        connections / threads + (index < connections % threads ? 1 : 0)
    }

    /// Global index of the first connection of thread `index`.
    public func firstConnection(ofThread index: Int) -> Int {
        var first = 0
        for thread in 0..<index { first += connections(ofThread: thread) }
        return first
    }

    /// The `-n` budget of thread `index`, in proportion to its connections; nil without `-n`.
    public func requestBudget(ofThread index: Int) -> Int? {
        guard let requests else { return nil }
        // Split by global connection index so the shares add up exactly.
        let first = firstConnection(ofThread: index)
        let end = first + connections(ofThread: index)
        return requests * end / connections - requests * first / connections
    }

    /// The request as it goes on the wire, serialized once.
    public func serializedRequest() -> [UInt8] {
        var text = "\(method) \(url.target) HTTP/1.1\r\n"
        let lowerNames = Set(headers.map { $0.name.lowercased() })
        if !lowerNames.contains("host") { text += "Host: \(url.authority)\r\n" }
        for header in headers { text += "\(header.name): \(header.value)\r\n" }
        if hasBody { text += "Content-Length: \(body.count)\r\n" }
        text += "\r\n"
        return Array(text.utf8) + body
    }

    /// The HTTP/2 request head, built once: the pseudo-headers (`:authority` from a Host header
    /// when one is given, else from the URL), then the headers given (names lower-cased, Host
    /// dropped), then content-length when a body is sent.
    public func http2HeaderFields() -> [(name: String, value: String)] {
        let host = headers.first { $0.name.lowercased() == "host" }?.value
        var fields: [(name: String, value: String)] = [
            (":method", method), (":scheme", url.isTLS ? "https" : "http"), (":authority", host ?? url.authority),
            (":path", url.target),
        ]
        for header in headers where header.name.lowercased() != "host" {
            fields.append((header.name.lowercased(), header.value))
        }
        if hasBody { fields.append(("content-length", String(body.count))) }
        return fields
    }
}

@inline(__always)
func isMethodByte(_ byte: UInt8) -> Bool {
    // RFC 9110 token characters.
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
         UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
         UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
         UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        return true
    default:
        return false
    }
}

extension String {
    func trimmingTrailingWhitespace() -> String {
        var view = Substring(self)
        while let last = view.last, last == " " || last == "\t" { view = view.dropLast() }
        return String(view)
    }
}
