#ifndef OUTRIDER_CFUZZERSHIM_H
#define OUTRIDER_CFUZZERSHIM_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver entry point (compiler-rt FuzzerInterface.h). SwiftPM gives an executable
/// its own `main`, so the fuzz target calls this instead of relying on libFuzzer's `main`.
/// Built with `-sanitize=fuzzer`, libFuzzer's strong definition is used; otherwise the weak
/// fallback in CFuzzerShim.c runs the callback once per file named on the command line.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));

/// AddressSanitizer's manual poisoning (sanitizer/asan_interface.h), looked up at run time so
/// that the same code links without ASan: after `outrider_fuzz_poison`, any read or write of
/// `[address, address + size)` is an ASan report; `outrider_fuzz_unpoison` makes it usable
/// again. Fuzz targets poison the unwritten tail of a buffer (past its writer index) so that a
/// codec reading bytes it was not given is caught even inside the allocation. Both are no-ops
/// without ASan. ASan tracks 8-byte granules: a region that ends before the end of its
/// allocation has its last partial granule left readable.
void outrider_fuzz_poison(const void *address, size_t size);
void outrider_fuzz_unpoison(const void *address, size_t size);
/// 1 when the poisoning functions were found (the binary runs under ASan), else 0.
int outrider_fuzz_poisoning_available(void);

#endif
