/* Backends and the pool that holds them.
 *
 * A struct backend is one upstream address with its health verdict, counters and idle keep-alive
 * connections. The pool owns one reference to each backend; every upstream connection (proxy.c) holds one
 * more, so a backend removed by a reload stays valid until its last in-flight request ends.
 *
 * Threads (loops.c): the pool, the verdict and everything else here belong to the main loop; the data
 * plane's loops read a backend through a pool_view and write only their own struct backend_loop. What
 * crosses threads is atomic: `refs`, `passive_fails` (reset by any loop), the published verdict
 * `rotation` and `state`, and each loop's counters (COUNTER_ADD by their loop, COUNTER_GET by others).
 *
 * Rotation: a backend takes new requests when backend_in_rotation() says so: healthy (or forced, see
 * below), not draining, and not in maintenance. The health checker (health.c) and the proxy's passive signals change `healthy`,
 * always through backend_set_healthy(), which logs the transition and updates the daemon's STATUS. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macro.h"
#include "common/netaddr.h"
#include "lbd/latency.h"

struct event_base;
struct pool;
struct upstream;
struct health_probe;
struct pool_view;
struct balance_state;

enum backend_state {
        BACKEND_ACTIVE,   /* part of the configured set */
        BACKEND_DRAINING, /* removed by a reload: no new requests, freed when the last one ends */
};

enum check_result {
        CHECK_NONE,    /* not checked yet */
        CHECK_OK,      /* status in the expected range */
        CHECK_FAIL,    /* answered, wrong status or malformed */
        CHECK_TIMEOUT, /* no answer within [health] timeout */
        CHECK_REFUSED, /* connection refused or reset */
        CHECK_ERROR,   /* any other socket error */
};

#define BACKEND_INSTANCE_ID_MAX 64 /* = INSTANCE_ID_MAX (provider.h) */
#define BACKEND_LAUNCH_HASH_MAX 17 /* = INSTANCE_LAUNCH_HASH_MAX (provider.h) */

#define BACKEND_CODE_MIN 100
#define BACKEND_CODE_MAX 599

struct backend_stats {
        uint64_t requests;       /* requests sent to it (each try counts) */
        uint64_t failures;       /* connect failures, resets, timeouts, malformed responses */
        uint64_t busy_usec;      /* the time requests were in flight to it (each from when it was sent
                                  * to it until it let go of it), summed: it grows by the mean number of
                                  * requests in flight per second (Little's law) */
        uint64_t health_ok;      /* active probes passed */
        uint64_t health_fail;    /* active probes failed */
        uint64_t by_code[BACKEND_CODE_MAX - BACKEND_CODE_MIN + 1]; /* responses by status */
        struct latency_hist latency; /* its exchanges' durations, from the request to the response's end */
};

/* A counter written by one thread only and read by others: a relaxed atomic store of the sum (on x86 the
 * same add as a plain ++), so a reader on another thread sees whole values and no lock is taken. */
#define COUNTER_ADD(x, n) __atomic_store_n(&(x), (x) + (n), __ATOMIC_RELAXED)
#define COUNTER_SUB(x, n) __atomic_store_n(&(x), (x) - (n), __ATOMIC_RELAXED)
#define COUNTER_GET(x)    __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* What one event loop keeps of a backend; only that loop writes it. */
struct backend_loop {
        struct upstream *idle;       /* idle keep-alive connections, most recently used first (proxy.c) */
        unsigned n_idle;
        unsigned active;             /* requests in flight (COUNTER_*: the other loops' balancers read it) */
        struct backend_stats stats;  /* traffic counters (COUNTER_*: main sums them, backend_get_stats()) */
} __attribute__((aligned(64)));

#define BACKEND_CHECKS_KEPT 32 /* the last health check results kept, for the status page's strip */

struct backend {
        struct pool *pool;
        struct netaddr addr;
        char name[NETADDR_STRLEN]; /* "127.0.0.1:8081" */
        enum backend_state state;  /* written by main with __atomic_store_n, read by loops atomically */
        unsigned refs;             /* atomic: views and connections of every loop hold references */
        bool rotation;             /* backend_in_rotation() as published to the loops (atomic, pool.c) */

        /* health verdict */
        bool healthy;
        bool checked_once;         /* a probe has completed since it was added */
        unsigned rise_count;       /* consecutive passes while down */
        unsigned fall_count;       /* consecutive failures while up */
        unsigned passive_fails;    /* consecutive 5xx/timeouts from live traffic (atomic: loops reset it) */
        enum check_result last_check;
        unsigned last_check_status;     /* HTTP status of the last probe, 0 if none */
        uint64_t last_check_duration_usec;
        uint64_t last_check_at_usec;    /* now_usec() when it completed, 0 if never */
        struct health_probe *probe;     /* owned by health.c */
        /* The last results, a ring: checks[(n_checks - 1) % BACKEND_CHECKS_KEPT] is the newest */
        uint8_t checks[BACKEND_CHECKS_KEPT]; /* enum check_result */
        uint64_t n_checks;

