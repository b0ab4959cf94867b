#ifndef OUTRIDER_CFUZZERSHIM_H
#define OUTRIDER_CFUZZERSHIM_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver entry point (compiler-rt FuzzerInterface.h). SwiftPM gives an executable
/// its own `main`, so the fuzz target calls this instead of relying on libFuzzer's `main`.
/// Built with `-sanitize=fuzzer`, libFuzzer's strong definition is used; otherwise the weak
/// fallback in CFuzzerShim.c runs the callback once per file named on the command line.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));

#endif
