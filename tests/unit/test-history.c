/* Unit tests for lbd/latency.c and lbd/history.c: the histogram's buckets and percentiles at every scale,
 * the per-second samples computed from the proxy's counters (bounded to HISTORY_SECONDS, oldest first),
 * a backend's window (rates, error rate, percentiles), backends leaving the pool, and the timeline's
 * bound and order. Time is injected: history_tick() is called with the test's own clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "common/netaddr.h"
#include "lbd/backend.h"
#include "lbd/history.h"
#include "lbd/latency.h"
#include "lbd/proxy.h"

#define T0 (UINT64_C(1800000000) * USEC_PER_SEC)

static void test_latency_buckets(void **state)
{
        unsigned prev = 0;

        /* Buckets never go down as durations grow, and small durations are exact. */
        for (uint64_t v = 0; v < (UINT64_C(1) << 40); v = v < 64 ? v + 1 : v + v / 7) {
                unsigned b = latency_bucket(v);

                assert_true(b >= prev);
                assert_true(b < LATENCY_BUCKETS);
                prev = b;
        }
        assert_int_equal(latency_bucket(0), 0);
        assert_int_equal(latency_bucket(3), 3);
        assert_int_equal(latency_bucket(UINT64_MAX), LATENCY_BUCKETS - 1);
}

static void test_latency_percentile(void **state)
{
        static const uint64_t values[] = {1, 7, 100, 999, 1000, 12345, 250000, 3000000, 60000000};
        struct latency_hist h = {0}, before, d;

        assert_int_equal(latency_percentile(&h, 500), -1);
        /* One duration alone: every percentile is it, within a quarter. */
        for (size_t i = 0; i < ELEMENTSOF(values); i++) {
                struct latency_hist one = {0};
                int64_t p;

                latency_add(&one, values[i]);
                p = latency_percentile(&one, 990);
                assert_true((double)p >= (double)values[i] * 0.75);
                assert_true((double)p <= (double)values[i] * 1.25 + 1);
        }
        /* 98 fast (1 ms) and 2 slow (1 s): p50 fast, p99 slow. */
        for (int i = 0; i < 98; i++)
                latency_add(&h, 1000);
        for (int i = 0; i < 2; i++)
                latency_add(&h, 1000000);
        assert_true(latency_percentile(&h, 500) < 1300);
        assert_true(latency_percentile(&h, 990) > 750000);
        assert_true(latency_percentile(&h, 980) < 1300);
        /* A difference holds only what came between the copies, wrapping counters included. */
        before = h;
        for (int i = 0; i < 10; i++)
                latency_add(&h, 50000);
        latency_diff(&h, &before, &d);
        assert_int_equal(d.count, 10);
        assert_true(latency_percentile(&d, 10) > 37000 && latency_percentile(&d, 10) < 63000);
        before.count = UINT32_MAX;
        before.buckets[latency_bucket(50000)] = UINT32_MAX;
        h = before;
        latency_add(&h, 50000);
        latency_diff(&h, &before, &d);
        assert_int_equal(d.count, 1);
        assert_int_equal(d.buckets[latency_bucket(50000)], 1);
}

static struct netaddr addr(const char *s)
{
        struct netaddr a;

        assert_int_equal(netaddr_parse(s, 0, false, &a), 0);
        return a;
}

/* The history's view of the proxy's counters: a struct the test changes. */
static void stats_copy(void *userdata, struct proxy_stats *ret)
{
        *ret = *(const struct proxy_stats *)userdata;
}

