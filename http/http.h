/* HTTP/1.1 messages: parsing heads and framing bodies with http_parser (Debian's libhttp-parser), plus
 * the checks it lacks, and writing the heads lbd forwards.
 *
 * Heads are parsed from one contiguous buffer that the caller keeps alive while it uses the result; fields
 * are offsets into it. The parse is all or nothing: a head is complete, incomplete (call again with more
 * bytes, from the start), or rejected with a short reason. What is accepted is unambiguous (RFC 9112): one
 * framing, token field names, no obs-fold, no bare LF, no control characters, one Host.
 *
 * Bodies: after a head, http_body_begin() then http_body_feed() on each piece of input, with the same
 * head; the parser says where the message ends, so pipelined bytes after it are left alone. */
#pragma once

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define HTTP_MAX_FIELDS 100

enum http_body_kind {
        HTTP_BODY_NONE,    /* no body */
        HTTP_BODY_LENGTH,  /* Content-Length bytes */
        HTTP_BODY_CHUNKED, /* chunked coding */
        HTTP_BODY_EOF,     /* response delimited by the connection closing */
};

struct http_field {
        uint32_t name_off, name_len;
        uint32_t value_off, value_len; /* trimmed */
};

struct http_head {
        size_t head_len;            /* bytes up to and including the empty line */
        unsigned major, minor;
        /* request */
        enum http_method method;
        uint32_t target_off, target_len;
        /* response */
        unsigned status;
        uint32_t reason_off, reason_len;

        struct http_field fields[HTTP_MAX_FIELDS];
        size_t n_fields;
        uint64_t hop_by_hop[(HTTP_MAX_FIELDS + 63) / 64]; /* bit i set: fields[i] is not forwarded */

        enum http_body_kind body;
        uint64_t content_length;
        bool keep_alive;            /* the sender is willing to keep the connection open */
        bool expect_continue;       /* request: Expect: 100-continue */
        bool upgrade;               /* request: an HTTP/1.1 GET without a body asking, with Connection: upgrade
                                     * and one Upgrade field, to switch protocols; response: 101 with one
                                     * Upgrade. The Upgrade field is then forwarded, with "Connection:
                                     * Upgrade"; the caller clears it for a protocol it does not allow
                                     * (http_upgrade_allowed()), and the request goes as a plain one. */
        int upgrade_field;          /* index of the Upgrade field when <upgrade>, else -1 */
        int host;                   /* index of the Host field, -1 if none */
        int request_id;             /* index of a sane X-Request-Id field, -1 if none */
        /* body: where the chunked framing is (http.c), kept here as a line may straddle two reads */
        uint8_t chunk_state;
        uint8_t chunk_digits;       /* hex digits of the current chunk size, and those after leading zeros */
        uint8_t chunk_significant;
        uint16_t chunk_line;        /* bytes of the current chunk-size line or trailer section so far */
        uint8_t trailer_name_len;   /* of the current trailer field's name, folded (UINT8_MAX: too long) */
        char trailer_name[20];
};

/* Parses the request head at the start of <buf> (<len> bytes available). Returns the head length (> 0)
 * when complete, 0 when more bytes are needed and <len> < <max>, -EMSGSIZE when it exceeds <max> bytes or
 * HTTP_MAX_FIELDS fields (431), -EBADMSG when malformed (400) with *ret_reason set, -ENOTSUP for a
 * version other than 1.x (505) or a method lbd does not proxy (CONNECT: 405; *ret_reason says which).
 * <parser> is left paused at the head's end, ready for http_body_begin(). */
int http_parse_request(http_parser *parser, const char *buf, size_t len, size_t max, struct http_head *h,
                       const char **ret_reason);

/* Same for a response head. <head_request>: the request was HEAD (no body follows). Returns as above;
 * -EBADMSG for anything malformed. */
int http_parse_response(http_parser *parser, const char *buf, size_t len, size_t max, bool head_request,
                        struct http_head *h, const char **ret_reason);

