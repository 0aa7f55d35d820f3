/* The reconciler: the control plane's loop. Every poll it lists the pool's instances through the provider,
 * mirrors the running ones into the pool of backends, judges them with the health checker's verdicts, and
 * launches or terminates to keep [pool] desired of them. It owns nothing but its own bookkeeping: the
 * provider owns the calls, the pool owns the backends, health.c gives the verdicts.
 *
 * Timing. One provider call is in flight at a time. A poll is one list; when the list calls for nothing,
 * the next poll comes [pool] poll later (minus up to 10% of jitter, so several lbds don't poll in step):
 * with a healthy pool that is one DescribeInstances per poll, 6 a minute at the default 10 s. Polls also
 * happen at start, on reload, right after a launch or a terminate completes (to see their effect), and
 * as soon as a backend counts as failed (below), at most once per poll interval for each instance, so a
 * replacement doesn't wait for the next poll.
 *
 * The rules, in the order a poll applies them:
 * - Adopt: whatever the list shows is the pool. A restarted lbd lists before it launches anything, so it
 *   never duplicates instances. Instances lbd launched count as pending until a list shows them (lists
 *   may lag behind launches), for at most RECONCILE_UNLISTED_TTL.
 * - Mirror: running instances with an address inside [pool] networks become the pool's backends (new ones
 *   start down and enter rotation once a health check passes). An instance that is being terminated leaves
 *   the pool first. A new instance at the address of an old one is given a fresh backend.
 * - Dead: an instance in a state other than pending or running (stopping, stopped, unknown) is terminated;
 *   shutting-down and terminated ones are on their way out and only stop counting.
 * - Failed: a running instance whose backend is down past the instance's grace period (counted from its
 *   launch) is terminated and replaced (never while the operator has it in maintenance: lbctl drain, nor
 *   while every check since it went down has passed: it is on its way back up, as a relay restarted on
 *   its instance is). Down means checked and not healthy, continuously for at least fall x interval of
 *   [health] (the settle time), whatever took it down: failed probes or live traffic (a refused connect,
 *   a reset, timeouts), which often comes first. That is long enough for the checker to take every other
 *   backend out too if the cause is shared (the all-failing case below, where nothing is replaced), and
 *   for an instance lbd has just adopted to pass its first checks. Right after the all-failing case ends,
 *   nothing is judged for (rise + 1) x interval, while the other backends come back.
 * - Count: beyond desired, the extra instances are terminated: failed ones first, then those not healthy
 *   (including pending and unchecked ones), then the least loaded (backend.h's smoothed load), the newest
 *   among equal loads. Below desired, the missing ones are launched.
 * - Replacement-storm guard: a replacement is a launch that makes up for a loss (an instance that failed,
 *   stopped, or vanished), as opposed to growth (start, desired raised). The pool's high-water mark, the
 *   most instances it has had since desired last changed (capped at desired), tells them apart: launches
 *   below it are replacements. At most [pool] max_replacements of them happen per
 *   [pool] replacement_window; a failed instance is terminated only when its replacement fits in that
 *   budget (terminating it without replacing it would only shrink the pool). When the guard holds
 *   something back it says so in the log and in STATUS=, and the poll goes on as usual.
 * - Refresh: instances whose launch hash (struct instance's, a tag in EC2) is not the provider's are
 *   replaced, batch by batch (refresh.c decides the numbers): an old serving instance is drained and
 *   terminated only while the serving ones (old ones healthy and in rotation, plus new ones healthy for
 *   [pool] refresh_warmup) stay at [pool] refresh_min_healthy percent of desired; new ones are launched
 *   until desired of them have the current settings, at most max(1, desired - that minimum) beyond
 *   desired. While it runs, "beyond desired" above is left to it. Its launches are growth, not
 *   replacements: the storm guard neither counts nor holds them back. It starts by itself whenever a
 *   poll finds such instances (so a restarted lbd carries on from the tags), ends when none is left, and
 *   fails when a new instance never becomes healthy (judged failed, or not healthy [pool] refresh_timeout
 *   after its launch or after this lbd first saw it): on rollback the new instances that never were
 *   healthy are terminated and the old ones kept, and while it stays rolled back, launches use the old
 *   settings (the provider's previous ones, provider.h), so a pool whose old instances were already
 *   partly replaced gets back to desired on them. A failed or cancelled refresh starts again only on
 *   request (reconcile_refresh_start()) or with new settings. Never in the all-failing case.
 * - Every backend failing at once (a managed pool with no healthy backend and at least two that were up
 *   and are now down): the cause is most likely shared (the upstream, the health path, the network), and
 *   replacing every instance would not help. lbd terminates nothing (but dead instances), logs it, and
 *   keeps serving from the least bad: every backend whose last check got an HTTP answer (a wrong status,
 *   or a pass on its way back up before the rise), else those whose last check timed out (refused or
 *   reset connections are never used), are forced into rotation
 *   (backend->forced) until any backend passes its checks again. This is decided at every change of a
 *   verdict, inside the pool's on_change, so no request finds the pool empty in between. A single
 *   failing backend (desired 1) is replaced as usual.
 * - Stale data: when a list fails, nothing happens until one succeeds (the provider retries with backoff
 *   within a call); a terminate is skipped when the list it was decided from is older than 3 polls.
 *
 * Order of a poll's actions: launches first, then terminations (make before break; when the launch fails,
 * the API is failing, and nothing is terminated). Instances terminated to scale down leave the pool first
 * and are terminated once their in-flight requests have finished ([lbd] drain_timeout at most).
 *
 * Leadership: with [lease] (several lbd hosts on one pool), every host lists the pool, mirrors it into
 * its backends and judges them, but only the leader plans and acts. The authority (lease.c) is asked
 * before each plan and again right before each launch and terminate, since a plan may take a while to
 * carry out (drains); a host that has lost it drops the plan. The leader's epoch goes into every launch:
 * in the ClientToken and, through the provider, in a tag, so a deposed leader's late call is told apart.
 *
 * ClientToken: each launch carries "lbd-NONCE-GEN" ("lbd-eEPOCH-NONCE-GEN" with a lease), NONCE random
 * per lbd process and GEN counting launch decisions. A launch that failed is retried at the next poll with the same token as long as it asks for
 * the same count, so if the first attempt did start instances (the answer was lost), EC2 returns those
 * instead of starting more. GEN lives only in memory: after a restart, the list that precedes any launch
 * shows whatever an earlier attempt started, so nothing is launched twice. */
#include "lbd/reconcile.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"
#include "lbd/backend.h"
#include "lbd/config.h"
#include "lbd/history.h"
#include "lbd/refresh.h"
#include "lbd/zone.h"

_Static_assert(BACKEND_INSTANCE_ID_MAX == INSTANCE_ID_MAX, "backend and instance ids have the same size");
_Static_assert(sizeof(((struct backend *)0)->zone) == INSTANCE_ZONE_MAX, "backend and instance zones too");
_Static_assert(BACKEND_LAUNCH_HASH_MAX == INSTANCE_LAUNCH_HASH_MAX, "backend and instance hashes have the same size");

#define RECONCILE_UNLISTED_TTL_MIN (30 * USEC_PER_SEC) /* and at least 3 polls */
#define RECONCILE_TERMINATING_TTL  (10 * 60 * USEC_PER_SEC)
#define RECONCILE_STALE_POLLS      3
#define RECONCILE_DRAIN_CHECK      (50 * USEC_PER_MSEC)
#define RECONCILE_DRAIN_MAX        (5 * 60 * USEC_PER_SEC)
#define RECONCILE_MAX_REPLACEMENTS 1000 /* the config's upper bound */
#define RECONCILE_LOG_IDS          512  /* bytes of ids in one log line */
#define RECONCILE_TIMER_SLACK      (5 * USEC_PER_MSEC)

enum reconcile_phase {
        RECONCILE_IDLE,
        RECONCILE_LISTING,
        RECONCILE_LAUNCHING,
        RECONCILE_DRAINING,
        RECONCILE_TERMINATING,
};

/* Health check results ranked for the all-failed case: higher is less bad. */
enum {
        RECONCILE_RANK_NONE = 0,
        RECONCILE_RANK_REFUSED = 1,  /* refused, reset or another socket error: nobody there */
        RECONCILE_RANK_TIMEOUT = 2,  /* accepted, no answer in time */
        RECONCILE_RANK_ANSWERED = 3, /* answered with the wrong status */
        RECONCILE_RANK_PASSING = 4,  /* down, but its last check passed: on its way back up (rise) */
};

struct reconcile_victim {
        char id[INSTANCE_ID_MAX];
        const char *reason;
        bool replaced;           /* lost (failed, stopped): a replacement follows, not a scale-down */
        struct backend *backend; /* a reference while it drains, or NULL */
};

struct reconcile {
        struct event_base *base;
        struct provider *provider;
        struct pool *pool;
        const struct config *config;
        struct reconcile_clock clock;
        void (*on_change)(void *userdata);
        void *on_change_userdata;
        struct history *history; /* the status page's timeline, or NULL */

        enum reconcile_phase phase;
        bool started;
        bool poll_pending; /* poll as soon as the call in flight ends */
        struct event poll_timer;
        uint64_t poll_due_usec; /* now_usec() when poll_timer fires */
        bool poll_early;        /* that poll is an early one */
        struct event eval_timer;
        struct event drain_timer;

        struct reconcile_instance *known;
        size_t n_known;
        bool listed, list_ok;
        int last_error;
        uint64_t list_usec;        /* when the last good list was answered */
        uint64_t list_wall_usec;   /* the same, wall clock */
        char last_error_text[PROVIDER_ERROR_MAX]; /* the provider's words for last_error */
        uint64_t judge_after_usec; /* no failure judged before it (the all-failing case has just ended) */
        uint64_t regular_due_usec; /* now_usec() when the regular poll is due (an early one may come first) */
        size_t by_state[INSTANCE_UNKNOWN + 1];

        /* the plan being carried out */
        unsigned plan_launch;
        unsigned plan_replacements;
        struct reconcile_victim *victims;
        size_t n_victims;
        uint64_t plan_list_usec;
        uint64_t drain_deadline;

        /* zones (zone.h): the launches planned in each, the launch in flight */
        struct zones zones;
        size_t plan_zone[PROVIDER_MAX_ZONES];
        size_t launch_zone;    /* its zone's index, SIZE_MAX when the provider has no zones */
        unsigned launch_count; /* the instances it asks for */
        bool rebalancing;      /* one instance launched beyond desired to even out the zones */

