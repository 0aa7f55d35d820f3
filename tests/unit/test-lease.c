/* Unit tests for lbd/lease.c's state machine: the leader acts only until its last successful attempt's
 * send time plus duration minus margin (never from the answer's time), keeps acting through a store
 * outage until then and not a moment longer, loses at once to another holder, counts epoch changes, and
 * refuses an epoch that goes backwards; the peers column is read defensively. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "lbd/lease.h"

#define S USEC_PER_SEC

static const struct lease_policy policy = {
        .duration_usec = 10 * S,
        .renew_usec = 2 * S,
        .margin_usec = 3 * S,
        .timeout_usec = 1 * S,
};

static struct lease_answer mine(uint64_t epoch)
{
        return (struct lease_answer){ .mine = true, .epoch = epoch, .remaining_usec = 10 * S, .holder = "a" };
}

static struct lease_answer theirs(uint64_t epoch, const char *holder)
{
        return (struct lease_answer){ .mine = false, .epoch = epoch, .remaining_usec = 7 * S, .holder = holder };
}

static void test_nobody_acts_before_an_answer(void **state)
{
        struct lease_sm s;
        uint64_t epoch = 99;

        lease_sm_init(&s, &policy);
        assert_false(lease_sm_may_mutate(&s, 0, &epoch));
        assert_false(lease_sm_may_mutate(&s, 100 * S, &epoch));
        assert_int_equal(epoch, 99); /* written only when it may */
}

static void test_authority_runs_from_the_send_time(void **state)
{
        struct lease_sm s;
        struct lease_answer a = mine(1);
        uint64_t epoch = 0;
        int ev;

        lease_sm_init(&s, &policy);
        /* Sent at 100 s, answered 2 s later (a slow store): acts until 100 + 10 - 3 = 107 s, not 109 s. */
        ev = lease_sm_answer(&s, 100 * S, 102 * S, &a);
        assert_true(ev & LEASE_EVENT_GAINED);
        assert_true(lease_sm_may_mutate(&s, 102 * S, &epoch));
        assert_int_equal(epoch, 1);
        assert_true(lease_sm_may_mutate(&s, 107 * S - 1, NULL));
        assert_false(lease_sm_may_mutate(&s, 107 * S, NULL));
        assert_false(lease_sm_may_mutate(&s, 108 * S, NULL));
        assert_int_equal(s.acquired, 1);
}

static void test_renewals_extend_and_outage_stops_in_time(void **state)
{
        struct lease_sm s;
        struct lease_answer a = mine(4);
        int ev;

        lease_sm_init(&s, &policy);
        assert_true(lease_sm_answer(&s, 0, 0, &a) & LEASE_EVENT_GAINED);
        /* A renewal in the same epoch is no new gain and no leadership change. */
        ev = lease_sm_answer(&s, 2 * S, 2 * S, &a);
        assert_int_equal(ev, LEASE_EVENT_NONE);
        assert_int_equal(s.changes, 0);
        assert_int_equal(s.acquired, 1);

        /* The store goes away: the leader keeps acting until 2 + 7 = 9 s, then stops by itself. */
        ev = lease_sm_failed(&s, 4 * S);
        assert_int_equal(ev, LEASE_EVENT_STORE_DOWN);
        assert_int_equal(lease_sm_failed(&s, 6 * S), LEASE_EVENT_NONE); /* once per episode */
        assert_true(s.store_down);
        assert_true(lease_sm_may_mutate(&s, 8 * S, NULL));
        assert_false(lease_sm_may_mutate(&s, 9 * S, NULL));
        /* Still "leader" by the last answer, but no longer acting: nobody acts. */
        assert_false(lease_sm_may_mutate(&s, 30 * S, NULL));

        /* The store is back and the lease still ours (nobody took it): acting again, same epoch. */
        ev = lease_sm_answer(&s, 30 * S, 30 * S, &a);
        assert_true(ev & LEASE_EVENT_STORE_UP);
        assert_true(ev & LEASE_EVENT_GAINED);
        assert_false(ev & LEASE_EVENT_EPOCH);
        assert_false(s.store_down);
        assert_true(lease_sm_may_mutate(&s, 31 * S, NULL));
}

