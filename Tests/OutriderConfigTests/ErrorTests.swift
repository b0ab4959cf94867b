import Testing
@testable import OutriderConfig

/// `FILE:LINE:COL: message` for the test file.
func at(_ line: Int, _ column: Int, _ message: String) -> String {
    "\(testPath):\(line):\(column): \(message)"
}

@Suite struct SyntaxErrorTests {
    @Test func yamlSyntaxErrorHasAPosition() {
        #expect(errorLines("listeners:\n  - name: [a\n") == [
            at(3, 1, "invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence at 2:11)"),
        ])
        #expect(errorLines("admin:\n  address: \"127.0.0.1:1\n") == [
            at(3, 1, "invalid YAML: found unexpected end of stream (while scanning a quoted scalar at 2:12)"),
        ])
        #expect(errorLines("a: b\n\tc: d\n") == [
            at(2, 1, "invalid YAML: found a tab character that violates indentation (while scanning a plain scalar at 1:4)"),
        ])
    }

    @Test func duplicateKeysAreErrors() {
        #expect(errorLines("workers: 1\nlog_level: info\nworkers: 2\n") == [
            at(1, 1, "key 'workers' appears more than once in this mapping"),
        ])
    }

    @Test func severalDocumentsAreAnError() {
        #expect(errorLines("workers: 1\n---\nworkers: 2\n") == [
            at(2, 1, "invalid YAML: but found another document (expected a single document in the stream at 1:1)"),
        ])
    }

    @Test func topLevelMustBeAMapping() {
        #expect(errorLines("- a\n") == [at(1, 1, "expected a mapping for the top level, got a list")])
        #expect(errorLines("hello\n") == [at(1, 1, "expected a mapping for the top level, got a scalar")])
    }

    @Test func unreadableConfigFile() {
        do {
            _ = try ConfigLoader.load(path: "/nonexistent/outrider.yaml", environment: [:])
            Issue.record("expected an error")
        } catch {
            #expect(error.description == "/nonexistent/outrider.yaml:1:1: cannot read config file: No such file or directory")
        }
    }

    @Test func loadFromPathReportsThatPath() throws {
        let directory = makeTemporaryDirectory()
        defer { removeTree(directory) }
        let path = directory + "/bad.yaml"
        writeFile(path, "workers: many\n")
        do {
            _ = try ConfigLoader.load(path: path, environment: [:])
            Issue.record("expected an error")
        } catch {
            #expect(error.description == "\(path):1:10: invalid value 'many' for 'workers': expected auto or a number from 1 to 1024")
        }
    }
}

@Suite struct UnknownKeyTests {
    @Test func atEveryLevel() {
        let yaml = """
            workerz: 2
            admin: { address: 127.0.0.1:15000, port: 1 }
            access_log: { format: json, file: x }
            drain: { delay: 1s, grace: 2s }
            listeners:
              - name: a
                adress: 0.0.0.0:1
                limits: { max_body: 1 }
                timeouts: { read: 1s }
                routes:
                  - match: { prefix: / }
                    rewrite: { path: / }
                    clustr: app
            clusters:
              - name: app
                endpoints: [127.0.0.1:8080]
                lb: { algorithm: x }
                pool: { size: 1 }
                weight: 2
            """
        #expect(errorLines(yaml) == [
            at(1, 1, "unknown key 'workerz' in the top level; expected one of: workers, log_level, admin, access_log, drain, listeners, clusters"),
            at(2, 36, "unknown key 'port' in admin; expected one of: address"),
            at(3, 29, "unknown key 'file' in access_log; expected one of: format, path"),
            at(4, 21, "unknown key 'grace' in drain; expected one of: delay, timeout"),
            at(7, 5, "unknown key 'adress' in listener; expected one of: name, address, direction, protocols, tls, original_destination, limits, timeouts, forwarded_headers, routes"),
            at(8, 15, "unknown key 'max_body' in limits; expected one of: max_connections, max_header_bytes, max_headers, max_request_body, h2_max_concurrent_streams"),
            at(9, 17, "unknown key 'read' in timeouts; expected one of: header_read, idle"),
            at(11, 18, "unknown key 'prefix' in match; expected one of: path_prefix, host, methods, headers"),
            at(12, 20, "unknown key 'path' in rewrite; expected one of: path_prefix, host"),
            at(13, 9, "unknown key 'clustr' in route; expected one of: name, match, timeout, filters, retry, rewrite, cluster"),
            at(17, 11, "unknown key 'algorithm' in lb; expected one of: policy, key"),
            at(18, 13, "unknown key 'size' in pool; expected one of: max_idle_per_endpoint, idle_timeout"),
            at(19, 5, "unknown key 'weight' in cluster; expected one of: name, endpoints, dns_refresh, protocol, tls, lb, connect_timeout, pool, health_check, outlier_detection, circuit_breaker"),
        ])
    }
}