        /* leadership (see the top): who may act, and the epoch of the last decision */
        struct reconcile_authority authority;
        bool following;
        uint64_t epoch;

        /* ClientToken */
        uint64_t nonce, generation;
        uint64_t token_epoch;
        bool token_pending;
        unsigned token_count;
        char token_zone[INSTANCE_ID_MAX];
        bool token_previous; /* the token's launch uses the previous settings */
        char token[64];

        /* storm guard */
        uint64_t replacement_usec[RECONCILE_MAX_REPLACEMENTS]; /* ring of replacement times */
        size_t n_replacements, replacement_next;
        uint64_t high_water;
        uint64_t high_water_desired;
        uint64_t desired;          /* [pool] desired, or what scaling on demand set (autoscale.c) */
        bool guard;
        size_t held; /* replacements the guard is holding back */
        bool panic;
        bool evaluating;      /* inside reconcile_evaluate_panic(), which pool_refresh() re-enters */
        bool changed_pending; /* on_change is owed for a change made by reconcile_evaluate_panic() */

        /* the instance refresh (see "Refresh" above) */
        enum refresh_state refresh;
        char refresh_target[INSTANCE_LAUNCH_HASH_MAX]; /* the hash it refreshes to */
        struct refresh_settings refresh_settings;
        bool refresh_manual;           /* started by the admin API with settings of its own */
        uint64_t refresh_started_wall; /* wall clock */
        uint64_t refresh_replaced;     /* instances with other settings it terminated */
        struct refresh_counts refresh_counts;
        char refresh_reason[REFRESH_REASON_MAX]; /* why it ended, "" while it runs */
        /* After a rollback, the old settings the pool goes back to: launches use them (the provider's
         * previous settings) while the refresh stays rolled back; "" when none */
        char rollback_hash[INSTANCE_LAUNCH_HASH_MAX];

        struct reconcile_stats stats;
        uint64_t rng;
};

static uint64_t reconcile_real_monotonic(void *userdata)
{
        return now_usec();
}

static uint64_t reconcile_real_realtime(void *userdata)
{
        return realtime_usec();
}

static uint64_t reconcile_now(const struct reconcile *r)
{
        return r->clock.monotonic(r->clock.userdata);
}

static uint64_t reconcile_wall(const struct reconcile *r)
{
        return r->clock.realtime(r->clock.userdata);
}

static bool reconcile_managed(const struct reconcile *r)
{
        return r->provider->ops->managed;
}

static void reconcile_changed(struct reconcile *r)
{
        if (r->on_change)
                r->on_change(r->on_change_userdata);
}

/* Whether this host may act on the pool now (see "Leadership" at the top); when it may, the epoch goes
 * to r->epoch and the provider. A change either way is logged once. */
static bool reconcile_may_act(struct reconcile *r)
{
        uint64_t epoch = 0;
        bool may = !r->authority.may_mutate || r->authority.may_mutate(r->authority.userdata, &epoch);

        if (may) {
                r->epoch = epoch;
                r->provider->epoch = epoch;
        }
        if (may == r->following) {
                r->following = !may;
                if (may)
                        log_info("Leading in epoch %" PRIu64 ": acting on the pool", epoch);
                else
                        log_info("Not leading: listing and serving the pool, changing nothing");
                reconcile_changed(r);
        }
        return may;
}

static uint64_t reconcile_random(struct reconcile *r)
{
        r->rng ^= r->rng << 13;
        r->rng ^= r->rng >> 7;
        r->rng ^= r->rng << 17;
        return r->rng;
}

/* Timers run on the event loop's real clock, whatever the injected one says. */
static void reconcile_schedule(struct reconcile *r, uint64_t delay_usec, bool early)
{
        struct timeval tv = timeval_from_usec(delay_usec);

        r->poll_early = early;
        r->poll_due_usec = now_usec() + delay_usec;
        (void)evtimer_add(&r->poll_timer, &tv);
}

/* Appends the ids of <ids> (<stride> bytes apart) to <buf>, cut short when long. */
static const char *reconcile_ids(const char *ids, size_t stride, size_t n, char *buf, size_t size)
{
        size_t len = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < n && len < size; i++) {
                int k = snprintf(buf + len, size - len, "%s%s", i ? " " : "", ids + i * stride);

                if (k < 0)
                        break;
                len += (size_t)k;
        }
        if (len >= size && size > 4)
                memcpy(buf + size - 4, "...", 4);
        return buf;
}

/* ---- what is known ---- */

static struct reconcile_instance *reconcile_find(struct reconcile *r, const char *id)
{
        for (size_t i = 0; i < r->n_known; i++)
                if (strcmp(r->known[i].inst.id, id) == 0)
                        return &r->known[i];
        return NULL;
}

static bool reconcile_alive_state(enum instance_state s)
{
        return s == INSTANCE_PENDING || s == INSTANCE_RUNNING;
}

static bool reconcile_dead_state(enum instance_state s)
{
        return s == INSTANCE_STOPPING || s == INSTANCE_STOPPED || s == INSTANCE_UNKNOWN;
}

/* The backend serving <k>, if it is in the pool. */
static struct backend *reconcile_backend(const struct reconcile *r, const struct reconcile_instance *k)
{
        struct backend *b;

        if (!k->inst.has_addr)
                return NULL;
        b = pool_find(r->pool, &k->inst.addr);
        if (!b || strcmp(b->instance_id, k->inst.id) != 0)
                return NULL;
        return b;
}

static bool reconcile_should_serve(const struct reconcile *r, const struct reconcile_instance *k)
{
        return !k->terminating && k->inst.state == INSTANCE_RUNNING && k->inst.has_addr && !k->outside;
}

/* Makes the pool's backends the running instances' addresses. Returns true when the set changed. */
static bool reconcile_sync_pool(struct reconcile *r)
{
        _cleanup_free_ struct netaddr *addrs = NULL;
        _cleanup_free_ const struct reconcile_instance **owners = NULL;
        size_t n = 0;
        bool stale = false, same;
        int ret;

        addrs = calloc(r->n_known ? r->n_known : 1, sizeof(*addrs));
        owners = calloc(r->n_known ? r->n_known : 1, sizeof(*owners));
        if (!addrs || !owners) {
                log_error("Out of memory updating the backends");
                return false;
        }

        for (size_t i = 0; i < r->n_known; i++) {
                const struct reconcile_instance *k = &r->known[i];
                struct backend *b;
                bool dup = false;

                if (!reconcile_should_serve(r, k))
                        continue;
                for (size_t j = 0; j < n; j++)
                        if (netaddr_equal(&addrs[j], &k->inst.addr))
                                dup = true;
                if (dup) {
                        log_warning("Instance %s has the address of another instance; not using it",
                                    k->inst.id);
                        continue;
                }
                b = pool_find(r->pool, &k->inst.addr);
                if (b && b->instance_id[0] != '\0' && strcmp(b->instance_id, k->inst.id) != 0)
                        stale = true;
                owners[n] = k;
                addrs[n++] = k->inst.addr;
        }

        same = n == r->pool->n_backends && !stale;
        for (size_t i = 0; same && i < n; i++) {
                struct backend *b = pool_find(r->pool, &addrs[i]);

                if (!b || b->index != i)
                        same = false;
        }

        if (!same) {
                if (stale) {
                        /* Drop the old instance's backend first, so the new one starts afresh. */
                        _cleanup_free_ struct netaddr *keep = calloc(n ? n : 1, sizeof(*keep));
                        size_t n_keep = 0;

                        if (!keep) {
                                log_error("Out of memory updating the backends");
                                return false;
                        }
                        for (size_t i = 0; i < n; i++) {
                                struct backend *b = pool_find(r->pool, &addrs[i]);

                                if (!b || b->instance_id[0] == '\0' ||
                                    strcmp(b->instance_id, owners[i]->inst.id) == 0)
                                        keep[n_keep++] = addrs[i];
                        }
                        ret = pool_set_backends(r->pool, keep, n_keep);
                        if (ret < 0) {
                                log_error_errno(ret, "Failed to update the backends: %m");
                                return false;
                        }
                }
                ret = pool_set_backends(r->pool, addrs, n);
                if (ret < 0) {
                        log_error_errno(ret, "Failed to update the backends: %m");
                        return false;
                }
        }

        for (size_t i = 0; i < n; i++) {
                struct backend *b = pool_find(r->pool, &addrs[i]);

                if (!b)
                        continue;
                memcpy(b->instance_id, owners[i]->inst.id, sizeof(b->instance_id));
                b->instance_state = provider_instance_state_name(owners[i]->inst.state);
                b->launched_usec = owners[i]->inst.launched_usec;
                memcpy(b->zone, owners[i]->inst.zone, sizeof(b->zone));
                memcpy(b->launch_hash, owners[i]->inst.launch_hash, sizeof(b->launch_hash));
                memcpy(b->subnet, owners[i]->inst.subnet, sizeof(b->subnet));
        }
        return !same;
}

/* ---- judging ---- */

static uint64_t reconcile_launched(const struct reconcile_instance *k)
{
        return k->inst.launched_usec ? k->inst.launched_usec : k->seen_wall_usec;
}

/* When <k> counts as failed (see the top of the file), on the reconciler's monotonic clock; UINT64_MAX
 * when it doesn't (healthy, not checked yet, not running, or not a backend). */
static uint64_t reconcile_failed_at(const struct reconcile *r, const struct reconcile_instance *k)
{
        const struct config *c = r->config;
        uint64_t now = reconcile_now(r), wall = reconcile_wall(r), grace_end, at;
        struct backend *b;

        if (k->terminating || k->inst.state != INSTANCE_RUNNING)
                return UINT64_MAX;
        b = reconcile_backend(r, k);
        /* A backend that has passed every check since it went down (rise_count > 0) is coming back: a relay
         * restarted on its instance isn't worth the instance. A pass from before it went down proves
         * nothing (live traffic often takes a backend down before any probe fails), so last_check is not
         * what counts. Should it fail again, health.c tells the pool, and it is judged from when it went
         * down. */
        if (!b || b->healthy || !b->checked_once || b->maintenance || b->rise_count > 0)
                return UINT64_MAX;
        at = b->health_changed_usec + c->health_fall * c->health_interval_usec;
        grace_end = reconcile_launched(k) + c->grace_usec;
        if (grace_end > wall)
                at = MAX(at, now + (grace_end - wall));
        return MAX(at, r->judge_after_usec);
}

