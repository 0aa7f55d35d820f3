/* Unit tests for the pure parts of webd/activity.c: PostgreSQL array literals built from untrusted
 * strings, and paths made safe for the log. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "webd/activity.h"

static void test_array(void **state)
{
        char buf[128] = "{";
        size_t len = 1;

        assert_int_equal(activity_array_append(buf, sizeof(buf), &len, "plain"), 0);
        assert_int_equal(activity_array_append(buf, sizeof(buf), &len, NULL), 0);
        assert_int_equal(activity_array_append(buf, sizeof(buf), &len, "a\"b\\c"), 0);
        assert_int_equal(activity_array_append(buf, sizeof(buf), &len, "{x,y} NULL ' ;"), 0);
        assert_int_equal(activity_array_append(buf, sizeof(buf), &len, ""), 0);
        assert_string_equal(buf, "{\"plain\",NULL,\"a\\\"b\\\\c\",\"{x,y} NULL ' ;\",\"\"");
        assert_int_equal(len, strlen(buf));
}

static void test_array_bounds(void **state)
{
        char buf[8] = "{";
        size_t len = 1;

        assert_int_equal(activity_array_append(buf, sizeof(buf), &len, "abcd"), 0); /* {"abcd" = 7 */
        assert_int_equal(activity_array_append(buf, sizeof(buf), &len, "x"), -ENOBUFS);
        assert_int_equal(activity_array_append(buf, sizeof(buf), &len, NULL), -ENOBUFS);
        assert_string_equal(buf, "{\"abcd\"");
        assert_int_equal(len, 7);
}

static void test_clean_path(void **state)
{
        char buf[16];

        assert_int_equal(activity_clean_path("/tasks/1", buf, sizeof(buf)), 8);
        assert_string_equal(buf, "/tasks/1");
        assert_int_equal(activity_clean_path("/a b\n\xff", buf, sizeof(buf)), 12);
        assert_string_equal(buf, "/a%20b%0A%FF");
        /* Cut to fit, never in the middle of an escape. */
        assert_int_equal(activity_clean_path("/0123456789abcdefgh", buf, sizeof(buf)), 15);
        assert_string_equal(buf, "/0123456789abcd");
        assert_int_equal(activity_clean_path("/0123456789ab\n", buf, sizeof(buf)), 13);
        assert_string_equal(buf, "/0123456789ab");
        assert_int_equal(activity_clean_path("x", buf, 0), 0);
}

/* Names are cut to fit at a character boundary: never part of a UTF-8 sequence. */
static void test_copy_name(void **state)
{
        static const struct {
                const char *name, *expect;
        } cases[] = {
                { "alice", "alice" },
                { "abcdefghij", "abcdefg" },
                /* "abcde" + "é" (2 bytes) fits exactly; one byte of a 2-byte character doesn't. */
                { "abcde\xc3\xa9x", "abcde\xc3\xa9" },
                { "abcdef\xc3\xa9", "abcdef" },
                /* A 4-byte character cut after 1, 2 or 3 of its bytes goes whole. */
                { "abcdef\xf0\x9f\x99\x82", "abcdef" },
                { "abcde\xf0\x9f\x99\x82", "abcde" },
                { "abcd\xf0\x9f\x99\x82", "abcd" },
                { "abc\xf0\x9f\x99\x82z", "abc\xf0\x9f\x99\x82" },
                { "", "" },
        };
        char buf[8];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                print_message("name '%s'\n", cases[i].name);
                assert_int_equal(activity_copy_name(buf, sizeof(buf), cases[i].name), strlen(cases[i].expect));
                assert_string_equal(buf, cases[i].expect);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_array),
                cmocka_unit_test(test_array_bounds),
                cmocka_unit_test(test_clean_path),
                cmocka_unit_test(test_copy_name),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