@Suite struct TypeErrorTests {
    @Test func wrongShapesPointAtTheValue() {
        let yaml = """
            admin: 127.0.0.1:15000
            drain: [5s]
            listeners:
              name: a
            clusters:
              - name: { first: app }
                endpoints: 127.0.0.1:8080
                pool: 3
            """
        #expect(errorLines(yaml) == [
            at(1, 8, "expected a mapping for admin, got a scalar"),
            at(2, 8, "expected a mapping for drain, got a list"),
            at(4, 3, "expected a list for 'listeners', got a mapping"),
            at(6, 11, "expected a string for 'name', got a mapping"),
            at(7, 16, "expected a list for 'endpoints', got a scalar"),
            at(8, 11, "expected a mapping for pool, got a scalar"),
        ])
    }

    @Test func wrongScalarsPointAtTheValue() {
        let yaml = """
            workers: 2000
            log_level: verbose
            access_log: { format: text, path: "" }
            listeners:
              - direction: sideways
                forwarded_headers: yes
                limits: { max_connections: -1, max_headers: 1.5, h2_max_concurrent_streams: 0,
                          max_header_bytes: 0, max_request_body: -1 }
                routes:
                  - name: "bad name"
                    cluster: ""
            """
        #expect(errorLines(yaml) == [
            at(1, 10, "invalid value '2000' for 'workers': expected auto or a number from 1 to 1024"),
            at(2, 12, "invalid value 'verbose' for 'log_level'; expected one of: trace, debug, info, notice, warning, error, critical"),
            at(3, 23, "invalid value 'text' for 'format'; expected one of: json, combined, off"),
            at(3, 35, "'path' must not be empty"),
            at(5, 16, "invalid value 'sideways' for 'direction'; expected one of: inbound, outbound"),
            at(6, 24, "invalid value 'yes' for 'forwarded_headers': expected true or false"),
            at(7, 32, "'max_connections' must be between 0 and 10000000, got -1"),
            at(7, 49, "invalid value '1.5' for 'max_headers': expected a whole number"),
            at(7, 81, "'h2_max_concurrent_streams' must be between 1 and 2147483647, got 0"),
            at(8, 33, "'max_header_bytes' must be between 1 and 16MiB, got 0"),
            at(8, 54, "invalid size '-1' for 'max_request_body': expected a whole number of bytes with an optional unit B, KiB, MiB, GiB, KB, MB or GB, like 64KiB"),
            at(10, 15, "invalid name 'bad name': use letters, digits, '-', '_' and '.' (at most 128)"),
            at(11, 18, "'cluster' must not be empty"),
        ])
    }

    @Test func badDurations() {
        let yaml = """
            drain: { delay: 5, timeout: 1.5s }
            listeners:
              - timeouts: { header_read: 0, idle: 10 minutes }
                routes:
                  - timeout: -1s
            clusters:
              - name: app
                endpoints: [127.0.0.1:8080]
                dns_refresh: 0s
                connect_timeout: 1d
                pool: { idle_timeout: 0 }
            """
        let hint = "expected a whole number with a unit ms, s, m or h, like 250ms or 5s"
        #expect(errorLines(yaml) == [
            at(1, 17, "invalid duration '5' for 'delay': \(hint)"),
            at(1, 29, "invalid duration '1.5s' for 'timeout': \(hint)"),
            at(3, 30, "'header_read' must be greater than zero"),
            at(3, 39, "invalid duration '10 minutes' for 'idle': \(hint)"),
            at(5, 18, "invalid duration '-1s' for 'timeout': \(hint)"),
            at(9, 18, "'dns_refresh' must be greater than zero"),
            at(10, 22, "invalid duration '1d' for 'connect_timeout': \(hint)"),
            at(11, 27, "'idle_timeout' must be greater than zero"),
        ])
    }

    @Test func badAddresses() {
        let yaml = """
            admin: { address: localhost:15000 }
            listeners:
              - address: 0.0.0.0
              - address: 0.0.0.0:70000
              - address: "::1:80"
            clusters:
              - name: app
                endpoints:
                  - 127.0.0.1:0
                  - 999.1.1.1:80
                  - app.internal:8080
                  - "[::1]:8080"
            """
        #expect(errorLines(yaml) == [
            at(1, 19, "invalid address 'localhost:15000' for 'address': the host must be an IP address, like 0.0.0.0 or [::]"),
            at(3, 14, "invalid address '0.0.0.0' for 'address': expected HOST:PORT or [IPv6]:PORT"),
            at(4, 14, "invalid address '0.0.0.0:70000' for 'address': the port must be between 1 and 65535"),
            at(5, 14, "invalid address '::1:80' for 'address': expected HOST:PORT or [IPv6]:PORT"),
            at(9, 9, "invalid address '127.0.0.1:0' for 'endpoints': the port must be between 1 and 65535"),
            at(10, 9, "invalid address '999.1.1.1:80' for 'endpoints': the host is not a valid IP address or DNS name"),
        ])
    }
}

