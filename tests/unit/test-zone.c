/* Unit tests for lbd/zone.c: the zones follow the provider's (keeping what is known of those still
 * there), the least populated open zone is picked, a refusing zone is closed with a doubling backoff and
 * reopened by an accepted launch, and a pool is unbalanced only by 2 or more. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lbd/zone.h"

static void set_zones(struct provider *p, const char *const *names, size_t n)
{
        memset(p, 0, sizeof(*p));
        for (size_t i = 0; i < n; i++)
                memcpy(p->zones[i], names[i], strlen(names[i]) + 1);
        p->n_zones = n;
}

static void test_sync_and_find(void **state)
{
        struct provider p;
        struct zones zs = {0};

        set_zones(&p, (const char *[]){"subnet-a", "subnet-b", "subnet-c"}, 3);
        zones_sync(&zs, &p);
        assert_int_equal(zs.n, 3);
        assert_int_equal(zones_find(&zs, "subnet-b"), 1);
        assert_int_equal(zones_find(&zs, "subnet-x"), -1);
        assert_int_equal(zones_find(&zs, ""), -1);
        assert_int_equal(zones_find(&zs, NULL), -1);

        /* A refusal survives a reload that keeps the zone, wherever it moves. */
        (void)zones_refused(&zs, 2, 1000, 10);
        set_zones(&p, (const char *[]){"subnet-c", "subnet-d"}, 2);
        zones_sync(&zs, &p);
        assert_int_equal(zs.n, 2);
        assert_int_equal(zones_find(&zs, "subnet-c"), 0);
        assert_int_equal(zs.z[0].refusals, 1);
        assert_false(zones_open(&zs, 0, 1005));
        assert_true(zones_open(&zs, 1, 1005));
        assert_false(zones_open(&zs, 5, 1005));
}

static void test_pick_and_backoff(void **state)
{
        struct provider p;
        struct zones zs = {0};
        size_t counts[PROVIDER_MAX_ZONES] = {2, 1, 1};

        set_zones(&p, (const char *[]){"a", "b", "c"}, 3);
        zones_sync(&zs, &p);
        assert_int_equal(zones_pick(&zs, counts, 0), 1); /* the first of the least populated */
        counts[1] = 2;
        assert_int_equal(zones_pick(&zs, counts, 0), 2);

        /* c refuses: closed 10, then 20, 40, 80, 160, and no longer */
        assert_int_equal(zones_refused(&zs, 2, 100, 10), 10);
        assert_int_equal(zones_pick(&zs, counts, 105), 0);
        assert_int_equal(zones_pick(&zs, counts, 110), 2);
        assert_int_equal(zones_refused(&zs, 2, 110, 10), 20);
        assert_int_equal(zones_refused(&zs, 2, 110, 10), 40);
        assert_int_equal(zones_refused(&zs, 2, 110, 10), 80);
        assert_int_equal(zones_refused(&zs, 2, 110, 10), 160);
        assert_int_equal(zones_refused(&zs, 2, 110, 10), 160);
        zones_accepted(&zs, 2);
        assert_true(zones_open(&zs, 2, 0));
        assert_int_equal(zs.z[2].refusals, 0);

        /* Every zone closed: the one that reopens first, so the pool is never left short. */
        (void)zones_refused(&zs, 0, 0, 50);
        (void)zones_refused(&zs, 1, 0, 30);
        (void)zones_refused(&zs, 2, 0, 40);
        assert_int_equal(zones_pick(&zs, counts, 1), 1);
}

static void test_unbalanced(void **state)
{
        struct provider p;
        struct zones zs = {0};
        size_t counts[PROVIDER_MAX_ZONES] = {2, 1, 0}, from = 99, to = 99;

        set_zones(&p, (const char *[]){"a", "b", "c"}, 3);
        zones_sync(&zs, &p);
        assert_true(zones_unbalanced(&zs, counts, 0, &from, &to));
        assert_int_equal(from, 0);
        assert_int_equal(to, 2);
        /* Not while the empty zone is closed: b has only one fewer */
        (void)zones_refused(&zs, 2, 0, 10);
        assert_false(zones_unbalanced(&zs, counts, 5, &from, &to));
        assert_true(zones_unbalanced(&zs, counts, 10, &from, &to));
        /* 2/1/1 is as even as 4 gets over 3 zones */
        counts[2] = 1;
        assert_false(zones_unbalanced(&zs, counts, 10, &from, &to));
        /* one zone: nothing to balance */
        set_zones(&p, (const char *[]){"a"}, 1);
        zones_sync(&zs, &p);
        counts[0] = 5;
        assert_false(zones_unbalanced(&zs, counts, 0, &from, &to));
}

/* A second failed instance in a zone within the window says the zone is failing; one alone does not. */
static void test_instance_failed(void **state)
{
        struct provider p;
        struct zones zs = {0};

        set_zones(&p, (const char *[]){"a", "b"}, 2);
        zones_sync(&zs, &p);
        assert_false(zones_instance_failed(&zs, 0, 100, 50));
        assert_false(zones_instance_failed(&zs, 1, 120, 50));
        assert_true(zones_instance_failed(&zs, 0, 140, 50));
        assert_false(zones_instance_failed(&zs, 1, 200, 50)); /* b's last was 80 ago */
        assert_false(zones_instance_failed(&zs, 5, 200, 50));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sync_and_find),
                cmocka_unit_test(test_pick_and_backoff),
                cmocka_unit_test(test_unbalanced),
                cmocka_unit_test(test_instance_failed),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
