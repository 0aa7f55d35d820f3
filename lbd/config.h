/* lbd's configuration: defaults, the INI file, and the checks that tie keys together.
 *
 * A struct config is a plain value: built by config_init(), filled by config_load_file() and by the
 * command line (main.c), checked by config_validate(), then handed to the running daemon. A reload builds
 * a new one and swaps it in only if it validates, so a bad edit never takes down a running lbd. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/netaddr.h"
#include "lbd/schedule.h"

#define CONFIG_THREADS_MAX 64 /* [lbd] threads at most (= POOL_LOOPS_MAX) */

#define CONFIG_MAX_LISTEN   8
#define CONFIG_MAX_LEASE_PEERS 8 /* [lease] peers */
#define CONFIG_MAX_BACKENDS 256
#define CONFIG_MAX_NETWORKS 32
#define CONFIG_MAX_SECURITY_GROUPS 32
#define CONFIG_MAX_SUBNETS  16 /* [ec2] subnets: one per zone */
#define CONFIG_MAX_SCALE_WINDOW_SEC 900 /* [pool] scale_out_after and scale_in_after at most */
#define CONFIG_PATH_MAX     1024
#define CONFIG_UPGRADES_MAX 256
#define CONFIG_MAX_CERTS    16
#define CONFIG_HSTS_MAX     63072000 /* two years, in seconds */

enum balance_kind {
        BALANCE_ROUND_ROBIN,
        BALANCE_LEAST_CONN,
        BALANCE_P2C,
};

enum tls_profile {
        TLS_PROFILE_INTERMEDIATE, /* TLS 1.2 (ECDHE, AEAD) and 1.3 */
        TLS_PROFILE_MODERN,       /* TLS 1.3 only */
};

/* One [tls] certificate entry: a PEM certificate (chain after it) and its key, which may be the same file. */
struct config_cert {
        char cert[CONFIG_PATH_MAX];
        char key[CONFIG_PATH_MAX];
};

enum provider_kind {
        PROVIDER_STATIC,
        PROVIDER_LOCAL,
        PROVIDER_EC2,
};

struct config {
        /* [lbd] */
        struct netaddr listen[CONFIG_MAX_LISTEN];
        bool listen_tls[CONFIG_MAX_LISTEN];      /* "ADDR:PORT tls": terminates TLS ([tls]) */
        bool listen_redirect[CONFIG_MAX_LISTEN]; /* "ADDR:PORT redirect": answers 308 to https:// */
        size_t n_listen;
        struct netaddr admin;
        bool admin_enabled;             /* admin = off disables it */
        enum balance_kind balance;
        char access_log[CONFIG_PATH_MAX]; /* "stderr", "off", or a file path */
        uint64_t max_connections;       /* client connections at once; beyond it, accept waits */
        uint64_t drain_timeout_usec;    /* SIGTERM: how long in-flight requests may take to finish */
        uint64_t threads;               /* data plane event loops, 1..CONFIG_THREADS_MAX ("auto" resolved) */
        char upgrades[CONFIG_UPGRADES_MAX]; /* protocols a request may upgrade to, comma-separated without
                                             * blanks ("websocket"); "" = none (http_upgrade_allowed()) */

        /* [tls] */
        struct config_cert certs[CONFIG_MAX_CERTS]; /* the first is the default for clients without SNI */
        size_t n_certs;
        enum tls_profile tls_profile;
        bool tls_tickets;                     /* session tickets, keys in memory only */
        uint64_t tls_ticket_rotate_usec;      /* a new ticket key this often; tickets live two periods */
        uint64_t tls_session_cache;           /* sessions kept for resumption by id; 0 = off */
        bool tls_strict_sni;                  /* refuse a name no certificate carries, instead of the default */
        uint64_t tls_hsts_max_age;            /* seconds; 0 = no Strict-Transport-Security */
        char acme_dir[CONFIG_PATH_MAX];       /* served at /.well-known/acme-challenge/ on plain listeners;
                                               * "" = off */
        bool backend_tls;                     /* lbd speaks TLS to every backend (proxy and health checks) */
        char backend_ca[CONFIG_PATH_MAX];     /* the CA file the backends' certificates must chain to */
        char backend_name[256];               /* the name they must carry (and SNI); "" = their IP address */

        /* [timeouts] */
        uint64_t client_header_timeout_usec; /* whole request head must arrive within it: 408 */
        uint64_t client_idle_timeout_usec;   /* keep-alive wait for the next request */
        uint64_t client_body_timeout_usec;   /* max silence while reading a request body */
        uint64_t connect_timeout_usec;       /* backend TCP connect */
        uint64_t backend_timeout_usec;       /* request sent -> first response byte, and silence after: 504 */
        uint64_t backend_idle_timeout_usec;  /* idle pooled backend connection lifetime */
        uint64_t tunnel_timeout_usec;        /* upgraded connection with no traffic either way */

