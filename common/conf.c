/* The configuration engine shared by lbd and webd (format and messages in conf.h).
 *
 * Each daemon owns its struct and its table of keys; this module owns the walk: defaults, the INI file
 * through ini.c, one value from the command line, the lookup of the row, and the single error message per
 * bad key. A source (one file, or one conf_set() call) is tracked in a struct conf_source on the stack:
 * which keys it has set, so list keys replace the previous value on their first occurrence, and the last
 * unknown section, so an unknown header is reported once rather than once per key. */
#include "common/conf.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "common/ini.h"
#include "common/log.h"
#include "common/parse.h"

struct conf_source {
        bool seen[CONF_KEYS_MAX];
        char unknown_section[CONF_SECTION_MAX]; /* last unknown section reported, to report it once */
};

struct conf_load {
        const struct conf_table *table;
        void *obj;
        struct conf_source source;
        unsigned n_errors;
};

static const struct {
        const char *name;
        int level;
} conf_log_levels[] = {
        {"debug", LOG_DEBUG},     {"info", LOG_INFO}, {"notice", LOG_NOTICE},
        {"warning", LOG_WARNING}, {"error", LOG_ERR},
};

int conf_reason(char *reason, size_t size, const char *format, ...)
{
        va_list ap;

        va_start(ap, format);
        (void)vsnprintf(reason, size, format, ap);
        va_end(ap);
        return -EINVAL;
}

