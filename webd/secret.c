/* The key that signs webd's tokens, kept in a file (`secret_file`) that only the service can read.
 *
 * The key never lives in the code or the configuration. An existing file is used only if it is a regular
 * file owned by the effective user with mode 0600 or stricter (a key others can read lets them forge
 * tokens, so that is refused, not repaired). A missing file is created on first start with SECRET_MIN
 * bytes from getrandom(): O_CREAT|O_EXCL with mode 0600, so two processes starting together cannot both
 * create it (the loser reads the winner's key) and a file planted in the meantime is never written; the
 * data and the directory entry are flushed before the key is used, and a file whose writing failed is
 * removed, so a restart never finds a half-written key. Called once at startup, so it simply blocks. */
#include "webd/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/macro.h"

/* Reads the key from the open file <fd> into <buf> after checking the file. */
static int secret_read(int fd, uint8_t *buf, size_t size)
{
        uint8_t key[SECRET_MAX + 1];
        struct stat st;
        size_t len = 0;
        int r;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if (st.st_uid != geteuid() || (st.st_mode & 0077) != 0)
                return -EPERM;
        if (st.st_size < SECRET_MIN || st.st_size > SECRET_MAX)
                return -EINVAL;

        /* Read one byte more than allowed, so a file that grew since fstat() is noticed. */
        while (len < sizeof(key)) {
                ssize_t n = read(fd, key + len, sizeof(key) - len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        goto out;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        if (len < SECRET_MIN || len > SECRET_MAX) {
                r = -EINVAL;
                goto out;
        }
        if (len > size) {
                r = -ENOBUFS;
                goto out;
        }
        memcpy(buf, key, len);
        r = (int)len;
out:
        explicit_bzero(key, sizeof(key));
        return r;
}

/* Makes the new directory entry of <path> durable; best effort (the key is fine either way, and at worst
 * a crash right now means a new key, i.e. logging in again). */
static void secret_sync_dir(const char *path)
{
        char dir[PATH_MAX];
        const char *slash = strrchr(path, '/');
        size_t n;
        int fd;

        if (!slash) {
                dir[0] = '.';
                n = 1;
        } else {
                n = slash == path ? 1 : (size_t)(slash - path);
                if (n >= sizeof(dir))
                        return;
                memcpy(dir, path, n);
        }
        dir[n] = '\0';

        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
                (void)fsync(fd);
                (void)close(fd);
        }
}

/* Creates <path> holding SECRET_MIN random bytes, also written to <key>. Returns 0, -EEXIST if the file
 * appeared in the meantime, or -errno. */
static int secret_create(const char *path, uint8_t key[static SECRET_MIN])
{
        _cleanup_close_ int fd = -1;
        size_t len = 0;
        int r;

        for (size_t got = 0; got < SECRET_MIN;) {
                ssize_t n = getrandom(key + got, SECRET_MIN - got, 0);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                got += (size_t)n;
        }

        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return -errno;

        while (len < SECRET_MIN) {
                ssize_t n = write(fd, key + len, SECRET_MIN - len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        goto fail;
                }
                len += (size_t)n;
        }
        if (fsync(fd) < 0) {
                r = -errno;
                goto fail;
        }
        r = close(TAKE_FD(fd));
        if (r < 0 && errno != EINTR) {
                r = -errno;
                goto fail;
        }
        secret_sync_dir(path);
        return 0;

fail:
        (void)unlink(path);
        return r;
}

int secret_load(const char *path, uint8_t *buf, size_t size)
{
        uint8_t key[SECRET_MIN];
        int r;

        if (!path || !*path || !buf)
                return -EINVAL;

        /* Two rounds: if another process creates the file between our open and our create, read theirs. */
        for (int attempt = 0; attempt < 2; attempt++) {
                _cleanup_close_ int fd = -1;

                /* O_NONBLOCK so that a FIFO planted there can't hang us; fstat() then refuses it. */
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
                if (fd >= 0)
                        return secret_read(fd, buf, size);
                if (errno != ENOENT)
                        return -errno;

                if (size < SECRET_MIN)
                        return -ENOBUFS;
                r = secret_create(path, key);
                if (r >= 0) {
                        memcpy(buf, key, SECRET_MIN);
                        r = SECRET_MIN;
                }
                explicit_bzero(key, sizeof(key));
                if (r != -EEXIST)
                        return r;
        }
        return -EEXIST;
}
