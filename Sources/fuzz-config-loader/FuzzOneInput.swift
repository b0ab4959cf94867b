import CFuzzerShim
import OutriderConfig

// libFuzzer target for OutriderConfig's loader (ConfigLoader.load(yaml:path:environment:)) on
// arbitrary text: it must return a configuration or errors, never crash, hang or trip ASan.
// When it returns a configuration, what `outrider print-config` and the admin `/config`
// endpoint would print of it (renderYAML, renderJSON) must load back to an equal configuration,
// and rendering that again must give the same YAML — unless the output holds a `<redacted>`
// secret, which cannot round-trip.
//
// Files: the loader reads `${file:…}` substitutions, TLS certificates and keys, and credential
// files (htpasswd, API keys, JWKS) through libc, with no seam to stub. The config "lives" in a
// directory that does not exist, so relative paths fail to read; inputs naming paths under
// /dev, /proc, /sys, /run or /var are skipped (a FIFO or a device there could block the open or
// the read — /run/initctl, /dev/kmsg, a tty), and standard input is /dev/null (main.swift).
// Other absolute paths may be read: harmless, but the results then depend on the machine.
//
// This lives outside main.swift on purpose: closures in main.swift top-level code are
// main-actor isolated and trap when C calls them (DESIGN §5).

/// Hands the command line to libFuzzer (or to CFuzzerShim's replaying fallback). The callback is
/// referenced in the file that defines it: referencing a `@_cdecl` function as a C function
/// pointer from another file emits a second definition of its symbol.
func runFuzzDriver() -> Int32 {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}

let configPath = "/nonexistent-outrider-fuzz/config/outrider.yaml"

/// What `${env:NAME}` may name; values without "${" so that a substituted value renders back
/// to the same text.
let environment: [String: String] = [
    "PORT": "8080",
    "HOST": "127.0.0.1",
    "UPSTREAM": "app.internal:9000",
    "TOKEN": "s3cr3t-token-value",
    "EMPTY": "",
    "SPACES": "  a b  ",
    "DURATION": "250ms",
    "YAML": "{a: [1, 2]}",
]

/// Byte strings that lead to file-system places where an open or a read could block.
let skippedPaths: [[UInt8]] = ["dev/", "proc/", "sys/", "run/", "var/"].map { Array($0.utf8) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: size)
    for path in skippedPaths where contains(bytes, path) { return 0 }
    // The loader reads files as UTF-8 and refuses anything else before parsing.
    guard let yaml = String(validating: bytes, as: UTF8.self) else { return 0 }

    let configuration: OutriderConfiguration
    do {
        configuration = try ConfigLoader.load(yaml: yaml, path: configPath, environment: environment)
    } catch {
        precondition(!error.errors.isEmpty, "a load failed with no error")
        for problem in error.errors {
            precondition(problem.line >= 1 && problem.column >= 1, "error at \(problem.line):\(problem.column)")
            precondition(!problem.message.isEmpty, "an error without a message")
        }
        _ = error.description
        return 0
    }
    checkRoundTrip(configuration)
    return 0
}

func contains(_ haystack: UnsafeBufferPointer<UInt8>, _ needle: [UInt8]) -> Bool {
    guard haystack.count >= needle.count else { return false }
    for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
        var index = 1
        while index < needle.count && haystack[start + index] == needle[index] { index += 1 }
        if index == needle.count { return true }
    }
    return false
}

func checkRoundTrip(_ configuration: OutriderConfiguration) {
    let yaml = configuration.renderYAML()
    let json = configuration.renderJSON()
    guard !yaml.contains("<redacted>") else { return }
    let fromYAML: OutriderConfiguration
    do {
        fromYAML = try ConfigLoader.load(yaml: yaml, path: configPath, environment: environment)
    } catch {
        preconditionFailure("the rendered YAML does not load:\n\(error)\n--- rendered:\n\(yaml)")
    }
    precondition(fromYAML == configuration, "the rendered YAML loads to another configuration:\n\(yaml)")
    precondition(fromYAML.renderYAML() == yaml, "rendering is not a fixed point:\n\(yaml)")
    let fromJSON: OutriderConfiguration
    do {
        fromJSON = try ConfigLoader.load(yaml: json, path: configPath, environment: environment)
    } catch {
        preconditionFailure("the rendered JSON does not load:\n\(error)\n--- rendered:\n\(json)")
    }
    precondition(fromJSON == configuration, "the rendered JSON loads to another configuration:\n\(json)")
}
