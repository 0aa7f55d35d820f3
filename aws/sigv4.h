/* AWS Signature Version 4: signs an HTTP request with an access key, so the EC2 API accepts it.
 *
 * Pure computation: no I/O, no clock (the caller passes the signing time), no logging. The result carries
 * the intermediate strings (canonical request, string to sign) so tests can compare them with the
 * reference vectors, and the header values the request must be sent with. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "common/macro.h"

#define SIGV4_MAX_HEADERS 64          /* headers of one request, the signer's own included */
#define SIGV4_MAX_TEXT    (64 * 1024) /* canonical request and the other strings built */
#define SIGV4_DATE_LEN    16          /* "20150830T123600Z" */
#define SIGV4_HEX_LEN     64          /* a SHA-256 in lowercase hex */

struct evbuffer;

struct sigv4_header {
        const char *name;
        const char *value;
};

struct sigv4_credentials {
        const char *access_key_id;
        const char *secret_access_key;
        const char *session_token; /* NULL or "" when the credentials have none */
};

struct sigv4_request {
        const char *method;                 /* "GET", "POST" */
        const char *path;                   /* as sent, without the query: "/", "/a/b" */
        const char *query;                  /* as sent, without the '?'; NULL or "" when none */
        const struct sigv4_header *headers; /* as sent, Host included; any order, names in any case */
        size_t n_headers;
        const void *body;
        size_t body_len;
};

struct sigv4_params {
        const char *region;      /* "us-east-1" */
        const char *service;     /* "ec2" */
        time_t when;             /* signing time, seconds since the epoch (UTC) */
        bool normalize;          /* remove "." and ".." segments and empty segments from the path (every
                                  * service but S3) */
        bool sign_body;          /* send and sign X-Amz-Content-Sha256 */
        bool omit_session_token; /* send X-Amz-Security-Token without signing it (a few services want
                                  * that); by default it is signed */
};

/* The signer's output. The request must carry X-Amz-Date: amz_date and Authorization: authorization, plus
 * X-Amz-Security-Token: <session token> when the credentials have one, and X-Amz-Content-Sha256:
 * content_sha256 when params.sign_body. */
struct sigv4_signature {
        char amz_date[SIGV4_DATE_LEN + 1];
        char content_sha256[SIGV4_HEX_LEN + 1];
        char signature[SIGV4_HEX_LEN + 1];
        char *canonical_request;
        char *string_to_sign;
        char *authorization;
};

/* Signs <req>. Returns 0 and a new signature in <ret> (free with sigv4_signature_free()), or -EINVAL when
 * the request or parameters are malformed (a header name or value with control characters, a missing
 * key), -E2BIG when a string would exceed SIGV4_MAX_TEXT or there are more than SIGV4_MAX_HEADERS
 * headers, -ENOMEM, or -EIO when OpenSSL fails. */
int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cred,
               const struct sigv4_params *params, struct sigv4_signature **ret);

/* Frees <s> (NULL allowed), wiping it. Returns NULL. */
struct sigv4_signature *sigv4_signature_free(struct sigv4_signature *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct sigv4_signature *, sigv4_signature_free)

/* Writes the X-Amz-Date form of <when> ("20150830T123600Z") into <buf> (SIGV4_DATE_LEN + 1 bytes). */
void sigv4_format_date(time_t when, char buf[static SIGV4_DATE_LEN + 1]);

/* Appends <n> bytes of <s> to <out>, URI-encoded the SigV4 way: everything but A-Z a-z 0-9 - . _ ~ becomes
 * %XX (uppercase hex); '/' is kept when <keep_slash>. Returns 0, or -E2BIG when <out> would grow beyond
 * <max> bytes, or -ENOMEM. Also what form bodies (ec2.c) are encoded with. */
int sigv4_uri_encode(struct evbuffer *out, const char *s, size_t n, bool keep_slash, size_t max);
