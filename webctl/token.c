/* The logins webctl keeps between invocations: for each server URL (normalised, url.c), the bearer token,
 * whom it is for, and when it expires.
 *
 * They are credentials, so: the directories are created 0700, the file is 0600 from the moment it exists
 * (mkostemp() in the same directory), it is written completely and flushed before rename() puts it in
 * place atomically, symlinks are not followed when reading it, a file that other users may read or that
 * is not the caller's is refused (as ssh refuses such a key), and every buffer that held a token is wiped
 * before it is freed. A change (read, modify, rename) holds a lock on the directory, so that two webctl
 * logging in to two servers at once both keep their login.
 *
 * The file is JSON: {"logins":[{"url":..,"username":..,"token":..,"expires":N}, ...]}, at most
 * TOKEN_LOGINS_MAX of them. The single-login file of earlier versions, {"url":..,"username":..,
 * "token":..,"expires":N}, is still read, and written in the new form the next time a login changes. */
#include "webctl/token.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cjson.h"
#include "common/macro.h"
#include "webctl/url.h"

#define TOKEN_FILE_MAX   (64 * 1024)
#define TOKEN_LOCK_TRIES 50 /* of 100 ms: how long a change waits for another webctl's */

int token_path(char *buf, size_t size)
{
        const char *xdg = getenv("XDG_CONFIG_HOME"), *home;
        int n;

        /* The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored. */
        if (xdg && xdg[0] == '/')
                n = snprintf(buf, size, "%s/webctl/token", xdg);
        else {
                home = getenv("HOME");
                if (!home || home[0] != '/') {
                        const struct passwd *pw = getpwuid(geteuid());

                        home = pw ? pw->pw_dir : NULL;
                }
                if (!home || home[0] != '/')
                        return -ENOENT;
                n = snprintf(buf, size, "%s/.config/webctl/token", home);
        }
        if (n < 0 || (size_t)n >= size)
                return -ENAMETOOLONG;
        return 0;
}

/* Creates the directory <dir> and any missing parent, each 0700 (existing ones are left as they are). */
static int token_mkdirs(char *dir)
{
        size_t len = strlen(dir);

        for (size_t i = 1; i <= len; i++) {
                if (dir[i] != '/' && dir[i] != '\0')
                        continue;
                dir[i] = '\0';
                if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                        int r = -errno;

                        dir[i] = i < len ? '/' : '\0';
                        return r;
                }
                dir[i] = i < len ? '/' : '\0';
        }
        return 0;
}

/* Writes <len> bytes to <fd>. Returns 0 or -errno. */
static int token_write_all(int fd, const char *data, size_t len)
{
        while (len > 0) {
                ssize_t n = write(fd, data, len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                data += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Every login of the file. */
struct token_set {
        size_t n;
        struct token login[TOKEN_LOGINS_MAX];
};

static struct token_set *token_set_free(struct token_set *set)
{
        if (set) {
                explicit_bzero(set, sizeof(*set));
                free(set);
        }
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct token_set *, token_set_free)

static cJSON *token_format_one(const struct token *t)
{
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();

        if (!j || !cJSON_AddStringToObject(j, "url", t->url) ||
            !cJSON_AddStringToObject(j, "username", t->username) ||
            !cJSON_AddStringToObject(j, "token", t->token) ||
            !cJSON_AddNumberToObject(j, "expires", (double)t->expires))
                return NULL;
        return TAKE_PTR(j);
}

/* Wipes every "token" string under <j>: the tree's copies of the credentials. */
static void token_wipe_json(cJSON *j)
{
        cJSON *logins = cJSON_GetObjectItemCaseSensitive(j, "logins"), *item;
        cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "token");

        if (cJSON_IsString(tok))
                explicit_bzero(tok->valuestring, strlen(tok->valuestring));
        cJSON_ArrayForEach(item, logins) {
                tok = cJSON_GetObjectItemCaseSensitive(item, "token");
                if (cJSON_IsString(tok))
                        explicit_bzero(tok->valuestring, strlen(tok->valuestring));
        }
}

static char *token_format(const struct token_set *set)
{
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();
        cJSON *logins;
        char *text;

        if (!j || !(logins = cJSON_AddArrayToObject(j, "logins")))
                return NULL;
        for (size_t i = 0; i < set->n; i++) {
                cJSON *one = token_format_one(&set->login[i]);

                if (!one || !cJSON_AddItemToArray(logins, one)) {
                        cJSON_Delete(one);
                        token_wipe_json(j);
                        return NULL;
                }
        }
        text = cJSON_PrintUnformatted(j);
        token_wipe_json(j);
        return text;
}

/* Writes <set> to the token file, or removes the file when it is empty. */
static int token_write(const struct token_set *set)
{
        char path[PATH_MAX], tmp[PATH_MAX + 16];
        _cleanup_close_ int fd = -1, dfd = -1;
        char *text, *slash;
        int r;

        r = token_path(path, sizeof(path));
        if (r < 0)
                return r;
        if (set->n == 0)
                return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
        slash = strrchr(path, '/');
        *slash = '\0';
        r = token_mkdirs(path);
        if (r < 0)
                return r;
        (void)snprintf(tmp, sizeof(tmp), "%s/.token.XXXXXX", path);
        dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        *slash = '/';

        text = token_format(set);
        if (!text)
                return -ENOMEM;

        fd = mkostemp(tmp, O_CLOEXEC); /* 0600 */
        if (fd < 0) {
                r = -errno;
                goto out;
        }
        r = token_write_all(fd, text, strlen(text));
        if (r >= 0 && token_write_all(fd, "\n", 1) < 0)
                r = -EIO;
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && close(TAKE_FD(fd)) < 0 && errno != EINTR)
                r = -errno;
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void)unlink(tmp);
        else if (dfd >= 0)
                (void)fsync(dfd); /* the rename itself, best effort */
out:
        explicit_bzero(text, strlen(text));
        cJSON_free(text);
        return r;
}

