/* Latency histograms (latency.h): the arithmetic that stays off the request path. */
#include "lbd/latency.h"

/* The lowest duration that falls in bucket <idx>, and the width of the bucket. */
static void latency_bucket_range(unsigned idx, uint64_t *ret_low, uint64_t *ret_width)
{
        unsigned e, sub;

        if (idx < (1u << LATENCY_SUB_BITS)) {
                *ret_low = idx;
                *ret_width = 1;
                return;
        }
        e = (idx >> LATENCY_SUB_BITS) + LATENCY_SUB_BITS - 1;
        sub = idx & ((1u << LATENCY_SUB_BITS) - 1);
        *ret_low = ((uint64_t)((1u << LATENCY_SUB_BITS) | sub)) << (e - LATENCY_SUB_BITS);
        *ret_width = UINT64_C(1) << (e - LATENCY_SUB_BITS);
}

void latency_diff(const struct latency_hist *now, const struct latency_hist *before,
                  struct latency_hist *ret)
{
        ret->count = now->count - before->count;
        for (unsigned i = 0; i < LATENCY_BUCKETS; i++)
                ret->buckets[i] = now->buckets[i] - before->buckets[i];
}

int64_t latency_percentile(const struct latency_hist *h, unsigned permille)
{
        uint64_t total = 0, rank, seen = 0;

        for (unsigned i = 0; i < LATENCY_BUCKETS; i++)
                total += h->buckets[i];
        if (total == 0)
                return -1;
        if (permille > 1000)
                permille = 1000;
        /* The smallest bucket holding at least permille/1000 of the durations (nearest rank). */
        rank = (total * permille + 999) / 1000;
        if (rank == 0)
                rank = 1;
        for (unsigned i = 0; i < LATENCY_BUCKETS; i++) {
                seen += h->buckets[i];
                if (seen >= rank) {
                        uint64_t low, width;

                        latency_bucket_range(i, &low, &width);
                        return (int64_t)(low + width / 2);
                }
        }
        return -1;
}

uint32_t latency_count_above(const struct latency_hist *h, uint64_t usec)
{
        uint32_t n = 0;

        for (unsigned i = latency_bucket(usec) + 1; i < LATENCY_BUCKETS; i++)
                n += h->buckets[i];
        return n;
}
