/* The history behind the status page (history.h): a one-second timer copies the proxy's and the backends'
 * counters into bounded rings; the page reads them.
 *
 * Ownership: the history owns its rings and one reference to each backend it follows (struct
 * history_backend); it reads the pool and the proxy's counters but never changes them. The per-second
 * sample is the difference between two copies of the proxy's cumulative counters one tick apart; a
 * backend's window is the difference between its counters now and those HISTORY_WINDOW ticks ago. So a
 * stalled loop stretches one sample over more time but never loses or double-counts a request. */
#include "lbd/history.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "lbd/backend.h"
#include "lbd/latency.h"
#include "lbd/proxy.h"

#define HISTORY_TICK_USEC USEC_PER_SEC

/* One backend followed: its cumulative counters at the last HISTORY_WINDOW + 1 ticks. */
struct history_backend {
        struct backend *b; /* a reference */
        struct latency_hist latency[HISTORY_WINDOW + 1];
        uint64_t requests[HISTORY_WINDOW + 1];
        uint64_t errors[HISTORY_WINDOW + 1];
        uint64_t wall_usec[HISTORY_WINDOW + 1];
        unsigned next; /* where the next tick writes */
        unsigned n;    /* ticks recorded, at most HISTORY_WINDOW + 1 */
        bool seen;     /* in the pool at this tick (a mark while syncing) */
};

struct history {
        struct event *timer;
        struct pool *pool;
        void (*get_stats)(void *userdata, struct proxy_stats *ret); /* the proxy's counters, or NULL */
        void *get_stats_userdata;

        struct history_sample samples[HISTORY_SECONDS];
        size_t sample_next, n_samples;
        struct latency_hist last_latency; /* the proxy's at the last tick */
        uint64_t last_errors;
        bool primed; /* last_* hold a first copy */

        struct history_event events[HISTORY_EVENTS];
        size_t event_next, n_events;
        uint64_t events_total;

        struct history_backend **backends;
        size_t n_backends;
};

static uint64_t history_backend_errors(const struct backend_stats *b)
{
        uint64_t n = b->failures;

        for (unsigned code = 500; code <= BACKEND_CODE_MAX; code++)
                n += b->by_code[code - BACKEND_CODE_MIN];
        return n;
}

static struct history_backend *history_find(const struct history *h, const struct backend *b)
{
        for (size_t i = 0; i < h->n_backends; i++)
                if (h->backends[i]->b == b)
                        return h->backends[i];
        return NULL;
}

/* Follows the pool's backends: new ones are added, those that left it are dropped. Returns 0 or -ENOMEM
 * (the backends not added yet are tried again at the next tick). */
static int history_sync(struct history *h)
{
        size_t n = h->pool ? h->pool->n_backends : 0, kept = 0;
        int r = 0;

        for (size_t i = 0; i < h->n_backends; i++)
                h->backends[i]->seen = false;
        for (size_t i = 0; i < n; i++) {
                struct backend *b = h->pool->backends[i];
                struct history_backend *hb = history_find(h, b), **grown;

                if (hb) {
                        hb->seen = true;
                        continue;
                }
                hb = calloc(1, sizeof(*hb));
                grown = hb ? realloc(h->backends, (h->n_backends + 1) * sizeof(*grown)) : NULL;
                if (!grown) {
                        free(hb);
                        r = -ENOMEM;
                        continue;
                }
                h->backends = grown;
                hb->b = backend_ref(b);
                hb->seen = true;
                h->backends[h->n_backends++] = hb;
        }
        for (size_t i = 0; i < h->n_backends; i++) {
                struct history_backend *hb = h->backends[i];

                if (!hb->seen || hb->b->state != BACKEND_ACTIVE) {
                        backend_unref(hb->b);
                        free(hb);
                        continue;
                }
                h->backends[kept++] = hb;
        }
        h->n_backends = kept;
        return r;
}

static void history_record_backend(struct history_backend *hb, uint64_t wall_usec)
{
        struct backend_stats st;

        backend_get_stats(hb->b, &st);
        hb->latency[hb->next] = st.latency;
        hb->requests[hb->next] = st.requests;
        hb->errors[hb->next] = history_backend_errors(&st);
        hb->wall_usec[hb->next] = wall_usec;
        hb->next = (hb->next + 1) % (HISTORY_WINDOW + 1);
        if (hb->n < HISTORY_WINDOW + 1)
                hb->n++;
}

void history_tick(struct history *h, uint64_t wall_usec)
{
        struct history_sample *s;
        struct proxy_stats stats;
        size_t healthy = 0;
        int r;

        r = history_sync(h);
        if (r < 0)
                log_debug_errno(r, "History: could not follow every backend: %m");
        /* The same tick samples the backends' smoothed load, which the reconciler scales in by. */
        pool_sample_load(h->pool, now_usec());
        for (size_t i = 0; i < h->n_backends; i++)
                history_record_backend(h->backends[i], wall_usec);
        for (size_t i = 0; h->pool && i < h->pool->n_backends; i++)
                if (h->pool->backends[i]->healthy)
                        healthy++;

        if (h->get_stats)
                h->get_stats(h->get_stats_userdata, &stats);
        if (!h->primed && h->get_stats) {
                /* The first tick only takes the copy the next one subtracts. */
                h->last_latency = stats.latency;
                h->last_errors = stats.errors_total;
                h->primed = true;
                return;
        }

        s = &h->samples[h->sample_next];
        *s = (struct history_sample){
                .wall_sec = wall_usec / USEC_PER_SEC,
                .healthy = (uint32_t)healthy,
                .p99_usec = -1,
        };
        if (h->get_stats) {
                struct latency_hist d;

                latency_diff(&stats.latency, &h->last_latency, &d);
                s->requests = d.count;
                s->errors = (uint32_t)(stats.errors_total - h->last_errors);
                s->p99_usec = latency_percentile(&d, 990);
                h->last_latency = stats.latency;
                h->last_errors = stats.errors_total;
        }
        h->sample_next = (h->sample_next + 1) % HISTORY_SECONDS;
        if (h->n_samples < HISTORY_SECONDS)
                h->n_samples++;
}

