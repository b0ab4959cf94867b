import Testing
@testable import OutriderConfig

/// The repository's `config/` directory, found from this source file: `Tests/OutriderConfigTests/…`.
func repositoryConfigDirectory(filePath: String = #filePath) -> String {
    var components = filePath.split(separator: "/", omittingEmptySubsequences: false)
    components.removeLast(3)
    return components.joined(separator: "/") + "/config"
}

@Suite struct ExampleConfigTests {
    static let directory = repositoryConfigDirectory()
    static let yamlFiles = listDirectory(directory).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }

    /// SPEC §2: one commented example per role.
    @Test func theConfigDirectoryHasAnExamplePerRole() {
        for role in ["sidecar-proxy.yaml", "auth-container.yaml", "ambassador.yaml"] {
            #expect(Self.yamlFiles.contains(role), "looked for \(role) in \(Self.directory)")
        }
    }

    /// Every example users are pointed at must pass `outrider validate`.
    @Test(arguments: yamlFiles)
    func exampleLoads(file: String) throws {
        let path = Self.directory + "/" + file
        do {
            let config = try ConfigLoader.load(path: path, environment: [:])
            #expect(config.sourcePath == path)
            // And print-config of it loads back to the same thing.
            #expect(try ConfigLoader.load(yaml: config.renderYAML(), path: path, environment: [:]) == config)
        } catch {
            Issue.record("\(file) does not load:\n\(error)")
        }
    }

    @Test func sidecarExampleIsTheZeroConfigPlusOneRouteAndATLSListener() throws {
        let config = try ConfigLoader.load(path: Self.directory + "/sidecar-proxy.yaml", environment: [:])
        var expected = ConfigLoader.zeroConfig()
        var tlsListener = Defaults.listener
        tlsListener.name = "inbound-tls"
        tlsListener.address = ConfigAddress(host: "0.0.0.0", port: 15_443)
        tlsListener.protocols = [.http1, .h2]
        let examples = Self.directory + "/examples/tls"
        tlsListener.tls = ListenerTLSConfig(
            certificate: CertificatePair(certificate: examples + "/server.crt", privateKey: examples + "/server.key"),
            clientCA: examples + "/ca.crt", minVersion: .v1_2)
        expected.listeners.append(tlsListener)
        expected.sourcePath = config.sourcePath
        expected.listeners[0].routes.insert(
            RouteConfig(
                name: "api-v1",
                match: RouteMatch(pathPrefix: "/api/v1", host: "*.example.com", methods: ["GET", "POST"],
                                  headers: [HeaderMatch(name: "x-tenant", value: "blue")]),
                timeout: .seconds(5),
                rewrite: RouteRewrite(pathPrefix: "/v1", host: "app.internal"),
                cluster: "app",
                retry: RetryPolicy(attempts: 3, on: [.connectFailure, .refusedStream, .reset, .gatewayError],
                                   retriableStatusCodes: [], perTryTimeout: .seconds(2),
                                   backoff: RetryPolicy.default.backoff, budget: RetryPolicy.default.budget,
                                   maxReplayBody: RetryPolicy.default.maxReplayBody)
            ),
            at: 0
        )
        var grpcRoute = Defaults.route
        grpcRoute.name = "grpc"
        grpcRoute.match = RouteMatch(pathPrefix: "/helloworld.Greeter", host: "*", methods: [],
                                     headers: [HeaderMatch(name: "content-type", value: "application/grpc")])
        grpcRoute.timeout = .zero
        grpcRoute.cluster = "app-grpc"
        expected.listeners[0].routes.insert(grpcRoute, at: 1)
        var grpcCluster = Defaults.cluster
        grpcCluster.name = "app-grpc"
        grpcCluster.endpoints = [ConfigAddress(host: "127.0.0.1", port: 50_051)]
        grpcCluster.protocol = .h2c
        grpcCluster.outlierDetection = OutlierDetectionConfig(consecutiveFailures: 5, baseEjection: .seconds(30), maxEjectedPercent: 50)
        expected.clusters.append(grpcCluster)
        #expect(config == expected)
    }
}

