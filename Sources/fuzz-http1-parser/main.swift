// Entry point of the HTTP/1 request-parser fuzzer. SwiftPM gives the executable its own main,
// so libFuzzer is started through LLVMFuzzerRunDriver (DESIGN §5). The callback is the
// @_cdecl function in FuzzOneInput.swift, never a closure written here: top-level closures in
// main.swift are main-actor isolated and trap when C calls them.
//
//   swift build -c debug --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address --product fuzz-http1-parser
//   scripts/fuzz.sh http1-parser 60
//
// Built without -sanitize=fuzzer it links CFuzzerShim's weak fallback, which replays the files
// and directories named on the command line through the same checks.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

exit(runFuzzDriver())