bool conf_is_printable(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

/* Calls <item> on each comma-separated entry of <value>, trimmed of blanks. An empty entry ("a,,b", "a,")
 * or one longer than CONF_ITEM_MAX is an error. Returns 0, or the first negative value of <item>. */
int conf_split(const char *value, int (*item)(const char *entry, void *userdata, char *reason, size_t size),
               void *userdata, char *reason, size_t size)
{
        const char *s = value;

        for (;;) {
                const char *comma = strchr(s, ','), *end = comma ? comma : s + strlen(s);
                char buf[CONF_ITEM_MAX];
                size_t len;
                int r;

                while (s < end && (*s == ' ' || *s == '\t'))
                        s++;
                while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
                        end--;
                len = (size_t)(end - s);
                if (len == 0)
                        return conf_reason(reason, size, "empty entry in the list");
                if (len >= sizeof(buf))
                        return conf_reason(reason, size, "list entry '%.32s...' is too long", s);
                memcpy(buf, s, len);
                buf[len] = '\0';

                r = item(buf, userdata, reason, size);
                if (r < 0)
                        return r;
                if (!comma)
                        return 0;
                s = comma + 1;
        }
}

static uint64_t *conf_u64(void *obj, const struct conf_key *k)
{
        return (uint64_t *)(void *)((char *)obj + k->offset);
}

int conf_parse_number(const struct conf_key *k, void *obj, const char *value, bool first, char *reason,
                      size_t size)
{
        uint64_t v;

        if (parse_uint(value, k->min, k->max, &v) < 0)
                return conf_reason(reason, size, "must be an integer between %" PRIu64 " and %" PRIu64,
                                   k->min, k->max);
        *conf_u64(obj, k) = v;
        return 0;
}

int conf_parse_size(const struct conf_key *k, void *obj, const char *value, bool first, char *reason,
                    size_t size)
{
        uint64_t v;
        int r;

        r = parse_size(value, &v);
        if (r == -EINVAL)
                return conf_reason(reason, size, "not a size (e.g. 512, 16k, 1M)");
        if (r < 0)
                return conf_reason(reason, size, "size too large");
        if (v < k->min || v > k->max)
                return conf_reason(reason, size, "must be between %" PRIu64 " and %" PRIu64 " bytes", k->min,
                                   k->max);
        *conf_u64(obj, k) = v;
        return 0;
}

int conf_parse_duration(const struct conf_key *k, void *obj, const char *value, bool first, char *reason,
                        size_t size)
{
        uint64_t v;
        int r;

        r = parse_duration(value, &v);
        if (r == -ERANGE)
                return conf_reason(reason, size, "duration out of range (at most 30d)");
        if (r < 0)
                return conf_reason(reason, size, "not a duration (e.g. 500ms, 10s, 1.5m, 2h)");
        if (v < k->min)
                return k->min == 1 ? conf_reason(reason, size, "must be greater than 0")
                                   : conf_reason(reason, size, "must be at least %" PRIu64 " ms",
                                                 k->min / USEC_PER_MSEC);
        if (k->max == USEC_PER_SEC && v % USEC_PER_SEC != 0)
                return conf_reason(reason, size, "must be a whole number of seconds");
        *conf_u64(obj, k) = v;
        return 0;
}

int conf_parse_log_level(const char *s, int *ret)
{
        for (size_t i = 0; i < ELEMENTSOF(conf_log_levels); i++)
                if (strcmp(s, conf_log_levels[i].name) == 0) {
                        *ret = conf_log_levels[i].level;
                        return 0;
                }
        return -EINVAL;
}

const char *conf_log_level_name(int level)
{
        for (size_t i = 0; i < ELEMENTSOF(conf_log_levels); i++)
                if (conf_log_levels[i].level == level)
                        return conf_log_levels[i].name;
        return NULL;
}

static const struct conf_key *conf_find_key(const struct conf_table *t, const char *section, const char *key)
{
        for (size_t i = 0; i < t->n_keys; i++)
                if (strcmp(t->keys[i].section, section) == 0 && strcmp(t->keys[i].key, key) == 0)
                        return &t->keys[i];
        return NULL;
}

static bool conf_section_known(const struct conf_table *t, const char *section)
{
        for (size_t i = 0; i < t->n_keys; i++)
                if (strcmp(t->keys[i].section, section) == 0)
                        return true;
        return false;
}

/* True when <haystack> contains <needle>, ignoring ASCII case. */
static bool conf_contains_nocase(const char *haystack, const char *needle)
{
        size_t n = strlen(needle);

        for (; *haystack; haystack++) {
                size_t i = 0;

                while (i < n && haystack[i] && (haystack[i] | 0x20) == (needle[i] | 0x20))
                        i++;
                if (i == n)
                        return true;
        }
        return false;
}

/* Logs a bad key as "WHERE: [section] key 'KEY': reason (value 'V')" and returns -EINVAL. A value that may
 * hold a secret is never printed (logs end up in the journal and in bug reports): the key's row says so,
 * or its name speaks of a secret or a password, which also covers misspelled keys. */
static int conf_log_bad_key(const char *where, const char *section, const char *key, const char *value,
                            const char *reason, bool hidden)
{
        if (hidden || conf_contains_nocase(key, "secret") || conf_contains_nocase(key, "password"))
                log_error("%s: [%s] key '%s': %s (value hidden)", where, section, key, reason);
        else
                log_error("%s: [%s] key '%s': %s (value '%s')", where, section, key, reason, value);
        return -EINVAL;
}

/* The per-key logic shared by the file and the command line. */
static int conf_apply(const struct conf_table *t, void *obj, struct conf_source *src, const char *where,
                      const char *section, const char *key, const char *value)
{
        const struct conf_key *k;
        char reason[256];
        size_t i;

        /* A key in another section ends the run of an unknown one: the next unknown header is reported. */
        if (strcmp(src->unknown_section, section) != 0)
                src->unknown_section[0] = '\0';

        k = conf_find_key(t, section, key);
        if (!k) {
                if (section[0] == '\0')
                        return conf_log_bad_key(where, section, key, value, t->outside_reason,
                                                t->hide_unknown);
                if (!conf_section_known(t, section)) {
                        /* One message per unknown section header is enough; its keys add nothing. */
                        if (strcmp(src->unknown_section, section) == 0)
                                return -EINVAL;
                        (void)snprintf(src->unknown_section, sizeof(src->unknown_section), "%s", section);
                        return conf_log_bad_key(where, section, key, value, "unknown section",
                                                t->hide_unknown);
                }
                return conf_log_bad_key(where, section, key, value, "unknown key", t->hide_unknown);
        }

        i = (size_t)(k - t->keys);
        assert(i < CONF_KEYS_MAX);
        if (k->parse(k, obj, value, !src->seen[i], reason, sizeof(reason)) < 0)
                return conf_log_bad_key(where, section, key, value, reason, k->hidden);
        src->seen[i] = true;
        return 0;
}

void conf_init(const struct conf_table *t, void *obj)
{
        assert(t->n_keys <= CONF_KEYS_MAX);
        for (size_t i = 0; i < t->n_keys; i++) {
                const struct conf_key *k = &t->keys[i];
                char reason[256];
                _unused_ int r;

                r = k->parse(k, obj, k->default_value, true, reason, sizeof(reason));
                assert(r >= 0); /* the defaults are part of the program */
        }
}

static int conf_load_handler(const char *file, unsigned line, const char *section, const char *key,
                             const char *value, void *userdata)
{
        struct conf_load *load = userdata;
        char where[PATH_MAX + 16];

        (void)snprintf(where, sizeof(where), "%s:%u", file, line);
        if (conf_apply(load->table, load->obj, &load->source, where, section, key, value) < 0)
                load->n_errors++;
        return 0; /* go on: report every bad line in one run */
}

int conf_load_file(const struct conf_table *t, void *obj, const char *path)
{
        struct conf_load load = {.table = t, .obj = obj};
        size_t len = strlen(path);
        int r;

        if (len >= t->path_size) {
                log_error("%.64s...: config path longer than %zu bytes", path, t->path_size - 1);
                return -ENAMETOOLONG;
        }
        memcpy((char *)obj + t->path_offset, path, len + 1);

        r = ini_parse_file(path, conf_load_handler, &load);
        if (r < 0)
                return r;
        return load.n_errors > 0 ? -EINVAL : 0;
}

int conf_set(const struct conf_table *t, void *obj, const char *section, const char *key, const char *value,
             const char *origin)
{
        struct conf_source src = {0};

        return conf_apply(t, obj, &src, origin ? origin : "command line", section ? section : "",
                          key ? key : "", value ? value : "");
}

int conf_parse_assignment(const char *arg, struct conf_assignment *ret)
{
        const char *dot = strchr(arg, '.'), *eq = strchr(arg, '=');
        size_t section_len, key_len;

        if (!dot || !eq || dot > eq)
                return -EINVAL;
        section_len = (size_t)(dot - arg);
        key_len = (size_t)(eq - dot - 1);
        if (section_len >= sizeof(ret->section) || key_len >= sizeof(ret->key))
                return -EINVAL;
        memcpy(ret->section, arg, section_len);
        ret->section[section_len] = '\0';
        memcpy(ret->key, dot + 1, key_len);
        ret->key[key_len] = '\0';
        ret->value = eq + 1;
        return 0;
}

int conf_invalid(const char *path, const char *section, const char *key, const char *format, ...)
{
        char message[512];
        va_list ap;

        va_start(ap, format);
        (void)vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        log_error("%s: [%s] key '%s': %s", path[0] ? path : "configuration", section, key, message);
        return -EINVAL;
}
