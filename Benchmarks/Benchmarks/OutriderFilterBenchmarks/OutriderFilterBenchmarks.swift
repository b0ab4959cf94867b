// The filter chain under package-benchmark: wall time and mallocs per request through one
// filter on a reused FilterContext (FilterFixtures.swift), and a JWT's cold verification.
//
//   scripts/microbench.sh                                       run all, print, check thresholds
//   scripts/microbench.sh run --filter 'AuthChain.*'            any `swift package benchmark` arguments
//   scripts/microbench.sh run --filter 'AuthChain.*' --allocation-stacks   where mallocs come from
//
// A target of its own because it is compiled like the data path it mirrors: with
// `-enforce-exclusivity=unchecked` (Package.swift), as OutriderFilters and OutriderProxy are.
// With the runtime's checks on, the fixture's writes to the context's properties (what
// Downstream.prepareFilterContext does) cost 16 swift_beginAccess calls per request, which the
// proxy does not pay.
//
// As in OutriderBenchmarks: every measured iteration is a batch of 1,000 requests; the table
// shows values per request (`*`, rounded down), the thresholds apply per batch.
// `Thresholds/OutriderFilterBenchmarks.<name>.p90.json` holds the expected p90 malloc count per
// batch: 0, except AuthChainCachedJWT (1,000) and the cold verifications (86,000 / 53,000), each
// explained below; the allowed deviation is 0 for all. More fails `thresholds check`
// ("WORSE"), fewer too ("BETTER": record the improvement with `scripts/microbench.sh thresholds
// update --filter NAME` and review the diff).

import Benchmark

// Built by each benchmark's `setup` (each benchmark runs in its own process).
nonisolated(unsafe) var chain: FilterChainFixture!
nonisolated(unsafe) var coldJWT: JWTColdFixture!

