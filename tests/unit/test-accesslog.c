/* Unit tests for lbd/accesslog.c: the exact line format, escaping and capping of values from the network,
 * a file target, the "<6>" prefix and the flush timer with stderr redirected into a pipe, and dropping
 * (whole lines only, counted) when that pipe is full. Every wait is bounded: the event loop runs for a
 * fixed short time, and an alarm ends the program if a write were ever to block. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
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

#include "common/macro.h"
#include "common/netaddr.h"
#include "lbd/accesslog.h"

#define READ_MAX (1024u * 1024u)

/* Reads everything in <fd> (non-blocking) and appends it to <buf> (READ_MAX bytes, *len used). */
static void drain_fd(int fd, char *buf, size_t *len)
{
        for (;;) {
                ssize_t k;

                assert_true(*len < READ_MAX);
                k = read(fd, buf + *len, READ_MAX - 1 - *len);
                if (k <= 0)
                        break;
                *len += (size_t)k;
        }
        buf[*len] = '\0';
}

/* Runs <base> for <msec> milliseconds. */
static void run_for(struct event_base *base, unsigned msec)
{
        struct timeval tv = {.tv_sec = msec / 1000, .tv_usec = (suseconds_t)(msec % 1000) * 1000};

        assert_int_equal(event_base_loopexit(base, &tv), 0);
        assert_true(event_base_dispatch(base) >= 0);
}

/* Opens a file target in a fresh temporary directory. */
static char *temp_log_path(void)
{
        char dir[] = "/tmp/test-accesslog-XXXXXX";
        char *path = malloc(sizeof(dir) + 16);

        assert_non_null(path);
        assert_non_null(mkdtemp(dir));
        assert_true(snprintf(path, sizeof(dir) + 16, "%s/access.log", dir) > 0);
        return path;
}

static void remove_temp_log(char *path)
{
        char *slash;

        (void)unlink(path);
        slash = strrchr(path, '/');
        *slash = '\0';
        (void)rmdir(path);
        free(path);
}

static char *read_file(const char *path)
{
        char *buf = malloc(READ_MAX);
        size_t len = 0;
        int fd;

        assert_non_null(buf);
        fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        assert_true(fd >= 0);
        drain_fd(fd, buf, &len);
        close(fd);
        return buf;
}

/* Writes <e> through a file target and returns the file's content. */
static char *format_one(const struct accesslog_entry *e)
{
        struct event_base *base = event_base_new();
        struct accesslog *a = NULL;
        char *path = temp_log_path(), *content;

        assert_non_null(base);
        assert_int_equal(accesslog_open(base, path, &a), 0);
        assert_non_null(a);
        accesslog_write(a, e);
        a = accesslog_free(a);
        content = read_file(path);
        remove_temp_log(path);
        event_base_free(base);
        return content;
}

static struct netaddr client_addr(const char *s)
{
        struct netaddr a;

        assert_int_equal(netaddr_parse(s, 0, false, &a), 0);
        return a;
}

static void test_format(void **state)
{
        struct netaddr client = client_addr("127.0.0.1:40112");
        struct accesslog_entry e = {
                .client = &client,
                .method = "GET",
                .path = "/x?y=1",
                .path_len = 2, /* not NUL-terminated: only "/x" */
                .status = 200,
                .bytes = 123,
                .backend = "127.0.0.1:8081",
                .duration_usec = 412,
                .request_id = "ab12cd",
        };
        char *s;

        s = format_one(&e);
        assert_string_equal(s, "access client=127.0.0.1:40112 method=GET path=/x status=200 bytes=123 "
                               "backend=127.0.0.1:8081 duration_ms=0.412 request_id=ab12cd\n");
        free(s);

        client = client_addr("[::1]:8000");
        e.backend = NULL;
        e.request_id = NULL;
        e.status = 503;
        e.bytes = 0;
        e.duration_usec = 1234567;
        e.method = "POST";
        e.path = "/";
        e.path_len = 1;
        s = format_one(&e);
        assert_string_equal(s, "access client=[::1]:8000 method=POST path=/ status=503 bytes=0 backend=- "
                               "duration_ms=1234.567 request_id=-\n");
        free(s);
}

