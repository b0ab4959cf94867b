import Testing
import OutriderCore
import OutriderHTTP
@testable import OutriderHTTP1

@Suite("Path normalizer (SPEC §2 Routing)")
struct PathNormalizerTests {
    @Test(arguments: [
        ("/", "/"),
        ("/a/./b/../c", "/a/c"),
        ("//x///y", "/x/y"),
        ("/%7E%41", "/~A"),
        ("/%7e%61%5F%2D%2e%30", "/~a_-.0"),
        ("/a/%2E/b", "/a/b"),
        ("/a/%2e%2E/b", "/b"),
        ("/a/b/", "/a/b/"),
        ("/a//", "/a/"),
        ("/a/.", "/a/"),
        ("/a/./", "/a/"),
        ("/a/b/..", "/a/"),
        ("/a/b/../", "/a/"),
        ("/a/..", "/"),
        ("/./a", "/a"),
        ("/.", "/"),
        ("/a/b/c/../../d", "/a/d"),
        ("/a/.b/..c/...", "/a/.b/..c/..."),
        ("/%3a", "/%3A"),
        ("/%3A%40%21", "/%3A%40%21"),
        ("/%e2%82%ac", "/%E2%82%AC"),
        ("/%25", "/%25"),
        ("/%252F", "/%252F"),
        ("/%00", "/%00"),
        ("/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;="),
    ])
    func normalizedPaths(_ target: String, _ expected: String) {
        #expect(normalize(target) == Normalized(path: expected, query: ""), "\(target)")
        // Normalizing is idempotent.
        #expect(normalize(expected) == Normalized(path: expected, query: ""), "\(expected) again")
    }

    @Test(arguments: [
        ("/a?x=/../", "/a", "?x=/../"),
        ("/a/./b/../c?q=%2f%2F\\", "/a/c", "?q=%2f%2F\\"),
        ("/?", "/", "?"),
        ("//a//?b//", "/a/", "?b//"),
        ("/p?q=1?r=2", "/p", "?q=1?r=2"),
    ])
    func queryIsCopiedUntouched(_ target: String, _ path: String, _ query: String) {
        #expect(normalize(target) == Normalized(path: path, query: query), "\(target)")
    }

    @Test(arguments: [
        "/%2f", "/%2F", "/a%2Fb", "/%5C", "/%5c", "/a\\b", "\\", "/\\",
        "/..", "/../", "/../a", "/a/../..", "/a/../../b", "/./..", "/%2e%2e/", "/%2E%2E", "/.%2e/x", "/a/b/../../../c",
        "/%", "/%4", "/%4g", "/%g4", "/a%", "/a%2", "/%%41",
        "/#", "/a#frag", "/a?b#frag",
        "", "a/b", "*", "http://example.com/", "?x",
    ])
    func refused(_ target: String) {
        #expect(normalize(target) == nil, "\(target.debugDescription) must be refused")
    }

    @Test func outputNeverLongerThanInput() {
        for target in ["/%7e%7e%7e", "/a/../b", "//////", "/%3a%3a"] {
            let normalized = normalize(target)
            #expect(normalized != nil)
            #expect((normalized?.description.utf8.count ?? .max) <= target.utf8.count)
        }
    }

    @Test func refusesWhenOutputHasNoRoom() {
        let input = Array("/abc".utf8)
        let output = ByteBuffer(capacity: input.count)   // needs count + 1
        let result = input.withUnsafeBufferPointer { PathNormalizer.normalize($0.baseAddress!, input.count, into: output) }
        #expect(result == nil)
    }

    @Test func writesAtTheWriterIndex() {
        let input = Array("/a/../b?c".utf8)
        let output = ByteBuffer(capacity: 64)
        output.append("xx")
        let result = input.withUnsafeBufferPointer { PathNormalizer.normalize($0.baseAddress!, input.count, into: output) }
        #expect(result == PathNormalizer.Result(pathLength: 2, queryLength: 2))
        #expect(String(decoding: output.readableArray(), as: UTF8.self) == "xx/b?c")
    }
}