@Suite struct ValidationErrorTests {
    @Test func routeNamingAMissingCluster() {
        let yaml = """
            listeners:
              - routes:
                  - name: api
                    cluster: backend
                  - name: web
                    cluster: ap
            clusters:
              - name: app
                endpoints: [127.0.0.1:8080]
              - name: backend-v2
                endpoints: [127.0.0.1:8081]
            """
        #expect(errorLines(yaml) == [
            at(4, 18, "route 'api' names cluster 'backend', which is not defined; defined clusters: app, backend-v2"),
            at(6, 18, "route 'web' names cluster 'ap', which is not defined; defined clusters: app, backend-v2"),
        ])
    }

    @Test func defaultClusterMissing() {
        #expect(errorLines("""
            listeners:
              - name: a
              - address: 0.0.0.0:8000
                routes:
                  - name: r
            clusters:
              - name: other
                endpoints: [127.0.0.1:8080]
            """) == [
            at(2, 5, "listener 'a' has no 'routes', and the default route needs cluster 'app', which is not defined; defined clusters: other"),
            at(5, 9, "route 'r' has no 'cluster', and the default cluster 'app' is not defined; defined clusters: other"),
        ])
        #expect(errorLines("""
            workers: 2
            clusters:
              - name: other
                endpoints: [127.0.0.1:8080]
            """) == [
            at(2, 1, "no 'listeners' given, and the default listener routes to cluster 'app', which is not defined in 'clusters'"),
        ])
    }

    @Test func duplicateNames() {
        let yaml = """
            listeners:
              - name: edge
                address: 0.0.0.0:8000
                routes:
                  - name: r
                  - name: r
                  - {}
                  - name: route-2
              - name: edge
                address: 0.0.0.0:8001
            clusters:
              - name: app
                endpoints: [127.0.0.1:8080]
              - name: app
                endpoints: [127.0.0.1:8081]
            """
        #expect(errorLines(yaml) == [
            at(6, 15, "duplicate route name 'r' in listener 'edge' (first at 5:15)"),
            at(8, 15, "duplicate route name 'route-2' in listener 'edge' (first at 7:9)"),
            at(9, 11, "duplicate listener name 'edge' (first at 2:11)"),
            at(14, 11, "duplicate cluster name 'app' (first at 12:11)"),
        ])
    }

    @Test func overlappingAddresses() {
        let yaml = """
            admin: { address: 127.0.0.1:8002 }
            listeners:
              - address: 0.0.0.0:8000
              - address: 0.0.0.0:8000
              - address: 127.0.0.1:8000
              - address: "[::]:8001"
              - address: 10.0.0.1:8001
              - address: 0.0.0.0:8002
            """
        #expect(errorLines(yaml) == [
            at(1, 19, "admin address 127.0.0.1:8002 overlaps listener 'listener-5' at 0.0.0.0:8002"),
            at(4, 14, "listener 'listener-1' address 0.0.0.0:8000 overlaps listener 'listener-0' at 0.0.0.0:8000"),
            at(5, 14, "listener 'listener-2' address 127.0.0.1:8000 overlaps listener 'listener-0' at 0.0.0.0:8000"),
            at(7, 14, "listener 'listener-4' address 10.0.0.1:8001 overlaps listener 'listener-3' at [::]:8001"),
        ])
        #expect(errorLines("listeners: [{ name: x, address: 127.0.0.1:15000 }]\n") == [
            at(1, 33, "listener 'x' address 127.0.0.1:15000 overlaps the admin address 127.0.0.1:15000"),
        ])
        #expect(errorLines("listeners: [{ name: a }, { name: b }]\n") == [
            at(1, 26, "listener 'b' address 0.0.0.0:15006 overlaps listener 'a' at 0.0.0.0:15006"),
        ])
    }

    @Test func endpointsProblems() {
        let yaml = """
            clusters:
              - name: app
                endpoints: []
              - name: b
                endpoints: [127.0.0.1:80, 127.0.0.1:80]
              - name: c
              - endpoints: [127.0.0.1:80]
            """
        #expect(errorLines(yaml) == [
            at(3, 16, "cluster 'app' has no endpoints"),
            at(5, 31, "duplicate endpoint 127.0.0.1:80 in cluster 'b'"),
            at(6, 5, "cluster 'c' is missing required key 'endpoints'"),
            at(7, 5, "cluster is missing required key 'name'"),
        ])
    }

    @Test func emptyListsThatCannotBeEmpty() {
        #expect(errorLines("listeners: []\n") == [at(1, 12, "'listeners' must name at least one listener")])
        #expect(errorLines("listeners: [{ routes: [] }]\n") == [at(1, 23, "'routes' must name at least one route")])
        #expect(errorLines("listeners: [{ protocols: [] }]\n") == [at(1, 26, "'protocols' must name at least one protocol")])
    }

    @Test func matchProblems() {
        let yaml = """
            listeners:
              - routes:
                  - match:
                      path_prefix: api
                      host: "example.com:8080"
                      methods: [GET, get, "PO ST", GET]
                      headers: { "bad header": x, X-A: 1, x-a: 2 }
                  - match: { path_prefix: "/a?b", host: "*foo.com" }
                    rewrite: { path_prefix: v2, host: "a b" }
            """
        #expect(errorLines(yaml) == [
            at(4, 24, "path_prefix 'api' must start with '/'"),
            at(5, 17, "invalid host 'example.com:8080' for 'match': expected *, *.example.com or a host name without port"),
            at(6, 26, "invalid method 'get': methods are upper-case tokens like GET or POST"),
            at(6, 31, "invalid method 'PO ST': methods are upper-case tokens like GET or POST"),
            at(6, 40, "duplicate method 'GET' in 'methods'"),
            at(7, 22, "invalid header name in 'headers': expected a token like x-tenant"),
            at(7, 47, "duplicate header 'x-a' in 'headers' (names are case-insensitive)"),
            at(8, 31, "path_prefix '/a?b' must be a path: no spaces, control characters, '?' or '#'"),
            at(8, 45, "invalid host '*foo.com' for 'match': expected *, *.example.com or a host name without port"),
            at(9, 33, "path_prefix 'v2' must start with '/'"),
            at(9, 43, "invalid host 'a b' for 'rewrite': expected a host name, optionally with :PORT"),
        ])
    }

    @Test func headerValuesWithControlCharactersNeverMatch() {
        #expect(errorLines("listeners: [{ routes: [{ match: { headers: { x-a: \"a\\nb\" } } }] }]\n") == [
            at(1, 51, "invalid value for header 'x-a': control characters (such as a newline) never match"),
        ])
    }

    @Test func allErrorsAreCollectedInFileOrder() throws {
        // Cross-reference errors are found last but still sorted among the others by position.
        let yaml = """
            workers: none
            listeners:
              - routes:
                  - cluster: missing
                    timeout: soon
            clusters:
              - name: app
                endpoints: [127.0.0.1:0]
            log_level: loud
            """
        do {
            _ = try ConfigLoader.load(yaml: yaml, path: testPath, environment: [:])
            Issue.record("expected errors")
        } catch {
            #expect(error.errors.map { [$0.line, $0.column] } == [[1, 10], [4, 18], [5, 18], [8, 17], [9, 12]])
            #expect(error.errors.allSatisfy { $0.file == testPath })
            #expect(error.description.split(separator: "\n").count == 5)
            #expect(error.errors[1].description
                == at(4, 18, "route 'route-0' names cluster 'missing', which is not defined; defined clusters: app"))
        }
    }
}

@Suite struct UnsupportedSectionTests {
    @Test func listenerSections() {
        let yaml = """
            listeners:
              - original_destination: true
                protocols: [http1, h2]
                routes:
                  - filters:
                      - auth: { realm: app, api_key: { keys_file: /nonexistent/keys } }
            """
        #expect(errorLines(yaml) == [
            at(3, 24, "protocol 'h2' needs tls; use h2c for cleartext HTTP/2"),
            at(6, 55, "cannot read keys_file '/nonexistent/keys': No such file or directory"),
        ])
    }

    @Test func clusterSections() {
        let yaml = """
            clusters:
              - name: app
                endpoints: [127.0.0.1:8080]
                protocol: h2c
                health_check: { path: /healthz }
              - name: b
                endpoints: [127.0.0.1:8081]
                protocol: h2
                tls: { sni: api.example.com }
            """
        #expect(errorLines(yaml) == [
            at(5, 19, "health_check is not supported yet on 'h2c' clusters (the probe speaks HTTP/1.1)"),
        ])
    }

    @Test func harmlessFormsOfUnsupportedKeysLoad() throws {
        let config = try load("""
            listeners:
              - tls: ~
                original_destination: false
                routes:
                  - filters: []
                    retry:
            clusters:
              - name: app
                endpoints: [127.0.0.1:8080]
                protocol: http1
                tls:
                lb: { policy: round_robin }
            """)
        #expect(config.listeners[0].routes[0].cluster == "app")
        // A null `tls` is no tls: cleartext, with the cleartext protocols.
        #expect(config.listeners[0].tls == nil)
        #expect(config.listeners[0].protocols == [.http1, .h2c])
        #expect(config.clusters[0].tls == nil)
    }
}
