/* Unit tests for common/netaddr.c: address parsing and formatting for IPv4 and IPv6, the strict rejects,
 * and CIDR networks including IPv4-mapped IPv6 addresses. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "common/netaddr.h"

/* Parses <s> and checks that it formats back as <expect>. */
static void check_parse(const char *s, uint16_t default_port, bool allow_port0, const char *expect)
{
        struct netaddr a;
        char buf[NETADDR_STRLEN];

        print_message("parse '%s'\n", s);
        assert_int_equal(netaddr_parse(s, default_port, allow_port0, &a), 0);
        assert_int_equal(netaddr_format(&a, buf, sizeof(buf)), (int)strlen(expect));
        assert_string_equal(buf, expect);
}

static void check_parse_fails(const char *s, uint16_t default_port, int error)
{
        struct netaddr a;

        memset(&a, 0xaa, sizeof(a));
        print_message("reject '%s'\n", s);
        assert_int_equal(netaddr_parse(s, default_port, false, &a), error);
        for (size_t i = 0; i < sizeof(a); i++)
                assert_int_equal(((unsigned char *)&a)[i], 0xaa);
}

static void test_parse_v4(void **state)
{
        struct netaddr a;

        check_parse("1.2.3.4:80", 0, false, "1.2.3.4:80");
        check_parse("127.0.0.1:65535", 0, false, "127.0.0.1:65535");
        check_parse("0.0.0.0:1", 0, false, "0.0.0.0:1");
        check_parse(":80", 0, false, "0.0.0.0:80");
        check_parse("*:8080", 0, false, "0.0.0.0:8080");
        check_parse("1.2.3.4", 8080, false, "1.2.3.4:8080");
        check_parse("1.2.3.4:81", 8080, false, "1.2.3.4:81");
        check_parse("1.2.3.4:0", 0, true, "1.2.3.4:0");
        check_parse("1.2.3.4:00080", 0, false, "1.2.3.4:80");

        assert_int_equal(netaddr_parse("192.0.2.1:443", 0, false, &a), 0);
        assert_int_equal(a.u.sa.sa_family, AF_INET);
        assert_int_equal(a.len, sizeof(struct sockaddr_in));
        assert_int_equal(netaddr_port(&a), 443);
        assert_int_equal(ntohl(a.u.in.sin_addr.s_addr), 0xc0000201);
}

