/* Unit tests for http/http.c: request and response heads, the strict checks, body framing and the heads
 * lbd writes. */
#include <errno.h>
#include <event2/buffer.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "http/http.h"

static int parse_req(const char *s, struct http_head *h, http_parser *p, const char **reason)
{
        *reason = NULL;
        return http_parse_request(p, s, strlen(s), 16384, h, reason);
}

static char *forward_head(const char *s, const struct http_forward *fw, struct http_head *ret_h);
static char *buffer_string(struct evbuffer *b);

static void test_simple_get(void **state)
{
        const char *s = "GET /a/b?c=d HTTP/1.1\r\nHost: example\r\nX-Request-Id: abc-123\r\n\r\n";
        struct http_head h;
        http_parser p;
        const char *reason;

        assert_int_equal(parse_req(s, &h, &p, &reason), (int)strlen(s));
        assert_int_equal(h.method, HTTP_GET);
        assert_int_equal(h.target_len, 8);
        assert_memory_equal(s + h.target_off, "/a/b?c=d", 8);
        assert_int_equal(h.n_fields, 2);
        assert_int_equal(h.body, HTTP_BODY_NONE);
        assert_true(h.keep_alive);
        assert_int_equal(h.host, 0);
        assert_int_equal(h.request_id, 1);
        assert_int_equal(http_body_begin(&p, &h, &reason), 1);
}

static void test_incomplete_and_too_large(void **state)
{
        const char *s = "GET / HTTP/1.1\r\nHost: x\r\n";
        struct http_head h;
        http_parser p;
        const char *reason = NULL;
        char big[2048];

        assert_int_equal(parse_req(s, &h, &p, &reason), 0);
        memset(big, 'a', sizeof(big));
        memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
        assert_int_equal(http_parse_request(&p, big, sizeof(big), 1024, &h, &reason), -EMSGSIZE);
}

static void expect_bad(const char *s)
{
        struct http_head h;
        http_parser p;
        const char *reason = NULL;
        int r = parse_req(s, &h, &p, &reason);

        if (r != -EBADMSG)
                fail_msg("accepted (%d): %s", r, s);
        assert_non_null(reason);
}

/* Rejected, with a reason that contains <why>. */
static void expect_bad_reason(const char *s, const char *why)
{
        struct http_head h;
        http_parser p;
        const char *reason = NULL;
        int r = parse_req(s, &h, &p, &reason);

        if (r != -EBADMSG)
                fail_msg("accepted (%d): %s", r, s);
        if (!reason || !strstr(reason, why))
                fail_msg("reason '%s', not '%s', for: %s", reason ? reason : "(none)", why, s);
}

static void test_field_names_imitating_known_ones(void **state)
{
        static const char *const cases[][2] = {
                { "Transfer_Encoding: chunked", "imitates Transfer-Encoding" },
                { "transfer_encoding: chunked", "imitates Transfer-Encoding" },
                { "Transfer---Encoding: chunked", "imitates Transfer-Encoding" },
                { "Transfer-_-Encoding: chunked", "imitates Transfer-Encoding" },
                { "Transfer-Encoding_: chunked", "imitates Transfer-Encoding" },
                { "_Transfer-Encoding: chunked", "imitates Transfer-Encoding" },
                { "Transfer-Encoding-: chunked", "imitates Transfer-Encoding" },
                { "Content_Length: 5", "imitates Content-Length" },
                { "Content--Length: 5", "imitates Content-Length" },
                { "CONTENT__LENGTH: 5", "imitates Content-Length" },
                { "Connection_: close", "imitates Connection" },
                { "Host_: y", "imitates Host" },
                { "Upgrade_: h2c", "imitates Upgrade" },
                { "HTTP2_Settings: AAMAAABkAAQAAP__", "imitates HTTP2-Settings" },
                { "Keep_Alive: 1", "imitates Keep-Alive" },
                { "Proxy_Connection: close", "imitates Proxy-Connection" },
                { "TE_: trailers", "imitates TE" },
                { "Trailer_: x", "imitates Trailer" },
                { "Expect_: 100-continue", "imitates Expect" },
                { "X_Forwarded_For: 192.0.2.1", "imitates X-Forwarded-For" },
                { "X-Forwarded_Proto: https", "imitates X-Forwarded-Proto" },
                { "X_Request_Id: abc", "imitates X-Request-Id" },
        };
        char req[256];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nHost: x\r\n%s\r\nContent-Length: 0\r\n\r\n",
                         cases[i][0]);
                expect_bad_reason(req, cases[i][1]);
        }
}

