/* Unit tests for common/parse.c: durations, sizes, bounded integers and booleans, accepted and rejected
 * forms, and that a failed parse leaves the output alone. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/macro.h"
#include "common/parse.h"

#define SEC  USEC_PER_SEC
#define DAYS (UINT64_C(86400) * SEC)

static void test_duration_ok(void **state)
{
        static const struct {
                const char *s;
                uint64_t usec;
        } cases[] = {
                {"0", 0},
                {"1", SEC},
                {"250us", 250},
                {"500ms", 500 * USEC_PER_MSEC},
                {"1s", SEC},
                {"1.5s", 3 * SEC / 2},
                {"0.5", SEC / 2},
                {"0.001s", USEC_PER_MSEC},
                {"1.5ms", 1500},
                {"1.5us", 1}, /* below a microsecond is dropped */
                {"0.0000001s", 0},
                {"2m", 120 * SEC},
                {"1.25m", 75 * SEC},
                {"1h", 3600 * SEC},
                {"1.5h", 5400 * SEC},
                {"1d", DAYS},
                {"30d", 30 * DAYS},
                {"720h", 30 * DAYS},
                {"2592000", 30 * DAYS},
                {"0030s", 30 * SEC},
                {"29.999999d", 30 * DAYS - 86400},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t v = 12345;

                print_message("duration '%s'\n", cases[i].s);
                assert_int_equal(parse_duration(cases[i].s, &v), 0);
                assert_int_equal(v, cases[i].usec);
        }
}

static void test_duration_bad(void **state)
{
        static const struct {
                const char *s;
                int error;
        } cases[] = {
                {"", -EINVAL},
                {"s", -EINVAL},
                {"-1s", -EINVAL},
                {"+1s", -EINVAL},
                {" 1s", -EINVAL},
                {"1s ", -EINVAL},
                {"1 s", -EINVAL},
                {"1x", -EINVAL},
                {"1S", -EINVAL},
                {"1sec", -EINVAL},
                {"1ss", -EINVAL},
                {"1.s", -EINVAL},
                {".5s", -EINVAL},
                {"1..5s", -EINVAL},
                {"1.5.5s", -EINVAL},
                {"1e3", -EINVAL},
                {"0x10", -EINVAL},
                {"1m30s", -EINVAL},
                {"30.000001d", -ERANGE},
                {"31d", -ERANGE},
                {"2592001", -ERANGE},
                {"745h", -ERANGE},
                {"18446744073709551615us", -ERANGE},
                {"18446744073709551616", -ERANGE},
                {"99999999999999999999999999d", -ERANGE},
                {"99999999999999999999999999x", -EINVAL},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t v = 12345;

                print_message("duration '%s'\n", cases[i].s);
                assert_int_equal(parse_duration(cases[i].s, &v), cases[i].error);
                assert_int_equal(v, 12345);
        }
        assert_int_equal(parse_duration(NULL, &(uint64_t){0}), -EINVAL);
}

static void test_size(void **state)
{
        static const struct {
                const char *s;
                int error;
                uint64_t bytes;
        } cases[] = {
                {"0", 0, 0},
                {"512", 0, 512},
                {"512B", 0, 512},
                {"16k", 0, 16384},
                {"16K", 0, 16384},
                {"16KiB", 0, 16384},
                {"1M", 0, 1048576},
                {"1m", 0, 1048576},
                {"1MiB", 0, 1048576},
                {"2G", 0, UINT64_C(2) << 30},
                {"3T", 0, UINT64_C(3) << 40},
                {"16777215T", 0, UINT64_C(16777215) << 40},
                {"16777216T", -ERANGE, 0},
                {"18446744073709551615", 0, UINT64_MAX},
                {"18446744073709551616", -ERANGE, 0},
                {"", -EINVAL, 0},
                {"k", -EINVAL, 0},
                {"-1", -EINVAL, 0},
                {"1.5M", -EINVAL, 0},
                {"16 k", -EINVAL, 0},
                {"16kb", -EINVAL, 0},
                {"16KB", -EINVAL, 0},
                {"16Ki", -EINVAL, 0},
                {"16x", -EINVAL, 0},
                {"16kk", -EINVAL, 0},
                {"16P", -EINVAL, 0},
                {"16b", -EINVAL, 0},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t v = 777;

                print_message("size '%s'\n", cases[i].s);
                assert_int_equal(parse_size(cases[i].s, &v), cases[i].error);
                assert_int_equal(v, cases[i].error == 0 ? cases[i].bytes : 777);
        }
        assert_int_equal(parse_size(NULL, &(uint64_t){0}), -EINVAL);
}

