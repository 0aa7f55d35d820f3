/* Scaling on demand: a sample of the proxy's request counter, the requests in flight and the backends in
 * rotation every second, into a ring; at each sample, the averages over the scale-out and scale-in windows
 * decide the reconciler's desired count (autoscale.h says how). Owned by main.c; runs on the one loop; the
 * reconciler only receives reconcile_set_desired().
 *
 * Why these rules: scaling out is cheap to undo and late is costly, so it happens at once, by as many as
 * the figures call for, as soon as the scale-out window's average breaches a target; scaling in waits for
 * a longer window, a cooldown after any change, and a margin (the load must stay under 90 % of the target
 * with one backend fewer), goes one at a time, and never while a refresh replaces instances or every
 * backend fails, so a steady load at 90 % of the target never flaps. Nothing is decided on partial data
 * (the windows not yet covered since start or reload, a gap in the samples, no backend serving) or while
 * the storm guard holds replacements back (the pool is short for another reason than load). */
#include "lbd/autoscale.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/macro.h"
#include "lbd/backend.h"
#include "lbd/config.h"
#include "lbd/latency.h"
#include "lbd/lbd.h"
#include "lbd/loops.h"
#include "lbd/proxy.h"
#include "lbd/reconcile.h"

_Static_assert(AUTOSCALE_SAMPLES * AUTOSCALE_SAMPLE_USEC > (CONFIG_MAX_SCALE_WINDOW_SEC + 60) * USEC_PER_SEC,
               "the ring covers the longest window");

struct autoscale {
        struct lbd *lbd;
        struct event *timer;
        struct autoscale_settings settings;
        struct autoscale_state state;
};

void autoscale_settings_from_config(const struct config *c, struct autoscale_settings *ret)
{
        *ret = (struct autoscale_settings){
                .min = c->pool_min,
                .max = c->pool_max,
                .target_rps = c->target_rps,
                .target_inflight = c->target_inflight,
                .target_p90_usec = c->target_p90_usec,
                .out_after_usec = c->scale_out_after_usec,
                .in_after_usec = c->scale_in_after_usec,
                .in_cooldown_usec = c->scale_in_cooldown_usec,
        };
}

void autoscale_state_reset(struct autoscale_state *st)
{
        st->n = 0;
        st->next = 0;
        st->data_ok = false;
        st->slow_share = -1;
}

void autoscale_state_add(struct autoscale_state *st, const struct autoscale_sample *s)
{
        st->ring[st->next] = *s;
        st->next = (st->next + 1) % AUTOSCALE_SAMPLES;
        if (st->n < AUTOSCALE_SAMPLES)
                st->n++;
}

/* The <i>-th newest sample (0: the newest). */
static const struct autoscale_sample *autoscale_sample(const struct autoscale_state *st, size_t i)
{
        return &st->ring[(st->next + AUTOSCALE_SAMPLES - 1 - i) % AUTOSCALE_SAMPLES];
}

/* The pool's requests per second and mean requests in flight over the last <window>. Returns false when
 * the samples don't cover it, have a gap, or show no backend serving. */
static bool autoscale_window(const struct autoscale_state *st, uint64_t window, double *ret_rps,
                             double *ret_inflight)
{
        const struct autoscale_sample *last, *first = NULL;
        uint64_t inflight = 0;
        size_t n = 0;

        if (st->n < 2)
                return false;
        last = autoscale_sample(st, 0);
        for (size_t i = 0; i < st->n; i++) {
                const struct autoscale_sample *s = autoscale_sample(st, i);

                if (s->serving == 0)
                        return false;
                if (i > 0 && autoscale_sample(st, i - 1)->at_usec > s->at_usec + AUTOSCALE_GAP_USEC)
                        return false;
                inflight += s->inflight;
                n++;
                if (s->at_usec + window <= last->at_usec) {
                        first = s;
                        break;
                }
        }
        if (!first || first->at_usec == last->at_usec || last->requests < first->requests)
                return false;
        *ret_rps = (double)(last->requests - first->requests) * USEC_PER_SEC /
                   (double)(last->at_usec - first->at_usec);
        *ret_inflight = (double)inflight / (double)n;
        return true;
}

/* The share of the requests finished over the last <window> that took longer than the target (<half>:
 * than half of it); -1 when fewer than AUTOSCALE_P90_MIN finished, or the samples don't cover it. */
static double autoscale_slow_share(const struct autoscale_state *st, uint64_t window, bool half)
{
        const struct autoscale_sample *last, *first = NULL;
        uint32_t finished, slow;

        if (st->n < 2)
                return -1;
        last = autoscale_sample(st, 0);
        for (size_t i = 1; i < st->n && !first; i++)
                if (autoscale_sample(st, i)->at_usec + window <= last->at_usec)
                        first = autoscale_sample(st, i);
        if (!first)
                return -1;
        finished = last->finished - first->finished;
        slow = half ? last->over_half - first->over_half : last->over_target - first->over_target;
        if (finished < AUTOSCALE_P90_MIN || slow > finished)
                return -1;
        return (double)slow / (double)finished;
}

