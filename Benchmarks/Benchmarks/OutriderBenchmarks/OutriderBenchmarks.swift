// Outrider's data path under package-benchmark: wall time and mallocs per operation.
//
//   scripts/microbench.sh                                run all, print, check thresholds
//   scripts/microbench.sh run --filter 'Proxy.*'         any `swift package benchmark` arguments
//   scripts/microbench.sh run --filter 'Proxy.*' --allocation-stacks    where mallocs come from
//
// The malloc counter (the MallocInterposer trait, LD_PRELOADed by the plugin) counts every
// thread of the process, so the round trips count the proxy's worker and access-log threads
// too; the loopback client and upstream allocate nothing per request, which
// `UpstreamDirectRoundTrip` checks.
//
// No operating-system metrics (.cpuTotal, .syscalls, .peakMemoryResident ...): package-benchmark
// samples them from /proc with allocating Swift code in this process, and the malloc counter
// counts that too (~16 mallocs per 1,000 requests in the control benchmark).
//
// Every benchmark measures batches of 1,000 operations (`scaledIterations`); the table shows
// values per operation (marked `*`, rounded down), the thresholds apply per batch.
// Thresholds: `Benchmarks/Thresholds/OutriderBenchmarks.<name>.p90.json` holds the expected p90
// malloc count per batch (0 for all); the `thresholds` below are the allowed deviation from it.
// More fails `thresholds check` ("WORSE"); fewer fails too ("BETTER"), so that an improvement
// gets recorded: `scripts/microbench.sh thresholds update`, then review the diff.

import Benchmark

// Fixtures are built by each benchmark's `setup` (each benchmark runs in its own process).
nonisolated(unsafe) var headParse: HeadParseFixture!
nonisolated(unsafe) var normalize: NormalizeFixture!
nonisolated(unsafe) var chunked: ChunkedFixture!
nonisolated(unsafe) var proxy: ProxyFixture!
nonisolated(unsafe) var direct: DirectFixture!

let benchmarks: @Sendable () -> Void = {
    func mallocsAllowed(_ perBatchAtP90: Int) -> [BenchmarkMetric: BenchmarkThresholds] {
        [.mallocCountTotal: .init(relative: [:], absolute: [.p90: perBatchAtP90])]
    }

    let microConfiguration = Benchmark.Configuration(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        timeUnits: .nanoseconds,
        warmupIterations: 100,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 100_000,
        thresholds: mallocsAllowed(0)
    )

    // 1,000 requests per measured iteration, so that p90 = 0 also catches an allocation every
    // few hundred requests (per-request samples would leave anything under 10% below p90).
    // ProxyFixture's warm-up (~14 s) runs in `setup`, before any of this.
    func roundTripConfiguration(mallocsAllowed allowed: Int) -> Benchmark.Configuration {
        .init(
            metrics: [.wallClock, .mallocCountTotal, .throughput],
            timeUnits: .microseconds,
            warmupIterations: 2,
            scalingFactor: .kilo,
            maxDuration: .seconds(5),
            maxIterations: 200,
            thresholds: mallocsAllowed(allowed)
        )
    }

    Benchmark("ParseRequestHead", configuration: microConfiguration) { benchmark in
        let fixture = headParse!
        for _ in benchmark.scaledIterations {
            blackHole(fixture.parseOnce())
        }
    } setup: {
        headParse = HeadParseFixture()
    }

    Benchmark("NormalizePath", configuration: microConfiguration) { benchmark in
        let fixture = normalize!
        for _ in benchmark.scaledIterations {
            blackHole(fixture.normalizeOnce())
        }
    } setup: {
        normalize = NormalizeFixture()
    }

    Benchmark("ChunkedDecode", configuration: microConfiguration) { benchmark in
        let fixture = chunked!
        for _ in benchmark.scaledIterations {
            blackHole(fixture.decodeOnce())
        }
    } setup: {
        chunked = ChunkedFixture()
    }

    Benchmark("ProxyRoundTrip", configuration: roundTripConfiguration(mallocsAllowed: 0)) { benchmark in
        let client = proxy.client
        for _ in benchmark.scaledIterations {
            blackHole(client.roundTrip())
        }
    } setup: {
        proxy = try ProxyFixture(accessLog: .off)
    }

    // The access log's batches are made up front (AccessLogSink(batches:)) and the timer
    // wheel's buckets reserved, so logging every request allocates nothing either.
    Benchmark("ProxyRoundTripAccessLog", configuration: roundTripConfiguration(mallocsAllowed: 0)) { benchmark in
        let client = proxy.client
        for _ in benchmark.scaledIterations {
            blackHole(client.roundTrip())
        }
    } setup: {
        proxy = try ProxyFixture(accessLog: .jsonToDevNull)
    }

    // Control: the same client and upstream with no proxy in between. Must stay at 0 mallocs,
    // or the proxy benchmarks above are counting the harness.
    Benchmark("UpstreamDirectRoundTrip", configuration: roundTripConfiguration(mallocsAllowed: 0)) { benchmark in
        let client = direct.client
        for _ in benchmark.scaledIterations {
            blackHole(client.roundTrip())
        }
    } setup: {
        direct = DirectFixture()
    }
}
