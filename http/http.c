/* HTTP/1.1 message parsing and writing (see http.h).
 *
 * http_parser does the tokenising and the body framing (Content-Length, chunked, EOF). Debian builds it
 * without HTTP_PARSER_STRICT, so on top of it every accepted head is checked here: the raw bytes (no
 * control characters, CRLF only, no obs-fold), the request target (visible ASCII, one of the forms),
 * field names (tokens only, which also refuses "Host : x", and none that folds into a field lbd acts on:
 * http_check_name()), and the framing fields (one Content-Length of digits, Transfer-Encoding exactly
 * "chunked" in requests, never both, one Host). Chunked bodies are held to the chunk grammar byte by byte
 * (http_scan_framing()). A message that passes has one meaning for every recipient, so a request can't
 * be smuggled past lbd to a backend that reads it differently.
 *
 * Parsing state lives in the caller's http_parser; parser->data points at a context on our stack only for
 * the duration of one call. */
#include "http/http.h"

#include <errno.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/macro.h"

struct http_ctx {
        struct http_head *h;
        const char *buf;
        struct evbuffer *decoded;
        const char *scan_from;    /* chunked body: framing bytes from here are not checked yet */
        bool chunked;
        const char *reason;
        bool in_value;    /* the last field callback was a value */
        bool too_many;    /* more than HTTP_MAX_FIELDS */
        bool trailers;    /* body mode: fields are trailers */
        bool head_request;
        bool request;     /* body mode: the message is a request */
        bool done;        /* message complete */
};

/* Where the chunked framing scanner is (http_scan_framing()): RFC 9112 7.1,
 *   chunk-size [ chunk-ext ] CRLF chunk-data CRLF ... last-chunk trailer-section CRLF
 *   chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) */
enum {
        HTTP_CH_SIZE_START,  /* the first hex digit of a chunk size */
        HTTP_CH_SIZE,        /* more hex digits, an extension, or CR */
        HTTP_CH_EXT_BWS,     /* blanks after the size or a value: only more of them or ';' */
        HTTP_CH_EXT_NAME0,   /* after ';': blanks, then the name's first character */
        HTTP_CH_EXT_NAME,
        HTTP_CH_EXT_EQ,      /* blanks after a name: '=' must follow */
        HTTP_CH_EXT_VALUE0,  /* after '=': blanks, then a token or a quoted string */
        HTTP_CH_EXT_TOKEN,
        HTTP_CH_EXT_QUOTED,
        HTTP_CH_EXT_PAIR,    /* after a backslash in a quoted string */
        HTTP_CH_EXT_QEND,    /* after the closing quote */
        HTTP_CH_SIZE_LF,     /* CR seen at the end of a size line */
        HTTP_CH_DATA,        /* chunk data: the parser's, never scanned */
        HTTP_CH_DATA_CR,     /* CRLF after the data */
        HTTP_CH_DATA_LF,
        HTTP_CH_TRAILER0,    /* start of a trailer line, or of the final CRLF */
        HTTP_CH_TRAILER_NAME,
        HTTP_CH_TRAILER,     /* after the name's colon */
        HTTP_CH_TRAILER_LF,
        HTTP_CH_END_LF,      /* CR of the final CRLF seen */
        HTTP_CH_DONE,
};

/* The states that take one exact byte: which, and the state after it. */
static const struct {
        char byte;
        uint8_t next;
} http_ch_exact[HTTP_CH_DONE] = {
        [HTTP_CH_DATA_CR] = { '\r', HTTP_CH_DATA_LF },
        [HTTP_CH_DATA_LF] = { '\n', HTTP_CH_SIZE_START },
        [HTTP_CH_TRAILER_LF] = { '\n', HTTP_CH_TRAILER0 },
        [HTTP_CH_END_LF] = { '\n', HTTP_CH_DONE },
};

#define HTTP_CHUNK_DIGITS_MAX      16   /* hex digits of a chunk size, leading zeros included */
#define HTTP_CHUNK_SIGNIFICANT_MAX 15   /* without them: below 2^60, http_parser's own bound */
#define HTTP_CHUNK_LINE_MAX        1024 /* a chunk-size line with its extensions, CRLF excluded */
#define HTTP_TRAILERS_MAX          16384 /* the trailer section */

/* Byte classes, looked up per byte of every head: a table is what keeps the checks off the profile. */
enum {
        HTTP_C_TCHAR = 1 << 0,   /* RFC 9110 5.6.2 token character */
        HTTP_C_HOST = 1 << 1,    /* allowed in a Host value */
        HTTP_C_SPECIAL = 1 << 2, /* CR, LF, or a control character other than HTAB: see http_check_raw() */
        HTTP_C_ID = 1 << 3,      /* allowed in an X-Request-Id we keep */
        HTTP_C_TARGET = 1 << 4,  /* allowed in a request target (http_check_target()) */
        HTTP_C_DASH = 1 << 5,    /* '-', and '_' below: see http_check_name() */
        HTTP_C_UNDERSCORE = 1 << 6,
};

#define HTTP_ALNUM_CLASS(c) \
        (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || ((c) >= '0' && (c) <= '9'))
#define HTTP_CLASS(c)                                                                                         \
        (uint8_t)((HTTP_ALNUM_CLASS(c) || strchr_const("!#$%&'*+-.^_`|~", c) ? HTTP_C_TCHAR : 0) |            \
                  (HTTP_ALNUM_CLASS(c) || strchr_const("-._~!$&'()*+,;=:[]%", c) ? HTTP_C_HOST : 0) |         \
                  (((c) < 0x20 && (c) != '\t') || (c) == 0x7f ? HTTP_C_SPECIAL : 0) |                           \
                  (HTTP_ALNUM_CLASS(c) || strchr_const("._:-", c) ? HTTP_C_ID : 0) |                           \
                  ((c) > 0x20 && (c) < 0x7f && (c) != '#' ? HTTP_C_TARGET : 0) |                              \
                  ((c) == '-' ? HTTP_C_DASH : 0) | ((c) == '_' ? HTTP_C_UNDERSCORE : 0))

static uint8_t http_class[256];

static bool strchr_const(const char *set, int c)
{
        return c != 0 && strchr(set, c) != NULL;
}

__attribute__((constructor)) static void http_class_init(void)
{
        for (int c = 0; c < 256; c++)
                http_class[c] = HTTP_CLASS(c);
}

static inline bool http_tchar(unsigned char c)
{
        return http_class[c] & HTTP_C_TCHAR;
}

bool http_is_token(const char *s, size_t n)
{
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!http_tchar((unsigned char)s[i]))
                        return false;
        return true;
}

static int http_on_url(http_parser *p, const char *at, size_t len)
{
        struct http_ctx *ctx = p->data;

        if (ctx->h->target_len == 0)
                ctx->h->target_off = (uint32_t)(at - ctx->buf);
        ctx->h->target_len += (uint32_t)len;
        return 0;
}

static int http_on_status(http_parser *p, const char *at, size_t len)
{
        struct http_ctx *ctx = p->data;

        if (ctx->h->reason_len == 0)
                ctx->h->reason_off = (uint32_t)(at - ctx->buf);
        ctx->h->reason_len += (uint32_t)len;
        return 0;
}

