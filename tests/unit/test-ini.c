/* Unit tests for common/ini.c: sections, keys, comments, CRLF, line numbers, the limits on line and file
 * size, NUL and control bytes, every syntax error with the line it names, and reading from files. */
#include <errno.h>
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

#include "common/ini.h"
#include "common/macro.h"
#include "tests/unit/fixture.h"

#define MAX_CALLS 32

struct call {
        unsigned line;
        char file[256];
        char section[64];
        char key[64];
        char value[INI_LINE_MAX];
};

struct record {
        size_t n;
        size_t stop_at; /* when not 0, the handler fails the (stop_at)th call */
        int stop_with;
        struct call calls[MAX_CALLS];
};

static struct record rec;

static int record_handler(const char *file, unsigned line, const char *section, const char *key,
                          const char *value, void *userdata)
{
        struct record *r = userdata;
        struct call *c;

        assert_ptr_equal(r, &rec);
        assert_true(r->n < MAX_CALLS);
        c = &r->calls[r->n++];
        c->line = line;
        assert_true(strlen(file) < sizeof(c->file));
        assert_true(strlen(section) < sizeof(c->section));
        assert_true(strlen(key) < sizeof(c->key));
        assert_true(strlen(value) < sizeof(c->value));
        memcpy(c->file, file, strlen(file) + 1);
        memcpy(c->section, section, strlen(section) + 1);
        memcpy(c->key, key, strlen(key) + 1);
        memcpy(c->value, value, strlen(value) + 1);
        if (r->stop_at != 0 && r->n == r->stop_at)
                return r->stop_with;
        return 0;
}

static int reset(void **state)
{
        memset(&rec, 0, sizeof(rec));
        return 0;
}

static void check_call(size_t i, unsigned line, const char *section, const char *key, const char *value)
{
        assert_true(i < rec.n);
        assert_int_equal(rec.calls[i].line, line);
        assert_string_equal(rec.calls[i].section, section);
        assert_string_equal(rec.calls[i].key, key);
        assert_string_equal(rec.calls[i].value, value);
}

/* Parses <text> (NUL-terminated) capturing the log; returns the parse result, the log in <ret_log>. */
static int parse_capture(const char *text, size_t len, char **ret_log)
{
        struct capture cap;
        int r;

        capture_begin(&cap);
        r = ini_parse_string(text, len, "test.conf", record_handler, &rec);
        *ret_log = capture_end(&cap);
        return r;
}

static int parse(const char *text)
{
        return ini_parse_string(text, strlen(text), "test.conf", record_handler, &rec);
}

static void test_basic(void **state)
{
        static const char text[] = "; a comment\n"
                                   "# another comment\n"
                                   "top = level\n"
                                   "\n"
                                   "   \t\n"
                                   "[lbd]\n"
                                   "listen = 0.0.0.0:80\n"
                                   "  indented\t=\tvalue with  inner  spaces   \n"
                                   "empty =\n"
                                   "eq = a=b=c\n"
                                   "semi = a;b#c\n"
                                   "inline = value ; comment\n"
                                   "inline2 = value\t# comment\n"
                                   "only_comment = ; nothing\n"
                                   "  ; indented comment\n"
                                   "[ pool ]   ; section comment\n"
                                   "k.e-y_1 = v\n"
                                   "[Sec-2.x]#c\n"
                                   "utf8 = caf\xc3\xa9\n"
                                   "last = no newline";

        assert_int_equal(parse(text), 0);
        assert_int_equal(rec.n, 12);
        check_call(0, 3, "", "top", "level");
        check_call(1, 7, "lbd", "listen", "0.0.0.0:80");
        check_call(2, 8, "lbd", "indented", "value with  inner  spaces");
        check_call(3, 9, "lbd", "empty", "");
        check_call(4, 10, "lbd", "eq", "a=b=c");
        check_call(5, 11, "lbd", "semi", "a;b#c");
        check_call(6, 12, "lbd", "inline", "value");
        check_call(7, 13, "lbd", "inline2", "value");
        check_call(8, 14, "lbd", "only_comment", "");
        check_call(9, 17, "pool", "k.e-y_1", "v");
        check_call(10, 19, "Sec-2.x", "utf8", "caf\xc3\xa9");
        check_call(11, 20, "Sec-2.x", "last", "no newline");
        assert_string_equal(rec.calls[0].file, "test.conf");
}