static void test_underscore_names_are_not_forwarded(void **state)
{
        const char *s = "GET / HTTP/1.1\r\nHost: h\r\nX_Custom: 1\r\nX--Dashes: 2\r\nAccept_Encoding_Hint: 3\r\n"
                        "Transfer-Encodings: 4\r\nContent-Lengthy: 5\r\n\r\n";
        struct http_forward fw = { .client_ip = "127.0.0.1", .proto = "http", .request_id = "rid" };
        char *o = forward_head(s, &fw, NULL);

        /* '_' names dropped; '-' runs with nothing to imitate, and longer names, are fields like any. */
        assert_string_equal(o, "GET / HTTP/1.1\r\nHost: h\r\nX--Dashes: 2\r\nTransfer-Encodings: 4\r\n"
                               "Content-Lengthy: 5\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                               "X-Request-Id: rid\r\n\r\n");
        free(o);
}

static void test_response_field_names(void **state)
{
        static const char *const bad[] = {
                "HTTP/1.1 200 OK\r\nContent_Length: 5\r\n\r\nhello",
                "HTTP/1.1 200 OK\r\nTransfer__Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection_: close\r\n\r\nhello",
        };
        const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX_Backend_Thing: 1\r\nHost_: fine\r\n\r\nok";
        struct evbuffer *out = evbuffer_new();
        struct http_head h;
        http_parser p;
        const char *reason;
        char *o;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                reason = NULL;
                assert_int_equal(http_parse_response(&p, bad[i], strlen(bad[i]), 16384, false, &h, &reason),
                                 -EBADMSG);
                assert_non_null(strstr(reason, "imitates"));
        }
        /* Response fields reach the client as they are: request-only names are not a framing matter. */
        assert_true(http_parse_response(&p, ok, strlen(ok), 16384, false, &h, &reason) > 0);
        assert_int_equal(http_write_response_head(out, ok, &h, NULL, false, false, false), 0);
        o = buffer_string(out);
        assert_non_null(strstr(o, "X_Backend_Thing: 1\r\nHost_: fine\r\n"));
        free(o);
        evbuffer_free(out);
}

static void test_response_transfer_encoding(void **state)
{
        static const struct {
                const char *te;
                int body; /* -1: refused */
        } cases[] = {
                { "chunked", HTTP_BODY_CHUNKED },
                { "Chunked ", HTTP_BODY_CHUNKED },
                { "gzip, chunked", HTTP_BODY_CHUNKED },
                { "gzip,,chunked", HTTP_BODY_CHUNKED },
                { "gzip", HTTP_BODY_EOF },
                { "gzip, identity", HTTP_BODY_EOF },
                { "chunked, gzip", -1 },
                { "chunked, chunked", -1 },
                { "chunked;q=1", -1 },
                { "\"chunked\"", -1 },
                { "gzip chunked", -1 },
                { ",", -1 },
        };
        struct http_head h;
        http_parser p;
        const char *reason;
        char resp[256];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int r;

                snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n", cases[i].te);
                reason = NULL;
                r = http_parse_response(&p, resp, strlen(resp), 16384, false, &h, &reason);
                if (cases[i].body < 0 ? r != -EBADMSG : (r <= 0 || (int)h.body != cases[i].body))
                        fail_msg("Transfer-Encoding: %s -> %d, body %d (%s)", cases[i].te, r, (int)h.body,
                                 reason ? reason : "-");
        }
}

