/* Unit tests for lbd/autoscale.c's decisions, driven by samples one second apart: a load step scales out
 * at once by as many as needed, within max; a steady load at 90 % of the target never flaps; scaling in
 * waits for its window and cooldown, goes one at a time, and not while held; nothing on partial data (too
 * few samples, a gap, no backend serving) or while the storm guard holds; reloads clamp to min/max; the p90
 * target adds one backend at a time while it is breached and lets one go only under half of it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "lbd/autoscale.h"

#define SEC USEC_PER_SEC

static const struct autoscale_settings settings = {
        .min = 1,
        .max = 10,
        .target_rps = 100,
        .out_after_usec = 30 * SEC,
        .in_after_usec = 60 * SEC,
        .in_cooldown_usec = 60 * SEC,
};

struct sim {
        struct autoscale_state st;
        uint64_t now, requests, desired;
        unsigned changes;
        bool none_serving; /* the samples show no backend in rotation */
};

/* <seconds> of load at <rps> (and <inflight>), deciding after each sample; returns the desired count. */
static uint64_t run(struct sim *s, unsigned seconds, uint64_t rps, uint64_t inflight, bool hold_in, bool hold_all)
{
        for (unsigned i = 0; i < seconds; i++) {
                struct autoscale_sample x;
                uint64_t next;

                s->now += SEC;
                s->requests += rps;
                x = (struct autoscale_sample){.at_usec = s->now, .requests = s->requests, .inflight = inflight,
                                              .serving = s->none_serving ? 0 : s->desired};
                autoscale_state_add(&s->st, &x);
                next = autoscale_decide(&s->st, &settings, s->now, s->desired, hold_in, hold_all);
                if (next != s->desired) {
                        print_message("t=%llu: %s\n", (unsigned long long)(s->now / SEC), s->st.last);
                        s->changes++;
                }
                s->desired = next;
        }
        return s->desired;
}

static void sim_init(struct sim *s, uint64_t desired)
{
        memset(s, 0, sizeof(*s));
        s->now = 1000 * SEC;
        s->desired = desired;
}

static void test_step_out_then_in(void **state)
{
        struct sim s;
        unsigned out_at = 0;

        sim_init(&s, 3);
        /* 50 req/s: nothing (the windows fill first, then the load is low but min... 3 -> fewer later) */
        assert_int_equal(run(&s, 20, 50, 0, false, false), 3);
        /* 500 req/s: out within the 30 s window, straight to what the last seconds need */
        for (unsigned i = 1; i <= 40 && !out_at; i++)
                if (run(&s, 1, 500, 0, false, false) != 3)
                        out_at = i;
        assert_true(out_at > 0 && out_at <= 30);
        assert_int_equal(s.desired, 5);
        assert_int_equal(s.changes, 1);
        run(&s, 40, 500, 0, false, false);
        assert_int_equal(s.desired, 5);
        assert_int_equal(s.changes, 1);
        /* load stops: one at a time, each after the cooldown */
        run(&s, 59, 0, 0, false, false);
        assert_true(s.desired >= 4);
        run(&s, 400, 0, 0, false, false);
        assert_int_equal(s.desired, 1); /* min */
}

static void test_no_flapping_at_90_percent(void **state)
{
        struct sim s;

        sim_init(&s, 10);
        run(&s, 1200, 900, 0, false, false); /* 90 req/s per backend, target 100 */
        assert_int_equal(s.desired, 10);
        assert_int_equal(s.changes, 0);
        sim_init(&s, 4);
        run(&s, 1200, 360, 0, false, false);
        assert_int_equal(s.desired, 4);
        assert_int_equal(s.changes, 0);
}

static void test_holds_and_partial_data(void **state)
{
        struct sim s;

        /* held: no scale-in (refresh), nothing at all (storm guard) */
        sim_init(&s, 5);
        run(&s, 300, 0, 0, true, false);
        assert_int_equal(s.desired, 5);
        run(&s, 100, 2000, 0, false, true);
        assert_int_equal(s.desired, 5);
        /* too few samples since start: nothing even at a huge load */
        sim_init(&s, 3);
        run(&s, 25, 5000, 0, false, false);
        assert_int_equal(s.desired, 3);
        assert_false(s.st.data_ok);
        /* a gap in the samples: the window is not covered again until it refills */
        sim_init(&s, 3);
        run(&s, 40, 100, 0, false, false);
        s.now += 10 * SEC;
        run(&s, 20, 5000, 0, false, false);
        assert_int_equal(s.desired, 3);
        run(&s, 15, 5000, 0, false, false);
        assert_int_equal(s.desired, 10); /* max */
        /* no backend serving: no figures */
        sim_init(&s, 3);
        s.none_serving = true;
        run(&s, 50, 500, 0, false, false);
        assert_int_equal(s.desired, 3);
        assert_false(s.st.data_ok);
        /* below min after a reload: clamped at once, nothing more */
        sim_init(&s, 0);
        run(&s, 5, 0, 0, false, false);
        assert_int_equal(s.desired, 1);
}