static int http_on_header_field(http_parser *p, const char *at, size_t len)
{
        struct http_ctx *ctx = p->data;
        struct http_head *h = ctx->h;

        if (ctx->trailers) {
                /* Trailers are forwarded as received: their names must still be tokens. */
                for (size_t i = 0; i < len; i++)
                        if (!http_tchar((unsigned char)at[i])) {
                                ctx->reason = "invalid character in a trailer field name";
                                return -1;
                        }
                return 0;
        }
        if (ctx->in_value || h->n_fields == 0) {
                if (h->n_fields >= HTTP_MAX_FIELDS) {
                        ctx->too_many = true;
                        return -1;
                }
                h->fields[h->n_fields++] = (struct http_field){
                        .name_off = (uint32_t)(at - ctx->buf),
                };
                ctx->in_value = false;
        }
        h->fields[h->n_fields - 1].name_len += (uint32_t)len;
        return 0;
}

static int http_on_header_value(http_parser *p, const char *at, size_t len)
{
        struct http_ctx *ctx = p->data;
        struct http_field *f;

        if (ctx->trailers)
                return 0;
        f = &ctx->h->fields[ctx->h->n_fields - 1];
        if (!ctx->in_value) {
                f->value_off = (uint32_t)(at - ctx->buf);
                f->value_len = 0;
                ctx->in_value = true;
        }
        f->value_len += (uint32_t)len;
        return 0;
}

static int http_on_headers_complete(http_parser *p)
{
        struct http_ctx *ctx = p->data;

        http_parser_pause(p, 1);
        /* 1 = no body follows (the response to a HEAD request). */
        return ctx->head_request ? 1 : 0;
}

static const char *http_trailer_name_check(const char *name, size_t n, bool request);

/* Adds byte <c> of a trailer field's name to h->trailer_name, folded as http_check_name() folds names:
 * lower case, a run of '-' and '_' as one '-', none at the start. */