/* The whole number of backends <x> calls for (rounded up), capped far beyond any max (no libm needed). */
static double autoscale_ceil(double x)
{
        uint64_t n;

        if (!(x > 0))
                return 0;
        if (x >= 1e6)
                return 1e6;
        n = (uint64_t)x;
        return (double)n < x ? (double)(n + 1) : (double)n;
}

/* Per backend with <n> of them; with none, any load is too much. */
static double autoscale_per(double load, uint64_t n)
{
        return n > 0 ? load / (double)n : load > 0 ? INFINITY : 0;
}

uint64_t autoscale_decide(struct autoscale_state *st, const struct autoscale_settings *s, uint64_t now,
                          uint64_t desired, bool hold_in, bool hold_all)
{
        double rps = 0, inflight = 0, need = 0, rps_in = 0, inflight_in = 0;
        uint64_t clamped = MIN(MAX(desired, s->min), s->max), next;
        bool under = true;

        st->data_ok = autoscale_window(st, s->out_after_usec, &rps, &inflight);
        if (st->data_ok) {
                st->rps = rps;
                st->inflight = inflight;
        }
        if (clamped != desired) {
                (void)snprintf(st->last, sizeof(st->last), "%" PRIu64 " -> %" PRIu64 ": within min %" PRIu64
                               " and max %" PRIu64, desired, clamped, s->min, s->max);
                st->last_change_usec = now;
                return clamped;
        }
        if (hold_all || !st->data_ok)
                return desired;

        if (s->target_rps > 0)
                need = MAX(need, autoscale_ceil(rps / (double)s->target_rps));
        if (s->target_inflight > 0)
                need = MAX(need, autoscale_ceil(inflight / (double)s->target_inflight));
        /* Latency does not say how many backends are missing: one more, once the pool serves at the count
         * asked (the last one added is in rotation) and an out window has passed since the last change. */
        st->slow_share = s->target_p90_usec > 0 ? autoscale_slow_share(st, s->out_after_usec, false) : -1;
        if (st->slow_share * 100 > AUTOSCALE_P90_SHARE && need < (double)desired + 1 &&
            autoscale_sample(st, 0)->serving >= desired &&
            (st->last_change_usec == 0 || now >= st->last_change_usec + s->out_after_usec))
                need = (double)desired + 1;
        /* A breach over the window: sized by the last seconds if they ask for more (a step of load is
         * met in one move, not one per sample). */
        if (need > (double)desired &&
            autoscale_window(st, MIN(s->out_after_usec, AUTOSCALE_RECENT_USEC), &rps_in, &inflight_in)) {
                if (s->target_rps > 0)
                        need = MAX(need, autoscale_ceil(rps_in / (double)s->target_rps));
                if (s->target_inflight > 0)
                        need = MAX(need, autoscale_ceil(inflight_in / (double)s->target_inflight));
        }
        if (need > (double)desired && desired < s->max) {
                next = need >= (double)s->max ? s->max : (uint64_t)need;
                (void)snprintf(st->last, sizeof(st->last),
                               "%" PRIu64 " -> %" PRIu64 " (out): %.1f req/s and %.1f in flight over the last "
                               "%" PRIu64 " s, %.1f and %.1f per backend (targets %" PRIu64 " and %" PRIu64
                               ", 0: none)",
                               desired, next, rps, inflight, s->out_after_usec / USEC_PER_SEC,
                               autoscale_per(rps, desired), autoscale_per(inflight, desired), s->target_rps,
                               s->target_inflight);
                if (s->target_p90_usec > 0 && st->slow_share >= 0) {
                        size_t len = strlen(st->last);

                        (void)snprintf(st->last + len, sizeof(st->last) - len,
                                       "; %.0f %% of requests slower than the p90 target %" PRIu64 " ms",
                                       st->slow_share * 100, s->target_p90_usec / USEC_PER_MSEC);
                }
                st->last_change_usec = now;
                return next;
        }

        if (hold_in || desired <= s->min ||
            (st->last_change_usec != 0 && now < st->last_change_usec + s->in_cooldown_usec) ||
            !autoscale_window(st, s->in_after_usec, &rps_in, &inflight_in))
                return desired;
        if (s->target_rps > 0 &&
            autoscale_per(rps_in, desired - 1) * 100 >= (double)(s->target_rps * AUTOSCALE_IN_MARGIN))
                under = false;
        if (s->target_inflight > 0 &&
            autoscale_per(inflight_in, desired - 1) * 100 >= (double)(s->target_inflight * AUTOSCALE_IN_MARGIN))
                under = false;
        /* Latency allows one fewer only while p90 stays under half the target. */
        if (s->target_p90_usec > 0 && autoscale_slow_share(st, s->in_after_usec, true) * 100 > AUTOSCALE_P90_SHARE)
                under = false;
        if (!under)
                return desired;
        (void)snprintf(st->last, sizeof(st->last),
                       "%" PRIu64 " -> %" PRIu64 " (in): %.1f req/s and %.1f in flight over the last %" PRIu64
                       " s, %.1f and %.1f per backend with one fewer (targets %" PRIu64 " and %" PRIu64
                       ", 0: none)",
                       desired, desired - 1, rps_in, inflight_in, s->in_after_usec / USEC_PER_SEC,
                       autoscale_per(rps_in, desired - 1), autoscale_per(inflight_in, desired - 1), s->target_rps,
                       s->target_inflight);
        if (s->target_p90_usec > 0) {
                size_t len = strlen(st->last);

                (void)snprintf(st->last + len, sizeof(st->last) - len, "; p90 under half the target %" PRIu64 " ms",
                               s->target_p90_usec / USEC_PER_MSEC);
        }
        st->last_change_usec = now;
        return desired - 1;
}

