/* JSON helpers on cJSON for the HTTP API: a strict body parser, field validation with per-field messages,
 * and the RFC 3339 timestamps the API prints. Pure functions: nothing here logs or keeps state. */
#pragma once

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macro.h"

/* "2024-01-02T03:04:05.123456+05:30" and a NUL fit. */
#define JSON_TIME_MAX 40

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)

/* Parses the <len> bytes at <data> (not NUL-terminated) as one JSON value with nothing but whitespace
 * after it. Refuses what cJSON would silently accept or truncate: invalid UTF-8, a NUL byte, and the
 * escape \u0000 (C strings can't hold it, and a title cut at it would not be what the client sent).
 * Returns 0 and the tree in *<ret> (the caller frees it with cJSON_Delete), -EBADMSG, or -ENOMEM. */
int json_parse(const char *data, size_t len, cJSON **ret);

/* True when the <len> bytes at <s> are valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
bool json_utf8_valid(const char *s, size_t len);

/* The number of code points in the valid UTF-8 string <s>. */
size_t json_utf8_length(const char *s);

enum json_type {
        JSON_STRING,
        JSON_BOOL,
};

/* One member an object may hold. Strings are checked for min..max characters (code points), or bytes
 * when <bytes> is set. */
struct json_field {
        const char *name;
        enum json_type type;
        bool required;
        size_t min, max;
        bool bytes;
};

/* Checks that <obj> is an object holding only members named in <fields>, each once, of its type and size,
 * and every required one. Each problem is added to the object *<problems> as "name": "message" (created
 * on the first problem; the caller frees it); a member's first problem wins. Returns the number of
 * problems (0: valid), or -ENOMEM. */
int json_check_object(const cJSON *obj, const struct json_field *fields, size_t n, cJSON **problems);

/* Adds "name": "message" to *<problems> (created when NULL) unless <name> already has one. Returns 0 or
 * -ENOMEM. */
int json_add_problem(cJSON **problems, const char *name, const char *message);

/* Rewrites a PostgreSQL timestamptz in ISO style ("2024-01-02 03:04:05.123456+00", "...+05:30", "...-08")
 * as RFC 3339 ("2024-01-02T03:04:05.123456Z", "...+05:30", "...-08:00"). Returns the length, -EINVAL
 * when <pg> isn't in that form, or -ENOBUFS. */
int json_timestamp(const char *pg, char *buf, size_t size);

/* Writes <t> (seconds since the epoch) as RFC 3339 in UTC: "2024-01-02T03:04:05Z". Returns the length,
 * -ERANGE, or -ENOBUFS. */
int json_format_time(int64_t t, char *buf, size_t size);
