/* Latency histograms: counts of durations in buckets four to a power of two, so a percentile read back is
 * within 25% of the true value whatever the scale (1 us to about an hour; longer ones land in the last
 * bucket). Adding is a handful of instructions and no branch on the data, for the request path: the proxy
 * keeps one for every exchange and one per backend (proxy.c), and the history (history.c) reads
 * percentiles from differences between two copies taken some seconds apart.
 *
 * Counts are 32-bit and wrap; a difference of two copies is right as long as fewer than 2^32 durations fell
 * into one bucket between them. */
#pragma once

#include <stdint.h>

#define LATENCY_SUB_BITS 2 /* four buckets per power of two */
#define LATENCY_BUCKETS  128

struct latency_hist {
        uint32_t count;
        uint32_t buckets[LATENCY_BUCKETS];
};

/* The bucket of a duration of <usec> microseconds. */
static inline unsigned latency_bucket(uint64_t usec)
{
        unsigned e, idx;

        if (usec < (1u << LATENCY_SUB_BITS))
                return (unsigned)usec;
        e = 63u - (unsigned)__builtin_clzll(usec);
        idx = ((e - LATENCY_SUB_BITS + 1) << LATENCY_SUB_BITS) |
              (unsigned)((usec >> (e - LATENCY_SUB_BITS)) & ((1u << LATENCY_SUB_BITS) - 1));
        return idx < LATENCY_BUCKETS ? idx : LATENCY_BUCKETS - 1;
}

/* One writer per histogram; its stores are relaxed atomics (plain moves on x86), so another thread may
 * read it with latency_merge() while it runs. */
static inline void latency_add(struct latency_hist *h, uint64_t usec)
{
        unsigned i = latency_bucket(usec);

        __atomic_store_n(&h->count, h->count + 1, __ATOMIC_RELAXED);
        __atomic_store_n(&h->buckets[i], h->buckets[i] + 1, __ATOMIC_RELAXED);
}

/* <to> += <h>, reading <h> atomically (it may be another loop's). */
static inline void latency_merge(struct latency_hist *to, const struct latency_hist *h)
{
        to->count += __atomic_load_n(&h->count, __ATOMIC_RELAXED);
        for (unsigned i = 0; i < LATENCY_BUCKETS; i++)
                to->buckets[i] += __atomic_load_n(&h->buckets[i], __ATOMIC_RELAXED);
}

/* <ret> = <now> - <before>: the durations added between two copies of one histogram. */
void latency_diff(const struct latency_hist *now, const struct latency_hist *before,
                  struct latency_hist *ret);

/* How many durations of <h> lie in buckets wholly above <usec>'s (so certainly longer than <usec>). */
uint32_t latency_count_above(const struct latency_hist *h, uint64_t usec);

/* The <permille>/1000 quantile of <h> in microseconds (the middle of its bucket), or -1 when <h> is
 * empty. */
int64_t latency_percentile(const struct latency_hist *h, unsigned permille);
