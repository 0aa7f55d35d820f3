/* HS256 JSON Web Tokens: signing the tokens login hands out and verifying the ones every request carries.
 *
 * A token is base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256(key, first two parts)), the
 * base64url without padding (RFC 7515). webd only ever issues one header, {"alg":"HS256","typ":"JWT"}, so
 * verification accepts nothing else: alg must be exactly "HS256" (which rules out "none" and every
 * algorithm-confusion trick), typ is optional, any other header member is refused. The base64url decoder
 * is strict (no padding, no stray characters, no non-zero leftover bits), so each token has one spelling.
 *
 * Order of the checks in jwt_verify(): length and shape, base64url of all three parts, header, signature
 * (CRYPTO_memcmp, constant time), and only then the claims are parsed and the clock is consulted.
 *
 * Everything lives on the stack and is bounded by JWT_MAX; the only heap use is cJSON's, freed before
 * returning. Nothing here logs: tokens are credentials. */
#include "webd/jwt.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/cjson.h"
#include "common/macro.h"

#define JWT_SIG_LEN    32                        /* HMAC-SHA256 */
#define JWT_SKEW       60                        /* seconds an iat may lie in the future */
#define JWT_INT_MAX    (INT64_C(1) << 53)        /* integers a JSON number (a double) holds exactly */
#define JWT_STRING_MAX (sizeof(((struct jwt_claims *)0)->sub) - 1)
#define JWT_PART_MAX   (JWT_MAX / 4 * 3 + 3)     /* decoded size of any part of an acceptable token */
#define JWT_HEADER     "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static const char jwt_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Length of the base64url form (no padding) of <n> bytes. */
static size_t jwt_b64_len(size_t n)
{
        return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

/* Writes the base64url form of <data> to <out>, which has room for jwt_b64_len(<n>) characters (no NUL
 * is written). Returns the number of characters. */
static size_t jwt_b64_encode(const uint8_t *data, size_t n, char *out)
{
        size_t i = 0, o = 0;
        uint32_t v;

        for (; i + 3 <= n; i += 3) {
                v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
                out[o++] = jwt_alphabet[v >> 18 & 63];
                out[o++] = jwt_alphabet[v >> 12 & 63];
                out[o++] = jwt_alphabet[v >> 6 & 63];
                out[o++] = jwt_alphabet[v & 63];
        }
        if (n - i == 1) {
                v = (uint32_t)data[i] << 16;
                out[o++] = jwt_alphabet[v >> 18 & 63];
                out[o++] = jwt_alphabet[v >> 12 & 63];
        } else if (n - i == 2) {
                v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
                out[o++] = jwt_alphabet[v >> 18 & 63];
                out[o++] = jwt_alphabet[v >> 12 & 63];
                out[o++] = jwt_alphabet[v >> 6 & 63];
        }
        return o;
}

/* The 6-bit value of a base64url character, or -1. */
static int jwt_b64_value(char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '-')
                return 62;
        if (c == '_')
                return 63;
        return -1;
}

/* Decodes the <n> base64url characters at <in> into <out> (room for <size> bytes). Refuses padding, other
 * characters, a length of 4k+1 and leftover bits that aren't zero. Returns the number of bytes, or
 * -EBADMSG. */
static int jwt_b64_decode(const char *in, size_t n, uint8_t *out, size_t size)
{
        size_t o = 0;
        uint32_t acc = 0;
        unsigned bits = 0;

        if (n % 4 == 1 || n / 4 * 3 + 2 > size)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                int v = jwt_b64_value(in[i]);

                if (v < 0)
                        return -EBADMSG;
                acc = acc << 6 | (uint32_t)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (uint8_t)(acc >> bits);
                        acc &= (1u << bits) - 1;
                }
        }
        if (acc != 0) /* the unused low bits of the last character */
                return -EBADMSG;
        return (int)o;
}

static int jwt_hmac(const uint8_t *key, size_t key_len, const char *data, size_t len,
                    uint8_t mac[static JWT_SIG_LEN])
{
        unsigned mac_len = 0;

        if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, len, mac, &mac_len) ||
            mac_len != JWT_SIG_LEN)
                return -EIO;
        return 0;
}

/* A claim string we accept: 1..JWT_STRING_MAX bytes. */
static bool jwt_string_ok(const char *s)
{
        size_t n = strnlen(s, JWT_STRING_MAX + 1);

        return n >= 1 && n <= JWT_STRING_MAX;
}

