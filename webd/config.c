/* webd's configuration: the table of every key, its default and its parser, and the checks that need the
 * whole configuration. Reading the file and the command line is the engine's (common/conf.c).
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
 *   max_connections = 10000                  client connections open at once, 16..1000000; beyond it new
 *                                            ones wait in the kernel's backlog
 *   max_header_size = 16k                    request line and fields, 1k..1M: 431 beyond it
 *   header_timeout  = 10s                    a request head not complete by then (from its first byte, or
 *                                            from the accept): 408, whatever trickles in
 *   body_timeout    = 30s                    a request body not complete this long after its head: 408
 *   idle_timeout    = 30s                    keep-alive connections idle this long are closed; also how
 *                                            long a client may take nothing of its answer
 *   startup_timeout = 30s                    how long the start waits for the database; 0 = one try
 *   log_level       = info                   debug | info | notice | warning | error
 *   activity        = on                     activity log (table + one journal line per request)
 *   trusted_proxies = 127.0.0.0/8, ::1       networks (CIDR list, up to 32; empty: none) of the relays
 *                                            whose X-Forwarded-For names the client
 *   login_failures  = 5                      failed logins of one account from one address before
 *                                            delays start (1s, doubling), 1..1000
 *   login_address_failures = 20              the same from one address, whatever the accounts, 1..10000
 *   login_account_failures = 100             the same for one account from addresses it has not logged
 *                                            in from, 1..100000
 *   login_max_delay = 5m                     the longest delay, whole seconds, 1s..1h
 *   login_throttle_entries = 16384           counters kept, 1024..1048576 (least recently used dropped)
 *   tls_cert        = (empty)                absolute path of a PEM certificate (then its chain): the
 *                                            listener speaks TLS only (TLS 1.2 and 1.3, Mozilla
 *                                            intermediate); SIGHUP loads the files again
 *   tls_key         = (empty)                absolute path of its PEM private key (not encrypted);
 *                                            tls_cert and tls_key go together
 *
 *   [activity]
 *   retention       = 90d                    rows older than this are deleted; off (or 0) keeps them
 *                                            forever; else whole s, m, h or d, from 1h to 36500d
 *   retention_interval = 1m                  how often old rows are looked for, at least 1s
 *
 * Durations are parse_duration() values ("500ms", "1.5s", "2m"), sizes parse_size() values ("64k").
 * Unknown sections and keys are errors, so a typo never silently leaves a default in place. Each error is
 * logged as "FILE:LINE: [section] key 'KEY': reason (value 'V')", or "ORIGIN: ..." for the command line;
 * the values of database and secret_file are never printed (a conninfo may carry a password). */
#include "webd/config.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <string.h>

#include "common/conf.h"
#include "common/macro.h"
#include "common/parse.h"
#include "common/tlsio.h"

#define U64(field)  CONF_FIELD(struct config, field, uint64_t)
#define PATH(field) CONF_FIELD(struct config, field, char[CONFIG_PATH_MAX])

/* Like conf_parse_size(), but a size beyond 64 bits is reported like any other out of range. */
static int config_parse_size(const struct conf_key *k, void *obj, const char *value, bool first,
                             char *reason, size_t size)
{
        uint64_t v;

        if (parse_size(value, &v) == -ERANGE)
                return conf_reason(reason, size, "must be between %" PRIu64 " and %" PRIu64 " bytes", k->min,
                                   k->max);
        return conf_parse_size(k, obj, value, first, reason, size);
}

static int config_parse_listen(const struct conf_key *k, void *obj, const char *value, bool first,
                               char *reason, size_t size)
{
        struct config *c = obj;
        struct netaddr a;
        int r;

        r = netaddr_parse(value, 0, false, &a);
        if (r == -ERANGE)
                return conf_reason(reason, size, "port must be between 1 and 65535");
        if (r < 0)
                return conf_reason(reason, size,
                                   "not a numeric address with a port, e.g. 127.0.0.1:8080 or [::1]:8080");
        c->listen = a;
        return 0;
}

static int config_parse_database(const struct conf_key *k, void *obj, const char *value, bool first,
                                 char *reason, size_t size)
{
        struct config *c = obj;
        PQconninfoOption *options;
        char *error = NULL;
        size_t len = strlen(value);

        if (len >= sizeof(c->database))
                return conf_reason(reason, size, "longer than %d bytes", CONFIG_DATABASE_MAX - 1);
        if (!conf_is_printable(value))
                return conf_reason(reason, size, "contains control characters");
        if (len > 0) {
                /* Parsing only: nothing is resolved or contacted here. libpq's message is not passed on,
                 * since it may quote part of the string, password included. */
                options = PQconninfoParse(value, &error);
                if (!options) {
                        PQfreemem(error);
                        return conf_reason(reason, size,
                                           "not a libpq connection string (key=value pairs, or a "
                                           "postgresql:// URI)");
                }
                PQconninfoFree(options);
        }
        memcpy(c->database, value, len + 1);
        return 0;
}

