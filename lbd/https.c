/* HTTP to HTTPS on a plain listener: the redirect's Location, and the ACME challenge files (https.h).
 *
 * Every input here is the client's: the Host field and the request target are checked character by
 * character before they go into a Location, and a challenge token may name nothing but a file directly in
 * the configured directory. */
#include "lbd/https.h"

#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/macro.h"
#include "common/readfile.h"

bool https_is_acme(const char *target, size_t len)
{
        return len > strlen(HTTPS_ACME_PREFIX) && memcmp(target, HTTPS_ACME_PREFIX, strlen(HTTPS_ACME_PREFIX)) == 0;
}

/* A host name or address as it may stand in a URL: letters, digits, '-', '.', or an IPv6 address in
 * brackets; an optional ":port" after it is dropped. Returns the length of the host part, or 0. */
static size_t https_host_len(const char *s, size_t len)
{
        size_t i = 0;

        if (len == 0 || len > HTTPS_HOST_MAX)
                return 0;
        if (s[0] == '[') {
                for (i = 1; i < len && s[i] != ']'; i++)
                        if (s[i] == '\0' || !strchr("0123456789abcdefABCDEF:.", s[i]))
                                return 0;
                if (i == len || i == 1)
                        return 0;
                i++;
        } else
                for (; i < len && s[i] != ':'; i++)
                        if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') &&
                            !(s[i] >= '0' && s[i] <= '9') && s[i] != '-' && s[i] != '.')
                                return 0;
        if (i == 0)
                return 0;
        if (i < len) {
                /* ":port", digits only (an empty one is allowed by RFC 3986). */
                if (s[i] != ':')
                        return 0;
                for (size_t j = i + 1; j < len; j++)
                        if (s[j] < '0' || s[j] > '9')
                                return 0;
        }
        return i;
}

int https_redirect_location(struct evbuffer *out, const char *target, size_t target_len, const char *host,
                            size_t host_len, uint16_t port)
{
        const char *path = target;
        size_t path_len = target_len, n;
        char port_text[8] = "";

        if (target_len > 7 && strncasecmp(target, "http://", 7) == 0) {
                /* absolute-form: its authority is the host */
                const char *auth = target + 7;
                size_t auth_len = 0;

                /* The target is not NUL-terminated: it stands in the request head. */
                while (auth_len < target_len - 7 && auth[auth_len] != '/' && auth[auth_len] != '?')
                        auth_len++;
                host = auth;
                host_len = auth_len;
                path = auth + auth_len;
                path_len = target_len - 7 - auth_len;
        } else if (target_len == 0 || target[0] != '/')
                return -EINVAL; /* "*" and the like have no https:// URL */
        if (!host)
                return -EINVAL;
        n = https_host_len(host, host_len);
        if (n == 0)
                return -EINVAL;
        if (port != 443)
                (void)snprintf(port_text, sizeof(port_text), ":%u", (unsigned)port);
        if (evbuffer_add(out, "https://", 8) < 0 || evbuffer_add(out, host, n) < 0 ||
            evbuffer_add(out, port_text, strlen(port_text)) < 0 ||
            (path_len == 0 ? evbuffer_add(out, "/", 1) : evbuffer_add(out, path, path_len)) < 0)
                return -ENOMEM;
        return 0;
}

int https_acme_read(struct evbuffer *out, const char *dir, const char *target, size_t target_len)
{
        const char *token = target + strlen(HTTPS_ACME_PREFIX);
        size_t token_len = target_len - strlen(HTTPS_ACME_PREFIX);
        char path[1024 + HTTPS_ACME_TOKEN_MAX + 2];
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        int r;

        if (!https_is_acme(target, target_len) || token_len > HTTPS_ACME_TOKEN_MAX)
                return -EINVAL;
        for (size_t i = 0; i < token_len; i++)
                if (!(token[i] >= 'a' && token[i] <= 'z') && !(token[i] >= 'A' && token[i] <= 'Z') &&
                    !(token[i] >= '0' && token[i] <= '9') && token[i] != '-' && token[i] != '_')
                        return -EINVAL;
        if ((size_t)snprintf(path, sizeof(path), "%s/%.*s", dir, (int)token_len, token) >= sizeof(path))
                return -EINVAL;
        r = readfile_bounded(path, HTTPS_ACME_FILE_MAX, O_NOFOLLOW | O_NONBLOCK, &data, &len);
        if (r == -ELOOP || r == -EINVAL)
                return -ENOENT; /* a symbolic link, a directory, a device: no challenge */
        if (r < 0)
                return r;
        if (evbuffer_add(out, data, len) < 0)
                return -ENOMEM;
        return (int)len;
}