static void http_trailer_name_add(struct http_head *h, unsigned char c)
{
        uint8_t *n = &h->trailer_name_len;

        if (*n == UINT8_MAX)
                return;
        if (c == '-' || c == '_') {
                if (*n == 0 || h->trailer_name[*n - 1] == '-')
                        return;
                c = '-';
        }
        if (*n >= sizeof(h->trailer_name)) {
                *n = UINT8_MAX;
                return;
        }
        h->trailer_name[(*n)++] = (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
}

/* Chunked framing (size lines, the CRLF after each chunk's data, trailers): http_parser built without
 * HTTP_PARSER_STRICT takes any byte where it expects LF after CR, or CR after chunk data, and anything at
 * all after a chunk size and a blank or ';'. So every byte outside the chunk data goes through here and
 * must follow the grammar above: hex digits (bounded), well-formed extensions (bounded), CRLF only (LF only
 * after CR, CR only before LF), no control characters, trailer lines without obs-fold (their names are
 * checked in http_on_header_field()). The state lives in the head, as a line may straddle two reads.
 * Returns 0, or -1 with ctx->reason set. */
static int http_scan_framing(struct http_ctx *ctx, const char *from, const char *to)
{
        struct http_head *h = ctx->h;

        for (const char *q = from; q < to; q++) {
                unsigned char c = (unsigned char)*q;
                bool blank = c == ' ' || c == '\t';
                uint8_t st = h->chunk_state;

                if (c == '\n' && st != HTTP_CH_SIZE_LF && st != HTTP_CH_DATA_LF &&
                    st != HTTP_CH_TRAILER_LF && st != HTTP_CH_END_LF)
                        goto bad_eol;
                if (c == '\r' && st == HTTP_CH_SIZE_START) {
                        ctx->reason = "missing chunk size";
                        return -1;
                }
                if (c != '\r' && c != '\n' && http_class[c] & HTTP_C_SPECIAL) {
                        ctx->reason = "control character in chunked framing";
                        return -1;
                }
                if (st < HTTP_CH_SIZE_LF && ++h->chunk_line > HTTP_CHUNK_LINE_MAX) {
                        ctx->reason = "chunk extension too long";
                        return -1;
                }
                if (st >= HTTP_CH_TRAILER0 && st <= HTTP_CH_END_LF && ++h->chunk_line > HTTP_TRAILERS_MAX) {
                        ctx->reason = "trailer section too large";
                        return -1;
                }
                if (c == '\r' && st < HTTP_CH_SIZE_LF) {
                        if (st != HTTP_CH_SIZE && st != HTTP_CH_EXT_NAME && st != HTTP_CH_EXT_TOKEN &&
                            st != HTTP_CH_EXT_QEND)
                                goto bad_ext;
                        h->chunk_state = HTTP_CH_SIZE_LF;
                        continue;
                }

                switch (st) {
                case HTTP_CH_SIZE_START:
                case HTTP_CH_SIZE: {
                        int v = c >= '0' && c <= '9'   ? c - '0'
                                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                       : -1;

                        if (v >= 0) {
                                if (v > 0 || h->chunk_significant > 0)
                                        h->chunk_significant++;
                                if (++h->chunk_digits > HTTP_CHUNK_DIGITS_MAX ||
                                    h->chunk_significant > HTTP_CHUNK_SIGNIFICANT_MAX) {
                                        ctx->reason = "chunk size too large";
                                        return -1;
                                }
                                h->chunk_state = HTTP_CH_SIZE;
                        } else if (st == HTTP_CH_SIZE && blank)
                                h->chunk_state = HTTP_CH_EXT_BWS;
                        else if (st == HTTP_CH_SIZE && c == ';')
                                h->chunk_state = HTTP_CH_EXT_NAME0;
                        else {
                                ctx->reason = "invalid chunk size";
                                return -1;
                        }
                        break;
                }
                case HTTP_CH_EXT_BWS:
                case HTTP_CH_EXT_QEND:
                case HTTP_CH_EXT_TOKEN:
                        if (st == HTTP_CH_EXT_TOKEN && http_tchar(c))
                                break;
                        if (c == ';')
                                h->chunk_state = HTTP_CH_EXT_NAME0;
                        else if (blank)
                                h->chunk_state = HTTP_CH_EXT_BWS;
                        else
                                goto bad_ext;
                        break;
                case HTTP_CH_EXT_NAME0:
                case HTTP_CH_EXT_NAME:
                        if (http_tchar(c))
                                h->chunk_state = HTTP_CH_EXT_NAME;
                        else if (st == HTTP_CH_EXT_NAME0 && blank)
                                break;
                        else if (st == HTTP_CH_EXT_NAME && blank)
                                h->chunk_state = HTTP_CH_EXT_EQ;
                        else if (st == HTTP_CH_EXT_NAME && c == '=')
                                h->chunk_state = HTTP_CH_EXT_VALUE0;
                        else if (st == HTTP_CH_EXT_NAME && c == ';')
                                h->chunk_state = HTTP_CH_EXT_NAME0;
                        else
                                goto bad_ext;
                        break;
                case HTTP_CH_EXT_EQ:
                        if (c == '=')
                                h->chunk_state = HTTP_CH_EXT_VALUE0;
                        else if (c == ';')
                                h->chunk_state = HTTP_CH_EXT_NAME0;
                        else if (!blank)
                                goto bad_ext;
                        break;
                case HTTP_CH_EXT_VALUE0:
                        if (c == '"')
                                h->chunk_state = HTTP_CH_EXT_QUOTED;
                        else if (http_tchar(c))
                                h->chunk_state = HTTP_CH_EXT_TOKEN;
                        else if (!blank)
                                goto bad_ext;
                        break;
                case HTTP_CH_EXT_QUOTED:
                        /* qdtext: anything left after the control characters, but '"' and '\\' */
                        if (c == '"')
                                h->chunk_state = HTTP_CH_EXT_QEND;
                        else if (c == '\\')
                                h->chunk_state = HTTP_CH_EXT_PAIR;
                        break;
                case HTTP_CH_EXT_PAIR:
                        h->chunk_state = HTTP_CH_EXT_QUOTED;
                        break;
                case HTTP_CH_SIZE_LF:
                        if (c != '\n')
                                goto bad_eol;
                        h->chunk_state = h->chunk_significant == 0 ? HTTP_CH_TRAILER0 : HTTP_CH_DATA;
                        h->chunk_digits = h->chunk_significant = 0;
                        h->chunk_line = 0;
                        break;
                case HTTP_CH_DATA:
                        /* http_parser hands every data byte to http_on_body(): this is a framing bug. */
                        ctx->reason = "bad chunked framing";
                        return -1;
                case HTTP_CH_DATA_CR:
                case HTTP_CH_DATA_LF:
                case HTTP_CH_TRAILER_LF:
                case HTTP_CH_END_LF:
                        if (c != http_ch_exact[st].byte)
                                goto bad_eol;
                        h->chunk_state = http_ch_exact[st].next;
                        break;
                case HTTP_CH_TRAILER0:
                        if (blank) {
                                ctx->reason = "obsolete line folding in the trailers";
                                return -1;
                        }
                        h->trailer_name_len = 0;
                        if (c == '\r')
                                h->chunk_state = HTTP_CH_END_LF;
                        else {
                                http_trailer_name_add(h, c);
                                h->chunk_state = HTTP_CH_TRAILER_NAME;
                        }
                        break;
                case HTTP_CH_TRAILER_NAME:
                        /* Other bytes than a token's are http_on_header_field()'s to refuse. */
                        if (c == ':') {
                                size_t n = h->trailer_name_len;

                                while (n > 0 && n != UINT8_MAX && h->trailer_name[n - 1] == '-')
                                        n--;
                                if (n != UINT8_MAX)
                                        ctx->reason = http_trailer_name_check(h->trailer_name, n, ctx->request);
                                if (ctx->reason)
                                        return -1;
                                h->chunk_state = HTTP_CH_TRAILER;
                        } else if (c == '\r')
                                h->chunk_state = HTTP_CH_TRAILER_LF;
                        else
                                http_trailer_name_add(h, c);
                        break;
                case HTTP_CH_TRAILER:
                        if (c == '\r')
                                h->chunk_state = HTTP_CH_TRAILER_LF;
                        break;
                default:
                        ctx->reason = "bytes after the end of a chunked body";
                        return -1;
                }
        }
        return 0;
bad_eol:
        ctx->reason = "bad line ending in chunked framing";
        return -1;
bad_ext:
        ctx->reason = "invalid chunk extension";
        return -1;
}

static int http_on_body(http_parser *p, const char *at, size_t len)
{
        struct http_ctx *ctx = p->data;

        if (ctx->chunked) {
                if (http_scan_framing(ctx, ctx->scan_from, at) < 0)
                        return -1;
                ctx->scan_from = at + len;
                /* The chunk's data is all there: CRLF must follow. */
                if (p->content_length == 0)
                        ctx->h->chunk_state = HTTP_CH_DATA_CR;
        }

        if (ctx->decoded && evbuffer_add(ctx->decoded, at, len) < 0) {
                ctx->reason = "out of memory";
                return -1;
        }
        return 0;
}

static int http_on_message_complete(http_parser *p)
{
        struct http_ctx *ctx = p->data;

        ctx->done = true;
        http_parser_pause(p, 1);
        return 0;
}

static const http_parser_settings http_settings = {
        .on_url = http_on_url,
        .on_status = http_on_status,
        .on_header_field = http_on_header_field,
        .on_header_value = http_on_header_value,
        .on_headers_complete = http_on_headers_complete,
        .on_body = http_on_body,
        .on_message_complete = http_on_message_complete,
};

bool http_field_name_eq(const char *buf, const struct http_field *f, const char *name, size_t n)
{
        return f->name_len == n && strncasecmp(buf + f->name_off, name, n) == 0;
}

static bool http_value_is(const char *buf, const struct http_field *f, const char *value)
{
        size_t n = strlen(value);

        return f->value_len == n && strncasecmp(buf + f->value_off, value, n) == 0;
}

bool http_head_is_hop_by_hop(const struct http_head *h, size_t i)
{
        return (h->hop_by_hop[i / 64] >> (i % 64)) & 1;
}

static void http_mark_hop_by_hop(struct http_head *h, size_t i)
{
        h->hop_by_hop[i / 64] |= UINT64_C(1) << (i % 64);
}

bool http_method_idempotent(enum http_method m)
{
        switch (m) {
        case HTTP_GET:
        case HTTP_HEAD:
        case HTTP_OPTIONS:
        case HTTP_PUT:
        case HTTP_DELETE:
        case HTTP_TRACE:
                return true;
        default:
                return false;
        }
}

/* Bytes of the head itself: control characters other than HTAB, CR and LF are refused anywhere; every LF
 * must end a CRLF; a line may not start with whitespace (obs-fold, or whitespace before the first field). */
static const char *http_check_raw(const char *buf, size_t len)
{
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)buf[i];

                if (_likely_(!(http_class[c] & HTTP_C_SPECIAL)))
                        continue;
                if (c == '\n') {
                        if (i == 0 || buf[i - 1] != '\r')
                                return "bare LF line ending";
                        if (i + 1 < len && (buf[i + 1] == ' ' || buf[i + 1] == '\t'))
                                return "obsolete line folding";
                } else if (c == '\r') {
                        if (i + 1 >= len || buf[i + 1] != '\n')
                                return "bare CR";
                } else if ((c < 0x20 && c != '\t') || c == 0x7f)
                        return "control character in the head";
        }
        return NULL;
}

/* The request target's bytes (RFC 9112 3.2, RFC 3986): visible ASCII only. A blank, a control character
 * (HTAB and form feed included, which http_parser takes) or a non-ASCII byte (some servers split request
 * lines on NEL or NBSP) would let a backend split the request line differently; a fragment is never sent
 * (RFC 9110 7.1) and servers disagree on where the path ends when one is. */
static const char *http_check_target(const char *t, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)t[i];

                if (_likely_(http_class[c] & HTTP_C_TARGET))
                        continue;
                if (c == ' ')
                        return "space in the request target";
                if (c == '#')
                        return "fragment (#) in the request target";
                if (c >= 0x80)
                        return "non-ASCII byte in the request target";
                return "control character in the request target";
        }
        return NULL;
}

/* For an absolute-form target ("http://authority/..."): true, with the authority (possibly empty) in
 * *<ret_a>, *<ret_len>. False for the other forms. */
static bool http_target_authority(const char *buf, const struct http_head *h, const char **ret_a,
                                  size_t *ret_len)
{
        const char *t = buf + h->target_off, *end = t + h->target_len, *a, *e;

        if (h->target_len > 7 && strncasecmp(t, "http://", 7) == 0)
                a = t + 7;
        else if (h->target_len > 8 && strncasecmp(t, "https://", 8) == 0)
                a = t + 8;
        else
                return false;
        for (e = a; e < end && *e != '/' && *e != '?'; e++)
                ;
        *ret_a = a;
        *ret_len = (size_t)(e - a);
        return true;
}

