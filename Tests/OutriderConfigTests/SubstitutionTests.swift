import Testing
@testable import OutriderConfig

@Suite struct SubstitutionTests {
    @Test func environmentVariables() throws {
        let config = try load("""
            workers: ${env:WORKERS}
            admin: { address: "${env:ADMIN_HOST}:${env:ADMIN_PORT}" }
            clusters:
              - name: app
                endpoints: ["${env:APP_HOST}:8080"]
            """, environment: ["WORKERS": "3", "ADMIN_HOST": "127.0.0.2", "ADMIN_PORT": "9000", "APP_HOST": "app.svc"])
        #expect(config.workers == .fixed(3))
        #expect(config.admin.address == ConfigAddress(host: "127.0.0.2", port: 9_000))
        #expect(config.clusters[0].endpoints == [ConfigAddress(host: "app.svc", port: 8_080)])
    }

    @Test func filesRelativeToTheConfig() throws {
        let directory = makeTemporaryDirectory()
        defer { removeTree(directory) }
        writeFile(directory + "/tenant", "blue\n")
        writeFile(directory + "/host", "app.internal")
        let config = try load("""
            listeners:
              - routes:
                  - match:
                      headers:
                        x-tenant: ${file:tenant}
                        x-both: "${file:./tenant}-${file:../\(directory.split(separator: "/").last ?? "")/host}"
                    rewrite: { host: "${file:\(directory)/host}" }
            """, path: directory + "/outrider.yaml")
        let route = config.listeners[0].routes[0]
        #expect(route.match.headers == [HeaderMatch(name: "x-tenant", value: "blue"),
                                        HeaderMatch(name: "x-both", value: "blue-app.internal")])
        #expect(route.rewrite?.host == "app.internal")
    }

    @Test func exactlyOneTrailingNewlineIsTrimmed() throws {
        let directory = makeTemporaryDirectory()
        defer { removeTree(directory) }
        writeFile(directory + "/two", "secret\n\n")
        writeFile(directory + "/crlf", "secret\r\n")
        writeFile(directory + "/none", "secret")
        writeFile(directory + "/empty", "")
        let session = LoadSession(file: "t.yaml", baseDirectory: directory, environment: [:])
        let node = Position(line: 1, column: 1)
        #expect(session.substitute("${file:two}", at: node) == "secret\n")
        #expect(session.substitute("${file:crlf}", at: node) == "secret")
        #expect(session.substitute("${file:none}", at: node) == "secret")
        #expect(session.substitute("[${file:empty}]", at: node) == "[]")
        #expect(session.errors.isEmpty)
    }

    @Test func substitutesOnceAndLeavesOtherForms() throws {
        let config = try load("""
            listeners:
              - routes:
                  - match:
                      headers:
                        a: "${env:NESTED}"
                        b: "${client_ip} ${jwt.claim.sub} $HOME ${env:X}${env:X}"
                        c: "unterminated ${env:X"
            """, environment: ["NESTED": "${env:X}", "X": "x"])
        #expect(config.listeners[0].routes[0].match.headers == [
            HeaderMatch(name: "a", value: "${env:X}"),
            HeaderMatch(name: "b", value: "${client_ip} ${jwt.claim.sub} $HOME xx"),
            HeaderMatch(name: "c", value: "unterminated ${env:X"),
        ])
    }

    @Test func substitutedValuesAreValidatedLikeWrittenOnes() {
        #expect(errorLines("workers: ${env:W}\n", environment: ["W": "lots"]) == [
            at(1, 10, "invalid value 'lots' for 'workers': expected auto or a number from 1 to 1024"),
        ])
    }

    @Test func missingVariablesAndUnreadableFilesAreErrors() {
        let directory = makeTemporaryDirectory()
        defer { removeTree(directory) }
        let path = directory + "/outrider.yaml"
        let yaml = """
            admin: { address: "${env:ADMIN}" }
            access_log: { path: "${file:missing}" }
            listeners:
              - name: ${env:}
                routes:
                  - cluster: "${file:}"
                    match: { path_prefix: "/${env:A}/${env:B}" }
                    rewrite: { host: "${file:/}" }
            """
        let lines = errorLines(yaml, path: path)
        #expect(lines == [
            "\(path):1:19: environment variable 'ADMIN' is not set (referenced as '${env:ADMIN}')",
            "\(path):2:21: cannot read file '\(directory)/missing' (referenced as '${file:missing}'): No such file or directory",
            "\(path):4:11: '${env:}' names no environment variable",
            "\(path):6:18: '${file:}' names no file",
            "\(path):7:31: environment variable 'A' is not set (referenced as '${env:A}')",
            "\(path):7:31: environment variable 'B' is not set (referenced as '${env:B}')",
            "\(path):8:26: cannot read file '/' (referenced as '${file:/}'): is a directory",
        ])
    }

    @Test func keysAreNotSubstituted() {
        #expect(errorLines("${env:K}: 1\n", environment: ["K": "workers"]) == [
            at(1, 1, "unknown key '${env:K}' in the top level; expected one of: workers, log_level, admin, access_log, drain, listeners, clusters"),
        ])
    }
}
