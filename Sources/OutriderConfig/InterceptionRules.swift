/// Transparent mode (SPEC §10): the iptables `nat` rules that send a pod's TCP traffic through
/// the proxy, built the way Istio's `istio-iptables` init container builds them, as an
/// `iptables-restore` script. Pure: `outrider iptables` prints the script or pipes it to
/// `iptables-restore --noflush`.
///
/// Inbound (`PREROUTING -p tcp -j OUTRIDER_INBOUND`): connections arriving at the pod are
/// redirected to the inbound port (`OUTRIDER_IN_REDIRECT`), except the excluded ports — always
/// the admin port and the proxy's own inbound and outbound ports. With a list of included ports,
/// only those are redirected; with an empty list, nothing inbound is.
///
/// Outbound (`OUTPUT -p tcp -j OUTRIDER_OUTPUT`), in order, first match wins:
/// 1. excluded outbound destination ports: not intercepted;
/// 2. `! -d 127.0.0.1/32 -o lo -m owner --uid-owner UID -j OUTRIDER_IN_REDIRECT`: the proxy
///    calling its own pod's IP (an outbound cluster whose endpoint is this pod) goes through the
///    inbound listener, so inbound policy applies as it does to calls from other pods;
/// 3. `-o lo -m owner ! --uid-owner UID -j RETURN`: the app calling anything over loopback —
///    localhost or its own pod IP — is not intercepted;
/// 4. `-m owner --uid-owner UID -j RETURN`: the proxy's own connections are never intercepted
///    (this is what keeps the redirect from looping);
/// 5. `-d 127.0.0.1/32 -j RETURN`: nothing addressed to localhost is;
/// 6. everything else goes to `OUTRIDER_REDIRECT`, the outbound port.
///
/// IPv6 is the same with `::1/128`. Istio's extra `-o lo -s 127.0.0.6/32 -j RETURN` is not
/// emitted: it serves Envoy's inbound passthrough, which binds 127.0.0.6 to reach the app at the
/// pod IP; Outrider reaches the app at 127.0.0.1, which rule 4 already lets through.
///
/// Rules are written as `iptables-save` prints them (options in its canonical order, built-in
/// chains first, then the custom chains alphabetically), so the script and
/// `iptables-save -t nat` can be compared line for line.
public struct InterceptionRules: Equatable, Sendable {
    public enum Family: Equatable, Sendable {
        case ipv4, ipv6

        /// The loopback address as `iptables-save` writes it.
        public var loopback: String { self == .ipv4 ? "127.0.0.1/32" : "::1/128" }
        /// `iptables` or `ip6tables`: the prefix of the `-restore` and `-save` tools.
        public var tool: String { self == .ipv4 ? "iptables" : "ip6tables" }
    }

    /// Which inbound destination ports are redirected.
    public enum InboundPorts: Equatable, Sendable {
        /// `*`: every port but the excluded ones.
        case all
        /// Only these (sorted, distinct); empty: no inbound interception.
        case only([Int])
    }

    public static let inboundChain = "OUTRIDER_INBOUND"
    public static let inboundRedirectChain = "OUTRIDER_IN_REDIRECT"
    public static let outputChain = "OUTRIDER_OUTPUT"
    public static let redirectChain = "OUTRIDER_REDIRECT"
    /// The custom chains, in the order `iptables-save` lists them.
    public static let chains = [inboundChain, inboundRedirectChain, outputChain, redirectChain]
    public static let defaultAdminPort = 15000

    public private(set) var inboundPort: Int
    public private(set) var outboundPort: Int
    public private(set) var proxyUID: UInt32
    public private(set) var adminPort: Int
    /// Sorted and distinct; the admin, inbound and outbound ports included.
    public private(set) var excludedInboundPorts: [Int]
    /// Sorted and distinct.
    public private(set) var excludedOutboundPorts: [Int]
    public private(set) var includedInboundPorts: InboundPorts
    public private(set) var family: Family

