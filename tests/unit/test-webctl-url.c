/* Unit tests for webctl/url.c: the normal form of server URLs (one spelling per server, so that saved
 * logins are found again) and the URLs refused, each with its reason. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "webctl/url.h"

static void test_normal_forms(void **state)
{
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "http://127.0.0.1:8000", "http://127.0.0.1:8000" },
                { "http://127.0.0.1:8000/", "http://127.0.0.1:8000" },
                { "http://127.0.0.1:8000///", "http://127.0.0.1:8000" },
                { "HTTP://LocalHost:8000", "http://localhost:8000" },
                { "http://example.com:80", "http://example.com" },
                { "http://example.com:080", "http://example.com" },
                { "https://example.com:443/", "https://example.com" },
                { "https://example.com:80", "https://example.com:80" },
                { "http://example.com:443", "http://example.com:443" },
                { "http://[::1]:8000/", "http://[::1]:8000" },
                { "http://[::1]", "http://[::1]" },
                { "http://[FE80::1]:80", "http://[fe80::1]" },
                { "http://h:8000/API/v1/", "http://h:8000/API/v1" },
        };
        char out[128];
        const char *why;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                why = NULL;
                assert_int_equal(url_normalize(cases[i].in, out, sizeof(out), &why), 0);
                assert_string_equal(out, cases[i].out);
                assert_null(why);
        }
}

static void test_refused(void **state)
{
        static const struct {
                const char *in, *why;
        } cases[] = {
                { "ftp://h", "is not an http:// or https:// URL" },
                { "127.0.0.1:8000", "is not an http:// or https:// URL" },
                { "", "is not an http:// or https:// URL" },
                { "http://", "has no host" },
                { "http:///x", "has no host" },
                { "http://:8000", "has no host" },
                { "http://h:0", "port" },
                { "http://h:65536", "port" },
                { "http://h:99999999", "port" },
                { "http://h:", "port" },
                { "http://h:8x", "port" },
                { "http://h:-1", "port" },
                { "http://user:pw@h", "user name or password" },
                { "http://h/x?y=1", "query or fragment" },
                { "http://h#x", "query or fragment" },
                { "http://h x", "blank" },
                { "http://h\t", "blank" },
                { "http://h\x1b[31m", "control" },
                { "http://h\xc3\xa9", "non-ASCII" },
                { "http://[::1", "IPv6" },
                { "http://[]:80", "IPv6" },
                { "http://[::1]x", "IPv6" },
                { "http://[::g]", "IPv6" },
                { "http://a_b!", "host name" },
        };
        char out[128];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *why = NULL;

                memcpy(out, "untouched", sizeof("untouched"));
                assert_int_equal(url_normalize(cases[i].in, out, sizeof(out), &why), -EINVAL);
                assert_string_equal(out, "untouched");
                assert_non_null(why);
                if (!strstr(why, cases[i].why))
                        fail_msg("%s: '%s' does not say '%s'", cases[i].in, why, cases[i].why);
        }
}

static void test_bounds(void **state)
{
        char small[16], url[2048];
        const char *why;

        assert_int_equal(url_normalize("http://example.com:8000", small, sizeof(small), &why), -ENAMETOOLONG);
        assert_string_equal(small, "");
        assert_int_equal(url_normalize("http://example.co", small, sizeof(small), &why), -ENAMETOOLONG);
        assert_int_equal(url_normalize("http://example.c", small, sizeof(small), &why), -ENAMETOOLONG);
        assert_int_equal(url_normalize("http://exampl.c", small, sizeof(small), &why), 0);
        assert_string_equal(small, "http://exampl.c");
        memset(url, 'a', sizeof(url) - 1);
        url[sizeof(url) - 1] = '\0';
        memcpy(url, "http://", 7);
        assert_int_equal(url_normalize(url, small, sizeof(small), &why), -ENAMETOOLONG);
}

static void test_root(void **state)
{
        assert_false(url_has_path("http://h:8000"));
        assert_true(url_has_path("http://h:8000/api"));
        assert_int_equal(url_root_len("http://h:8000/api"), strlen("http://h:8000"));
        assert_int_equal(url_root_len("https://[::1]/x/y"), strlen("https://[::1]"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_normal_forms),
                cmocka_unit_test(test_refused),
                cmocka_unit_test(test_bounds),
                cmocka_unit_test(test_root),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
