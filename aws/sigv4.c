/* AWS Signature Version 4 request signing (header form), as the EC2 Query API wants it.
 *
 * sigv4_sign() builds the four strings of the algorithm in order, each bounded by SIGV4_MAX_TEXT:
 *   1. the canonical request: method, canonical URI (optionally normalised, then URI-encoded once more,
 *      as every service but S3 expects), canonical query (decoded, re-encoded strictly, sorted), the
 *      canonical headers (names lowercased, values trimmed with inner runs of blanks collapsed, repeated
 *      names joined with ',' in the order sent, sorted by name), the signed header list, and the hex
 *      SHA-256 of the body;
 *   2. the string to sign: algorithm, X-Amz-Date, credential scope, hex SHA-256 of (1);
 *   3. the signing key: HMAC-SHA256 chained over "AWS4" + secret, the date, region, service and
 *      "aws4_request";
 *   4. the signature, HMAC-SHA256 of (2) under (3), and the Authorization header value.
 * The signer adds its own headers to what it signs: X-Amz-Date always, X-Amz-Security-Token when the
 * credentials carry a session token (unless omit_session_token), X-Amz-Content-Sha256 when sign_body.
 *
 * Everything here is a pure function of its arguments; the key material is wiped after use. */
#include "aws/sigv4.h"

#include <errno.h>
#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "common/parse.h"

#define SIGV4_ALGORITHM      "AWS4-HMAC-SHA256"
#define SIGV4_TERMINATOR     "aws4_request"
#define SIGV4_NAME_MAX       128 /* longest header name */
#define SIGV4_MAX_PARAMS     256 /* query parameters */
#define SIGV4_SCOPE_PART_MAX 64  /* region, service */

struct sigv4_entry {
        char name[SIGV4_NAME_MAX + 1]; /* lowercased */
        char *value;                   /* normalised, owned */
        size_t order;                  /* position in the request, for a stable sort */
};

struct sigv4_param {
        char *key; /* encoded, owned */
        char *value;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct evbuffer *, evbuffer_free)

static const char sigv4_hex_digits[] = "0123456789abcdef";

static void sigv4_hex(const unsigned char *in, size_t n, char *out)
{
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = sigv4_hex_digits[in[i] >> 4];
                out[2 * i + 1] = sigv4_hex_digits[in[i] & 15];
        }
        out[2 * n] = 0;
}

static int sigv4_sha256_hex(const void *data, size_t n, char out[static SIGV4_HEX_LEN + 1])
{
        unsigned char md[SHA256_DIGEST_LENGTH];

        if (!SHA256(data ? data : (const void *)"", n, md))
                return -EIO;
        sigv4_hex(md, sizeof(md), out);
        return 0;
}

static int sigv4_hmac(const void *key, size_t key_len, const void *data, size_t n,
                      unsigned char out[static SHA256_DIGEST_LENGTH])
{
        unsigned len = 0;

        if (key_len > INT32_MAX)
                return -EINVAL;
        if (!HMAC(EVP_sha256(), key, (int)key_len, data, n, out, &len) || len != SHA256_DIGEST_LENGTH)
                return -EIO;
        return 0;
}

static bool sigv4_unreserved(unsigned char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
               c == '.' || c == '_' || c == '~';
}

static bool sigv4_tchar(unsigned char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* True when <s> is a non-empty string of at most <max> bytes without control characters, spaces or
 * slashes: what may appear in the credential scope. */
static bool sigv4_scope_part_ok(const char *s, size_t max)
{
        return parse_text_ok(s, max, " /");
}

static int sigv4_add(struct evbuffer *out, const void *data, size_t n, size_t max)
{
        if (n > max || evbuffer_get_length(out) > max - n)
                return -E2BIG;
        return evbuffer_add(out, data, n) < 0 ? -ENOMEM : 0;
}

static int sigv4_add_str(struct evbuffer *out, const char *s, size_t max)
{
        return sigv4_add(out, s, strlen(s), max);
}

int sigv4_uri_encode(struct evbuffer *out, const char *s, size_t n, bool keep_slash, size_t max)
{
        char chunk[256];
        size_t used = 0;
        int r;

        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];

                if (used + 3 > sizeof(chunk)) {
                        r = sigv4_add(out, chunk, used, max);
                        if (r < 0)
                                return r;
                        used = 0;
                }
                if (sigv4_unreserved(c) || (keep_slash && c == '/')) {
                        chunk[used++] = (char)c;
                } else {
                        chunk[used++] = '%';
                        chunk[used++] = "0123456789ABCDEF"[c >> 4];
                        chunk[used++] = "0123456789ABCDEF"[c & 15];
                }
        }
        return sigv4_add(out, chunk, used, max);
}

