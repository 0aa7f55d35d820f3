/* Parsing and normalising the server URL given with --url or WEBCTL_URL. Only what a server's address
 * needs is accepted: http or https, a host name, an IPv4 address or a bracketed IPv6 address, an optional
 * port, an optional path; no user:password@ (webctl authenticates with its token), query, fragment,
 * blanks or control characters. Nothing here allocates. */
#include "webctl/url.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/parse.h"

#define URL_HOST_CHARS "abcdefghijklmnopqrstuvwxyz0123456789.-_~%"
#define URL_V6_CHARS   "0123456789abcdef:.%"

/* Appends <n> bytes of <s> to <out> (of <size>) at *<len>, lower-cased with <lower>. Returns 0 or
 * -ENAMETOOLONG. */
static int url_put(char *out, size_t size, size_t *len, const char *s, size_t n, bool lower)
{
        if (*len + n >= size)
                return -ENAMETOOLONG;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];

                out[(*len)++] = lower && c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
        }
        out[*len] = '\0';
        return 0;
}

static int url_fail(const char **ret_why, const char *why)
{
        *ret_why = why;
        return -EINVAL;
}

/* Whether the <n> bytes at <s>, lower-cased, are all in <set>. */
static bool url_all_in(const char *s, size_t n, const char *set)
{
        for (size_t i = 0; i < n; i++) {
                char c = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] - 'A' + 'a') : s[i];

                if (c == '\0' || !strchr(set, c))
                        return false;
        }
        return true;
}

int url_normalize(const char *in, char *out, size_t size, const char **ret_why)
{
        const char *p, *host, *end, *path;
        uint64_t default_port, port_value;
        size_t len = 0, host_len;
        int r;

        for (p = in; *p; p++)
                if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
                        return url_fail(ret_why, "has a blank, a control or a non-ASCII character");
        if (strpbrk(in, "?#"))
                return url_fail(ret_why, "has a query or fragment; give the server's address only");
        if (strncasecmp(in, "http://", 7) == 0) {
                default_port = 80;
                host = in + 7;
        } else if (strncasecmp(in, "https://", 8) == 0) {
                default_port = 443;
                host = in + 8;
        } else
                return url_fail(ret_why, "is not an http:// or https:// URL");

        end = host + strcspn(host, "/");
        port_value = default_port;
        path = end;
        if (memchr(host, '@', (size_t)(end - host)))
                return url_fail(ret_why, "has a user name or password; webctl logs in with 'webctl login'");
        if (*host == '[') {
                const char *close = memchr(host, ']', (size_t)(end - host));

                if (!close || !url_all_in(host + 1, (size_t)(close - host - 1), URL_V6_CHARS) ||
                    close == host + 1)
                        return url_fail(ret_why, "has a malformed IPv6 address");
                host_len = (size_t)(close - host) + 1;
                if (close + 1 < end && close[1] != ':')
                        return url_fail(ret_why, "has something after the IPv6 address that is not a port");
        } else {
                const char *colon = memchr(host, ':', (size_t)(end - host));

                host_len = (size_t)((colon ? colon : end) - host);
                if (!url_all_in(host, host_len, URL_HOST_CHARS))
                        return url_fail(ret_why, "has a malformed host name");
        }
        if (host_len == 0)
                return url_fail(ret_why, "has no host");
        if (host + host_len < end) {
                const char *port = host + host_len + 1;
                size_t port_len = (size_t)(end - port);
                char digits[8] = "";

                if (port_len == 0 || port_len >= sizeof(digits))
                        return url_fail(ret_why, "has a port that is not a number from 1 to 65535");
                memcpy(digits, port, port_len);
                if (parse_uint(digits, 1, 65535, &port_value) < 0)
                        return url_fail(ret_why, "has a port that is not a number from 1 to 65535");
        }

        r = url_put(out, size, &len, in, (size_t)(host - in), true);
        if (r >= 0)
                r = url_put(out, size, &len, host, host_len, true);
        if (r >= 0 && port_value != default_port) {
                char digits[8];
                int n = snprintf(digits, sizeof(digits), ":%u", (unsigned)port_value);

                r = url_put(out, size, &len, digits, (size_t)n, false);
        }
        if (r >= 0) {
                size_t n = strlen(path);

                while (n > 0 && path[n - 1] == '/')
                        n--;
                r = url_put(out, size, &len, path, n, false);
        }
        if (r < 0) {
                out[0] = '\0';
                return r;
        }
        return 0;
}

size_t url_root_len(const char *url)
{
        const char *host = strstr(url, "://");

        host = host ? host + 3 : url;
        return (size_t)(host - url) + strcspn(host, "/");
}

bool url_has_path(const char *url)
{
        return url[url_root_len(url)] != '\0';
}
