// Weak stand-in for libFuzzer's LLVMFuzzerRunDriver, so that a plain `swift build` (without
// -sanitize=fuzzer) still links the fuzz executables. It replays inputs instead of fuzzing:
// each argument that does not start with '-' is a file or a directory of files, and the
// callback runs once per file (standard input when no file is named). A crash in the callback
// crashes this process, so the plain build can replay a corpus or a regression directory.
#define _GNU_SOURCE
#include "CFuzzerShim.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef int (*fuzz_callback)(const uint8_t *, size_t);

static int run_stream(FILE *file, const char *name, fuzz_callback callback) {
    size_t capacity = 4096, size = 0;
    uint8_t *data = malloc(capacity);
    if (data == NULL) return 1;
    for (;;) {
        if (size == capacity) {
            uint8_t *grown = realloc(data, capacity * 2);
            if (grown == NULL) { free(data); return 1; }
            data = grown;
            capacity *= 2;
        }
        size_t got = fread(data + size, 1, capacity - size, file);
        if (got == 0) break;
        size += got;
    }
    if (ferror(file)) {
        fprintf(stderr, "fuzz replay: cannot read %s\n", name);
        free(data);
        return 1;
    }
    callback(data, size);
    free(data);
    return 0;
}

static int run_file(const char *path, fuzz_callback callback, int *count) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        fprintf(stderr, "fuzz replay: cannot open %s\n", path);
        return 1;
    }
    int failed = run_stream(file, path, callback);
    fclose(file);
    if (!failed) *count += 1;
    return failed;
}

static int run_path(const char *path, fuzz_callback callback, int *count) {
    struct stat status;
    if (stat(path, &status) != 0) {
        fprintf(stderr, "fuzz replay: no such file or directory: %s\n", path);
        return 1;
    }
    if (!S_ISDIR(status.st_mode)) return run_file(path, callback, count);
    DIR *directory = opendir(path);
    if (directory == NULL) {
        fprintf(stderr, "fuzz replay: cannot open directory %s\n", path);
        return 1;
    }
    int failures = 0;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        size_t length = strlen(path) + strlen(entry->d_name) + 2;
        char *child = malloc(length);
        if (child == NULL) { failures++; break; }
        snprintf(child, length, "%s/%s", path, entry->d_name);
        struct stat childStatus;
        if (stat(child, &childStatus) == 0 && S_ISREG(childStatus.st_mode)) {
            failures += run_file(child, callback, count);
        }
        free(child);
    }
    closedir(directory);
    return failures;
}

__attribute__((weak))
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size)) {
    int failures = 0, count = 0, named = 0;
    for (int index = 1; index < *argc; index++) {
        const char *argument = (*argv)[index];
        if (argument == NULL || argument[0] == '-') continue;
        named++;
        failures += run_path(argument, UserCb, &count);
    }
    if (named == 0) {
        failures += run_stream(stdin, "standard input", UserCb);
        if (failures == 0) count++;
    }
    fprintf(stderr, "fuzz replay (built without -sanitize=fuzzer): %d input(s) run, %d error(s)\n", count, failures);
    return failures == 0 ? 0 : 1;
}

// MARK: ASan poisoning, when ASan is there.

typedef void (*region_function)(const volatile void *, size_t);

// Weak references: resolved when the ASan runtime is linked into the executable, null otherwise.
extern void __asan_poison_memory_region(const volatile void *, size_t) __attribute__((weak));
extern void __asan_unpoison_memory_region(const volatile void *, size_t) __attribute__((weak));

static region_function poison_function, unpoison_function;
static int poisoning_resolved;

static void resolve_poisoning(void) {
    if (poisoning_resolved) return;
    poisoning_resolved = 1;
    poison_function = __asan_poison_memory_region;
    unpoison_function = __asan_unpoison_memory_region;
    // A runtime in a shared library, or one that exports its interface only dynamically.
    if (poison_function == NULL) poison_function = (region_function)dlsym(RTLD_DEFAULT, "__asan_poison_memory_region");
    if (unpoison_function == NULL) unpoison_function = (region_function)dlsym(RTLD_DEFAULT, "__asan_unpoison_memory_region");
    if (poison_function == NULL || unpoison_function == NULL) poison_function = unpoison_function = NULL;
}

void outrider_fuzz_poison(const void *address, size_t size) {
    resolve_poisoning();
    if (poison_function != NULL && size > 0) poison_function(address, size);
}

void outrider_fuzz_unpoison(const void *address, size_t size) {
    resolve_poisoning();
    if (unpoison_function != NULL && size > 0) unpoison_function(address, size);
}

int outrider_fuzz_poisoning_available(void) {
    resolve_poisoning();
    return poison_function != NULL;
}
