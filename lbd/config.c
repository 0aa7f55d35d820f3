/* lbd's configuration: the table of every key, its default and its parser, and the checks that need
 * several keys at once. Reading the file and the command line is the engine's (common/conf.c).
 *
 * Keys and defaults. The table config_keys[] below is the source of truth: config_init() builds the
 * defaults by running each key's parser on the default text, so a default can never be one its parser
 * refuses. This summary is written by hand: a key added to or changed in the table is changed here too,
 * and in README.md's configuration reference.
 *
 *   [lbd]
 *   listen           = 0.0.0.0:80      address:port list, comma-separated or the key repeated, up to
 *                                      CONFIG_MAX_LISTEN; [v6]:port; ":80" means every IPv4 address;
 *                                      "ADDR:PORT tls" terminates TLS, "ADDR:PORT redirect" redirects
 *   admin            = 127.0.0.1:9180  loopback only (127.0.0.0/8 or [::1]), or "off"
 *   balance          = round-robin     round-robin | least-conn | p2c
 *   access_log       = stderr          stderr | off | an absolute file path
 *   max_connections  = 10000           1..1000000
 *   drain_timeout    = 30s             0 allowed (close at once)
 *   threads          = 1               "auto" (the CPUs sched_getaffinity() allows) or 1..CONFIG_THREADS_MAX;
 *   upgrades         = websocket       protocols a request may switch to (Upgrade), comma-separated:
 *                                      "name" (any version) or "name/version", case-insensitive;
 *                                      "off" or empty = none (proxy.c forwards the rest as plain requests)
 *   [tls]
 *   certificate      = (empty)         "CERT [KEY]" absolute paths, one per occurrence, up to
 *                                      CONFIG_MAX_CERTS; the first is the default; needed by a tls listener
 *   profile          = intermediate    intermediate | modern
 *   tickets          = on              on | off
 *   ticket_rotate    = 1h
 *   session_cache    = 20000           0..1000000, 0 = off
 *   strict_sni       = off             on | off
 *   hsts             = 0               seconds, 0..CONFIG_HSTS_MAX, 0 = off
 *   acme_challenge_dir = (empty)       absolute path; needs a plain listener
 *   backend          = off             on | off: TLS to the backends
 *   backend_ca       = (empty)         absolute path; required with backend = on
 *   backend_name     = (empty)         word; empty = check the backend's IP address
 *   [timeouts]
 *   client_header    = 10s
 *   client_idle      = 60s
 *   client_body      = 30s
 *   connect          = 3s
 *   backend          = 30s
 *   backend_idle     = 10s
 *   tunnel           = 1h              an upgraded connection (WebSocket) with no byte either way
 *   [limits]
 *   max_header_size  = 16k             1k..1M
 *   max_body_size    = 1m              0 = unlimited; a front door refuses what no API here takes
 *   retries          = 2               0..10
 *   max_idle_per_backend = 64          0..100000
 *   [health]
 *   path             = /healthcheck    starts with '/', printable ASCII, no spaces
 *   interval         = 1s
 *   timeout          = 1s
 *   rise             = 2               1..100
 *   fall             = 3               1..100
 *   expect           = 200-399         "200" or "200-399", within 100..599
 *   passive_fall     = 3               0..1000, 0 = off
 *   passive_max_down = 50              0..100: percent of the pool passive health may hold out of rotation
 *   [pool]
 *   provider         = static          static | local | ec2
 *   desired          = 3               0..1000 (local and ec2)
 *   port             = 80              1..65535, for backends given without a port, and ec2 instances'
 *   networks         = (empty)         CIDR list, up to CONFIG_MAX_NETWORKS; empty = any address
 *   backends         = (empty)         address list, up to CONFIG_MAX_BACKENDS; the port may be left out;
 *                                      static provider only
 *   grace            = 120s            0 allowed
 *   poll             = 10s
 *   max_replacements = 3               0..1000; the storm guard (reconcile.c)
 *   replacement_window = 5m
 *   refresh_min_healthy = 100          0..100: percent of desired kept serving by an instance refresh
 *   refresh_warmup   = 30s             0 allowed: a new instance counts once healthy this long
 *   refresh_timeout  = 10m             a new instance not healthy this long after launch fails the refresh
 *   refresh_on_failure = rollback      rollback | stop
 *   zone_backoff     = 1m              a zone refusing launches for capacity is left alone this long
 *   min              = 0               0..1000; scaling on demand keeps desired within min and max
 *   max              = 0               0..1000; 0 = no scaling on demand (desired is fixed)
 *   target_rps       = 0               requests per second per backend; 0 = not a target
 *   target_inflight  = 0               requests in flight per backend; 0 = not a target
 *   target_p90       = 0               duration, 0 allowed, at most 1h: the 90th percentile of response
 *                                      time to keep under; 0 = not a target
 *   scale_out_after  = 30s             the window whose average breaching a target scales out (<= 15m)
 *   scale_in_after   = 5m              the window whose average well under the targets scales in (<= 15m)
 *   scale_in_cooldown = 5m             0 allowed; no scale-in sooner after a change
 *   [schedule]
 *   action           = (empty)         "NAME MIN HOUR DAY MONTH WEEKDAY min=N max=N desired=N" (cron time in
 *                                      UTC; at least one setting); repeated, up to SCHEDULE_MAX
 *   [ec2]                              (words: printable ASCII without blanks; "" = not set)
 *   region           = (empty)         word; empty = AWS_REGION, AWS_DEFAULT_REGION, ~/.aws/config, IMDS
 *   endpoint         = (empty)         http:// or https:// URL; empty = AWS_ENDPOINT_URL_EC2, ...
 *   image            = (empty)         word (ami-...); image or launch_template is required
 *   launch_template  = (empty)         word (lt-... or a name)
 *   instance_type    = t3.micro        word; empty = not sent (the launch template's)
 *   subnet           = (empty)         word (subnet-...); the one-subnet form of subnets
 *   subnets          = (empty)         list of words (subnet-..., one per zone), up to CONFIG_MAX_SUBNETS,
 *                                      none twice; not with subnet
 *   security_groups  = (empty)         list of words (sg-...), up to CONFIG_MAX_SECURITY_GROUPS
 *   key_name         = (empty)         text
 *   instance_profile = (empty)         word: a name or an ARN
 *   user_data        = (empty)         absolute path of the user-data template
 *   upstream         = (not set)       address:port substituted for {{upstream}} in the user-data
 *   upstream_ca      = (empty)         absolute path of a PEM CA certificate: its text for {{upstream_ca}}
 *   upstream_name    = (empty)         DNS name for {{upstream_name}}
 *   relay_tls_cert   = (empty)         absolute path of the relays' PEM certificate: its text for
 *                                      {{relay_tls_cert}} (the relays listen with TLS); needs relay_tls_key
 *   relay_tls_key    = (empty)         absolute path of its PEM key: its text for {{relay_tls_key}}
 *   tag              = lbd:pool=main   KEY=VALUE, the key 1..127 bytes and not starting with "aws:"
 *   credentials_file = (empty)         absolute path; empty = the SDK chain
 *   profile          = (empty)         word
 *   previous_settings = (empty)        absolute path: where the launch settings before a reload are
 *                                      saved (a refresh's rollback relaunches them after a restart too)
 *   [lease]                            (off while conninfo_file is empty: one host, as ever)
 *   conninfo_file    = (empty)         absolute path of a file holding the libpq connection string
 *   name             = (empty)         this host's name: letters, digits, '.', '_', '-'; empty = host name
 *   pool             = main            the lease row's name, the same on every host of the pool
 *   duration         = 15s             1s..10m
 *   renew            = 3s              < duration - margin - timeout
 *   margin           = 3s              < duration
 *   timeout          = 2s              <= renew
 *   elastic_ip       = (empty)         word (eipalloc-...): moved to the leader's instance
 *   instance_id      = (empty)         word (i-...): this host's instance; required with elastic_ip
 *   listen           = (empty)         address with a port: answers GET /lease there (peer.c); empty = off
 *   peers            = (empty)         address list with ports, up to CONFIG_MAX_LEASE_PEERS: the other
 *                                      hosts' listen addresses, asked every renew
 *   [local]
 *   command          = {lbd} --listen {address} --backend {upstream} --admin off --access-log off
 *                                      text; placeholders {lbd} {port} {address} {upstream} {index}
 *   base_port        = 18100           1..65535; backends get base_port + index
 *   upstream         = (not set)       address:port, for {upstream}
 *   state_file       = (empty)         absolute path; empty = $RUNTIME_DIRECTORY or /run/lbd (see
 *                                      provider-local.c)
 *
 * Durations are parse_duration() values ("500ms", "1.5s", "2m"; a bare number is seconds, at most 30
 * days) and must be greater than 0 unless noted; sizes are parse_size() values ("16k", "1M").
 *
 * List keys (listen, networks, backends, [tls] certificate and [schedule] action): within one source (one file, or one config_set() call), the
 * first occurrence replaces the list, defaults included, and later occurrences append to it.
 *
 * Unknown sections and keys are errors, so a typo never silently leaves a default in place. Each error is
 * logged as "FILE:LINE: [section] key 'KEY': reason (value 'V')", or "ORIGIN: ..." for the command line. */
