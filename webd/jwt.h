/* JSON Web Tokens signed with HMAC-SHA256 (RFC 7519, "HS256"): the bearer tokens webd issues at login and
 * checks on every request. Pure functions: no allocation survives a call, nothing is logged, time is passed
 * in. Tokens are credentials: callers must never log them either. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The longest token accepted or produced, in bytes, without the NUL. */
#define JWT_MAX 2048

/* Signs the claims {"sub":<sub>,"name":<name>,"iat":<iat>,"exp":<exp>,"gen":<gen>,"iss":"webd"} ("gen"
 * left out when 0) under the header {"alg":"HS256","typ":"JWT"} with <key> and writes the NUL-terminated
 * token to <buf>.
 * <sub> and <name> are 1..63 bytes of UTF-8; <iat> and <exp> are seconds since the epoch in [0, 2^53];
 * <gen> is the user's token generation in [0, 2^53] (a token is only accepted while the user's generation
 * in the database is still <gen>: bumping it revokes every token issued before).
 * Returns the token's length, or -EINVAL (bad argument), -ENOBUFS (<size> too small, <buf> untouched),
 * -ENOMEM, -EIO (OpenSSL failed). */
int jwt_sign(const uint8_t *key, size_t key_len, const char *sub, const char *name, int64_t iat, int64_t exp,
             int64_t gen, char *buf, size_t size);

struct jwt_claims {
        char sub[64];
        char name[64];
        int64_t iat, exp;
        int64_t gen; /* 0 when the token has no "gen" (tokens issued before generations existed) */
};

/* Checks <token> against <key> at time <now> (seconds since the epoch): three base64url parts without
 * padding, a header whose alg is exactly "HS256" (and typ, if present, "JWT"), a valid signature, then
 * claims with string sub and name (1..63 bytes), integer iat and exp, optional integer gen, iss "webd",
 * exp > now and iat <= now + 60 (clock skew).
 * Returns 0 and fills *<ret>, or -EBADMSG (malformed or over JWT_MAX), -EPERM (another alg, or a signature
 * that doesn't match), -ETIME (expired), -ERANGE (issued in the future, beyond the skew), -ENOMEM, -EIO
 * (OpenSSL failed).
 * The claims are only looked at once the signature has matched. */
int jwt_verify(const uint8_t *key, size_t key_len, const char *token, int64_t now, struct jwt_claims *ret);