        /* [limits] */
        uint64_t max_header_size;       /* request line + headers: 431 beyond it */
        uint64_t max_body_size;         /* request body; 0 = unlimited: 413 beyond it */
        uint64_t retries;               /* extra tries on other backends */
        uint64_t max_idle_per_backend;  /* pooled idle connections per backend */

        /* [health] */
        char health_path[CONFIG_PATH_MAX];
        uint64_t health_interval_usec;
        uint64_t health_timeout_usec;
        uint64_t health_rise;
        uint64_t health_fall;
        uint64_t health_expect_min;     /* expected status range, e.g. "200-399" or "200" */
        uint64_t health_expect_max;
        uint64_t health_passive_fall;   /* consecutive 5xx or timeouts from live traffic that mark down; 0 = off */
        uint64_t health_passive_max_down; /* percent of the pool passive health may hold out of rotation */

        /* [pool] */
        enum provider_kind provider;
        uint64_t desired;
        uint16_t port;                  /* default backend port when an address has none */
        struct netaddr_cidr networks[CONFIG_MAX_NETWORKS];
        size_t n_networks;              /* 0 = any address allowed */
        struct netaddr backends[CONFIG_MAX_BACKENDS]; /* static provider */
        size_t n_backends;
        uint64_t grace_usec;
        uint64_t poll_usec;
        uint64_t max_replacements;      /* storm guard: replacements allowed per window */
        uint64_t replacement_window_usec;
        uint64_t refresh_min_healthy;   /* instance refresh: percent of desired kept serving */
        uint64_t refresh_warmup_usec;   /* a new instance counts once healthy this long */
        uint64_t refresh_timeout_usec;  /* a new instance not healthy this long fails the refresh */
        int refresh_on_failure;         /* enum refresh_on_failure (refresh.h) */
        uint64_t pool_min, pool_max;    /* scaling on demand between them; max 0: off (desired is fixed) */
        /* [schedule] action: scheduled changes of min, max and desired (schedule.h) */
        struct schedule_action schedule[SCHEDULE_MAX];
        size_t n_schedule;
        uint64_t target_rps;            /* requests per second per backend; 0: not a target */
        uint64_t target_inflight;       /* requests in flight per backend; 0: not a target */
        uint64_t target_p90_usec;       /* the pool's 90th percentile of response time; 0: not a target */
        uint64_t scale_out_after_usec;  /* the average over this long breaching a target scales out */
        uint64_t scale_in_after_usec;   /* the average over this long well under scales in */
        uint64_t scale_in_cooldown_usec; /* no scale-in sooner than this after a change */
        uint64_t zone_backoff_usec;     /* a zone (subnet) that refused a launch for want of capacity is
                                         * left alone this long, doubling while it keeps refusing */

        /* [ec2] (provider = ec2) */
        char ec2_region[64];            /* "" = AWS_REGION, AWS_DEFAULT_REGION, the config file, IMDS */
        char ec2_endpoint[CONFIG_PATH_MAX]; /* "" = AWS_ENDPOINT_URL_EC2, AWS_ENDPOINT_URL, or the region's */
        char ec2_image[64];             /* ami-…; or use launch_template */
        char ec2_launch_template[128];  /* lt-… or a name */
        char ec2_instance_type[64];
        char ec2_subnet[64];            /* the one-subnet form of ec2_subnets; not both */
        char ec2_subnets[CONFIG_MAX_SUBNETS][64]; /* launches kept balanced across them */
        size_t n_ec2_subnets;
        char ec2_security_groups[CONFIG_MAX_SECURITY_GROUPS][64];
        size_t n_ec2_security_groups;
        char ec2_key_name[256];
        char ec2_instance_profile[256]; /* name or ARN */
        char ec2_user_data[CONFIG_PATH_MAX]; /* template file; {{upstream}} is replaced by upstream */
        struct netaddr ec2_upstream;    /* where every backend relays to (the web host) */
        bool ec2_upstream_set;
        char ec2_upstream_ca[CONFIG_PATH_MAX]; /* CA certificate the relays verify the web host with; its
                                                * text fills {{upstream_ca}}; "" = plain HTTP */
        char ec2_upstream_name[256];    /* the name webd's certificate carries: {{upstream_name}} */
        char ec2_relay_tls_cert[CONFIG_PATH_MAX]; /* the relays' certificate: {{relay_tls_cert}}; "" = plain */
        char ec2_relay_tls_key[CONFIG_PATH_MAX];  /* its key: {{relay_tls_key}} */
        char ec2_tag_key[128];          /* tag = key=value: instances carrying it belong to the pool */
        char ec2_tag_value[256];
        char ec2_credentials_file[CONFIG_PATH_MAX]; /* "" = the SDK chain (env, ~/.aws, IMDS) */
        char ec2_profile[128];
        char ec2_previous_settings[CONFIG_PATH_MAX]; /* "" = the previous launch settings in memory only */

