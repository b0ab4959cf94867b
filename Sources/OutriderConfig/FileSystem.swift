#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The little file-system access the loader needs, straight on libc: the config module stays
// free of Foundation (start-up cost, memory), like the data-path modules.

enum FileReader {
    struct Failure: Error {
        var reason: String
    }

    /// The whole file, refused past `limit` bytes: a `${file:/dev/zero}` typo must not hang or
    /// exhaust memory at start-up.
    static func readBytes(_ path: String, limit: Int) -> Result<[UInt8], Failure> {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return .failure(Failure(reason: errnoText())) }
        defer { close(descriptor) }

        var status = stat()
        guard fstat(descriptor, &status) == 0 else { return .failure(Failure(reason: errnoText())) }
        if (status.st_mode & S_IFMT) == S_IFDIR { return .failure(Failure(reason: "is a directory")) }

        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(Failure(reason: errnoText()))
            }
            if count == 0 { return .success(contents) }
            contents.append(contentsOf: chunk[0..<count])
            if contents.count > limit {
                return .failure(Failure(reason: "larger than \(SizeNotation.format(Int64(limit)))"))
            }
        }
    }

    /// The file as UTF-8 text.
    static func readText(_ path: String, limit: Int) -> Result<String, Failure> {
        switch readBytes(path, limit: limit) {
        case .failure(let failure):
            return .failure(failure)
        case .success(let bytes):
            guard let text = String(validating: bytes, as: UTF8.self) else {
                return .failure(Failure(reason: "not UTF-8 text"))
            }
            return .success(text)
        }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}

enum FilePaths {
    static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return "/" }
        let length = buffer.firstIndex(of: 0) ?? buffer.count
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The absolute directory holding the config file: what relative paths inside it mean.
    static func directory(ofConfigFile path: String) -> String {
        let absolute = resolve(path, against: currentDirectory())
        guard let slash = absolute.lastIndex(of: "/"), slash != absolute.startIndex else { return "/" }
        return String(absolute[..<slash])
    }

    /// `path` itself when absolute, else `base/path`; either way lexically cleaned (`.` and
    /// repeated slashes dropped, `..` folded), as Go's `filepath.Clean` does.
    static func resolve(_ path: String, against base: String) -> String {
        clean(path.hasPrefix("/") ? path : base + "/" + path)
    }

    static func clean(_ absolutePath: String) -> String {
        var segments: [Substring] = []
        for segment in absolutePath.split(separator: "/") {
            switch segment {
            case ".": continue
            case "..": if !segments.isEmpty { segments.removeLast() }
            default: segments.append(segment)
            }
        }
        return "/" + segments.joined(separator: "/")
    }
}
