/* The instance refresh (an Auto Scaling Group's habit): instances launched with other settings than the
 * provider's launch_hash are replaced in batches that keep enough of the pool serving. The reconciler
 * (reconcile.c) carries it out poll by poll, within its own rules; this module holds what it decides by
 * arithmetic alone, and the names. See "Refresh" at the top of reconcile.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REFRESH_REASON_MAX 384

enum refresh_state {
        REFRESH_NONE,        /* every instance has the current settings, or nothing was ever refreshed */
        REFRESH_RUNNING,     /* replacing instances with other settings */
        REFRESH_DONE,        /* the last refresh replaced every such instance */
        REFRESH_CANCELLED,   /* lbctl refresh --cancel: what is left stays as it is */
        REFRESH_ROLLED_BACK, /* new instances did not become healthy in time: those were terminated, the
                              * ones with the old settings kept */
        REFRESH_FAILED,      /* the same, with [pool] refresh_on_failure = stop: nothing undone */
};

enum refresh_on_failure {
        REFRESH_ROLLBACK,
        REFRESH_STOP,
};

struct refresh_settings {
        uint64_t min_healthy;  /* percent of desired that keeps serving, 0..100 */
        uint64_t warmup_usec;  /* a new instance counts once healthy this long */
        uint64_t timeout_usec; /* a new instance not healthy this long after its launch fails the refresh */
        enum refresh_on_failure on_failure;
};

/* One poll's view of the pool during a refresh. Serving means healthy and in rotation. */
struct refresh_counts {
        size_t desired;
        size_t old_total;   /* alive instances with other settings */
        size_t old_serving; /* of those, serving */
        size_t new_total;   /* alive instances with the current settings */
        size_t new_warm;    /* of those, serving for at least the warmup */
};

/* What the poll does for the refresh. */
struct refresh_step {
        size_t launch;        /* instances to launch with the current settings */
        size_t terminate_old; /* serving instances with other settings to drain and terminate */
};

/* The least that keeps serving: <min_healthy> percent of <desired>, rounded up. */
size_t refresh_min_serving(size_t desired, uint64_t min_healthy);

/* Decides a poll's step: at most max(1, desired - min serving) instances beyond desired at once; an old
 * serving instance goes only while the serving ones (old serving + new warm) stay at the minimum or
 * above; launches until <desired> instances have the current settings. Old instances that are not serving
 * are never chosen here (the reconciler's own rules judge them: a restarted lbd has checked nothing yet). */
void refresh_plan(const struct refresh_settings *s, const struct refresh_counts *c, struct refresh_step *ret);

/* "none", "running", "done", "cancelled", "rolled-back", "failed". */
const char *refresh_state_name(enum refresh_state s);
/* "rollback", "stop". */
const char *refresh_on_failure_name(enum refresh_on_failure f);
