/* Unit tests for the pure parts of webd/server.c: request ids, path ids, Content-Type matching. The
 * HTTP behaviour itself is covered by the integration tests (tests/webd). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "webd/server.h"

static void test_request_id(void **state)
{
        char long_id[SERVER_REQUEST_ID_MAX + 2];

        assert_true(server_request_id_sane("a"));
        assert_true(server_request_id_sane("abc-DEF_123.4:5"));
        assert_false(server_request_id_sane(NULL));
        assert_false(server_request_id_sane(""));
        assert_false(server_request_id_sane("a b"));
        assert_false(server_request_id_sane("a;b"));
        assert_false(server_request_id_sane("a'b"));
        assert_false(server_request_id_sane("\xc3\xa9"));
        assert_false(server_request_id_sane("a\nb"));
        memset(long_id, 'x', SERVER_REQUEST_ID_MAX);
        long_id[SERVER_REQUEST_ID_MAX] = '\0';
        assert_true(server_request_id_sane(long_id));
        long_id[SERVER_REQUEST_ID_MAX] = 'x';
        long_id[SERVER_REQUEST_ID_MAX + 1] = '\0';
        assert_false(server_request_id_sane(long_id));
}

static void test_parse_id(void **state)
{
        int64_t id = -1;

        assert_int_equal(server_parse_id("1", false, &id), 0);
        assert_int_equal(id, 1);
        assert_int_equal(server_parse_id("9223372036854775807", false, &id), 0);
        assert_int_equal(id, INT64_MAX);
        assert_int_equal(server_parse_id("42/", true, &id), 0);
        assert_int_equal(id, 42);
        id = -1;
        assert_int_equal(server_parse_id("42/", false, &id), -EINVAL);
        assert_int_equal(server_parse_id("9223372036854775808", false, &id), -EINVAL);
        assert_int_equal(server_parse_id("0", false, &id), -EINVAL);
        assert_int_equal(server_parse_id("01", false, &id), -EINVAL);
        assert_int_equal(server_parse_id("-1", false, &id), -EINVAL);
        assert_int_equal(server_parse_id("+1", false, &id), -EINVAL);
        assert_int_equal(server_parse_id("", false, &id), -EINVAL);
        assert_int_equal(server_parse_id("1x", false, &id), -EINVAL);
        assert_int_equal(server_parse_id("1//", true, &id), -EINVAL);
        assert_int_equal(server_parse_id("1/x", true, &id), -EINVAL);
        assert_int_equal(server_parse_id("123456789012345678901234", false, &id), -EINVAL);
        assert_int_equal(id, -1);
}

static void test_content_type(void **state)
{
        assert_true(server_content_type_is_json("application/json"));
        assert_true(server_content_type_is_json("Application/JSON"));
        assert_true(server_content_type_is_json("application/json; charset=utf-8"));
        assert_true(server_content_type_is_json(" application/json ;charset=UTF-8"));
        assert_false(server_content_type_is_json(NULL));
        assert_false(server_content_type_is_json(""));
        assert_false(server_content_type_is_json("text/plain"));
        assert_false(server_content_type_is_json("application/jsonx"));
        assert_false(server_content_type_is_json("application/json-patch+json"));
        assert_false(server_content_type_is_json("application/x-www-form-urlencoded"));
}

/* <peer> with the X-Forwarded-For headers <xff> (NULL-terminated), 127.0.0.0/8 and ::1 trusted: the client
 * found, as text. */
static const char *client(const char *peer, const char *const *xff)
{
        static char buf[NETADDR_STRLEN];
        struct netaddr_cidr trusted[2];
        size_t n = 0;
        struct netaddr a;
        int r;

        assert_int_equal(netaddr_cidr_parse("127.0.0.0/8", &trusted[0]), 0);
        assert_int_equal(netaddr_cidr_parse("::1", &trusted[1]), 0);
        while (xff && xff[n])
                n++;
        r = server_client_address(peer, xff, n, trusted, 2, &a);
        if (r < 0)
                return "error";
        assert_true(netaddr_format_host(&a, buf, sizeof(buf)) > 0);
        return buf;
}

static void test_client_address(void **state)
{
        const char *xff[] = { "203.0.113.5" };
        struct netaddr a;

        /* Not from a relay: the header is the client's own word, ignored. */
        assert_string_equal(client("192.0.2.1", (const char *[]){"198.51.100.9", NULL}), "192.0.2.1");
        assert_string_equal(client("192.0.2.1", NULL), "192.0.2.1");
        /* From a relay: the right-most entry that is not a relay. */
        assert_string_equal(client("127.0.0.1", NULL), "127.0.0.1");
        assert_string_equal(client("127.0.0.1", (const char *[]){"203.0.113.5", NULL}), "203.0.113.5");
        assert_string_equal(client("127.0.0.1", (const char *[]){"6.6.6.6, 203.0.113.5, 127.0.0.2", NULL}),
                            "203.0.113.5");
        assert_string_equal(client("::1", (const char *[]){" 2001:db8::7 ", NULL}), "2001:db8::7");
        assert_string_equal(client("127.0.0.1", (const char *[]){"[2001:db8::7]:4711", NULL}),
                            "2001:db8::7");
        assert_string_equal(client("127.0.0.1", (const char *[]){"198.51.100.1:80", NULL}), "198.51.100.1");
        /* Several headers read as one list, in order. */
        assert_string_equal(client("127.0.0.1", (const char *[]){"6.6.6.6", "203.0.113.5, 127.0.0.9", NULL}),
                            "203.0.113.5");
        assert_string_equal(client("127.0.0.1", (const char *[]){"203.0.113.5", "127.0.0.9", NULL}),
                            "203.0.113.5");
        /* Only relays: the left-most. */
        assert_string_equal(client("127.0.0.1", (const char *[]){"127.0.0.5, 127.0.0.9", NULL}),
                            "127.0.0.5");
        /* Garbage ends the walk at the relay that wrote it. */
        assert_string_equal(client("127.0.0.1", (const char *[]){"203.0.113.5, unknown", NULL}),
                            "127.0.0.1");
        assert_string_equal(client("127.0.0.1", (const char *[]){"203.0.113.5, unknown, 127.0.0.7", NULL}),
                            "127.0.0.7");
        assert_string_equal(client("127.0.0.1", (const char *[]){"203.0.113.5,", NULL}), "127.0.0.1");
        assert_string_equal(client("127.0.0.1", (const char *[]){"", NULL}), "127.0.0.1");
        assert_string_equal(client("127.0.0.1", (const char *[]){":80", NULL}), "127.0.0.1");
        assert_string_equal(client("127.0.0.1", (const char *[]){"*:80", NULL}), "127.0.0.1");
        assert_string_equal(client("127.0.0.1", (const char *[]){"1.2.3.4.5", NULL}), "127.0.0.1");
        assert_string_equal(client("nonsense", NULL), "error");
        assert_string_equal(client(NULL, NULL), "error");

        /* No relay configured: the peer, whatever the header. */
        assert_int_equal(server_client_address("127.0.0.1", xff, 1, NULL, 0, &a), 0);
        assert_int_equal(netaddr_port(&a), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_request_id),
                cmocka_unit_test(test_parse_id),
                cmocka_unit_test(test_content_type),
                cmocka_unit_test(test_client_address),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