static bool reconcile_failed(const struct reconcile *r, const struct reconcile_instance *k)
{
        return reconcile_now(r) >= reconcile_failed_at(r, k);
}

static int reconcile_rank(const struct backend *b)
{
        switch (b->last_check) {
        case CHECK_FAIL:
                return RECONCILE_RANK_ANSWERED;
        case CHECK_TIMEOUT:
                return RECONCILE_RANK_TIMEOUT;
        case CHECK_REFUSED:
        case CHECK_ERROR:
                return RECONCILE_RANK_REFUSED;
        case CHECK_OK:
                return RECONCILE_RANK_PASSING;
        case CHECK_NONE:
                break;
        }
        return RECONCILE_RANK_NONE;
}

/* Decides the all-failed case and sets the backends' forced flags. Runs inside the pool's on_change (a
 * verdict just changed), so that no request finds the pool empty in between: it must only set flags. */
static void reconcile_evaluate_panic(struct reconcile *r)
{
        struct pool *pool = r->pool;
        size_t n_down = 0, n_forced = 0;
        bool any_healthy = false, panic, changed = false;
        int best = RECONCILE_RANK_NONE;

        for (size_t i = 0; i < pool->n_backends; i++) {
                const struct backend *b = pool->backends[i];

                if (b->healthy)
                        any_healthy = true;
                else if (b->been_healthy) {
                        n_down++;
                        best = MAX(best, reconcile_rank(b));
                }
        }
        panic = reconcile_managed(r) && !any_healthy && n_down >= 2;

        for (size_t i = 0; i < pool->n_backends; i++) {
                struct backend *b = pool->backends[i];
                /* The least bad: every one that answers (a wrong status, or passing again before it is
                 * up), else those that time out; never one that refuses. */
                bool forced = panic && !b->healthy && b->been_healthy && best >= RECONCILE_RANK_TIMEOUT &&
                              reconcile_rank(b) >= MIN(best, (int)RECONCILE_RANK_ANSWERED);

                if (forced != b->forced) {
                        b->forced = forced;
                        changed = true;
                }
                if (forced)
                        n_forced++;
        }

        if (panic && (!r->panic || changed)) {
                if (n_forced > 0)
                        log_warning(
                                "Every backend is failing: terminating nothing; %zu of %zu kept in rotation "
                                "as the least bad (last check: %s)",
                                n_forced, pool->n_backends,
                                best == RECONCILE_RANK_PASSING    ? "passing again"
                                : best == RECONCILE_RANK_ANSWERED ? "answered with a wrong status"
                                                                  : "timeout");
                else
                        log_warning(
                                "Every backend is failing: terminating nothing; none answers, so none is "
                                "kept in rotation");
        } else if (!panic && r->panic) {
                log_notice("A backend passes its health checks again: back to normal");
                history_event(r->history, HISTORY_EVENT_ALL_FAILING,
                              "A backend passes its health checks again: back to normal");
                r->judge_after_usec =
                        reconcile_now(r) + (r->config->health_rise + 1) * r->config->health_interval_usec;
        }
        if (panic && !r->panic)
                history_event(r->history, HISTORY_EVENT_ALL_FAILING,
                              "Every backend is failing: terminating nothing; %zu of %zu kept in rotation as "
                              "the least bad",
                              n_forced, pool->n_backends);
        if (panic != r->panic) {
                r->panic = panic;
                changed = true;
        }
        if (changed) {
                /* STATUS= and the like follow from the eval timer: this may run inside a health verdict. */
                r->changed_pending = true;
                pool_refresh(pool);
        }
}

/* ---- the storm guard ---- */

static unsigned reconcile_replacements(struct reconcile *r)
{
        uint64_t now = reconcile_now(r), window = r->config->replacement_window_usec;
        unsigned n = 0;

        for (size_t i = 0; i < r->n_replacements; i++)
                if (now < r->replacement_usec[i] + window)
                        n++;
        return n;
}

static unsigned reconcile_budget(struct reconcile *r)
{
        unsigned used = reconcile_replacements(r);

        return r->config->max_replacements > used ? (unsigned)(r->config->max_replacements - used) : 0;
}

static void reconcile_record_replacement(struct reconcile *r)
{
        r->replacement_usec[r->replacement_next] = reconcile_now(r);
        r->replacement_next = (r->replacement_next + 1) % RECONCILE_MAX_REPLACEMENTS;
        if (r->n_replacements < RECONCILE_MAX_REPLACEMENTS)
                r->n_replacements++;
}

static void reconcile_set_guard(struct reconcile *r, bool guard, size_t held)
{
        if (guard && !r->guard)
                log_warning("Replacement storm guard: %u replacements in the last %llu s (at most %llu); "
                            "holding back %zu until the window allows",
                            reconcile_replacements(r),
                            (unsigned long long)(r->config->replacement_window_usec / USEC_PER_SEC),
                            (unsigned long long)r->config->max_replacements, held);
        else if (!guard && r->guard)
                log_notice("Replacement storm guard released");
        if (guard && !r->guard)
                history_event(r->history, HISTORY_EVENT_GUARD,
                              "Replacement storm guard: %u replacements in the last %llu s; holding back %zu",
                              reconcile_replacements(r),
                              (unsigned long long)(r->config->replacement_window_usec / USEC_PER_SEC), held);
        else if (!guard && r->guard)
                history_event(r->history, HISTORY_EVENT_GUARD, "Replacement storm guard released");
        r->held = guard ? held : 0;
        if (guard != r->guard) {
                r->guard = guard;
                reconcile_changed(r);
        }
}

/* ---- the poll's cycle ---- */

static void reconcile_list(struct reconcile *r);
static void reconcile_launch(struct reconcile *r);
static void reconcile_drain(struct reconcile *r);

static void reconcile_clear_victims(struct reconcile *r)
{
        for (size_t i = 0; i < r->n_victims; i++)
                backend_unref(r->victims[i].backend);
        free(r->victims);
        r->victims = NULL;
        r->n_victims = 0;
}

/* When the first backend that may still have an early poll counts as failed (reconciler's clock),
 * UINT64_MAX when none will. An early poll is made at most once per poll interval for each instance, so a
 * failure the poll could not act on (a failed launch, a stale list) costs one extra call per interval,
 * while instances failing one after the other are each replaced at once. */
static uint64_t reconcile_first_failed_at(const struct reconcile *r)
{
        uint64_t now = reconcile_now(r), first = UINT64_MAX;

        for (size_t i = 0; i < r->n_known; i++) {
                const struct reconcile_instance *k = &r->known[i];

                if (k->early_poll_usec != 0 && now < k->early_poll_usec + r->config->poll_usec)
                        continue;
                first = MIN(first, reconcile_failed_at(r, k));
        }
        return first;
}

/* The delay until the first backend counts as failed, when an early poll may be made for it (not in the
 * all-failing case or while the guard holds back replacements); UINT64_MAX when none. */
static uint64_t reconcile_early_delay(const struct reconcile *r)
{
        uint64_t now = reconcile_now(r), first;

        if (!reconcile_managed(r) || r->panic || r->guard)
                return UINT64_MAX;
        first = reconcile_first_failed_at(r);
        if (first == UINT64_MAX)
                return UINT64_MAX;
        /* A little past the moment: the loop's timers may fire a few milliseconds early (libevent's
         * coarse clock), and a poll made before it would find nobody failed yet. */
        return first > now ? first - now + RECONCILE_TIMER_SLACK : 0;
}

/* The call in flight is over: poll again now (<again>, or a poll was asked for meanwhile), when a failing
 * backend counts as failed, or after [pool] poll. */
static void reconcile_done(struct reconcile *r, bool again)
{
        uint64_t poll = r->config->poll_usec, regular, early;

        r->phase = RECONCILE_IDLE;
        reconcile_clear_victims(r);
        r->plan_launch = 0;
        if (again || r->poll_pending) {
                r->poll_pending = false;
                reconcile_schedule(r, 0, false);
                return;
        }
        regular = poll - reconcile_random(r) % (poll / 10 + 1);
        r->regular_due_usec = now_usec() + regular;
        early = reconcile_early_delay(r);
        if (early < regular) {
                log_info("A backend is failing: polling in %llu ms",
                         (unsigned long long)(early / USEC_PER_MSEC));
                reconcile_schedule(r, early, true);
                return;
        }
        reconcile_schedule(r, regular, false);
}

/* Adds <k> to the instances this poll terminates; <replaced>: it was lost (failed, stopped) rather than
 * beyond desired. */
static int reconcile_add_victim(struct reconcile *r, const struct reconcile_instance *k, const char *reason,
                                bool replaced)
{
        struct reconcile_victim *v;

        v = realloc(r->victims, (r->n_victims + 1) * sizeof(*v));
        if (!v)
                return -ENOMEM;
        r->victims = v;
        v = &r->victims[r->n_victims++];
        memcpy(v->id, k->inst.id, sizeof(v->id));
        v->reason = reason;
        v->replaced = replaced;
        v->backend = NULL;
        return 0;
}

/* Serving: healthy (not merely forced) and in rotation. */
static bool reconcile_serving(const struct backend *b)
{
        return b && b->healthy && backend_in_rotation(b);
}

/* Sort order for scale-down: failed, then not healthy, then newest first (among the healthy, the least
 * loaded goes first: reconcile_trim_choice()). */
struct reconcile_candidate {
        struct reconcile_instance *k;
        bool failed, healthy;
        double load;            /* its backend's smoothed load (backend.h), 0 without one */
        uint64_t launched;
};

/* Moves <alive>[<i>] (of <*n>) to the victims with <reason>. Returns 0 or -ENOMEM. */
static int reconcile_take_victim(struct reconcile *r, struct reconcile_candidate *alive, size_t *n, size_t i,
                                 const char *reason, bool replaced)
{
        int ret = reconcile_add_victim(r, alive[i].k, reason, replaced);

        if (ret < 0)
                return ret;
        memmove(alive + i, alive + i + 1, (*n - i - 1) * sizeof(*alive));
        (*n)--;
        return 0;
}

static int reconcile_compare_candidates(const void *a, const void *b)
{
        const struct reconcile_candidate *x = a, *y = b;

        if (x->failed != y->failed)
                return x->failed ? -1 : 1;
        if (x->healthy != y->healthy)
                return x->healthy ? 1 : -1;
        if (x->launched != y->launched)
                return x->launched > y->launched ? -1 : 1;
        return strcmp(x->k->inst.id, y->k->inst.id);
}

