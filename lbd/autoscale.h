/* Scaling on demand (an Auto Scaling Group's target tracking): lbd sees every request, so it measures
 * the load itself, once a second, and moves the reconciler's desired count between [pool] min and max to
 * keep requests per second per backend ([pool] target_rps) and/or requests in flight per backend
 * ([pool] target_inflight) at their targets. The figures and the decisions are here; the reconciler
 * (reconcile.c) launches and terminates. See "Scaling on demand" in README.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTOSCALE_SAMPLES     1024 /* one a second: the longest window is about 17 minutes */
#define AUTOSCALE_SAMPLE_USEC (1000 * 1000)
#define AUTOSCALE_GAP_USEC    (3 * AUTOSCALE_SAMPLE_USEC) /* a longer gap between samples: data missing */
#define AUTOSCALE_RECENT_USEC (10 * AUTOSCALE_SAMPLE_USEC) /* sizes a scale-out */
#define AUTOSCALE_IN_MARGIN   90 /* percent of the target the load must stay under with one backend fewer */
#define AUTOSCALE_TEXT_MAX    384
#define AUTOSCALE_P90_SHARE   10 /* percent of requests slower than target_p90 above which p90 is over it */
#define AUTOSCALE_P90_MIN     20 /* requests a window needs before latency votes */

struct lbd;
struct config;
struct autoscale;

struct autoscale_settings {
        uint64_t min, max;          /* the desired count stays within them */
        uint64_t target_rps;        /* requests per second per backend; 0: not a target */
        uint64_t target_inflight;   /* requests in flight per backend; 0: not a target */
        uint64_t target_p90_usec;   /* the pool's 90th percentile response time; 0: not a target */
        uint64_t out_after_usec;    /* the window whose average must breach a target to scale out */
        uint64_t in_after_usec;     /* the window whose average must be well under to scale in */
        uint64_t in_cooldown_usec;  /* no scale-in sooner than this after any change */
};

struct autoscale_sample {
        uint64_t at_usec;   /* monotonic */
        uint64_t requests;  /* requests read from clients since start (a counter) */
        uint64_t inflight;  /* requests in flight to backends now */
        size_t serving;     /* backends in rotation now */
        /* With target_p90: exchanges finished since start, those certainly slower than the target, and
         * those slower than half of it (counters that wrap at 2^32: only differences are used). */
        uint32_t finished, over_target, over_half;
};

/* The figures and decisions, pure arithmetic over the samples (tests drive it with their own). */
struct autoscale_state {
        struct autoscale_sample ring[AUTOSCALE_SAMPLES];
        size_t n, next;
        uint64_t last_change_usec; /* 0: none since start */
        /* the last evaluation, for /status and the log */
        double rps, inflight;       /* over the scale-out window, whole pool */
        double slow_share;          /* with target_p90: the share of requests slower than it over that
                                     * window (p90 is over the target above 0.10); -1: too few requests */
        bool data_ok;               /* the windows are covered, without gaps, with backends serving */
        char last[AUTOSCALE_TEXT_MAX]; /* the last decision with its figures, "" before one */
};

/* Forgets every sample (start, reload: a new window fills before any decision). */
void autoscale_state_reset(struct autoscale_state *st);
void autoscale_state_add(struct autoscale_state *st, const struct autoscale_sample *s);
/* The desired count the figures call for, from <desired> now: more at once when the scale-out window's
 * average breaches a target; one fewer when the scale-in window's average stays under
 * AUTOSCALE_IN_MARGIN percent of the targets with one backend fewer, past the cooldown, unless
 * <hold_in>; nothing at all on partial data or <hold_all>. Always within min and max. Writes the
 * decision with its figures into st->last when it changes the count. */
uint64_t autoscale_decide(struct autoscale_state *st, const struct autoscale_settings *s, uint64_t now,
                          uint64_t desired, bool hold_in, bool hold_all);

/* The daemon's part: a timer on <lbd>'s loop sampling the proxy and the pool each second, and telling the
 * reconciler. NULL (no error) when [pool] max is 0 or the pool is not managed. */
int autoscale_new(struct lbd *lbd, struct autoscale **ret);
struct autoscale *autoscale_free(struct autoscale *a);
/* New settings (reload): the samples start afresh. */
void autoscale_set_config(struct autoscale *a);
const struct autoscale_state *autoscale_get_state(const struct autoscale *a);
/* The settings in force: [pool]'s, with the bounds a scheduled action set. */
const struct autoscale_settings *autoscale_get_settings(const struct autoscale *a);
/* A scheduled action's bounds (-1: left as they are); when the two cross, the one given wins and the other
 * follows it. Until the next reload, which goes back to [pool]'s. */
void autoscale_set_bounds(struct autoscale *a, int64_t min, int64_t max);
/* <desired> within the bounds in force. */
uint64_t autoscale_clamp(const struct autoscale *a, uint64_t desired);
/* The settings [pool] gives. */
void autoscale_settings_from_config(const struct config *c, struct autoscale_settings *ret);