    /// Validates the combination: ports 1–65535, inbound and outbound ports different, no
    /// included inbound port that is also excluded.
    public init(inboundPort: Int, outboundPort: Int, proxyUID: UInt32, adminPort: Int = defaultAdminPort,
                excludeInboundPorts: [Int] = [], excludeOutboundPorts: [Int] = [],
                includeInboundPorts: InboundPorts = .all, family: Family = .ipv4) throws(InterceptionRulesError) {
        try Self.checkPort(inboundPort, flag: "--inbound-port")
        try Self.checkPort(outboundPort, flag: "--outbound-port")
        try Self.checkPort(adminPort, flag: "--admin-port")
        guard inboundPort != outboundPort else {
            throw InterceptionRulesError("--inbound-port and --outbound-port must differ (both are \(inboundPort))")
        }
        for port in excludeInboundPorts { try Self.checkPort(port, flag: "--exclude-inbound-ports") }
        for port in excludeOutboundPorts { try Self.checkPort(port, flag: "--exclude-outbound-ports") }
        let excluded = Self.sortedDistinct(excludeInboundPorts + [adminPort, inboundPort, outboundPort])
        var included = includeInboundPorts
        if case .only(let ports) = includeInboundPorts {
            for port in ports { try Self.checkPort(port, flag: "--include-inbound-ports") }
            let list = Self.sortedDistinct(ports)
            let excludedSet = Set(excluded)
            if let clash = list.first(where: { excludedSet.contains($0) }) {
                let why = [adminPort, inboundPort, outboundPort].contains(clash)
                    ? "is one of the proxy's own ports (admin \(adminPort), inbound \(inboundPort), outbound \(outboundPort)), which are never redirected"
                    : "is also in --exclude-inbound-ports"
                throw InterceptionRulesError("--include-inbound-ports: port \(clash) \(why)")
            }
            included = .only(list)
        }
        self.inboundPort = inboundPort
        self.outboundPort = outboundPort
        self.proxyUID = proxyUID
        self.adminPort = adminPort
        self.excludedInboundPorts = excluded
        self.excludedOutboundPorts = Self.sortedDistinct(excludeOutboundPorts)
        self.includedInboundPorts = included
        self.family = family
    }

    /// The `-A CHAIN …` lines, in `iptables-save` order.
    public var rules: [String] {
        let uid = String(proxyUID)
        let loopback = family.loopback
        var rules: [String] = []
        let inboundEnabled = includedInboundPorts != .only([])
        if inboundEnabled {
            rules.append("-A PREROUTING -p tcp -j \(Self.inboundChain)")
        }
        rules.append("-A OUTPUT -p tcp -j \(Self.outputChain)")
        switch includedInboundPorts {
        case .all:
            for port in excludedInboundPorts {
                rules.append("-A \(Self.inboundChain) -p tcp -m tcp --dport \(port) -j RETURN")
            }
            rules.append("-A \(Self.inboundChain) -p tcp -j \(Self.inboundRedirectChain)")
        case .only(let ports):
            for port in ports {
                rules.append("-A \(Self.inboundChain) -p tcp -m tcp --dport \(port) -j \(Self.inboundRedirectChain)")
            }
        }
        rules.append("-A \(Self.inboundRedirectChain) -p tcp -j REDIRECT --to-ports \(inboundPort)")
        for port in excludedOutboundPorts {
            rules.append("-A \(Self.outputChain) -p tcp -m tcp --dport \(port) -j RETURN")
        }
        rules.append("-A \(Self.outputChain) ! -d \(loopback) -o lo -m owner --uid-owner \(uid) -j \(Self.inboundRedirectChain)")
        rules.append("-A \(Self.outputChain) -o lo -m owner ! --uid-owner \(uid) -j RETURN")
        rules.append("-A \(Self.outputChain) -m owner --uid-owner \(uid) -j RETURN")
        rules.append("-A \(Self.outputChain) -d \(loopback) -j RETURN")
        rules.append("-A \(Self.outputChain) -j \(Self.redirectChain)")
        rules.append("-A \(Self.redirectChain) -p tcp -j REDIRECT --to-ports \(outboundPort)")
        return rules
    }