static void test_empty(void **state)
{
        assert_int_equal(ini_parse_string("", 0, "x", record_handler, &rec), 0);
        assert_int_equal(ini_parse_string(NULL, 0, "x", record_handler, &rec), 0);
        assert_int_equal(parse("\n\n\n; only comments\n"), 0);
        assert_int_equal(rec.n, 0);
        /* A NULL name has a stand-in in messages. */
        assert_int_equal(ini_parse_string("a=1", 3, NULL, record_handler, &rec), 0);
        assert_string_equal(rec.calls[0].file, "(string)");
}

static void test_crlf(void **state)
{
        static const char text[] = "[lbd]\r\n"
                                   "a = 1\r\n"
                                   "\r\n"
                                   "b = two words \r\n"
                                   "; comment\r\n"
                                   "c = 3\r";

        assert_int_equal(parse(text), 0);
        assert_int_equal(rec.n, 3);
        check_call(0, 2, "lbd", "a", "1");
        check_call(1, 4, "lbd", "b", "two words");
        check_call(2, 6, "lbd", "c", "3");
}

static void test_bom(void **state)
{
        assert_int_equal(parse("\xef\xbb\xbf[lbd]\na = 1\n"), 0);
        assert_int_equal(rec.n, 1);
        check_call(0, 2, "lbd", "a", "1");
}

static void test_repeated_keys(void **state)
{
        /* The reader passes every occurrence; what repetition means is up to the handler. */
        assert_int_equal(parse("[pool]\nbackends = a\nbackends = b\n[pool]\nbackends = c\n"), 0);
        assert_int_equal(rec.n, 3);
        check_call(0, 2, "pool", "backends", "a");
        check_call(1, 3, "pool", "backends", "b");
        check_call(2, 5, "pool", "backends", "c");
}

/* Checks that <text> fails with <error>, the log names test.conf:<line> and contains <what>, and the
 * handler saw exactly <calls> keys before the parse stopped. */
static void check_error(const char *text, size_t len, int error, unsigned line, const char *what,
                        size_t calls)
{
        char prefix[64], *log;

        memset(&rec, 0, sizeof(rec));
        print_message("expecting error at line %u: %s\n", line, what);
        assert_int_equal(parse_capture(text, len, &log), error);
        (void)snprintf(prefix, sizeof(prefix), "test.conf:%u: ", line);
        assert_non_null(strstr(log, prefix));
        assert_non_null(strstr(log, what));
        /* One message only. */
        assert_null(strchr(strchr(log, '\n') + 1, '\n'));
        assert_int_equal(rec.n, calls);
        free(log);
}

#define CHECK_ERROR(text, line, what, calls) check_error(text, sizeof(text) - 1, -EINVAL, line, what, calls)

static void test_syntax_errors(void **state)
{
        CHECK_ERROR("[lbd\n", 1, "unterminated section header", 0);
        CHECK_ERROR("[lbd]\na = 1\n[pool\nb = 2\n", 3, "unterminated section header", 1);
        CHECK_ERROR("[]\n", 1, "empty section name", 0);
        CHECK_ERROR("[  ]\n", 1, "empty section name", 0);
        CHECK_ERROR("[l b d]\n", 1, "invalid section name", 0);
        CHECK_ERROR("[lbd/x]\n", 1, "invalid section name", 0);
        CHECK_ERROR("[lbd] x\n", 1, "unexpected text after section header", 0);
        CHECK_ERROR("[lbd]]\n", 1, "unexpected text after section header", 0);
        CHECK_ERROR("[lbd]\na = 1\njust some words\nb = 2\n", 3, "expected 'key = value'", 1);
        CHECK_ERROR("[lbd]\n= value\n", 2, "empty key", 0);
        CHECK_ERROR("[lbd]\n  \t= value\n", 2, "empty key", 0);
        CHECK_ERROR("[lbd]\nmy key = value\n", 2, "invalid key name", 0);
        CHECK_ERROR("[lbd]\nkey! = value\n", 2, "invalid key name", 0);
        CHECK_ERROR("[lbd]\nk\xc3\xa9y = value\n", 2, "invalid key name", 0);
        CHECK_ERROR("[lbd]\n[key] = value\n", 2, "unexpected text after section header", 0);
}

