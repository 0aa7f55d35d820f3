/* Unit tests for webd/json.c: the strict body parser (UTF-8, NUL, trailing bytes), object validation
 * with per-field messages, and the timestamp conversions. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "webd/json.h"

static int parse(const char *text)
{
        cJSON *j = NULL;
        int r = json_parse(text, strlen(text), &j);

        cJSON_Delete(j);
        return r;
}

static void test_parse(void **state)
{
        cJSON *j = NULL;

        assert_int_equal(parse("{}"), 0);
        assert_int_equal(parse(" {\"a\": [1, \"x\", true, null]} \r\n"), 0);
        assert_int_equal(parse("\"\\u00e9\\ud83d\\ude42\""), 0);
        assert_int_equal(parse("\"x\\\\u0000y\""), 0); /* an escaped backslash, then text */
        assert_int_equal(parse(""), -EBADMSG);
        assert_int_equal(parse("{"), -EBADMSG);
        assert_int_equal(parse("{} x"), -EBADMSG);
        assert_int_equal(parse("{}{}"), -EBADMSG);
        assert_int_equal(parse("\"a\\u0000b\""), -EBADMSG);
        assert_int_equal(parse("{\"\\u0000\": 1}"), -EBADMSG);
        assert_int_equal(parse("\"\\ud800\""), -EBADMSG);
        /* cJSON would turn a \u escape without four hex digits into a NUL. */
        assert_int_equal(parse("\"\\uZZZZ\""), -EBADMSG);
        assert_int_equal(parse("\"\\u12\""), -EBADMSG);
        assert_int_equal(parse("\"\\u0e9\\n\""), -EBADMSG);
        assert_int_equal(parse("\"\\u00E9\""), 0);
        assert_int_equal(parse("\"\xc3\""), -EBADMSG);
        assert_int_equal(parse("\"\xff\""), -EBADMSG);
        assert_int_equal(json_parse("{}\0", 3, &j), -EBADMSG);
        assert_null(j);
        assert_int_equal(json_parse("\"a\0b\"", 5, &j), -EBADMSG);
        /* Length is honoured: no NUL terminator needed. */
        assert_int_equal(json_parse("{\"a\":1}garbage", 7, &j), 0);
        assert_non_null(j);
        cJSON_Delete(j);
}

/* What would cost more than the text, or what RFC 8259 forbids: each refused with its own reason. */
static void test_parse_limits(void **state)
{
        char deep[2 * (JSON_DEPTH_MAX + 1) + 1];
        size_t size = 4 * JSON_VALUES_MAX + 8, len = 0;
        char *many = malloc(size);

        /* Raw control characters inside strings; escaped ones and those outside strings are fine. */
        assert_int_equal(parse("{\"title\":\"a\tb\"}"), -EILSEQ);
        assert_int_equal(parse("{\"title\":\"a\nb\"}"), -EILSEQ);
        assert_int_equal(parse("{\"ti\x01tle\":\"ab\"}"), -EILSEQ);
        assert_int_equal(parse("{\"title\":\"a\x1f\"}"), -EILSEQ);
        assert_int_equal(parse("{\"title\":\"a\\tb\\n\\u001f\"}"), 0);
        assert_int_equal(parse("{\n\t\"title\" :\r\n\"a\x7f\"}"), 0);

        /* Repeated keys, at any depth, in small and large objects. */
        assert_int_equal(parse("{\"a\":1,\"a\":2}"), -ENOTUNIQ);
        assert_int_equal(parse("{\"a\":1,\"b\":{\"c\":1,\"c\":1}}"), -ENOTUNIQ);
        assert_int_equal(parse("[{\"a\":1},{\"a\":1}]"), 0);
        assert_int_equal(parse("{\"a\":1,\"A\":2,\"a \":3}"), 0);
        assert_non_null(many);
        many[len++] = '{';
        for (int i = 0; i < 100; i++)
                len += (size_t)snprintf(many + len, size - len, "\"k%d\":0,", i);
        len += (size_t)snprintf(many + len, size - len, "\"k57\":1}");
        assert_int_equal(json_parse(many, len, &(cJSON *){NULL}), -ENOTUNIQ);
        many[len - 6] = '0';
        many[len - 5] = '0';
        {
                cJSON *j = NULL;

                assert_int_equal(json_parse(many, len, &j), 0); /* "k00" is new */
                cJSON_Delete(j);
        }

        /* Nesting: JSON_DEPTH_MAX levels pass, one more does not. */
        for (size_t i = 0; i < JSON_DEPTH_MAX; i++) {
                deep[i] = '[';
                deep[2 * JSON_DEPTH_MAX - 1 - i] = ']';
        }
        deep[2 * JSON_DEPTH_MAX] = '\0';
        assert_int_equal(parse(deep), 0);
        memmove(deep + 1, deep, 2 * JSON_DEPTH_MAX + 1);
        deep[0] = '{';
        assert_int_equal(parse(deep), -ELOOP);
        assert_int_equal(parse("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["),
                         -ELOOP);

        /* Values: JSON_VALUES_MAX pass, one more does not, whether elements, members or containers. */
        len = 0;
        many[len++] = '[';
        for (int i = 0; i < JSON_VALUES_MAX - 1; i++)
                len += (size_t)snprintf(many + len, size - len, "%s0", i ? "," : "");
        many[len++] = ']';
        {
                cJSON *j = NULL;

                assert_int_equal(json_parse(many, len, &j), 0);
                cJSON_Delete(j);
        }
        memcpy(many + len - 1, ",0]", 3);
        assert_int_equal(json_parse(many, len + 2, &(cJSON *){NULL}), -E2BIG);
        len = 0;
        many[len++] = '[';
        for (int i = 0; i < JSON_VALUES_MAX; i++)
                len += (size_t)snprintf(many + len, size - len, "%s[]", i ? "," : "");
        many[len++] = ']';
        assert_int_equal(json_parse(many, len, &(cJSON *){NULL}), -E2BIG);

        assert_string_equal(json_parse_reason(-EILSEQ), "a string holds a raw control character: escape it (RFC 8259)");
        assert_non_null(strstr(json_parse_reason(-ELOOP), "32"));
        assert_non_null(strstr(json_parse_reason(-E2BIG), "10000"));
        free(many);
}