        /* traffic: the main loop's own counters (health checks, passive verdicts) here; the data plane's
         * per loop, in loops[pool->n_loops] (sum: backend_get_stats(), backend_active()) */
        struct backend_stats stats;
        struct backend_loop *loops;
        unsigned n_loops;

        unsigned index;            /* position in pool->backends, for the balancers */

        /* The instance behind it (the reconciler, reconcile.c, fills these; static backends carry their
         * address as the id) */
        char instance_id[BACKEND_INSTANCE_ID_MAX]; /* "" when not known */
        const char *instance_state; /* a static string ("running"), NULL when not known */
        uint64_t launched_usec;     /* wall clock, 0 when not known */
        char zone[32];              /* the instance's zone, "" when not known (= INSTANCE_ZONE_MAX) */
        char launch_hash[BACKEND_LAUNCH_HASH_MAX]; /* its launch settings' hash, "" when not known */
        char subnet[BACKEND_INSTANCE_ID_MAX];      /* its subnet (zone), "" when not known */
        /* Health history, for the reconciler's judgement */
        uint64_t health_changed_usec; /* now_usec() when `healthy` last changed, or when it was added */
        bool been_healthy;            /* it has been healthy at least once since it was added */
        /* In rotation although not healthy: every backend of a managed pool failed at once and this one
         * is among the least bad (reconcile.c sets and clears it) */
        bool forced;
        /* Load, for scaling in (backend_sample_load()): the requests in flight on it, smoothed; the main
         * loop's alone */
        double load;
        uint64_t load_busy_usec;      /* busy_usec summed over the loops at the last sample */
        uint64_t load_at_usec;        /* now_usec() of the last sample, 0 before the first */
        /* Taken out of rotation by the operator (admin API: lbctl drain): no new requests, in-flight ones
         * finish; still health-checked, but never judged failed or replaced while it lasts */
        bool maintenance;
};

/* Balancing algorithms are tables of functions (balance.c). */
struct balancer_ops {
        const char *name;
        /* Returns one of <v>'s backends in rotation that is not in <exclude> (the backends this request
         * already tried), or NULL when none is left. <s> is the calling loop's own cursor and random state. */
        struct backend *(*pick)(const struct pool_view *v, struct balance_state *s, struct backend *const *exclude,
                                size_t n_exclude);
};

/* A balancer's state, one per event loop, so no loop writes what another reads. */
struct balance_state {
        size_t rr_next;            /* round robin cursor */
        uint64_t rng;              /* p2c random state, never 0 */
};

/* The backends as one loop sees them: an immutable array the main loop builds after every change of the
 * set (pool_view_new()) and hands to each loop; reference counted (atomic), each backend referenced. */
struct pool_view {
        unsigned refs;
        size_t n;
        struct backend *backends[];
};

struct pool {
        struct event_base *base;
        struct backend **backends; /* active ones, in configuration order */
        size_t n_backends;
        size_t cap_backends;
        const struct balancer_ops *balancer;
        struct balance_state balance; /* the main loop's proxy's (threads = 1) */
        struct pool_view *view;    /* the current set for the main loop's proxy; rebuilt on change */
        unsigned n_loops;          /* event loops keeping per-loop state in each backend (default 1) */
        size_t n_healthy;
        /* [health] passive_max_down: the largest share (percent) of the backends that passive health may
         * hold out of rotation; beyond it only the active checks take one out. */
        unsigned passive_max_down;
        bool passive_held;         /* a passive take-out was refused for that limit: logged once */
        /* Called after any change of a backend's health or of the set, e.g. to update STATUS=. */
        void (*on_change)(struct pool *p, void *userdata);
        void *on_change_userdata;
};

/* Creates an empty pool. Returns NULL on allocation failure. */
struct pool *pool_new(struct event_base *base, const struct balancer_ops *balancer);
/* A loop's balancer state: cursor at 0, a random seed. */
void balance_state_init(struct balance_state *s);
/* Sets how many event loops keep per-loop state in each backend (1..POOL_LOOPS_MAX); before any backend
 * is added. Returns 0 or -EINVAL. */
int pool_set_loops(struct pool *p, unsigned n_loops);
#define POOL_LOOPS_MAX 256 /* = CONFIG_THREADS_MAX */

/* A new view of the pool's active backends (refs 1), or NULL on ENOMEM. */
struct pool_view *pool_view_new(const struct pool *p);
struct pool_view *pool_view_ref(struct pool_view *v);
/* Drops a reference; the last one releases the backends' references. Any thread. Returns NULL. */
struct pool_view *pool_view_unref(struct pool_view *v);

