import ArgumentParser

// Entry point only: the loops and every closure handed to another thread live in
// OutriderBench (closures written in top-level code are main-actor isolated; DESIGN.md §5).
//
// As `BenchCommand.main()`, except that bad arguments exit 1 (SPEC §11) rather than
// ArgumentParser's EX_USAGE (64); help still exits 0.
do {
    var command = try BenchCommand.parseAsRoot()
    try command.run()
} catch {
    if BenchCommand.exitCode(for: error) == .validationFailure {
        printUsageError(BenchCommand.fullMessage(for: error))
        BenchCommand.exit(withError: ExitCode.failure)
    }
    BenchCommand.exit(withError: error)
}