#include "lbd/config.h"

#include <arpa/inet.h>
#include <sched.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/conf.h"
#include "common/macro.h"
#include "common/parse.h"
#include "http/http.h"

#define U64(field)  CONF_FIELD(struct config, field, uint64_t)
#define PATH(field) CONF_FIELD(struct config, field, char[CONFIG_PATH_MAX])

static const char *const config_balance_names[] = {
        [BALANCE_ROUND_ROBIN] = "round-robin",
        [BALANCE_LEAST_CONN] = "least-conn",
        [BALANCE_P2C] = "p2c",
};

static const char *const config_provider_names[] = {
        [PROVIDER_STATIC] = "static",
        [PROVIDER_LOCAL] = "local",
        [PROVIDER_EC2] = "ec2",
};

static int config_parse_port(const struct conf_key *k, void *obj, const char *value, bool first,
                             char *reason, size_t size)
{
        struct config *c = obj;
        uint64_t v;

        if (parse_uint(value, 1, 65535, &v) < 0)
                return conf_reason(reason, size, "must be a port number between 1 and 65535");
        c->port = (uint16_t)v;
        return 0;
}

/* Looks <value> up in <names>; returns its index or -EINVAL with a reason listing the choices. */
static int config_parse_choice(const char *value, const char *const *names, size_t n, char *reason,
                               size_t size)
{
        size_t len = 0;

        for (size_t i = 0; i < n; i++)
                if (strcmp(value, names[i]) == 0)
                        return (int)i;

        len = (size_t)snprintf(reason, size, "must be one of:");
        for (size_t i = 0; i < n && len < size; i++)
                len += (size_t)snprintf(reason + len, size - len, " %s", names[i]);
        return -EINVAL;
}

static int config_parse_balance(const struct conf_key *k, void *obj, const char *value, bool first,
                                char *reason, size_t size)
{
        struct config *c = obj;
        int r;

        r = config_parse_choice(value, config_balance_names, ELEMENTSOF(config_balance_names), reason, size);
        if (r < 0)
                return r;
        c->balance = (enum balance_kind)r;
        return 0;
}

/* "auto": the CPUs this process may run on, at most CONFIG_THREADS_MAX; else a number in that range. */
static int config_parse_threads(const struct conf_key *k, void *obj, const char *value, bool first,
                                char *reason, size_t size)
{
        struct config *c = obj;
        uint64_t n;

        if (strcmp(value, "auto") == 0) {
                cpu_set_t set;

                n = sched_getaffinity(0, sizeof(set), &set) == 0 ? (uint64_t)CPU_COUNT(&set) : 1;
                c->threads = MAX(UINT64_C(1), MIN(n, (uint64_t)CONFIG_THREADS_MAX));
                return 0;
        }
        if (conf_parse_number(k, obj, value, first, reason, size) < 0)
                return conf_reason(reason, size, "must be auto or a number from 1 to %d", CONFIG_THREADS_MAX);
        return 0;
}

static const char *const config_refresh_on_failure_names[] = {"rollback", "stop"};

static int config_parse_refresh_on_failure(const struct conf_key *k, void *obj, const char *value, bool first,
                                           char *reason, size_t size)
{
        struct config *c = obj;
        int r;

        r = config_parse_choice(value, config_refresh_on_failure_names,
                                ELEMENTSOF(config_refresh_on_failure_names), reason, size);
        if (r < 0)
                return r;
        c->refresh_on_failure = r;
        return 0;
}

static int config_parse_provider(const struct conf_key *k, void *obj, const char *value, bool first,
                                 char *reason, size_t size)
{
        struct config *c = obj;
        int r;

        r = config_parse_choice(value, config_provider_names, ELEMENTSOF(config_provider_names), reason,
                                size);
        if (r < 0)
                return r;
        c->provider = (enum provider_kind)r;
        return 0;
}

static int config_parse_access_log(const struct conf_key *k, void *obj, const char *value, bool first,
                                   char *reason, size_t size)
{
        struct config *c = obj;
        char *field = (char *)c + k->offset;

        if (strcmp(value, "stderr") != 0 && strcmp(value, "off") != 0 &&
            (value[0] != '/' || !conf_is_printable(value)))
                return conf_reason(reason, size, "must be stderr, off or an absolute file path");
        if (strlen(value) >= CONFIG_PATH_MAX)
                return conf_reason(reason, size, "path longer than %d bytes", CONFIG_PATH_MAX - 1);
        memcpy(field, value, strlen(value) + 1);
        return 0;
}

static int config_parse_http_path(const struct conf_key *k, void *obj, const char *value, bool first,
                                  char *reason, size_t size)
{
        struct config *c = obj;
        char *field = (char *)c + k->offset;

        if (value[0] != '/')
                return conf_reason(reason, size, "must be a URL path starting with '/'");
        for (const unsigned char *p = (const unsigned char *)value; *p; p++)
                if (*p <= 0x20 || *p >= 0x7f)
                        return conf_reason(reason, size, "only printable ASCII without spaces is allowed");
        if (strlen(value) >= CONFIG_PATH_MAX)
                return conf_reason(reason, size, "path longer than %d bytes", CONFIG_PATH_MAX - 1);
        memcpy(field, value, strlen(value) + 1);
        return 0;
}

static int config_parse_expect(const struct conf_key *k, void *obj, const char *value, bool first,
                               char *reason, size_t size)
{
        struct config *c = obj;
        char low[8];
        const char *dash = strchr(value, '-'), *high = NULL;
        size_t len = dash ? (size_t)(dash - value) : strlen(value);
        uint64_t min, max;

        if (len < sizeof(low)) {
                memcpy(low, value, len);
                low[len] = '\0';
                high = dash ? dash + 1 : low;
        }
        if (len >= sizeof(low) || parse_uint(low, 100, 599, &min) < 0 ||
            parse_uint(high, 100, 599, &max) < 0)
                return conf_reason(reason, size,
                                   "must be a status code or a range such as 200-399, within "
                                   "100..599");
        if (min > max)
                return conf_reason(reason, size, "the range is reversed");
        c->health_expect_min = min;
        c->health_expect_max = max;
        return 0;
}

static bool config_is_loopback(const struct netaddr *a)
{
        if (a->u.sa.sa_family == AF_INET)
                return (ntohl(a->u.in.sin_addr.s_addr) >> 24) == 127;
        if (a->u.sa.sa_family == AF_INET6)
                return IN6_IS_ADDR_LOOPBACK(&a->u.in6.sin6_addr);
        return false;
}

