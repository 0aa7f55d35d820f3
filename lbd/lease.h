/* The leader's lease: with two or more lbd hosts serving one pool, exactly one of them (the leader)
 * launches, terminates, tags and moves the public address. The lease is a row in PostgreSQL (the web
 * host's, a database and role of its own), renewed with the database's clock, and an epoch (a fencing
 * token) that grows with every change of holder. Every host proxies and lists the pool either way.
 *
 * Two layers. The state machine (struct lease_sm, lease_sm_*()) is pure logic on times passed in: what
 * an answer or a failure means, and until when the leader may act. struct lease drives it with libpq's
 * asynchronous API on lbd's event loop (lease.c's opening comment has the details); nothing here blocks
 * the loop, and every query has a timeout. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config;
struct history;

#define LEASE_NAME_MAX   64 /* a host's name: letters, digits, '.', '_', '-' */
#define LEASE_PEERS_MAX  8  /* other hosts shown */
#define LEASE_ERROR_MAX  256
#define LEASE_CONNINFO_MAX 4096 /* bytes of the connection string file */

struct lease_policy {
        uint64_t duration_usec; /* the lease the database grants: expires_at = now() + duration */
        uint64_t renew_usec;    /* one attempt this often */
        uint64_t margin_usec;   /* the leader stops acting this long before the lease could expire */
        uint64_t timeout_usec;  /* a connection attempt or a query that takes longer has failed */
};

/* What an answer or a failure changed: a mask of these. */
enum lease_event {
        LEASE_EVENT_NONE = 0,
        LEASE_EVENT_GAINED = 1 << 0,     /* this host may act again (a new epoch, or its lapsed lease renewed) */
        LEASE_EVENT_LOST = 1 << 1,       /* another host holds the lease now */
        LEASE_EVENT_STORE_DOWN = 1 << 2, /* the first failure after an answer (or at start) */
        LEASE_EVENT_STORE_UP = 1 << 3,   /* the first answer after failures */
        LEASE_EVENT_EPOCH = 1 << 4,      /* the epoch changed (a change of leader) */
};

/* What the last answer said about the lease, and what this host may do. All times are on lbd's
 * monotonic clock (now_usec()). */
struct lease_sm {
        struct lease_policy policy;
        bool answered;           /* an answer since start */
        bool leader;             /* the last answer gave the lease to this host */
        bool store_down;         /* the last attempt failed */
        uint64_t epoch;          /* the lease's epoch in the last answer (this host's when leader) */
        uint64_t valid_until;    /* leader: acts only before it; 0 otherwise */
        uint64_t expires_usec;   /* the lease's expiry as the last answer put it (monotonic estimate) */
        uint64_t answer_usec;    /* when the last answer came */
        uint64_t down_since;     /* the first failure of the current episode */
        unsigned failures;       /* attempts failed in a row */
        uint64_t changes;        /* epochs seen to change (leadership changes) */
        uint64_t acquired;       /* times this host took the lease */
        char holder[LEASE_NAME_MAX]; /* the holder's name in the last answer, "" when none */
};

/* One answer to the lease query. */
struct lease_answer {
        bool mine;               /* the update matched: this host holds the lease */
        uint64_t epoch;
        uint64_t remaining_usec; /* until expires_at, by the database's clock (0 when past) */
        const char *holder;      /* the holder's name */
};

void lease_sm_init(struct lease_sm *s, const struct lease_policy *p);
/* An attempt sent at <sent> (monotonic) was answered at <now> with <a>. The leader's authority runs from
 * <sent>, not <now>: the database set expires_at after the query left, so the lease lasts at least
 * duration from <sent>. An answer that would take the epoch backwards is refused (-ESTALE, nothing
 * changed: a store restored from an old backup must not hand out an epoch twice). Returns a mask of
 * LEASE_EVENT_* (>= 0) or -ESTALE. */
int lease_sm_answer(struct lease_sm *s, uint64_t sent, uint64_t now, const struct lease_answer *a);
/* An attempt failed at <now> (error, timeout, connection lost). The leader keeps its authority until
 * valid_until: nobody else can hold the lease before. Returns a mask of LEASE_EVENT_*. */
int lease_sm_failed(struct lease_sm *s, uint64_t now);
/* Whether this host may mutate at <now>, and in which epoch (written only when true). */
bool lease_sm_may_mutate(const struct lease_sm *s, uint64_t now, uint64_t *ret_epoch);

/* ---- the lease on the event loop ---- */

struct lease;

struct lease_peer {
        char name[LEASE_NAME_MAX];
        uint64_t seen_ago_usec; /* since its last renewal attempt reached the database */
};

/* A snapshot for /status, /metrics and STATUS=. */
struct lease_view {
        const char *name;          /* this host's */
        const char *pool;          /* the lease row's */
        bool leader;               /* leads and may act now */
        bool store_down;
        uint64_t store_down_usec;  /* for how long, when down */
        bool answered;
        uint64_t epoch;
        const char *holder;        /* the holder in the last answer, "" when none */
        uint64_t expires_in_usec;  /* from now, by the last answer; 0 when past */
        uint64_t valid_for_usec;   /* leader: how long it may still act without a renewal */
        uint64_t changes, acquired;
        uint64_t attempts, failures_total;
        const char *last_error;    /* the store's last failure, "" when none; never the conninfo */
        struct lease_peer peers[LEASE_PEERS_MAX];
        size_t n_peers;
};

/* Creates the lease from [lease] of <c>, whose settings are copied (a change takes a restart);
 * conninfo_file is read here (-errno when it can't be, logged without its content). Nothing happens until
 * lease_start(). Returns 0 or -errno. */
int lease_new(struct event_base *base, const struct config *c, struct lease **ret);
struct lease *lease_free(struct lease *l);
/* <on_change> runs when this host gains or loses the right to act, or the store goes down or up. */
void lease_set_on_change(struct lease *l, void (*on_change)(void *userdata), void *userdata);
void lease_set_history(struct lease *l, struct history *h);
/* Attempts at once, then every renew. */
void lease_start(struct lease *l);
/* Whether this host may mutate now; the epoch is written only when it may. NULL <l>: no lease configured,
 * the single host always may (epoch 0). */
bool lease_may_mutate(const struct lease *l, uint64_t *ret_epoch);
void lease_get_view(const struct lease *l, struct lease_view *ret);
/* A planned stop (SIGTERM's drain): from now on this host never acts again, and if it holds the lease it
 * gives it up in the store (expires_at = now() by the database's clock, the epoch kept, only while the row
 * is still its own), so another host takes it at its next renewal instead of after a whole lease. Returns
 * 0 when there is nothing to release (<done> is never called), 1 when the release is under way: <done>
 * runs once when it ended, released or not, within [lease] timeout, never inside this call. The lease
 * must not be freed before. Logged. */
int lease_release(struct lease *l, void (*done)(void *userdata), void *userdata);

/* Parses the peers column ("name ms,name ms"), for tests. Returns how many were stored (at most <max>);
 * malformed entries are skipped. */
size_t lease_parse_peers(const char *s, struct lease_peer *peers, size_t max);
