/* Fixtures shared by the unit tests of the config code (test-ini.c, test-conf.c, test-config.c,
 * test-webd-config.c) and of logging (test-log.c). stderr capture, to check what the user is told:
 * capture_begin() sends stderr to a temporary file, capture_size() tells how much was written so far,
 * capture_end() restores stderr and returns what was written, echoing it so the test log still shows it. And config files written to fresh temporary paths. Header-only: each test program
 * includes it once. */
#pragma once

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

struct capture {
        int saved;
        FILE *f;
};

static inline void capture_begin(struct capture *c)
{
        fflush(stderr);
        c->f = tmpfile();
        assert_non_null(c->f);
        c->saved = dup(STDERR_FILENO);
        assert_true(c->saved >= 0);
        assert_true(dup2(fileno(c->f), STDERR_FILENO) >= 0);
}

/* Bytes logged since capture_begin(). */
static inline size_t capture_size(struct capture *c)
{
        struct stat st;

        fflush(stderr);
        assert_true(fstat(fileno(c->f), &st) == 0);
        return (size_t)st.st_size;
}

/* Returns what was logged since capture_begin() (caller frees). */
static inline char *capture_end(struct capture *c)
{
        size_t n = capture_size(c);
        char *buf = calloc(1, n + 1);

        assert_non_null(buf);
        assert_true(dup2(c->saved, STDERR_FILENO) >= 0);
        close(c->saved);
        rewind(c->f);
        assert_int_equal(fread(buf, 1, n, c->f), n);
        buf[n] = '\0';
        fclose(c->f);
        fprintf(stderr, "%s", buf);
        return buf;
}

/* Writes <text> to a new file named after <template> ("/tmp/NAME-XXXXXX") and returns its path (caller
 * unlinks and frees). */
static inline char *fixture_write_file(const char *template, const char *text)
{
        char *path = strdup(template);
        int fd;

        assert_non_null(path);
        fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        return path;
}
