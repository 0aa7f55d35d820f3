/* Unit tests for common/conf.c: defaults from the table, the generic parsers' bounds and messages, the
 * first-occurrence flag per source, unknown sections reported once, hidden values, the file's path, --set
 * splitting, log level names and conf_invalid(). The daemons' own keys are tested in test-config.c and
 * test-webd-config.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/conf.h"
#include "common/macro.h"
#include "tests/unit/fixture.h"

struct sample {
        uint64_t count;
        uint64_t bytes;
        uint64_t wait_usec;
        uint64_t ttl_usec;
        uint64_t n_items; /* how many values "items" holds from the current source */
        char token[32];
        char path[64];
};

/* Counts the values of a list key: the first occurrence in a source replaces, later ones append. */
static int sample_parse_items(const struct conf_key *k, void *obj, const char *value, bool first,
                              char *reason, size_t size)
{
        struct sample *s = obj;

        if (strcmp(value, "bad") == 0)
                return conf_reason(reason, size, "not an item");
        s->n_items = (first ? 0 : s->n_items) + 1;
        return 0;
}

static int sample_parse_token(const struct conf_key *k, void *obj, const char *value, bool first,
                              char *reason, size_t size)
{
        struct sample *s = obj;

        if (strlen(value) >= sizeof(s->token))
                return conf_reason(reason, size, "too long");
        memcpy(s->token, value, strlen(value) + 1);
        return 0;
}

#define U64(field) CONF_FIELD(struct sample, field, uint64_t)

/* clang-format off */
static const struct conf_key sample_keys[] = {
        { "main", "count", "3", conf_parse_number, U64(count), 1, 10, false },
        { "main", "bytes", "16k", conf_parse_size, U64(bytes), 1024, 1024 * 1024, false },
        { "main", "wait", "1s", conf_parse_duration, U64(wait_usec), 1, 0, false },
        { "main", "ttl", "1h", conf_parse_duration, U64(ttl_usec), USEC_PER_SEC, USEC_PER_SEC, false },
        { "main", "items", "x", sample_parse_items, 0, 0, 0, false },
        { "auth", "token", "", sample_parse_token, 0, 0, 0, true },
};
/* clang-format on */

static const struct conf_table sample_table = {
        .keys = sample_keys,
        .n_keys = ELEMENTSOF(sample_keys),
        .outside_reason = "key outside any section, put it under [main]",
        .path_offset = offsetof(struct sample, path),
        .path_size = sizeof(((struct sample *)0)->path),
};

static char *write_file(const char *text)
{
        return fixture_write_file("/tmp/test-conf-XXXXXX", text);
}

static size_t count(const char *haystack, const char *needle)
{
        size_t n = 0;

        for (const char *p = strstr(haystack, needle); p; p = strstr(p + 1, needle))
                n++;
        return n;
}

static void sample_init(struct sample *s)
{
        *s = (struct sample){0};
        conf_init(&sample_table, s);
}

static void test_defaults(void **state)
{
        struct sample s;

        sample_init(&s);
        assert_int_equal(s.count, 3);
        assert_int_equal(s.bytes, 16 * 1024);
        assert_int_equal(s.wait_usec, USEC_PER_SEC);
        assert_int_equal(s.ttl_usec, 3600 * USEC_PER_SEC);
        assert_int_equal(s.n_items, 1);
        assert_string_equal(s.token, "");
        assert_string_equal(s.path, "");
}

/* Sets <key> to <value> and checks the result and, on failure, the message. */
static void check_set(const char *section, const char *key, const char *value, const char *expect)
{
        struct capture cap;
        struct sample s;
        char *log;
        int r;

        sample_init(&s);
        capture_begin(&cap);
        r = conf_set(&sample_table, &s, section, key, value, "--opt");
        log = capture_end(&cap);
        if (expect) {
                assert_int_equal(r, -EINVAL);
                assert_non_null(strstr(log, expect));
        } else {
                assert_int_equal(r, 0);
                assert_string_equal(log, "");
        }
        free(log);
}

static void test_generic_parsers(void **state)
{
        check_set("main", "count", "10", NULL);
        check_set("main", "count", "11",
                  "--opt: [main] key 'count': must be an integer between 1 and 10 "
                  "(value '11')");
        check_set("main", "bytes", "1M", NULL);
        check_set("main", "bytes", "1023", "must be between 1024 and 1048576 bytes");
        check_set("main", "bytes", "lots", "not a size");
        check_set("main", "bytes", "99999999999999999999", "size too large");
        check_set("main", "wait", "0", "must be greater than 0");
        check_set("main", "wait", "soon", "not a duration");
        check_set("main", "wait", "31d", "duration out of range");
        check_set("main", "ttl", "500ms", "must be at least 1000 ms");
        check_set("main", "ttl", "1.5s", "must be a whole number of seconds");
        check_set("main", "ttl", "2m", NULL);
}

static void test_unknown_and_hidden(void **state)
{
        check_set("main", "nope", "1", "--opt: [main] key 'nope': unknown key (value '1')");
        check_set("other", "x", "1", "--opt: [other] key 'x': unknown section (value '1')");
        check_set("", "count", "1",
                  "--opt: [] key 'count': key outside any section, put it under [main] "
                  "(value '1')");
        /* The row says so, or the name speaks of a secret. */
        check_set("auth", "token", "0123456789012345678901234567890123456789",
                  "[auth] key 'token': too long (value hidden)");
        check_set("main", "db_Password", "hunter2", "[main] key 'db_Password': unknown key (value hidden)");
}