/* The request target's form (RFC 9112 3.2): origin-form ("/..."), asterisk-form ("*", OPTIONS only), or
 * absolute-form ("http://authority/...") whose authority has no userinfo and, when the request has a Host,
 * is that Host (else a backend following RFC 9112 3.2.2 would see another host than lbd's logs). CONNECT
 * (authority-form) is refused earlier. */
static const char *http_check_target_form(const char *buf, const struct http_head *h)
{
        const char *t = buf + h->target_off, *a;
        size_t n;

        if (h->target_len == 0)
                return "missing request target";
        if (t[0] == '/')
                return NULL;
        if (t[0] == '*' && (h->target_len != 1 || h->method != HTTP_OPTIONS))
                return "invalid asterisk-form request target";
        if (t[0] == '*')
                return NULL;
        if (!http_target_authority(buf, h, &a, &n))
                return "invalid request target";
        if (memchr(a, '@', n))
                return "userinfo in the request target";
        if (n == 0)
                return "empty authority in the request target";
        if (h->host >= 0) {
                const struct http_field *f = &h->fields[h->host];

                if (f->value_len != n || strncasecmp(buf + f->value_off, a, n) != 0)
                        return "Host differs from the request target's authority";
        }
        return NULL;
}

/* The start line's exact shape (RFC 9112 3, 4), which non-strict http_parser doesn't hold to (it takes
 * "HTTX/1.1", for one): method SP target SP HTTP-version, or HTTP-version SP 3DIGIT SP reason. */
static const char *http_check_start_line(const char *buf, const struct http_head *h, bool request, size_t *ret_len)
{
        size_t i = 0, n;
        const char *line, *end;

        while (i + 1 < h->head_len && buf[i] == '\r' && buf[i + 1] == '\n')
                i += 2; /* empty lines before a request line are ignored (RFC 9112 2.2) */
        line = buf + i;
        end = memchr(line, '\r', h->head_len - i);
        if (!end)
                return "malformed start line";
        n = (size_t)(end - line);
        *ret_len = n;
        if (request) {
                const char *m = http_method_str(h->method);
                size_t ml = strlen(m);

                if (n != ml + 1 + h->target_len + 1 + 8 || memcmp(line, m, ml) != 0 || line[ml] != ' ' ||
                    (size_t)(line + ml + 1 - buf) != h->target_off || line[ml + 1 + h->target_len] != ' ')
                        return "malformed request line";
                line += ml + 1 + h->target_len + 1;
        } else if (n < 12 || line[8] != ' ' || (n > 12 && line[12] != ' ') || line[9] < '0' || line[9] > '9' ||
                   line[10] < '0' || line[10] > '9' || line[11] < '0' || line[11] > '9')
                return "malformed status line"; /* the SP before an empty reason is often left out: taken */
        if (memcmp(line, "HTTP/", 5) != 0 || line[5] < '0' || line[5] > '9' || line[6] != '.' || line[7] < '0' ||
            line[7] > '9')
                return "invalid HTTP version";
        return NULL;
}

/* Strips optional whitespace around a field value (http_parser leaves the trailing part). */
static void http_trim_value(const char *buf, struct http_field *f)
{
        while (f->value_len > 0 && (buf[f->value_off] == ' ' || buf[f->value_off] == '\t')) {
                f->value_off++;
                f->value_len--;
        }
        while (f->value_len > 0 &&
               (buf[f->value_off + f->value_len - 1] == ' ' || buf[f->value_off + f->value_len - 1] == '\t'))
                f->value_len--;
}

static bool http_parse_content_length(const char *s, size_t n, uint64_t *ret)
{
        uint64_t v = 0;

        if (n == 0 || n > 18)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (uint64_t)(s[i] - '0');
        }
        *ret = v;
        return true;
}

static bool http_request_id_sane(const char *s, size_t n)
{
        if (n == 0 || n > 128)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!(http_class[(unsigned char)s[i]] & HTTP_C_ID))
                        return false;
        return true;
}

static bool http_host_sane(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!(http_class[(unsigned char)s[i]] & HTTP_C_HOST))
                        return false;
        return true;
}

/* Walks the comma-separated tokens of a Connection value: notes close/keep-alive and marks the fields it
 * names as hop-by-hop. Framing fields are never dropped that way ("Connection: content-length" would
 * otherwise change how the backend reads the body). */
static void http_apply_connection(struct http_head *h, const char *buf, const struct http_field *f,
                                  bool *close, bool *keep, bool *upgrade)
{
        const char *s = buf + f->value_off, *end = s + f->value_len;

        while (s < end) {
                const char *t;
                size_t n;

                while (s < end && (*s == ',' || *s == ' ' || *s == '\t'))
                        s++;
                t = s;
                while (s < end && *s != ',' && *s != ' ' && *s != '\t')
                        s++;
                n = (size_t)(s - t);
                if (n == 0)
                        continue;
                if (n == 5 && strncasecmp(t, "close", 5) == 0)
                        *close = true;
                else if (n == 10 && strncasecmp(t, "keep-alive", 10) == 0)
                        *keep = true;
                else if (n == 7 && strncasecmp(t, "upgrade", 7) == 0)
                        *upgrade = true; /* and the Upgrade field is hop-by-hop, as its name says already */
                else if (!(n == 14 && strncasecmp(t, "content-length", n) == 0) &&
                         !(n == 17 && strncasecmp(t, "transfer-encoding", n) == 0) &&
                         !(n == 4 && strncasecmp(t, "host", n) == 0)) {
                        for (size_t i = 0; i < h->n_fields; i++)
                                if (h->fields[i].name_len == n &&
                                    strncasecmp(buf + h->fields[i].name_off, t, n) == 0)
                                        http_mark_hop_by_hop(h, i);
                }
        }
}

/* A response's Transfer-Encoding (RFC 9112 6.1): a list of codings (tokens, empty elements tolerated) in
 * which "chunked", if there, is last and once. A coding with parameters, or "chunked" applied twice or
 * under another coding, is a framing only some clients would read as lbd does: refused. Sets
 * *<ret_chunked> (chunked framing, else the body ends with the connection) and returns NULL, or a reason. */
static const char *http_te_response(const char *buf, const struct http_field *f, bool *ret_chunked)
{
        const char *s = buf + f->value_off, *end = s + f->value_len;
        size_t n_codings = 0;
        bool chunked = false;

        while (s < end) {
                const char *t;

                while (s < end && (*s == ',' || *s == ' ' || *s == '\t'))
                        s++;
                if (s == end)
                        break;
                if (chunked)
                        return "Transfer-Encoding with a coding after chunked";
                for (t = s; s < end && http_tchar((unsigned char)*s); s++)
                        ;
                if (s == t)
                        return "malformed Transfer-Encoding";
                chunked = s - t == 7 && strncasecmp(t, "chunked", 7) == 0;
                n_codings++;
                while (s < end && (*s == ' ' || *s == '\t'))
                        s++;
                if (s < end && *s != ',')
                        return "malformed Transfer-Encoding";
        }
        if (n_codings == 0)
                return "empty Transfer-Encoding";
        *ret_chunked = chunked;
        return NULL;
}