/* Copies the contents of <b> into a new NUL-terminated string. */
static char *sigv4_take_string(struct evbuffer *b)
{
        size_t n = evbuffer_get_length(b);
        char *s = malloc(n + 1);

        if (!s)
                return NULL;
        if (evbuffer_remove(b, s, n) != (int)n) {
                free(s);
                return NULL;
        }
        s[n] = 0;
        return s;
}

void sigv4_format_date(time_t when, char buf[static SIGV4_DATE_LEN + 1])
{
        struct tm tm;

        if (!gmtime_r(&when, &tm) ||
            strftime(buf, SIGV4_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != SIGV4_DATE_LEN)
                memcpy(buf, "19700101T000000Z", SIGV4_DATE_LEN + 1);
}

/* Writes the path with "." and ".." segments and empty segments removed into <out> (at least
 * strlen(path) + 2 bytes). A path that ended with '/' (or with a dot segment) keeps one trailing '/'. */
static void sigv4_normalize_path(const char *path, char *out)
{
        size_t o = 0;
        const char *p = path;
        bool trailing = false;

        while (*p) {
                const char *seg, *end;
                size_t n;

                while (*p == '/')
                        p++;
                seg = p;
                end = strchrnul(seg, '/');
                n = (size_t)(end - seg);
                p = end;
                if (n == 0)
                        break;
                trailing = *end == '/' || (n == 1 && seg[0] == '.') ||
                           (n == 2 && seg[0] == '.' && seg[1] == '.');
                if (n == 1 && seg[0] == '.')
                        continue;
                if (n == 2 && seg[0] == '.' && seg[1] == '.') {
                        while (o > 0 && out[o - 1] != '/')
                                o--;
                        if (o > 0)
                                o--;
                        continue;
                }
                out[o++] = '/';
                memcpy(out + o, seg, n);
                o += n;
        }
        if (o == 0 || trailing)
                out[o++] = '/';
        out[o] = 0;
}

/* Decodes %XX sequences of <n> bytes at <s> (a malformed '%' stays as it is) and returns the encoded
 * canonical form as a new string. */
static int sigv4_canonical_component(const char *s, size_t n, char **ret)
{
        _cleanup_(evbuffer_freep) struct evbuffer *out = evbuffer_new();
        _cleanup_free_ char *decoded = malloc(n + 1);
        size_t d = 0;
        char *res;
        int r;

        if (!out || !decoded)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                int hi, lo;

                if (s[i] == '%' && i + 2 < n && (hi = parse_hex_digit(s[i + 1])) >= 0 &&
                    (lo = parse_hex_digit(s[i + 2])) >= 0) {
                        decoded[d++] = (char)(hi << 4 | lo);
                        i += 2;
                } else {
                        decoded[d++] = s[i];
                }
        }
        r = sigv4_uri_encode(out, decoded, d, false, SIGV4_MAX_TEXT);
        if (r < 0)
                return r;
        res = sigv4_take_string(out);
        if (!res)
                return -ENOMEM;
        *ret = res;
        return 0;
}

static int sigv4_param_cmp(const void *a, const void *b)
{
        const struct sigv4_param *x = a, *y = b;
        int c = strcmp(x->key, y->key);

        return c != 0 ? c : strcmp(x->value, y->value);
}

static void sigv4_params_free(struct sigv4_param *v, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(v[i].key);
                free(v[i].value);
        }
        free(v);
}

/* Appends the canonical query string of <query> to <out>. */
static int sigv4_canonical_query(struct evbuffer *out, const char *query)
{
        struct sigv4_param *params = NULL;
        size_t n = 0, len;
        const char *p = query;
        int r = 0;

        if (!query || !*query)
                return 0;
        len = strlen(query);
        if (len > SIGV4_MAX_TEXT)
                return -E2BIG;
        params = calloc(SIGV4_MAX_PARAMS, sizeof(*params));
        if (!params)
                return -ENOMEM;
        while (*p) {
                const char *end = strchrnul(p, '&'), *eq;

                if (end > p) {
                        if (n >= SIGV4_MAX_PARAMS) {
                                r = -E2BIG;
                                goto out;
                        }
                        eq = memchr(p, '=', (size_t)(end - p));
                        r = sigv4_canonical_component(p, (size_t)((eq ? eq : end) - p), &params[n].key);
                        if (r >= 0)
                                r = sigv4_canonical_component(eq ? eq + 1 : end,
                                                              eq ? (size_t)(end - eq - 1) : 0,
                                                              &params[n].value);
                        n++;
                        if (r < 0)
                                goto out;
                }
                p = *end ? end + 1 : end;
        }
        qsort(params, n, sizeof(*params), sigv4_param_cmp);
        for (size_t i = 0; i < n && r >= 0; i++) {
                if (i > 0)
                        r = sigv4_add(out, "&", 1, SIGV4_MAX_TEXT);
                if (r >= 0)
                        r = sigv4_add_str(out, params[i].key, SIGV4_MAX_TEXT);
                if (r >= 0)
                        r = sigv4_add(out, "=", 1, SIGV4_MAX_TEXT);
                if (r >= 0)
                        r = sigv4_add_str(out, params[i].value, SIGV4_MAX_TEXT);
        }
out:
        sigv4_params_free(params, n);
        return r;
}