static void test_escape(void **state)
{
        static const char path[] = "/a b\n\r\"\x7f\xff%41\x01=";
        struct netaddr client = client_addr("127.0.0.1:1");
        struct accesslog_entry e = {
                .client = &client,
                .method = "GE T",
                .path = path,
                .path_len = sizeof(path) - 1,
                .status = 400,
                .duration_usec = 5,
                .request_id = "x\ny",
        };
        char *s;

        s = format_one(&e);
        assert_string_equal(s, "access client=127.0.0.1:1 method=GE%20T path=/a%20b%0A%0D\"%7F%FF%41%01= "
                               "status=400 bytes=0 backend=- duration_ms=0.005 request_id=x%0Ay\n");
        free(s);
}

static void test_cap(void **state)
{
        struct netaddr client = client_addr("127.0.0.1:1");
        struct accesslog_entry e = {.client = &client, .method = "GET", .status = 200};
        char *long_path = malloc(5000), *s, *p, *end;

        assert_non_null(long_path);

        /* Plain bytes: cut at 1024. */
        long_path[0] = '/';
        memset(long_path + 1, 'a', 4999);
        e.path = long_path;
        e.path_len = 5000;
        s = format_one(&e);
        p = strstr(s, " path=");
        assert_non_null(p);
        p += strlen(" path=");
        end = strchr(p, ' ');
        assert_non_null(end);
        assert_int_equal(end - p, 1024);
        assert_non_null(strstr(end, " status=200 "));
        assert_int_equal(strchr(s, '\n') - s, (ptrdiff_t)strlen(s) - 1);
        free(s);

        /* Escaped bytes: never half an escape, so 341 whole "%20" (1023 bytes). */
        memset(long_path + 1, ' ', 4999);
        s = format_one(&e);
        p = strstr(s, " path=") + strlen(" path=");
        end = strchr(p, ' ');
        assert_non_null(end);
        assert_int_equal(end - p, 1 + 341 * 3);
        free(s);

        /* Empty and missing values keep the field. */
        e.path_len = 0;
        e.method = NULL;
        e.client = NULL;
        s = format_one(&e);
        assert_string_equal(s,
                            "access client=- method=- path=- status=200 bytes=0 backend=- duration_ms=0.000 "
                            "request_id=-\n");
        free(s);
        free(long_path);
}

static void test_off_and_errors(void **state)
{
        struct event_base *base = event_base_new();
        struct accesslog *a = (struct accesslog *)&a;

        assert_non_null(base);
        assert_int_equal(accesslog_open(base, "off", &a), 0);
        assert_null(a);
        accesslog_write(NULL, &(struct accesslog_entry){.method = "GET"});
        assert_int_equal(accesslog_dropped(NULL), 0);
        assert_null(accesslog_free(NULL));

        a = (struct accesslog *)&a;
        assert_int_equal(accesslog_open(base, "/nonexistent-dir-for-test/access.log", &a), -ENOENT);
        assert_ptr_equal(a, (struct accesslog *)&a);
        event_base_free(base);
}

/* Lines appended to an existing file keep what was there (O_APPEND), and several lines arrive in order. */
static void test_file_append(void **state)
{
        struct event_base *base = event_base_new();
        struct netaddr client = client_addr("127.0.0.1:2");
        struct accesslog *a = NULL;
        char *path = temp_log_path(), *s;
        int fd;

        assert_non_null(base);
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "old\n", 4), 4);
        close(fd);

        assert_int_equal(accesslog_open(base, path, &a), 0);
        for (unsigned i = 0; i < 3; i++)
                accesslog_write(a, &(struct accesslog_entry){.client = &client,
                                                             .method = "GET",
                                                             .path = "/",
                                                             .path_len = 1,
                                                             .status = 200 + i});
        /* The 100 ms timer writes them without a close. */
        run_for(base, 300);
        s = read_file(path);
        assert_string_equal(s, "old\n"
                               "access client=127.0.0.1:2 method=GET path=/ status=200 bytes=0 backend=- "
                               "duration_ms=0.000 request_id=-\n"
                               "access client=127.0.0.1:2 method=GET path=/ status=201 bytes=0 backend=- "
                               "duration_ms=0.000 request_id=-\n"
                               "access client=127.0.0.1:2 method=GET path=/ status=202 bytes=0 backend=- "
                               "duration_ms=0.000 request_id=-\n");
        free(s);
        a = accesslog_free(a);
        remove_temp_log(path);
        event_base_free(base);
}