/* ---- zones ---- */

/* The zone of <k> (an index in r->zones), or -1: none known, or one no longer configured. */
static int reconcile_zone_of(const struct reconcile *r, const struct reconcile_instance *k)
{
        return zones_find(&r->zones, k->inst.subnet);
}

static void reconcile_zone_counts(const struct reconcile *r, const struct reconcile_candidate *alive, size_t n,
                                  size_t counts[static PROVIDER_MAX_ZONES])
{
        memset(counts, 0, PROVIDER_MAX_ZONES * sizeof(counts[0]));
        for (size_t i = 0; i < n; i++) {
                int z = reconcile_zone_of(r, alive[i].k);

                if (z >= 0)
                        counts[z]++;
        }
}

/* <k> failed its checks and is replaced: when another instance in its zone failed within the storm guard's
 * window, the zone itself is likely failing: closed like one without capacity, so the replacement (and
 * the next launches) go to the other zones until a rebalance tries it again. */
static void reconcile_zone_failed(struct reconcile *r, const struct reconcile_instance *k)
{
        int z = reconcile_zone_of(r, k);
        uint64_t now = reconcile_now(r), delay;

        if (z < 0 || r->zones.n < 2 || !zones_instance_failed(&r->zones, (size_t)z, now,
                                                              r->config->replacement_window_usec))
                return;
        delay = zones_refused(&r->zones, (size_t)z, now, r->config->zone_backoff_usec);
        log_warning("Zone %s: instances there keep failing their checks; launching in the other zones, leaving "
                    "it alone for %llu s",
                    r->zones.z[z].name, (unsigned long long)(delay / USEC_PER_SEC));
}

/* Which of <alive> (n > desired, in scale-down order) goes first: the first in that order, unless it is
 * healthy (then all are): then the least loaded (the fewest requests to wait for while it drains, and the
 * least work to move), the newest among equal loads (backend_load_less(): a steady load's noise decides
 * nothing); with zones, one in no configured zone, else the least loaded of the fullest zone, so that
 * scaling down and a rebalance keep the zones even. */
static size_t reconcile_trim_choice(const struct reconcile *r, const struct reconcile_candidate *alive, size_t n)
{
        size_t counts[PROVIDER_MAX_ZONES], fullest = 0, least = n;
        int zone = -1;

        if (alive[0].failed || !alive[0].healthy)
                return 0;
        if (r->zones.n >= 2) {
                reconcile_zone_counts(r, alive, n, counts);
                for (size_t i = 0; i < n; i++)
                        if (reconcile_zone_of(r, alive[i].k) < 0)
                                return i;
                for (size_t z = 1; z < r->zones.n; z++)
                        if (counts[z] > counts[fullest])
                                fullest = z;
                zone = (int)fullest;
        }
        for (size_t i = 0; i < n; i++)
                if ((zone < 0 || reconcile_zone_of(r, alive[i].k) == zone) &&
                    (least == n || alive[i].load < alive[least].load))
                        least = i;
        if (least == n)
                return 0;
        /* The first (newest) whose load equals the least within the margins. */
        for (size_t i = 0; i < n; i++)
                if ((zone < 0 || reconcile_zone_of(r, alive[i].k) == zone) &&
                    !backend_load_less(alive[least].load, alive[i].load))
                        return i;
        return least;
}

/* Logs why healthy <alive>[<i>] goes first: its load beside the others'. */
static void reconcile_log_trim(const struct reconcile_candidate *alive, size_t n, size_t i)
{
        char others[RECONCILE_LOG_IDS] = "";
        size_t len = 0;

        for (size_t j = 0; j < n && len < sizeof(others); j++) {
                int w;

                if (j == i)
                        continue;
                w = snprintf(others + len, sizeof(others) - len, "%s%s %.1f", len ? ", " : "", alive[j].k->inst.id,
                             alive[j].load);
                if (w < 0)
                        break;
                len += (size_t)w;
        }
        log_info("Scaling in: %s goes first, %.1f requests in flight on average (the others: %s; newest first "
                 "among equal loads)",
                 alive[i].k->inst.id, alive[i].load, others[0] ? others : "none");
}

/* During a rebalance, the instance beyond desired is trimmed only once the new one is healthy (make
 * before break): true while <first> (the first to go) is not healthy yet, nor failed, within its grace. */
static bool reconcile_rebalance_waits(const struct reconcile *r, const struct reconcile_candidate *first)
{
        return r->rebalancing && !first->failed && !first->healthy &&
               reconcile_launched(first->k) + r->config->grace_usec > reconcile_wall(r);
}

/* Spreads the plan's launches over the zones, each to the open one with the fewest instances; with
 * nothing else to do (<may_rebalance>: at desired, all healthy), launches one in an open zone that has 2
 * fewer than another, the first half of a rebalance (the fullest zone gives one up once it is healthy). */
static void reconcile_plan_zones(struct reconcile *r, const struct reconcile_candidate *alive, size_t n_alive,
                                 bool may_rebalance)
{
        uint64_t now = reconcile_now(r);
        size_t counts[PROVIDER_MAX_ZONES], from, to;

        reconcile_zone_counts(r, alive, n_alive, counts);
        for (size_t i = 0; i < n_alive && may_rebalance; i++)
                if (!alive[i].healthy)
                        may_rebalance = false;
        if (r->plan_launch == 0 && r->n_victims == 0 && may_rebalance &&
            zones_unbalanced(&r->zones, counts, now, &from, &to)) {
                log_notice("Zones unbalanced (%s has %zu instances, %s %zu): launching one in %s, then one in "
                           "%s goes once it is healthy",
                           r->zones.z[from].name, counts[from], r->zones.z[to].name, counts[to],
                           r->zones.z[to].name, r->zones.z[from].name);
                r->rebalancing = true;
                r->plan_launch = 1;
                r->plan_zone[to] = 1;
                return;
        }
        for (unsigned i = 0; i < r->plan_launch; i++) {
                size_t z = zones_pick(&r->zones, counts, now);

                r->plan_zone[z]++;
                counts[z]++;
        }
}

/* ---- the instance refresh ---- */

static void reconcile_refresh_from_config(struct reconcile *r)
{
        r->refresh_settings = (struct refresh_settings){
                .min_healthy = r->config->refresh_min_healthy,
                .warmup_usec = r->config->refresh_warmup_usec,
                .timeout_usec = r->config->refresh_timeout_usec,
                .on_failure = r->config->refresh_on_failure,
        };
}

/* True when <k> was launched with other settings than the ones lbd launches with now. */
static bool reconcile_is_old(const struct reconcile *r, const struct reconcile_instance *k)
{
        return r->refresh_target[0] && strcmp(k->inst.launch_hash, r->refresh_target) != 0;
}

static void reconcile_refresh_begin(struct reconcile *r, size_t n_old, size_t n_alive, bool manual)
{
        r->refresh = REFRESH_RUNNING;
        r->refresh_manual = manual;
        r->refresh_started_wall = reconcile_wall(r);
        r->refresh_replaced = 0;
        r->refresh_reason[0] = '\0';
        log_notice("Instance refresh started%s: %zu of %zu instances have other launch settings than %s; "
                   "keeping at least %" PRIu64 "%% of desired serving, new instances counted after %llu s "
                   "healthy, %llu s to become healthy, then %s",
                   manual ? " (admin API)" : "", n_old, n_alive, r->refresh_target,
                   r->refresh_settings.min_healthy,
                   (unsigned long long)(r->refresh_settings.warmup_usec / USEC_PER_SEC),
                   (unsigned long long)(r->refresh_settings.timeout_usec / USEC_PER_SEC),
                   r->refresh_settings.on_failure == REFRESH_ROLLBACK ? "roll back" : "stop");
        reconcile_changed(r);
}

/* The refresh is over: <state> with its reason (a log line of <priority>). */
static void reconcile_refresh_end(struct reconcile *r, enum refresh_state state, int priority,
                                  const char *reason)
{
        r->refresh = state;
        (void)snprintf(r->refresh_reason, sizeof(r->refresh_reason), "%s", reason);
        log_full_errno(priority, 0, "Instance refresh %s: %s", refresh_state_name(state), reason);
        reconcile_changed(r);
}

/* A new instance (with the current settings) that fails the refresh: never healthy, and judged failed by
 * the usual rule, or still not healthy [pool] refresh_timeout after its launch (or after this lbd first
 * saw it: a restarted lbd gives each instance its checks before it judges). */
static bool reconcile_refresh_failed(const struct reconcile *r, const struct reconcile_candidate *x)
{
        const struct reconcile_instance *k = x->k;
        const struct backend *b = reconcile_backend(r, k);
        uint64_t wall = reconcile_wall(r), since = MAX(reconcile_launched(k), k->seen_wall_usec);

        if (b && b->been_healthy)
                return false;
        return x->failed || wall >= since + r->refresh_settings.timeout_usec;
}

/* On a rollback: the old settings to go back to, when the provider can still launch them (its previous
 * settings, kept across reloads) and they are those of an old instance still alive or of the refresh's
 * start (the provider's previous ones are the ones replaced); none otherwise. */
static void reconcile_rollback_target(struct reconcile *r, const struct reconcile_candidate *alive, size_t n)
{
        const char *previous = r->provider->previous_hash;
        bool seen = false;

        r->rollback_hash[0] = '\0';
        if (!previous[0] || strcmp(previous, r->refresh_target) == 0)
                return;
        for (size_t i = 0; i < n; i++)
                if (strcmp(alive[i].k->inst.launch_hash, previous) == 0)
                        seen = true;
        if (!seen && r->refresh_replaced == 0)
                return;
        memcpy(r->rollback_hash, previous, sizeof(r->rollback_hash));
}

/* Whether a launch now uses the old settings: after a rollback, while the provider still has them. */
static bool reconcile_launch_previous(const struct reconcile *r)
{
        return r->refresh == REFRESH_ROLLED_BACK && r->rollback_hash[0] &&
               strcmp(r->rollback_hash, r->provider->previous_hash) == 0;
}

/* Starts, ends or stops the refresh from what a poll sees in <alive> (sorted as for scale-down), and on
 * a failure with rollback, moves the new instances that never became healthy from <alive> to the
 * victims. Returns 0 or -ENOMEM. */
