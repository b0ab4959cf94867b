import OutriderBench

func printUsageError(_ text: String) {
    printError(text)
}
