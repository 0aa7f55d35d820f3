/* Unit tests for lbd/balance.c with several event loops: the balancers read each loop's in-flight count
 * (struct backend_loop) and the published verdict, so a request in flight on one loop steers the others;
 * each loop keeps its own cursor. And the pool's per-loop state: pool_set_loops()'s bounds, a view holding
 * its backends, and backend_get_stats() summing the loops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>

#include <cmocka.h>

#include "common/macro.h"
#include "common/netaddr.h"
#include "lbd/backend.h"
#include "lbd/balance.h"

static struct netaddr addr(const char *s)
{
        struct netaddr a;

        assert_int_equal(netaddr_parse(s, 0, false, &a), 0);
        return a;
}

/* A pool of two backends, both up, kept by two loops. */
static struct pool *two_loop_pool(void)
{
        struct netaddr addrs[2] = {addr("127.0.0.1:8081"), addr("127.0.0.1:8082")};
        struct pool *p = pool_new(NULL, NULL);

        assert_non_null(p);
        assert_int_equal(pool_set_loops(p, 2), 0);
        assert_int_equal(pool_set_backends(p, addrs, 2), 0);
        for (size_t i = 0; i < 2; i++)
                backend_set_healthy(p->backends[i], true, "test");
        return p;
}

static void test_least_conn_counts_every_loop(void **state)
{
        struct pool *p = two_loop_pool();
        struct balance_state loop0, loop1;
        struct backend *b0 = p->backends[0], *b1 = p->backends[1];

        balance_state_init(&loop0);
        balance_state_init(&loop1);
        /* Loop 1 has a request in flight on b0: loop 0, whose cursor is at b0, must take b1. */
        b0->loops[1].active = 1;
        assert_int_equal(backend_active(b0), 1);
        assert_ptr_equal(balance_least_conn.pick(p->view, &loop0, NULL, 0), b1);
        /* Both loops busy on b1 now: loop 1 takes b0 although its own count for b1 is 0. */
        b1->loops[0].active = 2;
        assert_ptr_equal(balance_least_conn.pick(p->view, &loop1, NULL, 0), b0);
        pool_free(p);
}

static void test_p2c_counts_every_loop(void **state)
{
        struct pool *p = two_loop_pool();
        struct balance_state s;

        balance_state_init(&s);
        p->backends[1]->loops[1].active = 3;
        /* Two usable backends: p2c compares both, and the other loop's count decides. */
        for (int i = 0; i < 20; i++)
                assert_ptr_equal(balance_p2c.pick(p->view, &s, NULL, 0), p->backends[0]);
        pool_free(p);
}

static void test_round_robin_cursor_per_loop(void **state)
{
        struct pool *p = two_loop_pool();
        struct balance_state loop0, loop1;

        balance_state_init(&loop0);
        balance_state_init(&loop1);
        assert_ptr_equal(balance_round_robin.pick(p->view, &loop0, NULL, 0), p->backends[0]);
        assert_ptr_equal(balance_round_robin.pick(p->view, &loop0, NULL, 0), p->backends[1]);
        assert_ptr_equal(balance_round_robin.pick(p->view, &loop1, NULL, 0), p->backends[0]);
        pool_free(p);
}

static void test_verdict_published(void **state)
{
        struct pool *p = two_loop_pool();
        struct balance_state s;
        struct backend *b0 = p->backends[0];

        balance_state_init(&s);
        backend_set_maintenance(b0, true);
        assert_false(backend_rotation(b0));
        for (int i = 0; i < 4; i++)
                assert_ptr_equal(balance_least_conn.pick(p->view, &s, NULL, 0), p->backends[1]);
        backend_set_maintenance(b0, false);
        assert_true(backend_rotation(b0));
        pool_free(p);
}

