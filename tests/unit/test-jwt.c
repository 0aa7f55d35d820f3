/* Unit tests for webd/jwt.c: known tokens computed independently (Python's hmac and PyJWT 2.6), round
 * trips, and every way a token must be refused: alg none / HS512 / other headers, tampered parts, wrong
 * key, expiry and iat in the future at their exact edges, bad base64url, length limits, missing parts and
 * malformed claims. Forged tokens are built here with this file's own base64url encoder and HMAC. */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/macro.h"
#include "webd/jwt.h"

static const uint8_t key[] = "webd-unit-test-key-0123456789abcdef";
#define KEY_LEN (sizeof(key) - 1)

/* Python: si = b64(b'{"alg":"HS256","typ":"JWT"}') + "." +
 *   b64(b'{"sub":"42","name":"alice","iat":1700000000,"exp":1700003600,"iss":"webd"}');
 *   si + "." + b64(hmac.new(key, si.encode(), hashlib.sha256).digest()), b64 = urlsafe, '=' stripped.
 * PyJWT's jwt.decode() accepts it. */
static const char token_alice[] =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOiI0MiIsIm5hbWUiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhw"
        "IjoxNzAwMDAzNjAwLCJpc3MiOiJ3ZWJkIn0."
        "YSIndb1avUh2ja8LMdQtdQJOUoLm55xTzJj9OoHt4Lo";
/* PyJWT: jwt.encode({"iss":"webd","exp":1700003600,"iat":1700000000,"name":"bob","sub":"7","jti":"x"},
 *   key, algorithm="HS256"): other claim order, an extra claim. */
static const char token_bob[] =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJpc3MiOiJ3ZWJkIiwiZXhwIjoxNzAwMDAzNjAwLCJpYXQiOjE3MDAwMDAwMDAs"
        "Im5hbWUiOiJib2IiLCJzdWIiOiI3IiwianRp"
        "IjoieCJ9.XV7g2f52GAgSQpx8qWG4OWtbBrpQoOegTJtsC49kmtA";
/* PyJWT: the claims of token_alice with algorithm="HS512". */
static const char token_hs512[] =
        "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOiI0MiIsIm5hbWUiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhw"
        "IjoxNzAwMDAzNjAwLCJpc3MiOiJ3ZWJkIn0."
        "VPaDK-cwjJ4cUUoEaBUEmZWr2jUOU602869PJH99vkYrvwy1AhRNFBCCIO5l0HgL-4fi-ADGW06gTCZlRjafuQ";

#define IAT INT64_C(1700000000)
#define EXP INT64_C(1700003600)
#define NOW (IAT + 10)

#define HEADER_HS256 "{'alg':'HS256','typ':'JWT'}"
#define CLAIMS_ALICE "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'iss':'webd'}"

/* base64url without padding, through OpenSSL's standard base64 (independent of the module's encoder). */
static size_t b64url(const void *data, size_t n, char *out, size_t size)
{
        size_t len;

        assert_true(4 * ((n + 2) / 3) + 1 <= size);
        len = (size_t)EVP_EncodeBlock((unsigned char *)out, data, (int)n);
        while (len > 0 && out[len - 1] == '=')
                len--;
        out[len] = '\0';
        for (size_t i = 0; i < len; i++) {
                if (out[i] == '+')
                        out[i] = '-';
                else if (out[i] == '/')
                        out[i] = '_';
        }
        return len;
}

/* Copies <in> to <out> with every ' turned into ", so that JSON can be written here without escapes. */
static const char *dq(const char *in, char *out, size_t size)
{
        size_t n = strlen(in);

        assert_true(n < size);
        for (size_t i = 0; i <= n; i++)
                out[i] = in[i] == '\'' ? '"' : in[i];
        return out;
}

/* Builds header.payload.signature from JSON written with ' for "; <sign_key> NULL leaves the signature
 * empty. */
