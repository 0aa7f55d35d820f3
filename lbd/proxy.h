/* The data plane: listeners, client connections, upstream connections, request/response streaming.
 * See proxy.c for the state machine. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "lbd/latency.h"

struct lbd;
struct loop;
struct proxy;
struct accesslog;
struct event_base;
struct pool_view;
struct config;
struct tls_stats;

#define PROXY_CODE_MIN 400
#define PROXY_CODE_MAX 599

struct proxy_stats {
        uint64_t connections;       /* client connections open now */
        uint64_t connections_total; /* accepted since start */
        uint64_t requests_total;    /* requests read from clients */
        uint64_t retries_total;     /* tries on another backend */
        uint64_t rejected[PROXY_CODE_MAX - PROXY_CODE_MIN + 1]; /* answers made by lbd itself, by status */
        uint64_t errors_total;      /* exchanges answered with a 5xx, the backend's or lbd's own */
        struct latency_hist latency; /* every exchange's duration but tunnels' (status 101) */
};

/* Creates a proxy for <lbd> on the event loop <base>: its TLS listeners use lbd->tls (made before), its
 * upstreams a clone of lbd->backend_tls of its own. <loop> is the worker loop it runs on (loops.c), NULL
 * for the main loop's one proxy; <index> its slot in each backend's loops[]. It logs to <accesslog>, or to
 * lbd->accesslog when NULL, and picks from lbd->pool->view until proxy_set_view(). Returns NULL on
 * ENOMEM. */
struct proxy *proxy_new(struct lbd *lbd, struct event_base *base, struct loop *loop, unsigned index,
                        struct accesslog *accesslog);

/* Binds every [lbd] listen address of <c> and starts accepting; on a worker loop with SO_REUSEPORT, next
 * to the other loops' sockets. Returns 0 or -errno (logged). */
int proxy_listen(struct proxy *p, const struct config *c);

/* Uses new settings (timeouts, limits) for new work; <c> must stay valid until replaced. */
void proxy_set_config(struct proxy *p, const struct config *c);

/* Stops accepting, closes idle client connections, and lets each busy one finish its current exchange
 * with "Connection: close". Calls <done> once no client connection is left. */
void proxy_drain(struct proxy *p, void (*done)(void *userdata), void *userdata);

/* The proxy's own counters; only for the thread it runs on (others: proxy_add_stats()). */
const struct proxy_stats *proxy_get_stats(const struct proxy *p);
/* Adds its counters to <ret>, read atomically: any thread. */
void proxy_add_stats(const struct proxy *p, struct proxy_stats *ret);
/* Adds its TLS handshake counters to <ret>, read atomically: any thread. */
void proxy_add_tls_stats(const struct proxy *p, struct tls_stats *ret);
/* Client connections open now, read atomically: any thread. */
uint64_t proxy_connections(const struct proxy *p);

/* Loops (loops.c): the proxies of the loops log a shortage of descriptors once for all of them, counted in
 * <counter> (acceptpause_share()). Called before the loops' threads start. */
void proxy_share_accept_pauses(struct proxy *p, unsigned *counter);

/* Picks from <v> from now on (the proxy takes the reference; the previous view's goes). */
void proxy_set_view(struct proxy *p, struct pool_view *v);

/* Closes everything at once. Returns NULL. */
struct proxy *proxy_free(struct proxy *p);