/* <b>'s counters: the main loop's plus every loop's (read atomically). */
void backend_get_stats(const struct backend *b, struct backend_stats *ret);
/* Requests in flight on <b>, summed over the loops. Any thread. */
unsigned backend_active(const struct backend *b);
/* The smoothed load: an exponentially weighted mean of the requests in flight on a backend, time constant
 * BACKEND_LOAD_TAU_USEC, sampled once a second (pool_sample_load()) from what the loops count, each its
 * own counters, summed here without a lock: the growth of busy_usec (every request's time in flight, once
 * it let go; the request path adds a clock read at each end of an exchange with a backend) or, when
 * larger, the count in flight now (a request held for long counts before it ends). Two loads closer than
 * BACKEND_LOAD_TIE_ABS requests, or than BACKEND_LOAD_TIE_PCT percent of the larger, are equal: under a
 * steady load the figures are noise, and equals keep another order (the reconciler's: newest first). */
#define BACKEND_LOAD_TAU_USEC (10 * USEC_PER_SEC)
#define BACKEND_LOAD_TIE_ABS  1.0
#define BACKEND_LOAD_TIE_PCT  30
/* Takes one sample of <b>'s load at <now> (monotonic). */
void backend_sample_load(struct backend *b, uint64_t now);
/* Samples every active backend of <p> (a one-second timer on the main loop, history.c). */
void pool_sample_load(struct pool *p, uint64_t now);
/* Whether load <a> is clearly less than load <b> (not equal within the margins above). */
bool backend_load_less(double a, double b);

/* Releases the pool's references; backends still referenced by connections live on until released. */
struct pool *pool_free(struct pool *p);

/* Makes the set of active backends equal to <addrs>: new addresses are added (down, until checked);
 * missing ones become DRAINING and leave the pool. Returns 0 or -ENOMEM. */
int pool_set_backends(struct pool *p, const struct netaddr *addrs, size_t n);

/* Finds an active backend by address, or NULL. */
struct backend *pool_find(struct pool *p, const struct netaddr *addr);

/* Counts backends in rotation (cached in p->n_healthy). */
size_t pool_count_healthy(const struct pool *p);

/* Recounts the backends in rotation and calls on_change, after a change made outside
 * backend_set_healthy() (the `forced` flags). */
void pool_refresh(struct pool *p);

/* Records a completed health check's result (health.c), for last_check and the ring of the last ones. */
void backend_note_check(struct backend *b, enum check_result result);

/* The name /status and the logs give a check result: "none", "ok", "fail", "timeout", "refused", "error". */
const char *backend_check_result_name(enum check_result r);
struct backend *backend_ref(struct backend *b);
/* Drops a reference; frees the backend when it was the last. Returns NULL. */
struct backend *backend_unref(struct backend *b);

static inline bool backend_in_rotation(const struct backend *b)
{
        return (b->healthy || b->forced) && b->state == BACKEND_ACTIVE && !b->maintenance;
}

/* The verdict as published to the event loops (any thread): backend_in_rotation() at the last change. */
static inline bool backend_rotation(const struct backend *b)
{
        return __atomic_load_n(&b->rotation, __ATOMIC_RELAXED);
}

static inline bool backend_is_active(const struct backend *b)
{
        return __atomic_load_n(&b->state, __ATOMIC_RELAXED) == BACKEND_ACTIVE;
}

/* A response below 500 from live traffic: the passive failure count starts again (any loop). */
static inline void backend_report_ok(struct backend *b)
{
        if (__atomic_load_n(&b->passive_fails, __ATOMIC_RELAXED) != 0)
                __atomic_store_n(&b->passive_fails, 0, __ATOMIC_RELAXED);
}

/* Takes <b> out of rotation for maintenance (<on>) or puts it back; logs it and updates the pool's count
 * and STATUS=. */
void backend_set_maintenance(struct backend *b, bool on);

/* Sets the health verdict; logs "backend X is up/down (reason)" on a change and calls the pool's
 * on_change. <reason> is a short phrase for the log. */
void backend_set_healthy(struct backend *b, bool healthy, const char *reason);

/* Passive signals from live traffic (proxy.c), which reports only what the backend caused (see proxy.c's
 * "Blame"): never an early answer, a close while lbd still sent a request body, or a wait on a client.
 * - backend_report_refused: connect refused or connection reset: down at once.
 * - backend_report_result: a response status (500 and above count as a failure, except 503, the
 *   backend saying it is overloaded or in maintenance, which its active checks judge) or 0 for a
 *   timeout; after [health] passive_fall consecutive failures the backend is marked down, unless that
 *   would leave fewer than (100 - passive_max_down) percent of the pool's backends healthy: a failure
 *   of something every backend depends on, or an overload, must not empty the pool.
 * Both run on the main loop (a worker loop sends them there, loops.c); backend_report_ok() runs anywhere.
 * <passive_fall> 0 disables the counting. */
void backend_report_refused(struct backend *b, const char *reason);
void backend_report_result(struct backend *b, unsigned status, unsigned passive_fall);