static void history_on_timer(evutil_socket_t fd, short what, void *userdata)
{
        history_tick(userdata, realtime_usec());
}

struct history *history_new(struct event_base *base, struct pool *pool,
                            void (*get_stats)(void *userdata, struct proxy_stats *ret), void *userdata)
{
        struct timeval tv = timeval_from_usec(HISTORY_TICK_USEC);
        struct history *h;

        h = calloc(1, sizeof(*h));
        if (!h)
                return NULL;
        h->pool = pool;
        h->get_stats = get_stats;
        h->get_stats_userdata = userdata;
        if (base) {
                h->timer = event_new(base, -1, EV_PERSIST, history_on_timer, h);
                if (!h->timer || event_add(h->timer, &tv) < 0)
                        return history_free(h);
        }
        return h;
}

struct history *history_free(struct history *h)
{
        if (!h)
                return NULL;
        if (h->timer)
                event_free(h->timer);
        for (size_t i = 0; i < h->n_backends; i++) {
                backend_unref(h->backends[i]->b);
                free(h->backends[i]);
        }
        free(h->backends);
        free(h);
        return NULL;
}

void history_eventv(struct history *h, enum history_event_kind kind, const char *format, va_list ap)
{
        struct history_event *e;

        if (!h)
                return;
        e = &h->events[h->event_next];
        e->wall_usec = realtime_usec();
        e->kind = kind;
        if (vsnprintf(e->text, sizeof(e->text), format, ap) < 0)
                e->text[0] = '\0';
        h->event_next = (h->event_next + 1) % HISTORY_EVENTS;
        if (h->n_events < HISTORY_EVENTS)
                h->n_events++;
        h->events_total++;
}

void history_event(struct history *h, enum history_event_kind kind, const char *format, ...)
{
        va_list ap;

        va_start(ap, format);
        history_eventv(h, kind, format, ap);
        va_end(ap);
}

const char *history_event_kind_name(enum history_event_kind kind)
{
        static const char *const names[_HISTORY_EVENT_MAX] = {
                [HISTORY_EVENT_LAUNCH] = "launch",
                [HISTORY_EVENT_TERMINATE] = "terminate",
                [HISTORY_EVENT_REPLACE] = "replace",
                [HISTORY_EVENT_LOST] = "lost",
                [HISTORY_EVENT_RELOAD] = "reload",
                [HISTORY_EVENT_GUARD] = "storm guard",
                [HISTORY_EVENT_ALL_FAILING] = "all failing",
                [HISTORY_EVENT_PROVIDER] = "provider",
                [HISTORY_EVENT_DESIRED] = "desired",
                [HISTORY_EVENT_OPERATOR] = "operator",
                [HISTORY_EVENT_LEADER] = "leader",
        };

        return (unsigned)kind < _HISTORY_EVENT_MAX ? names[kind] : "?";
}

size_t history_n_samples(const struct history *h)
{
        return h->n_samples;
}

/* Where the <i>th oldest of the <n> entries of a ring of <size> whose next write goes to <next> is. */
static size_t history_ring_index(size_t next, size_t n, size_t size, size_t i)
{
        return (next + size - n + i) % size;
}

const struct history_sample *history_sample_at(const struct history *h, size_t i)
{
        if (i >= h->n_samples)
                return NULL;
        return &h->samples[history_ring_index(h->sample_next, h->n_samples, HISTORY_SECONDS, i)];
}

size_t history_n_events(const struct history *h)
{
        return h->n_events;
}

uint64_t history_events_total(const struct history *h)
{
        return h->events_total;
}

const struct history_event *history_event_at(const struct history *h, size_t i)
{
        if (i >= h->n_events)
                return NULL;
        return &h->events[history_ring_index(h->event_next, h->n_events, HISTORY_EVENTS, i)];
}

void history_backend(const struct history *h, const struct backend *b, struct history_backend_view *ret)
{
        const struct history_backend *hb = history_find(h, b);
        unsigned last, first;
        uint64_t requests, errors, span_usec;
        struct latency_hist d;

        *ret = (struct history_backend_view){.error_rate = -1, .p50_usec = -1, .p99_usec = -1};
        if (!hb || hb->n < 2)
                return;
        last = (hb->next + HISTORY_WINDOW) % (HISTORY_WINDOW + 1);
        first = (hb->next + HISTORY_WINDOW + 1 - hb->n) % (HISTORY_WINDOW + 1);
        requests = hb->requests[last] - hb->requests[first];
        errors = hb->errors[last] - hb->errors[first];
        span_usec =
                hb->wall_usec[last] > hb->wall_usec[first] ? hb->wall_usec[last] - hb->wall_usec[first] : 0;
        if (span_usec > 0)
                ret->rps = (double)requests * (double)USEC_PER_SEC / (double)span_usec;
        if (requests > 0)
                ret->error_rate = MIN(1.0, (double)errors / (double)requests);
        latency_diff(&hb->latency[last], &hb->latency[first], &d);
        ret->p50_usec = latency_percentile(&d, 500);
        ret->p99_usec = latency_percentile(&d, 990);
}