static int reconcile_refresh_check(struct reconcile *r, struct reconcile_candidate *alive, size_t *n_alive)
{
        const char *target = r->provider->launch_hash;
        const struct reconcile_candidate *failed = NULL;
        size_t n_old = 0;
        char reason[REFRESH_REASON_MAX];
        int ret;

        if (!target[0]) {
                r->refresh = REFRESH_NONE;
                r->refresh_target[0] = '\0';
                return 0;
        }
        if (strcmp(target, r->refresh_target) != 0) {
                /* New settings (a reload) or the first poll: a running refresh goes on towards them, with
                 * the settings it was given; anything else that ended was for other settings. */
                bool running = r->refresh == REFRESH_RUNNING;

                if (running)
                        log_notice("Launch settings changed during the refresh (%s -> %s): it goes on "
                                   "towards the new ones",
                                   r->refresh_target, target);
                else
                        r->refresh = REFRESH_NONE;
                r->rollback_hash[0] = '\0';
                if (!running || !r->refresh_manual)
                        reconcile_refresh_from_config(r);
                memcpy(r->refresh_target, target, sizeof(r->refresh_target));
        }
        for (size_t i = 0; i < *n_alive; i++)
                if (reconcile_is_old(r, alive[i].k))
                        n_old++;

        if (n_old == 0) {
                if (r->refresh == REFRESH_RUNNING) {
                        (void)snprintf(reason, sizeof(reason),
                                       "every instance has the launch settings %s (%" PRIu64 " replaced)",
                                       r->refresh_target, r->refresh_replaced);
                        reconcile_refresh_end(r, REFRESH_DONE, LOG_NOTICE, reason);
                }
                return 0;
        }
        if (r->refresh == REFRESH_NONE || r->refresh == REFRESH_DONE)
                reconcile_refresh_begin(r, n_old, *n_alive, false);
        if (r->refresh != REFRESH_RUNNING)
                return 0;

        for (size_t i = 0; i < *n_alive && !failed; i++)
                if (!reconcile_is_old(r, alive[i].k) && reconcile_refresh_failed(r, &alive[i]))
                        failed = &alive[i];
        if (!failed)
                return 0;

        if (r->refresh_settings.on_failure == REFRESH_STOP) {
                (void)snprintf(reason, sizeof(reason),
                               "instance %s with the new settings did not become healthy in time; stopped, "
                               "nothing undone",
                               failed->k->inst.id);
                reconcile_refresh_end(r, REFRESH_FAILED, LOG_WARNING, reason);
                return 0;
        }
        reconcile_rollback_target(r, alive, *n_alive);
        (void)snprintf(reason, sizeof(reason),
                       "instance %s with the new settings did not become healthy in time; terminating the "
                       "new instances that never did, keeping the %zu with other settings%s%s",
                       failed->k->inst.id, n_old,
                       r->rollback_hash[0]        ? ", launching any missing ones with the old settings "
                       : r->refresh_replaced > 0 ? " (the old settings are not known here: any missing ones "
                                                   "are launched with the configured ones)"
                                                 : "",
                       r->rollback_hash);
        for (size_t i = 0; i < *n_alive;) {
                const struct backend *b = reconcile_backend(r, alive[i].k);

                if (reconcile_is_old(r, alive[i].k) || (b && b->been_healthy)) {
                        i++;
                        continue;
                }
                ret = reconcile_take_victim(r, alive, n_alive, i, "rolled back: launched by a refresh that failed",
                                            false);
                if (ret < 0)
                        return ret;
        }
        reconcile_refresh_end(r, REFRESH_ROLLED_BACK, LOG_WARNING, reason);
        return 0;
}

/* A running refresh's step in this poll: picks the old serving instances that may go (the oldest first)
 * from <alive> into the victims, and says how many to launch. Returns 0 or -ENOMEM. */
static int reconcile_refresh_step(struct reconcile *r, struct reconcile_candidate *alive, size_t *n_alive,
                                  size_t *ret_launch)
{
        uint64_t now = reconcile_now(r);
        struct refresh_counts c = {.desired = (size_t)r->desired};
        struct refresh_step step;
        size_t left;
        int ret;

        for (size_t i = 0; i < *n_alive; i++) {
                const struct backend *b = reconcile_backend(r, alive[i].k);
                bool serving = reconcile_serving(b);

                if (reconcile_is_old(r, alive[i].k)) {
                        c.old_total++;
                        c.old_serving += serving;
                } else {
                        c.new_total++;
                        c.new_warm += serving && now >= b->health_changed_usec + r->refresh_settings.warmup_usec;
                }
        }
        refresh_plan(&r->refresh_settings, &c, &step);
        r->refresh_counts = c;

        /* <alive> runs from the least to the most worth keeping among the healthy: newest first, so the
         * oldest are at the end. */
        left = step.terminate_old;
        for (size_t i = *n_alive; i-- > 0 && left > 0;) {
                if (!reconcile_is_old(r, alive[i].k) || !reconcile_serving(reconcile_backend(r, alive[i].k)))
                        continue;
                ret = reconcile_take_victim(r, alive, n_alive, i, "replaced by the instance refresh", true);
                if (ret < 0)
                        return ret;
                left--;
                r->refresh_replaced++;
        }
        if (step.launch > 0 || step.terminate_old > 0)
                log_info("Instance refresh: %zu with other settings (%zu serving), %zu with %s (%zu counted); "
                         "launching %zu, terminating %zu",
                         c.old_total, c.old_serving, c.new_total, r->refresh_target, c.new_warm, step.launch,
                         step.terminate_old);
        *ret_launch = step.launch;
        return 0;
}

/* Decides what this poll does (see the rules at the top) into plan_launch and victims. */
static int reconcile_plan(struct reconcile *r)
{
        _cleanup_free_ struct reconcile_candidate *alive = NULL;
        size_t n_alive = 0, n_failed = 0, n_kept_failed = 0, held = 0, refresh_launch = 0;
        uint64_t desired = r->desired, needed, deficit, replacements, growth, allowed;
        bool refreshing = false;
        unsigned budget;
        int ret;

        r->plan_launch = 0;
        r->plan_replacements = 0;
        memset(r->plan_zone, 0, sizeof(r->plan_zone));
        if (!reconcile_managed(r))
                return 0;
        zones_sync(&r->zones, r->provider);

        alive = calloc(r->n_known ? r->n_known : 1, sizeof(*alive));
        if (!alive)
                return -ENOMEM;
        for (size_t i = 0; i < r->n_known; i++) {
                struct reconcile_instance *k = &r->known[i];
                struct backend *b;

                if (k->terminating)
                        continue;
                if (k->listed && reconcile_dead_state(k->inst.state)) {
                        ret = reconcile_add_victim(r, k, provider_instance_state_name(k->inst.state), true);
                        if (ret < 0)
                                return ret;
                        continue;
                }
                if (!reconcile_alive_state(k->inst.state))
                        continue;
                b = reconcile_backend(r, k);
                alive[n_alive++] = (struct reconcile_candidate){
                        .k = k,
                        .failed = reconcile_failed(r, k),
                        .healthy = b && b->healthy && !b->maintenance, /* drained ones go first */
                        .load = b ? b->load : 0,
                        .launched = reconcile_launched(k),
                };
        }

        if (desired != r->high_water_desired) {
                r->high_water = MIN(r->high_water, desired);
                r->high_water_desired = desired;
        }
        r->high_water = MIN(MAX(r->high_water, (uint64_t)n_alive), desired);
        budget = reconcile_budget(r);

        if (!r->panic) {
                qsort(alive, n_alive, sizeof(*alive), reconcile_compare_candidates);
                ret = reconcile_refresh_check(r, alive, &n_alive);
                if (ret < 0)
                        return ret;
                refreshing = r->refresh == REFRESH_RUNNING;

                /* Beyond desired: the first ones in that order go (a refresh runs beyond on purpose), or
                 * among healthy ones, from the fullest zone. A rebalance waits for its new instance. */
                while (!refreshing && n_alive > desired && !reconcile_rebalance_waits(r, &alive[0])) {
                        size_t i = reconcile_trim_choice(r, alive, n_alive);

                        if (alive[i].healthy)
                                reconcile_log_trim(alive, n_alive, i);
                        ret = reconcile_take_victim(r, alive, &n_alive, i,
                                                    alive[i].failed  ? "failed, and beyond desired"
                                                    : r->rebalancing ? "beyond desired (rebalancing zones)"
                                                                     : "beyond desired",
                                                    false);
                        if (ret < 0)
                                return ret;
                }
                if (n_alive <= desired)
                        r->rebalancing = false;

                /* Failed ones are replaced while the budget lasts (losses already there come first). */
                for (size_t i = 0; i < n_alive; i++)
                        if (alive[i].failed)
                                n_failed++;
                needed = r->high_water > n_alive ? r->high_water - n_alive : 0;
                for (size_t i = 0, budget_left = budget > needed ? budget - needed : 0; i < n_alive;) {
                        if (!alive[i].failed) {
                                i++;
                                continue;
                        }
                        if (budget_left == 0) {
                                n_kept_failed++;
                                i++;
                                continue;
                        }
                        reconcile_zone_failed(r, alive[i].k);
                        ret = reconcile_take_victim(r, alive, &n_alive, i,
                                                    "failing its health checks past its grace period", true);
                        if (ret < 0)
                                return ret;
                        budget_left--;
                }
        }

        deficit = desired > n_alive ? desired - n_alive : 0;
        replacements = MIN(deficit, r->high_water > n_alive ? r->high_water - n_alive : 0);
        growth = deficit - replacements;
        allowed = MIN(replacements, (uint64_t)budget);
        held = (size_t)(replacements - allowed) + n_kept_failed;
        /* The refresh's own launches (beyond what the losses call for) are neither replacements nor
         * held back by the guard; the old instances it terminates leave no loss behind. */
        if (refreshing) {
                ret = reconcile_refresh_step(r, alive, &n_alive, &refresh_launch);
                if (ret < 0)
                        return ret;
                growth += refresh_launch > deficit ? refresh_launch - deficit : 0;
        }
        r->plan_launch = (unsigned)(growth + allowed);
        r->plan_replacements = (unsigned)allowed;
        reconcile_set_guard(r, held > 0, held);
        if (r->zones.n > 0)
                reconcile_plan_zones(r, alive, n_alive, !r->panic && !refreshing && n_alive == desired);
        return 0;
}

