// Entry point of the TLS 1.3 record layer fuzzer (scripts/fuzz.sh tls13-records SECONDS). As in
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

exit(runFuzzDriver())
