/* The login webctl keeps between invocations: the bearer token, whom and which server it is for, and when
 * it expires.
 *
 * It is a credential, so: the directories are created 0700, the file is 0600 from the moment it exists
 * (mkostemp() in the same directory), it is written completely and flushed before rename() puts it in
 * place atomically, symlinks are not followed when reading it, and every buffer that held the token is
 * wiped before it is freed. The file is JSON: {"url":..,"username":..,"token":..,"expires":N}. */
#include "webctl/token.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/macro.h"

#define TOKEN_FILE_MAX (16 * 1024)

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)

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

static char *token_format(const struct token *t)
{
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();
        cJSON *tok;
        char *text;

        if (!j || !cJSON_AddStringToObject(j, "url", t->url) ||
            !cJSON_AddStringToObject(j, "username", t->username) ||
            !(tok = cJSON_AddStringToObject(j, "token", t->token)) ||
            !cJSON_AddNumberToObject(j, "expires", (double)t->expires))
                return NULL;
        text = cJSON_PrintUnformatted(j);
        explicit_bzero(tok->valuestring, strlen(tok->valuestring));
        return text;
}

int token_save(const struct token *t)
{
        char path[PATH_MAX], tmp[PATH_MAX + 16];
        _cleanup_close_ int fd = -1, dfd = -1;
        char *text, *slash;
        int r;

        r = token_path(path, sizeof(path));
        if (r < 0)
                return r;
        slash = strrchr(path, '/');
        *slash = '\0';
        r = token_mkdirs(path);
        if (r < 0)
                return r;
        (void)snprintf(tmp, sizeof(tmp), "%s/.token.XXXXXX", path);
        dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        *slash = '/';

        text = token_format(t);
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

int token_load(struct token *ret)
{
        char path[PATH_MAX], data[TOKEN_FILE_MAX + 1];
        _cleanup_(cJSON_Deletep) cJSON *j = NULL;
        _cleanup_close_ int fd = -1;
        struct token t = { 0 };
        const cJSON *exp;
        size_t len = 0;
        struct stat st;
        int r;

        r = token_path(path, sizeof(path));
        if (r < 0)
                return r;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size > TOKEN_FILE_MAX)
                return -EBADMSG;

        while (len < sizeof(data) - 1) {
                ssize_t n = read(fd, data + len, sizeof(data) - 1 - len);

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

        j = cJSON_ParseWithLength(data, len);
        r = -EBADMSG;
        if (!cJSON_IsObject(j))
                goto out;
        if (token_copy(j, "url", t.url, sizeof(t.url)) < 0 ||
            token_copy(j, "username", t.username, sizeof(t.username)) < 0 ||
            token_copy(j, "token", t.token, sizeof(t.token)) < 0)
                goto out;
        exp = cJSON_GetObjectItemCaseSensitive(j, "expires");
        if (!cJSON_IsNumber(exp) || !(exp->valuedouble >= 0 && exp->valuedouble < 1e15))
                goto out;
        t.expires = (int64_t)exp->valuedouble;

        *ret = t;
        r = 0;
out:
        if (j) {
                cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "token");

                if (cJSON_IsString(tok))
                        explicit_bzero(tok->valuestring, strlen(tok->valuestring));
        }
        explicit_bzero(data, sizeof(data));
        token_wipe(&t);
        return r;
}

int token_remove(void)
{
        char path[PATH_MAX];
        int r;

        r = token_path(path, sizeof(path));
        if (r < 0)
                return r;
        if (unlink(path) < 0)
                return -errno;
        return 0;
}

void token_wipe(struct token *t)
{
        explicit_bzero(t->token, sizeof(t->token));
}
