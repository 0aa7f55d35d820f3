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

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_request_id),
                cmocka_unit_test(test_parse_id),
                cmocka_unit_test(test_content_type),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
