/* Fuzz target: the redirect's Location built from a client's request target and Host (lbd/https.c).
 * Input: the target, a newline, the Host value. Whatever the bytes, an accepted pair gives
 * "https://" + a host of letters, digits, '-', '.', or a bracketed IPv6 address, then an optional port,
 * then the path, and nothing that could end the Location field or start another (CR, LF, NUL). */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lbd/https.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *buf = (const char *)data, *nl = memchr(buf, '\n', size);
        size_t target_len = nl ? (size_t)(nl - buf) : size;
        const char *host = nl ? nl + 1 : NULL;
        size_t host_len = nl ? size - target_len - 1 : 0;
        struct evbuffer *out = evbuffer_new();
        const char *loc;
        size_t n, i;

        if (!out)
                return 0;
        /* The proxy hands over only targets its parser accepted: no CR, LF or NUL among them. */
        if (memchr(buf, '\r', target_len) || memchr(buf, '\0', target_len) ||
            https_redirect_location(out, buf, target_len, host, host_len, 8443) < 0) {
                evbuffer_free(out);
                return 0;
        }
        n = evbuffer_get_length(out);
        loc = (const char *)evbuffer_pullup(out, -1);
        if (n < 9 || memcmp(loc, "https://", 8) != 0)
                abort();
        for (i = 8; i < n && loc[i] != '/' && loc[i] != '?'; i++) {
                char ch = loc[i];

                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                      ch == '-' || ch == '.' || ch == ':' || ch == '[' || ch == ']'))
                        abort();
        }
        for (i = 0; i < n; i++)
                if (loc[i] == '\r' || loc[i] == '\n' || loc[i] == '\0')
                        abort();
        evbuffer_free(out);
        return 0;
}
