/* Unit tests for webd/throttle.c, on an injected clock: the free failures and the growing delays of each
 * counter, the cap, forgetting, a success clearing its pair and exempting its address from the account
 * counter, IPv6 counted by /64, and a table that never grows past its size. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "webd/throttle.h"

#define S USEC_PER_SEC

static struct netaddr addr(const char *s)
{
        struct netaddr a;

        assert_int_equal(netaddr_parse(s, 1, false, &a), 0);
        return a;
}

static struct throttle *make(uint64_t pair, uint64_t address, uint64_t account, size_t entries)
{
        struct throttle_limits l = {pair, address, account, 300 * S, entries};
        struct throttle *t = NULL;

        assert_int_equal(throttle_new(&l, &t), 0);
        return t;
}

static void test_limits(void **state)
{
        struct throttle_limits l = {5, 20, 100, 300 * S, 1024};
        struct throttle *t = NULL;

        l.pair = 0;
        assert_int_equal(throttle_new(&l, &t), -EINVAL);
        l.pair = 5;
        l.max_delay_usec = S / 2;
        assert_int_equal(throttle_new(&l, &t), -EINVAL);
        l.max_delay_usec = S;
        l.entries = 8;
        assert_int_equal(throttle_new(&l, &t), -EINVAL);
        assert_null(t);
        assert_null(throttle_free(NULL));
}

/* Five free failures, then 1 s, 2 s, 4 s ... capped at max_delay; a success clears it. */
static void test_pair(void **state)
{
        struct throttle *t = make(5, 1000, 1000, 1024);
        struct netaddr a = addr("192.0.2.1"), b = addr("192.0.2.2");
        uint64_t now = 1000 * S;

        for (int i = 0; i < 4; i++) {
                assert_int_equal(throttle_check(t, "alice", &a, now), 0);
                throttle_failed(t, "alice", &a, now);
        }
        assert_int_equal(throttle_check(t, "alice", &a, now), 0);
        throttle_failed(t, "alice", &a, now); /* the fifth */
        assert_int_equal(throttle_check(t, "alice", &a, now), 1 * S);
        assert_int_equal(throttle_check(t, "alice", &a, now + S / 4), 3 * S / 4);
        /* Another account, another address: not affected. */
        assert_int_equal(throttle_check(t, "bob", &a, now), 0);
        assert_int_equal(throttle_check(t, "alice", &b, now), 0);

        now += S;
        assert_int_equal(throttle_check(t, "alice", &a, now), 0);
        throttle_failed(t, "alice", &a, now);
        assert_int_equal(throttle_check(t, "alice", &a, now), 2 * S);
        now += 2 * S;
        throttle_failed(t, "alice", &a, now);
        assert_int_equal(throttle_check(t, "alice", &a, now), 4 * S);
        for (int i = 0; i < 20; i++)
                throttle_failed(t, "alice", &a, now);
        assert_int_equal(throttle_check(t, "alice", &a, now), 300 * S); /* capped */

        throttle_succeeded(t, "alice", &a, now);
        assert_int_equal(throttle_check(t, "alice", &a, now), 0);
        throttle_failed(t, "alice", &a, now);
        assert_int_equal(throttle_check(t, "alice", &a, now), 0);
        throttle_free(t);
}

/* Counters are forgotten three max_delays after their last failure. */
static void test_forget(void **state)
{
        struct throttle *t = make(2, 1000, 1000, 1024);
        struct netaddr a = addr("192.0.2.1");
        uint64_t now = 1000 * S;

        throttle_failed(t, "alice", &a, now);
        throttle_failed(t, "alice", &a, now);
        assert_int_equal(throttle_check(t, "alice", &a, now), S);
        now += 900 * S;
        assert_int_equal(throttle_check(t, "alice", &a, now), 0);
        throttle_failed(t, "alice", &a, now); /* the third: 900 s is not more than 3 x 300 s */
        assert_int_equal(throttle_check(t, "alice", &a, now), 2 * S);
        now += 901 * S;
        throttle_failed(t, "alice", &a, now); /* the first again */
        assert_int_equal(throttle_check(t, "alice", &a, now), 0);
        throttle_free(t);
}

