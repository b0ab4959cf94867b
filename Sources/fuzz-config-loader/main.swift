// Entry point of the config-loader fuzzer (scripts/fuzz.sh config-loader SECONDS). As in
// fuzz-http1-parser, libFuzzer is started through LLVMFuzzerRunDriver, and the callback is the
// @_cdecl function in FuzzOneInput.swift: a closure written here would be main-actor isolated
// and trap when C calls it (DESIGN §5).
//
// Built without -sanitize=fuzzer it links CFuzzerShim's weak fallback, which replays the files
// and directories named on the command line through the same checks.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// `${file:/dev/stdin}` in an input must not wait for a terminal: standard input reads as empty.
let devNull = open("/dev/null", O_RDONLY)
if devNull >= 0 {
    _ = dup2(devNull, 0)
    _ = close(devNull)
}
exit(runFuzzDriver())