static void test_uint(void **state)
{
        uint64_t v = 99;

        assert_int_equal(parse_uint("0", 0, 10, &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(parse_uint("10", 0, 10, &v), 0);
        assert_int_equal(v, 10);
        assert_int_equal(parse_uint("007", 0, 10, &v), 0);
        assert_int_equal(v, 7);
        assert_int_equal(parse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
        assert_true(v == UINT64_MAX);

        v = 99;
        assert_int_equal(parse_uint("11", 0, 10, &v), -ERANGE);
        assert_int_equal(parse_uint("0", 1, 10, &v), -ERANGE);
        assert_int_equal(parse_uint("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
        assert_int_equal(parse_uint("", 0, 10, &v), -EINVAL);
        assert_int_equal(parse_uint("-1", 0, 10, &v), -EINVAL);
        assert_int_equal(parse_uint("+1", 0, 10, &v), -EINVAL);
        assert_int_equal(parse_uint(" 1", 0, 10, &v), -EINVAL);
        assert_int_equal(parse_uint("1 ", 0, 10, &v), -EINVAL);
        assert_int_equal(parse_uint("0x1", 0, 10, &v), -EINVAL);
        assert_int_equal(parse_uint("1k", 0, 10, &v), -EINVAL);
        assert_int_equal(parse_uint(NULL, 0, 10, &v), -EINVAL);
        assert_int_equal(v, 99);
}

static void test_bool(void **state)
{
        static const char *const yes[] = {"yes", "YES", "true", "True", "on", "ON", "1"};
        static const char *const no[] = {"no", "No", "false", "FALSE", "off", "Off", "0"};
        static const char *const bad[] = {"", "y", "n", "2", "yes ", " no", "enable", "onn"};
        bool b;

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                b = false;
                assert_int_equal(parse_bool(yes[i], &b), 0);
                assert_true(b);
        }
        for (size_t i = 0; i < ELEMENTSOF(no); i++) {
                b = true;
                assert_int_equal(parse_bool(no[i], &b), 0);
                assert_false(b);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                b = true;
                assert_int_equal(parse_bool(bad[i], &b), -EINVAL);
                assert_true(b);
        }
        assert_int_equal(parse_bool(NULL, &b), -EINVAL);
}

static void test_text_ok(void **state)
{
        assert_true(parse_text_ok("us-east-1", 16, NULL));
        assert_true(parse_text_ok("a b/c", 5, NULL));
        assert_true(parse_text_ok("caf\xc3\xa9", 5, NULL)); /* bytes above 0x7f are not control characters */
        assert_false(parse_text_ok("a b", 5, " /"));
        assert_false(parse_text_ok("a/b", 5, " /"));
        assert_false(parse_text_ok("abcdef", 5, NULL)); /* longer than max */
        assert_true(parse_text_ok("abcde", 5, NULL));
        assert_false(parse_text_ok("", 5, NULL));
        assert_false(parse_text_ok(NULL, 5, NULL));
        assert_false(parse_text_ok("a\tb", 5, NULL));
        assert_false(parse_text_ok("a\nb", 5, NULL));
        assert_false(parse_text_ok("a\x7f", 5, NULL));
        assert_false(parse_text_ok("\x1f", 5, NULL));
}

static void test_hex_digit(void **state)
{
        assert_int_equal(parse_hex_digit('0'), 0);
        assert_int_equal(parse_hex_digit('9'), 9);
        assert_int_equal(parse_hex_digit('a'), 10);
        assert_int_equal(parse_hex_digit('F'), 15);
        assert_int_equal(parse_hex_digit('g'), -1);
        assert_int_equal(parse_hex_digit('G'), -1);
        assert_int_equal(parse_hex_digit('/'), -1);
        assert_int_equal(parse_hex_digit('\0'), -1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_duration_ok), cmocka_unit_test(test_duration_bad),
                cmocka_unit_test(test_size),        cmocka_unit_test(test_uint),
                cmocka_unit_test(test_bool),        cmocka_unit_test(test_text_ok),
                cmocka_unit_test(test_hex_digit),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