int jwt_sign(const uint8_t *key, size_t key_len, const char *sub, const char *name, int64_t iat, int64_t exp,
             int64_t gen, char *buf, size_t size)
{
        _cleanup_(cJSON_Deletep) cJSON *claims = NULL;
        _cleanup_(cJSON_freep) char *payload = NULL;
        char token[JWT_MAX + 1], num[3][24];
        uint8_t mac[JWT_SIG_LEN];
        size_t hlen, plen, len;
        int r;

        if (!key || key_len == 0 || key_len > INT_MAX || !sub || !name || !buf)
                return -EINVAL;
        if (!jwt_string_ok(sub) || !jwt_string_ok(name))
                return -EINVAL;
        if (iat < 0 || iat > JWT_INT_MAX || exp < 0 || exp > JWT_INT_MAX || gen < 0 || gen > JWT_INT_MAX)
                return -EINVAL;

        /* Integers are written as raw JSON so they never go through a double's formatting. Generation 0,
         * every user's first, is left out: such a token reads as one signed before generations existed. */
        (void)snprintf(num[0], sizeof(num[0]), "%" PRId64, iat);
        (void)snprintf(num[1], sizeof(num[1]), "%" PRId64, exp);
        (void)snprintf(num[2], sizeof(num[2]), "%" PRId64, gen);
        claims = cJSON_CreateObject();
        if (!claims || !cJSON_AddStringToObject(claims, "sub", sub) ||
            !cJSON_AddStringToObject(claims, "name", name) || !cJSON_AddRawToObject(claims, "iat", num[0]) ||
            !cJSON_AddRawToObject(claims, "exp", num[1]) ||
            (gen > 0 && !cJSON_AddRawToObject(claims, "gen", num[2])) ||
            !cJSON_AddStringToObject(claims, "iss", "webd"))
                return -ENOMEM;
        payload = cJSON_PrintUnformatted(claims);
        if (!payload)
                return -ENOMEM;

        hlen = jwt_b64_len(strlen(JWT_HEADER));
        plen = jwt_b64_len(strlen(payload));
        len = hlen + 1 + plen + 1 + jwt_b64_len(JWT_SIG_LEN);
        if (len > JWT_MAX) /* can't happen with 63-byte strings, even fully escaped */
                return -EINVAL;
        if (len + 1 > size)
                return -ENOBUFS;

        (void)jwt_b64_encode((const uint8_t *)JWT_HEADER, strlen(JWT_HEADER), token);
        token[hlen] = '.';
        (void)jwt_b64_encode((const uint8_t *)payload, strlen(payload), token + hlen + 1);
        token[hlen + 1 + plen] = '.';
        r = jwt_hmac(key, key_len, token, hlen + 1 + plen, mac);
        if (r < 0)
                return r;
        (void)jwt_b64_encode(mac, sizeof(mac), token + hlen + 1 + plen + 1);
        token[len] = '\0';

        memcpy(buf, token, len + 1);
        return (int)len;
}

/* Parses <len> bytes at <data> as one JSON object (no NUL inside, nothing after it). NULL if it isn't. */
static cJSON *jwt_parse_object(uint8_t *data, size_t len, size_t size)
{
        cJSON *j;

        if (len >= size || memchr(data, '\0', len))
                return NULL;
        data[len] = '\0';
        j = cJSON_ParseWithLengthOpts((const char *)data, len + 1, NULL, true);
        if (j && !cJSON_IsObject(j)) {
                cJSON_Delete(j);
                return NULL;
        }
        return j;
}

/* The header must be {"alg":"HS256"} plus at most "typ":"JWT". */
static int jwt_check_header(const cJSON *header)
{
        const cJSON *alg = NULL, *typ = NULL, *m;

        cJSON_ArrayForEach(m, header) {
                if (m->string && strcmp(m->string, "alg") == 0 && !alg)
                        alg = m;
                else if (m->string && strcmp(m->string, "typ") == 0 && !typ)
                        typ = m;
                else
                        return -EBADMSG; /* duplicate or unknown member ("crit", "jku", ...) */
        }
        if (!cJSON_IsString(alg) || strcmp(alg->valuestring, "HS256") != 0)
                return -EPERM;
        if (typ && (!cJSON_IsString(typ) || strcasecmp(typ->valuestring, "JWT") != 0))
                return -EBADMSG;
        return 0;
}

static int jwt_claim_string(const cJSON *m, char *dst, size_t size)
{
        size_t n;

        if (!cJSON_IsString(m))
                return -EBADMSG;
        n = strnlen(m->valuestring, size);
        if (n == 0 || n >= size)
                return -EBADMSG;
        memcpy(dst, m->valuestring, n + 1);
        return 0;
}