static void test_set_origin(void **state)
{
        struct capture cap;
        struct sample s;
        char *log;

        sample_init(&s);
        capture_begin(&cap);
        assert_int_equal(conf_set(&sample_table, &s, "main", "count", "x", NULL), -EINVAL);
        assert_int_equal(conf_set(&sample_table, &s, NULL, NULL, NULL, NULL), -EINVAL);
        log = capture_end(&cap);
        assert_non_null(strstr(log, "command line: [main] key 'count': "));
        assert_non_null(strstr(log, "command line: [] key '': key outside any section"));
        assert_int_equal(s.count, 3);
        free(log);

        /* Each call is a source of its own: the list is replaced every time. */
        assert_int_equal(conf_set(&sample_table, &s, "main", "items", "a", NULL), 0);
        assert_int_equal(conf_set(&sample_table, &s, "main", "items", "b", NULL), 0);
        assert_int_equal(s.n_items, 1);
}

static void test_load_file(void **state)
{
        char *path = write_file("[main]\ncount = 5\nitems = a\nitems = b\nitems = bad\n"
                                "[nowhere]\na = 1\nb = 2\n[main]\nwait = 0\n[nowhere]\nc = 3\n"
                                "[auth]\ntoken = s3cr3t\n");
        struct capture cap;
        struct sample s;
        char *log, where[128];

        sample_init(&s);
        capture_begin(&cap);
        assert_int_equal(conf_load_file(&sample_table, &s, path), -EINVAL);
        log = capture_end(&cap);
        /* Every bad line is reported; an unknown header once per run of its keys. */
        (void)snprintf(where, sizeof(where), "%s:5: [main] key 'items': not an item (value 'bad')", path);
        assert_non_null(strstr(log, where));
        (void)snprintf(where, sizeof(where), "%s:7: [nowhere] key 'a': unknown section", path);
        assert_non_null(strstr(log, where));
        (void)snprintf(where, sizeof(where), "%s:10: [main] key 'wait': must be greater than 0", path);
        assert_non_null(strstr(log, where));
        (void)snprintf(where, sizeof(where), "%s:12: [nowhere] key 'c': unknown section", path);
        assert_non_null(strstr(log, where));
        assert_int_equal(count(log, "unknown section"), 2);
        assert_int_equal(count(log, "\n"), 4);
        /* The good keys are applied; the list was replaced by the file's first occurrence. */
        assert_int_equal(s.count, 5);
        assert_int_equal(s.n_items, 2);
        assert_string_equal(s.token, "s3cr3t");
        assert_string_equal(s.path, path);
        free(log);
        unlink(path);
        free(path);
}

static void test_load_errors(void **state)
{
        char long_path[128];
        struct capture cap;
        struct sample s;
        char *log;

        memset(long_path, 'a', sizeof(long_path) - 1);
        long_path[0] = '/';
        long_path[sizeof(long_path) - 1] = '\0';
        sample_init(&s);
        capture_begin(&cap);
        assert_int_equal(conf_load_file(&sample_table, &s, long_path), -ENAMETOOLONG);
        assert_int_equal(conf_load_file(&sample_table, &s, "/nonexistent/test.conf"), -ENOENT);
        log = capture_end(&cap);
        assert_non_null(strstr(log, "config path longer than 63 bytes"));
        assert_non_null(strstr(log, "/nonexistent/test.conf"));
        free(log);
}

static void test_assignment(void **state)
{
        struct conf_assignment a = {0};
        char long_key[200];

        assert_int_equal(conf_parse_assignment("health.interval=500ms", &a), 0);
        assert_string_equal(a.section, "health");
        assert_string_equal(a.key, "interval");
        assert_string_equal(a.value, "500ms");
        assert_int_equal(conf_parse_assignment("a.b=c=d.e", &a), 0);
        assert_string_equal(a.key, "b");
        assert_string_equal(a.value, "c=d.e");
        assert_int_equal(conf_parse_assignment(".k=", &a), 0);
        assert_string_equal(a.section, "");
        assert_string_equal(a.value, "");

        assert_int_equal(conf_parse_assignment("nodot=1", &a), -EINVAL);
        assert_int_equal(conf_parse_assignment("a.b", &a), -EINVAL);
        assert_int_equal(conf_parse_assignment("a=b.c", &a), -EINVAL);
        (void)snprintf(long_key, sizeof(long_key), "s.%0150d=1", 0);
        assert_int_equal(conf_parse_assignment(long_key, &a), -EINVAL);
}

static void test_log_levels(void **state)
{
        int level = -1;

        assert_int_equal(conf_parse_log_level("warning", &level), 0);
        assert_int_equal(level, LOG_WARNING);
        assert_int_equal(conf_parse_log_level("error", &level), 0);
        assert_int_equal(level, LOG_ERR);
        assert_int_equal(conf_parse_log_level("chatty", &level), -EINVAL);
        assert_int_equal(level, LOG_ERR);
        assert_string_equal(conf_log_level_name(LOG_DEBUG), "debug");
        assert_null(conf_log_level_name(42));
}

static void test_invalid(void **state)
{
        struct capture cap;
        char *log;

        capture_begin(&cap);
        assert_int_equal(conf_invalid("/etc/x.conf", "pool", "port", "must be %d or more", 1), -EINVAL);
        assert_int_equal(conf_invalid("", "lbd", "listen", "needed"), -EINVAL);
        log = capture_end(&cap);
        assert_non_null(strstr(log, "/etc/x.conf: [pool] key 'port': must be 1 or more\n"));
        assert_non_null(strstr(log, "configuration: [lbd] key 'listen': needed\n"));
        free(log);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_generic_parsers),
                cmocka_unit_test(test_unknown_and_hidden),
                cmocka_unit_test(test_set_origin),
                cmocka_unit_test(test_load_file),
                cmocka_unit_test(test_load_errors),
                cmocka_unit_test(test_assignment),
                cmocka_unit_test(test_log_levels),
                cmocka_unit_test(test_invalid),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