static void test_inflight_target(void **state)
{
        struct autoscale_settings in = settings;
        struct autoscale_state st = {0};
        uint64_t now = 0, d = 2;

        in.target_rps = 0;
        in.target_inflight = 4;
        for (int i = 0; i < 40; i++) {
                struct autoscale_sample x = {.at_usec = now += SEC, .requests = 0, .inflight = 20, .serving = 2};

                autoscale_state_add(&st, &x);
                d = autoscale_decide(&st, &in, now, d, false, false);
        }
        assert_int_equal(d, 5);
        /* reloaded bounds clamp at once */
        in.max = 3;
        assert_int_equal(autoscale_decide(&st, &in, now, d, false, true), 3);
        assert_non_null(strstr(st.last, "within min 1 and max 3"));
}

/* <seconds> of <per_sec> requests a second, <slow_pct> % of them over the p90 target and <half_pct> % over
 * half of it, with <serving> backends in rotation (-1: as many as desired), deciding each second. */
static uint64_t run_latency(struct autoscale_state *st, const struct autoscale_settings *in, uint64_t *now,
                            uint64_t d, unsigned seconds, uint32_t per_sec, unsigned slow_pct, unsigned half_pct,
                            int serving, unsigned *changes)
{
        static uint32_t finished, over, half; /* counters that wrap, as the proxy's do */

        for (unsigned i = 0; i < seconds; i++) {
                struct autoscale_sample x;
                uint64_t next;

                finished += per_sec;
                over += per_sec * slow_pct / 100;
                half += per_sec * half_pct / 100;
                x = (struct autoscale_sample){.at_usec = *now += SEC, .requests = finished, .inflight = 0,
                                              .serving = serving < 0 ? d : (size_t)serving, .finished = finished,
                                              .over_target = over, .over_half = half};
                autoscale_state_add(st, &x);
                next = autoscale_decide(st, in, *now, d, false, false);
                if (next != d) {
                        print_message("t=%llu: %s\n", (unsigned long long)(*now / SEC), st->last);
                        (*changes)++;
                }
                d = next;
        }
        return d;
}

static void test_p90_target(void **state)
{
        struct autoscale_settings in = settings;
        struct autoscale_state st;
        uint64_t now = 0, d = 2;
        unsigned changes = 0;

        memset(&st, 0, sizeof(st));
        autoscale_state_reset(&st);
        in.target_rps = 0;
        in.target_p90_usec = 200 * USEC_PER_MSEC;
        in.in_cooldown_usec = 30 * SEC;
        /* 5 % slower than the target: p90 under it, and over half of it for 40 %: no change either way. */
        d = run_latency(&st, &in, &now, d, 200, 100, 5, 40, -1, &changes);
        assert_int_equal(d, 2);
        assert_int_equal(changes, 0);
        assert_true(st.slow_share > 0.04 && st.slow_share < 0.06);
        /* 30 % slower: one more backend (once the window's share passes 10 %), and none while the last one
         * added is not in rotation, nor within an out window of the last change. */
        d = run_latency(&st, &in, &now, d, 31, 100, 30, 60, 2, &changes);
        assert_int_equal(d, 3);
        assert_non_null(strstr(st.last, "% of requests slower than the p90 target 200 ms"));
        d = run_latency(&st, &in, &now, d, 60, 100, 30, 60, 2, &changes); /* the third never serves */
        assert_int_equal(d, 3);
        d = run_latency(&st, &in, &now, d, 1, 100, 30, 60, -1, &changes);
        assert_int_equal(d, 4);
        d = run_latency(&st, &in, &now, d, 29, 100, 30, 60, -1, &changes);
        assert_int_equal(d, 4);
        d = run_latency(&st, &in, &now, d, 2, 100, 30, 60, -1, &changes);
        assert_int_equal(d, 5);
        /* Fast again, but p90 over half the target: no scale-in; under half of it: back one at a time. */
        d = run_latency(&st, &in, &now, d, 120, 100, 0, 20, -1, &changes);
        assert_int_equal(d, 5);
        changes = 0;
        d = run_latency(&st, &in, &now, d, 300, 100, 0, 2, -1, &changes);
        assert_int_equal(d, 1);
        assert_int_equal(changes, 4);
        /* Too few requests: latency has no vote. */
        d = run_latency(&st, &in, &now, 2, 100, 0, 100, 100, -1, &changes);
        assert_true(st.slow_share < 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_step_out_then_in),
                cmocka_unit_test(test_no_flapping_at_90_percent),
                cmocka_unit_test(test_holds_and_partial_data),
                cmocka_unit_test(test_inflight_target),
                cmocka_unit_test(test_p90_target),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