static int jwt_claim_int(const cJSON *m, int64_t *ret)
{
        double d;

        if (!cJSON_IsNumber(m))
                return -EBADMSG;
        d = m->valuedouble;
        if (!(d >= 0 && d <= (double)JWT_INT_MAX) || (double)(int64_t)d != d)
                return -EBADMSG;
        *ret = (int64_t)d;
        return 0;
}

/* Reads the claims webd needs; other claims are ignored, a duplicate of a known one is refused. "gen" may
 * be absent (0): tokens signed before generations existed carry none, and generation 0 is what every
 * user starts with, so such a token is refused as soon as the user's tokens are first revoked. */
static int jwt_read_claims(const cJSON *claims, struct jwt_claims *c)
{
        enum { SUB = 1, NAME = 2, IAT = 4, EXP = 8, ISS = 16, GEN = 32, REQUIRED = 31 };
        unsigned seen = 0, bit;
        const cJSON *m;
        int r = 0;

        cJSON_ArrayForEach(m, claims) {
                if (!m->string)
                        return -EBADMSG;
                if (strcmp(m->string, "sub") == 0) {
                        bit = SUB;
                        r = jwt_claim_string(m, c->sub, sizeof(c->sub));
                } else if (strcmp(m->string, "name") == 0) {
                        bit = NAME;
                        r = jwt_claim_string(m, c->name, sizeof(c->name));
                } else if (strcmp(m->string, "iat") == 0) {
                        bit = IAT;
                        r = jwt_claim_int(m, &c->iat);
                } else if (strcmp(m->string, "exp") == 0) {
                        bit = EXP;
                        r = jwt_claim_int(m, &c->exp);
                } else if (strcmp(m->string, "gen") == 0) {
                        bit = GEN;
                        r = jwt_claim_int(m, &c->gen);
                } else if (strcmp(m->string, "iss") == 0) {
                        bit = ISS;
                        r = cJSON_IsString(m) && strcmp(m->valuestring, "webd") == 0 ? 0 : -EBADMSG;
                } else
                        continue;
                if (r < 0 || (seen & bit))
                        return -EBADMSG;
                seen |= bit;
        }
        return (seen & REQUIRED) == REQUIRED ? 0 : -EBADMSG;
}

int jwt_verify(const uint8_t *key, size_t key_len, const char *token, int64_t now, struct jwt_claims *ret)
{
        _cleanup_(cJSON_Deletep) cJSON *header = NULL, *claims = NULL;
        uint8_t hbuf[JWT_PART_MAX], pbuf[JWT_PART_MAX], sig[JWT_PART_MAX], mac[JWT_SIG_LEN];
        const char *dot1, *dot2;
        struct jwt_claims c = { 0 };
        size_t len;
        int hlen, plen, slen, r;

        if (!key || key_len == 0 || key_len > INT_MAX || !token || !ret)
                return -EINVAL;

        len = strnlen(token, JWT_MAX + 1);
        if (len > JWT_MAX)
                return -EBADMSG;
        dot1 = memchr(token, '.', len);
        if (!dot1)
                return -EBADMSG;
        dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
        if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
                return -EBADMSG;
        if (dot1 == token || dot2 == dot1 + 1) /* an empty signature is a signature that doesn't match */
                return -EBADMSG;

        hlen = jwt_b64_decode(token, (size_t)(dot1 - token), hbuf, sizeof(hbuf));
        plen = jwt_b64_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), pbuf, sizeof(pbuf));
        slen = jwt_b64_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), sig, sizeof(sig));
        if (hlen < 0 || plen < 0 || slen < 0)
                return -EBADMSG;

        header = jwt_parse_object(hbuf, (size_t)hlen, sizeof(hbuf));
        if (!header)
                return -EBADMSG;
        r = jwt_check_header(header);
        if (r < 0)
                return r;

        if (slen != JWT_SIG_LEN)
                return -EPERM;
        r = jwt_hmac(key, key_len, token, (size_t)(dot2 - token), mac);
        if (r < 0)
                return r;
        if (CRYPTO_memcmp(mac, sig, JWT_SIG_LEN) != 0)
                return -EPERM;

        claims = jwt_parse_object(pbuf, (size_t)plen, sizeof(pbuf));
        if (!claims)
                return -EBADMSG;
        r = jwt_read_claims(claims, &c);
        if (r < 0)
                return r;
        if (c.exp <= now)
                return -ETIME;
        if (c.iat - JWT_SKEW > now) /* c.iat >= 0: no overflow */
                return -ERANGE;

        *ret = c;
        return 0;
}