/* Runs the plan: launch, then drain and terminate, then poll again. */
static void reconcile_execute(struct reconcile *r)
{
        r->plan_list_usec = r->list_usec;
        if (r->plan_launch > 0) {
                reconcile_launch(r);
                return;
        }
        if (r->n_victims > 0) {
                reconcile_drain(r);
                return;
        }
        reconcile_done(r, false);
}

static void reconcile_count_states(struct reconcile *r)
{
        memset(r->by_state, 0, sizeof(r->by_state));
        for (size_t i = 0; i < r->n_known; i++)
                if (r->known[i].listed && (size_t)r->known[i].inst.state < ELEMENTSOF(r->by_state))
                        r->by_state[r->known[i].inst.state]++;
}

/* Merges a good list into what is known. Returns 0 or -ENOMEM. */
static int reconcile_merge(struct reconcile *r, const struct instance *instances, size_t n)
{
        uint64_t now = reconcile_now(r), wall = reconcile_wall(r);
        uint64_t unlisted_ttl =
                MAX(RECONCILE_UNLISTED_TTL_MIN, RECONCILE_STALE_POLLS * r->config->poll_usec);
        struct reconcile_instance *next;
        size_t n_next = 0;

        next = calloc(n + r->n_known + 1, sizeof(*next));
        if (!next)
                return -ENOMEM;

        for (size_t i = 0; i < n; i++) {
                const struct instance *inst = &instances[i];
                struct reconcile_instance *old = reconcile_find(r, inst->id), *k;
                bool dup = false;

                if (inst->id[0] == '\0' || memchr(inst->id, '\0', sizeof(inst->id)) == NULL)
                        continue;
                for (size_t j = 0; j < n_next; j++)
                        if (strcmp(next[j].inst.id, inst->id) == 0)
                                dup = true;
                if (dup)
                        continue;

                k = &next[n_next++];
                if (old) {
                        *k = *old;
                        if (old->inst.state != inst->state && reconcile_managed(r) && !old->terminating) {
                                log_info("Instance %s: %s -> %s", inst->id,
                                         provider_instance_state_name(old->inst.state),
                                         provider_instance_state_name(inst->state));
                                if (reconcile_alive_state(old->inst.state) && !reconcile_alive_state(inst->state))
                                        history_event(r->history, HISTORY_EVENT_LOST, "Instance %s: %s -> %s",
                                                      inst->id, provider_instance_state_name(old->inst.state),
                                                      provider_instance_state_name(inst->state));
                        }
                } else {
                        k->seen_usec = now;
                        k->seen_wall_usec = wall;
                        if (reconcile_managed(r) && reconcile_alive_state(inst->state))
                                log_info("Instance %s (%s) found", inst->id,
                                         provider_instance_state_name(inst->state));
                }
                k->inst = *inst;
                k->listed = true;
                if (k->terminating && now >= k->terminating_usec + RECONCILE_TERMINATING_TTL)
                        k->terminating = false; /* asked long ago and still there: judge it again */
                k->outside = inst->has_addr && !config_in_networks(r->config, &inst->addr);
                if (k->outside && (!old || !old->outside)) {
                        char name[NETADDR_STRLEN];

                        (void)netaddr_format(&inst->addr, name, sizeof(name));
                        log_warning("Instance %s is at %s, outside [pool] networks: never contacting it",
                                    inst->id, name);
                }
        }

        /* Launched by lbd and not listed yet: still counts, for a while. */
        for (size_t i = 0; i < r->n_known; i++) {
                const struct reconcile_instance *old = &r->known[i];
                bool listed = false;

                for (size_t j = 0; j < n_next && !listed; j++)
                        if (strcmp(next[j].inst.id, old->inst.id) == 0)
                                listed = true;
                if (listed)
                        continue;
                if (!old->listed && !old->terminating && now < old->seen_usec + unlisted_ttl) {
                        next[n_next++] = *old;
                        continue;
                }
                if (reconcile_managed(r) && !old->terminating && reconcile_alive_state(old->inst.state)) {
                        log_info("Instance %s is gone", old->inst.id);
                        history_event(r->history, HISTORY_EVENT_LOST, "Instance %s is gone (not terminated by lbd)",
                                      old->inst.id);
                }
        }

        free(r->known);
        r->known = next;
        r->n_known = n_next;
        reconcile_count_states(r);
        return 0;
}

/* A provider call failed with <ret>: counts it and keeps the provider's own words for /status. */
/* A provider call failed with <ret>; <what> it was ("Listing the pool's instances") goes to the timeline
 * when it is the first failure after a success. */
static void reconcile_call_failed(struct reconcile *r, int ret, const char *what)
{
        struct provider_status st;
        bool first = r->last_error == 0;

        r->stats.provider_errors++;
        r->last_error = ret;
        provider_get_status(r->provider, &st);
        if (st.error[0])
                memcpy(r->last_error_text, st.error, sizeof(r->last_error_text));
        else
                (void)snprintf(r->last_error_text, sizeof(r->last_error_text), "%s", strerror(-ret));
        if (first)
                history_event(r->history, HISTORY_EVENT_PROVIDER, "%s failed: %s", what, r->last_error_text);
}

/* A poll on a host that does not lead: keeps the pool's high-water mark, so that a host taking over
 * tells replacements from growth as the leader did. */
static void reconcile_follow(struct reconcile *r)
{
        uint64_t n_alive = 0;

        for (size_t i = 0; i < r->n_known; i++)
                if (!r->known[i].terminating && reconcile_alive_state(r->known[i].inst.state))
                        n_alive++;
        if (r->desired != r->high_water_desired) {
                r->high_water = MIN(r->high_water, r->desired);
                r->high_water_desired = r->desired;
        }
        r->high_water = MIN(MAX(r->high_water, n_alive), r->desired);
}

static void reconcile_on_list(struct provider *p, int ret, const struct instance *instances, size_t n,
                              void *userdata)
{
        struct reconcile *r = userdata;
        bool was_ok = r->list_ok;

        if (ret >= 0)
                ret = reconcile_merge(r, instances, n);
        if (ret < 0) {
                reconcile_call_failed(r, ret, "Listing the pool's instances");
                r->list_ok = false;
                log_full_errno(was_ok ? LOG_WARNING : LOG_INFO, ret,
                               "Listing the pool's instances failed: %m; nothing is terminated until a list "
                               "succeeds");
                if (was_ok)
                        reconcile_changed(r);
                reconcile_done(r, false);
                return;
        }
        r->stats.lists++;
        r->list_ok = true;
        r->listed = true;
        r->list_usec = reconcile_now(r);
        r->list_wall_usec = reconcile_wall(r);
        if (!was_ok && r->last_error != 0) {
                log_notice("Listing the pool's instances works again");
                history_event(r->history, HISTORY_EVENT_PROVIDER, "Listing the pool's instances works again");
        }
        r->last_error = 0;

        if (reconcile_sync_pool(r))
                reconcile_changed(r);
        r->evaluating = true;
        reconcile_evaluate_panic(r);
        r->evaluating = false;
        if (r->changed_pending) {
                r->changed_pending = false;
                reconcile_changed(r);
        }

        if (reconcile_managed(r) && !reconcile_may_act(r)) {
                reconcile_follow(r);
                reconcile_done(r, false);
                return;
        }
        ret = reconcile_plan(r);
        if (ret < 0) {
                log_error_errno(ret, "Failed to plan the pool: %m");
                reconcile_done(r, false);
                return;
        }
        reconcile_execute(r);
}

static void reconcile_list(struct reconcile *r)
{
        int ret;

        r->phase = RECONCILE_LISTING;
        ret = r->provider->ops->list(r->provider, reconcile_on_list, r);
        if (ret < 0)
                reconcile_on_list(r->provider, ret, NULL, 0, r);
}

static void reconcile_on_poll_timer(evutil_socket_t fd, short what, void *userdata)
{
        struct reconcile *r = userdata;

        if (r->phase != RECONCILE_IDLE) {
                r->poll_pending = true;
                return;
        }
        if (r->poll_early) {
                uint64_t now = now_usec(), first = reconcile_first_failed_at(r), clock = reconcile_now(r);

                /* The backend it was for is coming back: keep the early poll for when one fails. */
                if (first == UINT64_MAX) {
                        log_debug("No backend counts as failed any more: no early poll");
                        reconcile_schedule(r, r->regular_due_usec > now ? r->regular_due_usec - now : 0,
                                           false);
                        return;
                }
                /* Fired before the moment (a timer a little early, a later verdict): wait for it. */
                if (first > clock) {
                        reconcile_schedule(r, first - clock + RECONCILE_TIMER_SLACK, true);
                        return;
                }
                for (size_t i = 0; i < r->n_known; i++)
                        if (reconcile_failed(r, &r->known[i]))
                                r->known[i].early_poll_usec = reconcile_now(r);
        }
        reconcile_list(r);
}

/* ---- launching ---- */

/* Zone <z> refused the launch for want of capacity: closes it for a while and gives its share of the
 * plan to the open zones. Returns true when some zone is left to try. */
static bool reconcile_zone_refused(struct reconcile *r, size_t z)
{
        uint64_t now = reconcile_now(r), delay;
        size_t counts[PROVIDER_MAX_ZONES] = {0}, moved = r->plan_zone[z], n_open = 0;

        delay = zones_refused(&r->zones, z, now, r->config->zone_backoff_usec);
        r->plan_zone[z] = 0;
        for (size_t i = 0; i < r->zones.n; i++)
                n_open += zones_open(&r->zones, i, now);
        log_warning("Zone %s has no capacity for %zu instance%s: %s; leaving it alone for %llu s", r->zones.z[z].name,
                    moved, moved == 1 ? "" : "s", n_open > 0 ? "launching in the other zones" : "no other zone is open",
                    (unsigned long long)(delay / USEC_PER_SEC));
        if (n_open == 0)
                return false;
        for (size_t i = 0; i < r->n_known; i++) {
                const struct reconcile_instance *k = &r->known[i];
                int kz = reconcile_zone_of(r, k);

                if (kz >= 0 && !k->terminating && reconcile_alive_state(k->inst.state))
                        counts[kz]++;
        }
        for (size_t i = 0; i < r->zones.n; i++)
                counts[i] += r->plan_zone[i];
        for (size_t i = 0; i < moved; i++) {
                size_t to = zones_pick(&r->zones, counts, now);

                r->plan_zone[to]++;
                counts[to]++;
        }
        return true;
}

