/* The reconciler (control plane): keeps the pool's instances at the desired count through a provider
 * (provider.h), mirrors the running ones into the pool of backends (backend.h), and judges them by the
 * health checker's verdicts. The rules and their reasons are at the top of reconcile.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lbd/provider.h"
#include "lbd/refresh.h"
#include "lbd/zone.h"

struct event_base;
struct pool;
struct config;
struct reconcile;
struct history;

/* Where the reconciler reads the time (tests inject their own). Both in microseconds. */
struct reconcile_clock {
        uint64_t (*monotonic)(void *userdata); /* like now_usec() */
        uint64_t (*realtime)(
                void *userdata); /* like realtime_usec(): instances' launch times are wall clock */
        void *userdata;
};

/* One instance as the reconciler knows it. */
struct reconcile_instance {
        struct instance inst;
        bool listed;        /* in the last good list; else launched by lbd and not listed yet */
        bool terminating;   /* lbd is draining or terminating it */
        bool outside;       /* its address is outside [pool] networks: never contacted */
        uint64_t seen_usec; /* monotonic: when lbd first saw it */
        uint64_t seen_wall_usec;
        uint64_t terminating_usec; /* monotonic: when lbd decided to terminate it */
        uint64_t early_poll_usec;  /* monotonic: when an early poll was last made for it, 0 if never */
};

struct reconcile_stats {
        uint64_t launches;        /* instances launched */
        uint64_t terminations;    /* instances terminated */
        uint64_t provider_errors; /* provider calls that failed */
        uint64_t lists;           /* lists that succeeded */
};

/* Who may act on the pool, with several lbd hosts serving it (lease.h). Asked before every plan and
 * right before every launch and terminate: <may_mutate> returns whether this host may change the pool now
 * and, only then, writes the epoch (the fencing token that goes into every mutating call). Without one
 * (the default) this host always may, in epoch 0. */
struct reconcile_authority {
        bool (*may_mutate)(void *userdata, uint64_t *ret_epoch);
        void *userdata;
};

/* A read-only snapshot for the admin API and STATUS=; valid until the reconciler runs again. */
struct reconcile_view {
        const char *provider;
        bool managed;
        uint64_t desired;
        bool listed;            /* a list has succeeded since start */
        bool list_ok;           /* the last list succeeded */
        int last_error;         /* -errno of the last failed provider call, 0 if none */
        const char *last_error_text; /* the same in the provider's words ("AuthFailure: …"), NULL if none */
        uint64_t list_age_usec; /* since the last good list; meaningless until <listed> */
        uint64_t list_wall_usec; /* wall clock of the last good list, 0 before one */
        /* A call is failing now and retrying (the provider's status): for how long, how many attempts in a
         * row have failed, and the last one's error */
        bool failing;
        uint64_t failing_usec;
        unsigned failing_attempts;
        char failing_error[PROVIDER_ERROR_MAX];
        bool following;         /* another host leads (or none may): listing and serving, changing nothing */
        uint64_t epoch;         /* the epoch of this host's last mutating decision, 0 without a lease */
        bool panic;             /* every backend failed at once: nothing terminated, the least bad kept */
        bool guard;             /* the storm guard is holding back replacements */
        size_t held;            /* how many (launches and failed instances kept) */
        unsigned replacements;  /* replacements in the current window */
        const char *launch_hash; /* the provider's launch settings' hash, "" when it has none */
        /* The instance refresh: its state, settings, what the last poll of it saw, old instances it has
         * terminated, when it started (wall clock, 0 if never) and why it ended ("" while it runs) */
        enum refresh_state refresh;
        struct refresh_settings refresh_settings;
        struct refresh_counts refresh_counts;
        uint64_t refresh_replaced;
        uint64_t refresh_started_wall_usec;
        const char *refresh_reason;
        const struct zones *zones; /* the provider's zones and their backoff (zone.h) */
        uint64_t now_usec;         /* the reconciler's clock, for the zones' retry times */
        const struct reconcile_instance *instances;
        size_t n_instances;
        size_t by_state[INSTANCE_UNKNOWN + 1]; /* the last good list, by instance state */
        struct reconcile_stats stats;
};

/* Creates the reconciler for <provider> and <pool> (both must outlive it). Nothing happens until
 * reconcile_start(). Returns 0, -ENOMEM. */
int reconcile_new(struct event_base *base, struct provider *provider, struct pool *pool,
                  const struct config *c, struct reconcile **ret);
/* Stops everything; callbacks still pending in the provider must be cancelled by freeing the provider
 * right after. Returns NULL. */
struct reconcile *reconcile_free(struct reconcile *r);

/* <on_change> is called after the reconciler changed the pool's set of backends (call health_sync()) or its
 * own state (panic, storm guard: update STATUS=). */
void reconcile_set_on_change(struct reconcile *r, void (*on_change)(void *userdata), void *userdata);
/* Where launches, terminations, replacements, the storm guard and provider failures are told for the
 * status page's timeline (history.h); NULL for nowhere. <h> must outlive the reconciler or be unset. */
void reconcile_set_history(struct reconcile *r, struct history *h);
/* NULL: this host always acts (one lbd host). <a> is copied. */
void reconcile_set_authority(struct reconcile *r, const struct reconcile_authority *a);
/* For tests; NULL restores the real clocks. */
void reconcile_set_clock(struct reconcile *r, const struct reconcile_clock *clock);

/* Polls at once, then every [pool] poll. */
void reconcile_start(struct reconcile *r);
/* Takes new settings (<c> must live until the next call) and polls at once. The provider receives its own
 * set_config() from the caller. */
void reconcile_set_config(struct reconcile *r, const struct config *c);
/* Sets the desired count (scaling on demand) and polls; [pool] desired is only where it starts. */
void reconcile_set_desired(struct reconcile *r, uint64_t desired);
/* Polls now, or right after the call in flight. */
void reconcile_poll(struct reconcile *r);
/* To be called from the pool's on_change: re-judges the pool on the loop's next turn (the all-failed
 * case, and an earlier poll when a backend failed). */
void reconcile_pool_changed(struct reconcile *r);

/* Starts an instance refresh with <s> (the admin API): instances with other launch settings than the
 * provider's are replaced. Returns 0 (also when there is nothing to replace: the view says so),
 * -EOPNOTSUPP (a provider without launch settings), -EAGAIN (no list yet). */
int reconcile_refresh_start(struct reconcile *r, const struct refresh_settings *s);
/* Stops a running refresh where it is. Returns 0, or -ESRCH when none runs. */
int reconcile_refresh_cancel(struct reconcile *r);

void reconcile_get_view(const struct reconcile *r, struct reconcile_view *ret);