static int config_parse_admin(const struct conf_key *k, void *obj, const char *value, bool first,
                              char *reason, size_t size)
{
        struct config *c = obj;
        struct netaddr a;
        int r;

        if (strcmp(value, "off") == 0) {
                c->admin_enabled = false;
                return 0;
        }
        r = netaddr_parse(value, 0, false, &a);
        if (r == -ERANGE)
                return conf_reason(reason, size, "port must be between 1 and 65535");
        if (r < 0)
                return conf_reason(reason, size,
                                   "must be a loopback address with a port, e.g. "
                                   "127.0.0.1:9180 or [::1]:9180, or off");
        if (!config_is_loopback(&a))
                return conf_reason(reason, size,
                                   "must be a loopback address (127.0.0.0/8 or [::1]): the "
                                   "admin API has no authentication");
        c->admin = a;
        c->admin_enabled = true;
        return 0;
}

struct config_addr_list {
        struct netaddr items[CONFIG_MAX_BACKENDS];
        size_t n;
        size_t room;        /* entries left in the config's array */
        size_t limit;       /* the array's size, for messages */
        bool port_optional; /* backends: a missing port is stored as 0, config_finish() fills it */
};

static int config_addr_item(const char *entry, void *userdata, char *reason, size_t size)
{
        struct config_addr_list *l = userdata;
        struct netaddr a;
        int r;

        r = netaddr_parse(entry, 0, false, &a);
        if (r == -EINVAL && l->port_optional) {
                /* Parsing again with a stand-in default port succeeds only for the forms without a port. */
                r = netaddr_parse(entry, 1, false, &a);
                if (r >= 0)
                        netaddr_set_port(&a, 0);
        }
        if (r == -ERANGE)
                return conf_reason(reason, size, "'%s': port must be between 1 and 65535", entry);
        if (r < 0)
                return conf_reason(reason, size,
                                   "'%s' is not a numeric address%s, e.g. 10.0.0.1:80 or [::1]:80", entry,
                                   l->port_optional ? "" : " with a port");
        if (l->n >= l->room)
                return conf_reason(reason, size, "too many addresses (at most %zu)", l->limit);
        l->items[l->n++] = a;
        return 0;
}

/* Parses an address list into <l> and merges it into <array>/<n> (replacing when <first>). */
static int config_parse_addr_list(struct config_addr_list *l, struct netaddr *array, size_t *n,
                                  const char *value, bool first, char *reason, size_t size)
{
        size_t base = first ? 0 : *n;
        int r;

        l->room = l->limit - MIN(base, l->limit);
        if (value[0] != '\0') {
                r = conf_split(value, config_addr_item, l, reason, size);
                if (r < 0)
                        return r;
        }
        memcpy(array + base, l->items, l->n * sizeof(l->items[0]));
        *n = base + l->n;
        return 0;
}

struct config_listen_list {
        struct netaddr items[CONFIG_MAX_LISTEN];
        bool tls[CONFIG_MAX_LISTEN], redirect[CONFIG_MAX_LISTEN];
        size_t n, room;
};

/* "ADDR:PORT", "ADDR:PORT tls" or "ADDR:PORT redirect". */
static int config_listen_item(const char *entry, void *userdata, char *reason, size_t size)
{
        struct config_listen_list *l = userdata;
        char addr[CONF_ITEM_MAX];
        size_t len = strcspn(entry, " \t");
        const char *flag = entry + len;
        struct netaddr a;
        int r;

        memcpy(addr, entry, len);
        addr[len] = '\0';
        flag += strspn(flag, " \t");
        if (flag[0] != '\0' && strcmp(flag, "tls") != 0 && strcmp(flag, "redirect") != 0)
                return conf_reason(reason, size, "'%s': unknown option '%s' (known: tls, redirect)", entry,
                                   flag);
        r = netaddr_parse(addr, 0, false, &a);
        if (r == -ERANGE)
                return conf_reason(reason, size, "'%s': port must be between 1 and 65535", entry);
        if (r < 0)
                return conf_reason(reason, size,
                                   "'%s' is not a numeric address with a port, e.g. 0.0.0.0:80, "
                                   "0.0.0.0:443 tls or [::]:80 redirect",
                                   entry);
        if (l->n >= l->room)
                return conf_reason(reason, size, "too many addresses (at most %d)", CONFIG_MAX_LISTEN);
        l->tls[l->n] = strcmp(flag, "tls") == 0;
        l->redirect[l->n] = strcmp(flag, "redirect") == 0;
        l->items[l->n++] = a;
        return 0;
}

static int config_parse_listen(const struct conf_key *k, void *obj, const char *value, bool first,
                               char *reason, size_t size)
{
        struct config *c = obj;
        struct config_listen_list l = {0};
        size_t base = first ? 0 : MIN(c->n_listen, (size_t)CONFIG_MAX_LISTEN);
        int r;

        if (value[0] == '\0')
                return conf_reason(reason, size, "needs at least one address, e.g. 0.0.0.0:80");
        l.room = CONFIG_MAX_LISTEN - base;
        r = conf_split(value, config_listen_item, &l, reason, size);
        if (r < 0)
                return r;
        memcpy(c->listen + base, l.items, l.n * sizeof(l.items[0]));
        memcpy(c->listen_tls + base, l.tls, l.n * sizeof(l.tls[0]));
        memcpy(c->listen_redirect + base, l.redirect, l.n * sizeof(l.redirect[0]));
        c->n_listen = base + l.n;
        return 0;
}

static int config_parse_backends(const struct conf_key *k, void *obj, const char *value, bool first,
                                 char *reason, size_t size)
{
        struct config *c = obj;
        struct config_addr_list l = {.limit = CONFIG_MAX_BACKENDS, .port_optional = true};

        return config_parse_addr_list(&l, c->backends, &c->n_backends, value, first, reason, size);
}

static int config_parse_lease_peers(const struct conf_key *k, void *obj, const char *value, bool first,
                                    char *reason, size_t size)
{
        struct config *c = obj;
        struct config_addr_list l = {.limit = CONFIG_MAX_LEASE_PEERS};

        return config_parse_addr_list(&l, c->lease_peers, &c->n_lease_peers, value, first, reason, size);
}

/* [lease] listen: "" (off) or one numeric address with a port. */
static int config_parse_lease_listen(const struct conf_key *k, void *obj, const char *value, bool first,
                                     char *reason, size_t size)
{
        struct config *c = obj;
        struct netaddr a;
        int r;

        if (value[0] == '\0') {
                c->lease_listen_set = false;
                return 0;
        }
        r = netaddr_parse(value, 0, false, &a);
        if (r == -ERANGE)
                return conf_reason(reason, size, "port must be between 1 and 65535");
        if (r < 0)
                return conf_reason(reason, size, "must be empty or a numeric address with a port, e.g. "
                                                 "0.0.0.0:9181");
        c->lease_listen = a;
        c->lease_listen_set = true;
        return 0;
}

struct config_cidr_list {
        struct netaddr_cidr items[CONFIG_MAX_NETWORKS];
        size_t n, room;
};

static int config_cidr_item(const char *entry, void *userdata, char *reason, size_t size)
{
        struct config_cidr_list *l = userdata;
        struct netaddr_cidr cidr;
        int r;

        r = netaddr_cidr_parse(entry, &cidr);
        if (r == -ERANGE)
                return conf_reason(reason, size, "'%s': prefix longer than the address", entry);
        if (r < 0)
                return conf_reason(
                        reason, size,
                        "'%s' is not a network such as 10.0.0.0/16 or ::1/128 (host bits must be 0)", entry);
        if (l->n >= l->room)
                return conf_reason(reason, size, "too many networks (at most %d)", CONFIG_MAX_NETWORKS);
        l->items[l->n++] = cidr;
        return 0;
}

static int config_parse_networks(const struct conf_key *k, void *obj, const char *value, bool first,
                                 char *reason, size_t size)
{
        struct config *c = obj;
        struct config_cidr_list l = {0};
        size_t base = first ? 0 : c->n_networks;
        int r;

        l.room = CONFIG_MAX_NETWORKS - MIN(base, (size_t)CONFIG_MAX_NETWORKS);
        if (value[0] != '\0') {
                r = conf_split(value, config_cidr_item, &l, reason, size);
                if (r < 0)
                        return r;
        }
        memcpy(c->networks + base, l.items, l.n * sizeof(l.items[0]));
        c->n_networks = base + l.n;
        return 0;
}