static int token_copy(const cJSON *j, const char *name, char *dst, size_t size)
{
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, name);
        size_t n;

        if (!cJSON_IsString(m))
                return -EBADMSG;
        n = strlen(m->valuestring);
        if (n >= size)
                return -EBADMSG;
        memcpy(dst, m->valuestring, n + 1);
        return 0;
}

/* Reads one login object <j> into <t>, its URL normalised (the file of an earlier version may hold
 * another spelling). Returns 0 or -EBADMSG. */
static int token_parse_one(const cJSON *j, struct token *t)
{
        const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "expires");
        char url[TOKEN_URL_MAX];
        const char *why;

        if (!cJSON_IsObject(j) || token_copy(j, "url", url, sizeof(url)) < 0 ||
            token_copy(j, "username", t->username, sizeof(t->username)) < 0 ||
            token_copy(j, "token", t->token, sizeof(t->token)) < 0)
                return -EBADMSG;
        if (!cJSON_IsNumber(exp) || !(exp->valuedouble >= 0 && exp->valuedouble < 1e15))
                return -EBADMSG;
        t->expires = (int64_t)exp->valuedouble;
        if (url_normalize(url, t->url, sizeof(t->url), &why) < 0)
                memcpy(t->url, url, sizeof(t->url));
        return 0;
}

int token_check(int fd, mode_t *ret_mode, uid_t *ret_uid)
{
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if ((st.st_mode & 077) == 0 && st.st_uid == geteuid())
                return 0;
        *ret_mode = st.st_mode & 07777;
        *ret_uid = st.st_uid;
        return -EPERM;
}

/* Reads every login of the token file into *<ret> (allocated; none when there is no file). Returns 0,
 * -EBADMSG, -EPERM or -errno. */
static int token_read(struct token_set **ret)
{
        _cleanup_(token_set_freep) struct token_set *set = calloc(1, sizeof(*set));
        char path[PATH_MAX];
        _cleanup_free_ char *data = NULL;
        _cleanup_(cJSON_Deletep) cJSON *j = NULL;
        _cleanup_close_ int fd = -1;
        const cJSON *logins, *item;
        size_t len = 0;
        struct stat st;
        mode_t mode;
        uid_t uid;
        int r;

        if (!set)
                return -ENOMEM;
        r = token_path(path, sizeof(path));
        if (r < 0)
                return r;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 && errno == ENOENT) {
                *ret = TAKE_PTR(set);
                return 0;
        }
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size > TOKEN_FILE_MAX)
                return -EBADMSG;
        r = token_check(fd, &mode, &uid);
        if (r < 0)
                return r;

        data = malloc(TOKEN_FILE_MAX + 1);
        if (!data)
                return -ENOMEM;
        while (len < TOKEN_FILE_MAX) {
                ssize_t n = read(fd, data + len, TOKEN_FILE_MAX - len);

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
        data[len] = '\0';

        j = memchr(data, '\0', len) ? NULL : cJSON_ParseWithLengthOpts(data, len + 1, NULL, true);
        r = -EBADMSG;
        if (!cJSON_IsObject(j))
                goto out;
        logins = cJSON_GetObjectItemCaseSensitive(j, "logins");
        if (!logins) {
                /* The single login of earlier versions. */
                if (token_parse_one(j, &set->login[0]) < 0)
                        goto out;
                set->n = 1;
        } else {
                if (!cJSON_IsArray(logins) || cJSON_GetArraySize(logins) > TOKEN_LOGINS_MAX)
                        goto out;
                cJSON_ArrayForEach(item, logins) {
                        if (token_parse_one(item, &set->login[set->n]) < 0)
                                goto out;
                        set->n++;
                }
        }
        *ret = TAKE_PTR(set);
        r = 0;
out:
        if (j)
                token_wipe_json(j);
        explicit_bzero(data, TOKEN_FILE_MAX + 1);
        return r;
}