static const struct {
        const char *name;
        size_t len;
} http_hop_by_hop_names[] = {
#define HOP(s) { s, sizeof(s) - 1 }
        /* HTTP2-Settings belongs to an h2c upgrade (RFC 7540 3.2.1): never passed on. */
        HOP("connection"), HOP("keep-alive"), HOP("proxy-connection"), HOP("te"), HOP("trailer"), HOP("upgrade"),
        HOP("http2-settings"),
#undef HOP
};

/* The fields lbd acts on or sets. A field name that is not one of them but reads as one once case is
 * ignored, '_' taken for '-', runs of them taken as one and those at either end dropped (Transfer_Encoding,
 * Content__Length, Host_) is refused: servers that fold names that way (CGI and WSGI turn both '-' and
 * '_' into '_', some folding runs too) would frame or route the message otherwise than lbd did. Other
 * names with '_' in requests are not forwarded (nginx's default), so that X_Forwarded_For can't pose as
 * the X-Forwarded-For lbd writes. <response>: the rule holds for responses too. */
static const struct {
        const char *name; /* lower case, single '-' */
        size_t len;
        bool response;
        const char *reason;
        const char *trailer_reason;
} http_known_names[] = {
#define KNOWN(s, resp, shown) \
        { s, sizeof(s) - 1, resp, "field name that imitates " shown, shown " (or a look-alike) in the trailers" }
        KNOWN("content-length", true, "Content-Length"),
        KNOWN("transfer-encoding", true, "Transfer-Encoding"),
        KNOWN("connection", true, "Connection"),
        KNOWN("upgrade", true, "Upgrade"),
        KNOWN("keep-alive", true, "Keep-Alive"),
        KNOWN("proxy-connection", true, "Proxy-Connection"),
        KNOWN("te", true, "TE"),
        KNOWN("trailer", true, "Trailer"),
        KNOWN("http2-settings", true, "HTTP2-Settings"),
        KNOWN("host", false, "Host"),
        KNOWN("expect", false, "Expect"),
        KNOWN("x-forwarded-for", false, "X-Forwarded-For"),
        KNOWN("x-forwarded-proto", false, "X-Forwarded-Proto"),
        KNOWN("x-request-id", false, "X-Request-Id"),
#undef KNOWN
};

/* Trailers (RFC 9110 6.5.1) may not carry what frames, routes or is set by lbd: a recipient merging them
 * into the head would act on them. <name> is folded (http_trailer_name_add()). Returns NULL or a reason. */
static const char *http_trailer_name_check(const char *name, size_t n, bool request)
{
        for (size_t k = 0; k < ELEMENTSOF(http_known_names); k++)
                if ((request || http_known_names[k].response) && http_known_names[k].len == n &&
                    memcmp(http_known_names[k].name, name, n) == 0)
                        return http_known_names[k].trailer_reason;
        return NULL;
}

static inline bool http_name_sep(char c)
{
        return c == '-' || c == '_';
}

/* Does name <s> (<n> bytes) fold to <canon> (<clen> bytes, lower case) as described above? */
static bool http_name_folds_to(const char *s, size_t n, const char *canon, size_t clen)
{
        size_t i = 0, k = 0;

        while (i < n && http_name_sep(s[i]))
                i++;
        while (i < n) {
                if (http_name_sep(s[i])) {
                        while (i < n && http_name_sep(s[i]))
                                i++;
                        if (i == n)
                                break;
                        if (k >= clen || canon[k] != '-')
                                return false;
                        k++;
                        continue;
                }
                if (k >= clen || (s[i] | 0x20) != canon[k])
                        return false;
                i++;
                k++;
        }
        return k == clen;
}

/* Checks field <i>'s name: tokens only; a name with '_' or with '-' doubled or at either end is refused when
 * it imitates a known name, and a request's with '_' is dropped. Returns 0 or -EBADMSG (*ret_reason). */
static int http_check_name(struct http_head *h, size_t i, const char *buf, bool request,
                           const char **ret_reason)
{
        const struct http_field *f = &h->fields[i];
        const char *s = buf + f->name_off;
        size_t n = f->name_len;
        uint8_t all = 0xff, any = 0, pairs = 0, prev = 0;
        bool underscore;

        if (n == 0) {
                *ret_reason = "empty field name";
                return -EBADMSG;
        }
        /* One pass: every byte a token character, any '_', any "--". */
        for (size_t k = 0; k < n; k++) {
                uint8_t c = http_class[(unsigned char)s[k]];

                all &= c;
                any |= c;
                pairs |= prev & c;
                prev = c;
        }
        if (!(all & HTTP_C_TCHAR)) {
                *ret_reason = "invalid character in a field name";
                return -EBADMSG;
        }
        underscore = any & HTTP_C_UNDERSCORE;
        if (_likely_(!underscore && !(pairs & HTTP_C_DASH) && s[0] != '-' && s[n - 1] != '-'))
                return 0;
        for (size_t k = 0; k < ELEMENTSOF(http_known_names); k++)
                if ((request || http_known_names[k].response) &&
                    http_name_folds_to(s, n, http_known_names[k].name, http_known_names[k].len)) {
                        *ret_reason = http_known_names[k].reason;
                        return -EBADMSG;
                }
        if (request && underscore)
                http_mark_hop_by_hop(h, i);
        return 0;
}

