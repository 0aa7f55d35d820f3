/* What a plain listener does for HTTPS: the redirect to the https:// URL, and the ACME http-01 challenge
 * files served from a directory, so that certbot in webroot mode can prove the name before there is a
 * certificate. proxy.c decides when; this module builds the answers and never logs above debug. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define HTTPS_ACME_PREFIX    "/.well-known/acme-challenge/"
#define HTTPS_ACME_TOKEN_MAX 128  /* ACME tokens are 43 base64url characters; longer is no token */
#define HTTPS_ACME_FILE_MAX  4096 /* a key authorization is under 100 bytes */
#define HTTPS_HOST_MAX       255

/* Whether the request target <target> (<len> bytes) asks for a challenge file. */
bool https_is_acme(const char *target, size_t len);

/* Appends to <out> the https:// URL for the request with target <target> and Host <host> (NULL or empty:
 * none): "https://HOST[:PORT]/path?query", with <port> left out when 443. An absolute-form target's
 * authority wins over the Host. Returns 0, or -EINVAL when there is no host name that could be put in a
 * URL (missing, too long, or with characters a host name does not have). */
int https_redirect_location(struct evbuffer *out, const char *target, size_t target_len, const char *host,
                            size_t host_len, uint16_t port);

/* Appends the challenge file for the target <target> (HTTPS_ACME_PREFIX + token) from directory <dir> to
 * <out>. The token must be 1..HTTPS_ACME_TOKEN_MAX base64url characters (no '/', no '.', no query), the
 * file a regular file of at most HTTPS_ACME_FILE_MAX bytes (a symbolic link is not followed). Returns the
 * bytes appended, -EINVAL for a token that is not one, -ENOENT when there is no such file, -EFBIG when it
 * is too large, or -errno. The read is a small local file's, on the event loop. */
int https_acme_read(struct evbuffer *out, const char *dir, const char *target, size_t target_len);
