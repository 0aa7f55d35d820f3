/* Unit tests for webd/metrics.c: the text format of families and samples, the size limit (the text is cut
 * at a whole line and says so), and which clients count as local. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "webd/metrics.h"

static void test_format(void **state)
{
        struct metrics_text *t = calloc(1, sizeof(*t));

        assert_non_null(t);
        metrics_family(t, "webd_x_total", "counter", "Things.");
        metrics_sample(t, "webd_x_total", NULL, 0);
        metrics_sample(t, "webd_x_total", "", 1);
        metrics_sample(t, "webd_x_total", "reason=\"full\"", UINT64_MAX);
        assert_false(t->truncated);
        assert_int_equal(t->len, strlen(t->buf));
        assert_string_equal(t->buf, "# HELP webd_x_total Things.\n# TYPE webd_x_total counter\n"
                                    "webd_x_total 0\nwebd_x_total 1\n"
                                    "webd_x_total{reason=\"full\"} 18446744073709551615\n");
        free(t);
}

static void test_limit(void **state)
{
        struct metrics_text *t = malloc(sizeof(*t));
        size_t lines = 0, before;

        assert_non_null(t);
        memset(t->buf, 'Z', sizeof(t->buf)); /* what a reused buffer may hold */
        t->len = 0;
        t->truncated = false;
        while (!t->truncated) {
                before = t->len;
                metrics_sample(t, "webd_a_rather_long_metric_name_for_the_test", "label=\"value\"", lines++);
                assert_true(t->len < sizeof(t->buf));
        }
        /* The cut is at a line's start, marked by one comment line, and nothing follows it. */
        assert_int_equal(t->buf[before - 1], '\n');
        assert_string_equal(t->buf + before, "# cut here: the text reached its size limit\n");
        before = t->len;
        metrics_sample(t, "x", NULL, 1);
        metrics_family(t, "x", "gauge", "x");
        assert_int_equal(t->len, before);
        assert_true(lines > 100);
        free(t);
}

static void test_local(void **state)
{
        assert_true(metrics_client_local("127.0.0.1"));
        assert_true(metrics_client_local("127.1.2.3"));
        assert_true(metrics_client_local("::1"));
        assert_true(metrics_client_local("::ffff:127.0.0.1"));
        assert_false(metrics_client_local("192.0.2.1"));
        assert_false(metrics_client_local("1127.0.0.1"));
        assert_false(metrics_client_local("::10"));
        assert_false(metrics_client_local("::1:2"));
        assert_false(metrics_client_local("::ffff:192.0.2.1"));
        assert_false(metrics_client_local(""));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_format),
                cmocka_unit_test(test_limit),
                cmocka_unit_test(test_local),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
