/* The other LB hosts' own word on the lease ([lease] listen and peers), beside what the store says of them
 * (lease.h's peers: when each last reached the database).
 *
 * Each host may answer GET /lease on a listener of its own ([lease] listen): its lease object, the one
 * /status carries, read-only; the admin API stays on loopback. Each host asks the addresses in [lease]
 * peers for it every [lease] renew, asynchronously on lbd's loop, each request bounded by [lease] timeout;
 * /status and `lbctl status` show what each answered (or why it did not). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/netaddr.h"
#include "lbd/lease.h"

struct lbd;
struct peers;

#define PEER_ERROR_MAX    160
#define PEER_MAX_RESPONSE (64u * 1024) /* bytes of a peer's answer */

/* One peer as last asked, for /status. */
struct peer_view {
        char address[NETADDR_STRLEN];
        bool up;                    /* its last answer was a good one */
        bool ever;                  /* a good answer since start */
        uint64_t answered_ago_usec; /* since the last good answer (when ever) */
        uint64_t down_usec;         /* failing for this long (when !up and asked) */
        bool asked;                 /* an answer or a failure since start */
        char name[LEASE_NAME_MAX];  /* from its last good answer */
        bool leader, store_up;
        uint64_t epoch;
        char error[PEER_ERROR_MAX]; /* why the last attempt failed, "" after a good one */
};

/* A peer's answer, <body> (<len> bytes, untrusted), read into <ret>'s name, leader, store_up and epoch.
 * Returns 0, or -EBADMSG with the reason in ret->error (nothing else written then). */
int peer_parse_answer(const char *body, size_t len, struct peer_view *ret);

/* Starts the listener ([lease] listen) and the questions ([lease] peers) of <lbd>'s config, whose lease
 * must exist. With neither, *ret is NULL. Returns 0 or -errno (the listener's bind, logged by the
 * caller). Nothing is asked until peers_start(). */
int peers_new(struct lbd *lbd, struct peers **ret);
struct peers *peers_free(struct peers *p);
void peers_start(struct peers *p);
/* The peers in [lease] peers' order: <views> gets at most <max>; returns how many. NULL <p>: 0. */
size_t peers_get_view(const struct peers *p, struct peer_view *views, size_t max);
/* Connections the lease listener closed at their accept: their address held PEER_MAX_PER_CLIENT already.
 * NULL <p>, or no listener: 0. */
uint64_t peers_listener_refused(const struct peers *p);
