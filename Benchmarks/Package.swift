// swift-tools-version: 6.1
import PackageDescription

// Micro benchmarks of the data path with ordo-one's package-benchmark: wall time and mallocs
// per operation, malloc thresholds in Thresholds/. Run with scripts/microbench.sh.
//
// `traits: ["MallocInterposer"]` replaces the package's default traits
// (MallocInterposer + RuntimeInterposer). On Linux with Swift 6.3 its manifest adds
// ordo-one/swift-runtime-interposer, which the local package mirror does not have; that package
// is only used by a RuntimeInterposer-conditional product, so with the trait off SwiftPM does not
// resolve it. Without `traits:` resolution fails. Only the ARC metrics (retain/release counts)
// need it; they are not used here.

let package = Package(
    name: "OutriderBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "Outrider", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "OutriderBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "OutriderCore", package: "Outrider"),
                .product(name: "OutriderHTTP", package: "Outrider"),
                .product(name: "OutriderHTTP1", package: "Outrider"),
                .product(name: "OutriderConfig", package: "Outrider"),
                .product(name: "OutriderProxy", package: "Outrider"),
            ],
            path: "Benchmarks/OutriderBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The filter chain. Compiled like the modules it mirrors (OutriderFilters and
        // OutriderProxy's Downstream): without the runtime's exclusivity checks, which would add
        // 16 swift_beginAccess calls per request to the fixture's FilterContext writes.
        .executableTarget(
            name: "OutriderFilterBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "OutriderCore", package: "Outrider"),
                .product(name: "OutriderHTTP", package: "Outrider"),
                .product(name: "OutriderHTTP1", package: "Outrider"),
                .product(name: "OutriderFilters", package: "Outrider"),
            ],
            path: "Benchmarks/OutriderFilterBenchmarks",
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