/* ---- the daemon's part ---- */

static void autoscale_on_timer(evutil_socket_t fd, short what, void *userdata)
{
        struct autoscale *a = userdata;
        struct lbd *l = a->lbd;
        struct proxy_stats ps;
        struct autoscale_sample s = {.at_usec = now_usec()};
        struct reconcile_view v;
        uint64_t next;

        if ((!l->proxy && !l->loops) || !l->reconcile)
                return;
        lbd_proxy_stats(l, &ps);
        s.requests = ps.requests_total;
        if (a->settings.target_p90_usec > 0) {
                s.finished = ps.latency.count;
                s.over_target = latency_count_above(&ps.latency, a->settings.target_p90_usec);
                s.over_half = latency_count_above(&ps.latency, a->settings.target_p90_usec / 2);
        }
        for (size_t i = 0; i < l->pool->n_backends; i++) {
                s.inflight += backend_active(l->pool->backends[i]);
                s.serving += backend_in_rotation(l->pool->backends[i]);
        }
        autoscale_state_add(&a->state, &s);
        reconcile_get_view(l->reconcile, &v);
        next = autoscale_decide(&a->state, &a->settings, s.at_usec, v.desired,
                                v.refresh == REFRESH_RUNNING || v.panic || v.guard, v.guard);
        if (next != v.desired) {
                log_notice("Scaling: %s", a->state.last);
                reconcile_set_desired(l->reconcile, next);
        }
}

int autoscale_new(struct lbd *lbd, struct autoscale **ret)
{
        struct autoscale *a;
        const struct timeval tv = timeval_from_usec(AUTOSCALE_SAMPLE_USEC);

        *ret = NULL;
        if (!lbd->reconcile || lbd->config->pool_max == 0)
                return 0;
        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->lbd = lbd;
        a->timer = event_new(lbd->base, -1, EV_PERSIST, autoscale_on_timer, a);
        if (!a->timer || event_add(a->timer, &tv) < 0) {
                autoscale_free(a);
                return -ENOMEM;
        }
        autoscale_set_config(a);
        *ret = a;
        return 0;
}

struct autoscale *autoscale_free(struct autoscale *a)
{
        if (!a)
                return NULL;
        if (a->timer)
                event_free(a->timer);
        free(a);
        return NULL;
}

void autoscale_set_config(struct autoscale *a)
{
        if (!a)
                return;
        autoscale_settings_from_config(a->lbd->config, &a->settings);
        autoscale_state_reset(&a->state);
}

const struct autoscale_state *autoscale_get_state(const struct autoscale *a)
{
        return a ? &a->state : NULL;
}

const struct autoscale_settings *autoscale_get_settings(const struct autoscale *a)
{
        return a ? &a->settings : NULL;
}

void autoscale_set_bounds(struct autoscale *a, int64_t min, int64_t max)
{
        if (!a)
                return;
        if (min >= 0)
                a->settings.min = (uint64_t)min;
        if (max >= 0)
                a->settings.max = (uint64_t)max;
        if (a->settings.min > a->settings.max) {
                if (min >= 0)
                        a->settings.max = a->settings.min;
                else
                        a->settings.min = a->settings.max;
        }
}

uint64_t autoscale_clamp(const struct autoscale *a, uint64_t desired)
{
        return MIN(MAX(desired, a->settings.min), a->settings.max);
}
