import Testing
@testable import OutriderConfig

/// The repository's `config/` directory, found from this source file: `Tests/OutriderConfigTests/…`.
func repositoryConfigDirectory(filePath: String = #filePath) -> String {
    var components = filePath.split(separator: "/", omittingEmptySubsequences: false)
    components.removeLast(3)
    return components.joined(separator: "/") + "/config"
}

@Suite struct ExampleConfigTests {
    static let directory = repositoryConfigDirectory()
    static let yamlFiles = listDirectory(directory).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }

    @Test func theConfigDirectoryHasExamples() {
        #expect(Self.yamlFiles.contains("sidecar-proxy.yaml"), "looked in \(Self.directory)")
    }

    /// Every example users are pointed at must pass `outrider validate`.
    @Test(arguments: yamlFiles)
    func exampleLoads(file: String) throws {
        let path = Self.directory + "/" + file
        do {
            let config = try ConfigLoader.load(path: path, environment: [:])
            #expect(config.sourcePath == path)
            // And print-config of it loads back to the same thing.
            #expect(try ConfigLoader.load(yaml: config.renderYAML(), path: path, environment: [:]) == config)
        } catch {
            Issue.record("\(file) does not load:\n\(error)")
        }
    }

    @Test func sidecarExampleIsTheZeroConfigPlusOneRoute() throws {
        let config = try ConfigLoader.load(path: Self.directory + "/sidecar-proxy.yaml", environment: [:])
        var expected = ConfigLoader.zeroConfig()
        expected.sourcePath = config.sourcePath
        expected.listeners[0].routes.insert(
            RouteConfig(
                name: "api-v1",
                match: RouteMatch(pathPrefix: "/api/v1", host: "*.example.com", methods: ["GET", "POST"],
                                  headers: [HeaderMatch(name: "x-tenant", value: "blue")]),
                timeout: .seconds(5),
                rewrite: RouteRewrite(pathPrefix: "/v1", host: "app.internal"),
                cluster: "app"
            ),
            at: 0
        )
        #expect(config == expected)
    }
}
