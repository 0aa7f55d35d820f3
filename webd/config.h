/* webd's configuration: defaults, the INI file, and the checks that tie keys together.
 *
 * A struct config is a plain value: built by config_init(), filled by config_load_file(), by the
 * WEBD_DATABASE environment variable and by the command line (main.c), checked by config_validate(),
 * then handed to the running server, which only reads it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/netaddr.h"

#define CONFIG_PATH_MAX     1024
#define CONFIG_DATABASE_MAX 4096
#define CONFIG_PROXIES_MAX  32

struct config {
        /* [webd] */
        struct netaddr listen;
        char database[CONFIG_DATABASE_MAX]; /* libpq conninfo; may hold a password: never logged */
        uint64_t pool_size;                 /* database connections */
        char secret_file[CONFIG_PATH_MAX];  /* the token signing key */
        uint64_t token_ttl_usec;            /* whole seconds */
        uint64_t max_body_size;             /* request bodies: 413 beyond it */
        uint64_t request_timeout_usec;      /* a request whose queries haven't finished by then: 503 */
        uint64_t max_connections;           /* client connections open at once */
        uint64_t max_header_size;           /* a request's head: 431 beyond it */
        uint64_t header_timeout_usec;       /* a head not complete by then: 408 */
        uint64_t body_timeout_usec;         /* a body not complete this long after its head: 408 */
        uint64_t idle_timeout_usec;         /* keep-alive connections idle this long are closed */
        uint64_t startup_timeout_usec;      /* how long the start waits for the database; 0 = one try */
        int log_level;                      /* LOG_DEBUG .. LOG_ERR */
        bool activity;                      /* activity log: table + journal line per request */
        /* Peers whose X-Forwarded-For is believed (the relays): the client is the right-most entry that
         * is not one of these. */
        struct netaddr_cidr trusted_proxies[CONFIG_PROXIES_MAX];
        size_t n_trusted_proxies;
        /* Failed logins allowed before delays start: of one account from one address, from one address,
         * of one account from addresses where it hasn't logged in (throttle.h). */
        uint64_t login_failures, login_address_failures, login_account_failures;
        uint64_t login_max_delay_usec;   /* the longest delay; whole seconds */
        /* TLS on the listener: the certificate (PEM, with its chain) and its key; both empty for plain
         * HTTP. */
        char tls_cert[CONFIG_PATH_MAX];
        char tls_key[CONFIG_PATH_MAX];
        uint64_t login_throttle_entries; /* counters kept in memory, at most */

        /* [activity] */
        uint64_t activity_retention_usec;   /* rows older than this are deleted; 0 = kept forever */
        uint64_t activity_sweep_usec;       /* how often the old rows are looked for */

        /* Where the config came from, for messages; "" when from flags only. */
        char path[CONFIG_PATH_MAX];
};

/* Fills <c> with the documented defaults (the table at the top of config.c). */
void config_init(struct config *c);

/* Reads <path> into <c> (on top of what is there) and records <path> in c->path. Every bad key is logged as
 * "FILE:LINE: [section] key 'K': reason (value 'V')" (the value hidden for the database and the secret
 * file) and the load goes on to report every bad line, then returns -EINVAL; a syntax error (ini.h) is
 * logged and stops the load with -EINVAL. Returns -errno if the file can't be read, -ENAMETOOLONG if
 * <path> doesn't fit in c->path. Unknown sections and keys are errors. */
int config_load_file(struct config *c, const char *path);

/* Sets one key as if read from a file; <origin> names where it came from in messages (NULL: "command
 * line"). Returns 0, or -EINVAL (logged, <c> unchanged). */
int config_set(struct config *c, const char *section, const char *key, const char *value, const char *origin);

/* Checks what single keys can't: a database is given, tls_cert and tls_key both or neither, and that they
 * load and match. Logs every problem as "PATH: [section] key 'K':
 * message"; returns 0 or -EINVAL. */
int config_validate(const struct config *c);
