/* Unit tests for webctl/table.c: tables fitted to a width (the shrinking columns in their order, then the
 * optional ones left out), nothing cut when the width is unknown, colour escapes never counted as width,
 * and text from the server made safe for a terminal. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <locale.h>
#include <wchar.h>

#include <cmocka.h>

#include "common/macro.h"
#include "webctl/table.h"

static const char *const headers[] = { "TIME", "METHOD", "STATUS", "PATH", "CLIENT", "REQUEST ID" };

/* An activity-like table: the path shrinks first, then the client; the request id (which never shrinks)
 * is left out first, then the client. */
static struct table *make_table(void)
{
        static const char *const rows[][6] = {
                { "2026-12-07 14:03:05 UTC", "GET", "200", "/tasks/123456789012345678", "127.0.0.1",
                  "c54f8e1370cae224-41" },
                { "2026-12-07 14:03:06 UTC", "POST", "201", "/tasks", "127.0.0.1", "c54f8e1370cae224-42" },
        };
        struct table *t;

        assert_int_equal(table_new(headers, ELEMENTSOF(headers), &t), 0);
        table_align_right(t, 2);
        table_limit(t, 3, 40, 1, 8);
        table_limit(t, 4, 0, 2, 7);
        table_limit(t, 5, 40, 0, 0);
        table_optional(t, 5, 1);
        table_optional(t, 4, 2);
        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                assert_int_equal(table_add_row(t, rows[i]), 0);
        return t;
}

/* Prints <t> at <width> into a string (free it). */
static char *print(struct table *t, size_t width, bool color)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        assert_non_null(f);
        assert_int_equal(table_print(t, f, width, color), 0);
        assert_int_equal(fclose(f), 0);
        return buf;
}

/* The widest line of <text> in terminal columns, escape sequences not counted. */
static size_t widest(const char *text)
{
        size_t widest = 0, w = 0;
        mbstate_t st = { 0 };

        while (*text) {
                wchar_t wc;
                size_t n;

                if (*text == '\033') {
                        text += strcspn(text, "m") + 1;
                        continue;
                }
                if (*text == '\n') {
                        widest = w > widest ? w : widest;
                        w = 0;
                        text++;
                        continue;
                }
                n = mbrtowc(&wc, text, strlen(text), &st);
                assert_true(n > 0 && n <= 4);
                w += (size_t)wcwidth(wc);
                text += n;
        }
        return w > widest ? w : widest;
}

static void test_fits(void **state)
{
        struct table *t = make_table();

        for (size_t width = 40; width <= 200; width++) {
                char *out = print(t, width, false);

                if (width >= 60 && widest(out) > width)
                        fail_msg("width %zu: a line is %zu wide:\n%s", width, widest(out), out);
                free(out);
        }
        table_free(t);
}

static void test_order(void **state)
{
        struct table *t = make_table();
        char *wide = print(t, 200, false), *unknown = print(t, 0, false);
        char *mid = print(t, 90, false), *seventy = print(t, 70, false), *narrow = print(t, 50, false);

        /* Everything when it fits, and when the width is unknown. */
        assert_string_equal(wide, unknown);
        assert_non_null(strstr(wide, "/tasks/123456789012345678"));
        assert_non_null(strstr(wide, "c54f8e1370cae224-41"));
        assert_null(strstr(wide, "\xe2\x80\xa6"));
        /* At 90 the path gives up width first, every column still shown, the request id whole. */
        assert_non_null(strstr(mid, "REQUEST ID"));
        assert_non_null(strstr(mid, "c54f8e1370cae224-41"));
        assert_non_null(strstr(mid, "\xe2\x80\xa6"));
        assert_null(strstr(mid, "/tasks/123456789012345678"));
        /* At 70 the request id is left out, and the path gets the room back; at 50 the client too. */
        assert_null(strstr(seventy, "REQUEST ID"));
        assert_non_null(strstr(seventy, "CLIENT"));
        assert_non_null(strstr(seventy, "/tasks/12345"));
        assert_null(strstr(narrow, "REQUEST ID"));
        assert_null(strstr(narrow, "CLIENT"));
        assert_null(strstr(narrow, "c54f8e"));
        assert_non_null(strstr(narrow, "PATH"));
        assert_non_null(strstr(narrow, "2026-12-07 14:03:05 UTC"));
        free(wide);
        free(unknown);
        free(mid);
        free(seventy);
        free(narrow);
        table_free(t);
}

static void test_cap(void **state)
{
        static const char *const hdr[] = { "ID", "TITLE" };
        char title[101], *out;
        const char *row[] = { "1", title };
        struct table *t;

        memset(title, 'x', sizeof(title) - 1);
        title[sizeof(title) - 1] = '\0';
        assert_int_equal(table_new(hdr, 2, &t), 0);
        table_limit(t, 1, 60, 1, 10);
        assert_int_equal(table_add_row(t, row), 0);
        /* Unknown width (a pipe): capped. */
        out = print(t, 0, false);
        assert_null(strstr(out, title));
        assert_int_equal(widest(out), 4 + 60);
        free(out);
        /* A known width with room: whole; without: cut to fit. */
        out = print(t, 200, false);
        assert_non_null(strstr(out, title));
        free(out);
        out = print(t, 80, false);
        assert_null(strstr(out, title));
        assert_int_equal(widest(out), 80);
        free(out);
        table_free(t);
}

static void test_color(void **state)
{
        struct table *t = make_table();
        char *plain, *colored;

        table_style_row(t, TABLE_STYLE_DIM);
        plain = print(t, 80, false);
        colored = print(t, 80, true);
        assert_null(strchr(plain, '\033'));
        assert_true(strncmp(colored, "\033[1m", 4) == 0);
        assert_non_null(strstr(colored, "\033[2m2026-12-07 14:03:06"));
        assert_int_equal(widest(colored), widest(plain));
        free(plain);
        free(colored);
        table_free(t);
}

static void test_sanitize(void **state)
{
        static const char *const row[] = { "a\033[31mb\x07", "x\ny\tz", "\xe2\x80\xae" "rtl", "\xff", "", NULL };
        struct table *t;
        char *out, *s;
        size_t w;

        assert_int_equal(table_new(headers, ELEMENTSOF(headers), &t), 0);
        assert_int_equal(table_add_row(t, row), 0);
        out = print(t, 0, false);
        assert_null(strchr(out, '\033'));
        assert_null(strchr(out, '\x07'));
        assert_non_null(strstr(out, "a?[31mb?"));
        assert_non_null(strstr(out, "x y z"));
        assert_non_null(strstr(out, "?rtl"));
        free(out);
        table_free(t);

        s = table_sanitize("line\none", true, &w);
        assert_string_equal(s, "line\none");
        free(s);
        s = table_sanitize("\xe6\x97\xa5\xe6\x9c\xac", false, &w);
        assert_int_equal(w, 4);
        free(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fits),
                cmocka_unit_test(test_order),
                cmocka_unit_test(test_cap),
                cmocka_unit_test(test_color),
                cmocka_unit_test(test_sanitize),
        };

        if (!setlocale(LC_CTYPE, "C.UTF-8"))
                return 77;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