static int http_check_fields(struct http_head *h, const char *buf, bool request, const char **ret_reason)
{
        int n_cl = 0, n_te = 0, n_host = 0, n_upgrade = 0, te_index = -1, upgrade_index = -1;
        bool close = false, keep = false, conn_upgrade = false, te_chunked = false;
        int r;

        h->host = -1;
        h->request_id = -1;
        h->upgrade_field = -1;
        for (size_t i = 0; i < h->n_fields; i++) {
                struct http_field *f = &h->fields[i];

                r = http_check_name(h, i, buf, request, ret_reason);
                if (r < 0)
                        return r;
                http_trim_value(buf, f);

                for (size_t k = 0; k < ELEMENTSOF(http_hop_by_hop_names); k++)
                        if (http_field_name_eq(buf, f, http_hop_by_hop_names[k].name, http_hop_by_hop_names[k].len))
                                http_mark_hop_by_hop(h, i);

                if (http_field_name_is(buf, f, "content-length")) {
                        if (++n_cl > 1) {
                                *ret_reason = "more than one Content-Length";
                                return -EBADMSG;
                        }
                        if (!http_parse_content_length(buf + f->value_off, f->value_len, &h->content_length)) {
                                *ret_reason = "invalid Content-Length";
                                return -EBADMSG;
                        }
                } else if (http_field_name_is(buf, f, "transfer-encoding")) {
                        n_te++;
                        te_index = (int)i;
                } else if (request && http_field_name_is(buf, f, "host")) {
                        if (++n_host > 1) {
                                *ret_reason = "more than one Host";
                                return -EBADMSG;
                        }
                        if (!http_host_sane(buf + f->value_off, f->value_len)) {
                                *ret_reason = "invalid Host";
                                return -EBADMSG;
                        }
                        h->host = (int)i;
                } else if (http_field_name_is(buf, f, "connection"))
                        http_apply_connection(h, buf, f, &close, &keep, &conn_upgrade);
                else if (http_field_name_is(buf, f, "upgrade")) {
                        if (f->value_len == 0) {
                                *ret_reason = "empty Upgrade";
                                return -EBADMSG;
                        }
                        n_upgrade++;
                        upgrade_index = (int)i;
                }
                else if (request && http_field_name_is(buf, f, "expect")) {
                        if (!http_value_is(buf, f, "100-continue")) {
                                *ret_reason = "unsupported Expect";
                                return -EBADMSG;
                        }
                        h->expect_continue = true;
                } else if (request && h->request_id < 0 && http_field_name_is(buf, f, "x-request-id")) {
                        if (http_request_id_sane(buf + f->value_off, f->value_len))
                                h->request_id = (int)i;
                }
        }

        if (request) {
                if (n_te > 0 && n_cl > 0) {
                        *ret_reason = "both Content-Length and Transfer-Encoding";
                        return -EBADMSG;
                }
                if (n_te > 1 || (n_te == 1 && !http_value_is(buf, &h->fields[te_index], "chunked"))) {
                        *ret_reason = "Transfer-Encoding other than a single \"chunked\"";
                        return -EBADMSG;
                }
                if (n_te > 0 && h->minor == 0) {
                        /* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing. */
                        *ret_reason = "Transfer-Encoding in an HTTP/1.0 request";
                        return -EBADMSG;
                }
                if (n_host == 0 && h->minor >= 1) {
                        *ret_reason = "missing Host";
                        return -EBADMSG;
                }
                h->body = n_te ? HTTP_BODY_CHUNKED : h->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
        } else {
                if (n_te > 0 && n_cl > 0) {
                        *ret_reason = "both Content-Length and Transfer-Encoding";
                        return -EBADMSG;
                }
                if (n_te > 1) {
                        *ret_reason = "more than one Transfer-Encoding";
                        return -EBADMSG;
                }
                if (n_te) {
                        *ret_reason = http_te_response(buf, &h->fields[te_index], &te_chunked);
                        if (*ret_reason)
                                return -EBADMSG;
                }
                if (h->status < 200 || h->status == 204 || h->status == 304)
                        h->body = HTTP_BODY_NONE;
                else if (n_te)
                        h->body = te_chunked ? HTTP_BODY_CHUNKED : HTTP_BODY_EOF;
                else if (n_cl)
                        h->body = h->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
                else
                        h->body = HTTP_BODY_EOF;
        }

        h->keep_alive = h->minor >= 1 ? !close : keep && !close;
        if (h->body == HTTP_BODY_EOF)
                h->keep_alive = false;
        /* One Upgrade field, so that what is forwarded is unambiguous; anything else asking to upgrade is
         * forwarded as a plain request, without Upgrade, as before. */
        if (request)
                h->upgrade = conn_upgrade && n_upgrade == 1 && h->method == HTTP_GET && h->minor >= 1 &&
                             h->body == HTTP_BODY_NONE;
        else
                h->upgrade = h->status == 101 && n_upgrade == 1;
        if (h->upgrade)
                h->upgrade_field = upgrade_index;
        return 0;
}

/* http_parser refused a Content-Length: say why, from the fields it had read (their names are whole). */
static const char *http_content_length_problem(const struct http_head *h, const char *buf)
{
        size_t n_cl = 0, n_te = 0;

        for (size_t i = 0; i < h->n_fields; i++) {
                n_cl += http_field_name_is(buf, &h->fields[i], "content-length");
                n_te += http_field_name_is(buf, &h->fields[i], "transfer-encoding");
        }
        if (n_te > 0 && n_cl > 0)
                return "both Content-Length and Transfer-Encoding";
        if (n_cl > 1)
                return "more than one Content-Length";
        return "invalid Content-Length";
}

static int http_parse_head(http_parser *parser, enum http_parser_type type, const char *buf, size_t len,
                           size_t max, bool head_request, struct http_head *h, const char **ret_reason)
{
        struct http_ctx ctx = {
                .h = h,
                .buf = buf,
                .head_request = head_request,
        };
        enum http_errno err;
        size_t n, scan = MIN(len, max);
        const char *reason;
        int r;

        h->n_fields = 0;
        h->target_off = h->target_len = 0;
        h->reason_off = h->reason_len = 0;
        h->expect_continue = false;
        h->upgrade = false;
        h->content_length = 0;
        memset(h->hop_by_hop, 0, sizeof(h->hop_by_hop));

        http_parser_init(parser, type);
        parser->data = &ctx;
        n = http_parser_execute(parser, &http_settings, buf, scan);
        parser->data = NULL;
        err = HTTP_PARSER_ERRNO(parser);

        if (err == HPE_OK) {
                if (n == scan && len < max)
                        return 0;
                if (n == scan)
                        return -EMSGSIZE;
        }
        if (err != HPE_PAUSED) {
                if (ctx.too_many || err == HPE_HEADER_OVERFLOW)
                        return -EMSGSIZE;
                /* http_parser matches framing names by prefix and may stop on the value of a field whose
                 * name only imitates one (Transfer-Encoding_): the name is then the problem to report. */
                for (size_t i = 0; i < h->n_fields; i++)
                        if (http_check_name(h, i, buf, type == HTTP_REQUEST, ret_reason) < 0)
                                return -EBADMSG;
                /* Else it stopped on the byte it refused, <n>: name that byte's problem when it is one of
                 * the raw checks' (a bare CR, a control character), else say what http_parser expected. */
                reason = NULL;
                if (err == HPE_INVALID_URL && n < scan)
                        reason = http_check_target(buf + n, 1);
                if (!reason) /* up to that byte, and with it when it is the LF of a CRLF */
                        reason = http_check_raw(buf, n < scan && buf[n] == '\n' ? n + 1 : n);
                if (!reason && n < scan && buf[n] != '\r' && buf[n] != '\n' &&
                    (http_class[(unsigned char)buf[n]] & HTTP_C_SPECIAL))
                        reason = "control character in the head";
                if (reason) {
                        *ret_reason = reason;
                        return -EBADMSG;
                }
                switch (err) {
                case HPE_INVALID_METHOD:
                        *ret_reason = "invalid method";
                        break;
                case HPE_INVALID_VERSION:
                        *ret_reason = "invalid HTTP version";
                        break;
                case HPE_INVALID_CONSTANT:
                        *ret_reason = type == HTTP_REQUEST ? "malformed request line" : "malformed status line";
                        break;
                case HPE_LF_EXPECTED:
                        *ret_reason = "bare CR";
                        break;
                case HPE_INVALID_URL:
                        *ret_reason = "invalid request target";
                        break;
                case HPE_INVALID_HEADER_TOKEN:
                        *ret_reason = n < scan && buf[n] == '\r' ? "field line without a colon"
                                                                  : "invalid character in a field name";
                        break;
                case HPE_INVALID_CONTENT_LENGTH:
                case HPE_UNEXPECTED_CONTENT_LENGTH:
                        *ret_reason = http_content_length_problem(h, buf);
                        break;
                case HPE_INVALID_TRANSFER_ENCODING:
                        *ret_reason = "invalid Transfer-Encoding";
                        break;
                default:
                        *ret_reason = ctx.reason ? ctx.reason : http_errno_description(err);
                        break;
                }
                return -EBADMSG;
        }

        /* Paused in on_headers_complete with <n> at the head's final LF. */
        h->head_len = n + 1;
        h->major = parser->http_major;
        h->minor = parser->http_minor;

        reason = type == HTTP_REQUEST ? http_check_target(buf + h->target_off, h->target_len) : NULL;
        if (!reason)
                reason = http_check_raw(buf, h->head_len);
        if (!reason) {
                size_t line_len;

                if (type == HTTP_REQUEST)
                        h->method = (enum http_method)parser->method;
                reason = http_check_start_line(buf, h, type == HTTP_REQUEST, &line_len);
        }
        if (reason) {
                *ret_reason = reason;
                return -EBADMSG;
        }
        if (h->major != 1 || h->minor > 1) {
                *ret_reason = "HTTP version not supported";
                return type == HTTP_REQUEST && h->major != 1 ? -ENOTSUP : -EBADMSG;
        }

        if (type == HTTP_REQUEST) {
                h->method = (enum http_method)parser->method;
                if (h->method == HTTP_CONNECT) {
                        *ret_reason = "CONNECT is not supported";
                        return -ENOTSUP;
                }
        } else {
                h->status = parser->status_code;
                if (h->status < 100 || h->status > 599) {
                        *ret_reason = "invalid status code";
                        return -EBADMSG;
                }
        }

        r = http_check_fields(h, buf, type == HTTP_REQUEST, ret_reason);
        if (r < 0)
                return r;
        if (type == HTTP_REQUEST) {
                reason = http_check_target_form(buf, h);
                if (reason) {
                        *ret_reason = reason;
                        return -EBADMSG;
                }
        }
        if (head_request)
                h->body = HTTP_BODY_NONE;
        return (int)MIN(h->head_len, (size_t)INT32_MAX);
}

