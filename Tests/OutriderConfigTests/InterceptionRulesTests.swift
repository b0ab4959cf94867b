import Testing
@testable import OutriderConfig

/// `outrider iptables` (SPEC §10): the nat rules, as the iptables-restore script users pipe to
/// `iptables-restore --noflush`.
@Suite struct InterceptionRulesTests {
    /// The typical sidecar: proxy user 1337, probes on 15021 left alone.
    @Test func typicalInvocationGolden() throws {
        let rules = try InterceptionRules(inboundPort: 15006, outboundPort: 15001, proxyUID: 1337,
                                          excludeInboundPorts: [15021])
        #expect(rules.script() == """
            # outrider iptables, iptables: inbound TCP -> 15006 (every port but 15000,15001,15006,15021); outbound TCP -> 15001 (except uid 1337, loopback)
            *nat
            :OUTRIDER_INBOUND - [0:0]
            :OUTRIDER_IN_REDIRECT - [0:0]
            :OUTRIDER_OUTPUT - [0:0]
            :OUTRIDER_REDIRECT - [0:0]
            -A PREROUTING -p tcp -j OUTRIDER_INBOUND
            -A OUTPUT -p tcp -j OUTRIDER_OUTPUT
            -A OUTRIDER_INBOUND -p tcp -m tcp --dport 15000 -j RETURN
            -A OUTRIDER_INBOUND -p tcp -m tcp --dport 15001 -j RETURN
            -A OUTRIDER_INBOUND -p tcp -m tcp --dport 15006 -j RETURN
            -A OUTRIDER_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
            -A OUTRIDER_INBOUND -p tcp -j OUTRIDER_IN_REDIRECT
            -A OUTRIDER_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
            -A OUTRIDER_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j OUTRIDER_IN_REDIRECT
            -A OUTRIDER_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
            -A OUTRIDER_OUTPUT -m owner --uid-owner 1337 -j RETURN
            -A OUTRIDER_OUTPUT -d 127.0.0.1/32 -j RETURN
            -A OUTRIDER_OUTPUT -j OUTRIDER_REDIRECT
            -A OUTRIDER_REDIRECT -p tcp -j REDIRECT --to-ports 15001
            COMMIT

            """)
    }

    /// Excluded ports, given in any order and with repeats, come out sorted and once; outbound
    /// exclusions come before the loopback and owner rules (first match wins).
    @Test func excludedPorts() throws {
        let rules = try InterceptionRules(inboundPort: 16006, outboundPort: 16001, proxyUID: 0, adminPort: 9901,
                                          excludeInboundPorts: [22, 15021, 22, 8443],
                                          excludeOutboundPorts: [5432, 443, 5432])
        #expect(rules.excludedInboundPorts == [22, 8443, 9901, 15021, 16001, 16006])
        #expect(rules.excludedOutboundPorts == [443, 5432])
        #expect(rules.rules.filter { $0.hasPrefix("-A OUTRIDER_INBOUND") } == [
            "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 22 -j RETURN",
            "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 8443 -j RETURN",
            "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 9901 -j RETURN",
            "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
            "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 16001 -j RETURN",
            "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 16006 -j RETURN",
            "-A OUTRIDER_INBOUND -p tcp -j OUTRIDER_IN_REDIRECT",
        ])
        #expect(rules.rules.filter { $0.hasPrefix("-A OUTRIDER_OUTPUT") } == [
            "-A OUTRIDER_OUTPUT -p tcp -m tcp --dport 443 -j RETURN",
            "-A OUTRIDER_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
            "-A OUTRIDER_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 0 -j OUTRIDER_IN_REDIRECT",
            "-A OUTRIDER_OUTPUT -o lo -m owner ! --uid-owner 0 -j RETURN",
            "-A OUTRIDER_OUTPUT -m owner --uid-owner 0 -j RETURN",
            "-A OUTRIDER_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A OUTRIDER_OUTPUT -j OUTRIDER_REDIRECT",
        ])
        #expect(rules.rules.contains("-A OUTRIDER_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006"))
        #expect(rules.rules.contains("-A OUTRIDER_REDIRECT -p tcp -j REDIRECT --to-ports 16001"))
        #expect(rules.script().hasPrefix(
            "# outrider iptables, iptables: inbound TCP -> 16006 (every port but 22,8443,9901,15021,16001,16006); outbound TCP -> 16001 (except uid 0, loopback, ports 443,5432)\n"))
    }

    @Test func ipv6Golden() throws {
        let rules = try InterceptionRules(inboundPort: 15006, outboundPort: 15001, proxyUID: 1337,
                                          excludeOutboundPorts: [53], family: .ipv6)
        #expect(rules.script() == """
            # outrider iptables, ip6tables: inbound TCP -> 15006 (every port but 15000,15001,15006); outbound TCP -> 15001 (except uid 1337, loopback, ports 53)
            *nat
            :OUTRIDER_INBOUND - [0:0]
            :OUTRIDER_IN_REDIRECT - [0:0]
            :OUTRIDER_OUTPUT - [0:0]
            :OUTRIDER_REDIRECT - [0:0]
            -A PREROUTING -p tcp -j OUTRIDER_INBOUND
            -A OUTPUT -p tcp -j OUTRIDER_OUTPUT
            -A OUTRIDER_INBOUND -p tcp -m tcp --dport 15000 -j RETURN
            -A OUTRIDER_INBOUND -p tcp -m tcp --dport 15001 -j RETURN
            -A OUTRIDER_INBOUND -p tcp -m tcp --dport 15006 -j RETURN
            -A OUTRIDER_INBOUND -p tcp -j OUTRIDER_IN_REDIRECT
            -A OUTRIDER_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
            -A OUTRIDER_OUTPUT -p tcp -m tcp --dport 53 -j RETURN
            -A OUTRIDER_OUTPUT ! -d ::1/128 -o lo -m owner --uid-owner 1337 -j OUTRIDER_IN_REDIRECT
            -A OUTRIDER_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
            -A OUTRIDER_OUTPUT -m owner --uid-owner 1337 -j RETURN
            -A OUTRIDER_OUTPUT -d ::1/128 -j RETURN
            -A OUTRIDER_OUTPUT -j OUTRIDER_REDIRECT
            -A OUTRIDER_REDIRECT -p tcp -j REDIRECT --to-ports 15001
            COMMIT

            """)
        #expect(!rules.script().contains("127.0.0.1"))
        #expect(rules.family.tool == "ip6tables")
    }

    /// A list of included ports redirects only those; no RETURN rules are needed.
    @Test func includedInboundPortsOnly() throws {
        let rules = try InterceptionRules(inboundPort: 15006, outboundPort: 15001, proxyUID: 1337,
                                          excludeInboundPorts: [15021], includeInboundPorts: .only([9090, 8080, 9090]))
        #expect(rules.includedInboundPorts == .only([8080, 9090]))
        #expect(rules.rules.filter { $0.hasPrefix("-A OUTRIDER_INBOUND") } == [
            "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 8080 -j OUTRIDER_IN_REDIRECT",
            "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 9090 -j OUTRIDER_IN_REDIRECT",
        ])
        #expect(rules.rules.contains("-A PREROUTING -p tcp -j OUTRIDER_INBOUND"))
        #expect(rules.script().contains("inbound TCP -> 15006 (ports 8080,9090 only)"))
    }

    /// An empty include list: no inbound capture at all (no PREROUTING jump), outbound as usual;
    /// every chain is still declared, so re-applying empties one that an earlier run filled.
    @Test func noInboundInterception() throws {
        let rules = try InterceptionRules(inboundPort: 15006, outboundPort: 15001, proxyUID: 1337,
                                          includeInboundPorts: .only([]))
        #expect(!rules.rules.contains { $0.hasPrefix("-A PREROUTING") || $0.hasPrefix("-A OUTRIDER_INBOUND") })
        #expect(rules.rules.contains("-A OUTPUT -p tcp -j OUTRIDER_OUTPUT"))
        #expect(rules.script().contains(":OUTRIDER_INBOUND - [0:0]\n"))
        #expect(rules.script().contains("inbound TCP not intercepted"))
    }

    /// Rules of the built-in chains already installed are left out (no duplicate jumps when
    /// applying twice); the custom chains' rules are always written (their declaration empties them).
    @Test func skipsInstalledBuiltInJumps() throws {
        let rules = try InterceptionRules(inboundPort: 15006, outboundPort: 15001, proxyUID: 1337)
        let saved = """
            # Generated by iptables-save v1.8.9 (nf_tables)
            *filter
            :INPUT ACCEPT [0:0]
            -A OUTPUT -p tcp -j OUTRIDER_OUTPUT
            COMMIT
            *nat
            :PREROUTING ACCEPT [0:0]
            :OUTPUT ACCEPT [0:0]
            :OUTRIDER_REDIRECT - [0:0]
            -A PREROUTING -p tcp -j OUTRIDER_INBOUND
            -A OUTRIDER_REDIRECT -p tcp -j REDIRECT --to-ports 15001
            COMMIT
            """
        let installed = InterceptionRules.installedRules(fromSave: saved)
        #expect(installed == ["-A PREROUTING -p tcp -j OUTRIDER_INBOUND",
                              "-A OUTRIDER_REDIRECT -p tcp -j REDIRECT --to-ports 15001"])
        let script = rules.script(skipping: installed)
        #expect(!script.contains("-A PREROUTING"))
        #expect(script.contains("-A OUTPUT -p tcp -j OUTRIDER_OUTPUT\n"))  // only in *filter there
        #expect(script.contains("-A OUTRIDER_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"))
        #expect(rules.script(skipping: []) == rules.script())
    }

    @Test func parsesCommandLineValues() throws {
        #expect(try InterceptionRules.parsePort("15006", flag: "--inbound-port") == 15006)
        #expect(try InterceptionRules.parsePort("1", flag: "--inbound-port") == 1)
        #expect(try InterceptionRules.parsePort("65535", flag: "--inbound-port") == 65535)
        #expect(try InterceptionRules.parsePortList("", flag: "--exclude-inbound-ports") == [])
        #expect(try InterceptionRules.parsePortList("15020, 15021 ,22", flag: "--exclude-inbound-ports") == [15020, 15021, 22])
        #expect(try InterceptionRules.parseInboundPorts("*") == .all)
        #expect(try InterceptionRules.parseInboundPorts("") == .only([]))
        #expect(try InterceptionRules.parseInboundPorts("8080,9090") == .only([8080, 9090]))
        #expect(try InterceptionRules.parseUID("0") == 0)
        #expect(try InterceptionRules.parseUID("1337") == 1337)
        #expect(try InterceptionRules.parseUID("4294967294") == 4_294_967_294)
    }

    @Test(arguments: [
        ("0", "--inbound-port: expected a port from 1 to 65535, got '0'"),
        ("65536", "--inbound-port: expected a port from 1 to 65535, got '65536'"),
        ("-1", "--inbound-port: expected a port from 1 to 65535, got '-1'"),
        ("http", "--inbound-port: expected a port from 1 to 65535, got 'http'"),
        ("", "--inbound-port: expected a port from 1 to 65535, got ''"),
    ])
    func rejectsBadPorts(text: String, message: String) {
        #expect(throws: InterceptionRulesError(message)) { try InterceptionRules.parsePort(text, flag: "--inbound-port") }
    }

    @Test(arguments: [
        ("15020,,15021", "--exclude-inbound-ports: empty entry in '15020,,15021' (expected comma-separated ports, e.g. 15020,15021)"),
        ("15020,", "--exclude-inbound-ports: empty entry in '15020,' (expected comma-separated ports, e.g. 15020,15021)"),
        ("15020;15021", "--exclude-inbound-ports: expected ports from 1 to 65535 separated by commas, got '15020;15021' in '15020;15021'"),
        ("22,70000", "--exclude-inbound-ports: expected ports from 1 to 65535 separated by commas, got '70000' in '22,70000'"),
        ("*", "--exclude-inbound-ports: expected ports from 1 to 65535 separated by commas, got '*' in '*'"),
    ])
    func rejectsBadPortLists(text: String, message: String) {
        #expect(throws: InterceptionRulesError(message)) { try InterceptionRules.parsePortList(text, flag: "--exclude-inbound-ports") }
    }

    @Test(arguments: ["-1", "4294967295", "istio-proxy", "", "1e3"])
    func rejectsBadUIDs(text: String) {
        #expect(throws: InterceptionRulesError("--uid: expected a numeric user id from 0 to 4294967294, got '\(text)'")) {
            try InterceptionRules.parseUID(text)
        }
    }

    @Test func rejectsBadCombinations() {
        #expect(throws: InterceptionRulesError("--inbound-port and --outbound-port must differ (both are 15001)")) {
            try InterceptionRules(inboundPort: 15001, outboundPort: 15001, proxyUID: 1337)
        }
        #expect(throws: InterceptionRulesError("--include-inbound-ports: port 15021 is also in --exclude-inbound-ports")) {
            try InterceptionRules(inboundPort: 15006, outboundPort: 15001, proxyUID: 1337,
                                  excludeInboundPorts: [15021], includeInboundPorts: .only([8080, 15021]))
        }
        #expect(throws: InterceptionRulesError(
            "--include-inbound-ports: port 15000 is one of the proxy's own ports (admin 15000, inbound 15006, outbound 15001), which are never redirected")) {
            try InterceptionRules(inboundPort: 15006, outboundPort: 15001, proxyUID: 1337, includeInboundPorts: .only([15000]))
        }
        #expect(throws: InterceptionRulesError("--exclude-outbound-ports: expected a port from 1 to 65535, got 0")) {
            try InterceptionRules(inboundPort: 15006, outboundPort: 15001, proxyUID: 1337, excludeOutboundPorts: [0])
        }
        #expect(throws: InterceptionRulesError("--admin-port: expected a port from 1 to 65535, got 70000")) {
            try InterceptionRules(inboundPort: 15006, outboundPort: 15001, proxyUID: 1337, adminPort: 70000)
        }
    }
}