        /* [local] (provider = local) */
        char local_command[CONFIG_PATH_MAX]; /* template: {port}, {address}, {upstream}, {index} */
        uint16_t local_base_port;       /* backends get base_port, base_port + 1, … on 127.0.0.1 */
        struct netaddr local_upstream;
        bool local_upstream_set;
        char local_state_file[CONFIG_PATH_MAX]; /* "" = the default (provider-local.c) */

        /* [lease] (two or more hosts, one leader: lease.c); off while conninfo_file is "" */
        char lease_conninfo_file[CONFIG_PATH_MAX]; /* holds the libpq connection string; never logged */
        char lease_name[64];            /* this host's name in the lease; "" = the host name (config_finish) */
        char lease_pool[64];            /* the lease row: hosts serving one pool share it */
        uint64_t lease_duration_usec;   /* the lease the database grants */
        uint64_t lease_renew_usec;      /* one attempt this often */
        uint64_t lease_margin_usec;     /* the leader stops acting this long before its lease could expire */
        uint64_t lease_timeout_usec;    /* connecting or one query, at most */
        char lease_elastic_ip[64];      /* eipalloc-…: moved to the leader's instance; "" = none */
        char lease_instance_id[64];     /* this host's instance (i-…), where elastic_ip goes; required with it */
        struct netaddr lease_listen;    /* serves GET /lease to the other hosts (peer.c) */
        bool lease_listen_set;          /* "" = no such listener */
        struct netaddr lease_peers[CONFIG_MAX_LEASE_PEERS]; /* the other hosts' listen addresses */
        size_t n_lease_peers;

        /* Where the config came from, for messages and reloads; "" when from flags only. */
        char path[CONFIG_PATH_MAX];
};

/* Fills <c> with the documented defaults (the table at the top of config.c). */
void config_init(struct config *c);

/* Reads <path> into <c> (on top of what is there) and records <path> in c->path. Every bad key is logged as
 * "FILE:LINE: [section] key 'K': reason (value 'V')" and the load goes on to report every bad line, then
 * returns -EINVAL; a syntax error (ini.h) is logged and stops the load with -EINVAL. Returns -errno if the
 * file can't be read, -ENAMETOOLONG if <path> doesn't fit in c->path. Unknown sections and keys are errors.
 * List keys (listen, networks, backends): the first occurrence in the file replaces the list, defaults
 * included; later occurrences append. */
int config_load_file(struct config *c, const char *path);

/* Sets one key as if read from a file; <origin> names where it came from in messages ("--listen: [lbd]
 * key 'listen': ..."; NULL means "command line"). Each call is a source of its own, so a list key given here
 * replaces the list: pass several entries comma-separated. Returns 0, or -EINVAL (logged, <c> unchanged).
 * Used by the command line. */
int config_set(struct config *c, const char *section, const char *key, const char *value, const char *origin);

/* Completes what depends on several keys once everything is read: backends given without a port get
 * [pool] port. Call after the file and the command line, before config_validate(). */
void config_finish(struct config *c);
/* The rule that keeps lbd from contacting an address it was not meant to: returns true when <a> lies
 * inside one of [pool] networks, or when none is set. Reads at most CONFIG_MAX_NETWORKS entries whatever
 * <c>->n_networks says. config_validate(), the reconciler and the EC2 provider all ask here. */
bool config_in_networks(const struct config *c, const struct netaddr *a);

/* Checks what single keys can't: at least one listener, no duplicate listener, the admin address loopback
 * and not a listener; the static provider has a backend, and only it has backends; every backend has a
 * port, lies inside <networks> (when set) and is listed once; health interval and timeout > 0 (the
 * timeout may exceed the interval), rise/fall >= 1, a sane expect range; local: the command's {upstream}
 * has an upstream, the ports fit, 127.0.0.1 is inside <networks>; ec2: an image or a launch template.
 * Logs every problem as "PATH: [section] key 'K': message" ("configuration" when c->path is empty);
 * returns 0 or -EINVAL. */
int config_validate(const struct config *c);

/* Return the config file spelling ("round-robin", "ec2"), or NULL for a value out of range. */
const char *config_balance_name(enum balance_kind b);
const char *config_provider_name(enum provider_kind p);
const char *config_tls_profile_name(enum tls_profile t);

/* Whether [lease] is on (conninfo_file set): hosts share the pool and one leader acts on it. */
bool config_lease_enabled(const struct config *c);
/* The characters of a [lease] name or pool: ASCII letters, digits, '.', '_', '-'. */
bool config_lease_name_char(char ch);

/* Whether any listener of <c> terminates TLS. */
bool config_has_tls(const struct config *c);
