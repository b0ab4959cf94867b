/// Command-line flags that override the file (SPEC §1: flags win). nil leaves the file's value.
public struct ConfigOverrides: Sendable {
    public var listen: ConfigAddress?
    public var upstream: ConfigAddress?
    public var admin: ConfigAddress?
    public var workers: WorkerCount?
    public var logLevel: LogLevel?

    public init() {}
}

extension OutriderConfiguration {
    /// `--listen` replaces the first listener's address; `--upstream` replaces the endpoints of
    /// the cluster the first listener's first route goes to (the sidecar's app); `--admin`,
    /// `--workers` and `--log-level` replace their settings.
    public func applying(_ overrides: ConfigOverrides) -> OutriderConfiguration {
        var result = self
        if let listen = overrides.listen, !result.listeners.isEmpty {
            result.listeners[0].address = listen
        }
        if let upstream = overrides.upstream,
           let clusterName = result.listeners.first?.routes.first?.cluster,
           let index = result.clusters.firstIndex(where: { $0.name == clusterName }) {
            result.clusters[index].endpoints = [upstream]
        }
        if let admin = overrides.admin { result.admin.address = admin }
        if let workers = overrides.workers { result.workers = workers }
        if let logLevel = overrides.logLevel { result.logLevel = logLevel }
        return result
    }
}