static int sigv4_entry_cmp(const void *a, const void *b)
{
        const struct sigv4_entry *x = a, *y = b;
        int c = strcmp(x->name, y->name);

        if (c != 0)
                return c;
        return x->order < y->order ? -1 : x->order > y->order;
}

/* Fills <e> from one header: the name lowercased, the value trimmed with runs of blanks collapsed. */
static int sigv4_entry_set(struct sigv4_entry *e, const char *name, const char *value, size_t order)
{
        size_t n, vlen, o = 0;
        char *v;

        if (!name || !value)
                return -EINVAL;
        n = strnlen(name, SIGV4_NAME_MAX + 1);
        if (n == 0 || n > SIGV4_NAME_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)name[i];

                if (!sigv4_tchar(c))
                        return -EINVAL;
                e->name[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        e->name[n] = 0;

        vlen = strnlen(value, SIGV4_MAX_TEXT + 1);
        if (vlen > SIGV4_MAX_TEXT)
                return -E2BIG;
        v = malloc(vlen + 1);
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < vlen; i++) {
                unsigned char c = (unsigned char)value[i];

                if ((c < 0x20 && c != '\t') || c == 0x7f) {
                        free(v);
                        return -EINVAL;
                }
                if (c == ' ' || c == '\t') {
                        if (o > 0 && v[o - 1] != ' ')
                                v[o++] = ' ';
                        continue;
                }
                v[o++] = (char)c;
        }
        if (o > 0 && v[o - 1] == ' ')
                o--;
        v[o] = 0;
        e->value = v;
        e->order = order;
        return 0;
}

/* Appends the canonical headers ("name:value\n" each, repeated names merged) to <creq> and the signed
 * header list ("a;b;c") to <signed_headers>. */
static int sigv4_canonical_headers(struct sigv4_entry *entries, size_t n, struct evbuffer *creq,
                                   struct evbuffer *signed_headers)
{
        int r = 0;

        qsort(entries, n, sizeof(*entries), sigv4_entry_cmp);
        for (size_t i = 0; i < n && r >= 0; i++) {
                bool repeat = i > 0 && strcmp(entries[i].name, entries[i - 1].name) == 0;

                if (repeat) {
                        r = sigv4_add(creq, ",", 1, SIGV4_MAX_TEXT);
                } else {
                        if (i > 0) {
                                r = sigv4_add(creq, "\n", 1, SIGV4_MAX_TEXT);
                                if (r >= 0)
                                        r = sigv4_add(signed_headers, ";", 1, SIGV4_MAX_TEXT);
                        }
                        if (r >= 0)
                                r = sigv4_add_str(signed_headers, entries[i].name, SIGV4_MAX_TEXT);
                        if (r >= 0)
                                r = sigv4_add_str(creq, entries[i].name, SIGV4_MAX_TEXT);
                        if (r >= 0)
                                r = sigv4_add(creq, ":", 1, SIGV4_MAX_TEXT);
                }
                if (r >= 0)
                        r = sigv4_add_str(creq, entries[i].value, SIGV4_MAX_TEXT);
        }
        if (r >= 0 && n > 0)
                r = sigv4_add(creq, "\n", 1, SIGV4_MAX_TEXT);
        return r;
}

static void sigv4_entries_free(struct sigv4_entry *v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(v[i].value);
}

/* Fills <entries> (SIGV4_MAX_HEADERS) with the request's headers, then the signer's own; <filled> counts
 * the entries filled so far, on failure too (the caller frees them). */
