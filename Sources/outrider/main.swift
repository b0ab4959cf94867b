// Entry point only: everything that runs on other threads lives in the libraries, because
// closures written in top-level code here are main-actor isolated (see DESIGN.md §5).
OutriderCommand.main()
