/* JSON helpers for the HTTP API: strict parsing of request bodies (on top of cJSON, which accepts some
 * things we must not store), table-driven validation of objects with a message per field, and the
 * timestamp format of every response. Nothing here allocates beyond the cJSON trees it returns. */
#include "webd/json.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/macro.h"

bool json_utf8_valid(const char *s, size_t len)
{
        const unsigned char *p = (const unsigned char *)s, *end = p + len;

        while (p < end) {
                unsigned char c = *p;
                uint32_t cp;
                size_t n;

                if (c < 0x80) {
                        p++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf)
                        n = 1, cp = c & 0x1f;
                else if (c >= 0xe0 && c <= 0xef)
                        n = 2, cp = c & 0x0f;
                else if (c >= 0xf0 && c <= 0xf4)
                        n = 3, cp = c & 0x07;
                else
                        return false; /* continuation byte, or 0xc0/0xc1/0xf5+ (overlong or too large) */
                if ((size_t)(end - p) <= n)
                        return false;
                for (size_t i = 1; i <= n; i++) {
                        if ((p[i] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i] & 0x3f);
                }
                if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
                    (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                p += n + 1;
        }
        return true;
}

size_t json_utf8_length(const char *s)
{
        size_t n = 0;

        for (; *s; s++)
                if (((unsigned char)*s & 0xc0) != 0x80)
                        n++;
        return n;
}

static bool json_is_hex(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Finds what cJSON would take without complaint but a C string can't hold: a NUL byte anywhere, the
 * escape \u0000, and a \u escape without four hex digits (cJSON turns "\uZZZZ" into a NUL too). Returns
 * true when the text is free of them. */
static bool json_no_nul(const char *data, size_t len)
{
        bool in_string = false;

        if (memchr(data, '\0', len))
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = data[i];

                if (!in_string) {
                        in_string = c == '"';
                        continue;
                }
                if (c == '"') {
                        in_string = false;
                } else if (c == '\\' && i + 1 < len) {
                        if (data[i + 1] == 'u') {
                                if (i + 5 >= len || !json_is_hex(data[i + 2]) || !json_is_hex(data[i + 3]) ||
                                    !json_is_hex(data[i + 4]) || !json_is_hex(data[i + 5]) ||
                                    memcmp(data + i + 2, "0000", 4) == 0)
                                        return false;
                                i += 5;
                        } else
                                i++; /* the escaped character can't end the string */
                }
        }
        return true;
}

int json_parse(const char *data, size_t len, cJSON **ret)
{
        const char *end = NULL;
        cJSON *j;

        if (len == 0 || !json_utf8_valid(data, len) || !json_no_nul(data, len))
                return -EBADMSG;
        j = cJSON_ParseWithLengthOpts(data, len, &end, false);
        if (!j)
                return -EBADMSG; /* cJSON can't tell a syntax error from a failed allocation */
        while (end && end < data + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
                end++;
        if (end != data + len) {
                cJSON_Delete(j);
                return -EBADMSG;
        }
        *ret = j;
        return 0;
}

int json_add_problem(cJSON **problems, const char *name, const char *message)
{
        if (!*problems) {
                *problems = cJSON_CreateObject();
                if (!*problems)
                        return -ENOMEM;
        }
        if (cJSON_GetObjectItemCaseSensitive(*problems, name))
                return 0;
        if (!cJSON_AddStringToObject(*problems, name, message))
                return -ENOMEM;
        return 0;
}

static const struct json_field *json_find_field(const struct json_field *fields, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(fields[i].name, name) == 0)
                        return &fields[i];
        return NULL;
}

/* Checks one member against its field. Writes a message into <buf> and returns false when it is bad. */
static bool json_check_member(const cJSON *item, const struct json_field *f, char *buf, size_t size)
{
        size_t len;

        switch (f->type) {
        case JSON_BOOL:
                if (!cJSON_IsBool(item)) {
                        (void)snprintf(buf, size, "must be true or false");
                        return false;
                }
                return true;
        case JSON_STRING:
                if (!cJSON_IsString(item) || !item->valuestring) {
                        (void)snprintf(buf, size, "must be a string");
                        return false;
                }
                len = f->bytes ? strlen(item->valuestring) : json_utf8_length(item->valuestring);
                if (len < f->min || len > f->max) {
                        if (f->min == 0)
                                (void)snprintf(buf, size, "must be at most %zu %s", f->max,
                                               f->bytes ? "bytes" : "characters");
                        else
                                (void)snprintf(buf, size, "must be %zu to %zu %s", f->min, f->max,
                                               f->bytes ? "bytes" : "characters");
                        return false;
                }
                return true;
        }
        return false;
}

int json_check_object(const cJSON *obj, const struct json_field *fields, size_t n, cJSON **problems)
{
        int count = 0, r;

        if (!cJSON_IsObject(obj))
                return -EINVAL;

        for (const cJSON *item = obj->child; item; item = item->next) {
                const struct json_field *f;
                char message[96];

                if (!item->string)
                        continue;
                f = json_find_field(fields, n, item->string);
                if (!f) {
                        r = json_add_problem(problems, item->string, "unknown field");
                        if (r < 0)
                                return r;
                        count++;
                        continue;
                }
                /* A repeated member would be ambiguous: which one did the client mean? */
                for (const cJSON *prev = obj->child; prev != item; prev = prev->next)
                        if (prev->string && strcmp(prev->string, item->string) == 0) {
                                r = json_add_problem(problems, item->string, "given more than once");
                                if (r < 0)
                                        return r;
                                count++;
                                break;
                        }
                if (!json_check_member(item, f, message, sizeof(message))) {
                        r = json_add_problem(problems, f->name, message);
                        if (r < 0)
                                return r;
                        count++;
                }
        }
        for (size_t i = 0; i < n; i++)
                if (fields[i].required && !cJSON_GetObjectItemCaseSensitive(obj, fields[i].name)) {
                        r = json_add_problem(problems, fields[i].name, "is required");
                        if (r < 0)
                                return r;
                        count++;
                }
        return count;
}

static bool json_digits(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (s[i] < '0' || s[i] > '9')
                        return false;
        return true;
}

int json_timestamp(const char *pg, char *buf, size_t size)
{
        const char *p = pg + 19, *zone;
        char out[JSON_TIME_MAX];
        size_t len = strlen(pg), n;

        /* "YYYY-MM-DD HH:MM:SS" */
        if (len < 22 || !json_digits(pg, 4) || pg[4] != '-' || !json_digits(pg + 5, 2) || pg[7] != '-' ||
            !json_digits(pg + 8, 2) || pg[10] != ' ' || !json_digits(pg + 11, 2) || pg[13] != ':' ||
            !json_digits(pg + 14, 2) || pg[16] != ':' || !json_digits(pg + 17, 2))
                return -EINVAL;
        if (*p == '.') {
                p++;
                n = strspn(p, "0123456789");
                if (n == 0 || n > 9)
                        return -EINVAL;
                p += n;
        }
        zone = p;
        if ((*zone != '+' && *zone != '-') || (size_t)(p - pg) >= sizeof(out))
                return -EINVAL;

        n = (size_t)(zone - pg);
        memcpy(out, pg, n);
        out[10] = 'T';
        /* "+HH", "+HH:MM" or "+HH:MM:SS" (seconds only for historical zones, not representable: refused) */
        if (strlen(zone) == 3 && json_digits(zone + 1, 2)) {
                if (memcmp(zone, "+00", 3) == 0)
                        n += (size_t)snprintf(out + n, sizeof(out) - n, "Z");
                else
                        n += (size_t)snprintf(out + n, sizeof(out) - n, "%.3s:00", zone);
        } else if (strlen(zone) == 6 && json_digits(zone + 1, 2) && zone[3] == ':' &&
                   json_digits(zone + 4, 2)) {
                n += (size_t)snprintf(out + n, sizeof(out) - n, "%s", zone);
        } else
                return -EINVAL;

        if (n + 1 > size)
                return -ENOBUFS;
        memcpy(buf, out, n + 1);
        return (int)n;
}

int json_format_time(int64_t t, char *buf, size_t size)
{
        time_t tt = (time_t)t;
        struct tm tm;
        char out[JSON_TIME_MAX];
        size_t n;

        if (t < 0 || (int64_t)tt != t || !gmtime_r(&tt, &tm))
                return -ERANGE;
        n = strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (n == 0)
                return -ERANGE;
        if (n + 1 > size)
                return -ENOBUFS;
        memcpy(buf, out, n + 1);
        return (int)n;
}