    /// The `iptables-restore` script: a comment, `*nat`, the custom chains declared (which
    /// empties them when they exist, so applying again with `--noflush` replaces their rules),
    /// the rules, `COMMIT`.
    ///
    /// `skipping` holds rules already installed (from `iptables-save`); rules of the built-in
    /// chains found there are left out, so applying twice does not add a second jump from
    /// `PREROUTING` or `OUTPUT`. Rules of the custom chains are always written.
    public func script(skipping installed: Set<String> = []) -> String {
        var lines: [String] = []
        let list = { (ports: [Int]) in ports.map(String.init).joined(separator: ",") }
        let inbound: String
        switch includedInboundPorts {
        case .all: inbound = "inbound TCP -> \(inboundPort) (every port but \(list(excludedInboundPorts)))"
        case .only(let ports) where ports.isEmpty: inbound = "inbound TCP not intercepted"
        case .only(let ports): inbound = "inbound TCP -> \(inboundPort) (ports \(list(ports)) only)"
        }
        var outbound = "outbound TCP -> \(outboundPort) (except uid \(proxyUID), loopback"
        outbound += excludedOutboundPorts.isEmpty ? ")" : ", ports \(list(excludedOutboundPorts)))"
        lines.append("# outrider iptables, \(family.tool): \(inbound); \(outbound)")
        lines.append("*nat")
        for chain in Self.chains { lines.append(":\(chain) - [0:0]") }
        for rule in rules where !(Self.isBuiltInChainRule(rule) && installed.contains(rule)) {
            lines.append(rule)
        }
        lines.append("COMMIT")
        return lines.joined(separator: "\n") + "\n"
    }

    /// The `-A …` lines of the `*nat` table in `iptables-save` output.
    public static func installedRules(fromSave text: String) -> Set<String> {
        var rules: Set<String> = []
        var inNat = false
        for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw[...]
            if line.hasPrefix("*") { inNat = line == "*nat"; continue }
            if line == "COMMIT" { inNat = false; continue }
            if inNat, line.hasPrefix("-A ") { rules.insert(String(line)) }
        }
        return rules
    }

    private static func isBuiltInChainRule(_ rule: String) -> Bool {
        rule.hasPrefix("-A PREROUTING ") || rule.hasPrefix("-A OUTPUT ")
    }

    // MARK: parsing command-line values

    /// A port, 1–65535.
    public static func parsePort(_ text: String, flag: String) throws(InterceptionRulesError) -> Int {
        let trimmed = text.trimmingSpaces
        guard let port = Int(trimmed), (1...65535).contains(port) else {
            throw InterceptionRulesError("\(flag): expected a port from 1 to 65535, got '\(text)'")
        }
        return port
    }

    /// `P,P,…` (spaces around entries allowed); an empty value is an empty list.
    public static func parsePortList(_ text: String, flag: String) throws(InterceptionRulesError) -> [Int] {
        if text.trimmingSpaces.isEmpty { return [] }
        var ports: [Int] = []
        for entry in text.split(separator: ",", omittingEmptySubsequences: false) {
            let item = String(entry).trimmingSpaces
            if item.isEmpty {
                throw InterceptionRulesError("\(flag): empty entry in '\(text)' (expected comma-separated ports, e.g. 15020,15021)")
            }
            guard let port = Int(item), (1...65535).contains(port) else {
                throw InterceptionRulesError("\(flag): expected ports from 1 to 65535 separated by commas, got '\(item)' in '\(text)'")
            }
            ports.append(port)
        }
        return ports
    }

    /// `*` for every port, else a port list (empty: none).
    public static func parseInboundPorts(_ text: String, flag: String = "--include-inbound-ports") throws(InterceptionRulesError) -> InboundPorts {
        if text.trimmingSpaces == "*" { return .all }
        return .only(try parsePortList(text, flag: flag))
    }

    /// A numeric user id, 0–4294967294 (4294967295 is (uid_t)-1, "no user").
    public static func parseUID(_ text: String, flag: String = "--uid") throws(InterceptionRulesError) -> UInt32 {
        guard let uid = UInt32(text.trimmingSpaces), uid != UInt32.max else {
            throw InterceptionRulesError("\(flag): expected a numeric user id from 0 to 4294967294, got '\(text)'")
        }
        return uid
    }

    private static func checkPort(_ port: Int, flag: String) throws(InterceptionRulesError) {
        guard (1...65535).contains(port) else {
            throw InterceptionRulesError("\(flag): expected a port from 1 to 65535, got \(port)")
        }
    }

    private static func sortedDistinct(_ ports: [Int]) -> [Int] { Array(Set(ports)).sorted() }
}

/// A bad `outrider iptables` argument; the message starts with the flag.
public struct InterceptionRulesError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

private extension String {
    var trimmingSpaces: String {
        var view = Substring(self)
        while let first = view.first, first == " " || first == "\t" { view = view.dropFirst() }
        while let last = view.last, last == " " || last == "\t" { view = view.dropLast() }
        return String(view)
    }
}
