import CAtomics
import Glibc
import OutriderCore
import OutriderPosix
import OutriderTLS

/// Runs a validated benchmark: resolves the target, starts one loop per thread, shows the
/// progress line on a terminal, merges the threads' figures and prints them. Returns the exit
/// status of SPEC §11 (0 completed, 2 no connection could be made).
public enum BenchRunner {
    public static func run(_ options: BenchOptions) -> Int32 {
        let url = options.url
        let address: SocketAddress
        do {
            guard let first = try SocketAddress.resolve(host: url.host, port: url.port).first else {
                printError("outrider-bench: \(url.host): no address")
                return 2
            }
            address = first
        } catch {
            printError("outrider-bench: \(error.operation)")
            return 2
        }
        var tlsContext: TLSClientContext? = nil
        if url.isTLS {
            do {
                let alpn = options.protocolVersion == .h2 ? ["h2"] : ["http/1.1"]
                tlsContext = try TLSClientContext(caPath: nil, verify: !options.insecure, alpn: alpn, keepsBuffers: true)
            } catch {
                printError("outrider-bench: TLS: \(error)")
                return 2
            }
        }
        Sys.ignoreSIGPIPE()
        Sys.raiseFileLimit()
        let signals: Int32
        do {
            signals = try Sys.signalFD([SIGINT, SIGTERM])
        } catch {
            printError("outrider-bench: \(error)")
            return 2
        }
        defer { Sys.close(signals) }

        let cells = UnsafeMutablePointer<UInt64>.allocate(capacity: options.threads * LiveCells.stride)
        cells.initialize(repeating: 0, count: options.threads * LiveCells.stride)
        defer { cells.deallocate() }
        let plan = RunPlan(options: options, address: address, tlsContext: tlsContext, startTime: Sys.monotonicNanoseconds())
        var workers: [BenchWorker] = []
        do {
            for index in 0..<options.threads {
                workers.append(try BenchWorker(plan: plan, index: index, cells: cells + index * LiveCells.stride))
            }
        } catch {
            printError("outrider-bench: \(error)")
            return 2
        }
        var threads: [OSThread] = []
        for worker in workers {
            do {
                threads.append(try OSThread.start(name: "bench-\(worker.index)") { worker.run() })
            } catch {
                printError("outrider-bench: \(error)")
                for started in workers { started.post { started.finish() } }
                for thread in threads { thread.join() }
                return 2
            }
        }

        let progress = Sys.isTerminal(2) ? ProgressLine(plan: plan) : nil
        var interrupted = false
        var nothingConnects = false
        func sum(_ cell: Int) -> UInt64 {
            (0..<options.threads).reduce(0) { $0 + catomic_load(cells + $1 * LiveCells.stride + cell) }
        }
        func stopAll() { for worker in workers { worker.post { worker.finish() } } }
        while sum(LiveCells.finished) < UInt64(options.threads) {
            if Sys.waitReadable(signals, timeoutMs: 50) {
                _ = Sys.readSignal(signals)
                if interrupted { break }
                interrupted = true
                stopAll()
            }
            // Every connection tried and none ever got through: stop rather than spin.
            if !nothingConnects, sum(LiveCells.connected) == 0, sum(LiveCells.connectFailures) >= UInt64(options.connections) {
                nothingConnects = true
                stopAll()
            }
            progress?.update(requests: sum(LiveCells.requests), errors: sum(LiveCells.errors))
        }
        for thread in threads { thread.join() }
        progress?.clear()

        let stopTime = workers.map(\.stopTime).max() ?? plan.measureStart
        let summary = Summary.merge(workers.map(\.stats), durationNanos: max(0, stopTime - plan.measureStart))
        if options.json {
            print(summary.json())
        } else {
            print(summary.table(header: header(options)))
        }
        if sum(LiveCells.connected) == 0 {
            let reason = workers.compactMap(\.firstConnectFailure).first ?? "no connection was made"
            printError("outrider-bench: could not connect to \(url.authority) (\(address)): \(reason)")
            return 2
        }
        return 0
    }

    static func header(_ options: BenchOptions) -> String {
        let scheme = options.url.isTLS ? "https" : "http"
        var text = "outrider-bench \(options.method) \(scheme)://\(options.url.authority)\(options.url.target)"
        switch options.protocolVersion {
        case .http1: text += "\n"
        case .h2c: text += " (HTTP/2, h2c prior knowledge)\n"
        case .h2: text += " (HTTP/2 over TLS)\n"
        }
        text += "  \(options.threads) thread\(options.threads == 1 ? "" : "s"), \(options.connections) connection\(options.connections == 1 ? "" : "s")"
        if options.pipeline > 1 { text += ", pipeline \(options.pipeline)" }
        if options.protocolVersion.isHTTP2 { text += ", \(options.streams) stream\(options.streams == 1 ? "" : "s") each" }
        if let rate = options.rate {
            text += ", open loop at \(fixed(rate, rate == rate.rounded() ? 0 : 1)) req/s (latency from the intended send time)"
        } else {
            text += ", closed loop"
        }
        if let requests = options.requests { text += ", \(requests) requests" }
        if let duration = options.durationNanos { text += ", \(fixed(Double(duration) / 1e9, 3)) s" }
        if options.warmupNanos > 0 { text += " after \(fixed(Double(options.warmupNanos) / 1e9, 3)) s of warmup" }
        return text
    }
}

/// The one-line live display on a terminal (stderr), about four times a second.
final class ProgressLine {
    let plan: RunPlan
    var lastUpdate: Int64 = 0
    var lastRequests: UInt64 = 0
    var rate = 0.0

    init(plan: RunPlan) { self.plan = plan }

    func update(requests: UInt64, errors: UInt64) {
        let now = Sys.monotonicNanoseconds()
        guard now - lastUpdate >= 250_000_000 else { return }
        if lastUpdate > 0 {
            rate = Double(requests &- lastRequests) / (Double(now - lastUpdate) / 1e9)
        }
        lastUpdate = now
        lastRequests = requests
        var text: String
        if now < plan.measureStart {
            text = "warmup \(fixed(Double(now - plan.startTime) / 1e9, 1)) s"
        } else {
            text = "\(fixed(Double(now - plan.measureStart) / 1e9, 1)) s"
            if let duration = plan.options.durationNanos { text += " / \(fixed(Double(duration) / 1e9, 1)) s" }
            text += "  \(requests) requests"
            if let total = plan.options.requests { text += " / \(total)" }
            text += "  \(fixed(rate, 0)) req/s  \(errors) error\(errors == 1 ? "" : "s")"
        }
        write("\r\(text)\u{1B}[K")
    }

    func clear() { write("\r\u{1B}[K") }

    private func write(_ text: String) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { Sys.writeAll(2, $0.baseAddress!, $0.count) }
    }
}

/// A line on stderr.
public func printError(_ text: String) {
    var bytes = Array((text + "\n").utf8)
    bytes.withUnsafeMutableBytes { Sys.writeAll(2, $0.baseAddress!, $0.count) }
}
