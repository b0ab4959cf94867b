import Testing
@testable import OutriderConfig

@Suite struct ZeroConfigTests {
    @Test func matchesTheSpec() throws {
        let config = ConfigLoader.zeroConfig()
        #expect(config.sourcePath == nil)
        #expect(config.workers == .auto)
        #expect(config.logLevel == .info)
        #expect(config.admin.address == ConfigAddress(host: "127.0.0.1", port: 15_000))
        #expect(config.accessLog == AccessLogConfig(format: .json, path: .stdout))
        #expect(config.drain == DrainConfig(delay: .seconds(5), timeout: .seconds(30)))

        try #require(config.listeners.count == 1)
        let listener = config.listeners[0]
        #expect(listener.name == "inbound")
        #expect(listener.address == ConfigAddress(host: "0.0.0.0", port: 15_006))
        #expect(listener.direction == .inbound)
        #expect(listener.protocols == [.http1, .h2c])
        #expect(listener.limits.maxConnections == 10_000)
        #expect(listener.limits.maxHeaderBytes == 65_536)
        #expect(listener.limits.maxHeaders == 100)
        #expect(listener.limits.maxRequestBody == 0)
        #expect(listener.limits.h2MaxConcurrentStreams == 100)
        #expect(listener.timeouts == ListenerTimeouts(headerRead: .seconds(10), idle: .seconds(60)))
        #expect(listener.forwardedHeaders)

        try #require(listener.routes.count == 1)
        let route = listener.routes[0]
        #expect(route.name == "default")
        #expect(route.match == RouteMatch(pathPrefix: "/", host: "*", methods: [], headers: []))
        #expect(route.timeout == .seconds(15))
        #expect(route.rewrite == nil)
        #expect(route.cluster == "app")

        try #require(config.clusters.count == 1)
        let cluster = config.clusters[0]
        #expect(cluster.name == "app")
        #expect(cluster.endpoints == [ConfigAddress(host: "127.0.0.1", port: 8_080)])
        #expect(cluster.dnsRefresh == .seconds(5))
        #expect(cluster.protocol == .http1)
        #expect(cluster.lb.policy == .roundRobin)
        #expect(cluster.connectTimeout == .seconds(1))
        #expect(cluster.pool == PoolConfig(maxIdlePerEndpoint: 64, idleTimeout: .seconds(60)))
        #expect(config.cluster(named: "app") == cluster)
    }

    @Test(arguments: ["", "# only a comment\n", "---\n", "{}\n", "~\n"])
    func anEmptyFileIsTheZeroConfig(yaml: String) throws {
        var expected = ConfigLoader.zeroConfig()
        expected.sourcePath = testPath
        #expect(try load(yaml) == expected)
    }
}

@Suite struct DefaultsFillTests {
    @Test func topLevelSectionsFillIndividually() throws {
        let config = try load("""
            log_level: debug
            drain: { delay: 0 }
            access_log: { format: off }
            """)
        var expected = ConfigLoader.zeroConfig()
        expected.sourcePath = testPath
        expected.logLevel = .debug
        expected.drain.delay = .zero
        expected.accessLog.format = .off
        #expect(config == expected)
    }

    @Test func nullValuesMeanTheDefault() throws {
        let config = try load("""
            workers:
            admin:
            access_log: ~
            drain: { delay: null }
            listeners:
              - name: edge
                limits:
                timeouts: { idle: ~ }
                routes:
                  - match:
                    rewrite:
                    filters:
                    retry:
            """)
        var expected = ConfigLoader.zeroConfig()
        expected.sourcePath = testPath
        expected.listeners[0].name = "edge"
        expected.listeners[0].routes[0].name = "route-0"
        #expect(config == expected)
    }

    @Test func listenerAndRouteDefaults() throws {
        let config = try load("""
            listeners:
              - address: 0.0.0.0:8000
              - address: 0.0.0.0:8001
                limits: { max_headers: 20 }
                routes:
                  - match: { path_prefix: /a }
                  - match: { path_prefix: /b }
                    cluster: app
                  - name: named
            """)
        try #require(config.listeners.count == 2)
        let first = config.listeners[0]
        #expect(first.name == "listener-0")
        #expect(first.routes == [Defaults.route])
        let second = config.listeners[1]
        #expect(second.name == "listener-1")
        #expect(second.protocols == [.http1, .h2c])
        #expect(second.limits == ListenerLimits(maxConnections: 10_000, maxHeaderBytes: 65_536, maxHeaders: 20,
                                                maxRequestBody: 0, h2MaxConcurrentStreams: 100))
        #expect(second.timeouts == Defaults.timeouts)
        #expect(second.routes.map(\.name) == ["route-0", "route-1", "named"])
        #expect(second.routes.map(\.cluster) == ["app", "app", "app"])
        #expect(second.routes[0].match == RouteMatch(pathPrefix: "/a", host: "*", methods: [], headers: []))
        #expect(second.routes[0].timeout == .seconds(15))
        #expect(config.clusters == [Defaults.cluster])
    }

    @Test func clusterDefaults() throws {
        let config = try load("""
            clusters:
              - name: app
                endpoints: [app.internal:9000]
            """)
        var expected = Defaults.cluster
        expected.endpoints = [ConfigAddress(host: "app.internal", port: 9_000)]
        #expect(config.clusters == [expected])
        #expect(config.listeners == [Defaults.listener])
    }

    @Test func mergeKeysShareSettings() throws {
        let config = try load("""
            clusters:
              - &base
                name: app
                endpoints: [127.0.0.1:8080]
                connect_timeout: 2s
                pool: { max_idle_per_endpoint: 8 }
              - <<: *base
                name: other
                endpoints: [127.0.0.1:9090]
            """)
        try #require(config.clusters.count == 2)
        #expect(config.clusters[1].name == "other")
        #expect(config.clusters[1].endpoints == [ConfigAddress(host: "127.0.0.1", port: 9_090)])
        #expect(config.clusters[1].connectTimeout == .seconds(2))
        #expect(config.clusters[1].pool.maxIdlePerEndpoint == 8)
    }
}
