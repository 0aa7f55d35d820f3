/* Unit tests for lbd/https.c: the redirect's Location from the client's Host and target (every host that
 * is not a name or an address refused), and the ACME challenge files (names, kinds and sizes). */
#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lbd/https.h"

/* The Location for <target> and <host> (NULL: none) and <port>, or NULL when refused (-EINVAL). */
static char *location(const char *target, const char *host, uint16_t port)
{
        struct evbuffer *out = evbuffer_new();
        char *s = NULL;
        int r;

        assert_non_null(out);
        r = https_redirect_location(out, target, strlen(target), host, host ? strlen(host) : 0, port);
        if (r == 0) {
                size_t n = evbuffer_get_length(out);

                s = calloc(1, n + 1);
                assert_non_null(s);
                assert_int_equal(evbuffer_remove(out, s, n), (int)n);
        } else
                assert_int_equal(r, -EINVAL);
        evbuffer_free(out);
        return s;
}

static void check_location(const char *target, const char *host, uint16_t port, const char *expect)
{
        char *s = location(target, host, port);

        print_message("%s Host %s -> %s\n", target, host ? host : "(none)", expect ? expect : "(refused)");
        if (!expect)
                assert_null(s);
        else {
                assert_non_null(s);
                assert_string_equal(s, expect);
        }
        free(s);
}

static void test_redirect(void **state)
{
        check_location("/", "example.com", 443, "https://example.com/");
        check_location("/a/b?x=1&y=%2F", "example.com", 443, "https://example.com/a/b?x=1&y=%2F");
        check_location("/p", "example.com:80", 8443, "https://example.com:8443/p");
        check_location("/p", "Example.COM:", 443, "https://Example.COM/p");
        check_location("/p", "192.0.2.7:8080", 443, "https://192.0.2.7/p");
        check_location("/p", "[2001:db8::1]:80", 443, "https://[2001:db8::1]/p");
        check_location("http://example.com/x?q", "example.com", 443, "https://example.com/x?q");
        check_location("HTTP://example.com", "example.com", 443, "https://example.com/");
        check_location("http://example.com?q", "example.com", 443, "https://example.com?q");
        check_location("//evil.test/x", "example.com", 443, "https://example.com//evil.test/x");

        /* Refused: no host, or one that is not a name or an address. */
        check_location("/p", NULL, 443, NULL);
        check_location("/p", "", 443, NULL);
        check_location("*", "example.com", 443, NULL);
        check_location("p", "example.com", 443, NULL);
        check_location("/p", "a b", 443, NULL);
        check_location("/p", "a/b", 443, NULL);
        check_location("/p", "user@example.com", 443, NULL);
        check_location("/p", "example.com:80x", 443, NULL);
        check_location("/p", "example.com:80:81", 443, NULL);
        check_location("/p", "[2001:db8::1", 443, NULL);
        check_location("/p", "[]", 443, NULL);
        check_location("/p", "[::1]x", 443, NULL);
        check_location("/p", "[::1]]", 443, NULL);
        check_location("/p", "[zz::1]", 443, NULL);
        check_location("/p", ":80", 443, NULL);
        check_location("/p", "ex\\ample.com", 443, NULL);
        check_location("/p", "exa\"mple.com", 443, NULL);
        check_location("/p", "ex%41mple.com", 443, NULL);
        check_location("/p", "\xc3\xa9.test", 443, NULL);
        check_location("http:///x", "example.com", 443, NULL);
        check_location("http://a b/x", "example.com", 443, NULL);
        {
                char host[300];

                memset(host, 'a', sizeof(host) - 1);
                host[sizeof(host) - 1] = '\0';
                check_location("/p", host, 443, NULL);
                host[255] = '\0';
                {
                        char expect[320];

                        (void)snprintf(expect, sizeof(expect), "https://%s/p", host);
                        check_location("/p", host, 443, expect);
                }
        }
}

/* The target and the Host stand in the request head, not NUL-terminated: nothing is read past their
 * lengths, and a NUL inside is no host character. */
static void test_redirect_bounds(void **state)
{
        static const char abs[] = "http://a.test", host6[] = "[::\0" "1]";
        struct evbuffer *out = evbuffer_new();
        char *target = malloc(sizeof(abs) - 1), loc[64];
        int n;

        assert_non_null(out);
        assert_non_null(target);
        memcpy(target, abs, sizeof(abs) - 1); /* no NUL after it: ASan sees any read beyond */
        assert_int_equal(https_redirect_location(out, target, sizeof(abs) - 1, NULL, 0, 443), 0);
        n = evbuffer_remove(out, loc, sizeof(loc) - 1);
        assert_true(n > 0);
        loc[n] = '\0';
        assert_string_equal(loc, "https://a.test/");
        assert_int_equal(https_redirect_location(out, "/p", 2, host6, sizeof(host6) - 1, 443), -EINVAL);
        assert_int_equal(https_redirect_location(out, "/p", 2, "a\0b", 3, 443), -EINVAL);
        assert_int_equal(evbuffer_get_length(out), 0);
        free(target);
        evbuffer_free(out);
}

