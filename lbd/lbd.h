/* The daemon's top-level object: the event loop and the parts that run on it. main.c creates one. Most
 * modules receive only the pieces they need (the loop, the pool, the settings); proxy_new() and
 * admin_new() take the whole struct, because they read across it: the proxy its settings, the pool and
 * the access log, the admin API the pool, the proxy's counters, the reconciler and the start time. */
#pragma once

#include <stdbool.h>

#include "lbd/config.h"

struct event_base;
struct pool;
struct proxy;
struct health;
struct admin;
struct accesslog;
struct notify;
struct provider;
struct reconcile;
struct history;
struct autoscale;
struct schedule;
struct tls;
struct tls_client;
struct lease;
struct eip;
struct peers;
struct loops;

struct lbd {
        struct event_base *base;
        struct config *config;   /* current settings; replaced as a whole on reload */
        struct pool *pool;
        struct proxy *proxy;     /* the data plane on the main loop (threads = 1), else NULL */
        struct loops *loops;     /* the data plane on worker loops (threads > 1, loops.h), else NULL */
        struct health *health;
        struct admin *admin;
        struct accesslog *accesslog;
        struct notify *notify;
        struct provider *provider;   /* where backends come from (provider.h) */
        struct reconcile *reconcile; /* the control plane (reconcile.h) */
        struct history *history;     /* the status page's figures and timeline (history.h), or NULL */
        struct autoscale *autoscale; /* scaling on demand (autoscale.h), NULL when off */
        struct schedule *schedule;   /* scheduled changes of the pool's size (schedule.h), NULL without */
        struct tls *tls;             /* the TLS listeners' contexts, every loop's (tls.h), or NULL; main.c owns it */
        struct tls_client *backend_tls; /* TLS to the backends ([tls] backend = on), else NULL; the health
                                         * checks use it, each proxy a clone; main.c owns it */
        struct lease *lease;         /* the leader's lease ([lease], lease.h), NULL when off: this host acts */
        struct eip *eip;             /* the Elastic IP that follows the leader ([lease] elastic_ip), or NULL */
        struct peers *peers;         /* [lease] listen and peers (peer.h), or NULL */
        uint64_t started_usec;   /* now_usec() at start */
        bool stopping;
};
