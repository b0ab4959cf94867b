import ArgumentParser
import OutriderConfig

// Entry point only: everything that runs on other threads lives in the libraries, because
// closures written in top-level code here are main-actor isolated (see DESIGN.md §5).
//
// As `OutriderCommand.main()`, except that bad flags exit 1 (SPEC §1) rather than
// ArgumentParser's EX_USAGE (64); help and version still exit 0.
ConfigLoader.certificatePairCheck = certificatePairProblem
do {
    var command = try OutriderCommand.parseAsRoot()
    try command.run()
} catch {
    if OutriderCommand.exitCode(for: error) == .validationFailure {
        printError(OutriderCommand.fullMessage(for: error))
        OutriderCommand.exit(withError: ExitCode.failure)
    }
    OutriderCommand.exit(withError: error)
}