/* ---- string keys: k->max is the size of the field ---- */

static char *config_string(struct config *c, const struct conf_key *k)
{
        return (char *)c + k->offset;
}

static int config_store_string(const struct conf_key *k, struct config *c, const char *value, char *reason,
                               size_t size)
{
        size_t len = strlen(value);

        if (len >= k->max)
                return conf_reason(reason, size, "longer than %" PRIu64 " bytes", k->max - 1);
        memcpy(config_string(c, k), value, len + 1);
        return 0;
}

/* Printable ASCII without blanks: identifiers such as ami-0abc, subnet-0abc, us-east-1, ARNs. */
static bool config_is_word(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
                        return false;
        return true;
}

static int config_parse_word(const struct conf_key *k, void *obj, const char *value, bool first,
                             char *reason, size_t size)
{
        struct config *c = obj;
        if (!config_is_word(value))
                return conf_reason(reason, size, "only printable ASCII without blanks is allowed");
        return config_store_string(k, c, value, reason, size);
}

static int config_parse_dns_name(const struct conf_key *k, void *obj, const char *value, bool first,
                                 char *reason, size_t size)
{
        struct config *c = obj;
        if (value[0] && !parse_dns_name_ok(value))
                return conf_reason(reason, size, "expected a DNS name such as web.lbd.internal");
        return config_store_string(k, c, value, reason, size);
}

static int config_parse_text(const struct conf_key *k, void *obj, const char *value, bool first,
                             char *reason, size_t size)
{
        struct config *c = obj;
        if (!conf_is_printable(value))
                return conf_reason(reason, size, "control characters are not allowed");
        return config_store_string(k, c, value, reason, size);
}

bool config_lease_name_char(char ch)
{
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
               ch == '_' || ch == '-';
}

/* [lease] name and pool: "" (name only) or 1..63 of config_lease_name_char(). */
static int config_parse_lease_name(const struct conf_key *k, void *obj, const char *value, bool first,
                                   char *reason, size_t size)
{
        struct config *c = obj;

        for (const char *p = value; *p; p++)
                if (!config_lease_name_char(*p))
                        return conf_reason(reason, size, "only ASCII letters, digits, '.', '_' and '-' are allowed");
        return config_store_string(k, c, value, reason, size);
}

/* "" or an absolute path. */
static int config_parse_abs_path(const struct conf_key *k, void *obj, const char *value, bool first,
                                 char *reason, size_t size)
{
        struct config *c = obj;
        if (value[0] != '\0' && (value[0] != '/' || !conf_is_printable(value)))
                return conf_reason(reason, size, "must be an absolute file path");
        return config_store_string(k, c, value, reason, size);
}

static int config_parse_url(const struct conf_key *k, void *obj, const char *value, bool first, char *reason,
                            size_t size)
{
        struct config *c = obj;
        if (value[0] != '\0' &&
            ((strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0) ||
             !config_is_word(value) || strlen(value) <= strlen("https://")))
                return conf_reason(reason, size, "must be an http:// or https:// URL");
        return config_store_string(k, c, value, reason, size);
}

static int config_parse_tag(const struct conf_key *k, void *obj, const char *value, bool first, char *reason,
                            size_t size)
{
        struct config *c = obj;
        const char *eq = strchr(value, '=');
        size_t key_len = eq ? (size_t)(eq - value) : 0;

        if (!eq || key_len == 0)
                return conf_reason(reason, size, "must be KEY=VALUE, e.g. lbd:pool=main");
        if (!conf_is_printable(value))
                return conf_reason(reason, size, "control characters are not allowed");
        if (key_len >= sizeof(c->ec2_tag_key))
                return conf_reason(reason, size, "the key is longer than %zu bytes",
                                   sizeof(c->ec2_tag_key) - 1);
        if (strlen(eq + 1) >= sizeof(c->ec2_tag_value))
                return conf_reason(reason, size, "the value is longer than %zu bytes",
                                   sizeof(c->ec2_tag_value) - 1);
        if (strncasecmp(value, "aws:", 4) == 0)
                return conf_reason(reason, size, "keys starting with 'aws:' are reserved by AWS");
        memcpy(c->ec2_tag_key, value, key_len);
        c->ec2_tag_key[key_len] = '\0';
        memcpy(c->ec2_tag_value, eq + 1, strlen(eq + 1) + 1);
        return 0;
}

/* A list of words ([ec2] security_groups, subnets): at most <max> of them. */
struct config_group_list {
        char items[CONFIG_MAX_SECURITY_GROUPS][sizeof(((struct config *)0)->ec2_security_groups[0])];
        size_t n, max;
        const char *what;
};
_Static_assert(CONFIG_MAX_SUBNETS <= CONFIG_MAX_SECURITY_GROUPS, "a subnet list fits a word list");
_Static_assert(sizeof(((struct config *)0)->ec2_subnets[0]) ==
                       sizeof(((struct config *)0)->ec2_security_groups[0]),
               "subnets and security groups are words of one size");

static int config_group_item(const char *entry, void *userdata, char *reason, size_t size)
{
        struct config_group_list *l = userdata;

        if (!config_is_word(entry))
                return conf_reason(reason, size, "'%s': only printable ASCII without blanks is allowed",
                                   entry);
        if (strlen(entry) >= sizeof(l->items[0]))
                return conf_reason(reason, size, "'%.32s...' is too long", entry);
        if (l->n >= l->max)
                return conf_reason(reason, size, "too many %s (at most %zu)", l->what, l->max);
        for (size_t i = 0; i < l->n; i++)
                if (strcmp(l->items[i], entry) == 0)
                        return conf_reason(reason, size, "'%s' is listed twice", entry);
        memcpy(l->items[l->n++], entry, strlen(entry) + 1);
        return 0;
}

/* Parses <value> into <items> after the <*n> already there (none when <first>). Returns 0 or -EINVAL. */
static int config_parse_words(const char *value, bool first, const char *what, char (*items)[64], size_t max,
                              size_t *n, char *reason, size_t size)
{
        struct config_group_list l = {.max = MIN(max, ELEMENTSOF(l.items)), .what = what};
        size_t base = first ? 0 : *n;
        int r;

        if (value[0] != '\0') {
                r = conf_split(value, config_group_item, &l, reason, size);
                if (r < 0)
                        return r;
        }
        if (base + l.n > max)
                return conf_reason(reason, size, "too many %s (at most %zu)", what, max);
        memcpy(items + base, l.items, l.n * sizeof(l.items[0]));
        *n = base + l.n;
        return 0;
}

static int config_parse_subnets(const struct conf_key *k, void *obj, const char *value, bool first,
                                char *reason, size_t size)
{
        struct config *c = obj;

        return config_parse_words(value, first, "subnets", c->ec2_subnets, ELEMENTSOF(c->ec2_subnets),
                                  &c->n_ec2_subnets, reason, size);
}

/* Like the other lists: the first occurrence in a source replaces, later ones append. */
static int config_parse_security_groups(const struct conf_key *k, void *obj, const char *value, bool first,
                                        char *reason, size_t size)
{
        struct config *c = obj;

        return config_parse_words(value, first, "security groups", c->ec2_security_groups,
                                  ELEMENTSOF(c->ec2_security_groups), &c->n_ec2_security_groups, reason, size);
}

struct config_upgrade_list {
        char out[CONFIG_UPGRADES_MAX];
        size_t len;
};

