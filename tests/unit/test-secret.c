/* Unit tests for webd/secret.c in a temporary directory: a missing key file is created (0600, 32 random
 * bytes, even under a lax umask) and reloaded byte for byte; group/world permissions, another owner (when
 * running as root), sizes out of range, a small buffer, symlinks, directories, FIFOs and a missing
 * directory are refused, leaving the caller's buffer alone. */
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

#include "common/macro.h"
#include "webd/secret.h"

struct fixture {
        char dir[64];
        char path[128];
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        memcpy(f->dir, "/tmp/test-secret-XXXXXX", sizeof("/tmp/test-secret-XXXXXX"));
        assert_non_null(mkdtemp(f->dir));
        (void)snprintf(f->path, sizeof(f->path), "%s/jwt.key", f->dir);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char p[160];
        static const char *const names[] = { "jwt.key", "link", "dir", "fifo" };

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                (void)snprintf(p, sizeof(p), "%s/%s", f->dir, names[i]);
                (void)unlink(p);
                (void)rmdir(p);
        }
        assert_int_equal(rmdir(f->dir), 0);
        free(f);
        return 0;
}

static void write_file(const char *path, size_t len, mode_t mode)
{
        uint8_t data[1024];
        int fd;

        assert_true(len <= sizeof(data));
        for (size_t i = 0; i < len; i++)
                data[i] = (uint8_t)(i * 7 + 1);
        (void)unlink(path);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len), (ssize_t)len);
        assert_int_equal(fchmod(fd, mode), 0);
        assert_int_equal(close(fd), 0);
}

static void assert_untouched(const uint8_t *buf, size_t n)
{
        for (size_t i = 0; i < n; i++)
                assert_int_equal(buf[i], 0xa5);
}