static int config_parse_path(const struct conf_key *k, void *obj, const char *value, bool first,
                             char *reason, size_t size)
{
        char *field = (char *)obj + k->offset;
        size_t len = strlen(value);

        if (value[0] != '/')
                return conf_reason(reason, size, "must be an absolute path");
        if (len >= CONFIG_PATH_MAX)
                return conf_reason(reason, size, "longer than %d bytes", CONFIG_PATH_MAX - 1);
        if (!conf_is_printable(value))
                return conf_reason(reason, size, "contains control characters");
        memcpy(field, value, len + 1);
        return 0;
}

/* A path that may be empty (the feature off). */
static int config_parse_optional_path(const struct conf_key *k, void *obj, const char *value, bool first,
                                      char *reason, size_t size)
{
        if (value[0] == '\0') {
                ((char *)obj + k->offset)[0] = '\0';
                return 0;
        }
        return config_parse_path(k, obj, value, first, reason, size);
}

static int config_parse_log_level(const struct conf_key *k, void *obj, const char *value, bool first,
                                  char *reason, size_t size)
{
        struct config *c = obj;

        if (conf_parse_log_level(value, &c->log_level) >= 0)
                return 0;
        return conf_reason(reason, size, "must be one of: debug info notice warning error");
}

static int config_parse_activity(const struct conf_key *k, void *obj, const char *value, bool first,
                                 char *reason, size_t size)
{
        struct config *c = obj;
        bool b;

        if (parse_bool(value, &b) < 0)
                return conf_reason(reason, size, "must be on or off");
        c->activity = b;
        return 0;
}

struct config_proxy_list {
        struct netaddr_cidr items[CONFIG_PROXIES_MAX];
        size_t n;
};

static int config_proxy_item(const char *entry, void *userdata, char *reason, size_t size)
{
        struct config_proxy_list *l = userdata;

        if (l->n >= CONFIG_PROXIES_MAX)
                return conf_reason(reason, size, "more than %d networks", CONFIG_PROXIES_MAX);
        if (netaddr_cidr_parse(entry, &l->items[l->n]) < 0)
                return conf_reason(reason, size,
                                   "'%s' is not a network such as 10.0.0.0/16, 127.0.0.1 or ::1/128", entry);
        l->n++;
        return 0;
}

/* The list replaces what was there; on error nothing changes. */
static int config_parse_proxies(const struct conf_key *k, void *obj, const char *value, bool first,
                                char *reason, size_t size)
{
        struct config *c = obj;
        struct config_proxy_list l = {.n = 0};
        int r;

        if (value[0] != '\0') {
                r = conf_split(value, config_proxy_item, &l, reason, size);
                if (r < 0)
                        return r;
        }
        memcpy(c->trusted_proxies, l.items, l.n * sizeof(l.items[0]));
        c->n_trusted_proxies = l.n;
        return 0;
}

#define CONFIG_RETENTION_MIN_S (3600)
#define CONFIG_RETENTION_MAX_S (UINT64_C(36500) * 86400)

/* [activity] retention: "off", "0", or a whole number with a unit (s, m, h, d), from 1h to 36500d. Its own
 * parser, since durations in general stop at 30d. No unit is refused: "90" would be 90 seconds, a typo
 * that would empty the table. */
static int config_parse_retention(const struct conf_key *k, void *obj, const char *value, bool first,
                                  char *reason, size_t size)
{
        static const struct {
                char unit;
                uint64_t seconds;
        } units[] = { { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 } };
        struct config *c = obj;
        char digits[16];
        size_t n = strspn(value, "0123456789");
        uint64_t v, unit = 0;

        if (strcmp(value, "off") == 0 || strcmp(value, "0") == 0) {
                c->activity_retention_usec = 0;
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(units) && n > 0 && n < sizeof(digits); i++)
                if (value[n] == units[i].unit && value[n + 1] == '\0')
                        unit = units[i].seconds;
        if (unit == 0)
                return conf_reason(reason, size, "must be off, or a whole number of s, m, h or d (e.g. 90d)");
        memcpy(digits, value, n);
        digits[n] = '\0';
        if (parse_uint(digits, 0, UINT64_MAX / 86400, &v) < 0 || v * unit < CONFIG_RETENTION_MIN_S ||
            v * unit > CONFIG_RETENTION_MAX_S)
                return conf_reason(reason, size, "must be off, or from 1h to 36500d");
        c->activity_retention_usec = v * unit * USEC_PER_SEC;
        return 0;
}