/* An upgrade protocol (RFC 9110 7.8): token [ "/" token ]. */
static int config_upgrade_item(const char *entry, void *userdata, char *reason, size_t size)
{
        struct config_upgrade_list *l = userdata;
        size_t n = strlen(entry), name = strcspn(entry, "/");

        if (name == 0 || !http_is_token(entry, name) ||
            (name < n && (name + 1 == n || !http_is_token(entry + name + 1, n - name - 1))))
                return conf_reason(reason, size, "'%s' is not a protocol such as websocket or name/version",
                                   entry);
        if (l->len + (l->len > 0) + n >= sizeof(l->out))
                return conf_reason(reason, size, "the list is longer than %zu bytes", sizeof(l->out) - 1);
        if (l->len > 0)
                l->out[l->len++] = ',';
        memcpy(l->out + l->len, entry, n + 1);
        l->len += n;
        return 0;
}

static int config_parse_upgrades(const struct conf_key *k, void *obj, const char *value, bool first,
                                 char *reason, size_t size)
{
        struct config *c = obj;
        struct config_upgrade_list l = {0};
        int r;

        if (value[0] != '\0' && strcmp(value, "off") != 0) {
                r = conf_split(value, config_upgrade_item, &l, reason, size);
                if (r < 0)
                        return r;
        }
        memcpy(c->upgrades, l.out, l.len + 1);
        return 0;
}

/* "" (not set) or an address with a port. */
static int config_parse_upstream_into(struct netaddr *addr, bool *set, const char *value, char *reason,
                                      size_t size)
{
        struct netaddr a;
        int r;

        if (value[0] == '\0') {
                *set = false;
                return 0;
        }
        r = netaddr_parse(value, 0, false, &a);
        if (r == -ERANGE)
                return conf_reason(reason, size, "port must be between 1 and 65535");
        if (r < 0)
                return conf_reason(reason, size,
                                   "must be a numeric address with a port, e.g. 10.0.1.20:8080");
        *addr = a;
        *set = true;
        return 0;
}

static int config_parse_ec2_upstream(const struct conf_key *k, void *obj, const char *value, bool first,
                                     char *reason, size_t size)
{
        struct config *c = obj;
        return config_parse_upstream_into(&c->ec2_upstream, &c->ec2_upstream_set, value, reason, size);
}

static int config_parse_local_upstream(const struct conf_key *k, void *obj, const char *value, bool first,
                                       char *reason, size_t size)
{
        struct config *c = obj;
        return config_parse_upstream_into(&c->local_upstream, &c->local_upstream_set, value, reason, size);
}

static int config_parse_base_port(const struct conf_key *k, void *obj, const char *value, bool first,
                                  char *reason, size_t size)
{
        struct config *c = obj;
        uint64_t v;

        if (parse_uint(value, 1, 65535, &v) < 0)
                return conf_reason(reason, size, "must be a port number between 1 and 65535");
        c->local_base_port = (uint16_t)v;
        return 0;
}

static const char *const config_local_placeholders[] = {
        "{lbd}", "{port}", "{address}", "{upstream}", "{index}",
};

static int config_parse_local_command(const struct conf_key *k, void *obj, const char *value, bool first,
                                      char *reason, size_t size)
{
        struct config *c = obj;
        bool any = false;

        for (const char *p = value; *p; p++) {
                if (*p != ' ' && *p != '\t')
                        any = true;
                if (*p == '}')
                        return conf_reason(reason, size, "a '}' without its '{'");
                if (*p == '{') {
                        size_t i;

                        for (i = 0; i < ELEMENTSOF(config_local_placeholders); i++) {
                                const char *name = config_local_placeholders[i];

                                if (strncmp(p, name, strlen(name)) == 0)
                                        break;
                        }
                        if (i == ELEMENTSOF(config_local_placeholders))
                                return conf_reason(reason, size,
                                                   "unknown placeholder at '%.16s' (known: {lbd} {port} "
                                                   "{address} {upstream} {index})",
                                                   p);
                        p += strlen(config_local_placeholders[i]) - 1;
                }
        }
        if (!any)
                return conf_reason(reason, size, "must name a program to run");
        return config_parse_text(k, c, value, first, reason, size);
}

static int config_parse_bool(const struct conf_key *k, void *obj, const char *value, bool first,
                             char *reason, size_t size)
{
        bool *field = (bool *)((char *)obj + k->offset);

        if (parse_bool(value, field) < 0)
                return conf_reason(reason, size, "must be on or off");
        return 0;
}

static const char *const config_tls_profile_names[] = {
        [TLS_PROFILE_INTERMEDIATE] = "intermediate",
        [TLS_PROFILE_MODERN] = "modern",
};

static int config_parse_tls_profile(const struct conf_key *k, void *obj, const char *value, bool first,
                                    char *reason, size_t size)
{
        struct config *c = obj;
        int r;

        r = config_parse_choice(value, config_tls_profile_names, ELEMENTSOF(config_tls_profile_names), reason,
                                size);
        if (r < 0)
                return r;
        c->tls_profile = (enum tls_profile)r;
        return 0;
}

/* "CERT.pem [KEY.pem]": one entry per occurrence (paths are too long for a comma list); the key defaults to
 * the certificate's file. Like the lists, the first occurrence in a source replaces, later ones append;
 * "" clears. */
static int config_parse_certificate(const struct conf_key *k, void *obj, const char *value, bool first,
                                    char *reason, size_t size)
{
        struct config *c = obj;
        size_t base = first ? 0 : MIN(c->n_certs, (size_t)CONFIG_MAX_CERTS);
        size_t cert_len = strcspn(value, " \t");
        const char *key = value + cert_len;
        struct config_cert *e;

        if (value[0] == '\0') {
                c->n_certs = base;
                return 0;
        }
        key += strspn(key, " \t");
        if (value[0] != '/' || (key[0] != '\0' && key[0] != '/') || key[strcspn(key, " \t")] != '\0' ||
            !conf_is_printable(value))
                return conf_reason(reason, size,
                                   "must be an absolute certificate path, then optionally the key's "
                                   "(/etc/lbd/tls/site.pem /etc/lbd/tls/site.key)");
        if (cert_len >= CONFIG_PATH_MAX || strlen(key) >= CONFIG_PATH_MAX)
                return conf_reason(reason, size, "path longer than %d bytes", CONFIG_PATH_MAX - 1);
        if (base >= CONFIG_MAX_CERTS)
                return conf_reason(reason, size, "too many certificates (at most %d)", CONFIG_MAX_CERTS);
        e = &c->certs[base];
        memcpy(e->cert, value, cert_len);
        e->cert[cert_len] = '\0';
        if (key[0] != '\0')
                memcpy(e->key, key, strlen(key) + 1);
        else
                memcpy(e->key, e->cert, cert_len + 1);
        c->n_certs = base + 1;
        return 0;
}

/* "NAME CRON min=N max=N desired=N" (schedule.h): one action per occurrence; like the lists, the first
 * occurrence in a source replaces, later ones append; "" clears. Names are unique. */
static int config_parse_schedule(const struct conf_key *k, void *obj, const char *value, bool first,
                                 char *reason, size_t size)
{
        struct config *c = obj;
        size_t base = first ? 0 : MIN(c->n_schedule, (size_t)SCHEDULE_MAX);
        struct schedule_action a;
        int r;

        if (value[0] == '\0') {
                c->n_schedule = base;
                return 0;
        }
        if (base >= SCHEDULE_MAX)
                return conf_reason(reason, size, "too many actions (at most %d)", SCHEDULE_MAX);
        r = schedule_parse_action(value, &a, reason, size);
        if (r < 0)
                return r;
        for (size_t i = 0; i < base; i++)
                if (strcmp(c->schedule[i].name, a.name) == 0)
                        return conf_reason(reason, size, "a second action named '%s'", a.name);
        c->schedule[base] = a;
        c->n_schedule = base + 1;
        return 0;
}

