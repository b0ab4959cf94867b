import ArgumentParser
import OutriderBench
import OutriderPosix

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outrider-bench",
        abstract: "An HTTP/1.1 and HTTP/2 load generator: closed loop, or open loop at a constant rate with latencies corrected for coordinated omission.",
        discussion: """
            Exit status: 0 when the run completed, 1 on bad arguments, 2 when no connection to the target could be made.
            Durations: 500ms, 2s, 1.5s, 1m (a bare number is seconds).
            """
    )

    @Option(name: [.customShort("t", allowingJoined: true), .customLong("threads")], help: "Threads, one event loop each (default: min(2, connections)).")
    var threads: Int?
    @Option(name: [.customShort("c", allowingJoined: true), .customLong("connections")], help: "Connections in total, spread across the threads.")
    var connections: Int = 10
    @Option(name: [.customShort("d", allowingJoined: true), .customLong("duration")], help: "Measured run length (default 10s unless -n is given).")
    var duration: String?
    @Option(name: [.customShort("n", allowingJoined: true), .customLong("requests")], help: "Stop after this many requests (sent after the warmup).")
    var requests: Int?
    @Option(name: .customLong("warmup"), help: "Load the target this long first; requests sent then are not recorded.")
    var warmup: String?
    @Option(name: .customLong("rate"), help: "Open loop: total requests per second, split evenly across the connections; latency counts from each request's intended send time.")
    var rate: Double?
    @Option(name: .customLong("timeout"), help: "Per-request (and connect) timeout.")
    var timeout: String = "5s"
    @Option(name: .customLong("pipeline"), help: "Requests kept in flight per connection (HTTP/1.1 pipelining).")
    var pipeline: Int = 1
    @Option(name: [.customShort("m", allowingJoined: true), .customLong("streams")], help: "HTTP/2: concurrent streams per connection (default 1).")
    var streams: Int?
    @Flag(name: .customLong("h2c"), help: "HTTP/2 over cleartext with prior knowledge (http:// URL).")
    var h2c = false
    @Flag(name: .customLong("h2"), help: "HTTP/2 over TLS, negotiated by ALPN (https:// URL).")
    var h2 = false
    @Option(name: [.customShort("X", allowingJoined: true), .customLong("method")], help: "Request method.")
    var method: String = "GET"
    @Option(name: [.customShort("H", allowingJoined: true), .customLong("header")], help: "A request header, 'Name: value' (repeatable).")
    var header: [String] = []
    @Option(name: .customLong("body"), help: "Request body (sent with Content-Length).")
    var body: String?
    @Option(name: .customLong("body-file"), help: "Request body read from a file.")
    var bodyFile: String?
    @Flag(name: .customLong("insecure"), help: "https: do not verify the server's certificate.")
    var insecure = false
    @Flag(name: .customLong("json"), help: "Print the result as one JSON object.")
    var json = false
    @Argument(help: "http://host[:port]/path or https://…")
    var url: String

    /// The validated options; a `ValidationError` (exit 1) names what is wrong.
    func makeOptions() throws -> BenchOptions {
        if body != nil && bodyFile != nil { throw ValidationError("--body and --body-file exclude each other") }
        var bodyBytes: [UInt8]? = body.map { Array($0.utf8) }
        if let bodyFile {
            switch Sys.readFileBytes(bodyFile) {
            case .success(let bytes): bodyBytes = bytes
            case .failure(let error): throw ValidationError("--body-file: \(error)")
            }
        }
        do {
            return try BenchOptions.validate(
                url: url, threads: threads, connections: connections, duration: duration, requests: requests,
                warmup: warmup, rate: rate, timeout: timeout, pipeline: pipeline, streams: streams, h2c: h2c, h2: h2,
                method: method, headers: header, body: bodyBytes, insecure: insecure, json: json)
        } catch {
            throw ValidationError(error.description)
        }
    }

    func run() throws {
        let status = BenchRunner.run(try makeOptions())
        if status != 0 { throw ExitCode(status) }
    }
}