static void test_bad_bytes(void **state)
{
        CHECK_ERROR("[lbd]\na = 1\nb = x\0y\nc = 3\n", 3, "NUL byte", 1);
        CHECK_ERROR("\0", 1, "NUL byte", 0);
        CHECK_ERROR("[lbd]\na = \x01\n", 2, "control character 0x01", 0);
        CHECK_ERROR("[lbd]\na = x\x7f\n", 2, "control character 0x7f", 0);
        CHECK_ERROR("[lbd]\na = x\ry\n", 2, "control character 0x0d", 0);
        CHECK_ERROR("[lbd]\r\r\na = 1\n", 1, "control character 0x0d", 0);
        CHECK_ERROR("[lbd]\na = \x1b[31m\n", 2, "control character 0x1b", 0);

        /* TAB is fine anywhere. */
        memset(&rec, 0, sizeof(rec));
        assert_int_equal(parse("[lbd]\n\ta\t=\tx\ty\t\n"), 0);
        check_call(0, 2, "lbd", "a", "x\ty");
}

static void test_long_lines(void **state)
{
        size_t size = INI_LINE_MAX * 3 + 64;
        _cleanup_free_ char *text = malloc(size), *value = malloc(INI_LINE_MAX);
        size_t vlen, n;

        assert_non_null(text);
        assert_non_null(value);

        /* The longest line allowed: INI_LINE_MAX - 1 bytes, not counting its CRLF. */
        vlen = INI_LINE_MAX - 1 - strlen("k = ");
        memset(value, 'v', vlen);
        value[vlen] = '\0';
        n = (size_t)snprintf(text, size, "[lbd]\r\nk = %s\r\nafter = 1\r\n", value);
        assert_int_equal(ini_parse_string(text, n, "test.conf", record_handler, &rec), 0);
        assert_int_equal(rec.n, 2);
        check_call(0, 2, "lbd", "k", value);
        check_call(1, 3, "lbd", "after", "1");

        /* One byte more. */
        value[vlen] = 'v';
        value[vlen + 1] = '\0';
        n = (size_t)snprintf(text, size, "[lbd]\nfirst = 1\nk = %s\nafter = 1\n", value);
        check_error(text, n, -EINVAL, 3, "line longer than", 1);

        /* A long comment line counts too, and so does a last line without a newline. */
        memset(text, ';', INI_LINE_MAX);
        check_error(text, INI_LINE_MAX, -EINVAL, 1, "line longer than", 0);
        memset(&rec, 0, sizeof(rec));
        assert_int_equal(ini_parse_string(text, INI_LINE_MAX - 1, "test.conf", record_handler, &rec), 0);
}

static void test_handler_stops(void **state)
{
        rec.stop_at = 2;
        rec.stop_with = -42;
        assert_int_equal(parse("[a]\nk1 = 1\nk2 = 2\nk3 = 3\n[[[\n"), -42);
        assert_int_equal(rec.n, 2);

        /* A positive value goes on. */
        memset(&rec, 0, sizeof(rec));
        rec.stop_at = 1;
        rec.stop_with = 7;
        assert_int_equal(parse("[a]\nk1 = 1\nk2 = 2\n"), 0);
        assert_int_equal(rec.n, 2);
}

static void test_string_too_big(void **state)
{
        char *log;
        struct capture cap;
        int r;

        capture_begin(&cap);
        r = ini_parse_string("", (size_t)INI_FILE_MAX + 1, "big.conf", record_handler, &rec);
        log = capture_end(&cap);
        assert_int_equal(r, -EFBIG);
        assert_non_null(strstr(log, "big.conf: larger than"));
        free(log);
}

/* Creates a private directory for the file tests; removed by dir_teardown(). */
static char test_dir[64];

