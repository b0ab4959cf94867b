import Testing
@testable import OutriderConfig

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The path tests pretend their YAML came from: it names the file in messages and anchors
/// relative paths.
let testPath = "/etc/outrider/test.yaml"

func load(_ yaml: String, path: String = testPath, environment: [String: String] = [:],
          sourceLocation: SourceLocation = #_sourceLocation) throws -> OutriderConfiguration {
    do {
        return try ConfigLoader.load(yaml: yaml, path: path, environment: environment)
    } catch {
        Issue.record("unexpected config errors:\n\(error)", sourceLocation: sourceLocation)
        throw error
    }
}

/// The `FILE:LINE:COL: message` lines a load produces; empty when it loads.
func errorLines(_ yaml: String, path: String = testPath, environment: [String: String] = [:]) -> [String] {
    do {
        _ = try ConfigLoader.load(yaml: yaml, path: path, environment: environment)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

/// A fresh directory under /tmp, removed by the caller with `removeTree`.
func makeTemporaryDirectory() -> String {
    var template = Array("/tmp/outrider-config-test-XXXXXX".utf8CString)
    let created = template.withUnsafeMutableBufferPointer { buffer in
        buffer.baseAddress.flatMap { mkdtemp($0) }
    }
    precondition(created != nil, "mkdtemp failed")
    return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func writeFile(_ path: String, _ contents: String, mode: mode_t = 0o644) {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    precondition(descriptor >= 0, "cannot create \(path)")
    defer { close(descriptor) }
    let bytes = Array(contents.utf8)
    let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    precondition(written == bytes.count)
}

func removeTree(_ path: String) {
    guard let directory = opendir(path) else { unlink(path); return }
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name == "." || name == ".." { continue }
        let child = path + "/" + name
        if entry.pointee.d_type == UInt8(DT_DIR) { removeTree(child) } else { unlink(child) }
    }
    closedir(directory)
    rmdir(path)
}

func listDirectory(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}
