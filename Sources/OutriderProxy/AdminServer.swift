import Glibc
import OutriderConfig
import OutriderCore
import OutriderHTTP
import OutriderPosix

/// The admin listener (SPEC §8): its own thread with blocking I/O, one request per connection,
/// so a scrape or a slow admin client never touches a worker's loop. Loopback by default.
final class AdminServer: @unchecked Sendable {
    struct Hooks {
        var isReady: @Sendable () -> Bool
        var metrics: @Sendable () -> String
        var config: @Sendable () -> String
        var clusters: @Sendable () -> String
        var drain: @Sendable () -> Void
    }

    private let fd: Int32
    private let hooks: Hooks
    private var thread: OSThread?
    private var stopping = false
    let address: String

    init(address: ConfigAddress, hooks: Hooks) throws(SystemError) {
        guard let socketAddress = SocketAddress.literal(host: address.host, port: address.port) else {
            throw SystemError("admin \(address): not an IP address", code: EINVAL)
        }
        fd = try Listening.open(socketAddress, backlog: 64)
        self.hooks = hooks
        self.address = Sys.localAddress(fd)?.description ?? address.description
    }

    func start() throws(SystemError) {
        thread = try OSThread.start(name: "outrider-admin") { [self] in run() }
    }

    func stop() {
        stopping = true
        Sys.shutdownBoth(fd)
        thread?.join()
        Sys.close(fd)
    }

    private func run() {
        var peer = sockaddr_storage()
        while !stopping {
            guard Sys.waitReadable(fd, timeoutMs: 1000), !stopping else { continue }
            let client = Sys.accept(fd, &peer)
            if client < 0 { continue }
            let clientFD = Int32(client)
            Sys.makeBlocking(clientFD, timeoutSeconds: 2)
            serve(clientFD)
            Sys.close(clientFD)
        }
    }

    private func serve(_ client: Int32) {
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while request.count < 16384 {
            let count = chunk.withUnsafeMutableBytes { Sys.read(client, $0.baseAddress!, $0.count) }
            if count <= 0 { return }
            request.append(contentsOf: chunk[0..<count])
            if request.count >= 4, request.suffix(from: max(0, request.count - count - 3)).windowContains([13, 10, 13, 10]) { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count == 3 else { respond(client, 400, "text/plain", "bad request\n"); return }
        let method = parts[0]
        let path = parts[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        switch (method, path) {
        case ("GET", "/live"), ("HEAD", "/live"):
            respond(client, 200, "text/plain", "ok\n")
        case ("GET", "/ready"), ("HEAD", "/ready"):
            if hooks.isReady() { respond(client, 200, "text/plain", "ready\n") } else { respond(client, 503, "text/plain", "draining\n") }
        case ("GET", "/metrics"):
            respond(client, 200, "text/plain; version=0.0.4; charset=utf-8", hooks.metrics())
        case ("GET", "/config"):
            respond(client, 200, "application/json", hooks.config())
        case ("GET", "/clusters"):
            respond(client, 200, "application/json", hooks.clusters())
        case ("POST", "/drain"):
            hooks.drain()
            respond(client, 202, "text/plain", "draining\n")
        case (_, "/live"), (_, "/ready"), (_, "/metrics"), (_, "/config"), (_, "/clusters"), (_, "/drain"):
            respond(client, 405, "text/plain", "method not allowed\n")
        default:
            respond(client, 404, "text/plain", "not found\n")
        }
    }

    private func respond(_ client: Int32, _ status: Int, _ contentType: String, _ body: String) {
        let bodyBytes = Array(body.utf8)
        let reason = String(describing: reasonPhrase(status))
        var head = Array("HTTP/1.1 \(status) \(reason)\r\ncontent-type: \(contentType)\r\ncontent-length: \(bodyBytes.count)\r\nconnection: close\r\ncache-control: no-store\r\n\r\n".utf8)
        head += bodyBytes
        Sys.writeAll(client, head, head.count)
    }
}

extension ArraySlice where Element == UInt8 {
    func windowContains(_ pattern: [UInt8]) -> Bool {
        guard count >= pattern.count else { return false }
        var index = startIndex
        while index + pattern.count <= endIndex {
            if Array(self[index..<(index + pattern.count)]) == pattern { return true }
            index += 1
        }
        return false
    }
}