/* What a forwarding log (a worker loop's) hands over: blocks of whole lines, in order. */
struct forwarded {
        char buf[64 * 1024];
        size_t len;
        unsigned blocks;
};

static void forward_cb(void *userdata, char *buf, size_t len)
{
        struct forwarded *f = userdata;

        assert_true(len > 0 && buf[len - 1] == '\n');
        assert_true(f->len + len < sizeof(f->buf));
        memcpy(f->buf + f->len, buf, len);
        f->len += len;
        f->buf[f->len] = '\0';
        f->blocks++;
        free(buf);
}

/* A worker loop's log forwards whole lines (by its timer, and the rest when freed) formatted like the log
 * it copies; the main loop's log writes a forwarded block as its own lines, to a file. */
static void test_forward(void **state)
{
        struct event_base *base = event_base_new();
        struct netaddr client = client_addr("127.0.0.1:3");
        struct accesslog *main_log = NULL, *loop_log = NULL;
        struct forwarded f = {.len = 0};
        char *path = temp_log_path(), *s;
        const char *line = "access client=127.0.0.1:3 method=GET path=/ status=200 bytes=0 backend=- "
                           "duration_ms=0.000 request_id=-\n";

        assert_non_null(base);
        assert_int_equal(accesslog_open(base, path, &main_log), 0);
        assert_int_equal(accesslog_open_forward(base, NULL, forward_cb, &f, &loop_log), 0);
        assert_null(loop_log); /* the main log is off: so is the loop's */
        assert_int_equal(accesslog_open_forward(base, main_log, forward_cb, &f, &loop_log), 0);
        assert_non_null(loop_log);

        for (unsigned i = 0; i < 2; i++)
                accesslog_write(loop_log, &(struct accesslog_entry){.client = &client, .method = "GET",
                                                                    .path = "/", .path_len = 1, .status = 200});
        assert_int_equal(f.blocks, 0); /* gathered, not forwarded line by line */
        run_for(base, 300);
        assert_int_equal(f.blocks, 1);
        accesslog_write(loop_log, &(struct accesslog_entry){.client = &client, .method = "GET", .path = "/",
                                                            .path_len = 1, .status = 200});
        loop_log = accesslog_free(loop_log);
        assert_int_equal(f.blocks, 2);
        assert_int_equal(f.len, 3 * strlen(line));
        for (unsigned i = 0; i < 3; i++)
                assert_memory_equal(f.buf + i * strlen(line), line, strlen(line));

        accesslog_append(main_log, f.buf, f.len);
        main_log = accesslog_free(main_log);
        s = read_file(path);
        assert_string_equal(s, f.buf);
        free(s);
        remove_temp_log(path);
        event_base_free(base);
}

/* A named pipe as the file target: opening never waits for a reader, and lines carry no priority. */
static void test_fifo_target(void **state)
{
        struct event_base *base = event_base_new();
        struct accesslog *a = NULL;
        char *path = temp_log_path(), *buf = malloc(READ_MAX);
        size_t len = 0;
        int rfd;

        assert_non_null(base);
        assert_non_null(buf);
        assert_int_equal(mkfifo(path, 0600), 0);
        assert_int_equal(accesslog_open(base, path, &a), -ENXIO);

        rfd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        assert_true(rfd >= 0);
        assert_int_equal(accesslog_open(base, path, &a), 0);
        accesslog_write(
                a, &(struct accesslog_entry){.method = "GET", .path = "/f", .path_len = 2, .status = 200});
        run_for(base, 300);
        drain_fd(rfd, buf, &len);
        assert_string_equal(
                buf, "access client=- method=GET path=/f status=200 bytes=0 backend=- duration_ms=0.000 "
                     "request_id=-\n");
        a = accesslog_free(a);
        close(rfd);
        remove_temp_log(path);
        free(buf);
        event_base_free(base);
}