static int dir_setup(void **state)
{
        memset(&rec, 0, sizeof(rec));
        (void)snprintf(test_dir, sizeof(test_dir), "/tmp/test-ini-XXXXXX");
        return mkdtemp(test_dir) ? 0 : -1;
}

static int dir_teardown(void **state)
{
        static const char *const names[] = {"ok.conf", "big.conf", "max.conf", "sub"};
        char path[128];

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                (void)snprintf(path, sizeof(path), "%s/%s", test_dir, names[i]);
                (void)unlink(path);
                (void)rmdir(path);
        }
        return rmdir(test_dir);
}

static void write_file(const char *path, const char *data, size_t len)
{
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
}

static void test_file(void **state)
{
        static const char text[] = "[lbd]\nlisten = 127.0.0.1:8080\n[pool]\nbackends = 127.0.0.2:80\n";
        char path[128], *log;
        struct capture cap;
        int r;

        (void)snprintf(path, sizeof(path), "%s/ok.conf", test_dir);
        write_file(path, text, sizeof(text) - 1);
        assert_int_equal(ini_parse_file(path, record_handler, &rec), 0);
        assert_int_equal(rec.n, 2);
        check_call(0, 2, "lbd", "listen", "127.0.0.1:8080");
        check_call(1, 4, "pool", "backends", "127.0.0.2:80");
        assert_string_equal(rec.calls[0].file, path);

        /* Missing file: the errno, logged with the path. */
        (void)snprintf(path, sizeof(path), "%s/missing.conf", test_dir);
        capture_begin(&cap);
        r = ini_parse_file(path, record_handler, &rec);
        log = capture_end(&cap);
        assert_int_equal(r, -ENOENT);
        assert_non_null(strstr(log, path));
        free(log);

        /* A directory. */
        (void)snprintf(path, sizeof(path), "%s/sub", test_dir);
        assert_int_equal(mkdir(path, 0700), 0);
        capture_begin(&cap);
        r = ini_parse_file(path, record_handler, &rec);
        free(capture_end(&cap));
        assert_int_equal(r, -EISDIR);
}

static void test_file_size(void **state)
{
        _cleanup_free_ char *data = malloc((size_t)INI_FILE_MAX + 1);
        char path[128], *log;
        struct capture cap;
        int r;

        assert_non_null(data);
        /* Exactly INI_FILE_MAX bytes of comment lines, then a key in the last line. */
        memset(data, '\n', (size_t)INI_FILE_MAX + 1);
        for (size_t i = 0; i + 100 < INI_FILE_MAX; i += 100)
                memset(data + i, '#', 99);
        memcpy(data + INI_FILE_MAX - 10, "[a]\nk = v\n", 10);
        (void)snprintf(path, sizeof(path), "%s/max.conf", test_dir);
        write_file(path, data, INI_FILE_MAX);
        assert_int_equal(ini_parse_file(path, record_handler, &rec), 0);
        assert_int_equal(rec.n, 1);
        assert_string_equal(rec.calls[0].key, "k");

        /* One byte more. */
        (void)snprintf(path, sizeof(path), "%s/big.conf", test_dir);
        write_file(path, data, (size_t)INI_FILE_MAX + 1);
        capture_begin(&cap);
        r = ini_parse_file(path, record_handler, &rec);
        log = capture_end(&cap);
        assert_int_equal(r, -EFBIG);
        assert_non_null(strstr(log, "larger than"));
        free(log);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup(test_basic, reset),
                cmocka_unit_test_setup(test_empty, reset),
                cmocka_unit_test_setup(test_crlf, reset),
                cmocka_unit_test_setup(test_bom, reset),
                cmocka_unit_test_setup(test_repeated_keys, reset),
                cmocka_unit_test_setup(test_syntax_errors, reset),
                cmocka_unit_test_setup(test_bad_bytes, reset),
                cmocka_unit_test_setup(test_long_lines, reset),
                cmocka_unit_test_setup(test_handler_stops, reset),
                cmocka_unit_test_setup(test_string_too_big, reset),
                cmocka_unit_test_setup_teardown(test_file, dir_setup, dir_teardown),
                cmocka_unit_test_setup_teardown(test_file_size, dir_setup, dir_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
