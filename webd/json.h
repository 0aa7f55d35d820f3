/* JSON helpers on cJSON for the HTTP API: a strict body parser, field validation with per-field messages,
 * and the RFC 3339 timestamps the API prints. Pure functions: nothing here logs or keeps state. */
#pragma once

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cjson.h"
#include "common/macro.h"

/* "2024-01-02T03:04:05.123456+05:30" and a NUL fit. */
#define JSON_TIME_MAX 40

/* Limits of a body json_parse() accepts, whatever its size: nesting (objects and arrays inside each
 * other), and values (every member, element and container counts one), which bounds the memory and time
 * the tree takes. */
#define JSON_DEPTH_MAX  32
#define JSON_VALUES_MAX 10000

/* Parses the <len> bytes at <data> (not NUL-terminated) as one JSON value with nothing but whitespace
 * after it, in time linear in <len>. Refuses what cJSON would silently accept or truncate, and what would
 * cost more than the body's size: -EBADMSG for invalid JSON or UTF-8, a NUL byte, or the escape \u0000
 * (C strings can't hold it, and a title cut at it would not be what the client sent); -EILSEQ for a raw
 * control character (U+0000..U+001F) inside a string (RFC 8259 asks for it escaped); -ELOOP for nesting
 * deeper than JSON_DEPTH_MAX; -E2BIG for more than JSON_VALUES_MAX values; -ENOTUNIQ for an object that
 * holds a key twice (which one would count?); -ENOMEM. Returns 0 and the tree in *<ret> (the caller frees
 * it with cJSON_Delete). */
int json_parse(const char *data, size_t len, cJSON **ret);

/* What json_parse()'s error <r> means, as a sentence for the client. */
const char *json_parse_reason(int r);

/* True when the <len> bytes at <s> are valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
bool json_utf8_valid(const char *s, size_t len);

/* The number of code points in the valid UTF-8 string <s>. */
size_t json_utf8_length(const char *s);

enum json_type {
        JSON_STRING,
        JSON_BOOL,
};

/* One member an object may hold. Strings are checked for min..max characters (code points), or bytes
 * when <bytes> is set; a <nonblank> one must hold something other than white space. */
struct json_field {
        const char *name;
        enum json_type type;
        bool required;
        size_t min, max;
        bool bytes;
        bool nonblank;
};

/* At most this many problems are listed in an answer; the others are only counted. A name longer than
 * JSON_NAME_SHOWN bytes is listed cut, with "..." after it. */
#define JSON_PROBLEMS_MAX 10
#define JSON_NAME_SHOWN   64

/* The problems found in a request: the first JSON_PROBLEMS_MAX as {"name": "message"} (created with the
 * first), and how many there are in all. Zero-initialise; free with json_problems_clear(). */
struct json_problems {
        cJSON *fields;
        size_t count;
};

/* Frees <p>'s list and sets it back to empty. */
void json_problems_clear(struct json_problems *p);

/* Checks that <obj> is an object holding only members named in <fields> (at most 64), each once, of its
 * type and size, and every required one, in time linear in its size. Each problem goes to <p> (see
 * json_add_problem()); a member's first problem wins. Returns the number of problems (0: valid), -EINVAL
 * when <obj> is not an object, or -ENOMEM. */
int json_check_object(const cJSON *obj, const struct json_field *fields, size_t n, struct json_problems *p);

/* Adds "name": "message" to <p> unless <name> is listed already: listed while fewer than
 * JSON_PROBLEMS_MAX are, otherwise only counted. Costs O(JSON_PROBLEMS_MAX). Returns 0 or -ENOMEM. */
int json_add_problem(struct json_problems *p, const char *name, const char *message);

/* Rewrites a PostgreSQL timestamptz in ISO style ("2024-01-02 03:04:05.123456+00", "...+05:30", "...-08")
 * as RFC 3339 ("2024-01-02T03:04:05.123456Z", "...+05:30", "...-08:00"). Returns the length, -EINVAL
 * when <pg> isn't in that form, or -ENOBUFS. */
int json_timestamp(const char *pg, char *buf, size_t size);

/* Writes <t> (seconds since the epoch) as RFC 3339 in UTC: "2024-01-02T03:04:05Z". Returns the length,
 * -ERANGE, or -ENOBUFS. */
int json_format_time(int64_t t, char *buf, size_t size);