int http_parse_request(http_parser *parser, const char *buf, size_t len, size_t max, struct http_head *h,
                       const char **ret_reason)
{
        return http_parse_head(parser, HTTP_REQUEST, buf, len, max, false, h, ret_reason);
}

int http_parse_response(http_parser *parser, const char *buf, size_t len, size_t max, bool head_request,
                        struct http_head *h, const char **ret_reason)
{
        return http_parse_head(parser, HTTP_RESPONSE, buf, len, max, head_request, h, ret_reason);
}

static int http_body_run(http_parser *parser, struct http_head *h, bool scan, const char *data, size_t len,
                         struct evbuffer *decoded, size_t *ret_consumed, const char **ret_reason)
{
        struct http_ctx ctx = {
                .h = h,
                .decoded = decoded,
                .trailers = true,
                .request = parser->type == HTTP_REQUEST,
                .chunked = scan && h->body == HTTP_BODY_CHUNKED,
                .scan_from = data,
        };
        enum http_errno err;
        size_t n;

        http_parser_pause(parser, 0);
        parser->data = &ctx;
        n = http_parser_execute(parser, &http_settings, data, len);
        parser->data = NULL;
        err = HTTP_PARSER_ERRNO(parser);
        if ((err == HPE_OK || err == HPE_PAUSED) && ctx.chunked &&
            http_scan_framing(&ctx, ctx.scan_from, data + n) < 0)
                err = HPE_INVALID_CHUNK_SIZE;
        if (err != HPE_OK && err != HPE_PAUSED) {
                /* http_parser stopped on the byte it refused: the scan up to it names the problem when it
                 * is one of framing. */
                if (!ctx.reason && ctx.chunked)
                        (void)http_scan_framing(&ctx, ctx.scan_from, data + MIN(n + 1, len));
                if (ctx.reason)
                        *ret_reason = ctx.reason;
                else if (err == HPE_INVALID_CHUNK_SIZE)
                        *ret_reason = "invalid chunk size";
                else if (err == HPE_INVALID_CONTENT_LENGTH && h->body == HTTP_BODY_CHUNKED)
                        *ret_reason = "chunk size too large"; /* http_parser's overflow check */
                else
                        *ret_reason = http_errno_description(err);
                return -EBADMSG;
        }
        *ret_consumed = n;
        return ctx.done ? 1 : 0;
}

int http_body_begin(http_parser *parser, struct http_head *h, const char **ret_reason)
{
        size_t consumed;

        /* The parser stopped on the head's final LF; giving it that byte again moves it into the body. */
        h->chunk_state = HTTP_CH_SIZE_START;
        h->chunk_digits = h->chunk_significant = 0;
        h->chunk_line = 0;
        return http_body_run(parser, h, false, "\n", 1, NULL, &consumed, ret_reason);
}

int http_body_feed(http_parser *parser, struct http_head *h, const char *data, size_t len,
                   struct evbuffer *decoded, size_t *ret_consumed, const char **ret_reason)
{
        if (len == 0) {
                *ret_consumed = 0;
                return 0;
        }
        return http_body_run(parser, h, true, data, len, decoded, ret_consumed, ret_reason);
}

int http_body_eof(http_parser *parser, struct http_head *h)
{
        const char *reason;
        size_t consumed;
        int r;

        /* A zero-length execute tells http_parser the stream ended. */
        http_parser_pause(parser, 0);
        r = http_body_run(parser, h, false, "", 0, NULL, &consumed, &reason);
        return r == 1 ? 1 : -EBADMSG;
}

/* Is protocol <p> (<n> bytes, "name" or "name/version") on the comma-separated <allowed> list? */
static bool http_protocol_listed(const char *p, size_t n, const char *allowed)
{
        const char *slash = memchr(p, '/', n);
        size_t name_len = slash ? (size_t)(slash - p) : n;

        while (*allowed) {
                size_t len = strcspn(allowed, ",");

                if ((len == n && strncasecmp(allowed, p, n) == 0) ||
                    (len == name_len && !memchr(allowed, '/', len) &&
                     strncasecmp(allowed, p, name_len) == 0))
                        return true;
                allowed += len;
                if (*allowed == ',')
                        allowed++;
        }
        return false;
}

bool http_upgrade_allowed(const char *buf, const struct http_head *h, const char *allowed)
{
        const struct http_field *f;
        const char *s, *end;
        size_t n_protocols = 0;

        if (!h->upgrade || h->upgrade_field < 0)
                return false;
        f = &h->fields[h->upgrade_field];
        s = buf + f->value_off;
        end = s + f->value_len;
        /* #protocol, with empty list elements tolerated (RFC 9110 5.6.1); protocol = token [ "/" token ] */
        while (s < end) {
                const char *p;
                size_t slashes = 0;

                while (s < end && (*s == ',' || *s == ' ' || *s == '\t'))
                        s++;
                if (s == end)
                        break;
                for (p = s; s < end && (http_tchar((unsigned char)*s) || *s == '/'); s++)
                        slashes += *s == '/';
                if (s == p || slashes > 1 || p[0] == '/' || s[-1] == '/' ||
                    !http_protocol_listed(p, (size_t)(s - p), allowed))
                        return false;
                n_protocols++;
                while (s < end && (*s == ' ' || *s == '\t'))
                        s++;
                if (s < end && *s != ',')
                        return false;
        }
        return n_protocols > 0;
}

/* Appends buf[from, to) when not empty. */
static int http_add(struct evbuffer *out, const char *buf, size_t from, size_t to)
{
        if (to <= from)
                return 0;
        return evbuffer_add(out, buf + from, to - from) < 0 ? -ENOMEM : 0;
}

/* Is field <i> forwarded: not hop-by-hop, or the Upgrade field of an upgrade. */
static bool http_head_forwards(const char *buf, const struct http_head *h, size_t i)
{
        return !http_head_is_hop_by_hop(h, i) || (h->upgrade && http_field_name_is(buf, &h->fields[i], "upgrade"));
}

/* Start of field i's line, or of the final empty line for i == n_fields. */
static size_t http_line_start(const struct http_head *h, size_t i)
{
        return i < h->n_fields ? h->fields[i].name_off : h->head_len - 2;
}

