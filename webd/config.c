/* webd's configuration: the table of every key, its default and its parser; the INI file loader; the
 * command-line setter; and the checks that need the whole configuration.
 *
 * Keys and defaults (the table config_keys[] below is the source of truth, and config_init() builds the
 * defaults by running each key's parser on the default text, so this list and the code can't drift):
 *
 *   [webd]
 *   listen          = 127.0.0.1:8080         one numeric address:port ([v6]:port)
 *   database        = (empty)                libpq conninfo ("host=/run/postgresql dbname=webd") or a
 *                                            postgresql:// URI; required (here, WEBD_DATABASE or --database)
 *   pool_size       = 4                      database connections, 1..64
 *   secret_file     = /var/lib/webd/jwt.key  absolute path of the token signing key
 *   token_ttl       = 1h                     token lifetime, whole seconds, at least 1s
 *   max_body_size   = 64k                    request bodies, 1k..16M: 413 beyond it
 *   request_timeout = 10s                    queries not done by then: 503
 *   startup_timeout = 30s                    how long the start waits for the database; 0 = one try
 *   log_level       = info                   debug | info | notice | warning | error
 *   activity        = on                     activity log (table + one journal line per request)
 *
 * Durations are parse_duration() values ("500ms", "1.5s", "2m"), sizes parse_size() values ("64k").
 * Unknown sections and keys are errors, so a typo never silently leaves a default in place. Each error is
 * logged as "FILE:LINE: [section] key 'KEY': reason (value 'V')", or "ORIGIN: ..." for the command line;
 * the values of database and secret_file are never printed (a conninfo may carry a password). */
#include "webd/config.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "common/ini.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/parse.h"

struct config_key;

/* Parses <value> for key <k> into <c>. On failure writes a reason into <reason> and returns -EINVAL; <c>
 * is then left unchanged. */
typedef int (*config_parser_t)(const struct config_key *k, struct config *c, const char *value, char *reason,
                               size_t size);

struct config_key {
        const char *section;
        const char *key;
        const char *default_value;
        config_parser_t parse;
        size_t offset;     /* the field, for the generic parsers */
        uint64_t min, max; /* bounds, for numbers, sizes and durations */
        bool hidden;       /* never print the value */
};

/* offsetof() that also checks the field's type, so a table row can't point a parser at the wrong kind. */
#define CONFIG_IS_TYPE(field, type)                                                                         \
        __builtin_types_compatible_p(__typeof__(((struct config *)0)->field), type)
#define CONFIG_FIELD(field, type)                                                                           \
        (offsetof(struct config, field) + 0 * sizeof(char[CONFIG_IS_TYPE(field, type) ? 1 : -1]))
#define U64(field)  CONFIG_FIELD(field, uint64_t)
#define PATH(field) CONFIG_FIELD(field, char[CONFIG_PATH_MAX])

static const struct {
        const char *name;
        int level;
} config_log_levels[] = {
        { "debug", LOG_DEBUG },     { "info", LOG_INFO },  { "notice", LOG_NOTICE },
        { "warning", LOG_WARNING }, { "error", LOG_ERR },
};

static int config_reason(char *reason, size_t size, const char *format, ...) _printf_(3, 4);
static int config_reason(char *reason, size_t size, const char *format, ...)
{
        va_list ap;

        va_start(ap, format);
        (void)vsnprintf(reason, size, format, ap);
        va_end(ap);
        return -EINVAL;
}

static uint64_t *config_u64(struct config *c, const struct config_key *k)
{
        return (uint64_t *)(void *)((char *)c + k->offset);
}

static int config_parse_duration(const struct config_key *k, struct config *c, const char *value, char *reason,
                                 size_t size)
{
        uint64_t v;
        int r;

        r = parse_duration(value, &v);
        if (r == -ERANGE)
                return config_reason(reason, size, "duration out of range (at most 30d)");
        if (r < 0)
                return config_reason(reason, size, "not a duration (e.g. 500ms, 10s, 1.5m, 2h)");
        if (v < k->min)
                return config_reason(reason, size, "must be at least %" PRIu64 " ms", k->min / USEC_PER_MSEC);
        if (k->max == USEC_PER_SEC && v % USEC_PER_SEC != 0)
                return config_reason(reason, size, "must be a whole number of seconds");
        *config_u64(c, k) = v;
        return 0;
}

static int config_parse_size(const struct config_key *k, struct config *c, const char *value, char *reason,
                             size_t size)
{
        uint64_t v;
        int r;

        r = parse_size(value, &v);
        if (r == -EINVAL)
                return config_reason(reason, size, "not a size (e.g. 512, 16k, 1M)");
        if (r < 0 || v < k->min || v > k->max)
                return config_reason(reason, size, "must be between %" PRIu64 " and %" PRIu64 " bytes",
                                     k->min, k->max);
        *config_u64(c, k) = v;
        return 0;
}

