/* What the status page shows over time, kept in memory and bounded: one sample a second for the last
 * HISTORY_SECONDS (requests, 5xx answers, p99 latency, healthy backends), a window of the last
 * HISTORY_WINDOW seconds per backend (request rate, error rate, p50 and p99 latency), and a timeline of the
 * last HISTORY_EVENTS control-plane events (launches, terminations, replacements with their reason,
 * reloads, the storm guard, the operator's drains).
 *
 * Nothing here runs on the request path: the proxy only counts (latency.h, proxy_stats, backend_stats), and
 * a timer on the event loop copies those counters once a second. Everything is read and written on the one
 * event loop. The history holds a reference to each backend it follows, dropped at the first tick after the
 * backend left the pool. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macro.h"

struct event_base;
struct pool;
struct backend;
struct proxy_stats;
struct history;

#define HISTORY_SECONDS    900 /* per-second samples kept: 15 minutes */
#define HISTORY_WINDOW     10  /* seconds behind a backend's rates and percentiles */
#define HISTORY_EVENTS     256 /* timeline entries kept */
#define HISTORY_EVENT_TEXT 240 /* bytes of one entry's text, cut beyond */

enum history_event_kind {
        HISTORY_EVENT_LAUNCH,      /* instances launched */
        HISTORY_EVENT_TERMINATE,   /* an instance terminated (scale-down) */
        HISTORY_EVENT_REPLACE,     /* an instance terminated to be replaced: failed, stopped */
        HISTORY_EVENT_LOST,        /* an instance gone or stopped, not by lbd's doing */
        HISTORY_EVENT_RELOAD,      /* the configuration reloaded, or a reload refused */
        HISTORY_EVENT_GUARD,       /* the replacement-storm guard held back or released */
        HISTORY_EVENT_ALL_FAILING, /* every backend failing at once, and back to normal */
        HISTORY_EVENT_PROVIDER,    /* a provider call failed, or works again */
        HISTORY_EVENT_DESIRED,     /* the desired count changed */
        HISTORY_EVENT_OPERATOR,    /* drain or enable from the admin API or the page */
        HISTORY_EVENT_LEADER,      /* leadership changes, the lease store down or back ([lease]) */
        _HISTORY_EVENT_MAX,
};

struct history_sample {
        uint64_t wall_sec; /* the second it ends (Unix time) */
        uint32_t requests; /* exchanges that ended during it */
        uint32_t errors;   /* of those, answered with a 5xx (the backend's or lbd's own) */
        int64_t p99_usec;  /* -1: no exchange ended */
        uint32_t healthy;  /* backends passing their checks at its end */
};

struct history_event {
        uint64_t wall_usec;
        enum history_event_kind kind;
        char text[HISTORY_EVENT_TEXT];
};

/* A backend's last HISTORY_WINDOW seconds (fewer right after it appeared). */
struct history_backend_view {
        double rps;        /* requests sent to it per second */
        double error_rate; /* failures and 5xx per request, 0..1; -1 with no request */
        int64_t p50_usec;  /* -1 with no response */
        int64_t p99_usec;
};

/* Creates the history of <pool> (which outlives it) and of the proxy's counters, which each tick copies
 * with get_stats(<userdata>, ...) (NULL: no global figures), and starts its timer on <base>. Returns NULL
 * on allocation failure. */
struct history *history_new(struct event_base *base, struct pool *pool,
                            void (*get_stats)(void *userdata, struct proxy_stats *ret), void *userdata);
/* Stops the timer and drops the backends' references. Returns NULL. */
struct history *history_free(struct history *h);

/* Takes one sample now, as the timer does every second (tests call it with their own clock: <wall_usec>
 * is the wall clock). */
void history_tick(struct history *h, uint64_t wall_usec);

/* Adds an entry to the timeline, stamped with the wall clock. <h> may be NULL (nothing happens), so that
 * modules can report without knowing whether anyone keeps a history. */
void history_event(struct history *h, enum history_event_kind kind, const char *format, ...) _printf_(3, 4);
void history_eventv(struct history *h, enum history_event_kind kind, const char *format, va_list ap)
        _printf_(3, 0);

/* "launch", "terminate", "replace", "lost", "reload", "storm guard", "all failing", "provider", "desired",
 * "operator", "leader". */
const char *history_event_kind_name(enum history_event_kind kind);

/* The samples, oldest first: history_sample_at(h, 0) up to history_sample_at(h, n - 1) (NULL beyond). */
size_t history_n_samples(const struct history *h);
const struct history_sample *history_sample_at(const struct history *h, size_t i);

/* The timeline, oldest first; history_events_total() counts every event since the start, so the one at
 * history_event_at(h, i) is number total - n + i. */
size_t history_n_events(const struct history *h);
uint64_t history_events_total(const struct history *h);
const struct history_event *history_event_at(const struct history *h, size_t i);

/* Fills <ret> for <b>; all -1 and 0 when the history does not follow it yet. */
void history_backend(const struct history *h, const struct backend *b, struct history_backend_view *ret);
