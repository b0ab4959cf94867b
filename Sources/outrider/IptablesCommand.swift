import ArgumentParser
import Glibc
import OutriderConfig
import OutriderPosix

/// `outrider iptables`: transparent mode's traffic capture (SPEC §10), as Istio's init container
/// does it. The rules come from `InterceptionRules`; this prints them or applies them with
/// `iptables-restore --noflush`.
struct Iptables: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print (or with --apply install) the iptables nat rules that redirect a pod's TCP traffic to the proxy.",
        discussion: """
            The output is an iptables-restore script for the nat table, with the chains \
            OUTRIDER_INBOUND, OUTRIDER_IN_REDIRECT, OUTRIDER_OUTPUT and OUTRIDER_REDIRECT: \
            `outrider iptables ... | iptables-restore --noflush` is what --apply does. Inbound \
            connections go to --inbound-port except the excluded ports (the admin port and the \
            proxy's own ports always are); outbound connections go to --outbound-port except \
            those of --uid (the proxy's user), loopback traffic and the excluded ports. Run it in \
            the pod's network namespace with CAP_NET_ADMIN, e.g. from an init container.
            """
    )

    // Single values parse unconditionally, so `--uid -1` is reported as a bad uid rather than
    // an unknown flag.
    @Option(name: .customLong("inbound-port"), parsing: .unconditional, help: ArgumentHelp("Port of the inbound listener that receives redirected inbound connections.", valueName: "port"))
    var inboundPort: String = "15006"
    @Option(name: .customLong("outbound-port"), parsing: .unconditional, help: ArgumentHelp("Port of the outbound listener that receives redirected outbound connections.", valueName: "port"))
    var outboundPort: String = "15001"
    @Option(name: .customLong("uid"), parsing: .unconditional, help: ArgumentHelp("Numeric user id the proxy runs as; its own connections are not redirected.", valueName: "uid"))
    var uid: String
    @Option(name: .customLong("admin-port"), parsing: .unconditional, help: ArgumentHelp("Admin port, never redirected.", valueName: "port"))
    var adminPort: String = String(InterceptionRules.defaultAdminPort)
    @Option(name: .customLong("exclude-inbound-ports"), help: ArgumentHelp("Inbound destination ports not redirected, comma-separated (e.g. probe ports).", valueName: "p,..."))
    var excludeInboundPorts: String = ""
    @Option(name: .customLong("exclude-outbound-ports"), help: ArgumentHelp("Outbound destination ports not redirected, comma-separated.", valueName: "p,..."))
    var excludeOutboundPorts: String = ""
    @Option(name: .customLong("include-inbound-ports"), help: ArgumentHelp("Inbound ports to redirect: '*' for all but the excluded ones, a comma-separated list for only those, '' for none.", valueName: "*|p,..."))
    var includeInboundPorts: String = "*"
    @Flag(name: .customLong("ipv6"), help: "Rules for ip6tables (loopback ::1/128) instead of iptables.")
    var ipv6 = false
    @Flag(name: .customLong("apply"), help: "Install the rules with iptables-restore --noflush (ip6tables-restore with --ipv6) instead of printing them.")
    var apply = false

    func run() throws {
        let rules: InterceptionRules
        do throws(InterceptionRulesError) {
            rules = try InterceptionRules(
                inboundPort: InterceptionRules.parsePort(inboundPort, flag: "--inbound-port"),
                outboundPort: InterceptionRules.parsePort(outboundPort, flag: "--outbound-port"),
                proxyUID: InterceptionRules.parseUID(uid),
                adminPort: InterceptionRules.parsePort(adminPort, flag: "--admin-port"),
                excludeInboundPorts: InterceptionRules.parsePortList(excludeInboundPorts, flag: "--exclude-inbound-ports"),
                excludeOutboundPorts: InterceptionRules.parsePortList(excludeOutboundPorts, flag: "--exclude-outbound-ports"),
                includeInboundPorts: InterceptionRules.parseInboundPorts(includeInboundPorts),
                family: ipv6 ? .ipv6 : .ipv4)
        } catch {
            fail("iptables: \(error.message)")
        }
        if !apply {
            print(rules.script(), terminator: "")
            return
        }
        Glibc.exit(Self.install(rules))
    }

    /// Applies the rules; returns the exit status. What is installed already is read first
    /// (`iptables-save -t nat`) so that applying twice does not duplicate the jumps from
    /// PREROUTING and OUTPUT; when that read fails, iptables-restore reports the real problem.
    static func install(_ rules: InterceptionRules) -> Int32 {
        Sys.ignoreSIGPIPE()
        let tool = rules.family.tool
        var installed: Set<String> = []
        if let saved = try? Sys.runProcess(["\(tool)-save", "-t", "nat"]), saved.succeeded {
            installed = InterceptionRules.installedRules(fromSave: String(decoding: saved.stdout, as: UTF8.self))
        }
        let script = rules.script(skipping: installed)
        let restore = "\(tool)-restore"
        let result: ProcessResult
        do throws(SystemError) {
            result = try Sys.runProcess([restore, "--noflush"], input: Array(script.utf8))
        } catch {
            let hint = error.code == ENOENT ? " (is the iptables package installed, and \(restore) on PATH?)" : ""
            printError("outrider: iptables: could not start \(restore): \(errnoText(error.code))\(hint)")
            return 1
        }
        guard result.succeeded else {
            var message = "outrider: iptables: \(restore) --noflush failed (\(result.statusDescription))"
            let stderr = String(decoding: result.stderr, as: UTF8.self)
            if !stderr.isEmpty { message += ":\n" + stderr }
            let stdout = String(decoding: result.stdout, as: UTF8.self)
            if !stdout.isEmpty { message += (stderr.isEmpty ? ":\n" : "") + stdout }
            printError(message)
            printError("outrider: iptables: the script was:\n" + script)
            return 1
        }
        // What was installed, for the init container's log.
        print(script, terminator: "")
        return 0
    }
}