/* Points stderr at a new pipe; returns the saved stderr and sets *ret_read to the read end. */
static int stderr_to_pipe(int *ret_read)
{
        int p[2], saved;

        assert_int_equal(pipe(p), 0);
        assert_int_equal(fcntl(p[0], F_SETFD, FD_CLOEXEC), 0);
        saved = dup(STDERR_FILENO);
        assert_true(saved >= 0);
        assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
        close(p[1]);
        assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
        *ret_read = p[0];
        return saved;
}

static void stderr_restore(int saved)
{
        assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
        close(saved);
}

static void test_stderr_pipe(void **state)
{
        struct event_base *base = event_base_new();
        struct netaddr client = client_addr("127.0.0.1:3");
        struct accesslog *a = NULL;
        char *buf = malloc(READ_MAX);
        size_t len = 0;
        int rfd, saved;

        assert_non_null(base);
        assert_non_null(buf);
        saved = stderr_to_pipe(&rfd);

        assert_int_equal(accesslog_open(base, "stderr", &a), 0);
        accesslog_write(a, &(struct accesslog_entry){.client = &client,
                                                     .method = "HEAD",
                                                     .path = "/h",
                                                     .path_len = 2,
                                                     .status = 204,
                                                     .backend = "127.0.0.1:9"});
        /* Nothing yet: small amounts wait for the timer. */
        drain_fd(rfd, buf, &len);
        assert_int_equal(len, 0);
        run_for(base, 300);
        drain_fd(rfd, buf, &len);
        assert_string_equal(buf, "<6>access client=127.0.0.1:3 method=HEAD path=/h status=204 bytes=0 "
                                 "backend=127.0.0.1:9 duration_ms=0.000 request_id=-\n");

        /* A close flushes what is queued. */
        len = 0;
        accesslog_write(
                a, &(struct accesslog_entry){
                           .client = &client, .method = "GET", .path = "/z", .path_len = 2, .status = 200});
        a = accesslog_free(a);
        drain_fd(rfd, buf, &len);
        assert_string_equal(buf, "<6>access client=127.0.0.1:3 method=GET path=/z status=200 bytes=0 "
                                 "backend=- duration_ms=0.000 request_id=-\n");

        stderr_restore(saved);
        close(rfd);
        free(buf);
        event_base_free(base);
}

/* Fills the pipe behind stderr, writes far more than the buffer holds, and checks that nothing blocked,
 * that whole lines were dropped and counted, and that once the reader catches up every line that was
 * kept arrives whole, followed by the report of the drops. */
