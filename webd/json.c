/* JSON helpers for the HTTP API: strict parsing of request bodies (on top of cJSON, which accepts some
 * things we must not store), table-driven validation of objects with a message per field, and the
 * timestamp format of every response. Everything is linear (or n log n) in the size of its input and
 * every list it builds is bounded, so a body costs in proportion to its size, whatever it holds. Nothing
 * here allocates beyond the trees it returns, except a passing array of keys for the duplicate check. */
#include "webd/json.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
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

#define JSON_STR_(x) #x
#define JSON_STR(x)  JSON_STR_(x)

static bool json_is_hex(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* One pass over the text before cJSON sees it, for what cJSON would take without complaint: a NUL byte
 * anywhere, the escape \u0000, a \u escape without four hex digits (cJSON turns "\uZZZZ" into a NUL too),
 * a raw control character inside a string; and for what would make the tree cost more than the text:
 * nesting beyond JSON_DEPTH_MAX (cJSON recurses) and more than JSON_VALUES_MAX values (each is an
 * allocation several times the size of its text). Values are counted from the text: one per container
 * opened and one per ',' outside strings, which is at least the number of values minus one. Returns 0 or
 * the error of json_parse(); syntax is left to cJSON. */
static int json_scan(const char *data, size_t len)
{
        bool in_string = false;
        size_t depth = 0, values = 1;

        if (memchr(data, '\0', len))
                return -EBADMSG;
        for (size_t i = 0; i < len; i++) {
                char c = data[i];

                if (!in_string) {
                        switch (c) {
                        case '"':
                                in_string = true;
                                break;
                        case '{':
                        case '[':
                                if (++depth > JSON_DEPTH_MAX)
                                        return -ELOOP;
                                if (++values > JSON_VALUES_MAX)
                                        return -E2BIG;
                                break;
                        case ',':
                                if (++values > JSON_VALUES_MAX)
                                        return -E2BIG;
                                break;
                        case '}':
                        case ']':
                                if (depth == 0)
                                        return -EBADMSG;
                                depth--;
                                break;
                        }
                        continue;
                }
                if ((unsigned char)c < 0x20)
                        return -EILSEQ;
                if (c == '"') {
                        in_string = false;
                } else if (c == '\\' && i + 1 < len) {
                        if (data[i + 1] == 'u') {
                                if (i + 5 >= len || !json_is_hex(data[i + 2]) || !json_is_hex(data[i + 3]) ||
                                    !json_is_hex(data[i + 4]) || !json_is_hex(data[i + 5]) ||
                                    memcmp(data + i + 2, "0000", 4) == 0)
                                        return -EBADMSG;
                                i += 5;
                        } else
                                i++; /* the escaped character can't end the string */
                }
        }
        return 0;
}

static int json_compare_keys(const void *a, const void *b)
{
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The objects of a tree with up to this many members are checked pair by pair; larger ones sorted. */
#define JSON_PAIRWISE_MAX 16

/* Returns -ENOTUNIQ when an object in the tree at <j> holds a key twice, 0 when none does, or -ENOMEM.
 * O(n log n) in the number of values; recursion is bounded by json_scan()'s depth check. */
static int json_check_unique(const cJSON *j)
{
        _cleanup_free_ const char **keys = NULL;
        size_t n = 0;
        int r;

        for (const cJSON *c = j->child; c; c = c->next) {
                r = json_check_unique(c);
                if (r < 0)
                        return r;
                n++;
        }
        if (!cJSON_IsObject(j) || n < 2)
                return 0;
        if (n <= JSON_PAIRWISE_MAX) {
                for (const cJSON *a = j->child; a; a = a->next)
                        for (const cJSON *b = a->next; b; b = b->next)
                                if (strcmp(a->string, b->string) == 0)
                                        return -ENOTUNIQ;
                return 0;
        }
        keys = malloc(n * sizeof(*keys));
        if (!keys)
                return -ENOMEM;
        n = 0;
        for (const cJSON *c = j->child; c; c = c->next)
                keys[n++] = c->string;
        qsort(keys, n, sizeof(*keys), json_compare_keys);
        for (size_t i = 1; i < n; i++)
                if (strcmp(keys[i - 1], keys[i]) == 0)
                        return -ENOTUNIQ;
        return 0;
}

int json_parse(const char *data, size_t len, cJSON **ret)
{
        _cleanup_(cJSON_Deletep) cJSON *j = NULL;
        const char *end = NULL;
        int r;

        if (len == 0 || !json_utf8_valid(data, len))
                return -EBADMSG;
        r = json_scan(data, len);
        if (r < 0)
                return r;
        j = cJSON_ParseWithLengthOpts(data, len, &end, false);
        if (!j)
                return -EBADMSG; /* cJSON can't tell a syntax error from a failed allocation */
        while (end && end < data + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
                end++;
        if (end != data + len)
                return -EBADMSG;
        r = json_check_unique(j);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(j);
        return 0;
}

const char *json_parse_reason(int r)
{
        switch (r) {
        case -EILSEQ:
                return "a string holds a raw control character: escape it (RFC 8259)";
        case -ELOOP:
                return "the body nests objects and arrays more than " JSON_STR(JSON_DEPTH_MAX) " deep";
        case -E2BIG:
                return "the body holds more than " JSON_STR(JSON_VALUES_MAX) " values";
        case -ENOTUNIQ:
                return "an object holds the same key more than once";
        case -ENOMEM:
                return "out of memory";
        default:
                return "the body is not valid JSON (UTF-8, no NUL)";
        }
}

void json_problems_clear(struct json_problems *p)
{
        cJSON_Delete(p->fields);
        *p = (struct json_problems){0};
}

int json_add_problem(struct json_problems *p, const char *name, const char *message)
{
        char shown[JSON_NAME_SHOWN + 4];
        size_t len = strnlen(name, JSON_NAME_SHOWN + 1);

        /* A client's key is echoed back: cut a long one (at a character boundary) and say so. */
        if (len > JSON_NAME_SHOWN) {
                len = JSON_NAME_SHOWN;
                while (len > 0 && ((unsigned char)name[len] & 0xc0) == 0x80)
                        len--;
                memcpy(shown, name, len);
                memcpy(shown + len, "...", 4);
                name = shown;
        }
        if (!p->fields) {
                p->fields = cJSON_CreateObject();
                if (!p->fields)
                        return -ENOMEM;
        }
        /* At most JSON_PROBLEMS_MAX members: this lookup, and the answer, stay small. */
        if (cJSON_GetObjectItemCaseSensitive(p->fields, name))
                return 0;
        if (p->count++ < JSON_PROBLEMS_MAX && !cJSON_AddStringToObject(p->fields, name, message))
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

/* True when the valid UTF-8 string <s> holds only white space (Unicode's White_Space, and the invisible
 * U+200B..U+200D, U+2060 and U+FEFF), or nothing. */
static bool json_blank(const char *s)
{
        const unsigned char *p = (const unsigned char *)s;

        while (*p) {
                uint32_t cp = *p;
                size_t n = 0;

                if (cp >= 0xf0)
                        n = 3, cp &= 0x07;
                else if (cp >= 0xe0)
                        n = 2, cp &= 0x0f;
                else if (cp >= 0xc0)
                        n = 1, cp &= 0x1f;
                for (size_t i = 1; i <= n; i++)
                        cp = (cp << 6) | (p[i] & 0x3f);
                p += n + 1;
                if (!((cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
                      (cp >= 0x2000 && cp <= 0x200d) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
                      cp == 0x205f || cp == 0x2060 || cp == 0x3000 || cp == 0xfeff))
                        return false;
        }
        return true;
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
                if (f->nonblank && json_blank(item->valuestring)) {
                        (void)snprintf(buf, size, "must not be blank");
                        return false;
                }
                return true;
        }
        return false;
}

int json_check_object(const cJSON *obj, const struct json_field *fields, size_t n, struct json_problems *p)
{
        uint64_t seen = 0;
        size_t before = p->count;
        int r;

        if (!cJSON_IsObject(obj) || n > 64)
                return -EINVAL;

        for (const cJSON *item = obj->child; item; item = item->next) {
                const struct json_field *f;
                uint64_t bit;
                char message[96];

                if (!item->string)
                        continue;
                f = json_find_field(fields, n, item->string);
                if (!f) {
                        r = json_add_problem(p, item->string, "unknown field");
                        if (r < 0)
                                return r;
                        continue;
                }
                /* json_parse() refuses a repeated key; a tree built otherwise may still hold one. */
                bit = UINT64_C(1) << (f - fields);
                if (seen & bit) {
                        r = json_add_problem(p, f->name, "given more than once");
                        if (r < 0)
                                return r;
                }
                seen |= bit;
                if (!json_check_member(item, f, message, sizeof(message))) {
                        r = json_add_problem(p, f->name, message);
                        if (r < 0)
                                return r;
                }
        }
        for (size_t i = 0; i < n; i++)
                if (fields[i].required && !(seen & (UINT64_C(1) << i))) {
                        r = json_add_problem(p, fields[i].name, "is required");
                        if (r < 0)
                                return r;
                }
        return (int)MIN(p->count - before, (size_t)INT_MAX);
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