static int sigv4_entries_build(const struct sigv4_request *req, const struct sigv4_credentials *cred,
                               const struct sigv4_params *params, const struct sigv4_signature *s,
                               struct sigv4_entry *entries, size_t *filled)
{
        bool token = cred->session_token && *cred->session_token;
        size_t n = 0;
        int r = 0;

        *filled = 0;
        for (size_t i = 0; i < req->n_headers; i++) {
                r = sigv4_entry_set(&entries[n], req->headers[i].name, req->headers[i].value, n);
                if (r < 0)
                        goto out;
                n++;
        }
        r = sigv4_entry_set(&entries[n], "X-Amz-Date", s->amz_date, n);
        if (r < 0)
                goto out;
        n++;
        if (token && !params->omit_session_token) {
                r = sigv4_entry_set(&entries[n], "X-Amz-Security-Token", cred->session_token, n);
                if (r < 0)
                        goto out;
                n++;
        }
        if (params->sign_body) {
                r = sigv4_entry_set(&entries[n], "X-Amz-Content-Sha256", s->content_sha256, n);
                if (r < 0)
                        goto out;
                n++;
        }
out:
        *filled = n;
        return r;
}

/* Computes the signature of <sts> with the key derived from <secret>, <date8>, <region>, <service>. */
static int sigv4_compute_signature(const char *secret, const char *date8, const char *region,
                                   const char *service, const char *sts, char out[static SIGV4_HEX_LEN + 1])
{
        unsigned char k1[SHA256_DIGEST_LENGTH], k2[SHA256_DIGEST_LENGTH], sig[SHA256_DIGEST_LENGTH];
        size_t secret_len = strlen(secret);
        _cleanup_free_ char *key = malloc(secret_len + 5);
        int r;

        if (!key)
                return -ENOMEM;
        memcpy(key, "AWS4", 4);
        memcpy(key + 4, secret, secret_len + 1);

        r = sigv4_hmac(key, secret_len + 4, date8, 8, k1);
        if (r >= 0)
                r = sigv4_hmac(k1, sizeof(k1), region, strlen(region), k2);
        if (r >= 0)
                r = sigv4_hmac(k2, sizeof(k2), service, strlen(service), k1);
        if (r >= 0)
                r = sigv4_hmac(k1, sizeof(k1), SIGV4_TERMINATOR, strlen(SIGV4_TERMINATOR), k2);
        if (r >= 0)
                r = sigv4_hmac(k2, sizeof(k2), sts, strlen(sts), sig);
        if (r >= 0)
                sigv4_hex(sig, sizeof(sig), out);

        OPENSSL_cleanse(key, secret_len + 4);
        OPENSSL_cleanse(k1, sizeof(k1));
        OPENSSL_cleanse(k2, sizeof(k2));
        return r;
}

static int sigv4_check_args(const struct sigv4_request *req, const struct sigv4_credentials *cred,
                            const struct sigv4_params *params)
{
        if (!req || !cred || !params)
                return -EINVAL;
        if (!req->method || !*req->method || strlen(req->method) > SIGV4_NAME_MAX)
                return -EINVAL;
        for (const char *m = req->method; *m; m++)
                if (!sigv4_tchar((unsigned char)*m))
                        return -EINVAL;
        if (!req->path || strnlen(req->path, SIGV4_MAX_TEXT + 1) > SIGV4_MAX_TEXT)
                return -EINVAL;
        if (req->n_headers > 0 && !req->headers)
                return -EINVAL;
        if (req->body_len > 0 && !req->body)
                return -EINVAL;
        if (!sigv4_scope_part_ok(cred->access_key_id, 256) || !cred->secret_access_key ||
            !*cred->secret_access_key || strnlen(cred->secret_access_key, 1025) > 1024)
                return -EINVAL;
        if (!sigv4_scope_part_ok(params->region, SIGV4_SCOPE_PART_MAX) ||
            !sigv4_scope_part_ok(params->service, SIGV4_SCOPE_PART_MAX))
                return -EINVAL;
        return 0;
}