static void test_view_and_stats(void **state)
{
        struct netaddr other = addr("127.0.0.1:8083");
        struct pool *p = two_loop_pool();
        struct pool_view *v = pool_view_ref(p->view);
        struct backend *b0 = p->backends[0];
        struct backend_stats st;

        assert_int_equal(pool_set_loops(p, 3), -EINVAL); /* backends exist already */
        b0->stats.health_ok = 4;
        b0->loops[0].stats.requests = 2;
        b0->loops[1].stats.requests = 5;
        b0->loops[1].stats.by_code[200 - BACKEND_CODE_MIN] = 5;
        latency_add(&b0->loops[1].stats.latency, 1000);
        backend_get_stats(b0, &st);
        assert_int_equal(st.requests, 7);
        assert_int_equal(st.health_ok, 4);
        assert_int_equal(st.by_code[200 - BACKEND_CODE_MIN], 5);
        assert_int_equal(st.latency.count, 1);

        /* A reload drops b0: the old view still holds it, retired for every loop. */
        assert_int_equal(pool_set_backends(p, &other, 1), 0);
        assert_int_equal(v->n, 2);
        assert_false(backend_is_active(v->backends[0]));
        assert_false(backend_rotation(v->backends[0]));
        assert_int_equal(p->view->n, 1);
        pool_view_unref(v);
        pool_free(p);
}

static void test_loops_bounds(void **state)
{
        struct pool *p = pool_new(NULL, NULL);

        assert_non_null(p);
        assert_int_equal(pool_set_loops(p, 0), -EINVAL);
        assert_int_equal(pool_set_loops(p, POOL_LOOPS_MAX + 1), -EINVAL);
        assert_int_equal(pool_set_loops(p, POOL_LOOPS_MAX), 0);
        pool_free(p);
}

/* The smoothed load (backend_sample_load()): the busy time every loop adds is summed, the mean number in
 * flight follows it with the time constant, requests still held count, and the margins make steady-load
 * noise a tie. */
static void test_load_sums_loops_and_smooths(void **state)
{
        struct pool *p = two_loop_pool();
        struct backend *a = p->backends[0], *b = p->backends[1];
        uint64_t t = 1000 * USEC_PER_SEC;

        pool_sample_load(p, t); /* the starting point */
        assert_true(a->load == 0 && b->load == 0);
        /* a: 2 requests in flight on average, half on each loop; b: idle, for a minute. */
        for (int s = 0; s < 60; s++) {
                t += USEC_PER_SEC;
                a->loops[0].stats.busy_usec += USEC_PER_SEC;
                a->loops[1].stats.busy_usec += USEC_PER_SEC;
                pool_sample_load(p, t);
        }
        assert_true(a->load > 1.9 && a->load <= 2.0);
        assert_true(b->load < 1e-9);
        /* After one second of it, far from there yet: smoothed. */
        b->loops[1].stats.busy_usec += 4 * USEC_PER_SEC;
        t += USEC_PER_SEC;
        pool_sample_load(p, t);
        assert_true(b->load > 0.3 && b->load < 0.5);
        /* A request held for long (not finished, so not in busy_usec yet) counts while it is in flight. */
        b->loops[0].active = 3;
        for (int s = 0; s < 60; s++) {
                t += USEC_PER_SEC;
                pool_sample_load(p, t);
        }
        assert_true(b->load > 2.9 && b->load <= 3.0);
        b->loops[0].active = 0;
        /* A clock that did not move changes nothing. */
        pool_sample_load(p, t);
        assert_true(b->load > 2.9);

        assert_true(backend_load_less(0.0, 1.5));
        assert_false(backend_load_less(0.0, 0.9)); /* within a request */
        assert_false(backend_load_less(0.5, 1.4));
        assert_false(backend_load_less(10.0, 14.0)); /* within 30 % */
        assert_true(backend_load_less(10.0, 15.0));
        assert_false(backend_load_less(2.0, 1.0));
        pool_free(p);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_load_sums_loops_and_smooths),
                cmocka_unit_test(test_least_conn_counts_every_loop),
                cmocka_unit_test(test_p2c_counts_every_loop),
                cmocka_unit_test(test_round_robin_cursor_per_loop),
                cmocka_unit_test(test_verdict_published),
                cmocka_unit_test(test_view_and_stats),
                cmocka_unit_test(test_loops_bounds),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