/* The index of <url>'s login in <set>, or -1. */
static ssize_t token_find(const struct token_set *set, const char *url)
{
        for (size_t i = 0; i < set->n; i++)
                if (strcmp(set->login[i].url, url) == 0)
                        return (ssize_t)i;
        return -1;
}

static void token_delete(struct token_set *set, size_t i)
{
        memmove(&set->login[i], &set->login[i + 1], (set->n - i - 1) * sizeof(set->login[0]));
        set->n--;
        explicit_bzero(&set->login[set->n], sizeof(set->login[0]));
}

/* token_read() into *<ret_set>, and the index of <url>'s login in it (or -1) in *<ret_i>. */
static int token_read_find(const char *url, struct token_set **ret_set, ssize_t *ret_i)
{
        int r = token_read(ret_set);

        if (r >= 0)
                *ret_i = token_find(*ret_set, url);
        return r;
}

int token_load(const char *url, struct token *ret, char *others, size_t others_size)
{
        _cleanup_(token_set_freep) struct token_set *set = NULL;
        ssize_t i;
        int r;

        r = token_read_find(url, &set, &i);
        if (r < 0)
                return r;
        if (i >= 0) {
                *ret = set->login[i];
                return 0;
        }
        if (others && others_size > 0) {
                size_t len = 0;

                others[0] = '\0';
                for (size_t k = 0; k < set->n; k++) {
                        int n = snprintf(others + len, others_size - len, "%s%s", k > 0 ? ", " : "",
                                         set->login[k].url);

                        if (n < 0 || (size_t)n >= others_size - len) {
                                others[0] = '\0';
                                break;
                        }
                        len += (size_t)n;
                }
        }
        return -ENOENT;
}

/* Takes the lock of the token file's directory (flock() on the directory itself) for a change of the
 * file, so that two webctl changing logins at once (read, change, rename) don't lose one; readers need
 * none, since the file is replaced by rename(). With <create>, the directories are created first.
 * Returns 0 with the locked descriptor in *<ret_fd>, -ENOENT (no directory, without <create>),
 * -EWOULDBLOCK (still held after TOKEN_LOCK_TRIES), or -errno. */
static int token_lock(bool create, int *ret_fd)
{
        char path[PATH_MAX];
        _cleanup_close_ int fd = -1;
        int r;

        r = token_path(path, sizeof(path));
        if (r < 0)
                return r;
        *strrchr(path, '/') = '\0';
        if (create) {
                r = token_mkdirs(path);
                if (r < 0)
                        return r;
        }
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (int i = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; i++) {
                if (errno != EWOULDBLOCK && errno != EINTR)
                        return -errno;
                if (i >= TOKEN_LOCK_TRIES)
                        return -EWOULDBLOCK;
                (void)usleep(100 * 1000);
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int token_save(const struct token *t)
{
        _cleanup_(token_set_freep) struct token_set *set = NULL;
        int64_t now = (int64_t)time(NULL);
        _cleanup_close_ int lock = -1;
        ssize_t i;
        int r;

        r = token_lock(true, &lock);
        if (r < 0)
                return r;
        r = token_read(&set);
        if (r < 0)
                return r;
        for (size_t k = set->n; k-- > 0;)
                if (set->login[k].expires > 0 && set->login[k].expires <= now)
                        token_delete(set, k);
        i = token_find(set, t->url);
        if (i < 0 && set->n == TOKEN_LOGINS_MAX) {
                /* Full: the login that expires first makes room. */
                i = 0;
                for (size_t k = 1; k < set->n; k++)
                        if (set->login[k].expires < set->login[i].expires)
                                i = (ssize_t)k;
        }
        if (i < 0)
                i = (ssize_t)set->n++;
        set->login[i] = *t;
        return token_write(set);
}

int token_remove(const char *url)
{
        _cleanup_(token_set_freep) struct token_set *set = NULL;
        _cleanup_close_ int lock = -1;
        ssize_t i;
        int r;

        r = token_lock(false, &lock);
        if (r < 0)
                return r;
        r = token_read_find(url, &set, &i);
        if (r < 0)
                return r;
        if (i < 0)
                return -ENOENT;
        token_delete(set, (size_t)i);
        return token_write(set);
}

void token_wipe(struct token *t)
{
        explicit_bzero(t->token, sizeof(t->token));
}