static void test_create_and_reload(void **state)
{
        struct fixture *f = *state;
        uint8_t a[SECRET_MAX], b[SECRET_MAX], zero[SECRET_MIN] = { 0 };
        uint8_t file[SECRET_MAX];
        struct stat st;
        mode_t old;
        int fd;

        old = umask(0); /* the file must still come out 0600 */
        assert_int_equal(secret_load(f->path, a, sizeof(a)), SECRET_MIN);
        umask(old);

        assert_int_equal(stat(f->path, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_int_equal(st.st_size, SECRET_MIN);
        assert_int_equal(st.st_uid, geteuid());
        assert_memory_not_equal(a, zero, SECRET_MIN);

        /* The file holds exactly the returned bytes, and a reload returns them again. */
        fd = open(f->path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(read(fd, file, sizeof(file)), SECRET_MIN);
        assert_int_equal(close(fd), 0);
        assert_memory_equal(a, file, SECRET_MIN);

        assert_int_equal(secret_load(f->path, b, sizeof(b)), SECRET_MIN);
        assert_memory_equal(a, b, SECRET_MIN);

        /* A second file holds another key. */
        assert_int_equal(unlink(f->path), 0);
        assert_int_equal(secret_load(f->path, b, SECRET_MIN), SECRET_MIN);
        assert_memory_not_equal(a, b, SECRET_MIN);
}

static void test_sizes(void **state)
{
        static const struct {
                size_t len;
                int r;
        } cases[] = {
                { 0, -EINVAL }, { 1, -EINVAL }, { SECRET_MIN - 1, -EINVAL }, { SECRET_MIN, SECRET_MIN },
                { 64, 64 },     { SECRET_MAX, SECRET_MAX }, { SECRET_MAX + 1, -EINVAL }, { 1000, -EINVAL },
        };
        struct fixture *f = *state;
        uint8_t buf[SECRET_MAX];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                print_message("file of %zu bytes\n", cases[i].len);
                write_file(f->path, cases[i].len, 0600);
                memset(buf, 0xa5, sizeof(buf));
                assert_int_equal(secret_load(f->path, buf, sizeof(buf)), cases[i].r);
                if (cases[i].r < 0)
                        assert_untouched(buf, sizeof(buf));
                else
                        for (size_t j = 0; j < cases[i].len; j++)
                                assert_int_equal(buf[j], (uint8_t)(j * 7 + 1));
        }

        /* A buffer smaller than the key, for an existing file and for a new one. */
        write_file(f->path, 64, 0600);
        memset(buf, 0xa5, sizeof(buf));
        assert_int_equal(secret_load(f->path, buf, 63), -ENOBUFS);
        assert_untouched(buf, sizeof(buf));
        assert_int_equal(unlink(f->path), 0);
        assert_int_equal(secret_load(f->path, buf, SECRET_MIN - 1), -ENOBUFS);
        assert_untouched(buf, sizeof(buf));
        assert_int_equal(access(f->path, F_OK), -1); /* nothing was created */
}

static void test_modes(void **state)
{
        static const struct {
                mode_t mode;
                int r;
        } cases[] = {
                { 0600, SECRET_MIN }, { 0400, SECRET_MIN }, { 0200, -EACCES }, { 0640, -EPERM },
                { 0604, -EPERM },     { 0644, -EPERM },     { 0660, -EPERM },  { 0666, -EPERM },
                { 0610, -EPERM },     { 0601, -EPERM },     { 0700, SECRET_MIN },
        };
        struct fixture *f = *state;
        uint8_t buf[SECRET_MAX];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int expect = cases[i].r;

                /* root can open a 0200 file anyway */
                if (cases[i].mode == 0200 && geteuid() == 0)
                        expect = SECRET_MIN;
                print_message("mode %04o\n", (unsigned)cases[i].mode);
                write_file(f->path, SECRET_MIN, cases[i].mode);
                memset(buf, 0xa5, sizeof(buf));
                assert_int_equal(secret_load(f->path, buf, sizeof(buf)), expect);
                if (expect < 0)
                        assert_untouched(buf, sizeof(buf));
        }
}

static void test_owner(void **state)
{
        struct fixture *f = *state;
        uint8_t buf[SECRET_MAX];

        if (geteuid() != 0) {
                print_message("not root: can't give a file away, skipped\n");
                skip();
        }
        write_file(f->path, SECRET_MIN, 0600);
        assert_int_equal(chown(f->path, 65534, 65534), 0);
        memset(buf, 0xa5, sizeof(buf));
        assert_int_equal(secret_load(f->path, buf, sizeof(buf)), -EPERM);
        assert_untouched(buf, sizeof(buf));
}

static void test_not_a_file(void **state)
{
        struct fixture *f = *state;
        uint8_t buf[SECRET_MAX];
        char p[160], missing[160];

        /* A symlink to a good key is not followed. */
        write_file(f->path, SECRET_MIN, 0600);
        (void)snprintf(p, sizeof(p), "%s/link", f->dir);
        assert_int_equal(symlink(f->path, p), 0);
        memset(buf, 0xa5, sizeof(buf));
        assert_int_equal(secret_load(p, buf, sizeof(buf)), -ELOOP);
        assert_untouched(buf, sizeof(buf));
        /* ... nor is a dangling one, which must not be created through either. */
        assert_int_equal(unlink(f->path), 0);
        assert_int_equal(secret_load(p, buf, sizeof(buf)), -ELOOP);
        assert_int_equal(access(f->path, F_OK), -1);

        (void)snprintf(p, sizeof(p), "%s/dir", f->dir);
        assert_int_equal(mkdir(p, 0700), 0);
        assert_int_equal(secret_load(p, buf, sizeof(buf)), -EINVAL);

        (void)snprintf(p, sizeof(p), "%s/fifo", f->dir);
        assert_int_equal(mkfifo(p, 0600), 0);
        assert_int_equal(secret_load(p, buf, sizeof(buf)), -EINVAL); /* and doesn't hang */

        (void)snprintf(missing, sizeof(missing), "%s/nonexistent/jwt.key", f->dir);
        assert_int_equal(secret_load(missing, buf, sizeof(buf)), -ENOENT);
        assert_untouched(buf, sizeof(buf));

        assert_int_equal(secret_load("", buf, sizeof(buf)), -EINVAL);
        assert_int_equal(secret_load(NULL, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(secret_load(f->path, NULL, sizeof(buf)), -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_create_and_reload, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sizes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_modes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_owner, setup, teardown),
                cmocka_unit_test_setup_teardown(test_not_a_file, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