/* One key per row: the table reads better unformatted. */
/* clang-format off */
/* DURATION(..., positive): positive is 1 when the duration must be greater than 0, else 0. */
#define DURATION(s, k, d, field, positive) { s, k, d, conf_parse_duration, U64(field), positive, 0 }
#define NUMBER(s, k, d, field, lo, hi)    { s, k, d, conf_parse_number, U64(field), lo, hi }
#define CONFIG_LOCAL_COMMAND "{lbd} --listen {address} --backend {upstream} --admin off --access-log off"
/* A char array field, parsed by <parser>; its size goes into max. */
#define STRING(s, k, d, field, parser) \
        { s, k, d, parser, CONF_FIELD(struct config, field, char[sizeof(((struct config *)0)->field)]), 0, \
          sizeof(((struct config *)0)->field) }

static const struct conf_key config_keys[] = {
        { "lbd", "listen", "0.0.0.0:80", config_parse_listen, 0, 0, 0 },
        { "lbd", "admin", "127.0.0.1:9180", config_parse_admin, 0, 0, 0 },
        { "lbd", "balance", "round-robin", config_parse_balance, 0, 0, 0 },
        { "lbd", "access_log", "stderr", config_parse_access_log, PATH(access_log), 0, 0 },
        NUMBER("lbd", "max_connections", "10000", max_connections, 1, 1000000),
        DURATION("lbd", "drain_timeout", "30s", drain_timeout_usec, 0),
        { "lbd", "threads", "1", config_parse_threads, U64(threads), 1, CONFIG_THREADS_MAX },
        { "lbd", "upgrades", "websocket", config_parse_upgrades, 0, 0, 0 },

        { "tls", "certificate", "", config_parse_certificate, 0, 0, 0 },
        { "schedule", "action", "", config_parse_schedule, 0, 0, 0 },
        { "tls", "profile", "intermediate", config_parse_tls_profile, 0, 0, 0 },
        { "tls", "tickets", "on", config_parse_bool, CONF_FIELD(struct config, tls_tickets, bool), 0, 0 },
        DURATION("tls", "ticket_rotate", "1h", tls_ticket_rotate_usec, 1),
        NUMBER("tls", "session_cache", "20000", tls_session_cache, 0, 1000000),
        { "tls", "strict_sni", "off", config_parse_bool, CONF_FIELD(struct config, tls_strict_sni, bool), 0, 0 },
        NUMBER("tls", "hsts", "0", tls_hsts_max_age, 0, CONFIG_HSTS_MAX),
        STRING("tls", "acme_challenge_dir", "", acme_dir, config_parse_abs_path),
        { "tls", "backend", "off", config_parse_bool, CONF_FIELD(struct config, backend_tls, bool), 0, 0 },
        STRING("tls", "backend_ca", "", backend_ca, config_parse_abs_path),
        STRING("tls", "backend_name", "", backend_name, config_parse_word),

        DURATION("timeouts", "client_header", "10s", client_header_timeout_usec, 1),
        DURATION("timeouts", "client_idle", "60s", client_idle_timeout_usec, 1),
        DURATION("timeouts", "client_body", "30s", client_body_timeout_usec, 1),
        DURATION("timeouts", "connect", "3s", connect_timeout_usec, 1),
        DURATION("timeouts", "backend", "30s", backend_timeout_usec, 1),
        DURATION("timeouts", "backend_idle", "10s", backend_idle_timeout_usec, 1),
        DURATION("timeouts", "tunnel", "1h", tunnel_timeout_usec, 1),

        { "limits", "max_header_size", "16k", conf_parse_size, U64(max_header_size), 1024, 1024 * 1024 },
        { "limits", "max_body_size", "1m", conf_parse_size, U64(max_body_size), 0, UINT64_MAX },
        NUMBER("limits", "retries", "2", retries, 0, 10),
        NUMBER("limits", "max_idle_per_backend", "64", max_idle_per_backend, 0, 100000),

        { "health", "path", "/healthcheck", config_parse_http_path, PATH(health_path), 0, 0 },
        DURATION("health", "interval", "1s", health_interval_usec, 1),
        DURATION("health", "timeout", "1s", health_timeout_usec, 1),
        NUMBER("health", "rise", "2", health_rise, 1, 100),
        NUMBER("health", "fall", "3", health_fall, 1, 100),
        { "health", "expect", "200-399", config_parse_expect, 0, 0, 0 },
        NUMBER("health", "passive_fall", "3", health_passive_fall, 0, 1000),
        NUMBER("health", "passive_max_down", "50", health_passive_max_down, 0, 100),

        { "pool", "provider", "static", config_parse_provider, 0, 0, 0 },
        NUMBER("pool", "desired", "3", desired, 0, 1000),
        { "pool", "port", "80", config_parse_port, 0, 0, 0 },
        { "pool", "networks", "", config_parse_networks, 0, 0, 0 },
        { "pool", "backends", "", config_parse_backends, 0, 0, 0 },
        DURATION("pool", "grace", "120s", grace_usec, 0),
        DURATION("pool", "poll", "10s", poll_usec, 1),
        NUMBER("pool", "max_replacements", "3", max_replacements, 0, 1000),
        DURATION("pool", "replacement_window", "5m", replacement_window_usec, 1),
        NUMBER("pool", "refresh_min_healthy", "100", refresh_min_healthy, 0, 100),
        DURATION("pool", "refresh_warmup", "30s", refresh_warmup_usec, 0),
        DURATION("pool", "refresh_timeout", "10m", refresh_timeout_usec, 1),
        { "pool", "refresh_on_failure", "rollback", config_parse_refresh_on_failure, 0, 0, 0 },
        DURATION("pool", "zone_backoff", "1m", zone_backoff_usec, 1),
        NUMBER("pool", "min", "0", pool_min, 0, 1000),
        NUMBER("pool", "max", "0", pool_max, 0, 1000),
        NUMBER("pool", "target_rps", "0", target_rps, 0, 1000000),
        NUMBER("pool", "target_inflight", "0", target_inflight, 0, 1000000),
        DURATION("pool", "target_p90", "0", target_p90_usec, 0),
        DURATION("pool", "scale_out_after", "30s", scale_out_after_usec, 1),
        DURATION("pool", "scale_in_after", "5m", scale_in_after_usec, 1),
        DURATION("pool", "scale_in_cooldown", "5m", scale_in_cooldown_usec, 0),

        STRING("ec2", "region", "", ec2_region, config_parse_word),
        STRING("ec2", "endpoint", "", ec2_endpoint, config_parse_url),
        STRING("ec2", "image", "", ec2_image, config_parse_word),
        STRING("ec2", "launch_template", "", ec2_launch_template, config_parse_word),
        STRING("ec2", "instance_type", "t3.micro", ec2_instance_type, config_parse_word),
        STRING("ec2", "subnet", "", ec2_subnet, config_parse_word),
        { "ec2", "subnets", "", config_parse_subnets, 0, 0, 0 },
        { "ec2", "security_groups", "", config_parse_security_groups, 0, 0, 0 },
        STRING("ec2", "key_name", "", ec2_key_name, config_parse_text),
        STRING("ec2", "instance_profile", "", ec2_instance_profile, config_parse_word),
        STRING("ec2", "user_data", "", ec2_user_data, config_parse_abs_path),
        { "ec2", "upstream", "", config_parse_ec2_upstream, 0, 0, 0 },
        STRING("ec2", "upstream_ca", "", ec2_upstream_ca, config_parse_abs_path),
        STRING("ec2", "upstream_name", "", ec2_upstream_name, config_parse_dns_name),
        STRING("ec2", "relay_tls_cert", "", ec2_relay_tls_cert, config_parse_abs_path),
        STRING("ec2", "relay_tls_key", "", ec2_relay_tls_key, config_parse_abs_path),
        { "ec2", "tag", "lbd:pool=main", config_parse_tag, 0, 0, 0 },
        STRING("ec2", "credentials_file", "", ec2_credentials_file, config_parse_abs_path),
        STRING("ec2", "profile", "", ec2_profile, config_parse_word),
        STRING("ec2", "previous_settings", "", ec2_previous_settings, config_parse_abs_path),

        STRING("lease", "conninfo_file", "", lease_conninfo_file, config_parse_abs_path),
        STRING("lease", "name", "", lease_name, config_parse_lease_name),
        STRING("lease", "pool", "main", lease_pool, config_parse_lease_name),
        { "lease", "duration", "15s", conf_parse_duration, U64(lease_duration_usec), USEC_PER_SEC, 0 },
        DURATION("lease", "renew", "3s", lease_renew_usec, 1),
        DURATION("lease", "margin", "3s", lease_margin_usec, 1),
        DURATION("lease", "timeout", "2s", lease_timeout_usec, 1),
        STRING("lease", "elastic_ip", "", lease_elastic_ip, config_parse_word),
        STRING("lease", "instance_id", "", lease_instance_id, config_parse_word),
        { "lease", "listen", "", config_parse_lease_listen, 0, 0, 0 },
        { "lease", "peers", "", config_parse_lease_peers, 0, 0, 0 },

        STRING("local", "command", CONFIG_LOCAL_COMMAND, local_command, config_parse_local_command),
        { "local", "base_port", "18100", config_parse_base_port, 0, 0, 0 },
        { "local", "upstream", "", config_parse_local_upstream, 0, 0, 0 },
        STRING("local", "state_file", "", local_state_file, config_parse_abs_path),
};
/* clang-format on */