/* Copies the field lines that are kept, in runs of consecutive ones, skipping those <skip> refuses. */
static int http_copy_fields(struct evbuffer *out, const char *buf, const struct http_head *h,
                            bool (*skip)(const char *buf, const struct http_head *h, size_t i, void *u), void *u)
{
        size_t run = SIZE_MAX;

        for (size_t i = 0; i <= h->n_fields; i++) {
                bool keep = i < h->n_fields && http_head_forwards(buf, h, i) && !skip(buf, h, i, u);

                if (keep && run == SIZE_MAX)
                        run = http_line_start(h, i);
                else if (!keep && run != SIZE_MAX) {
                        if (http_add(out, buf, run, http_line_start(h, i)) < 0)
                                return -ENOMEM;
                        run = SIZE_MAX;
                }
        }
        return 0;
}

static bool http_skip_request_field(const char *buf, const struct http_head *h, size_t i, void *u)
{
        const struct http_field *f = &h->fields[i];

        return http_field_name_is(buf, f, "x-forwarded-for") || http_field_name_is(buf, f, "x-forwarded-proto") ||
               http_field_name_is(buf, f, "x-request-id");
}

/* Appends <n> bytes; the heads lbd writes are built from pieces without printf, which shows in profiles. */
static int http_put(struct evbuffer *out, const char *s, size_t n)
{
        return evbuffer_add(out, s, n) < 0 ? -ENOMEM : 0;
}

static int http_puts(struct evbuffer *out, const char *s)
{
        return http_put(out, s, strlen(s));
}

int http_write_request_head(struct evbuffer *out, const char *buf, const struct http_head *h,
                            const struct http_forward *fw)
{
        /* X-Forwarded-For (one line for all), X-Forwarded-Proto, X-Request-Id; Connection for an upgrade */
        size_t n_out = h->upgrade ? 4 : 3;
        bool xff = false;
        int r = 0;

        /* The next hop (often another lbd) holds heads to the same field count: never forward more. */
        for (size_t i = 0; i < h->n_fields; i++)
                if (http_head_forwards(buf, h, i) && !http_skip_request_field(buf, h, i, NULL))
                        n_out++;
        if (h->host < 0 && fw->host)
                n_out++;
        if (n_out > HTTP_MAX_FIELDS)
                return -EMSGSIZE;

        r |= http_puts(out, http_method_str(h->method));
        r |= http_put(out, " ", 1);
        r |= http_put(out, buf + h->target_off, h->target_len);
        r |= http_put(out, " HTTP/1.1\r\n", 11);
        r |= http_copy_fields(out, buf, h, http_skip_request_field, NULL);
        if (r < 0)
                return -ENOMEM;

        /* X-Forwarded-For: the values already there, in order, then the client. */
        for (size_t i = 0; i < h->n_fields; i++) {
                const struct http_field *f = &h->fields[i];

                if (!http_field_name_is(buf, f, "x-forwarded-for") || f->value_len == 0)
                        continue;
                r |= xff ? http_put(out, ", ", 2) : http_puts(out, "X-Forwarded-For: ");
                r |= http_put(out, buf + f->value_off, f->value_len);
                xff = true;
        }
        r |= xff ? http_put(out, ", ", 2) : http_puts(out, "X-Forwarded-For: ");
        r |= http_puts(out, fw->client_ip);
        r |= http_puts(out, "\r\nX-Forwarded-Proto: ");
        r |= http_puts(out, fw->proto);
        r |= http_puts(out, "\r\nX-Request-Id: ");
        r |= http_puts(out, fw->request_id);
        r |= http_put(out, "\r\n", 2);
        if (h->host < 0 && fw->host) {
                const char *a;
                size_t n;

                /* An absolute-form target names the host itself (RFC 9112 3.2.2). */
                r |= http_puts(out, "Host: ");
                if (http_target_authority(buf, h, &a, &n))
                        r |= http_put(out, a, n);
                else
                        r |= http_puts(out, fw->host);
                r |= http_put(out, "\r\n", 2);
        }
        if (h->upgrade)
                r |= http_puts(out, "Connection: Upgrade\r\n");
        r |= http_put(out, "\r\n", 2);
        return r < 0 ? -ENOMEM : 0;
}

static bool http_skip_response_field(const char *buf, const struct http_head *h, size_t i, void *u)
{
        bool dechunk = *(bool *)u;

        return dechunk && http_field_name_is(buf, &h->fields[i], "transfer-encoding");
}

int http_write_response_head(struct evbuffer *out, const char *buf, const struct http_head *h,
                             const char *request_id, bool dechunk, bool close, bool client_http10)
{
        bool has_id = false;
        int r;

        char status[14] = "HTTP/1.1 000 ";

        status[9] = (char)('0' + h->status / 100 % 10);
        status[10] = (char)('0' + h->status / 10 % 10);
        status[11] = (char)('0' + h->status % 10);
        r = http_put(out, status, 13);
        r |= http_put(out, buf + h->reason_off, h->reason_len);
        r |= http_put(out, "\r\n", 2);
        if (r < 0)
                return -ENOMEM;
        r = http_copy_fields(out, buf, h, http_skip_response_field, &dechunk);
        if (r < 0)
                return r;
        for (size_t i = 0; i < h->n_fields; i++)
                if (http_field_name_is(buf, &h->fields[i], "x-request-id"))
                        has_id = true;
        if (!has_id && request_id) {
                r = http_puts(out, "X-Request-Id: ");
                r |= http_puts(out, request_id);
                r |= http_put(out, "\r\n", 2);
                if (r < 0)
                        return -ENOMEM;
        }
        if (h->upgrade)
                r = evbuffer_add(out, "Connection: Upgrade\r\n\r\n", 23);
        else if (close)
                r = evbuffer_add(out, "Connection: close\r\n\r\n", 21);
        else if (client_http10)
                r = evbuffer_add(out, "Connection: keep-alive\r\n\r\n", 26);
        else
                r = evbuffer_add(out, "\r\n", 2);
        return r < 0 ? -ENOMEM : 0;
}

const char *http_status_reason(unsigned status)
{
        switch (status) {
        case 200: return "OK";
        case 400: return "Bad Request";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 413: return "Content Too Large";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 502: return "Bad Gateway";
        case 503: return "Service Unavailable";
        case 504: return "Gateway Timeout";
        case 505: return "HTTP Version Not Supported";
        default: return "Unknown";
        }
}

int http_write_error(struct evbuffer *out, unsigned status, const char *detail, const char *request_id,
                     bool close)
{
        char body[256];
        int n;

        n = snprintf(body, sizeof(body), "%u %s: %s\n", status, http_status_reason(status), detail);
        if (n < 0)
                return -EINVAL;
        if ((size_t)n >= sizeof(body))
                n = (int)sizeof(body) - 1;
        if (evbuffer_add_printf(out,
                                "HTTP/1.1 %u %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                "Content-Length: %d\r\nCache-Control: no-store\r\n%s%s%s%s\r\n",
                                status, http_status_reason(status), n, request_id ? "X-Request-Id: " : "",
                                request_id ? request_id : "", request_id ? "\r\n" : "",
                                close ? "Connection: close\r\n" : "") < 0)
                return -ENOMEM;
        return evbuffer_add(out, body, (size_t)n) < 0 ? -ENOMEM : n;
}