static void test_full_pipe_drops(void **state)
{
        enum { N_LINES = 4000 };
        struct event_base *base = event_base_new();
        struct netaddr client = client_addr("127.0.0.1:4");
        struct accesslog *a = NULL;
        char *buf = malloc(READ_MAX), *filler = malloc(65536), path[200], report[100];
        size_t len = 0, filled = 0;
        unsigned got = 0;
        uint64_t dropped;
        int rfd, saved, flags;

        assert_non_null(base);
        assert_non_null(buf);
        assert_non_null(filler);
        buf[0] = '\0';
        memset(path, 'p', sizeof(path));
        path[0] = '/';
        saved = stderr_to_pipe(&rfd);

        /* Fill the pipe to the brim, then hand it back blocking, as a shared stderr would be. */
        flags = fcntl(STDERR_FILENO, F_GETFL);
        assert_int_equal(fcntl(STDERR_FILENO, F_SETFL, flags | O_NONBLOCK), 0);
        memset(filler, 'f', 65536);
        for (;;) {
                ssize_t k = write(STDERR_FILENO, filler, 65536);

                if (k < 0) {
                        assert_int_equal(errno, EAGAIN);
                        break;
                }
                filled += (size_t)k;
        }
        for (;;) { /* single bytes fill the last partly used page too */
                if (write(STDERR_FILENO, "f", 1) < 0)
                        break;
                filled++;
        }
        assert_int_equal(fcntl(STDERR_FILENO, F_SETFL, flags), 0);

        assert_int_equal(accesslog_open(base, "stderr", &a), 0);
        for (unsigned i = 0; i < N_LINES; i++)
                accesslog_write(a, &(struct accesslog_entry){.client = &client,
                                                             .method = "GET",
                                                             .path = path,
                                                             .path_len = sizeof(path),
                                                             .status = 200,
                                                             .bytes = i});
        dropped = accesslog_dropped(a);
        print_message("dropped %llu of %u lines\n", (unsigned long long)dropped, (unsigned)N_LINES);
        assert_true(dropped > 0);
        assert_true(dropped < N_LINES);

        /* Read everything, letting the timer flush, until the report of the drops shows up. */
        (void)snprintf(report, sizeof(report), "<4>Access log could not keep up: dropped %llu lines\n",
                       (unsigned long long)dropped);
        for (unsigned round = 0; round < 100 && !strstr(buf, report); round++) {
                drain_fd(rfd, buf, &len);
                run_for(base, 120);
                drain_fd(rfd, buf, &len);
        }
        assert_non_null(strstr(buf, report));
        assert_int_equal(accesslog_dropped(a), dropped);

        /* The filler first, then whole access lines in order, then the report. */
        assert_true(len > filled);
        for (size_t i = 0; i < filled; i++)
                assert_int_equal(buf[i], 'f');
        for (char *line = buf + filled, *nl; *line != '\0'; line = nl + 1) {
                char expect_start[] = "<6>access client=127.0.0.1:4 method=GET path=/ppp";
                unsigned long long bytes;
                char *b;

                nl = strchr(line, '\n');
                assert_non_null(nl);
                if (strncmp(line, "<4>", 3) == 0) {
                        assert_memory_equal(line, report, strlen(report));
                        assert_string_equal(nl + 1, "");
                        break;
                }
                assert_memory_equal(line, expect_start, strlen(expect_start));
                b = strstr(line, " bytes=");
                assert_true(b != NULL && b < nl);
                bytes = strtoull(b + 7, NULL, 10);
                assert_int_equal(bytes, got); /* kept lines are the first ones, none missing in between */
                assert_non_null(strstr(line, "request_id=-\n"));
                got++;
        }
        assert_int_equal(got + dropped, N_LINES);

        a = accesslog_free(a);
        stderr_restore(saved);
        close(rfd);
        free(filler);
        free(buf);
        event_base_free(base);
}

/* A reader that went away: the lines are discarded and counted, and nothing raises SIGPIPE. */
static void test_reader_gone(void **state)
{
        struct event_base *base = event_base_new();
        struct accesslog *a = NULL;
        int rfd, saved;

        assert_non_null(base);
        saved = stderr_to_pipe(&rfd);
        close(rfd);
        assert_int_equal(accesslog_open(base, "stderr", &a), 0);
        for (unsigned i = 0; i < 3; i++)
                accesslog_write(a, &(struct accesslog_entry){.method = "GET", .status = 200});
        run_for(base, 200);
        assert_int_equal(accesslog_dropped(a), 3);
        a = accesslog_free(a);
        stderr_restore(saved);
        event_base_free(base);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_format),      cmocka_unit_test(test_escape),
                cmocka_unit_test(test_cap),         cmocka_unit_test(test_off_and_errors),
                cmocka_unit_test(test_file_append), cmocka_unit_test(test_fifo_target),
                cmocka_unit_test(test_stderr_pipe), cmocka_unit_test(test_full_pipe_drops),
                cmocka_unit_test(test_reader_gone), cmocka_unit_test(test_forward),
        };

        /* A write that blocks would hang the test: end it instead. */
        alarm(60);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
