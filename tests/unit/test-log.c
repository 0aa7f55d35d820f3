/* Unit tests for common/log.c: the line format journald reads, and batching (lines gathered during a turn of
 * the loop and written together, in order, with urgent lines never held back). stderr is captured
 * (fixture.h); the count of bytes captured tells what has been written so far. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "tests/unit/fixture.h"

static unsigned kicks;

static void count_kick(void *userdata)
{
        unsigned *n = userdata;

        (*n)++;
}

/* stderr captured, and batching on with the kick counted. */
static void batch_begin(struct capture *s)
{
        kicks = 0;
        capture_begin(s);
        log_batch_start(count_kick, &kicks);
}

/* Batching off (writing what is gathered), stderr back; checks the whole output was <expected>. */
static void batch_end_expect(struct capture *s, const char *expected)
{
        char *out;

        log_batch_stop();
        out = capture_end(s);
        assert_string_equal(out, expected);
        free(out);
}

static void test_line_format(void **state)
{
        struct capture s;
        char *out;

        (void)state;
        capture_begin(&s);
        log_warning("disk %s is %d%% full", "sda", 93);
        log_info("two\nlines\x7f");
        out = capture_end(&s);
        /* Not a terminal: the syslog priority prefix, and control characters made spaces. */
        assert_string_equal(out, "<4>disk sda is 93% full\n<6>two lines \n");
        free(out);
}

static void test_errno_forms(void **state)
{
        struct capture s;
        char *out;
        int r;

        (void)state;
        capture_begin(&s);
        r = log_error_errno(-ENOENT, "Failed to open %s: %m", "x.conf");
        out = capture_end(&s);
        assert_int_equal(r, -ENOENT);
        assert_string_equal(out, "<3>Failed to open x.conf: No such file or directory\n");
        free(out);
}

static void test_batch_gathers_until_flush(void **state)
{
        struct capture s;

        (void)state;
        batch_begin(&s);
        log_info("one");
        log_info("two");
        log_debug("three is below the level and never printed");
        assert_int_equal(capture_size(&s), 0);
        assert_int_equal(kicks, 1); /* once, for the first line */
        log_flush();
        assert_int_equal(capture_size(&s), strlen("<6>one\n<6>two\n"));
        log_info("four");
        assert_int_equal(kicks, 2);
        batch_end_expect(&s, "<6>one\n<6>two\n<6>four\n");
}

static void test_batch_urgent_lines_keep_order(void **state)
{
        struct capture s;

        (void)state;
        batch_begin(&s);
        log_info("request 1");
        log_notice("backend down");
        /* The notice went out at once, after what was gathered before it. */
        assert_int_equal(capture_size(&s), strlen("<6>request 1\n<5>backend down\n"));
        log_info("request 2");
        log_error("failed");
        batch_end_expect(&s, "<6>request 1\n<5>backend down\n<6>request 2\n<3>failed\n");
}

static void test_batch_full_buffer_is_written(void **state)
{
        struct capture s;
        char line[1000];
        char *out;
        size_t total = 0, lines = 200;

        (void)state;
        memset(line, 'x', sizeof(line) - 1);
        line[sizeof(line) - 1] = '\0';
        batch_begin(&s);
        for (size_t i = 0; i < lines; i++) {
                log_info("%s", line);
                total += 3 + strlen(line) + 1;
        }
        /* 200 KB of lines do not fit the buffer: most were written without a flush, none lost. */
        assert_true(capture_size(&s) > 0);
        assert_true(capture_size(&s) < total);
        log_batch_stop();
        assert_int_equal(capture_size(&s), total);
        out = capture_end(&s);
        assert_true(kicks > 1);
        for (size_t i = 0; i < lines; i++)
                assert_memory_equal(out + i * (total / lines), "<6>x", 4);
        free(out);
}

static void *other_thread(void *arg)
{
        (void)arg;
        log_info("from a worker");
        return NULL;
}

static void test_batch_is_per_thread(void **state)
{
        struct capture s;
        pthread_t t;

        (void)state;
        batch_begin(&s);
        log_info("gathered");
        assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        /* The worker does not batch: its line is out, the loop thread's still gathered. */
        assert_int_equal(capture_size(&s), strlen("<6>from a worker\n"));
        batch_end_expect(&s, "<6>from a worker\n<6>gathered\n");
}

static void test_flush_without_batching_does_nothing(void **state)
{
        struct capture s;
        char *out;

        (void)state;
        capture_begin(&s);
        log_flush();
        log_info("direct");
        assert_int_equal(capture_size(&s), strlen("<6>direct\n"));
        out = capture_end(&s);
        assert_string_equal(out, "<6>direct\n");
        free(out);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_line_format),
                cmocka_unit_test(test_errno_forms),
                cmocka_unit_test(test_batch_gathers_until_flush),
                cmocka_unit_test(test_batch_urgent_lines_keep_order),
                cmocka_unit_test(test_batch_full_buffer_is_written),
                cmocka_unit_test(test_batch_is_per_thread),
                cmocka_unit_test(test_flush_without_batching_does_nothing),
        };

        log_set_max_level(LOG_INFO);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
