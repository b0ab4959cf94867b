// swift-tools-version: 6.1
import PackageDescription

// Layering, one way: C shims → Core → Posix / HTTP / Config → HTTP1 → Proxy → executables.

// The data path is single-threaded per worker and owns its objects; the runtime's dynamic
// exclusivity checks (swift_beginAccess) cost ~8% of the proxy's CPU per request in a profile
// of the keep-alive benchmark, and find nothing the static checks don't. Off for those modules.
let dataPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"])]

let package = Package(
    name: "Outrider",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "outrider", targets: ["outrider"]),
        .executable(name: "outrider-bench", targets: ["outrider-bench"]),
        // For the benchmark package in Benchmarks/ (and any embedding).
        .library(name: "OutriderCore", targets: ["OutriderCore"]),
        .library(name: "OutriderHTTP", targets: ["OutriderHTTP"]),
        .library(name: "OutriderHTTP1", targets: ["OutriderHTTP1"]),
        .library(name: "OutriderConfig", targets: ["OutriderConfig"]),
        .library(name: "OutriderFilters", targets: ["OutriderFilters"]),
        .library(name: "OutriderBalancing", targets: ["OutriderBalancing"]),
        .library(name: "OutriderTLS", targets: ["OutriderTLS"]),
        .library(name: "OutriderHTTP2", targets: ["OutriderHTTP2"]),
        .library(name: "OutriderProxy", targets: ["OutriderProxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .target(name: "CLinux", path: "Sources/CLinux"),
        .target(name: "CAtomics", path: "Sources/CAtomics"),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CCrypt", path: "Sources/CCrypt", providers: [.apt(["libcrypt-dev"])]),
        .systemLibrary(name: "CNGHTTP2", path: "Sources/CNGHTTP2", pkgConfig: "libnghttp2",
                       providers: [.apt(["libnghttp2-dev"])]),
        .target(name: "OutriderCore", swiftSettings: dataPath),
        .target(name: "OutriderPosix", dependencies: ["OutriderCore", "CLinux"], swiftSettings: dataPath),
        .target(name: "OutriderHTTP", dependencies: ["OutriderCore"], swiftSettings: dataPath),
        .target(name: "OutriderConfig", dependencies: ["OutriderCore", .product(name: "Yams", package: "Yams")]),
        .target(name: "OutriderHTTP1", dependencies: ["OutriderCore", "OutriderHTTP"], swiftSettings: dataPath),
        .target(name: "OutriderFilters", dependencies: ["OutriderCore", "OutriderHTTP", "COpenSSL", "CCrypt", "CAtomics"],
                swiftSettings: dataPath),
        // TLS as bytes in, bytes out: contexts (certificates, ALPN, SNI, mTLS) and an engine over memory BIOs.
        .target(name: "OutriderTLS", dependencies: ["OutriderCore", "COpenSSL"], swiftSettings: dataPath),
        // HTTP/2 as bytes in, bytes out: an nghttp2 session over mem_recv/mem_send, no sockets.
        .target(name: "OutriderHTTP2", dependencies: ["OutriderCore", "OutriderHTTP", "CNGHTTP2"], swiftSettings: dataPath),
        // Upstream choice without I/O: load-balancing policies, retry backoff and budgets.
        .target(name: "OutriderBalancing", dependencies: ["OutriderCore"], swiftSettings: dataPath),
        .target(name: "OutriderProxy", dependencies: [
            "OutriderCore", "OutriderPosix", "OutriderHTTP", "OutriderHTTP1", "OutriderConfig", "OutriderFilters",
            "OutriderBalancing", "OutriderTLS", "OutriderHTTP2", "COpenSSL", "CAtomics",
        ], swiftSettings: dataPath),
        .executableTarget(name: "outrider", dependencies: [
            "OutriderProxy", "OutriderConfig", "OutriderCore", "OutriderTLS",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The load generator (SPEC §11): its own loops and codecs, never the proxy.
        .target(name: "OutriderBench", dependencies: [
            "OutriderCore", "OutriderPosix", "OutriderHTTP", "OutriderHTTP1", "OutriderHTTP2", "OutriderTLS", "CAtomics",
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ], swiftSettings: dataPath),
        .executableTarget(name: "outrider-bench", dependencies: [
            "OutriderBench", "OutriderPosix",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // libFuzzer targets (DESIGN §5): scripts/fuzz.sh NAME SECONDS runs fuzz-NAME on
        // Tests/fuzz/NAME/{corpus,regressions} with its dictionary.
        .target(name: "CFuzzerShim", path: "Sources/CFuzzerShim"),
        .executableTarget(name: "fuzz-http1-parser", dependencies: ["OutriderHTTP1", "OutriderHTTP", "OutriderCore", "CFuzzerShim"],
                          path: "Sources/fuzz-http1-parser"),
        .executableTarget(name: "fuzz-http1-response", dependencies: ["OutriderHTTP1", "OutriderHTTP", "OutriderCore", "CFuzzerShim"],
                          path: "Sources/fuzz-http1-response"),
        .executableTarget(name: "fuzz-chunked", dependencies: ["OutriderHTTP1", "OutriderHTTP", "OutriderCore", "CFuzzerShim"],
                          path: "Sources/fuzz-chunked"),
        .executableTarget(name: "fuzz-path-normalizer", dependencies: ["OutriderHTTP1", "OutriderCore", "CFuzzerShim"],
                          path: "Sources/fuzz-path-normalizer"),
        .executableTarget(name: "fuzz-http2-server", dependencies: ["OutriderHTTP2", "OutriderHTTP", "OutriderCore", "CFuzzerShim"],
                          path: "Sources/fuzz-http2-server"),
        .executableTarget(name: "fuzz-config-loader", dependencies: ["OutriderConfig", "CFuzzerShim"],
                          path: "Sources/fuzz-config-loader"),
        .executableTarget(name: "fuzz-tls13-records", dependencies: ["OutriderTLS", "CFuzzerShim"],
                          path: "Sources/fuzz-tls13-records"),
        .executableTarget(name: "fuzz-jwt", dependencies: ["OutriderFilters", "COpenSSL", "CFuzzerShim"],
                          path: "Sources/fuzz-jwt"),
        .testTarget(name: "OutriderPosixTests", dependencies: ["OutriderPosix"]),
        .testTarget(name: "OutriderHTTP1Tests", dependencies: ["OutriderHTTP1", "OutriderHTTP", "OutriderCore"]),
        .testTarget(name: "OutriderHTTP2Tests", dependencies: ["OutriderHTTP2", "OutriderHTTP", "OutriderCore"]),
        .testTarget(name: "OutriderTLSTests", dependencies: ["OutriderTLS", "OutriderCore", "COpenSSL"]),
        .testTarget(name: "OutriderBenchTests", dependencies: [
            "OutriderBench", .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]),
        .testTarget(name: "OutriderBalancingTests", dependencies: ["OutriderBalancing", "OutriderCore"]),
        .testTarget(name: "OutriderConfigTests", dependencies: ["OutriderConfig", "OutriderCore"]),
        .testTarget(name: "OutriderFiltersTests", dependencies: ["OutriderFilters", "OutriderHTTP", "OutriderCore"],
                    exclude: ["Fixtures"]),
    ]
)