@Suite struct AmbassadorExampleTests {
    @Test func ambassadorExample() throws {
        let config = try ConfigLoader.load(path: repositoryConfigDirectory() + "/ambassador.yaml", environment: [:])
        try #require(config.listeners.count == 1)
        let listener = config.listeners[0]
        #expect(listener.address == ConfigAddress(host: "127.0.0.1", port: 15_001))
        #expect(listener.direction == .outbound)
        #expect(listener.routes.map(\.name) == ["example-tls", "payments"])
        #expect(listener.routes[0].match.host == "outrider.example")
        #expect(listener.routes[0].cluster == "example-tls")
        let route = try #require(listener.routes.last)
        #expect(route.cluster == "payments")
        #expect(route.timeout == .seconds(10))
        #expect(route.retry == RetryPolicy(
            attempts: 3, on: [.connectFailure, .refusedStream, .reset, .gatewayError], retriableStatusCodes: [],
            perTryTimeout: .seconds(3), backoff: RetryBackoff(base: .milliseconds(25), max: .milliseconds(250)),
            budget: RetryBudget(ratio: 0.2, minPerSecond: 10), maxReplayBody: 64 * 1_024))

        let cluster = try #require(config.cluster(named: "payments"))
        #expect(cluster.endpoints == [9_001, 9_002, 9_003].map { ConfigAddress(host: "127.0.0.1", port: $0) })
        #expect(cluster.lb == LoadBalancingConfig(policy: .leastRequest))
        #expect(cluster.healthCheck == HealthCheckConfig(path: "/healthz", interval: .seconds(5), timeout: .seconds(1),
                                                         healthyThreshold: 2, unhealthyThreshold: 3))
        #expect(cluster.outlierDetection == OutlierDetectionConfig(consecutiveFailures: 5, baseEjection: .seconds(30),
                                                                   maxEjectedPercent: 50))
        #expect(cluster.circuitBreaker == CircuitBreakerConfig(maxConnections: 1_024, maxPending: 1_024, maxRequests: 1_024))
        #expect(cluster.tls == nil)

        // TLS origination, verified against the example CA, with the example client certificate.
        let examples = repositoryConfigDirectory() + "/examples/tls"
        let tlsCluster = try #require(config.cluster(named: "example-tls"))
        #expect(tlsCluster.endpoints == [ConfigAddress(host: "127.0.0.1", port: 9_443)])
        #expect(tlsCluster.protocol == .http1)
        #expect(tlsCluster.tls == ClusterTLSConfig(
            sni: "outrider.example", ca: examples + "/ca.crt", verify: true,
            clientCertificate: CertificatePair(certificate: examples + "/client.crt", privateKey: examples + "/client.key")))
    }
}

@Suite struct AuthContainerExampleTests {
    static let directory = repositoryConfigDirectory()

    @Test func authContainerExample() throws {
        let config = try ConfigLoader.load(path: Self.directory + "/auth-container.yaml", environment: [:])
        #expect(config.listeners.map(\.address) == [ConfigAddress(host: "0.0.0.0", port: 4_180)])
        #expect(config.clusters.map(\.endpoints) == [[ConfigAddress(host: "127.0.0.1", port: 8_080)]])
        let route = try #require(config.listeners.first?.routes.first)
        #expect(route.cluster == "app")
        guard route.filters.count == 3, case .auth(let auth) = route.filters[0], case .rateLimit = route.filters[1],
              case .headers = route.filters[2] else {
            Issue.record("expected auth, rate_limit, headers; got \(route.filters)")
            return
        }
        #expect(auth.allowAnonymous == [AnonymousRule(pathPrefix: "/healthz", methods: ["GET"])])
        #expect(auth.external == nil)
        // The credentials the examples README documents.
        let examples = Self.directory + "/examples"
        #expect(auth.apiKey?.keysFile == examples + "/api-keys")
        #expect(auth.apiKey?.keys == [
            APIKeyEntry(name: "ci-bot", secret: .plain(Array("example-key-ci-bot-6f1d2c0a".utf8))),
            APIKeyEntry(name: "reporting", secret: .sha256(try #require(Hex.decode(reportingDigest)))),
        ])
        #expect(auth.basic?.entries == [HtpasswdEntry(user: "alice", hash: aliceBcrypt), HtpasswdEntry(user: "bob", hash: bobSHA)])
        let jwt = try #require(auth.jwt)
        #expect(jwt.jwksFile == examples + "/jwks.json")
        #expect(jwt.issuer == "https://issuer.example")
        #expect(jwt.audiences == ["app"])
        #expect(jwt.algorithms == ["RS256", "ES256"])
        let jwks = try #require(jwt.jwksJSON)
        #expect(jwks.contains("\"example-rsa\"") && jwks.contains("\"example-ec\""))
        #expect(listDirectory(examples + "/jwt-private") == ["example-ec.pem", "example-rsa.pem"])
        let readme = try FileReader.readText(examples + "/README.md", limit: 1 << 20).get()
        #expect(readme.hasPrefix("# EXAMPLES ONLY — never use these keys or passwords in production"))
        for credential in ["example-key-ci-bot-6f1d2c0a", "example-key-reporting-93ab41e7", alicePassword, "bob-example-password"] {
            #expect(readme.contains(credential))
        }
    }
}
