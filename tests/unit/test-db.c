/* Unit tests for webd/db.c without a server: the reconnection backoff schedule, the SQLSTATE mapping,
 * and the pool's behaviour while no connection is up (everything fails fast, nothing is called back). */
#include <errno.h>
#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/macro.h"
#include "webd/db.h"

static void test_backoff(void **state)
{
        uint64_t prev_max = 0;

        for (unsigned f = 0; f < 12; f++) {
                uint64_t lo = db_backoff_usec(f, UINT64_MAX / 2), hi = db_backoff_usec(f, 0);

                assert_true(lo <= hi);
                assert_true(hi >= prev_max || hi == 3 * USEC_PER_SEC);
                assert_true(hi <= 3 * USEC_PER_SEC);
                assert_true(lo >= hi / 2);
                prev_max = hi;
        }
        assert_int_equal(db_backoff_usec(0, 0), 50 * USEC_PER_MSEC);
        assert_int_equal(db_backoff_usec(1, 0), 100 * USEC_PER_MSEC);
        assert_int_equal(db_backoff_usec(10, 0), 3 * USEC_PER_SEC);
        assert_int_equal(db_backoff_usec(1000, 0), 3 * USEC_PER_SEC);
}

static void test_sqlstate(void **state)
{
        assert_int_equal(db_error_from_sqlstate("23505"), -EEXIST);
        assert_int_equal(db_error_from_sqlstate("23503"), -ENOENT);
        assert_int_equal(db_error_from_sqlstate("22P02"), -EINVAL);
        assert_int_equal(db_error_from_sqlstate("22021"), -EINVAL);
        assert_int_equal(db_error_from_sqlstate("57P01"), -ECONNRESET);
        assert_int_equal(db_error_from_sqlstate("08006"), -ECONNRESET);
        assert_int_equal(db_error_from_sqlstate("40001"), -EAGAIN);
        assert_int_equal(db_error_from_sqlstate("40P01"), -EAGAIN);
        assert_int_equal(db_error_from_sqlstate("53300"), -EAGAIN);
        assert_int_equal(db_error_from_sqlstate("42P01"), -EIO);
        assert_int_equal(db_error_from_sqlstate(NULL), -EIO);
        assert_int_equal(db_error_from_sqlstate("235"), -EIO);
}

static void never_called(int r, const PGresult *res, void *userdata)
{
        fail_msg("callback called with %d", r);
}

static void test_down_pool(void **state)
{
        struct event_base *base = event_base_new();
        struct db *d = NULL;
        unsigned id;
        const char *values[1] = {"1"};

        assert_non_null(base);
        assert_int_equal(db_new(base, "host=/nonexistent dbname=x", 0, &d), -EINVAL);
        assert_int_equal(db_new(base, "host=/nonexistent dbname=x", 65, &d), -EINVAL);
        assert_int_equal(db_new(base, "host=/nonexistent dbname=x", 2, &d), 0);
        assert_int_equal(db_statement(d, "SELECT $1::int", 1, &id), 0);
        assert_int_equal(id, 0);
        assert_int_equal(db_statement(d, "SELECT 1", DB_PARAMS_MAX + 1, &id), -EINVAL);
        for (unsigned i = 1; i < DB_STATEMENTS_MAX; i++)
                assert_int_equal(db_statement(d, "SELECT 1", 0, &id), 0);
        assert_int_equal(db_statement(d, "SELECT 1", 0, &id), -E2BIG);

        assert_false(db_is_up(d));
        assert_int_equal(db_query(d, 0, values, 1, never_called, NULL, NULL), -ENOTCONN);
        /* No COPY connection yet: a COPY is refused, and the caller goes through the pool. */
        assert_false(db_copy_ready(d));
        assert_int_equal(db_copy(d, "COPY t FROM STDIN", "x", 1, never_called, NULL, NULL), -ENOTCONN);
        assert_int_equal(db_add_copy_connection(d), 0);
        assert_int_equal(db_add_copy_connection(d), 0); /* one is enough */
        assert_int_equal(db_copy(d, NULL, "x", 1, never_called, NULL, NULL), -EINVAL);
        assert_int_equal(db_copy(d, "COPY t FROM STDIN", NULL, 1, never_called, NULL, NULL), -EINVAL);
        assert_int_equal(db_copy(d, "COPY t FROM STDIN", "x", 1, NULL, NULL, NULL), -EINVAL);
        assert_int_equal(db_start(d), 0);
        assert_int_equal(db_add_copy_connection(d), -EINVAL); /* too late */
        assert_int_equal(db_statement(d, "SELECT 2", 0, &id), -EINVAL); /* too late */
        /* Connecting to a socket that doesn't exist fails; the pool stays down and retries. */
        assert_int_equal(event_base_loop(base, EVLOOP_NONBLOCK), 0);
        assert_false(db_is_up(d));
        assert_int_equal(db_connections_up(d), 0);
        assert_int_equal(db_query(d, 0, values, 1, never_called, NULL, NULL), -ENOTCONN);
        assert_int_equal(db_query(d, 0, values, 2, never_called, NULL, NULL), -EINVAL);
        assert_int_equal(db_query(d, 99, values, 1, never_called, NULL, NULL), -EINVAL);
        assert_false(db_copy_ready(d));
        assert_int_equal(db_copy(d, "COPY t FROM STDIN", "x", 1, never_called, NULL, NULL), -ENOTCONN);
        assert_true(db_last_error(d)[0] != '\0');
        db_query_cancel(NULL);
        d = db_free(d);
        assert_null(d);
        assert_null(db_free(NULL));
        event_base_free(base);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_backoff),
                cmocka_unit_test(test_sqlstate),
                cmocka_unit_test(test_down_pool),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
