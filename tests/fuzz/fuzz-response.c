/* Fuzz target: a response as a backend would send it, to a GET or (first byte odd) a HEAD request: the
 * head through http_parse_response(), the head lbd would send on, and the body decoded (de-chunked) in
 * pieces as for an HTTP/1.0 client. */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *buf, *reason = NULL;
        struct evbuffer *out, *decoded;
        struct http_head h;
        http_parser p;
        bool head_request;
        size_t off, consumed;
        int r;

        if (size < 1)
                return 0;
        head_request = data[0] & 1;
        buf = (const char *)data + 1;
        size--;

        r = http_parse_response(&p, buf, size, 4096, head_request, &h, &reason);
        if (r <= 0)
                return 0;
        out = evbuffer_new();
        decoded = evbuffer_new();
        if (!out || !decoded)
                goto done;
        (void)http_write_response_head(out, buf, &h, "id", h.body == HTTP_BODY_CHUNKED, false, true);

        r = http_body_begin(&p, &h, &reason);
        off = h.head_len;
        while (r == 0 && off < size) {
                size_t piece = 1 + (size - off) / 2;

                r = http_body_feed(&p, &h, buf + off, piece, decoded, &consumed, &reason);
                if (r < 0)
                        break;
                if (consumed > piece)
                        abort();
                off += consumed;
        }
        if (r == 0 && h.body == HTTP_BODY_EOF)
                (void)http_body_eof(&p, &h);
done:
        if (out)
                evbuffer_free(out);
        if (decoded)
                evbuffer_free(decoded);
        return 0;
}
