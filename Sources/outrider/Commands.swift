import ArgumentParser
import Glibc
import OutriderConfig
import OutriderTLS
import OutriderPosix
import OutriderProxy

struct OutriderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outrider",
        abstract: "A lightweight sidecar reverse proxy: sidecar-proxy, auth-container and ambassador in one binary.",
        version: "outrider \(OutriderVersion.current)",
        subcommands: [Run.self, Validate.self, PrintConfig.self, Version.self, Iptables.self],
        defaultSubcommand: Run.self
    )
}

/// Flags shared by `run` and `print-config`.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "Config file (default: $OUTRIDER_CONFIG, else the zero-config sidecar).")
    var config: String?
    @Option(name: .long, help: "Address of the first listener, HOST:PORT.")
    var listen: String?
    @Option(name: .long, help: "Endpoint of the cluster the first listener routes to, HOST:PORT.")
    var upstream: String?
    @Option(name: .long, help: "Admin address, HOST:PORT.")
    var admin: String?
    @Option(name: .long, help: "Worker threads: a number or 'auto'.")
    var workers: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String?

    /// Loads the file (or the zero-config default) and applies the flags; exits 1 with the
    /// problem named when anything is wrong.
    /// The config file in use: `--config`, else `OUTRIDER_CONFIG`; nil = zero-config.
    var configPath: String? {
        config ?? processEnvironment()["OUTRIDER_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Reads the file again with the same flags on top (SIGHUP); nil without a file.
    func reloader() -> (@Sendable () throws(ConfigErrors) -> OutriderConfiguration)? {
        guard let path = configPath else { return nil }
        let overrides = makeOverrides()
        return { () throws(ConfigErrors) -> OutriderConfiguration in
            try ConfigLoader.load(path: path, environment: processEnvironment()).applying(overrides)
        }
    }

    func loadConfiguration() -> OutriderConfiguration {
        let environment = processEnvironment()
        let path = configPath
        var loaded: OutriderConfiguration
        if let path {
            do {
                loaded = try ConfigLoader.load(path: path, environment: environment)
            } catch {
                printError(error.description)
                Glibc.exit(1)
            }
        } else {
            loaded = ConfigLoader.zeroConfig()
        }
        return loaded.applying(makeOverrides())
    }

    private func makeOverrides() -> ConfigOverrides {
        var overrides = ConfigOverrides()
        if let listen {
            guard let address = ConfigLoader.parseAddress(listen) else { fail("--listen: invalid address '\(listen)' (expected HOST:PORT)") }
            overrides.listen = address
        }
        if let upstream {
            guard let address = ConfigLoader.parseAddress(upstream) else { fail("--upstream: invalid address '\(upstream)' (expected HOST:PORT)") }
            overrides.upstream = address
        }
        if let admin {
            guard let address = ConfigLoader.parseAddress(admin) else { fail("--admin: invalid address '\(admin)' (expected HOST:PORT)") }
            overrides.admin = address
        }
        if let workers {
            if workers == "auto" {
                overrides.workers = .auto
            } else if let count = Int(workers), count >= 1, count <= 1024 {
                overrides.workers = .fixed(count)
            } else {
                fail("--workers: expected a number from 1 to 1024 or 'auto', got '\(workers)'")
            }
        }
        if let logLevel {
            guard let level = LogLevel(rawValue: logLevel) else {
                fail("--log-level: expected one of \(LogLevel.allCases.map(\.rawValue).joined(separator: ", ")), got '\(logLevel)'")
            }
            overrides.logLevel = level
        }
        return overrides
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy (the default).")
    @OptionGroup var options: ConfigOptions

    func run() throws {
        let configuration = options.loadConfiguration()
        OperationalLog.minimumLevel = OperationalLog.Level(configuration.logLevel)
        let server: ProxyServer
        do {
            server = try ProxyServer(config: configuration, reload: options.reloader())
        } catch {
            OperationalLog.error("start failed", ["error": error.description])
            printError(error.description)
            switch error {
            case .bind: Glibc.exit(2)
            case .system: Glibc.exit(1)
            }
        }
        Glibc.exit(server.run())
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a config file: exit 0 when valid, 1 with FILE:LINE:COL errors.")
    @Option(name: .long, help: "Config file.")
    var config: String

    func run() throws {
        do {
            _ = try ConfigLoader.load(path: config, environment: processEnvironment())
            print("\(config): ok")
        } catch {
            printError(error.description)
            Glibc.exit(1)
        }
    }
}

struct PrintConfig: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "print-config",
                                                    abstract: "Print the effective config as YAML (defaults filled in, secrets redacted).")
    @OptionGroup var options: ConfigOptions

    func run() throws {
        print(options.loadConfiguration().renderYAML(), terminator: "")
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    @Flag(name: .long, help: "Build details as JSON.")
    var json = false

    func run() throws {
        if json {
            #if DEBUG
            let build = "debug"
            #else
            let build = "release"
            #endif
            print("{\"name\":\"outrider\",\"version\":\"\(OutriderVersion.current)\",\"build\":\"\(build)\",\"swift\":\"6\",\"os\":\"linux\"}")
        } else {
            print("outrider \(OutriderVersion.current)")
        }
    }
}

extension OperationalLog.Level {
    init(_ level: LogLevel) {
        switch level {
        case .trace: self = .trace
        case .debug: self = .debug
        case .info: self = .info
        case .notice: self = .notice
        case .warning: self = .warning
        case .error: self = .error
        case .critical: self = .critical
        }
    }
}

func processEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var cursor = environ
    while let entry = cursor.pointee {
        let text = String(cString: entry)
        if let separator = text.firstIndex(of: "=") {
            result[String(text[..<separator])] = String(text[text.index(after: separator)...])
        }
        cursor += 1
    }
    return result
}

func printError(_ text: String) {
    var line = Array((text.hasSuffix("\n") ? text : text + "\n").utf8)
    Sys.writeAll(2, &line, line.count)
}

func fail(_ message: String) -> Never {
    printError("outrider: \(message)")
    Glibc.exit(1)
}

/// A certificate chain and key loaded as OpenSSL will load them at start-up: why they cannot be
/// used together (unreadable, not PEM, the key does not match), or nil.
func certificatePairProblem(_ certificate: String, _ privateKey: String) -> String? {
    do {
        _ = try TLSClientContext(caPath: nil, verify: false, clientCertificateChainPath: certificate,
                                 clientPrivateKeyPath: privateKey, alpn: ["http/1.1"])
        return nil
    } catch {
        return error.description
    }
}