static void test_utf8(void **state)
{
        static const struct {
                const char *s;
                bool ok;
        } cases[] = {
                {"plain", true},
                {"\xc3\xa9", true},
                {"\xe2\x9c\x93", true},
                {"\xf0\x9f\x99\x82", true},
                {"\xf4\x8f\xbf\xbf", true},  /* U+10FFFF */
                {"\xc0\xaf", false},         /* overlong */
                {"\xe0\x80\xaf", false},     /* overlong */
                {"\xed\xa0\x80", false},     /* surrogate */
                {"\xf4\x90\x80\x80", false}, /* beyond U+10FFFF */
                {"\x80", false},
                {"\xc3", false},
                {"\xe2\x9c", false},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_int_equal(json_utf8_valid(cases[i].s, strlen(cases[i].s)), cases[i].ok);
        assert_int_equal(json_utf8_length("h\xc3\xa9llo \xf0\x9f\x99\x82"), 7);
        assert_int_equal(json_utf8_length(""), 0);
}

static const struct json_field fields[] = {
        { "title", JSON_STRING, true, 1, 5, false },
        { "note", JSON_STRING, false, 0, 4, true },
        { "done", JSON_BOOL, false, 0, 0, false },
};

static int check(const char *text, struct json_problems *problems)
{
        cJSON *j = NULL;
        int r;

        assert_int_equal(json_parse(text, strlen(text), &j), 0);
        r = json_check_object(j, fields, ELEMENTSOF(fields), problems);
        cJSON_Delete(j);
        return r;
}

static const char *problem(const struct json_problems *problems, const char *name)
{
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(problems->fields, name);

        return cJSON_IsString(p) ? p->valuestring : NULL;
}

static void test_check_object(void **state)
{
        struct json_problems p = {0};

        assert_int_equal(check("{\"title\":\"abc\"}", &p), 0);
        assert_null(p.fields);
        assert_int_equal(check("{\"title\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\",\"note\":\"abcd\",\"done\":false}",
                               &p),
                         0);
        assert_null(p.fields);

        assert_int_equal(check("{}", &p), 1);
        assert_string_equal(problem(&p, "title"), "is required");
        json_problems_clear(&p);

        assert_int_equal(check("{\"title\":\"toolong\",\"note\":\"\xc3\xa9\xc3\xa9\xc3\xa9\",\"done\":1,\"x\":2}", &p), 4);
        assert_string_equal(problem(&p, "title"), "must be 1 to 5 characters");
        assert_string_equal(problem(&p, "note"), "must be at most 4 bytes");
        assert_string_equal(problem(&p, "done"), "must be true or false");
        assert_string_equal(problem(&p, "x"), "unknown field");
        assert_int_equal(p.count, 4);
        json_problems_clear(&p);
        assert_null(p.fields);
        assert_int_equal(p.count, 0);

        assert_int_equal(check("{\"title\":5}", &p), 1);
        assert_string_equal(problem(&p, "title"), "must be a string");
        json_problems_clear(&p);

        assert_int_equal(check("[1]", &p), -EINVAL);
        assert_null(p.fields);
}

/* A tree built without json_parse() may repeat a key: still refused. */
static void test_check_object_repeated(void **state)
{
        struct json_problems p = {0};
        cJSON *j = cJSON_CreateObject();

        assert_non_null(cJSON_AddStringToObject(j, "title", "a"));
        assert_non_null(cJSON_AddStringToObject(j, "title", "b"));
        assert_true(json_check_object(j, fields, ELEMENTSOF(fields), &p) >= 1);
        assert_string_equal(problem(&p, "title"), "given more than once");
        json_problems_clear(&p);
        cJSON_Delete(j);
}

/* Blank titles: white space of every kind, but not an invisible-looking letter. */
static void test_check_object_blank(void **state)
{
        static const struct json_field nonblank[] = {
                { "title", JSON_STRING, true, 1, 50, false, true },
        };
        static const char *const blank[] = {
                " ", "   ", "\\t\\n ", "\xc2\xa0", "\xe3\x80\x80", "\xe2\x80\x8b", "\xef\xbb\xbf \xe2\x80\xa8",
        };
        static const char *const ok[] = { "a", " a ", "\xc3\xa9", "\xe3\x81\x82", ".", "\xe2\x80\x8ex" };
        struct json_problems p = {0};
        char text[128];
        cJSON *j;

        for (size_t i = 0; i < ELEMENTSOF(blank) + ELEMENTSOF(ok); i++) {
                bool is_blank = i < ELEMENTSOF(blank);

                (void)snprintf(text, sizeof(text), "{\"title\":\"%s\"}",
                               is_blank ? blank[i] : ok[i - ELEMENTSOF(blank)]);
                j = NULL;
                assert_int_equal(json_parse(text, strlen(text), &j), 0);
                assert_int_equal(json_check_object(j, nonblank, 1, &p), is_blank ? 1 : 0);
                if (is_blank)
                        assert_string_equal(problem(&p, "title"), "must not be blank");
                json_problems_clear(&p);
                cJSON_Delete(j);
        }
}

/* However many problems there are, at most JSON_PROBLEMS_MAX are listed and all are counted; and the
 * cost stays linear: 9,000 unknown keys are checked in about the time of a few hundred. */
static void test_check_object_many(void **state)
{
        size_t n = 9000, size = n * 16 + 64, len = 0;
        struct json_problems p = {0};
        char *text = malloc(size);
        cJSON *j = NULL;

        assert_non_null(text);
        text[len++] = '{';
        for (size_t i = 0; i < n; i++)
                len += (size_t)snprintf(text + len, size - len, "%s\"k%zu\":0", i ? "," : "", i);
        len += (size_t)snprintf(text + len, size - len, ",\"done\":3}");
        assert_int_equal(json_parse(text, len, &j), 0);
        assert_int_equal(json_check_object(j, fields, ELEMENTSOF(fields), &p), (int)n + 2);
        assert_int_equal(p.count, n + 2);
        assert_int_equal(cJSON_GetArraySize(p.fields), JSON_PROBLEMS_MAX);
        assert_string_equal(problem(&p, "k0"), "unknown field");
        assert_string_equal(problem(&p, "k9"), "unknown field");
        assert_null(problem(&p, "k10"));
        /* A long name is listed cut at a character boundary. */
        json_problems_clear(&p);
        memset(text, 'a', 63);
        memcpy(text + 63, "\xc3\xa9\xc3\xa9", 5);
        assert_int_equal(json_add_problem(&p, text, "unknown field"), 0);
        memcpy(text + 63, "...", 4);
        assert_string_equal(problem(&p, text), "unknown field");
        assert_int_equal(json_add_problem(&p, "k0", "unknown field"), 0);
        /* A problem already listed is not counted again. */
        assert_int_equal(json_add_problem(&p, "k0", "again"), 0);
        assert_int_equal(p.count, 2);
        json_problems_clear(&p);
        cJSON_Delete(j);
        free(text);
}

static void test_timestamp(void **state)
{
        static const struct {
                const char *pg, *rfc;
        } ok[] = {
                {"2024-01-02 03:04:05+00", "2024-01-02T03:04:05Z"},
                {"2024-01-02 03:04:05.123456+00", "2024-01-02T03:04:05.123456Z"},
                {"2024-01-02 03:04:05.5+05:30", "2024-01-02T03:04:05.5+05:30"},
                {"2024-01-02 03:04:05-08", "2024-01-02T03:04:05-08:00"},
        };
        static const char *const bad[] = {
                "", "2024-01-02", "2024-01-02T03:04:05Z", "2024-01-02 03:04:05", "2024-01-02 03:04:05.+00",
                "2024-01-02 03:04:05+0", "2024-01-02 03:04:05+05:30:10", "24-01-02 03:04:05+00",
        };
        char buf[JSON_TIME_MAX];

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                assert_int_equal(json_timestamp(ok[i].pg, buf, sizeof(buf)), (int)strlen(ok[i].rfc));
                assert_string_equal(buf, ok[i].rfc);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(json_timestamp(bad[i], buf, sizeof(buf)), -EINVAL);
        assert_int_equal(json_timestamp("2024-01-02 03:04:05+00", buf, 10), -ENOBUFS);

        assert_int_equal(json_format_time(0, buf, sizeof(buf)), 20);
        assert_string_equal(buf, "1970-01-01T00:00:00Z");
        assert_int_equal(json_format_time(1700000000, buf, sizeof(buf)), 20);
        assert_string_equal(buf, "2023-11-14T22:13:20Z");
        assert_int_equal(json_format_time(-1, buf, sizeof(buf)), -ERANGE);
        assert_int_equal(json_format_time(0, buf, 5), -ENOBUFS);
}

/* Mutates valid bodies at random (a fixed seed, so failures repeat): whatever the bytes, json_parse()
 * must not crash, and what it accepts must be valid UTF-8 with no NUL in any string; validation must not
 * crash on what it accepts. Run under the sanitizers, this is a small fuzzer. */
static void test_parse_mutations(void **state)
{
        static const char *const seeds[] = {
                "{\"title\":\"t\\u00e9\\n\",\"description\":\"\\\\u0000\",\"done\":true}",
                "{\"username\":\"alice\",\"password\":\"p\\\"w\"}",
                "[1,2.5e3,null,{\"a\":[]},\"\\ud83d\\ude42\"]",
        };
        static const char alphabet[] = "{}[]\":,\\u0123456789abcdefnrt \x00\x7f\x80\xbf\xc3\xe2\xf0\xff";
        uint64_t rng = 42;

        for (unsigned round = 0; round < 20000; round++) {
                const char *seed = seeds[round % ELEMENTSOF(seeds)];
                char buf[256];
                size_t len = strlen(seed);
                struct json_problems problems = {0};
                cJSON *j = NULL;

                memcpy(buf, seed, len);
                for (unsigned k = 0, n = 1 + round % 4; k < n; k++) {
                        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                        size_t at = (size_t)(rng >> 33) % len;
                        char c = alphabet[(rng >> 20) % (sizeof(alphabet) - 1)];

                        switch ((rng >> 8) % 3) {
                        case 0:
                                buf[at] = c;
                                break;
                        case 1:
                                if (len < sizeof(buf) - 1) {
                                        memmove(buf + at + 1, buf + at, len - at);
                                        buf[at] = c;
                                        len++;
                                }
                                break;
                        default:
                                if (len > 1) {
                                        memmove(buf + at, buf + at + 1, len - at - 1);
                                        len--;
                                }
                                break;
                        }
                }
                if (json_parse(buf, len, &j) < 0) {
                        assert_null(j);
                        continue;
                }
                assert_true(json_utf8_valid(buf, len));
                assert_null(memchr(buf, '\0', len));
                (void)json_check_object(j, fields, ELEMENTSOF(fields), &problems);
                json_problems_clear(&problems);
                cJSON_Delete(j);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_mutations),
                cmocka_unit_test(test_parse),
                cmocka_unit_test(test_utf8),
                cmocka_unit_test(test_check_object),
                cmocka_unit_test(test_check_object_repeated),
                cmocka_unit_test(test_check_object_blank),
                cmocka_unit_test(test_check_object_many),
                cmocka_unit_test(test_parse_limits),
                cmocka_unit_test(test_timestamp),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