/* One address trying many accounts; many addresses trying one account; the owner from a known address. */
static void test_address_and_account(void **state)
{
        struct throttle *t = make(5, 20, 50, 1024);
        struct netaddr a = addr("192.0.2.1"), home = addr("198.51.100.7"), other = addr("203.0.113.9");
        uint64_t now = 1000 * S;
        char name[32], host[32];

        for (int i = 0; i < 20; i++) {
                (void)snprintf(name, sizeof(name), "user%d", i);
                assert_int_equal(throttle_check(t, name, &a, now), 0);
                throttle_failed(t, name, &a, now);
        }
        assert_int_equal(throttle_check(t, "someone-else", &a, now), S);
        assert_int_equal(throttle_check(t, "someone-else", &home, now), 0);

        throttle_succeeded(t, "alice", &home, now);
        for (int i = 0; i < 50; i++) {
                struct netaddr x;

                (void)snprintf(host, sizeof(host), "10.0.%d.%d", i / 200, i % 200 + 1);
                x = addr(host);
                throttle_failed(t, "alice", &x, now);
        }
        /* Account-wide: a new address waits; the owner's usual address doesn't. */
        assert_int_equal(throttle_check(t, "alice", &other, now), S);
        assert_int_equal(throttle_check(t, "alice", &home, now), 0);
        throttle_free(t);
}

static void test_ipv6_prefix(void **state)
{
        struct throttle *t = make(2, 1000, 1000, 1024);
        struct netaddr a = addr("[2001:db8:1:2::1]"), b = addr("[2001:db8:1:2:ffff::9]");
        struct netaddr c = addr("[2001:db8:1:3::1]"), v4 = addr("192.0.2.1"), mapped = addr("[::ffff:192.0.2.1]");

        throttle_failed(t, "alice", &a, 10 * S);
        throttle_failed(t, "alice", &b, 10 * S);
        assert_int_equal(throttle_check(t, "alice", &a, 10 * S), S);
        assert_int_equal(throttle_check(t, "alice", &c, 10 * S), 0);
        throttle_failed(t, "alice", &v4, 10 * S);
        throttle_failed(t, "alice", &mapped, 10 * S);
        assert_int_equal(throttle_check(t, "alice", &v4, 10 * S), S);
        throttle_free(t);
}

/* Cycling names and addresses reuses entries; the newest survive. */
static void test_bounded(void **state)
{
        struct throttle *t = make(1, 1000000, 1000000, 1024);
        struct netaddr a = addr("192.0.2.1");
        char name[32];

        for (int i = 0; i < 10000; i++) {
                struct netaddr x = a;

                x.u.in.sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)i);
                (void)snprintf(name, sizeof(name), "u%d", i);
                throttle_failed(t, name, &x, 10 * S);
                assert_true(throttle_size(t) <= 1024);
        }
        assert_int_equal(throttle_size(t), 1024);
        a.u.in.sin_addr.s_addr = htonl(0x0a000000u + 9999);
        assert_int_equal(throttle_check(t, "u9999", &a, 10 * S), S);
        a.u.in.sin_addr.s_addr = htonl(0x0a000000u + 1);
        assert_int_equal(throttle_check(t, "u1", &a, 10 * S), 0); /* long gone */
        /* Long names count by their first THROTTLE_ACCOUNT_MAX - 1 bytes. */
        {
                char long1[200], long2[200];

                memset(long1, 'x', sizeof(long1) - 1);
                long1[sizeof(long1) - 1] = '\0';
                memcpy(long2, long1, sizeof(long2));
                long2[150] = 'y';
                throttle_failed(t, long1, &a, 10 * S);
                assert_int_equal(throttle_check(t, long2, &a, 10 * S), S);
        }
        throttle_free(t);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_limits),
                cmocka_unit_test(test_pair),
                cmocka_unit_test(test_forget),
                cmocka_unit_test(test_address_and_account),
                cmocka_unit_test(test_ipv6_prefix),
                cmocka_unit_test(test_bounded),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