static void reconcile_on_launch(struct provider *p, int ret, const struct instance *launched, size_t n,
                                void *userdata)
{
        struct reconcile *r = userdata;
        uint64_t now = reconcile_now(r), wall = reconcile_wall(r);
        char ids[RECONCILE_LOG_IDS];
        size_t added = 0, n_alive = 0, z = r->launch_zone;
        unsigned replaced;
        struct reconcile_instance *known;

        if (ret == -ENOSPC && z < r->zones.n && r->rebalancing) {
                /* A rebalance goes to that zone or nowhere: try again once it reopens. */
                uint64_t delay = zones_refused(&r->zones, z, now, r->config->zone_backoff_usec);

                log_warning("Zone %s still has no capacity: rebalancing again in %llu s at the earliest",
                            r->zones.z[z].name, (unsigned long long)(delay / USEC_PER_SEC));
                r->token_pending = false;
                r->rebalancing = false;
                reconcile_done(r, false);
                return;
        }
        if (ret == -ENOSPC && z < r->zones.n) {
                r->token_pending = false;
                r->plan_launch -= MIN(r->plan_launch, r->launch_count);
                if (reconcile_zone_refused(r, z)) {
                        r->plan_launch += r->launch_count;
                        reconcile_launch(r);
                        return;
                }
                r->plan_launch += r->launch_count;
        }
        if (ret < 0) {
                reconcile_call_failed(r, ret, "Launching instances");
                log_warning_errno(ret,
                                  "Launching %u instances failed: %m; trying again at the next poll "
                                  "(same ClientToken %s), terminating nothing meanwhile",
                                  r->launch_count, r->token);
                reconcile_changed(r);
                reconcile_done(r, false);
                return;
        }
        r->token_pending = false;
        r->last_error = 0;
        if (z < r->zones.n) {
                zones_accepted(&r->zones, z);
                r->plan_zone[z] = 0;
        }
        r->plan_launch -= MIN(r->plan_launch, r->launch_count);

        known = realloc(r->known, (r->n_known + n + 1) * sizeof(*known));
        if (!known) {
                log_error("Out of memory recording launched instances");
                reconcile_done(r, true);
                return;
        }
        r->known = known;
        for (size_t i = 0; i < n; i++) {
                struct reconcile_instance *k;

                if (launched[i].id[0] == '\0' ||
                    memchr(launched[i].id, '\0', sizeof(launched[i].id)) == NULL ||
                    reconcile_find(r, launched[i].id))
                        continue;
                k = &r->known[r->n_known++];
                *k = (struct reconcile_instance){
                        .inst = launched[i],
                        .seen_usec = now,
                        .seen_wall_usec = wall,
                };
                /* Launched with the settings of now, in the zone asked for, whatever the answer shows;
                 * a list tells the truth later. */
                if (!k->inst.launch_hash[0])
                        memcpy(k->inst.launch_hash, r->provider->launch_hash, sizeof(k->inst.launch_hash));
                if (!k->inst.subnet[0] && z < r->zones.n)
                        memcpy(k->inst.subnet, r->zones.z[z].name, sizeof(k->inst.subnet));
                k->outside = k->inst.has_addr && !config_in_networks(r->config, &k->inst.addr);
                added++;
        }
        r->stats.launches += n;
        replaced = MIN(r->plan_replacements, (unsigned)n);
        for (size_t i = 0; i < replaced; i++)
                reconcile_record_replacement(r);
        r->plan_replacements -= replaced;
        for (size_t i = 0; i < r->n_known; i++)
                if (!r->known[i].terminating && reconcile_alive_state(r->known[i].inst.state))
                        n_alive++;
        r->high_water = MIN(MAX(r->high_water, (uint64_t)n_alive), r->desired);

        if (n > 0) {
                (void)reconcile_ids(launched[0].id, sizeof(launched[0]), n, ids, sizeof(ids));
                log_notice("Launched %zu instance%s%s%s (%u to replace lost ones): %s", n, n == 1 ? "" : "s",
                           z < r->zones.n ? " in " : "", z < r->zones.n ? r->zones.z[z].name : "", replaced, ids);
                history_event(r->history, HISTORY_EVENT_LAUNCH, "Launched %zu instance%s%s%s (%u to replace lost ones): %s",
                              n, n == 1 ? "" : "s", z < r->zones.n ? " in " : "",
                              z < r->zones.n ? r->zones.z[z].name : "", replaced, ids);
        } else
                log_warning("The launch of %u instances started none", r->launch_count);
        if (added > 0 && reconcile_sync_pool(r))
                reconcile_changed(r);

        /* The next zone's share, then the victims. */
        if (r->plan_launch > 0 && r->zones.n > 0) {
                reconcile_launch(r);
                return;
        }
        if (r->n_victims > 0) {
                reconcile_drain(r);
                return;
        }
        reconcile_done(r, true);
}

/* Launches the plan's next share: the first zone with launches planned, or all of them without zones. */
static void reconcile_launch(struct reconcile *r)
{
        const char *zone = NULL;
        bool previous;
        unsigned count = r->plan_launch;
        int ret;

        if (!reconcile_may_act(r)) {
                log_notice("Not launching %u instances: this host no longer leads", count);
                reconcile_done(r, false);
                return;
        }
        r->launch_zone = SIZE_MAX;
        for (size_t i = 0; i < r->zones.n; i++)
                if (r->plan_zone[i] > 0) {
                        r->launch_zone = i;
                        zone = r->zones.z[i].name;
                        count = (unsigned)MIN(r->plan_zone[i], (size_t)count);
                        break;
                }
        previous = reconcile_launch_previous(r);
        if (!r->token_pending || r->token_count != count || r->token_epoch != r->epoch ||
            strcmp(r->token_zone, zone ? zone : "") != 0 || r->token_previous != previous) {
                r->generation++;
                if (r->epoch > 0)
                        (void)snprintf(r->token, sizeof(r->token), "lbd-e%" PRIu64 "-%016" PRIx64 "-%" PRIu64,
                                       r->epoch, r->nonce, r->generation);
                else
                        (void)snprintf(r->token, sizeof(r->token), "lbd-%016" PRIx64 "-%" PRIu64, r->nonce,
                                       r->generation);
                r->token_epoch = r->epoch;
                r->token_count = count;
                (void)snprintf(r->token_zone, sizeof(r->token_zone), "%s", zone ? zone : "");
                r->token_previous = previous;
                r->token_pending = true;
        }
        log_info("Launching %u instance%s%s%s (ClientToken %s, epoch %" PRIu64 ")%s%s", count,
                 count == 1 ? "" : "s", zone ? " in " : "", zone ? zone : "", r->token, r->epoch,
                 previous ? " with the old launch settings " : "", previous ? r->provider->previous_hash : "");
        r->provider->launch_previous = previous;
        r->launch_count = count;
        r->phase = RECONCILE_LAUNCHING;
        ret = r->provider->ops->launch(r->provider, count, zone, r->token, reconcile_on_launch, r);
        if (ret < 0)
                reconcile_on_launch(r->provider, ret, NULL, 0, r);
}

/* ---- draining and terminating ---- */

static void reconcile_on_terminate(struct provider *p, int ret, void *userdata)
{
        struct reconcile *r = userdata;

        if (ret < 0) {
                reconcile_call_failed(r, ret, "Terminating instances");
                log_warning_errno(ret,
                                  "Terminating %zu instances failed: %m; deciding again at the next poll",
                                  r->n_victims);
                for (size_t i = 0; i < r->n_victims; i++) {
                        struct reconcile_instance *k = reconcile_find(r, r->victims[i].id);

                        if (k)
                                k->terminating = false;
                }
                reconcile_changed(r);
                reconcile_done(r, false);
                return;
        }
        r->last_error = 0;
        r->stats.terminations += r->n_victims;
        for (size_t i = 0; i < r->n_victims; i++) {
                log_notice("Terminated instance %s: %s", r->victims[i].id, r->victims[i].reason);
                history_event(r->history, r->victims[i].replaced ? HISTORY_EVENT_REPLACE : HISTORY_EVENT_TERMINATE,
                              "Terminated instance %s: %s%s", r->victims[i].id, r->victims[i].reason,
                              r->victims[i].replaced ? "; a replacement follows" : "");
        }
        reconcile_done(r, true);
}

static void reconcile_terminate(struct reconcile *r)
{
        _cleanup_free_ const char **ids = NULL;
        char names[RECONCILE_LOG_IDS];
        int ret;

        ids = calloc(r->n_victims, sizeof(*ids));
        if (!ids) {
                log_error("Out of memory terminating instances");
                reconcile_on_terminate(r->provider, -ENOMEM, r);
                return;
        }
        if (!reconcile_may_act(r)) {
                log_notice("Not terminating %zu instances: this host no longer leads", r->n_victims);
                for (size_t i = 0; i < r->n_victims; i++) {
                        struct reconcile_instance *k = reconcile_find(r, r->victims[i].id);

                        if (k)
                                k->terminating = false;
                }
                if (reconcile_sync_pool(r))
                        reconcile_changed(r);
                reconcile_done(r, false);
                return;
        }
        for (size_t i = 0; i < r->n_victims; i++)
                ids[i] = r->victims[i].id;
        if (r->epoch > 0)
                log_info("Terminating %zu instance%s in epoch %" PRIu64 ": %s", r->n_victims,
                         r->n_victims == 1 ? "" : "s", r->epoch,
                         reconcile_ids(r->victims[0].id, sizeof(r->victims[0]), r->n_victims, names, sizeof(names)));
        r->phase = RECONCILE_TERMINATING;
        ret = r->provider->ops->terminate(r->provider, ids, r->n_victims, reconcile_on_terminate, r);
        if (ret < 0)
                reconcile_on_terminate(r->provider, ret, r);
}

static bool reconcile_drained(const struct reconcile *r)
{
        for (size_t i = 0; i < r->n_victims; i++)
                if (r->victims[i].backend && backend_active(r->victims[i].backend) > 0)
                        return false;
        return true;
}

static void reconcile_on_drain_timer(evutil_socket_t fd, short what, void *userdata)
{
        struct reconcile *r = userdata;
        struct timeval tv = timeval_from_usec(RECONCILE_DRAIN_CHECK);

        if (!reconcile_drained(r) && reconcile_now(r) < r->drain_deadline) {
                (void)evtimer_add(&r->drain_timer, &tv);
                return;
        }
        if (!reconcile_drained(r))
                log_warning("Drain deadline passed with requests still in flight: terminating anyway");
        reconcile_terminate(r);
}