/* Starts the body after a parsed head. Returns 1 when the message is already complete (no body), 0 when
 * body bytes follow, -EBADMSG on a framing error (*ret_reason). */
int http_body_begin(http_parser *parser, struct http_head *h, const char **ret_reason);

/* Feeds <len> body bytes. Sets *ret_consumed to the bytes that belong to this message (the rest is the
 * next message) and returns 1 when the message ended with them, 0 when more is expected, -EBADMSG on bad
 * framing (*ret_reason). When <decoded> is not NULL, the body's data (without chunk framing) is appended
 * to it. For HTTP_BODY_EOF call http_body_eof() when the connection closes. */
int http_body_feed(http_parser *parser, struct http_head *h, const char *data, size_t len,
                   struct evbuffer *decoded, size_t *ret_consumed, const char **ret_reason);

/* Tells the parser that the peer closed; returns 1 if that completes the message (EOF-delimited), else
 * -EBADMSG (truncated). */
int http_body_eof(http_parser *parser, struct http_head *h);

/* Field helpers; <buf> is the buffer the head was parsed from. http_field_name_is() takes a string
 * literal (its length is known at compile time); names compare case-insensitively. */
bool http_field_name_eq(const char *buf, const struct http_field *f, const char *name, size_t len);
#define http_field_name_is(buf, f, literal) http_field_name_eq(buf, f, "" literal, sizeof(literal) - 1)
bool http_head_is_hop_by_hop(const struct http_head *h, size_t i);

/* Whether the upgrade <h> asks for (a request) or grants (a 101) may go through: every protocol its
 * Upgrade field lists ("name" or "name/version", RFC 9110 7.8) is on <allowed>, a comma-separated list of
 * such tokens compared case-insensitively ("websocket"; "" allows none). An entry without a version allows
 * every version of the protocol. False when <h> is not an upgrade or its Upgrade field is malformed. */
bool http_upgrade_allowed(const char *buf, const struct http_head *h, const char *allowed);

/* Is <s> (<n> bytes) a token (RFC 9110 5.6.2): one or more of the characters a field name may hold? */
bool http_is_token(const char *s, size_t n);

/* True for methods that are idempotent (RFC 9110 9.2.2): safe to send twice. */
bool http_method_idempotent(enum http_method m);

/* What lbd adds when it forwards a request. */
struct http_forward {
        const char *client_ip;      /* appended to X-Forwarded-For */
        const char *proto;          /* X-Forwarded-Proto */
        const char *request_id;     /* X-Request-Id (kept or generated) */
        const char *host;           /* Host to add when the request has none (HTTP/1.0), or NULL */
};

/* Appends the request head to forward: request line as HTTP/1.1, fields without hop-by-hop ones and
 * without the X-Forwarded-* and X-Request-Id lbd sets itself, then those. Returns 0, -ENOMEM, or
 * -EMSGSIZE when the fields lbd adds would take the head past HTTP_MAX_FIELDS (answer 431). */
int http_write_request_head(struct evbuffer *out, const char *buf, const struct http_head *h,
                            const struct http_forward *fw);

/* Appends the response head to send to the client: status line, fields without hop-by-hop ones (and
 * without Transfer-Encoding when <dechunk>), X-Request-Id when the backend gave none, then
 * "Connection: close" when <close>, or "Connection: keep-alive" for an HTTP/1.0 client that keeps it. */
int http_write_response_head(struct evbuffer *out, const char *buf, const struct http_head *h,
                             const char *request_id, bool dechunk, bool close, bool client_http10);

/* Appends a complete response made by lbd itself: "<status> <reason>: <detail>\n" as text/plain, with
 * X-Request-Id when not NULL, and "Connection: close" when <close>. Returns the body's length, or
 * -ENOMEM. */
int http_write_error(struct evbuffer *out, unsigned status, const char *detail, const char *request_id,
                     bool close);

/* The standard reason phrase, "Unknown" for others. */
const char *http_status_reason(unsigned status);
