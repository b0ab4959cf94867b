#ifndef OUTRIDER_CATOMICS_H
#define OUTRIDER_CATOMICS_H
#include <stdint.h>
#include <stdbool.h>

// 64-bit atomics on plain memory, for tables shared by the worker threads (rate limits).
static inline uint64_t catomic_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void catomic_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline bool catomic_cas(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline uint64_t catomic_add(uint64_t *p, uint64_t v) { return __atomic_add_fetch(p, v, __ATOMIC_RELAXED); }
#endif
