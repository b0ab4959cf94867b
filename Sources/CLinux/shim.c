#define _GNU_SOURCE 1
#include <sched.h>
#include <signal.h>
#include <pthread.h>
#include "CLinux.h"

int clinux_cpu_count_allowed(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
    return CPU_COUNT(&set);
}

int clinux_block_signals(const int *signals, int count, sigset_t *out_set) {
    sigemptyset(out_set);
    for (int i = 0; i < count; i++) sigaddset(out_set, signals[i]);
    return pthread_sigmask(SIG_BLOCK, out_set, NULL);
}

int clinux_set_thread_name(pthread_t thread, const char *name) {
    return pthread_setname_np(thread, name);
}
