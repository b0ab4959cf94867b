import Foundation
import Testing
@testable import OutriderConfig

@Suite struct RenderTests {
    /// `outrider print-config` with no file: the contract users see.
    @Test func zeroConfigYAML() {
        #expect(ConfigLoader.zeroConfig().renderYAML() == """
            # Effective Outrider configuration: every default filled in.
            workers: auto
            log_level: info
            admin:
              address: 127.0.0.1:15000
            access_log:
              format: json
              path: stdout
            drain:
              delay: 5s
              timeout: 30s
            listeners:
              - name: inbound
                address: 0.0.0.0:15006
                direction: inbound
                protocols: [http1, h2c]
                original_destination: false
                limits:
                  max_connections: 10000
                  max_header_bytes: 64KiB
                  max_headers: 100
                  max_request_body: 0
                  h2_max_concurrent_streams: 100
                timeouts:
                  header_read: 10s
                  idle: 1m
                forwarded_headers: true
                routes:
                  - name: default
                    match:
                      path_prefix: /
                      host: "*"
                      methods: []
                      headers: {}
                    timeout: 15s
                    filters: []
                    retry:
                      attempts: 2
                      "on": [connect_failure]
                      retriable_status_codes: []
                      per_try_timeout: 0s
                      backoff:
                        base: 25ms
                        max: 250ms
                      budget:
                        ratio: 0.2
                        min_per_second: 10
                      max_replay_body: 64KiB
                    cluster: app
            clusters:
              - name: app
                endpoints:
                  - 127.0.0.1:8080
                dns_refresh: 5s
                protocol: http1
                lb:
                  policy: round_robin
                connect_timeout: 1s
                pool:
                  max_idle_per_endpoint: 64
                  idle_timeout: 1m
                circuit_breaker:
                  max_connections: 1024
                  max_pending: 1024
                  max_requests: 1024

            """)
    }

    @Test func zeroConfigRoundTrips() throws {
        var expected = ConfigLoader.zeroConfig()
        expected.sourcePath = testPath
        #expect(try load(expected.renderYAML()) == expected)
        #expect(try load(expected.renderJSON()) == expected)
    }

    @Test func fullFileRoundTripsThroughYAMLAndJSON() throws {
        let config = try load(fullFile)
        let yaml = config.renderYAML()
        #expect(try load(yaml) == config, "rendered YAML:\n\(yaml)")
        let json = config.renderJSON()
        #expect(try load(json) == config, "rendered JSON:\n\(json)")
        // Rendering is a fixed point: what loads from the output renders the same again.
        #expect(try load(yaml).renderYAML() == yaml)
    }

    @Test func awkwardStringsRoundTrip() throws {
        var config = ConfigLoader.zeroConfig()
        config.sourcePath = testPath
        let values = [
            "", "true", "no", "NULL", "~", "123", "1.5", "1:20", "0x1F", "1_000", "1e3", "*", "&a", "!tag", "- x",
            "a: b", "a #b", "#c", "quote\"d", "back\\slash", "tab\there", "héllo ✓", "trailing:", "[x]", "{y}",
            "%p", "@at", "`tick`", "'single'", " padded ", "${client_ip}", "x,y",
        ]
        config.listeners[0].routes[0].match.headers = values.enumerated().map {
            HeaderMatch(name: "h\($0.offset)", value: $0.element)
        }
        config.listeners[0].routes[0].match.methods = ["GET", "M-SEARCH", "PROPFIND"]
        config.listeners[0].routes[0].rewrite = RouteRewrite(pathPrefix: "/a%20b/~x", host: nil)
        config.listeners[0].name = "1.5"
        config.clusters[0].name = "true"
        config.listeners[0].routes[0].cluster = "true"
        config.accessLog.path = .file("/var/log/my logs/access.log")
        config.admin.address = ConfigAddress(host: "::1", port: 15_000)
        config.workers = .fixed(3)

        let yaml = config.renderYAML()
        #expect(try load(yaml) == config, "rendered YAML:\n\(yaml)")
        let json = config.renderJSON()
        #expect(try load(json) == config, "rendered JSON:\n\(json)")
    }

    @Test func jsonIsValidJSON() throws {
        let json = try load(fullFile).renderJSON()
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let listeners = try #require(object?["listeners"] as? [[String: Any]])
        #expect(listeners.count == 2)
        #expect(object?["workers"] as? Int == 4)
        #expect(listeners[0]["forwarded_headers"] as? Bool == false)
        let limits = try #require(listeners[0]["limits"] as? [String: Any])
        #expect(limits["max_header_bytes"] as? String == "32KiB")
        #expect(limits["max_connections"] as? Int == 0)
    }

    @Test func plainStyleOnlyWhereUnambiguous() {
        #expect(YAMLWriter.isPlainSafe("127.0.0.1:8080"))
        #expect(YAMLWriter.isPlainSafe("app.internal"))
        #expect(YAMLWriter.isPlainSafe("/api/v1"))
        #expect(YAMLWriter.isPlainSafe("x-request-id"))
        for ambiguous in ["", "*", "true", "Off", "null", "42", "-1", "3.5", "1:30", "0o17", "[::1]:80", "a b", "x:", "#x"] {
            #expect(!YAMLWriter.isPlainSafe(ambiguous), "\(ambiguous)")
        }
    }

    @Test func secretsAreRedactedInBothFormats() {
        var yaml = ""
        YAMLWriter.writeMapping([("client_secret", .secret)], indent: 0, into: &yaml)
        #expect(yaml == "client_secret: \"<redacted>\"\n")
        var json = ""
        JSONWriter.write(.mapping([("client_secret", .secret)]), indent: 0, into: &json)
        #expect(json == "{\n  \"client_secret\": \"<redacted>\"\n}")
    }
}