static void test_samples(void **state)
{
        struct proxy_stats stats = {0};
        struct pool *pool = pool_new(NULL, NULL);
        struct netaddr addrs[2] = {addr("127.0.0.1:8081"), addr("127.0.0.1:8082")};
        struct history *h;
        const struct history_sample *s;

        assert_non_null(pool);
        assert_int_equal(pool_set_backends(pool, addrs, 2), 0);
        pool->backends[1]->healthy = true;
        h = history_new(NULL, pool, stats_copy, &stats);
        assert_non_null(h);

        /* The first tick only takes a copy. */
        history_tick(h, T0);
        assert_int_equal(history_n_samples(h), 0);
        assert_null(history_sample_at(h, 0));

        for (int i = 0; i < 99; i++)
                latency_add(&stats.latency, 2000);
        latency_add(&stats.latency, 400000);
        stats.errors_total += 3;
        history_tick(h, T0 + USEC_PER_SEC);
        assert_int_equal(history_n_samples(h), 1);
        s = history_sample_at(h, 0);
        assert_non_null(s);
        assert_int_equal(s->wall_sec, T0 / USEC_PER_SEC + 1);
        assert_int_equal(s->requests, 100);
        assert_int_equal(s->errors, 3);
        assert_int_equal(s->healthy, 1);
        assert_true(s->p99_usec > 1500 && s->p99_usec < 2500);

        /* A quiet second: nothing, and no latency. */
        history_tick(h, T0 + 2 * USEC_PER_SEC);
        s = history_sample_at(h, 1);
        assert_int_equal(s->requests, 0);
        assert_int_equal(s->errors, 0);
        assert_int_equal(s->p99_usec, -1);

        /* Bounded: the last HISTORY_SECONDS, oldest first. */
        for (unsigned i = 3; i < HISTORY_SECONDS + 100; i++) {
                latency_add(&stats.latency, 1000);
                history_tick(h, T0 + i * USEC_PER_SEC);
        }
        assert_int_equal(history_n_samples(h), HISTORY_SECONDS);
        assert_int_equal(history_sample_at(h, 0)->wall_sec, T0 / USEC_PER_SEC + 100);
        assert_int_equal(history_sample_at(h, HISTORY_SECONDS - 1)->wall_sec,
                         T0 / USEC_PER_SEC + HISTORY_SECONDS + 99);
        assert_int_equal(history_sample_at(h, HISTORY_SECONDS - 1)->requests, 1);
        assert_null(history_sample_at(h, HISTORY_SECONDS));

        h = history_free(h);
        pool = pool_free(pool);
}

static void test_backend_window(void **state)
{
        struct pool *pool = pool_new(NULL, NULL);
        struct netaddr addrs[2] = {addr("127.0.0.1:8081"), addr("127.0.0.1:8082")};
        struct history_backend_view v;
        struct backend *b, *gone;
        struct history *h;

        assert_non_null(pool);
        assert_int_equal(pool_set_backends(pool, addrs, 2), 0);
        b = pool->backends[0];
        h = history_new(NULL, pool, NULL, NULL);
        assert_non_null(h);

        history_backend(h, b, &v);
        assert_true(v.rps == 0 && v.error_rate == -1 && v.p50_usec == -1 && v.p99_usec == -1);

        /* 20 s of 50 requests a second, 5 of them 5xx and 1 a failure; 10 ms each, one in 50 takes 1 s. */
        for (unsigned t = 0; t <= 20; t++) {
                if (t > 0) {
                        b->stats.requests += 50;
                        b->stats.by_code[200 - BACKEND_CODE_MIN] += 44;
                        b->stats.by_code[503 - BACKEND_CODE_MIN] += 5;
                        b->stats.failures += 1;
                        for (int i = 0; i < 49; i++)
                                latency_add(&b->stats.latency, 10000);
                        latency_add(&b->stats.latency, 1000000);
                }
                history_tick(h, T0 + t * USEC_PER_SEC);
        }
        history_backend(h, b, &v);
        assert_true(v.rps > 49.9 && v.rps < 50.1);
        assert_true(v.error_rate > 0.119 && v.error_rate < 0.121);
        assert_true(v.p50_usec > 7500 && v.p50_usec < 12500);
        assert_true(v.p99_usec > 750000 && v.p99_usec < 1250000);

        /* The window moves: 10 quiet seconds later it is all quiet. */
        for (unsigned t = 21; t <= 31; t++)
                history_tick(h, T0 + t * USEC_PER_SEC);
        history_backend(h, b, &v);
        assert_true(v.rps == 0 && v.error_rate == -1 && v.p99_usec == -1);

        /* A backend that left the pool is dropped at the next tick, with its reference. */
        gone = backend_ref(pool->backends[1]);
        assert_int_equal(pool_set_backends(pool, addrs, 1), 0);
        history_tick(h, T0 + 32 * USEC_PER_SEC);
        assert_int_equal(gone->refs, 1);
        history_backend(h, gone, &v);
        assert_true(v.p50_usec == -1);
        gone = backend_unref(gone);

        h = history_free(h);
        pool = pool_free(pool);
}