static void test_response_trailers(void **state)
{
        static const char head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        static const struct {
                const char *body;
                int r;
        } cases[] = {
                { "0\r\nContent-Length: 5\r\n\r\n", -EBADMSG },
                { "0\r\nTransfer_Encoding: chunked\r\n\r\n", -EBADMSG },
                { "0\r\nHost: x\r\nX-Request-Id: y\r\nServer-Timing: z\r\n\r\n", 1 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct http_head h;
                http_parser p;
                const char *reason = NULL;
                size_t consumed;

                assert_true(http_parse_response(&p, head, strlen(head), 16384, false, &h, &reason) > 0);
                assert_int_equal(http_body_begin(&p, &h, &reason), 0);
                assert_int_equal(http_body_feed(&p, &h, cases[i].body, strlen(cases[i].body), NULL, &consumed,
                                                &reason),
                                 cases[i].r);
        }
}

static void test_request_target(void **state)
{
        struct http_head h;
        http_parser p;
        const char *reason;

        expect_bad_reason("GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", "control character in the request target");
        expect_bad_reason("GET /a\fb HTTP/1.1\r\nHost: x\r\n\r\n", "control character in the request target");
        expect_bad_reason("GET /a\vb HTTP/1.1\r\nHost: x\r\n\r\n", "control character in the request target");
        expect_bad_reason("GET /a\x01 HTTP/1.1\r\nHost: x\r\n\r\n", "control character in the request target");
        expect_bad_reason("GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n", "control character in the request target");
        expect_bad_reason("GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", "");
        expect_bad_reason("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", "non-ASCII byte in the request target");
        expect_bad_reason("GET /a\x85" "b HTTP/1.1\r\nHost: x\r\n\r\n", "non-ASCII byte in the request target");
        expect_bad_reason("GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", "fragment (#) in the request target");
        expect_bad_reason("GET * HTTP/1.1\r\nHost: x\r\n\r\n", "asterisk-form");
        expect_bad_reason("OPTIONS *x HTTP/1.1\r\nHost: x\r\n\r\n", "asterisk-form");
        expect_bad_reason("GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target");
        expect_bad_reason("GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target");
        expect_bad_reason("GET http://y/a HTTP/1.1\r\nHost: x\r\n\r\n", "Host differs");
        expect_bad_reason("GET http://x:81/a HTTP/1.1\r\nHost: x\r\n\r\n", "Host differs");
        expect_bad_reason("GET http://u@x/a HTTP/1.1\r\nHost: x\r\n\r\n", "userinfo");
        expect_bad_reason("GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n", "empty authority");
        expect_bad_reason("GET http://?a HTTP/1.1\r\nHost: x\r\n\r\n", "empty authority");

        assert_true(parse_req("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", &h, &p, &reason) > 0);
        assert_true(parse_req("GET http://X/a?b HTTP/1.1\r\nHost: x\r\n\r\n", &h, &p, &reason) > 0);
        assert_true(parse_req("GET https://x:8443 HTTP/1.1\r\nHost: x:8443\r\n\r\n", &h, &p, &reason) > 0);
        assert_true(parse_req("GET http://x/a HTTP/1.0\r\n\r\n", &h, &p, &reason) > 0);
        assert_true(parse_req("GET /a%09b?c=[d]&e={f}|g\\h HTTP/1.1\r\nHost: x\r\n\r\n", &h, &p, &reason) > 0);

        /* The Host lbd adds to an HTTP/1.0 request is the absolute-form's authority when there is one. */
        {
                struct http_forward fw = { .client_ip = "::1", .proto = "http", .request_id = "r", .host = "b" };
                char *o = forward_head("GET http://a:8080/x HTTP/1.0\r\n\r\n", &fw, NULL);

                assert_non_null(strstr(o, "\r\nHost: a:8080\r\n"));
                free(o);
                o = forward_head("GET /x HTTP/1.0\r\n\r\n", &fw, NULL);
                assert_non_null(strstr(o, "\r\nHost: b\r\n"));
                free(o);
        }
}

static void test_rejects(void **state)
{
        expect_bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        expect_bad("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        expect_bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        expect_bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        expect_bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n");
        expect_bad("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,5\r\n\r\n");
        expect_bad("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n");
        expect_bad("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        expect_bad("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n");
        expect_bad("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n");
        expect_bad("GET / HTTP/1.1\r\nHost : x\r\n\r\n");
        expect_bad("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n");
        expect_bad("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n");
        expect_bad("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7f\r\n\r\n");
        expect_bad("GET / HTTP/1.1\nHost: x\n\n");
        expect_bad("GET / HTTP/1.1\r\n\r\n");
        expect_bad("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n");
        expect_bad("G@T / HTTP/1.1\r\nHost: x\r\n\r\n");
        expect_bad("GET / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n");
        expect_bad("GET nope HTTP/1.1\r\nHost: x\r\n\r\n");
        expect_bad("GET / HTTP/1.2\r\nHost: x\r\n\r\n");
        expect_bad("GET / HTTX/1.1\r\nHost: x\r\n\r\n");
        expect_bad("GET  / HTTP/1.1\r\nHost: x\r\n\r\n");
        expect_bad("GET / HTTP/1.1 \r\nHost: x\r\n\r\n");
        expect_bad("GET /\tHTTP/1.1\r\nHost: x\r\n\r\n");
        expect_bad("GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
        expect_bad("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
}

/* The reason names the problem, whichever of http_parser or lbd's checks finds it. */
static void test_reasons(void **state)
{
        static const char *const cases[][2] = {
                { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                  "both Content-Length and Transfer-Encoding" },
                { "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                  "both Content-Length and Transfer-Encoding" },
                { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                  "more than one Content-Length" },
                { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                  "more than one Content-Length" },
                { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5a\r\n\r\n", "invalid Content-Length" },
                { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length" },
                { "GET / HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n", "invalid character in a field name" },
                { "GET / HTTP/1.1\r\nHost: x\r\nJustAWord\r\n\r\n", "field line without a colon" },
                { "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", "bare CR" },
                { "GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", "bare LF" },
                { "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01\r\n\r\n", "control character in the head" },
                { "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", "malformed request line" },
                { "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", "obsolete line folding" },
                { "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", "invalid method" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                expect_bad_reason(cases[i][0], cases[i][1]);
}

static void test_version_and_connect(void **state)
{
        struct http_head h;
        http_parser p;
        const char *reason = NULL;

        assert_int_equal(parse_req("GET / HTTP/2.0\r\nHost: x\r\n\r\n", &h, &p, &reason), -ENOTSUP);
        assert_int_equal(parse_req("CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", &h, &p, &reason), -ENOTSUP);
}

static void test_http10_keepalive(void **state)
{
        struct http_head h;
        http_parser p;
        const char *reason;

        assert_true(parse_req("GET / HTTP/1.0\r\n\r\n", &h, &p, &reason) > 0);
        assert_false(h.keep_alive);
        assert_true(parse_req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &h, &p, &reason) > 0);
        assert_true(h.keep_alive);
        assert_true(parse_req("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &h, &p, &reason) > 0);
        assert_false(h.keep_alive);
}

static void test_chunked_body_and_pipelining(void **state)
{
        const char *s = "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        const char *body = "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        struct http_head h;
        http_parser p;
        const char *reason;
        struct evbuffer *dec = evbuffer_new();
        size_t consumed = 0;
        char out[16];

        assert_int_equal(parse_req(s, &h, &p, &reason), (int)strlen(s));
        assert_int_equal(h.body, HTTP_BODY_CHUNKED);
        assert_int_equal(http_body_begin(&p, &h, &reason), 0);
        /* Byte by byte: the message ends exactly at the last chunk's CRLF. */
        for (size_t i = 0; i < strlen(body); i++) {
                int r = http_body_feed(&p, &h, body + i, 1, dec, &consumed, &reason);

                assert_true(r >= 0);
                if (r == 1) {
                        assert_int_equal(i + 1, strlen("5\r\nhello\r\n0\r\n\r\n"));
                        break;
                }
                assert_int_equal(consumed, 1);
        }
        assert_int_equal(evbuffer_get_length(dec), 5);
        evbuffer_remove(dec, out, 5);
        assert_memory_equal(out, "hello", 5);
        evbuffer_free(dec);
}

static void test_bad_chunk_size(void **state)
{
        const char *s = "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        struct http_head h;
        http_parser p;
        const char *reason;
        size_t consumed;

        assert_true(parse_req(s, &h, &p, &reason) > 0);
        assert_int_equal(http_body_begin(&p, &h, &reason), 0);
        assert_int_equal(http_body_feed(&p, &h, "zz\r\n", 4, NULL, &consumed, &reason), -EBADMSG);

        assert_true(parse_req(s, &h, &p, &reason) > 0);
        assert_int_equal(http_body_begin(&p, &h, &reason), 0);
        assert_int_equal(http_body_feed(&p, &h, "ffffffffffffffffff\r\n", 20, NULL, &consumed, &reason), -EBADMSG);
}

static int feed_chunked_reason(const char *body, size_t piece, const char **reason)
{
        const char *s = "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        struct http_head h;
        http_parser p;
        size_t consumed, off = 0, len = strlen(body);
        int r;

        assert_true(parse_req(s, &h, &p, reason) > 0);
        assert_int_equal(http_body_begin(&p, &h, reason), 0);
        do {
                size_t n = piece < len - off ? piece : len - off;

                r = http_body_feed(&p, &h, body + off, n, NULL, &consumed, reason);
                if (r < 0)
                        return r;
                off += consumed;
        } while (r == 0 && off < len);
        return r;
}

static int feed_chunked(const char *body, size_t piece)
{
        const char *reason;

        return feed_chunked_reason(body, piece, &reason);
}

static void test_chunk_framing_strict(void **state)
{
        /* Valid, whole and byte by byte (CRLF split across feeds). */
        assert_int_equal(feed_chunked("5\r\nhello\r\n0\r\n\r\n", 1000), 1);
        assert_int_equal(feed_chunked("5\r\nhello\r\n0\r\n\r\n", 1), 1);
        assert_int_equal(feed_chunked("5;a=b\r\nhello\r\n0\r\nX-T: v\r\n\r\n", 3), 1);
        /* What non-strict http_parser alone would take. */
        assert_int_equal(feed_chunked("5\r\nhelloXX0\r\n\r\n", 1000), -EBADMSG);
        assert_int_equal(feed_chunked("5\r\nhelloXX0\r\n\r\n", 1), -EBADMSG);
        assert_int_equal(feed_chunked("5\rXhello\r\n0\r\n\r\n", 1000), -EBADMSG);
        assert_int_equal(feed_chunked("5\nhello\r\n0\r\n\r\n", 1000), -EBADMSG);
        assert_int_equal(feed_chunked("5\r\nhello\r\n0\r\n\rX", 1000), -EBADMSG);
        assert_int_equal(feed_chunked("5;\x01\r\nhello\r\n0\r\n\r\n", 1000), -EBADMSG);
}

static void expect_chunked_bad(const char *body, const char *why)
{
        const char *reason = NULL;

        for (size_t piece = 1; piece <= 1000; piece += 999) {
                int r = feed_chunked_reason(body, piece, &reason);

                if (r != -EBADMSG)
                        fail_msg("accepted (%d, pieces of %zu): %s", r, piece, body);
                if (!reason || !strstr(reason, why))
                        fail_msg("reason '%s', not '%s', for: %s", reason ? reason : "(none)", why, body);
        }
}

static void test_chunk_size_and_extensions(void **state)
{
        static const char tail[] = "\r\nhello\r\n0\r\n\r\n";
        char body[2200];

        expect_chunked_bad("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", "chunk size too large");
        expect_chunked_bad("10000000000000000\r\n", "chunk size too large");
        expect_chunked_bad("1000000000000000\r\n", "chunk size too large");
        expect_chunked_bad("00000000000000005\r\nhello\r\n0\r\n\r\n", "chunk size too large");
        expect_chunked_bad("zz\r\nhello\r\n0\r\n\r\n", "invalid chunk size");
        expect_chunked_bad("-5\r\nhello\r\n0\r\n\r\n", "invalid chunk size");
        expect_chunked_bad("0x5\r\nhello\r\n0\r\n\r\n", "invalid chunk size");
        expect_chunked_bad("+5\r\nhello\r\n0\r\n\r\n", "invalid chunk size");
        expect_chunked_bad("\r\nhello\r\n0\r\n\r\n", "missing chunk size");
        expect_chunked_bad("5\nhello\r\n0\r\n\r\n", "bad line ending");
        expect_chunked_bad("5;a=b\nhello\r\n0\r\n\r\n", "bad line ending");
        expect_chunked_bad("5\r\nhello\n0\r\n\r\n", "bad line ending");
        expect_chunked_bad("5\r\nhello\r\n0\r\n\n", "bad line ending");
        expect_chunked_bad("5 x\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
        expect_chunked_bad("5 \r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
        expect_chunked_bad("5;\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
        expect_chunked_bad("5;a=\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
        expect_chunked_bad("5;a b\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
        expect_chunked_bad("5;a=\"b\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
        expect_chunked_bad("5;a=b c\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
        expect_chunked_bad("5;(a)\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
        expect_chunked_bad("5;a=\x01\r\nhello\r\n0\r\n\r\n", "control character in chunked framing");
        expect_chunked_bad("5\r\nhello\r\n0\r\n X: y\r\n\r\n", "invalid character in a trailer field name");
        expect_chunked_bad("5\r\nhello\r\n0\r\nX: y\r\n\tz\r\n\r\n", "obsolete line folding");
        expect_chunked_bad("5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n", "Content-Length (or a look-alike) in the trailers");
        expect_chunked_bad("5\r\nhello\r\n0\r\nX-T: 1\r\ntransfer_ENCODING_: chunked\r\n\r\n",
                           "Transfer-Encoding (or a look-alike) in the trailers");
        expect_chunked_bad("0\r\nHost: a\r\n\r\n", "Host (or a look-alike) in the trailers");
        expect_chunked_bad("0\r\nX--Forwarded--For: a\r\n\r\n", "X-Forwarded-For (or a look-alike) in the trailers");
        memset(body, 'a', sizeof(body));
        memcpy(body, "5;x=", 4);
        memcpy(body + sizeof(body) - sizeof(tail), tail, sizeof(tail));
        expect_chunked_bad(body, "chunk extension too long");

        /* The whole grammar, whole and byte by byte. */
        for (size_t piece = 1; piece <= 1000; piece += 999) {
                const char *reason = NULL;

                assert_int_equal(feed_chunked_reason("5 ;a\r\nhello\r\n0\r\n\r\n", piece, &reason), 1);
                assert_int_equal(feed_chunked_reason("5;a=b;c ; d = \"e;\\\"f\" ;g\r\nhello\r\n0;x\r\n\r\n", piece,
                                                     &reason),
                                 1);
                assert_int_equal(feed_chunked_reason("000005\r\nhello\r\nA\r\n0123456789\r\n000\r\n\r\n",
                                                     piece, &reason),
                                 1);
                assert_int_equal(feed_chunked_reason("fffffffffffffff\r\n", piece, &reason), 0);
                assert_int_equal(feed_chunked_reason("0\r\nX-Content-Length: 1\r\nContent-Lengths: 2\r\n"
                                                     "Server-Timing: x\r\n\r\n",
                                                     piece, &reason),
                                 1);
        }
}

static void test_content_length_body(void **state)
{
        const char *s = "PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET";
        struct http_head h;
        http_parser p;
        const char *reason;
        size_t consumed;
        int n;

        n = parse_req(s, &h, &p, &reason);
        assert_true(n > 0);
        assert_int_equal(h.body, HTTP_BODY_LENGTH);
        assert_int_equal(h.content_length, 3);
        assert_int_equal(http_body_begin(&p, &h, &reason), 0);
        assert_int_equal(http_body_feed(&p, &h, s + n, strlen(s) - (size_t)n, NULL, &consumed, &reason), 1);
        assert_int_equal(consumed, 3);
}

static char *buffer_string(struct evbuffer *b)
{
        size_t n = evbuffer_get_length(b);
        char *s = malloc(n + 1);

        assert_non_null(s);
        evbuffer_remove(b, s, n);
        s[n] = 0;
        return s;
}

/* Parses request <s> (which must be valid), writes the head lbd forwards, and returns it (caller frees).
 * *<ret_h> gets the parsed head when not NULL. */
static char *forward_head(const char *s, const struct http_forward *fw, struct http_head *ret_h)
{
        struct evbuffer *out = evbuffer_new();
        struct http_head h;
        http_parser p;
        const char *reason;
        char *o;

        assert_non_null(out);
        assert_true(parse_req(s, &h, &p, &reason) > 0);
        assert_int_equal(http_write_request_head(out, s, &h, fw), 0);
        o = buffer_string(out);
        evbuffer_free(out);
        if (ret_h)
                *ret_h = h;
        return o;
}

static void test_write_request_head(void **state)
{
        const char *s = "GET /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
                        "Keep-Alive: timeout=5\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
                        "TE: trailers\r\nUpgrade: websocket\r\nAccept: */*\r\n\r\n";
        struct http_forward fw = { .client_ip = "127.0.0.1", .proto = "http", .request_id = "rid" };
        char *o = forward_head(s, &fw, NULL);

        assert_string_equal(o, "GET /x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
                               "X-Forwarded-For: 1.2.3.4, 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                               "X-Request-Id: rid\r\n\r\n");
        free(o);
}

static void test_upgrade_request_head(void **state)
{
        const char *s = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
                        "Sec-WebSocket-Key: k\r\n\r\n";
        struct http_forward fw = { .client_ip = "127.0.0.1", .proto = "http", .request_id = "rid" };
        struct http_head h;
        char *o = forward_head(s, &fw, &h);

        assert_true(h.upgrade);
        assert_string_equal(o, "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n"
                               "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                               "X-Request-Id: rid\r\nConnection: Upgrade\r\n\r\n");
        free(o);
}

static void test_upgrade_needs_all_its_parts(void **state)
{
        static const char *const plain[] = {
                /* no Connection token */
                "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
                /* no Upgrade field */
                "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n",
                /* two Upgrade fields */
                "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: a\r\nUpgrade: b\r\n\r\n",
                /* not a GET, or with a body */
                "POST /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: a\r\nContent-Length: 1\r\n\r\n",
                /* HTTP/1.0 */
                "GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: a\r\n\r\n",
        };
        struct http_head h;
        http_parser p;
        const char *reason;

        for (size_t i = 0; i < ELEMENTSOF(plain); i++) {
                struct http_forward fw = { .client_ip = "::1", .proto = "http", .request_id = "r", .host = "h" };
                char *o = forward_head(plain[i], &fw, &h);

                assert_false(h.upgrade);
                assert_null(strcasestr(o, "upgrade"));
                free(o);
        }
        /* An empty Upgrade is malformed. */
        assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade:\r\n\r\n", &h, &p,
                                   &reason),
                         -EBADMSG);
}

static void test_upgrade_allow_list(void **state)
{
        static const struct {
                const char *upgrade, *allowed;
                bool ok;
        } cases[] = {
                { "websocket", "websocket", true },
                { "WebSocket", "websocket", true },
                { "websocket", "WEBSOCKET", true },
                { "websocket/13", "websocket", true },
                { "websocket/13", "websocket/13", true },
                { "websocket", "h2c,websocket", true },
                { "websocket, h2c", "h2c,websocket", true },
                { "websocket,, ", "websocket", true },
                { "websocket/13", "websocket/12", false },
                { "websocket", "websocket/13", false },
                { "h2c", "websocket", false },
                { "H2C", "websocket", false },
                { "websocket, h2c", "websocket", false },
                { "h2c, websocket", "websocket", false },
                { "websocket", "", false },
                { "websocketx", "websocket", false },
                { "websocke", "websocket", false },
                { "web socket", "websocket", false },
                { "/13", "websocket", false },
                { "websocket/", "websocket", false },
                { "websocket/1/2", "websocket", false },
                { "websocket;x", "websocket", false },
                { ",", "websocket", false },
        };
        struct http_head h;
        http_parser p;
        const char *reason;
        char req[256];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                snprintf(req, sizeof(req), "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: UPGRADE\r\nUpgrade: %s\r\n\r\n",
                         cases[i].upgrade);
                assert_true(parse_req(req, &h, &p, &reason) > 0);
                assert_true(h.upgrade);
                if (http_upgrade_allowed(req, &h, cases[i].allowed) != cases[i].ok)
                        fail_msg("Upgrade: %s with '%s' allowed: %s", cases[i].upgrade, cases[i].allowed,
                                 cases[i].ok ? "refused" : "allowed");
        }
        /* Not an upgrade at all: nothing to allow. */
        assert_true(parse_req("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", &h, &p, &reason) > 0);
        assert_false(http_upgrade_allowed("", &h, "websocket"));
}

/* The h2c smuggling request: refused by the list, it goes as a plain request, with none of its upgrade
 * fields; HTTP2-Settings is dropped even when Connection does not name it. */
static void test_h2c_forwarded_as_plain(void **state)
{
        static const char *const reqs[] = {
                "GET /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
                "GET /x HTTP/1.1\r\nHost: h\r\nconnection: upgrade\r\nupgrade: h2c\r\n"
                "http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
                "GET /x HTTP/1.1\r\nHost: h\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        };
        struct http_forward fw = { .client_ip = "127.0.0.1", .proto = "http", .request_id = "rid" };

        for (size_t i = 0; i < ELEMENTSOF(reqs); i++) {
                struct evbuffer *out = evbuffer_new();
                struct http_head h;
                http_parser p;
                const char *reason;
                char *o;

                assert_true(parse_req(reqs[i], &h, &p, &reason) > 0);
                assert_false(http_upgrade_allowed(reqs[i], &h, "websocket"));
                h.upgrade = false; /* what proxy.c does with a protocol not on the list */
                assert_int_equal(http_write_request_head(out, reqs[i], &h, &fw), 0);
                o = buffer_string(out);
                assert_string_equal(o, "GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 127.0.0.1\r\n"
                                       "X-Forwarded-Proto: http\r\nX-Request-Id: rid\r\n\r\n");
                free(o);
                evbuffer_free(out);
        }
}

static void test_upgrade_response(void **state)
{
        const char *h2c = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n";
        const char *ws = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n";
        struct http_head h;
        http_parser p;
        const char *reason = NULL;

        assert_true(http_parse_response(&p, h2c, strlen(h2c), 16384, false, &h, &reason) > 0);
        assert_true(h.upgrade);
        assert_false(http_upgrade_allowed(h2c, &h, "websocket"));
        assert_true(http_parse_response(&p, ws, strlen(ws), 16384, false, &h, &reason) > 0);
        assert_true(h.upgrade);
        assert_true(http_upgrade_allowed(ws, &h, "websocket"));
        assert_false(http_upgrade_allowed(ws, &h, ""));
}

static void test_connection_cannot_strip_framing(void **state)
{
        const char *s = "POST /x HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n";
        struct http_forward fw = { .client_ip = "::1", .proto = "http", .request_id = "r" };
        char *o = forward_head(s, &fw, NULL);

        assert_non_null(strstr(o, "Content-Length: 2\r\n"));
        free(o);
}

static void test_response(void **state)
{
        const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: x\r\n\r\nok";
        struct evbuffer *out = evbuffer_new();
        struct http_head h;
        http_parser p;
        const char *reason = NULL;
        char *o;
        int n;

        n = http_parse_response(&p, s, strlen(s), 16384, false, &h, &reason);
        assert_true(n > 0);
        assert_int_equal(h.status, 200);
        assert_int_equal(h.body, HTTP_BODY_LENGTH);
        assert_true(h.keep_alive);
        assert_int_equal(http_write_response_head(out, s, &h, "rid", false, true, false), 0);
        o = buffer_string(out);
        assert_string_equal(o, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: rid\r\nConnection: close\r\n\r\n");
        free(o);

        /* A HEAD response has no body whatever its Content-Length says. */
        n = http_parse_response(&p, s, strlen(s), 16384, true, &h, &reason);
        assert_true(n > 0);
        assert_int_equal(h.body, HTTP_BODY_NONE);
        assert_int_equal(http_body_begin(&p, &h, &reason), 1);

        /* No framing: delimited by close. */
        s = "HTTP/1.1 200 OK\r\n\r\nabc";
        n = http_parse_response(&p, s, strlen(s), 16384, false, &h, &reason);
        assert_true(n > 0);
        assert_int_equal(h.body, HTTP_BODY_EOF);
        assert_false(h.keep_alive);
        evbuffer_free(out);
}

static void test_error(void **state)
{
        struct evbuffer *out = evbuffer_new();
        char *o;

        assert_int_equal(http_write_error(out, 503, "no healthy backend", "id1", true), 44);
        o = buffer_string(out);
        assert_non_null(strstr(o, "HTTP/1.1 503 Service Unavailable\r\n"));
        assert_non_null(strstr(o, "Connection: close\r\n"));
        assert_non_null(strstr(o, "X-Request-Id: id1\r\n"));
        assert_non_null(strstr(o, "\r\n\r\n503 Service Unavailable: no healthy backend\n"));
        free(o);
        evbuffer_free(out);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_simple_get),
                cmocka_unit_test(test_upgrade_request_head),
                cmocka_unit_test(test_upgrade_needs_all_its_parts),
                cmocka_unit_test(test_incomplete_and_too_large),
                cmocka_unit_test(test_rejects),
                cmocka_unit_test(test_reasons),
                cmocka_unit_test(test_version_and_connect),
                cmocka_unit_test(test_http10_keepalive),
                cmocka_unit_test(test_chunked_body_and_pipelining),
                cmocka_unit_test(test_bad_chunk_size),
                cmocka_unit_test(test_chunk_framing_strict),
                cmocka_unit_test(test_content_length_body),
                cmocka_unit_test(test_write_request_head),
                cmocka_unit_test(test_connection_cannot_strip_framing),
                cmocka_unit_test(test_upgrade_allow_list),
                cmocka_unit_test(test_h2c_forwarded_as_plain),
                cmocka_unit_test(test_upgrade_response),
                cmocka_unit_test(test_field_names_imitating_known_ones),
                cmocka_unit_test(test_underscore_names_are_not_forwarded),
                cmocka_unit_test(test_response_field_names),
                cmocka_unit_test(test_response_transfer_encoding),
                cmocka_unit_test(test_response_trailers),
                cmocka_unit_test(test_request_target),
                cmocka_unit_test(test_chunk_size_and_extensions),
                cmocka_unit_test(test_response),
                cmocka_unit_test(test_error),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