static int config_parse_number(const struct config_key *k, struct config *c, const char *value, char *reason,
                               size_t size)
{
        uint64_t v;

        if (parse_uint(value, k->min, k->max, &v) < 0)
                return config_reason(reason, size, "must be an integer between %" PRIu64 " and %" PRIu64,
                                     k->min, k->max);
        *config_u64(c, k) = v;
        return 0;
}

static int config_parse_listen(const struct config_key *k, struct config *c, const char *value, char *reason,
                               size_t size)
{
        struct netaddr a;
        int r;

        r = netaddr_parse(value, 0, false, &a);
        if (r == -ERANGE)
                return config_reason(reason, size, "port must be between 1 and 65535");
        if (r < 0)
                return config_reason(reason, size,
                                     "not a numeric address with a port, e.g. 127.0.0.1:8080 or [::1]:8080");
        c->listen = a;
        return 0;
}

static bool config_is_printable(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

static int config_parse_database(const struct config_key *k, struct config *c, const char *value,
                                 char *reason, size_t size)
{
        PQconninfoOption *options;
        char *error = NULL;
        size_t len = strlen(value);

        if (len >= sizeof(c->database))
                return config_reason(reason, size, "longer than %d bytes", CONFIG_DATABASE_MAX - 1);
        if (!config_is_printable(value))
                return config_reason(reason, size, "contains control characters");
        if (len > 0) {
                /* Parsing only: nothing is resolved or contacted here. libpq's message is not passed on,
                 * since it may quote part of the string, password included. */
                options = PQconninfoParse(value, &error);
                if (!options) {
                        PQfreemem(error);
                        return config_reason(reason, size,
                                             "not a libpq connection string (key=value pairs, or a "
                                             "postgresql:// URI)");
                }
                PQconninfoFree(options);
        }
        memcpy(c->database, value, len + 1);
        return 0;
}

static int config_parse_path(const struct config_key *k, struct config *c, const char *value, char *reason,
                             size_t size)
{
        char *field = (char *)c + k->offset;
        size_t len = strlen(value);

        if (value[0] != '/')
                return config_reason(reason, size, "must be an absolute path");
        if (len >= CONFIG_PATH_MAX)
                return config_reason(reason, size, "longer than %d bytes", CONFIG_PATH_MAX - 1);
        if (!config_is_printable(value))
                return config_reason(reason, size, "contains control characters");
        memcpy(field, value, len + 1);
        return 0;
}

static int config_parse_log_level(const struct config_key *k, struct config *c, const char *value,
                                  char *reason, size_t size)
{
        for (size_t i = 0; i < ELEMENTSOF(config_log_levels); i++)
                if (strcmp(value, config_log_levels[i].name) == 0) {
                        c->log_level = config_log_levels[i].level;
                        return 0;
                }
        return config_reason(reason, size, "must be one of: debug info notice warning error");
}

static int config_parse_activity(const struct config_key *k, struct config *c, const char *value,
                                 char *reason, size_t size)
{
        bool b;

        if (parse_bool(value, &b) < 0)
                return config_reason(reason, size, "must be on or off");
        c->activity = b;
        return 0;
}

/* One key per row: the table reads better unformatted. */
/* clang-format off */
/* DURATION(..., min, whole): min in microseconds; whole is USEC_PER_SEC for whole seconds only, else 0. */
#define DURATION(k, d, field, min, whole) { "webd", k, d, config_parse_duration, U64(field), min, whole, false }

static const struct config_key config_keys[] = {
        { "webd", "listen", "127.0.0.1:8080", config_parse_listen, 0, 0, 0, false },
        { "webd", "database", "", config_parse_database, 0, 0, 0, true },
        { "webd", "pool_size", "4", config_parse_number, U64(pool_size), 1, 64, false },
        { "webd", "secret_file", "/var/lib/webd/jwt.key", config_parse_path, PATH(secret_file), 0, 0, true },
        DURATION("token_ttl", "1h", token_ttl_usec, USEC_PER_SEC, USEC_PER_SEC),
        { "webd", "max_body_size", "64k", config_parse_size, U64(max_body_size), 1024, 16 * 1024 * 1024, false },
        DURATION("request_timeout", "10s", request_timeout_usec, 10 * USEC_PER_MSEC, 0),
        DURATION("startup_timeout", "30s", startup_timeout_usec, 0, 0),
        { "webd", "log_level", "info", config_parse_log_level, 0, 0, 0, false },
        { "webd", "activity", "on", config_parse_activity, 0, 0, 0, false },
};
/* clang-format on */

struct config_load {
        struct config *config;
        char unknown_section[64]; /* last unknown section reported, to report it once */
        unsigned n_errors;
};

static const struct config_key *config_find_key(const char *section, const char *key)
{
        for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
                if (strcmp(config_keys[i].section, section) == 0 && strcmp(config_keys[i].key, key) == 0)
                        return &config_keys[i];
        return NULL;
}

static bool config_section_known(const char *section)
{
        for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
                if (strcmp(config_keys[i].section, section) == 0)
                        return true;
        return false;
}

/* Logs a bad key as "WHERE: [section] key 'KEY': reason (value 'V')" and returns -EINVAL. Values that
 * may hold a secret are never printed: logs end up in the journal and in bug reports. */
static int config_log_bad_key(const char *where, const char *section, const char *key, const char *value,
                              const char *reason, bool hidden)
{
        if (hidden)
                log_error("%s: [%s] key '%s': %s (value hidden)", where, section, key, reason);
        else
                log_error("%s: [%s] key '%s': %s (value '%s')", where, section, key, reason, value);
        return -EINVAL;
}

/* The per-key logic shared by the file and the command line. <unknown_section> (may be NULL) remembers
 * the last unknown section reported. */
static int config_apply(struct config *c, char *unknown_section, size_t unknown_size, const char *where,
                        const char *section, const char *key, const char *value)
{
        const struct config_key *k;
        char reason[256];

        if (unknown_section && strcmp(unknown_section, section) != 0)
                unknown_section[0] = '\0';

        k = config_find_key(section, key);
        if (!k) {
                if (section[0] == '\0')
                        return config_log_bad_key(where, section, key, value,
                                                  "key outside any section, put it under [webd]", true);
                if (!config_section_known(section)) {
                        if (unknown_section && strcmp(unknown_section, section) == 0)
                                return -EINVAL;
                        if (unknown_section)
                                (void)snprintf(unknown_section, unknown_size, "%s", section);
                        return config_log_bad_key(where, section, key, value, "unknown section", true);
                }
                return config_log_bad_key(where, section, key, value, "unknown key", true);
        }
        if (k->parse(k, c, value, reason, sizeof(reason)) < 0)
                return config_log_bad_key(where, section, key, value, reason, k->hidden);
        return 0;
}

void config_init(struct config *c)
{
        *c = (struct config){0};
        for (size_t i = 0; i < ELEMENTSOF(config_keys); i++) {
                const struct config_key *k = &config_keys[i];
                char reason[256];
                _unused_ int r;

                r = k->parse(k, c, k->default_value, reason, sizeof(reason));
                assert(r >= 0); /* the defaults are part of the program */
        }
}

static int config_load_handler(const char *file, unsigned line, const char *section, const char *key,
                               const char *value, void *userdata)
{
        struct config_load *load = userdata;
        char where[CONFIG_PATH_MAX + 16];

        (void)snprintf(where, sizeof(where), "%s:%u", file, line);
        if (config_apply(load->config, load->unknown_section, sizeof(load->unknown_section), where, section,
                         key, value) < 0)
                load->n_errors++;
        return 0; /* go on: report every bad line in one run */
}

int config_load_file(struct config *c, const char *path)
{
        struct config_load load = {.config = c};
        size_t len = strlen(path);
        int r;

        if (len >= sizeof(c->path)) {
                log_error("%.64s...: config path longer than %d bytes", path, CONFIG_PATH_MAX - 1);
                return -ENAMETOOLONG;
        }
        memcpy(c->path, path, len + 1);

        r = ini_parse_file(path, config_load_handler, &load);
        if (r < 0)
                return r;
        return load.n_errors > 0 ? -EINVAL : 0;
}

int config_set(struct config *c, const char *section, const char *key, const char *value, const char *origin)
{
        return config_apply(c, NULL, 0, origin ? origin : "command line", section ? section : "",
                            key ? key : "", value ? value : "");
}

int config_validate(const struct config *c)
{
        if (c->database[0] == '\0') {
                log_error("%s: [webd] key 'database': no database given: set it in the file, in "
                          "WEBD_DATABASE or with --database",
                          c->path[0] ? c->path : "configuration");
                return -EINVAL;
        }
        return 0;
}

const char *config_log_level_name(int level)
{
        for (size_t i = 0; i < ELEMENTSOF(config_log_levels); i++)
                if (config_log_levels[i].level == level)
                        return config_log_levels[i].name;
        return NULL;
}