static void test_events(void **state)
{
        struct history *h = history_new(NULL, NULL, NULL, NULL);
        char long_text[2 * HISTORY_EVENT_TEXT];
        const struct history_event *e;

        assert_non_null(h);
        history_event(NULL, HISTORY_EVENT_LAUNCH, "nobody keeps this");
        assert_int_equal(history_n_events(h), 0);
        assert_null(history_event_at(h, 0));

        history_event(h, HISTORY_EVENT_REPLACE, "Terminated instance %s: %s", "i-1", "failing");
        e = history_event_at(h, 0);
        assert_non_null(e);
        assert_int_equal(e->kind, HISTORY_EVENT_REPLACE);
        assert_string_equal(e->text, "Terminated instance i-1: failing");
        assert_true(e->wall_usec > T0 / 2);
        assert_string_equal(history_event_kind_name(e->kind), "replace");

        memset(long_text, 'x', sizeof(long_text) - 1);
        long_text[sizeof(long_text) - 1] = '\0';
        history_event(h, HISTORY_EVENT_RELOAD, "%s", long_text);
        assert_int_equal(strlen(history_event_at(h, 1)->text), HISTORY_EVENT_TEXT - 1);

        for (unsigned i = 0; i < HISTORY_EVENTS + 10; i++)
                history_event(h, HISTORY_EVENT_LAUNCH, "event %u", i);
        assert_int_equal(history_n_events(h), HISTORY_EVENTS);
        assert_string_equal(history_event_at(h, 0)->text, "event 10");
        {
                char last[32];

                (void)snprintf(last, sizeof(last), "event %u", HISTORY_EVENTS + 9);
                assert_string_equal(history_event_at(h, HISTORY_EVENTS - 1)->text, last);
        }
        for (int k = 0; k < _HISTORY_EVENT_MAX; k++)
                assert_string_not_equal(history_event_kind_name((enum history_event_kind)k), "?");
        h = history_free(h);
}

static void test_check_ring(void **state)
{
        struct pool *pool = pool_new(NULL, NULL);
        struct netaddr a = addr("127.0.0.1:8081");
        struct backend *b;

        assert_non_null(pool);
        assert_int_equal(pool_set_backends(pool, &a, 1), 0);
        b = pool->backends[0];
        for (unsigned i = 0; i < BACKEND_CHECKS_KEPT + 3; i++)
                backend_note_check(b, i % 2 ? CHECK_OK : CHECK_TIMEOUT);
        assert_int_equal(b->n_checks, BACKEND_CHECKS_KEPT + 3);
        assert_int_equal(b->last_check, CHECK_TIMEOUT);
        assert_int_equal(b->checks[(b->n_checks - 1) % BACKEND_CHECKS_KEPT], CHECK_TIMEOUT);
        assert_int_equal(b->checks[(b->n_checks - 2) % BACKEND_CHECKS_KEPT], CHECK_OK);
        pool = pool_free(pool);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_latency_buckets), cmocka_unit_test(test_latency_percentile),
                cmocka_unit_test(test_samples),         cmocka_unit_test(test_backend_window),
                cmocka_unit_test(test_events),          cmocka_unit_test(test_check_ring),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