static void forge(char *out, size_t size, const char *header, const char *payload, const uint8_t *sign_key,
                  size_t sign_key_len)
{
        char h[4096], p[4096], s[128], json[4096];
        uint8_t mac[EVP_MAX_MD_SIZE];
        unsigned mac_len = 0;
        int n;

        dq(header, json, sizeof(json));
        b64url(json, strlen(json), h, sizeof(h));
        dq(payload, json, sizeof(json));
        b64url(json, strlen(json), p, sizeof(p));
        n = snprintf(out, size, "%s.%s", h, p);
        assert_true(n > 0 && (size_t)n < size);
        s[0] = '\0';
        if (sign_key) {
                assert_non_null(HMAC(EVP_sha256(), sign_key, (int)sign_key_len, (const unsigned char *)out,
                                     (size_t)n, mac, &mac_len));
                b64url(mac, mac_len, s, sizeof(s));
        }
        n = snprintf(out, size, "%s.%s.%s", h, p, s);
        assert_true(n > 0 && (size_t)n < size);
}

static int verify(const char *token, int64_t now)
{
        struct jwt_claims c;

        return jwt_verify(key, KEY_LEN, token, now, &c);
}

static int verify_forged(const char *header, const char *payload)
{
        char token[8192];

        forge(token, sizeof(token), header, payload, key, KEY_LEN);
        return verify(token, NOW);
}

static void test_known_vector(void **state)
{
        char buf[JWT_MAX + 1];
        struct jwt_claims c;

        assert_int_equal(jwt_sign(key, KEY_LEN, "42", "alice", IAT, EXP, 0, buf, sizeof(buf)),
                         (int)strlen(token_alice));
        assert_string_equal(buf, token_alice);

        memset(&c, 0, sizeof(c));
        assert_int_equal(jwt_verify(key, KEY_LEN, token_alice, NOW, &c), 0);
        assert_string_equal(c.sub, "42");
        assert_string_equal(c.name, "alice");
        assert_int_equal(c.iat, IAT);
        assert_int_equal(c.exp, EXP);

        assert_int_equal(jwt_verify(key, KEY_LEN, token_bob, NOW, &c), 0);
        assert_string_equal(c.sub, "7");
        assert_string_equal(c.name, "bob");
}

static void test_round_trip(void **state)
{
        static const char *const names[] = {
                "a", "bob", "user.name-1_x", "quo\"te\\back/slash", "ñandú 日本語", "tab\tnew\nline",
                "123456789012345678901234567890123456789012345678901234567890123", /* 63 bytes */
        };
        char buf[JWT_MAX + 1];

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                struct jwt_claims c;
                int n;

                print_message("name '%s'\n", names[i]);
                n = jwt_sign(key, KEY_LEN, "9007199254740992", names[i], 0, INT64_C(1) << 53, 0, buf,
                             sizeof(buf));
                assert_true(n > 0);
                assert_int_equal((size_t)n, strlen(buf));
                assert_int_equal(jwt_verify(key, KEY_LEN, buf, NOW, &c), 0);
                assert_string_equal(c.sub, "9007199254740992");
                assert_string_equal(c.name, names[i]);
                assert_int_equal(c.iat, 0);
                assert_int_equal(c.exp, INT64_C(1) << 53);
        }

        /* Integers above 2^31 keep every digit. */
        assert_true(jwt_sign(key, KEY_LEN, "1", "x", INT64_C(4102444800), INT64_C(4102448400), 0, buf,
                             sizeof(buf)) > 0);
        {
                struct jwt_claims c;

                assert_int_equal(jwt_verify(key, KEY_LEN, buf, INT64_C(4102444800), &c), 0);
                assert_int_equal(c.iat, INT64_C(4102444800));
                assert_int_equal(c.exp, INT64_C(4102448400));
        }
}

/* The token generation: written only when not 0 (so a first-generation token is the same as before), read
 * back, absent = 0; anything but one non-negative integer is refused. */
