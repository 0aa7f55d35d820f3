/* Unit tests for lbd/refresh.c: the instance refresh's arithmetic, batch by batch, for the default
 * (launch before terminate), lower minimums, a pool that lost instances, and an lbd restarted in the
 * middle (nothing checked yet). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lbd/refresh.h"

static struct refresh_step plan(uint64_t min_healthy, size_t desired, size_t old_total, size_t old_serving,
                                size_t new_total, size_t new_warm)
{
        const struct refresh_settings s = {.min_healthy = min_healthy};
        const struct refresh_counts c = {
                .desired = desired,
                .old_total = old_total,
                .old_serving = old_serving,
                .new_total = new_total,
                .new_warm = new_warm,
        };
        struct refresh_step step;

        memset(&step, 0xaa, sizeof(step));
        refresh_plan(&s, &c, &step);
        return step;
}

static void test_min_serving(void **state)
{
        assert_int_equal(refresh_min_serving(3, 100), 3);
        assert_int_equal(refresh_min_serving(3, 67), 3); /* 2.01: rounded up, never below the percentage */
        assert_int_equal(refresh_min_serving(3, 66), 2);
        assert_int_equal(refresh_min_serving(3, 0), 0);
        assert_int_equal(refresh_min_serving(10, 90), 9);
        assert_int_equal(refresh_min_serving(3, 1000), 3); /* clamped */
        assert_int_equal(refresh_min_serving(0, 100), 0);
}

/* min_healthy 100: one new instance at a time; an old one goes only once a new one counts. */
static void test_launch_before_terminate(void **state)
{
        struct refresh_step s;

        s = plan(100, 3, 3, 3, 0, 0);
        assert_int_equal(s.launch, 1);
        assert_int_equal(s.terminate_old, 0);
        /* launched, not counted yet: wait */
        s = plan(100, 3, 3, 3, 1, 0);
        assert_int_equal(s.launch, 0);
        assert_int_equal(s.terminate_old, 0);
        /* counted: one old goes, the next new one comes */
        s = plan(100, 3, 3, 3, 1, 1);
        assert_int_equal(s.terminate_old, 1);
        assert_int_equal(s.launch, 1);
        s = plan(100, 3, 2, 2, 2, 1);
        assert_int_equal(s.terminate_old, 0);
        assert_int_equal(s.launch, 0);
        s = plan(100, 3, 1, 1, 3, 3);
        assert_int_equal(s.terminate_old, 1);
        assert_int_equal(s.launch, 0);
        /* an old one that is down is not the refresh's to judge, and does not count as serving */
        s = plan(100, 3, 3, 2, 1, 1);
        assert_int_equal(s.terminate_old, 0);
        assert_int_equal(s.launch, 0);
}

static void test_lower_minimum(void **state)
{
        struct refresh_step s;

        s = plan(0, 3, 3, 3, 0, 0);
        assert_int_equal(s.terminate_old, 3);
        assert_int_equal(s.launch, 3);
        s = plan(50, 4, 4, 4, 0, 0);
        assert_int_equal(s.terminate_old, 2);
        assert_int_equal(s.launch, 4);
        s = plan(50, 4, 2, 2, 4, 0);
        assert_int_equal(s.terminate_old, 0);
        assert_int_equal(s.launch, 0);
        s = plan(50, 4, 2, 2, 4, 2);
        assert_int_equal(s.terminate_old, 2);
        assert_int_equal(s.launch, 0);
}

/* Restarted in the middle: nothing is healthy yet, so nothing goes, and what was launched counts. */
static void test_restart(void **state)
{
        struct refresh_step s;

        s = plan(100, 3, 3, 0, 1, 0);
        assert_int_equal(s.terminate_old, 0);
        assert_int_equal(s.launch, 0);
        s = plan(100, 3, 2, 0, 1, 0);
        assert_int_equal(s.terminate_old, 0);
        assert_int_equal(s.launch, 1);
}

/* Losses during a refresh are made up with new settings, never beyond desired + 1 at min_healthy 100. */
static void test_losses(void **state)
{
        struct refresh_step s;

        s = plan(100, 3, 1, 1, 0, 0);
        assert_int_equal(s.launch, 3);
        assert_int_equal(s.terminate_old, 0);
        s = plan(100, 3, 0, 0, 1, 1);
        assert_int_equal(s.launch, 2);
        s = plan(100, 0, 2, 2, 0, 0);
        assert_int_equal(s.launch, 0);
        assert_int_equal(s.terminate_old, 2);
}

static void test_names(void **state)
{
        assert_string_equal(refresh_state_name(REFRESH_RUNNING), "running");
        assert_string_equal(refresh_state_name(REFRESH_ROLLED_BACK), "rolled-back");
        assert_string_equal(refresh_state_name((enum refresh_state)99), "unknown");
        assert_string_equal(refresh_on_failure_name(REFRESH_STOP), "stop");
        assert_string_equal(refresh_on_failure_name(REFRESH_ROLLBACK), "rollback");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_min_serving),
                cmocka_unit_test(test_launch_before_terminate),
                cmocka_unit_test(test_lower_minimum),
                cmocka_unit_test(test_restart),
                cmocka_unit_test(test_losses),
                cmocka_unit_test(test_names),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