/* One key per row: the table reads better unformatted. */
/* clang-format off */
/* DURATION(..., min, whole): min in microseconds; whole is USEC_PER_SEC for whole seconds only, else 0. */
#define DURATION(k, d, field, min, whole) { "webd", k, d, conf_parse_duration, U64(field), min, whole, false }
#define NUMBER(k, d, field, min, max) { "webd", k, d, conf_parse_number, U64(field), min, max, false }

static const struct conf_key config_keys[] = {
        { "webd", "listen", "127.0.0.1:8080", config_parse_listen, 0, 0, 0, false },
        { "webd", "database", "", config_parse_database, 0, 0, 0, true },
        { "webd", "pool_size", "4", conf_parse_number, U64(pool_size), 1, 64, false },
        { "webd", "secret_file", "/var/lib/webd/jwt.key", config_parse_path, PATH(secret_file), 0, 0, true },
        DURATION("token_ttl", "1h", token_ttl_usec, USEC_PER_SEC, USEC_PER_SEC),
        { "webd", "max_body_size", "64k", config_parse_size, U64(max_body_size), 1024, 16 * 1024 * 1024, false },
        DURATION("request_timeout", "10s", request_timeout_usec, 10 * USEC_PER_MSEC, 0),
        NUMBER("max_connections", "10000", max_connections, 16, 1000000),
        { "webd", "max_header_size", "16k", config_parse_size, U64(max_header_size), 1024, 1024 * 1024, false },
        DURATION("header_timeout", "10s", header_timeout_usec, 100 * USEC_PER_MSEC, 0),
        DURATION("body_timeout", "30s", body_timeout_usec, 100 * USEC_PER_MSEC, 0),
        DURATION("idle_timeout", "30s", idle_timeout_usec, 100 * USEC_PER_MSEC, 0),
        DURATION("startup_timeout", "30s", startup_timeout_usec, 0, 0),
        { "webd", "log_level", "info", config_parse_log_level, 0, 0, 0, false },
        { "webd", "activity", "on", config_parse_activity, 0, 0, 0, false },
        { "webd", "trusted_proxies", "127.0.0.0/8, ::1", config_parse_proxies, 0, 0, 0, false },
        NUMBER("login_failures", "5", login_failures, 1, 1000),
        NUMBER("login_address_failures", "20", login_address_failures, 1, 10000),
        NUMBER("login_account_failures", "100", login_account_failures, 1, 100000),
        DURATION("login_max_delay", "5m", login_max_delay_usec, USEC_PER_SEC, USEC_PER_SEC),
        NUMBER("login_throttle_entries", "16384", login_throttle_entries, 1024, 1048576),
        { "webd", "tls_cert", "", config_parse_optional_path, PATH(tls_cert), 0, 0, false },
        { "webd", "tls_key", "", config_parse_optional_path, PATH(tls_key), 0, 0, false },
        { "activity", "retention", "90d", config_parse_retention, 0, 0, 0, false },
        { "activity", "retention_interval", "1m", conf_parse_duration, U64(activity_sweep_usec), USEC_PER_SEC, 0,
          false },
};
/* clang-format on */

static const struct conf_table config_table = {
        .keys = config_keys,
        .n_keys = ELEMENTSOF(config_keys),
        .outside_reason = "key outside any section, put it under [webd]",
        .hide_unknown = true,
        .path_offset = offsetof(struct config, path),
        .path_size = sizeof(((struct config *)0)->path),
};
_Static_assert(ELEMENTSOF(config_keys) <= CONF_KEYS_MAX, "too many keys for one conf_table");

void config_init(struct config *c)
{
        *c = (struct config){0};
        conf_init(&config_table, c);
}

int config_load_file(struct config *c, const char *path)
{
        return conf_load_file(&config_table, c, path);
}

int config_set(struct config *c, const char *section, const char *key, const char *value, const char *origin)
{
        return conf_set(&config_table, c, section, key, value, origin);
}

int config_validate(const struct config *c)
{
        if (c->database[0] == '\0')
                return conf_invalid(
                        c->path, "webd", "database",
                        "no database given: set it in the file, in WEBD_DATABASE or with --database");
        if (c->login_max_delay_usec > 3600 * USEC_PER_SEC)
                return conf_invalid(c->path, "webd", "login_max_delay", "must be at most 1h");
        if ((c->tls_cert[0] == '\0') != (c->tls_key[0] == '\0'))
                return conf_invalid(c->path, "webd", c->tls_cert[0] ? "tls_key" : "tls_cert",
                                    "tls_cert and tls_key go together: set both, or neither");
        if (c->tls_cert[0]) {
                char reason[512];
                SSL_CTX *ctx = tls_server_ctx_new(c->tls_cert, c->tls_key, false, reason, sizeof(reason));

                if (!ctx)
                        return conf_invalid(c->path, "webd", "tls_cert", "%s", reason);
                SSL_CTX_free(ctx);
        }
        return 0;
}