let benchmarks: @Sendable () -> Void = {
    func mallocsAllowed(_ perBatchAtP90: Int) -> [BenchmarkMetric: BenchmarkThresholds] {
        [.mallocCountTotal: .init(relative: [:], absolute: [.p90: perBatchAtP90])]
    }

    // The same as OutriderBenchmarks' micro benchmarks.
    let microConfiguration = Benchmark.Configuration(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        timeUnits: .nanoseconds,
        warmupIterations: 100,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 100_000,
        thresholds: mallocsAllowed(0)
    )

    // A cold signature check takes tens of microseconds: a batch of 1,000 is tens of ms.
    // Deviation 0 from the recorded p90 (which is not 0 here; see JWTColdES256).
    let coldJWTConfiguration = Benchmark.Configuration(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        timeUnits: .nanoseconds,
        warmupIterations: 3,
        scalingFactor: .kilo,
        maxDuration: .seconds(4),
        maxIterations: 200,
        thresholds: mallocsAllowed(0)
    )

    // Control: the same preparation with no filter in the chain (what the proxy does before and
    // after any chain: reset, ranges, 4 copies into scratch, the table restored, the wall clock
    // read). Subtract it from the ones below for a filter's own cost.
    Benchmark("FilterContextPrepare", configuration: microConfiguration) { benchmark in
        let fixture = chain!
        for _ in benchmark.scaledIterations {
            blackHole(fixture.runOnce())
        }
    } setup: {
        chain = FilterChainFixture(filters: [], request: FilterPayloads.apiRequest(credentials: FilterPayloads.apiKeyHeader))
        chain.runAndCheck([])
    }

    // API key auth (`x-api-key`, config/examples/api-keys: one plain key and one sha256 digest;
    // the sha256 one is presented, and every key is compared): SHA-256 on the stack, identity
    // header into scratch.
    Benchmark("AuthChainAPIKey", configuration: microConfiguration) { benchmark in
        let fixture = chain!
        for _ in benchmark.scaledIterations {
            blackHole(fixture.runOnce())
        }
    } setup: {
        chain = FilterChainFixture(filters: [FilterSetups.apiKeyAuth()],
                                   request: FilterPayloads.apiRequest(credentials: FilterPayloads.apiKeyHeader))
        chain.runAndCheck(["x-auth-request-user: reporting\r\n"])
    }

    // JWT auth (ES256 `Authorization: Bearer`, auth-container.yaml's jwt settings), token in the
    // worker's VerifiedTokenCache: sha256 of the token, a cache probe, claims to headers. The
    // first request (in setup) verifies the signature and fills the cache.
    //
    // 0 mallocs per request: the cache lookup, the verified token kept in the context (a value)
    // and the claim-to-header lines allocate nothing.
    Benchmark("AuthChainCachedJWT", configuration: microConfiguration) { benchmark in
        let fixture = chain!
        for _ in benchmark.scaledIterations {
            blackHole(fixture.runOnce())
        }
    } setup: {
        chain = FilterChainFixture(filters: [FilterSetups.jwtAuth()],
                                   request: FilterPayloads.apiRequest(credentials: FilterPayloads.bearerES256))
        let expected = ["x-auth-request-user: carol\r\n", "x-auth-request-email: carol@example.com\r\n"]
        chain.runAndCheck(expected)   // cold: verifies and caches
        chain.runAndCheck(expected)   // from the cache
    }

    // One RateLimitFilter per request, keyed by the client address (always the same key): the
    // GCRA compare-and-swap in the shared table and the three ratelimit-* lines into scratch.
    Benchmark("RateLimitAcquire", configuration: microConfiguration) { benchmark in
        let fixture = chain!
        for _ in benchmark.scaledIterations {
            blackHole(fixture.runOnce())
        }
    } setup: {
        chain = FilterChainFixture(filters: [FilterSetups.rateLimit()],
                                   request: FilterPayloads.apiRequest(credentials: FilterPayloads.apiKeyHeader))
        let expected = "ratelimit-limit: 100\r\nratelimit-remaining: 99\r\nratelimit-reset: 1\r\n"
        for _ in 0..<3 {
            chain.runAndCheck([])
            precondition(chain.scratchText(chain.context.rateLimitLines) == expected, "rate limit: \(chain.scratchText(chain.context.rateLimitLines))")
        }
    }

    // A headers filter with 3 request templates (2 `set`, whose names are first removed from the
    // client's headers, and 1 `add`), rendered into scratch.
    Benchmark("HeadersFilterTemplates", configuration: microConfiguration) { benchmark in
        let fixture = chain!
        for _ in benchmark.scaledIterations {
            blackHole(fixture.runOnce())
        }
    } setup: {
        chain = FilterChainFixture(filters: [FilterSetups.headers()],
                                   request: FilterPayloads.apiRequest(credentials: FilterPayloads.apiKeyHeader))
        chain.runAndCheck([
            "x-auth-client-ip: 10.24.3.17\r\n",
            "x-original-url: http://api.example.com/api/v1/orders\r\n",
            "x-edge-request: id=7c9e6679-7425-40de-944b-e07fc1f90ae7; method=GET; port=48612\r\n",
        ])
    }

    // A JWT's first sight (or any request once the token cache misses): JWTVerifier.verify with
    // no cache in front: base64url, header and payload JSON, the signature through libcrypto,
    // the claim checks. Wall time is the point; the mallocs are recorded at their measured p90
    // (exact: the same count in every batch) with deviation 0, so a new allocation, or one
    // removed, shows. An OpenSSL upgrade changes the libcrypto part: re-record then.
    //
    // ES256, 86 per verification (`--allocation-stacks`; libcrypto's frames unwound with gdb):
    //   Swift 32: JSON 20 (both objects' member arrays as they grow, the boxed values of the
    //     indirect enum, strings, numbers), base64url 3 (one array per segment), ecdsaDER 9
    //     (r, s, the DER sequence and the concatenations that build it);
    //   libcrypto 54: EVP_MD_CTX_new 1, EVP_DigestVerifyInit 13 (the provider's signature and
    //     digest contexts, algorithm fetches that strdup property strings), EVP_DigestVerify 40
    //     (the contexts duplicated for the final step; the DER signature decoded into ECDSA_SIG
    //     and re-encoded to check it is canonical; BN_CTX, EC points and bignums).
    // RS256, 53: Swift 23 (the same JSON and base64url, no DER); libcrypto 30: EVP_MD_CTX_new 1,
    //   EVP_DigestVerifyInit 11, EVP_PKEY_CTX_set_rsa_padding 2 (OpenSSL 3.0 raises an error in
    //   its legacy-ctrl translation and pops it again: ERR_set_debug strdups file and function;
    //   the queue is empty afterwards), EVP_DigestVerify 16 (context dup, BN_CTX, Montgomery).
    Benchmark("JWTColdES256", configuration: coldJWTConfiguration) { benchmark in
        let fixture = coldJWT!
        for _ in benchmark.scaledIterations {
            blackHole(fixture.verifyOnce())
        }
    } setup: {
        coldJWT = JWTColdFixture(token: JWTFixtures.es256)
    }

    Benchmark("JWTColdRS256", configuration: coldJWTConfiguration) { benchmark in
        let fixture = coldJWT!
        for _ in benchmark.scaledIterations {
            blackHole(fixture.verifyOnce())
        }
    } setup: {
        coldJWT = JWTColdFixture(token: JWTFixtures.rs256)
    }
}
