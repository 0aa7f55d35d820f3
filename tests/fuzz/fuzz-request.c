/* Fuzz target: a request as a client would send it: the head through http_parse_request() with a small
 * limit, then the body through the framing parser in pieces, then the head lbd would forward. Anything
 * accepted must re-parse as the same request (what lbd forwards means one thing). */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *buf = (const char *)data, *reason = NULL;
        struct http_forward fw = { .client_ip = "127.0.0.1", .proto = "http", .request_id = "id", .host = "b" };
        struct http_head h, h2;
        http_parser p, p2;
        struct evbuffer *out;
        size_t off, consumed;
        int r;

        r = http_parse_request(&p, buf, size, 4096, &h, &reason);
        if (r <= 0)
                return 0;

        out = evbuffer_new();
        if (!out)
                return 0;
        if (http_write_request_head(out, buf, &h, &fw) == 0) {
                size_t n = evbuffer_get_length(out);
                const char *fwd = (const char *)evbuffer_pullup(out, -1);
                int r2 = http_parse_request(&p2, fwd, n, 1 << 20, &h2, &reason);

                /* The forwarded head must parse, completely, with the same framing. */
                if (r2 != (int)n || h2.body != h.body || h2.content_length != h.content_length ||
                    h2.method != h.method)
                        abort();
        }
        evbuffer_free(out);

        r = http_body_begin(&p, &h, &reason);
        off = h.head_len;
        while (r == 0 && off < size) {
                size_t piece = 1 + (size - off) / 3;

                r = http_body_feed(&p, &h, buf + off, piece, NULL, &consumed, &reason);
                if (r < 0)
                        break;
                if (consumed > piece)
                        abort();
                off += consumed;
                if (r == 0 && consumed != piece)
                        abort();
        }
        return 0;
}
