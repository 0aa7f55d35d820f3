/* Unit tests for lbd/schedule.c's pure part: parsing actions (names, the five cron fields in every form,
 * the settings) with the reason for each refusal, matching minutes (cron's either-day rule), and the last
 * and next matching minutes across hours, days, months and a leap day. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "lbd/schedule.h"

static struct schedule_action parse_ok(const char *text)
{
        struct schedule_action a;
        char reason[256] = "";

        if (schedule_parse_action(text, &a, reason, sizeof(reason)) != 0)
                fail_msg("'%s' refused: %s", text, reason);
        return a;
}

static void parse_bad(const char *text, const char *why)
{
        struct schedule_action a;
        char reason[256] = "";

        assert_int_equal(schedule_parse_action(text, &a, reason, sizeof(reason)), -EINVAL);
        if (!strstr(reason, why))
                fail_msg("'%s': reason '%s' does not say '%s'", text, reason, why);
}

/* Seconds since the epoch of a UTC date and time. */
static int64_t at(int year, int month, int day, int hour, int minute)
{
        struct tm tm = { .tm_year = year - 1900, .tm_mon = month - 1, .tm_mday = day, .tm_hour = hour,
                         .tm_min = minute };

        return (int64_t)timegm(&tm);
}

static bool matches(const struct schedule_action *a, int64_t t)
{
        time_t tt = (time_t)t;
        struct tm tm;

        assert_non_null(gmtime_r(&tt, &tm));
        return schedule_cron_matches(&a->cron, &tm);
}

static void test_parse(void **state)
{
        struct schedule_action a = parse_ok("business  0 8 * * mon-fri  min=6 max=12");

        assert_string_equal(a.name, "business");
        assert_string_equal(a.when, "0 8 * * mon-fri");
        assert_int_equal(a.min, 6);
        assert_int_equal(a.max, 12);
        assert_int_equal(a.desired, -1);
        assert_true(matches(&a, at(2026, 12, 7, 8, 0)));   /* a Monday */
        assert_false(matches(&a, at(2026, 12, 6, 8, 0)));  /* a Sunday */
        assert_false(matches(&a, at(2026, 12, 7, 8, 1)));
        a = parse_ok("n 0,30 */6 1-7/2 JAN,jul 7 desired=0");
        assert_true(matches(&a, at(2026, 1, 3, 18, 30)));  /* the 3rd is in 1-7/2 */
        assert_true(matches(&a, at(2026, 1, 4, 0, 0)));    /* a Sunday (7), whatever the day */
        assert_false(matches(&a, at(2026, 1, 2, 6, 0)));   /* the 2nd, a Friday */
        assert_false(matches(&a, at(2026, 2, 3, 6, 0)));   /* February */
        assert_false(matches(&a, at(2026, 1, 3, 7, 0)));   /* not every sixth hour */
        a = parse_ok("step 5/20 * * * * max=3");
        assert_true(matches(&a, at(2026, 5, 5, 5, 45)));
        assert_false(matches(&a, at(2026, 5, 5, 5, 50)));
        /* Both days restricted: either is enough (cron); one restricted: it alone counts. */
        a = parse_ok("either 0 0 13 * fri desired=1");
        assert_true(matches(&a, at(2026, 3, 13, 0, 0)));   /* the 13th, a Friday */
        assert_true(matches(&a, at(2026, 3, 6, 0, 0)));    /* a Friday */
        assert_true(matches(&a, at(2026, 4, 13, 0, 0)));   /* the 13th, a Monday */
        assert_false(matches(&a, at(2026, 4, 14, 0, 0)));
}

static void test_parse_refused(void **state)
{
        parse_bad("", "must be NAME");
        parse_bad("only 0 8 * *", "must be NAME");
        parse_bad("nothing 0 8 * * *", "sets nothing");
        parse_bad("n 60 8 * * * min=1", "minute");
        parse_bad("n 0 24 * * * min=1", "hour");
        parse_bad("n 0 8 0 * * min=1", "day of the month");
        parse_bad("n 0 8 * 13 * min=1", "month");
        parse_bad("n 0 8 * * 8 min=1", "day of the week");
        parse_bad("n 0 8 * * mon-sun min=1", "day of the week"); /* 1-0: backwards */
        parse_bad("n 0 8-6 * * * min=1", "hour");
        parse_bad("n 0,,5 8 * * * min=1", "minute");
        parse_bad("n 0 8 * * * min=1,", "min must be");
        parse_bad("n */0 8 * * * min=1", "minute");
        parse_bad("n 0 8 * * * min=1 min=2", "twice");
        parse_bad("n 0 8 * * * min=5 max=4", "min is above max");
        parse_bad("n 0 8 * * * desired=1001", "from 0 to 1000");
        parse_bad("n 0 8 * * * size=3", "not min=N");
        parse_bad("bad/name 0 8 * * * min=1", "letters, digits");
        parse_bad("a-name-that-is-far-too-long-for-a-schedule 0 8 * * * min=1", "longer than");
}

static void test_prev_and_next(void **state)
{
        struct schedule_action a = parse_ok("b 0 8 * * mon-fri min=6");
        int64_t sat = at(2026, 12, 12, 12, 0);

        /* Saturday noon: the last was Friday 08:00, the next Monday 08:00. */
        assert_int_equal(schedule_cron_prev(&a.cron, sat, SCHEDULE_LOOKBACK_SEC), at(2026, 12, 11, 8, 0));
        assert_int_equal(schedule_cron_next(&a.cron, sat, SCHEDULE_LOOKBACK_SEC), at(2026, 12, 14, 8, 0));
        /* At the minute itself: prev is that minute, next the following day's. */
        assert_int_equal(schedule_cron_prev(&a.cron, at(2026, 12, 14, 8, 0) + 30, 86400), at(2026, 12, 14, 8, 0));
        assert_int_equal(schedule_cron_next(&a.cron, at(2026, 12, 14, 8, 0), 2 * 86400), at(2026, 12, 15, 8, 0));
        /* Beyond the window: none. */
        assert_int_equal(schedule_cron_prev(&a.cron, sat, 3600), -1);
        a = parse_ok("leap 30 23 29 feb * desired=2");
        assert_int_equal(schedule_cron_next(&a.cron, at(2027, 12, 1, 0, 0), 100 * 86400), at(2028, 2, 29, 23, 30));
        assert_int_equal(schedule_cron_next(&a.cron, at(2026, 12, 1, 0, 0), SCHEDULE_LOOKBACK_SEC), -1);
        a = parse_ok("every * * * * * desired=1");
        assert_int_equal(schedule_cron_prev(&a.cron, at(2026, 1, 1, 0, 0) + 59, 60), at(2026, 1, 1, 0, 0));
        assert_int_equal(schedule_cron_next(&a.cron, at(2026, 1, 1, 0, 0) + 59, 60), at(2026, 1, 1, 0, 1));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse),
                cmocka_unit_test(test_parse_refused),
                cmocka_unit_test(test_prev_and_next),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
