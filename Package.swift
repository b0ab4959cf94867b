// swift-tools-version: 6.1
import PackageDescription

// Layering, one way: C shims → Core → Posix / HTTP / Config → HTTP1 → Proxy → executables.
let package = Package(
    name: "Outrider",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "outrider", targets: ["outrider"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .target(name: "CLinux", path: "Sources/CLinux"),
        .target(name: "OutriderCore"),
        .target(name: "OutriderPosix", dependencies: ["OutriderCore", "CLinux"]),
        .target(name: "OutriderHTTP", dependencies: ["OutriderCore"]),
        .target(name: "OutriderConfig", dependencies: ["OutriderCore", .product(name: "Yams", package: "Yams")]),
        .target(name: "OutriderHTTP1", dependencies: ["OutriderCore", "OutriderHTTP"]),
        .target(name: "OutriderProxy", dependencies: [
            "OutriderCore", "OutriderPosix", "OutriderHTTP", "OutriderHTTP1", "OutriderConfig",
        ]),
        .executableTarget(name: "outrider", dependencies: [
            "OutriderProxy", "OutriderConfig", "OutriderCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "OutriderHTTP1Tests", dependencies: ["OutriderHTTP1", "OutriderHTTP", "OutriderCore"]),
        .testTarget(name: "OutriderConfigTests", dependencies: ["OutriderConfig", "OutriderCore"]),
    ]
)