/* Takes the victims out of the pool, then terminates them once their requests are done. */
static void reconcile_drain(struct reconcile *r)
{
        uint64_t now = reconcile_now(r);

        if (now > r->plan_list_usec + RECONCILE_STALE_POLLS * r->config->poll_usec) {
                log_warning("Not terminating %zu instances: the list they were chosen from is %llu s old",
                            r->n_victims, (unsigned long long)((now - r->plan_list_usec) / USEC_PER_SEC));
                reconcile_done(r, true);
                return;
        }

        for (size_t i = 0; i < r->n_victims; i++) {
                struct reconcile_instance *k = reconcile_find(r, r->victims[i].id);

                if (!k)
                        continue;
                r->victims[i].backend = backend_ref(reconcile_backend(r, k));
                k->terminating = true;
                k->terminating_usec = now;
                log_info("Terminating instance %s: %s", k->inst.id, r->victims[i].reason);
        }
        if (reconcile_sync_pool(r))
                reconcile_changed(r);

        r->phase = RECONCILE_DRAINING;
        r->drain_deadline = now + MIN(r->config->drain_timeout_usec, RECONCILE_DRAIN_MAX);
        if (reconcile_drained(r)) {
                reconcile_terminate(r);
                return;
        }
        reconcile_on_drain_timer(-1, 0, r);
}

/* ---- the pool's changes ---- */

static void reconcile_on_eval_timer(evutil_socket_t fd, short what, void *userdata)
{
        struct reconcile *r = userdata;
        uint64_t delay;

        if (!reconcile_managed(r) || !r->started)
                return;
        if (r->changed_pending) {
                r->changed_pending = false;
                reconcile_changed(r);
        }
        if (r->phase != RECONCILE_IDLE)
                return; /* the end of the call in flight schedules the next poll */
        delay = reconcile_early_delay(r);
        if (delay == UINT64_MAX ||
            (evtimer_pending(&r->poll_timer, NULL) && r->poll_due_usec <= now_usec() + delay))
                return;
        log_info("A backend is failing: polling in %llu ms", (unsigned long long)(delay / USEC_PER_MSEC));
        reconcile_schedule(r, delay, true);
}

void reconcile_pool_changed(struct reconcile *r)
{
        const struct timeval now = {0, 0};

        if (!r || !reconcile_managed(r) || !r->started)
                return;
        if (!r->evaluating) {
                r->evaluating = true;
                reconcile_evaluate_panic(r);
                r->evaluating = false;
        }
        if (!evtimer_pending(&r->eval_timer, NULL))
                (void)evtimer_add(&r->eval_timer, &now);
}

/* ---- setup ---- */

int reconcile_new(struct event_base *base, struct provider *provider, struct pool *pool,
                  const struct config *c, struct reconcile **ret)
{
        struct reconcile *r;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->base = base;
        r->provider = provider;
        r->pool = pool;
        r->config = c;
        reconcile_set_clock(r, NULL);
        (void)evtimer_assign(&r->poll_timer, base, reconcile_on_poll_timer, r);
        (void)evtimer_assign(&r->eval_timer, base, reconcile_on_eval_timer, r);
        (void)evtimer_assign(&r->drain_timer, base, reconcile_on_drain_timer, r);
        if (getrandom(&r->nonce, sizeof(r->nonce), GRND_NONBLOCK) != sizeof(r->nonce))
                r->nonce = now_usec() ^ ((uint64_t)getpid() << 32);
        r->rng = r->nonce | 1;
        r->high_water_desired = c->desired;
        r->desired = c->pool_max > 0 ? MIN(MAX(c->desired, c->pool_min), c->pool_max) : c->desired;
        reconcile_refresh_from_config(r);
        *ret = r;
        return 0;
}

struct reconcile *reconcile_free(struct reconcile *r)
{
        if (!r)
                return NULL;
        (void)evtimer_del(&r->poll_timer);
        (void)evtimer_del(&r->eval_timer);
        (void)evtimer_del(&r->drain_timer);
        reconcile_clear_victims(r);
        free(r->known);
        free(r);
        return NULL;
}

void reconcile_set_on_change(struct reconcile *r, void (*on_change)(void *userdata), void *userdata)
{
        r->on_change = on_change;
        r->on_change_userdata = userdata;
}

void reconcile_set_history(struct reconcile *r, struct history *h)
{
        r->history = h;
}

void reconcile_set_authority(struct reconcile *r, const struct reconcile_authority *a)
{
        r->authority = a ? *a : (struct reconcile_authority){ 0 };
        /* Until the first answer says otherwise, a host with an authority is watching. */
        r->following = a != NULL;
}

void reconcile_set_clock(struct reconcile *r, const struct reconcile_clock *clock)
{
        if (clock)
                r->clock = *clock;
        else
                r->clock = (struct reconcile_clock){
                        .monotonic = reconcile_real_monotonic,
                        .realtime = reconcile_real_realtime,
                };
}

void reconcile_start(struct reconcile *r)
{
        const struct config *c = r->config;

        r->desired = c->pool_max > 0 ? MIN(MAX(c->desired, c->pool_min), c->pool_max) : c->desired;
        r->high_water_desired = r->desired;
        r->started = true;
        reconcile_poll(r);
}

void reconcile_set_config(struct reconcile *r, const struct config *c)
{
        /* Scaling on demand keeps its count, within the new bounds; else the file's count rules. */
        uint64_t desired = c->pool_max > 0 ? MIN(MAX(r->desired, c->pool_min), c->pool_max) : c->desired;

        if (desired != r->desired && reconcile_managed(r)) {
                log_notice("Desired instances: %" PRIu64 " -> %" PRIu64, r->desired, desired);
                history_event(r->history, HISTORY_EVENT_DESIRED, "Desired instances: %" PRIu64 " -> %" PRIu64,
                              r->desired, desired);
        }
        r->desired = desired;
        r->config = c;
        if (r->refresh != REFRESH_RUNNING || !r->refresh_manual)
                reconcile_refresh_from_config(r);
        if (r->started)
                reconcile_poll(r);
}

void reconcile_set_desired(struct reconcile *r, uint64_t desired)
{
        if (desired == r->desired)
                return;
        history_event(r->history, HISTORY_EVENT_DESIRED, "Desired instances: %" PRIu64 " -> %" PRIu64
                      " (scaling on demand)", r->desired, desired);
        r->desired = desired;
        reconcile_changed(r);
        if (r->started)
                reconcile_poll(r);
}

int reconcile_refresh_start(struct reconcile *r, const struct refresh_settings *s)
{
        if (!reconcile_managed(r) || !r->provider->launch_hash[0])
                return -EOPNOTSUPP;
        if (!r->listed)
                return -EAGAIN;
        r->refresh_settings = *s;
        memcpy(r->refresh_target, r->provider->launch_hash, sizeof(r->refresh_target));
        r->refresh = REFRESH_NONE;
        r->rollback_hash[0] = '\0';
        for (size_t i = 0; i < r->n_known; i++) {
                const struct reconcile_instance *k = &r->known[i];

                if (!k->terminating && reconcile_alive_state(k->inst.state) && reconcile_is_old(r, k)) {
                        size_t n_old = 0, n_alive = 0;

                        for (size_t j = 0; j < r->n_known; j++)
                                if (!r->known[j].terminating && reconcile_alive_state(r->known[j].inst.state)) {
                                        n_alive++;
                                        n_old += reconcile_is_old(r, &r->known[j]);
                                }
                        reconcile_refresh_begin(r, n_old, n_alive, true);
                        break;
                }
        }
        if (r->refresh != REFRESH_RUNNING) {
                r->refresh = REFRESH_DONE;
                (void)snprintf(r->refresh_reason, sizeof(r->refresh_reason),
                               "nothing to replace: every instance has the launch settings %s",
                               r->refresh_target);
                log_notice("Instance refresh asked for: %s", r->refresh_reason);
        }
        reconcile_poll(r);
        return 0;
}

int reconcile_refresh_cancel(struct reconcile *r)
{
        if (r->refresh != REFRESH_RUNNING)
                return -ESRCH;
        reconcile_refresh_end(r, REFRESH_CANCELLED, LOG_NOTICE,
                              "cancelled by the admin API; the instances left with other settings stay");
        reconcile_poll(r);
        return 0;
}

void reconcile_poll(struct reconcile *r)
{
        if (r->phase != RECONCILE_IDLE) {
                r->poll_pending = true;
                return;
        }
        reconcile_schedule(r, 0, false);
}

void reconcile_get_view(const struct reconcile *r, struct reconcile_view *ret)
{
        uint64_t now = reconcile_now(r), real_now = now_usec();
        struct provider_status st;
        uint64_t window = r->config->replacement_window_usec;
        unsigned replacements = 0;

        for (size_t i = 0; i < r->n_replacements; i++)
                if (now < r->replacement_usec[i] + window)
                        replacements++;

        *ret = (struct reconcile_view){
                .provider = r->provider->ops->name,
                .managed = reconcile_managed(r),
                .desired = r->desired,
                .listed = r->listed,
                .list_ok = r->list_ok,
                .last_error = r->last_error,
                .last_error_text = r->last_error ? r->last_error_text : NULL,
                .list_age_usec = r->listed && now > r->list_usec ? now - r->list_usec : 0,
                .list_wall_usec = r->listed ? r->list_wall_usec : 0,
                .following = r->following,
                .epoch = r->epoch,
                .panic = r->panic,
                .guard = r->guard,
                .held = r->held,
                .replacements = replacements,
                .launch_hash = r->provider->launch_hash,
                .refresh = r->refresh,
                .refresh_settings = r->refresh_settings,
                .refresh_counts = r->refresh_counts,
                .refresh_replaced = r->refresh_replaced,
                .refresh_started_wall_usec = r->refresh_started_wall,
                .refresh_reason = r->refresh_reason,
                .zones = &r->zones,
                .now_usec = now,
                .instances = r->known,
                .n_instances = r->n_known,
                .stats = r->stats,
        };
        memcpy(ret->by_state, r->by_state, sizeof(ret->by_state));
        provider_get_status(r->provider, &st);
        if (st.failures > 0) {
                ret->failing = true;
                ret->failing_usec = real_now > st.failing_since_usec ? real_now - st.failing_since_usec : 0;
                ret->failing_attempts = st.failures;
                memcpy(ret->failing_error, st.error, sizeof(ret->failing_error));
        }
}