static void test_another_holder_takes_over(void **state)
{
        struct lease_sm s;
        struct lease_answer a = mine(1), b = theirs(2, "b");
        int ev;

        lease_sm_init(&s, &policy);
        (void)lease_sm_answer(&s, 0, 0, &a);
        ev = lease_sm_answer(&s, 20 * S, 20 * S, &b);
        assert_true(ev & LEASE_EVENT_LOST);
        assert_true(ev & LEASE_EVENT_EPOCH);
        assert_false(lease_sm_may_mutate(&s, 20 * S, NULL));
        assert_string_equal(s.holder, "b");
        assert_int_equal(s.epoch, 2);
        assert_int_equal(s.changes, 1);
        assert_int_equal(s.expires_usec, 27 * S);

        /* Following: renewals of the other holder's lease change nothing. */
        assert_int_equal(lease_sm_answer(&s, 22 * S, 22 * S, &b), LEASE_EVENT_NONE);

        /* Taking it back is a new epoch: gained, counted. */
        a.epoch = 3;
        ev = lease_sm_answer(&s, 40 * S, 40 * S, &a);
        assert_true(ev & LEASE_EVENT_GAINED);
        assert_true(ev & LEASE_EVENT_EPOCH);
        assert_int_equal(s.acquired, 2);
        assert_int_equal(s.changes, 2);
}

static void test_follower_at_start(void **state)
{
        struct lease_sm s;
        struct lease_answer b = theirs(7, "b");
        int ev;

        lease_sm_init(&s, &policy);
        ev = lease_sm_answer(&s, 0, 0, &b);
        assert_false(ev & (LEASE_EVENT_GAINED | LEASE_EVENT_LOST | LEASE_EVENT_EPOCH));
        assert_false(lease_sm_may_mutate(&s, 0, NULL));
        assert_int_equal(s.changes, 0);
        /* A store down at start is an episode too. */
        lease_sm_init(&s, &policy);
        assert_int_equal(lease_sm_failed(&s, 0), LEASE_EVENT_STORE_DOWN);
        assert_false(lease_sm_may_mutate(&s, 0, NULL));
}

static void test_epoch_never_goes_back(void **state)
{
        struct lease_sm s;
        struct lease_answer a = mine(5), old = mine(4);

        lease_sm_init(&s, &policy);
        (void)lease_sm_answer(&s, 0, 0, &a);
        assert_int_equal(lease_sm_answer(&s, 1 * S, 1 * S, &old), -ESTALE);
        assert_int_equal(s.epoch, 5);
        /* Nothing changed: the authority is still the one from 0 s. */
        assert_true(lease_sm_may_mutate(&s, 6 * S, NULL));
        assert_false(lease_sm_may_mutate(&s, 7 * S, NULL));
}

static void test_margin_as_long_as_duration(void **state)
{
        const struct lease_policy p = { .duration_usec = 2 * S, .margin_usec = 3 * S, .renew_usec = S,
                                        .timeout_usec = S };
        struct lease_sm s;
        struct lease_answer a = mine(1);

        lease_sm_init(&s, &p);
        (void)lease_sm_answer(&s, 10 * S, 10 * S, &a);
        assert_false(lease_sm_may_mutate(&s, 10 * S, NULL));
}

static void test_parse_peers(void **state)
{
        struct lease_peer p[3];

        assert_int_equal(lease_parse_peers("", p, 3), 0);
        assert_int_equal(lease_parse_peers("lb-b 1500", p, 3), 1);
        assert_string_equal(p[0].name, "lb-b");
        assert_int_equal(p[0].seen_ago_usec, 1500 * USEC_PER_MSEC);
        /* Malformed entries are skipped, the rest kept, at most <max>. */
        assert_int_equal(lease_parse_peers("x 1,bad name 2,y -3,z 4x, 5,w 99999999999999999999999,v 2", p, 3),
                         2);
        assert_string_equal(p[0].name, "x");
        assert_string_equal(p[1].name, "v");
        assert_int_equal(lease_parse_peers("a 1,b 2,c 3,d 4", p, 3), 3);
        assert_int_equal(
                lease_parse_peers("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1", p, 3), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_nobody_acts_before_an_answer),
                cmocka_unit_test(test_authority_runs_from_the_send_time),
                cmocka_unit_test(test_renewals_extend_and_outage_stops_in_time),
                cmocka_unit_test(test_another_holder_takes_over),
                cmocka_unit_test(test_follower_at_start),
                cmocka_unit_test(test_epoch_never_goes_back),
                cmocka_unit_test(test_margin_as_long_as_duration),
                cmocka_unit_test(test_parse_peers),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