static void test_generation(void **state)
{
        static const struct {
                const char *claims;
                int error;
                int64_t gen;
        } cases[] = {
                { CLAIMS_ALICE, 0, 0 },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'gen':0,'iss':'webd'}", 0, 0 },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'gen':12,'iss':'webd'}", 0, 12 },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'gen':-1,'iss':'webd'}",
                  -EBADMSG, 0 },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'gen':'3','iss':'webd'}",
                  -EBADMSG, 0 },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'gen':1.5,'iss':'webd'}",
                  -EBADMSG, 0 },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'gen':null,'iss':'webd'}",
                  -EBADMSG, 0 },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'gen':1e300,'iss':'webd'}",
                  -EBADMSG, 0 },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'gen':1,'gen':2,'iss':'webd'}",
                  -EBADMSG, 0 },
        };
        char buf[JWT_MAX + 1], token[8192];
        struct jwt_claims c;

        assert_true(jwt_sign(key, KEY_LEN, "42", "alice", IAT, EXP, 0, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, token_alice);
        assert_true(jwt_sign(key, KEY_LEN, "42", "alice", IAT, EXP, 7, buf, sizeof(buf)) > 0);
        assert_string_not_equal(buf, token_alice);
        memset(&c, 0xff, sizeof(c));
        assert_int_equal(jwt_verify(key, KEY_LEN, buf, NOW, &c), 0);
        assert_int_equal(c.gen, 7);
        assert_int_equal(jwt_sign(key, KEY_LEN, "42", "alice", IAT, EXP, -1, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(
                jwt_sign(key, KEY_LEN, "42", "alice", IAT, EXP, (INT64_C(1) << 53) + 1, buf, sizeof(buf)),
                -EINVAL);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                print_message("claims %s\n", cases[i].claims);
                forge(token, sizeof(token), HEADER_HS256, cases[i].claims, key, KEY_LEN);
                memset(&c, 0xff, sizeof(c));
                assert_int_equal(jwt_verify(key, KEY_LEN, token, NOW, &c), cases[i].error);
                if (cases[i].error == 0)
                        assert_int_equal(c.gen, cases[i].gen);
        }
}

static void test_sign_bad_arguments(void **state)
{
        char buf[JWT_MAX + 1], small[64];
        char long_name[65];
        int n;

        memset(long_name, 'x', 64);
        long_name[64] = '\0';
        assert_int_equal(jwt_sign(key, KEY_LEN, "1", long_name, IAT, EXP, 0, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(jwt_sign(key, KEY_LEN, long_name, "n", IAT, EXP, 0, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(jwt_sign(key, KEY_LEN, "", "n", IAT, EXP, 0, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(jwt_sign(key, KEY_LEN, "1", "", IAT, EXP, 0, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(jwt_sign(key, 0, "1", "n", IAT, EXP, 0, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(jwt_sign(NULL, KEY_LEN, "1", "n", IAT, EXP, 0, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(jwt_sign(key, KEY_LEN, "1", "n", -1, EXP, 0, buf, sizeof(buf)), -EINVAL);
        assert_int_equal(jwt_sign(key, KEY_LEN, "1", "n", IAT, (INT64_C(1) << 53) + 1, 0, buf, sizeof(buf)),
                         -EINVAL);

        /* Too small: -ENOBUFS and the buffer untouched; exactly the right size works. */
        memset(small, 'Z', sizeof(small));
        assert_int_equal(jwt_sign(key, KEY_LEN, "42", "alice", IAT, EXP, 0, small, sizeof(small)), -ENOBUFS);
        for (size_t i = 0; i < sizeof(small); i++)
                assert_int_equal(small[i], 'Z');
        n = (int)strlen(token_alice);
        assert_int_equal(jwt_sign(key, KEY_LEN, "42", "alice", IAT, EXP, 0, buf, (size_t)n), -ENOBUFS);
        assert_int_equal(jwt_sign(key, KEY_LEN, "42", "alice", IAT, EXP, 0, buf, (size_t)n + 1), n);
}

static void test_alg(void **state)
{
        char token[4096];

        /* alg none, unsigned and "signed" */
        forge(token, sizeof(token), "{'alg':'none','typ':'JWT'}", CLAIMS_ALICE, NULL, 0);
        assert_int_equal(verify(token, NOW), -EPERM);
        assert_int_equal(verify_forged("{'alg':'none','typ':'JWT'}", CLAIMS_ALICE), -EPERM);
        assert_int_equal(verify_forged("{'alg':'none'}", CLAIMS_ALICE), -EPERM);
        /* other spellings and algorithms */
        assert_int_equal(verify(token_hs512, NOW), -EPERM);
        assert_int_equal(verify_forged("{'alg':'hs256','typ':'JWT'}", CLAIMS_ALICE), -EPERM);
        assert_int_equal(verify_forged("{'alg':'HS256 '}", CLAIMS_ALICE), -EPERM);
        assert_int_equal(verify_forged("{'alg':'RS256','typ':'JWT'}", CLAIMS_ALICE), -EPERM);
        assert_int_equal(verify_forged("{'alg':null}", CLAIMS_ALICE), -EPERM);
        assert_int_equal(verify_forged("{'alg':['HS256']}", CLAIMS_ALICE), -EPERM);
        assert_int_equal(verify_forged("{'typ':'JWT'}", CLAIMS_ALICE), -EPERM);
        assert_int_equal(verify_forged("{}", CLAIMS_ALICE), -EPERM);
        /* a header webd never issues */
        assert_int_equal(verify_forged("{'alg':'HS256','kid':'1'}", CLAIMS_ALICE), -EBADMSG);
        assert_int_equal(verify_forged("{'alg':'HS256','crit':['x'],'x':1}", CLAIMS_ALICE), -EBADMSG);
        assert_int_equal(verify_forged("{'alg':'HS256','alg':'none'}", CLAIMS_ALICE), -EBADMSG);
        assert_int_equal(verify_forged("{'alg':'HS256','typ':'JWS'}", CLAIMS_ALICE), -EBADMSG);
        assert_int_equal(verify_forged("['HS256']", CLAIMS_ALICE), -EBADMSG);
        assert_int_equal(verify_forged("{'alg':'HS256'", CLAIMS_ALICE), -EBADMSG);
        /* the accepted forms */
        assert_int_equal(verify_forged("{'alg':'HS256'}", CLAIMS_ALICE), 0);
        assert_int_equal(verify_forged(" { 'typ' : 'jwt' , 'alg' : 'HS256' } ", CLAIMS_ALICE), 0);
}

static void test_tampered(void **state)
{
        char token[4096], t[sizeof(token_alice)];
        const char *sig;

        /* Other claims under the original signature. */
        forge(token, sizeof(token), HEADER_HS256,
              "{'sub':'1','name':'alice','iat':1700000000,'exp':1700003600,'iss':'webd'}", key,
              KEY_LEN);
        sig = strrchr(token_alice, '.');
        memcpy(strrchr(token, '.'), sig, strlen(sig) + 1);
        assert_int_equal(verify(token, NOW), -EPERM);

        /* One character of the payload or of the signature changed (the first signature character carries
         * six full bits, so the result is still canonical base64url). */
        memcpy(t, token_alice, sizeof(t));
        t[40] = t[40] == 'A' ? 'B' : 'A';
        assert_int_equal(verify(t, NOW), -EPERM);
        memcpy(t, token_alice, sizeof(t));
        t[strrchr(t, '.') - t + 1] ^= 1;
        assert_int_equal(verify(t, NOW), -EPERM);

        /* The signature without its first 4 characters (3 bytes), or with 3 bytes more. */
        memcpy(t, token_alice, sizeof(t));
        sig = strrchr(t, '.') + 1;
        memmove((char *)sig, sig + 4, strlen(sig + 4) + 1);
        assert_int_equal(verify(t, NOW), -EPERM);
        (void)snprintf(token, sizeof(token), "%sAAAA", token_alice);
        assert_int_equal(verify(token, NOW), -EPERM);

        /* Empty signature with a valid header. */
        memcpy(t, token_alice, sizeof(t));
        strrchr(t, '.')[1] = '\0';
        assert_int_equal(verify(t, NOW), -EPERM);
}

static void test_wrong_key(void **state)
{
        static const uint8_t other[] = "webd-unit-test-key-0123456789abcdeF";
        struct jwt_claims c;

        assert_int_equal(jwt_verify(other, sizeof(other) - 1, token_alice, NOW, &c), -EPERM);
        assert_int_equal(jwt_verify(key, KEY_LEN - 1, token_alice, NOW, &c), -EPERM);
        assert_int_equal(jwt_verify(key, 0, token_alice, NOW, &c), -EINVAL);
}

static void test_time(void **state)
{
        struct jwt_claims c;

        memset(&c, 0x5a, sizeof(c));
        assert_int_equal(jwt_verify(key, KEY_LEN, token_alice, EXP, &c), -ETIME);
        assert_int_equal(c.sub[0], 0x5a); /* untouched on failure */
        assert_int_equal(verify(token_alice, EXP + 100000), -ETIME);
        assert_int_equal(verify(token_alice, EXP - 1), 0);
        /* iat may be up to 60 s ahead of our clock */
        assert_int_equal(verify(token_alice, IAT - 60), 0);
        assert_int_equal(verify(token_alice, IAT - 61), -ERANGE);
        assert_int_equal(verify(token_alice, IAT - 3600), -ERANGE);
        assert_int_equal(verify(token_alice, 0), -ERANGE);
        assert_int_equal(verify(token_alice, INT64_MAX), -ETIME);
        assert_int_equal(verify(token_alice, INT64_MIN), -ERANGE);
}

static void test_bad_base64(void **state)
{
        char t[sizeof(token_alice) + 8];
        size_t dot2 = (size_t)(strrchr(token_alice, '.') - token_alice);

        /* padding */
        (void)snprintf(t, sizeof(t), "%s=", token_alice);
        assert_int_equal(verify(t, NOW), -EBADMSG);
        /* standard base64 characters */
        memcpy(t, token_alice, sizeof(token_alice));
        t[dot2 + 1] = '+';
        assert_int_equal(verify(t, NOW), -EBADMSG);
        memcpy(t, token_alice, sizeof(token_alice));
        t[5] = '/';
        assert_int_equal(verify(t, NOW), -EBADMSG);
        /* space, and a 4k+1 length */
        memcpy(t, token_alice, sizeof(token_alice));
        t[10] = ' ';
        assert_int_equal(verify(t, NOW), -EBADMSG);
        (void)snprintf(t, sizeof(t), "%sAA", token_alice);
        assert_int_equal(verify(t, NOW), -EBADMSG); /* a signature of 45 = 4k+1 characters */
        /* Leftover bits: the signature's last character encodes 4 bits plus 2 that must be zero. "o" is 40
         * (101000); "p" is 41 (101001): the same bytes, but not the canonical spelling. */
        memcpy(t, token_alice, sizeof(token_alice));
        assert_int_equal(t[strlen(t) - 1], 'o');
        t[strlen(t) - 1] = 'p';
        assert_int_equal(verify(t, NOW), -EBADMSG);
        /* A NUL inside the decoded header (after a complete object) */
        {
                static const uint8_t header_nul[] = "{\"alg\":\"HS256\"}\0";
                char token[4096], h[64], p[512], json[256];

                b64url(header_nul, sizeof(header_nul) - 1, h, sizeof(h));
                dq(CLAIMS_ALICE, json, sizeof(json));
                b64url(json, strlen(json), p, sizeof(p));
                (void)snprintf(token, sizeof(token), "%s.%s.%s", h, p, strrchr(token_alice, '.') + 1);
                assert_int_equal(verify(token, NOW), -EBADMSG);
        }
}

static void test_shape(void **state)
{
        static const char *const bad[] = {
                "",
                ".",
                "..",
                "...",
                "abc",
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.",
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30",
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..",
                ".e30.YSIndb1avUh2ja8LMdQtdQJOUoLm55xTzJj9OoHt4Lo",
        };
        char t[sizeof(token_alice) + 8];

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                print_message("token '%s'\n", bad[i]);
                assert_int_equal(verify(bad[i], NOW), -EBADMSG);
        }
        (void)snprintf(t, sizeof(t), "%s.", token_alice);
        assert_int_equal(verify(t, NOW), -EBADMSG);
        (void)snprintf(t, sizeof(t), ".%s", token_alice);
        assert_int_equal(verify(t, NOW), -EBADMSG);
        assert_int_equal(jwt_verify(key, KEY_LEN, NULL, NOW, &(struct jwt_claims){ 0 }), -EINVAL);
}

static void test_length_limit(void **state)
{
        char payload[2048], token[4096];
        size_t base = strlen(CLAIMS_ALICE) - 1; /* without the closing brace */
        size_t pad = 0;

        /* Pad an extra claim until the token is exactly JWT_MAX: accepted; one byte more: refused, even
         * though it is correctly signed. Each 3 bytes of payload add 4 characters. */
        for (pad = 0; pad < sizeof(payload); pad++) {
                int n = snprintf(payload, sizeof(payload), "%.*s,'pad':'%*s'}", (int)base, CLAIMS_ALICE,
                                 (int)pad, "");

                assert_true(n > 0 && (size_t)n < sizeof(payload));
                forge(token, sizeof(token), HEADER_HS256, payload, key, KEY_LEN);
                if (strlen(token) >= JWT_MAX)
                        break;
        }
        if (strlen(token) > JWT_MAX) {
                /* overshot by one or two characters: shrink the padding by one byte and check again */
                (void)snprintf(payload, sizeof(payload), "%.*s,'pad':'%*s'}", (int)base, CLAIMS_ALICE,
                               (int)pad - 1, "");
                forge(token, sizeof(token), HEADER_HS256, payload, key, KEY_LEN);
        }
        print_message("token of %zu bytes\n", strlen(token));
        assert_true(strlen(token) <= JWT_MAX && strlen(token) > JWT_MAX - 4);
        assert_int_equal(verify(token, NOW), 0);

        for (;;) {
                pad++;
                (void)snprintf(payload, sizeof(payload), "%.*s,'pad':'%*s'}", (int)base, CLAIMS_ALICE,
                               (int)pad, "");
                forge(token, sizeof(token), HEADER_HS256, payload, key, KEY_LEN);
                if (strlen(token) > JWT_MAX)
                        break;
        }
        assert_int_equal(verify(token, NOW), -EBADMSG);

        /* A long string of junk. */
        memset(token, 'a', sizeof(token) - 1);
        token[sizeof(token) - 1] = '\0';
        assert_int_equal(verify(token, NOW), -EBADMSG);
}

static void test_claims(void **state)
{
        static const struct {
                const char *claims;
                int error;
        } cases[] = {
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600}", -EBADMSG },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'iss':'x'}",
                  -EBADMSG },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'iss':null}",
                  -EBADMSG },
                { "{'sub':42,'name':'alice','iat':1700000000,'exp':1700003600,'iss':'webd'}",
                  -EBADMSG },
                { "{'sub':'','name':'alice','iat':1700000000,'exp':1700003600,'iss':'webd'}",
                  -EBADMSG },
                { "{'sub':'1234567890123456789012345678901234567890123456789012345678901234','name':'a',"
                  "'iat':1700000000,'exp':1700003600,'iss':'webd'}",
                  -EBADMSG }, /* 64 bytes */
                { "{'sub':'42','iat':1700000000,'exp':1700003600,'iss':'webd'}", -EBADMSG },
                { "{'sub':'42','name':'alice','iat':1700000000.5,'exp':1700003600,'iss':'webd'}",
                  -EBADMSG },
                { "{'sub':'42','name':'alice','iat':-1,'exp':1700003600,'iss':'webd'}", -EBADMSG },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':'1700003600','iss':'webd'}",
                  -EBADMSG },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1e300,'iss':'webd'}",
                  -EBADMSG },
                { "{'sub':'42','name':'alice','iat':1700000000,'iss':'webd'}", -EBADMSG },
                { "{'sub':'42','sub':'1','name':'alice','iat':1700000000,'exp':1700003600,"
                  "'iss':'webd'}",
                  -EBADMSG },
                { "['sub']", -EBADMSG },
                { "'sub'", -EBADMSG },
                { "{'sub':'42'", -EBADMSG },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'iss':'webd'} x",
                  -EBADMSG },
                /* accepted: exponent notation for an integer, unknown claims */
                { "{'sub':'42','name':'alice','iat':1.7e9,'exp':1700003600,'iss':'webd'}", 0 },
                { "{'sub':'42','name':'alice','iat':1700000000,'exp':1700003600,'iss':'webd',"
                  "'nbf':1,'aud':['x']}",
                  0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                print_message("claims %s\n", cases[i].claims);
                assert_int_equal(verify_forged(HEADER_HS256, cases[i].claims), cases[i].error);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_known_vector), cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_sign_bad_arguments), cmocka_unit_test(test_alg),
                cmocka_unit_test(test_tampered), cmocka_unit_test(test_wrong_key),
                cmocka_unit_test(test_time), cmocka_unit_test(test_bad_base64),
                cmocka_unit_test(test_shape), cmocka_unit_test(test_length_limit),
                cmocka_unit_test(test_claims), cmocka_unit_test(test_generation),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