static const struct conf_table config_table = {
        .keys = config_keys,
        .n_keys = ELEMENTSOF(config_keys),
        .outside_reason = "key outside any section, put it under a [section] header",
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

/* [lease] name left empty: the host name, its characters made fit. */
static void config_finish_lease(struct config *c)
{
        char host[256] = "";
        size_t n = 0;

        if (!config_lease_enabled(c) || c->lease_name[0] != '\0')
                return;
        if (gethostname(host, sizeof(host) - 1) < 0)
                host[0] = '\0';
        for (; host[n] && n + 1 < sizeof(c->lease_name); n++)
                c->lease_name[n] = config_lease_name_char(host[n]) ? host[n] : '-';
        c->lease_name[n] = '\0';
        if (n == 0)
                (void)snprintf(c->lease_name, sizeof(c->lease_name), "lbd");
}

void config_finish(struct config *c)
{
        config_finish_lease(c);
        for (size_t i = 0; i < MIN(c->n_backends, (size_t)CONFIG_MAX_BACKENDS); i++)
                if (netaddr_port(&c->backends[i]) == 0)
                        netaddr_set_port(&c->backends[i], c->port);
}

bool config_in_networks(const struct config *c, const struct netaddr *a)
{
        if (c->n_networks == 0)
                return true;
        for (size_t i = 0; i < MIN(c->n_networks, (size_t)CONFIG_MAX_NETWORKS); i++)
                if (netaddr_cidr_contains(&c->networks[i], a))
                        return true;
        return false;
}

bool config_has_tls(const struct config *c)
{
        for (size_t i = 0; i < MIN(c->n_listen, (size_t)CONFIG_MAX_LISTEN); i++)
                if (c->listen_tls[i])
                        return true;
        return false;
}

static bool config_has_plain(const struct config *c)
{
        for (size_t i = 0; i < MIN(c->n_listen, (size_t)CONFIG_MAX_LISTEN); i++)
                if (!c->listen_tls[i])
                        return true;
        return false;
}

static int config_validate_listen(const struct config *c)
{
        size_t n = MIN(c->n_listen, (size_t)CONFIG_MAX_LISTEN);
        char buf[NETADDR_STRLEN];
        int r = 0;

        if (n == 0)
                r = conf_invalid(c->path, "lbd", "listen", "at least one listen address is needed");
        for (size_t i = 0; i < n; i++) {
                (void)netaddr_format(&c->listen[i], buf, sizeof(buf));
                for (size_t j = 0; j < i; j++)
                        if (netaddr_equal(&c->listen[i], &c->listen[j])) {
                                r = conf_invalid(c->path, "lbd", "listen", "%s is given twice", buf);
                                break;
                        }
                if (c->admin_enabled && netaddr_equal(&c->listen[i], &c->admin))
                        r = conf_invalid(c->path, "lbd", "admin", "%s is also a listen address", buf);
        }
        if (config_has_tls(c) && c->n_certs == 0)
                r = conf_invalid(c->path, "tls", "certificate",
                                 "a listener is tls: at least one certificate is needed");
        if (c->acme_dir[0] && !config_has_plain(c))
                r = conf_invalid(c->path, "tls", "acme_challenge_dir",
                                 "the challenge is served on a plain listener, and none is configured");
        if (c->admin_enabled && !config_is_loopback(&c->admin))
                r = conf_invalid(c->path, "lbd", "admin",
                                 "must be a loopback address (127.0.0.0/8 or [::1])");
        return r;
}

static int config_validate_pool(const struct config *c)
{
        size_t n = MIN(c->n_backends, (size_t)CONFIG_MAX_BACKENDS);
        char buf[NETADDR_STRLEN];
        int r = 0;

        if (c->provider == PROVIDER_STATIC && n == 0)
                r = conf_invalid(c->path, "pool", "backends",
                                 "the static provider needs at least one backend");
        if (c->provider != PROVIDER_STATIC && n > 0)
                r = conf_invalid(c->path, "pool", "backends",
                                 "only the static provider uses it (provider is %s)",
                                 config_provider_name(c->provider));
        if (c->port == 0)
                r = conf_invalid(c->path, "pool", "port", "must be between 1 and 65535");
        if (c->pool_max > 0) {
                if (c->provider == PROVIDER_STATIC)
                        r = conf_invalid(c->path, "pool", "max",
                                         "scaling on demand needs a provider that launches (local or ec2)");
                if (c->pool_min > c->pool_max)
                        r = conf_invalid(c->path, "pool", "min", "must not exceed max (%" PRIu64 ")",
                                         c->pool_max);
                if (c->desired < c->pool_min || c->desired > c->pool_max)
                        r = conf_invalid(c->path, "pool", "desired",
                                         "the starting count must lie within min and max (%" PRIu64 "..%" PRIu64
                                         ")",
                                         c->pool_min, c->pool_max);
                if (c->target_rps == 0 && c->target_inflight == 0 && c->target_p90_usec == 0)
                        r = conf_invalid(c->path, "pool", "max",
                                         "scaling on demand needs target_rps, target_inflight or target_p90");
                if (c->target_p90_usec > 3600 * USEC_PER_SEC)
                        r = conf_invalid(c->path, "pool", "target_p90", "must be at most 1h");
                if (c->scale_out_after_usec > CONFIG_MAX_SCALE_WINDOW_SEC * USEC_PER_SEC)
                        r = conf_invalid(c->path, "pool", "scale_out_after", "must be at most %d s",
                                         CONFIG_MAX_SCALE_WINDOW_SEC);
                if (c->scale_in_after_usec > CONFIG_MAX_SCALE_WINDOW_SEC * USEC_PER_SEC)
                        r = conf_invalid(c->path, "pool", "scale_in_after", "must be at most %d s",
                                         CONFIG_MAX_SCALE_WINDOW_SEC);
        } else if (c->pool_min > 0 || c->target_rps > 0 || c->target_inflight > 0 || c->target_p90_usec > 0)
                r = conf_invalid(c->path, "pool", "max",
                                 "min, target_rps, target_inflight and target_p90 need max (scaling on demand)");
        for (size_t i = 0; i < c->n_schedule; i++) {
                const struct schedule_action *a = &c->schedule[i];

                if (c->provider == PROVIDER_STATIC)
                        r = conf_invalid(c->path, "schedule", "action",
                                         "'%s': scheduled changes need a provider that launches (local or ec2)",
                                         a->name);
                else if (c->pool_max == 0 && (a->min >= 0 || a->max >= 0))
                        r = conf_invalid(c->path, "schedule", "action",
                                         "'%s': min and max bound scaling on demand: set [pool] max, or schedule "
                                         "desired only",
                                         a->name);
        }

        for (size_t i = 0; i < n; i++) {
                const struct netaddr *b = &c->backends[i];

                if (netaddr_port(b) == 0) {
                        (void)netaddr_format_host(b, buf, sizeof(buf));
                        r = conf_invalid(c->path, "pool", "backends", "backend %s has no port", buf);
                        continue;
                }
                (void)netaddr_format(b, buf, sizeof(buf));
                if (!config_in_networks(c, b))
                        r = conf_invalid(c->path, "pool", "backends",
                                         "backend %s is outside [pool] networks", buf);
                for (size_t j = 0; j < i; j++)
                        if (netaddr_equal(b, &c->backends[j])) {
                                r = conf_invalid(c->path, "pool", "backends", "backend %s is listed twice",
                                                 buf);
                                break;
                        }
        }
        return r;
}

static int config_validate_local(const struct config *c)
{
        struct netaddr loopback;
        int r = 0;

        if (strstr(c->local_command, "{upstream}") && !c->local_upstream_set)
                r = conf_invalid(c->path, "local", "upstream",
                                 "the command uses {upstream}: set the address the backends relay to");
        if ((uint64_t)c->local_base_port + (c->desired > 0 ? c->desired - 1 : 0) > 65535)
                r = conf_invalid(c->path, "local", "base_port",
                                 "base_port + desired - 1 is beyond port 65535");
        if (netaddr_parse("127.0.0.1", c->local_base_port, false, &loopback) >= 0 &&
            !config_in_networks(c, &loopback))
                r = conf_invalid(c->path, "pool", "networks",
                                 "the local provider's backends listen on 127.0.0.1, outside "
                                 "[pool] networks");
        return r;
}

static int config_validate_ec2(const struct config *c)
{
        int r = 0;

        if (c->ec2_image[0] == '\0' && c->ec2_launch_template[0] == '\0')
                r = conf_invalid(c->path, "ec2", "image",
                                 "the ec2 provider needs an image or a launch_template");
        if (c->ec2_tag_key[0] == '\0')
                r = conf_invalid(c->path, "ec2", "tag",
                                 "the ec2 provider needs the pool's tag, e.g. lbd:pool=main");
        if (c->ec2_subnet[0] != '\0' && c->n_ec2_subnets > 0)
                r = conf_invalid(c->path, "ec2", "subnets",
                                 "set subnet (one subnet) or subnets (several), not both");
        /* The relays check the name only over TLS: a name alone would stop them at boot. */
        if (c->ec2_upstream_name[0] != '\0' && c->ec2_upstream_ca[0] == '\0')
                r = conf_invalid(c->path, "ec2", "upstream_name", "needs upstream_ca (the relays check it over TLS)");
        /* A relay listens with TLS only with both: one alone is a configuration mistake. */
        if ((c->ec2_relay_tls_cert[0] == '\0') != (c->ec2_relay_tls_key[0] == '\0'))
                r = conf_invalid(c->path, "ec2", c->ec2_relay_tls_cert[0] ? "relay_tls_cert" : "relay_tls_key",
                                 "relay_tls_cert and relay_tls_key go together (the relays' certificate and key)");
        return r;
}

static int config_validate_health(const struct config *c)
{
        int r = 0;

        if (c->health_interval_usec == 0)
                r = conf_invalid(c->path, "health", "interval", "must be greater than 0");
        if (c->health_timeout_usec == 0)
                r = conf_invalid(c->path, "health", "timeout", "must be greater than 0");
        if (c->health_rise < 1)
                r = conf_invalid(c->path, "health", "rise", "must be at least 1");
        if (c->health_fall < 1)
                r = conf_invalid(c->path, "health", "fall", "must be at least 1");
        if (c->health_expect_min < 100 || c->health_expect_max > 599 ||
            c->health_expect_min > c->health_expect_max)
                r = conf_invalid(c->path, "health", "expect", "must be a status range within 100..599");
        if (c->health_path[0] != '/')
                r = conf_invalid(c->path, "health", "path", "must start with '/'");
        return r;
}

bool config_lease_enabled(const struct config *c)
{
        return c->lease_conninfo_file[0] != '\0';
}

/* The lease's timing must leave the leader time to renew before it stops (lease.c). */
static int config_validate_lease(const struct config *c)
{
        int r = 0;

        if (!config_lease_enabled(c)) {
                if (c->lease_elastic_ip[0] != '\0')
                        r = conf_invalid(c->path, "lease", "elastic_ip",
                                         "needs conninfo_file: the address follows the lease's leader");
                if (c->lease_listen_set)
                        r = conf_invalid(c->path, "lease", "listen", "needs conninfo_file: it shows the lease");
                if (c->n_lease_peers > 0)
                        r = conf_invalid(c->path, "lease", "peers", "needs conninfo_file: they share the lease");
                return r;
        }
        if (c->lease_listen_set) {
                for (size_t i = 0; i < c->n_listen; i++)
                        if (netaddr_equal(&c->listen[i], &c->lease_listen))
                                r = conf_invalid(c->path, "lease", "listen", "is also an [lbd] listen address");
                if (c->admin_enabled && netaddr_equal(&c->admin, &c->lease_listen))
                        r = conf_invalid(c->path, "lease", "listen", "is also the admin address");
        }
        if (c->provider == PROVIDER_STATIC)
                r = conf_invalid(c->path, "lease", "conninfo_file",
                                 "the static provider never acts on the pool: a lease has nothing to guard");
        if (c->lease_duration_usec > 10 * 60 * USEC_PER_SEC)
                r = conf_invalid(c->path, "lease", "duration", "must be at most 10m");
        if (c->lease_margin_usec >= c->lease_duration_usec)
                r = conf_invalid(c->path, "lease", "margin", "must be shorter than duration");
        else if (c->lease_renew_usec + c->lease_timeout_usec >= c->lease_duration_usec - c->lease_margin_usec)
                r = conf_invalid(c->path, "lease", "renew",
                                 "renew + timeout must be shorter than duration - margin, so that the leader "
                                 "renews before it has to stop");
        if (c->lease_timeout_usec > c->lease_renew_usec)
                r = conf_invalid(c->path, "lease", "timeout", "must be at most renew");
        if (c->lease_elastic_ip[0] != '\0' && c->provider != PROVIDER_EC2)
                r = conf_invalid(c->path, "lease", "elastic_ip", "needs the ec2 provider");
        if (c->lease_elastic_ip[0] != '\0' && c->lease_instance_id[0] == '\0')
                r = conf_invalid(c->path, "lease", "instance_id",
                                 "elastic_ip needs this host's instance id (the installer writes it from the "
                                 "instance metadata)");
        return r;
}

int config_validate(const struct config *c)
{
        int r = 0;

        /* Run every check, so one run shows every problem. */
        if (config_validate_listen(c) < 0)
                r = -EINVAL;
        if (config_validate_pool(c) < 0)
                r = -EINVAL;
        if (config_validate_health(c) < 0)
                r = -EINVAL;
        if (c->provider == PROVIDER_LOCAL && config_validate_local(c) < 0)
                r = -EINVAL;
        if (c->provider == PROVIDER_EC2 && config_validate_ec2(c) < 0)
                r = -EINVAL;
        if (config_validate_lease(c) < 0)
                r = -EINVAL;
        if (c->max_connections == 0)
                r = conf_invalid(c->path, "lbd", "max_connections", "must be at least 1");
        if (c->backend_tls && c->backend_ca[0] == '\0')
                r = conf_invalid(c->path, "tls", "backend_ca",
                                 "backend = on needs the CA file the backends' certificates are checked against");
        return r;
}

const char *config_balance_name(enum balance_kind b)
{
        if ((size_t)b >= ELEMENTSOF(config_balance_names))
                return NULL;
        return config_balance_names[b];
}

const char *config_provider_name(enum provider_kind p)
{
        if ((size_t)p >= ELEMENTSOF(config_provider_names))
                return NULL;
        return config_provider_names[p];
}

const char *config_tls_profile_name(enum tls_profile t)
{
        if ((size_t)t >= ELEMENTSOF(config_tls_profile_names))
                return NULL;
        return config_tls_profile_names[t];
}