static char dir[64];

static void put(const char *name, const char *content)
{
        char path[160];
        FILE *f;

        (void)snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "we");
        assert_non_null(f);
        assert_true(fputs(content, f) >= 0);
        assert_int_equal(fclose(f), 0);
}

/* What https_acme_read() returns for <token>; the body in <body> when it is read. */
static int acme(const char *token, char *body, size_t size)
{
        struct evbuffer *out = evbuffer_new();
        char target[512];
        int r;

        assert_non_null(out);
        (void)snprintf(target, sizeof(target), "%s%s", HTTPS_ACME_PREFIX, token);
        r = https_acme_read(out, dir, target, strlen(target));
        if (r >= 0 && body) {
                assert_int_equal((size_t)r, evbuffer_get_length(out));
                assert_true((size_t)r < size);
                assert_int_equal(evbuffer_remove(out, body, (size_t)r), r);
                body[r] = '\0';
        } else if (r < 0)
                assert_int_equal(evbuffer_get_length(out), 0);
        evbuffer_free(out);
        return r;
}

static void test_acme(void **state)
{
        char body[8192], big[HTTPS_ACME_FILE_MAX + 2], path[160], token[HTTPS_ACME_TOKEN_MAX + 2];

        (void)snprintf(dir, sizeof(dir), "/tmp/test-https-XXXXXX");
        assert_non_null(mkdtemp(dir));
        put("Tok_en-1", "Tok_en-1.thumb");
        put(".hidden", "x");
        put("secret", "not for clients");
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        put("big", big);
        big[HTTPS_ACME_FILE_MAX] = '\0';
        put("edge", big);
        (void)snprintf(path, sizeof(path), "%s/link", dir);
        assert_int_equal(symlink("secret", path), 0);
        (void)snprintf(path, sizeof(path), "%s/sub", dir);
        assert_int_equal(mkdir(path, 0700), 0);

        assert_true(https_is_acme(HTTPS_ACME_PREFIX "x", strlen(HTTPS_ACME_PREFIX) + 1));
        assert_false(https_is_acme(HTTPS_ACME_PREFIX, strlen(HTTPS_ACME_PREFIX)));
        assert_false(https_is_acme("/.well-known/acme-challeng", 25));
        assert_false(https_is_acme(NULL, 0));

        assert_int_equal(acme("Tok_en-1", body, sizeof(body)), 14);
        assert_string_equal(body, "Tok_en-1.thumb");
        assert_int_equal(acme("edge", body, sizeof(body)), HTTPS_ACME_FILE_MAX);
        assert_int_equal(acme("big", NULL, 0), -EFBIG);
        assert_int_equal(acme("link", NULL, 0), -ENOENT);
        assert_int_equal(acme("sub", NULL, 0), -ENOENT);
        assert_int_equal(acme("missing", NULL, 0), -ENOENT);
        assert_int_equal(acme(".hidden", NULL, 0), -EINVAL);
        assert_int_equal(acme("../secret", NULL, 0), -EINVAL);
        assert_int_equal(acme("x/../secret", NULL, 0), -EINVAL);
        assert_int_equal(acme("secret?x=1", NULL, 0), -EINVAL);
        assert_int_equal(acme("%73ecret", NULL, 0), -EINVAL);
        assert_int_equal(acme("sec ret", NULL, 0), -EINVAL);
        memset(token, 'a', sizeof(token) - 1);
        token[sizeof(token) - 1] = '\0';
        assert_int_equal(acme(token, NULL, 0), -EINVAL);
        token[HTTPS_ACME_TOKEN_MAX] = '\0';
        assert_int_equal(acme(token, NULL, 0), -ENOENT);

        for (const char *f = "Tok_en-1\0.hidden\0secret\0big\0edge\0link\0"; *f; f += strlen(f) + 1) {
                (void)snprintf(path, sizeof(path), "%s/%s", dir, f);
                assert_int_equal(unlink(path), 0);
        }
        (void)snprintf(path, sizeof(path), "%s/sub", dir);
        assert_int_equal(rmdir(path), 0);
        assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_redirect),
                cmocka_unit_test(test_redirect_bounds),
                cmocka_unit_test(test_acme),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