static void test_parse_v6(void **state)
{
        struct netaddr a;

        check_parse("[::1]:80", 0, false, "[::1]:80");
        check_parse("[::]:443", 0, false, "[::]:443");
        check_parse("[2001:db8::1]:8080", 0, false, "[2001:db8::1]:8080");
        check_parse("[2001:DB8:0:0:0:0:0:1]:1", 0, false, "[2001:db8::1]:1");
        check_parse("[::ffff:127.0.0.1]:80", 0, false, "[::ffff:127.0.0.1]:80");
        check_parse("::1", 80, false, "[::1]:80");
        check_parse("[::1]", 81, false, "[::1]:81");
        check_parse("2001:db8::80", 9, false, "[2001:db8::80]:9");
        check_parse("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535", 0, false,
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");

        assert_int_equal(netaddr_parse("[::1]:9180", 0, false, &a), 0);
        assert_int_equal(a.u.sa.sa_family, AF_INET6);
        assert_int_equal(a.len, sizeof(struct sockaddr_in6));
        assert_int_equal(netaddr_port(&a), 9180);
        assert_true(IN6_IS_ADDR_LOOPBACK(&a.u.in6.sin6_addr));
}

static void test_parse_bad(void **state)
{
        static const char *const malformed[] = {
                "",
                ":",
                "*",
                "*:",
                "1.2.3.4", /* no port and no default */
                "1.2.3.4:",
                "1.2.3.4:80x",
                "1.2.3.4:x80",
                "1.2.3.4:+80",
                "1.2.3.4:-1",
                "1.2.3.4: 80",
                " 1.2.3.4:80",
                "1.2.3.4 :80",
                "1.2.3.4:80 ",
                "1.2.3:80",
                "1.2.3.4.5:80",
                "256.0.0.1:80",
                "01.2.3.4:80",
                "localhost:80",
                "example.com:80",
                "[::1]", /* no port and no default */
                "::1",
                "[::1]:",
                "[::1]80",
                "[::1]:80x",
                "[::1",
                "[]:80",
                "[1.2.3.4]:80",
                "[fe80::1%lo]:80",
                "[::1]]:80",
                "[:::1]:80",
                "::1:80", /* ambiguous without brackets: treated as an address, no default port */
                "**:80",
                "0:80",
                "[0123456789012345678901234567890123456789012345678901234567890]:80",
        };
        static const char *const out_of_range[] = {
                "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:99999", "1.2.3.4:123456", "[::1]:0", "[::1]:70000",
                ":0",
        };

        for (size_t i = 0; i < ELEMENTSOF(malformed); i++)
                check_parse_fails(malformed[i], 0, -EINVAL);
        for (size_t i = 0; i < ELEMENTSOF(out_of_range); i++)
                check_parse_fails(out_of_range[i], 0, -ERANGE);

        /* With a default port, the forms that carry a port are still checked strictly. */
        check_parse_fails("1.2.3.4:", 80, -EINVAL);
        check_parse_fails("1.2.3.4:0", 80, -ERANGE);
        check_parse_fails("[::1]:", 80, -EINVAL);
        check_parse_fails("", 80, -EINVAL);
        check_parse_fails("[]", 80, -EINVAL);
        check_parse_fails("1.2.3.4x", 80, -EINVAL);
        check_parse_fails("::1x", 80, -EINVAL);

        assert_int_equal(netaddr_parse(NULL, 0, false, &(struct netaddr){0}), -EINVAL);
}

static void test_format(void **state)
{
        struct netaddr a;
        char buf[NETADDR_STRLEN];

        assert_int_equal(netaddr_parse("[2001:db8::1]:8080", 0, false, &a), 0);
        assert_int_equal(netaddr_format_host(&a, buf, sizeof(buf)), 11);
        assert_string_equal(buf, "2001:db8::1");
        assert_int_equal(netaddr_format(&a, buf, 18), -ENOBUFS);
        assert_int_equal(netaddr_format(&a, buf, 19), 18);
        assert_string_equal(buf, "[2001:db8::1]:8080");
        assert_int_equal(netaddr_format_host(&a, buf, 11), -ENOBUFS);
        assert_int_equal(netaddr_format_host(&a, buf, 12), 11);

        assert_int_equal(netaddr_parse("192.0.2.3:7", 0, false, &a), 0);
        assert_int_equal(netaddr_format_host(&a, buf, sizeof(buf)), 9);
        assert_string_equal(buf, "192.0.2.3");
        assert_int_equal(netaddr_format(&a, buf, 11), -ENOBUFS);
        assert_int_equal(netaddr_format(&a, buf, 12), 11);
        assert_string_equal(buf, "192.0.2.3:7");

        netaddr_set_port(&a, 65535);
        assert_int_equal(netaddr_port(&a), 65535);
        assert_int_equal(netaddr_format(&a, buf, sizeof(buf)), 15);
        assert_string_equal(buf, "192.0.2.3:65535");

        memset(&a, 0, sizeof(a));
        assert_int_equal(netaddr_format(&a, buf, sizeof(buf)), -EAFNOSUPPORT);
        assert_int_equal(netaddr_port(&a), 0);
        netaddr_set_port(&a, 80); /* no family: ignored */
        assert_int_equal(netaddr_port(&a), 0);
}

static void test_equal(void **state)
{
        struct netaddr a, b;

        assert_int_equal(netaddr_parse("127.0.0.1:80", 0, false, &a), 0);
        assert_int_equal(netaddr_parse("127.0.0.1", 80, false, &b), 0);
        assert_true(netaddr_equal(&a, &b));
        netaddr_set_port(&b, 81);
        assert_false(netaddr_equal(&a, &b));
        assert_true(netaddr_same_host(&a, &b));
        assert_int_equal(netaddr_parse("127.0.0.2:80", 0, false, &b), 0);
        assert_false(netaddr_equal(&a, &b));
        assert_false(netaddr_same_host(&a, &b));
        assert_int_equal(netaddr_parse("[::ffff:127.0.0.1]:80", 0, false, &b), 0);
        assert_false(netaddr_equal(&a, &b));

        assert_int_equal(netaddr_parse("[::1]:80", 0, false, &a), 0);
        assert_int_equal(netaddr_parse("[0:0::1]:80", 0, false, &b), 0);
        assert_true(netaddr_equal(&a, &b));
        netaddr_set_port(&b, 8);
        assert_false(netaddr_equal(&a, &b));
        assert_true(netaddr_same_host(&a, &b));

        memset(&a, 0, sizeof(a));
        memset(&b, 0, sizeof(b));
        assert_false(netaddr_equal(&a, &b));
}

static void check_cidr(const char *s, int family, unsigned prefix, const char *addr)
{
        struct netaddr_cidr c;
        uint8_t expect[16] = {0};

        print_message("cidr '%s'\n", s);
        assert_int_equal(netaddr_cidr_parse(s, &c), 0);
        assert_int_equal(c.family, family);
        assert_int_equal(c.prefix, prefix);
        assert_int_equal(inet_pton(family, addr, expect), 1);
        assert_memory_equal(c.addr, expect, family == AF_INET ? 4 : 16);
}

static void test_cidr_parse(void **state)
{
        static const char *const malformed[] = {
                "",
                "/8",
                "127.0.0.0/",
                "127.0.0.0/x",
                "127.0.0.0/8x",
                "127.0.0.0/-1",
                "127.0.0.0/+8",
                "127.0.0.0 /8",
                "127.0.0.0/ 8",
                "127.0.0.0/0008",
                "127.0.0.0/8/8",
                "127.0.0/8",
                "foo/8",
                "[::1]/128",
                "::1/12a",
                "198.51.0.1/16",
                "11.0.0.0/7",
                "198.128.0.0/8",
                "::1/127",
                "2001:db8::/16",
                "1.2.3.4:80",
        };
        static const char *const out_of_range[] = {"127.0.0.0/33", "::/129", "0.0.0.0/999"};
        struct netaddr_cidr c;

        check_cidr("127.0.0.0/8", AF_INET, 8, "127.0.0.0");
        check_cidr("198.51.0.0/16", AF_INET, 16, "198.51.0.0");
        check_cidr("0.0.0.0/0", AF_INET, 0, "0.0.0.0");
        check_cidr("192.0.2.1", AF_INET, 32, "192.0.2.1");
        check_cidr("192.0.2.1/32", AF_INET, 32, "192.0.2.1");
        check_cidr("198.0.0.0/7", AF_INET, 7, "198.0.0.0"); /* 198 = 0b11000110: the host bit is clear */
        check_cidr("::1/128", AF_INET6, 128, "::1");
        check_cidr("::1", AF_INET6, 128, "::1");
        check_cidr("::/0", AF_INET6, 0, "::");
        check_cidr("2001:db8::/32", AF_INET6, 32, "2001:db8::");
        check_cidr("fd00::/8", AF_INET6, 8, "fd00::");
        check_cidr("::ffff:127.0.0.0/104", AF_INET6, 104, "::ffff:127.0.0.0");

        for (size_t i = 0; i < ELEMENTSOF(malformed); i++) {
                print_message("reject cidr '%s'\n", malformed[i]);
                assert_int_equal(netaddr_cidr_parse(malformed[i], &c), -EINVAL);
        }
        for (size_t i = 0; i < ELEMENTSOF(out_of_range); i++) {
                print_message("reject cidr '%s'\n", out_of_range[i]);
                assert_int_equal(netaddr_cidr_parse(out_of_range[i], &c), -ERANGE);
        }
        assert_int_equal(netaddr_cidr_parse(NULL, &c), -EINVAL);
}

static bool contains(const char *cidr, const char *addr)
{
        struct netaddr_cidr c;
        struct netaddr a;

        assert_int_equal(netaddr_cidr_parse(cidr, &c), 0);
        assert_int_equal(netaddr_parse(addr, 80, false, &a), 0);
        return netaddr_cidr_contains(&c, &a);
}

static void test_cidr_contains(void **state)
{
        /* IPv4 */
        assert_true(contains("127.0.0.0/8", "127.0.0.1"));
        assert_true(contains("127.0.0.0/8", "127.255.255.255:9"));
        assert_false(contains("127.0.0.0/8", "128.0.0.1"));
        assert_false(contains("127.0.0.0/8", "126.255.255.255"));
        assert_true(contains("198.51.0.0/16", "198.51.255.1"));
        assert_false(contains("198.51.0.0/16", "198.52.0.1"));
        assert_true(contains("198.0.0.0/9", "198.127.0.1"));
        assert_false(contains("198.0.0.0/9", "198.128.0.1"));
        assert_true(contains("203.0.113.7", "203.0.113.7"));
        assert_false(contains("203.0.113.7", "203.0.113.6"));
        assert_true(contains("0.0.0.0/0", "8.8.8.8"));

        /* IPv6 */
        assert_true(contains("::1/128", "::1"));
        assert_false(contains("::1/128", "::2"));
        assert_true(contains("2001:db8::/32", "[2001:db8:ffff::1]:80"));
        assert_false(contains("2001:db8::/32", "2001:db9::1"));
        assert_true(contains("2001:db8::/33", "2001:db8:7fff::1"));
        assert_false(contains("2001:db8::/33", "2001:db8:8000::1"));
        assert_true(contains("::/0", "fe80::1"));

        /* Across families: an IPv4-mapped address matches IPv4 networks, and IPv4 matches ::ffff:0:0/96. */
        assert_true(contains("127.0.0.0/8", "::ffff:127.0.0.1"));
        assert_true(contains("127.0.0.0/8", "[::ffff:127.1.2.3]:80"));
        assert_false(contains("127.0.0.0/8", "::ffff:192.0.2.1"));
        assert_false(contains("127.0.0.0/8", "::127.0.0.1")); /* IPv4-compatible, not mapped */
        assert_false(contains("127.0.0.0/8", "::1"));
        assert_false(contains("0.0.0.0/0", "2001:db8::1"));
        assert_true(contains("0.0.0.0/0", "::ffff:1.2.3.4"));
        assert_true(contains("::ffff:127.0.0.0/104", "127.0.0.1"));
        assert_false(contains("::ffff:127.0.0.0/104", "128.0.0.1"));
        assert_false(contains("::1/128", "127.0.0.1"));
        assert_true(contains("::/0", "127.0.0.1"));

        {
                struct netaddr_cidr c = {.family = 0};
                struct netaddr a;

                assert_int_equal(netaddr_parse("127.0.0.1:80", 0, false, &a), 0);
                assert_false(netaddr_cidr_contains(&c, &a));
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_v4),      cmocka_unit_test(test_parse_v6),
                cmocka_unit_test(test_parse_bad),     cmocka_unit_test(test_format),
                cmocka_unit_test(test_equal),         cmocka_unit_test(test_cidr_parse),
                cmocka_unit_test(test_cidr_contains),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