int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cred,
               const struct sigv4_params *params, struct sigv4_signature **ret)
{
        _cleanup_(evbuffer_freep) struct evbuffer *creq = NULL, *signed_headers = NULL, *sts = NULL,
                                                  *auth = NULL;
        _cleanup_(sigv4_signature_freep) struct sigv4_signature *s = NULL;
        _cleanup_free_ struct sigv4_entry *entries = NULL;
        _cleanup_free_ char *path = NULL, *signed_list = NULL;
        char date8[9], creq_hash[SIGV4_HEX_LEN + 1];
        size_t n = 0;
        int r;

        r = sigv4_check_args(req, cred, params);
        if (r < 0)
                return r;
        if (req->n_headers + 3 > SIGV4_MAX_HEADERS)
                return -E2BIG;

        s = calloc(1, sizeof(*s));
        entries = calloc(SIGV4_MAX_HEADERS, sizeof(*entries));
        path = malloc(strlen(req->path) + 2);
        creq = evbuffer_new();
        signed_headers = evbuffer_new();
        sts = evbuffer_new();
        auth = evbuffer_new();
        if (!s || !entries || !path || !creq || !signed_headers || !sts || !auth)
                return -ENOMEM;

        sigv4_format_date(params->when, s->amz_date);
        memcpy(date8, s->amz_date, 8);
        date8[8] = 0;
        r = sigv4_sha256_hex(req->body, req->body_len, s->content_sha256);
        if (r < 0)
                return r;

        r = sigv4_entries_build(req, cred, params, s, entries, &n);
        if (r < 0) {
                sigv4_entries_free(entries, n);
                return r;
        }

        /* 1. The canonical request. */
        if (params->normalize)
                sigv4_normalize_path(req->path, path);
        else if (req->path[0])
                memcpy(path, req->path, strlen(req->path) + 1);
        else
                memcpy(path, "/", 2);
        r = sigv4_add_str(creq, req->method, SIGV4_MAX_TEXT);
        if (r >= 0)
                r = sigv4_add(creq, "\n", 1, SIGV4_MAX_TEXT);
        if (r >= 0)
                r = sigv4_uri_encode(creq, path, strlen(path), true, SIGV4_MAX_TEXT);
        if (r >= 0)
                r = sigv4_add(creq, "\n", 1, SIGV4_MAX_TEXT);
        if (r >= 0)
                r = sigv4_canonical_query(creq, req->query);
        if (r >= 0)
                r = sigv4_add(creq, "\n", 1, SIGV4_MAX_TEXT);
        if (r >= 0)
                r = sigv4_canonical_headers(entries, n, creq, signed_headers);
        sigv4_entries_free(entries, n);
        if (r >= 0)
                r = sigv4_add(creq, "\n", 1, SIGV4_MAX_TEXT);
        if (r < 0)
                return r;
        signed_list = sigv4_take_string(signed_headers);
        if (!signed_list)
                return -ENOMEM;
        r = sigv4_add_str(creq, signed_list, SIGV4_MAX_TEXT);
        if (r >= 0)
                r = sigv4_add(creq, "\n", 1, SIGV4_MAX_TEXT);
        if (r >= 0)
                r = sigv4_add_str(creq, s->content_sha256, SIGV4_MAX_TEXT);
        if (r < 0)
                return r;
        s->canonical_request = sigv4_take_string(creq);
        if (!s->canonical_request)
                return -ENOMEM;

        /* 2. The string to sign. */
        r = sigv4_sha256_hex(s->canonical_request, strlen(s->canonical_request), creq_hash);
        if (r < 0)
                return r;
        if (evbuffer_add_printf(sts, SIGV4_ALGORITHM "\n%s\n%s/%s/%s/" SIGV4_TERMINATOR "\n%s", s->amz_date,
                                date8, params->region, params->service, creq_hash) < 0)
                return -ENOMEM;
        s->string_to_sign = sigv4_take_string(sts);
        if (!s->string_to_sign)
                return -ENOMEM;

        /* 3 and 4. The key, the signature, the Authorization header. */
        r = sigv4_compute_signature(cred->secret_access_key, date8, params->region, params->service,
                                    s->string_to_sign, s->signature);
        if (r < 0)
                return r;
        if (evbuffer_add_printf(auth,
                                SIGV4_ALGORITHM " Credential=%s/%s/%s/%s/" SIGV4_TERMINATOR
                                                ", SignedHeaders=%s, Signature=%s",
                                cred->access_key_id, date8, params->region, params->service, signed_list,
                                s->signature) < 0)
                return -ENOMEM;
        s->authorization = sigv4_take_string(auth);
        if (!s->authorization)
                return -ENOMEM;

        *ret = TAKE_PTR(s);
        return 0;
}

struct sigv4_signature *sigv4_signature_free(struct sigv4_signature *s)
{
        if (!s)
                return NULL;
        free(s->canonical_request);
        free(s->string_to_sign);
        if (s->authorization)
                OPENSSL_cleanse(s->authorization, strlen(s->authorization));
        free(s->authorization);
        OPENSSL_cleanse(s, sizeof(*s));
        free(s);
        return NULL;
}
