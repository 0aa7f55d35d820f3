/* Backends and the pool: reference counting, the health verdict, passive signals from traffic, and
 * reconciling the active set with a new list of addresses on reload.
 *
 * Ownership: the pool holds one reference per active backend (in pool->backends). Upstream connections
 * (proxy.c) and health probes (health.c) hold their own, so a backend dropped from the pool stays valid,
 * DRAINING, until the last of them lets go. Idle upstream connections are closed by the proxy when it sees
 * the backend draining. */
#include "lbd/backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/log.h"
#include "common/macro.h"

static struct backend *backend_new(struct pool *p, const struct netaddr *addr)
{
        struct backend *b;

        b = calloc(1, sizeof(*b));
        if (!b)
                return NULL;
        b->loops = aligned_alloc(64, p->n_loops * sizeof(*b->loops));
        if (!b->loops) {
                free(b);
                return NULL;
        }
        memset(b->loops, 0, p->n_loops * sizeof(*b->loops));
        b->n_loops = p->n_loops;
        b->pool = p;
        b->addr = *addr;
        if (netaddr_format(addr, b->name, sizeof(b->name)) < 0)
                memcpy(b->name, "?", 2);
        b->state = BACKEND_ACTIVE;
        b->refs = 1;
        b->last_check = CHECK_NONE;
        b->health_changed_usec = now_usec();
        return b;
}

struct backend *backend_ref(struct backend *b)
{
        if (b)
                __atomic_fetch_add(&b->refs, 1, __ATOMIC_RELAXED);
        return b;
}

struct backend *backend_unref(struct backend *b)
{
        if (!b)
                return NULL;
        if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) {
                free(b->loops);
                free(b);
        }
        return NULL;
}

unsigned backend_active(const struct backend *b)
{
        unsigned n = 0;

        for (unsigned i = 0; i < b->n_loops; i++)
                n += COUNTER_GET(b->loops[i].active);
        return n;
}

static void backend_stats_add(struct backend_stats *to, const struct backend_stats *s)
{
        to->requests += COUNTER_GET(s->requests);
        to->failures += COUNTER_GET(s->failures);
        to->busy_usec += COUNTER_GET(s->busy_usec);
        to->health_ok += COUNTER_GET(s->health_ok);
        to->health_fail += COUNTER_GET(s->health_fail);
        for (size_t i = 0; i < ELEMENTSOF(s->by_code); i++)
                to->by_code[i] += COUNTER_GET(s->by_code[i]);
        latency_merge(&to->latency, &s->latency);
}

void backend_get_stats(const struct backend *b, struct backend_stats *ret)
{
        *ret = (struct backend_stats){0};
        backend_stats_add(ret, &b->stats);
        for (unsigned i = 0; i < b->n_loops; i++)
                backend_stats_add(ret, &b->loops[i].stats);
}

void backend_sample_load(struct backend *b, uint64_t now)
{
        uint64_t busy = 0, dt;
        double sample, weight;

        for (unsigned i = 0; i < b->n_loops; i++)
                busy += COUNTER_GET(b->loops[i].stats.busy_usec);
        if (b->load_at_usec == 0 || now <= b->load_at_usec || busy < b->load_busy_usec) {
                /* The first sample (or a clock that did not move): a starting point only. */
                b->load_busy_usec = busy;
                if (b->load_at_usec == 0)
                        b->load_at_usec = now;
                return;
        }
        dt = now - b->load_at_usec;
        sample = (double)(busy - b->load_busy_usec) / (double)dt;
        sample = MAX(sample, (double)backend_active(b));
        /* dt / (tau + dt): close to 1 - exp(-dt / tau) for the one-second steps, and never above 1 however
         * long the gap. */
        weight = (double)dt / (double)(BACKEND_LOAD_TAU_USEC + dt);
        b->load += (sample - b->load) * weight;
        b->load_busy_usec = busy;
        b->load_at_usec = now;
}

void pool_sample_load(struct pool *p, uint64_t now)
{
        for (size_t i = 0; p && i < p->n_backends; i++)
                backend_sample_load(p->backends[i], now);
}

bool backend_load_less(double a, double b)
{
        double margin = MAX(BACKEND_LOAD_TIE_ABS, b * BACKEND_LOAD_TIE_PCT / 100.0);

        return a + margin < b;
}

struct pool_view *pool_view_new(const struct pool *p)
{
        struct pool_view *v;

        v = malloc(sizeof(*v) + p->n_backends * sizeof(v->backends[0]));
        if (!v)
                return NULL;
        v->refs = 1;
        v->n = p->n_backends;
        for (size_t i = 0; i < p->n_backends; i++)
                v->backends[i] = backend_ref(p->backends[i]);
        return v;
}

struct pool_view *pool_view_ref(struct pool_view *v)
{
        if (v)
                __atomic_fetch_add(&v->refs, 1, __ATOMIC_RELAXED);
        return v;
}

struct pool_view *pool_view_unref(struct pool_view *v)
{
        if (!v || __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) != 0)
                return NULL;
        for (size_t i = 0; i < v->n; i++)
                backend_unref(v->backends[i]);
        free(v);
        return NULL;
}

struct pool *pool_new(struct event_base *base, const struct balancer_ops *balancer)
{
        struct pool *p;

        p = calloc(1, sizeof(*p));
        if (!p)
                return NULL;
        p->base = base;
        p->balancer = balancer;
        p->passive_max_down = 100; /* no limit until the configuration sets one */
        p->n_loops = 1;
        balance_state_init(&p->balance);
        p->view = pool_view_new(p);
        if (!p->view) {
                free(p);
                return NULL;
        }
        return p;
}

void balance_state_init(struct balance_state *s)
{
        s->rr_next = 0;
        if (getrandom(&s->rng, sizeof(s->rng), GRND_NONBLOCK) != sizeof(s->rng))
                s->rng = now_usec();
        s->rng |= 1;
}

int pool_set_loops(struct pool *p, unsigned n_loops)
{
        if (n_loops < 1 || n_loops > POOL_LOOPS_MAX || p->n_backends > 0)
                return -EINVAL;
        p->n_loops = n_loops;
        return 0;
}

static void pool_changed(struct pool *p)
{
        size_t n = 0;

        for (size_t i = 0; i < p->n_backends; i++) {
                bool in = backend_in_rotation(p->backends[i]);

                __atomic_store_n(&p->backends[i]->rotation, in, __ATOMIC_RELAXED);
                n += in;
        }
        p->n_healthy = n;
        if (p->on_change)
                p->on_change(p, p->on_change_userdata);
}

/* <b> leaves the pool: no loop picks it or keeps its connections idle any more. */
static void backend_retire(struct backend *b)
{
        __atomic_store_n(&b->state, BACKEND_DRAINING, __ATOMIC_RELAXED);
        __atomic_store_n(&b->rotation, false, __ATOMIC_RELAXED);
        b->pool = NULL;
}

struct pool *pool_free(struct pool *p)
{
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_backends; i++) {
                backend_retire(p->backends[i]);
                backend_unref(p->backends[i]);
        }
        pool_view_unref(p->view);
        free(p->backends);
        free(p);
        return NULL;
}

struct backend *pool_find(struct pool *p, const struct netaddr *addr)
{
        for (size_t i = 0; i < p->n_backends; i++)
                if (netaddr_equal(&p->backends[i]->addr, addr))
                        return p->backends[i];
        return NULL;
}

int pool_set_backends(struct pool *p, const struct netaddr *addrs, size_t n)
{
        struct backend **next;
        struct pool_view *view;
        size_t n_next = 0;

        next = calloc(n ? n : 1, sizeof(*next));
        if (!next)
                return -ENOMEM;

        for (size_t i = 0; i < n; i++) {
                struct backend *b = pool_find(p, &addrs[i]);

                if (b)
                        b = backend_ref(b);
                else {
                        b = backend_new(p, &addrs[i]);
                        if (!b) {
                                for (size_t j = 0; j < n_next; j++)
                                        backend_unref(next[j]);
                                free(next);
                                return -ENOMEM;
                        }
                        log_info("backend %s added (down until its first health check passes)", b->name);
                }
                b->index = n_next;
                next[n_next++] = b;
        }

        /* What is in the old set and not in the new one drains; the old set's references go. */
        for (size_t i = 0; i < p->n_backends; i++) {
                struct backend *b = p->backends[i];
                bool kept = false;

                for (size_t j = 0; j < n_next; j++)
                        if (next[j] == b)
                                kept = true;
                if (!kept) {
                        log_info("backend %s removed; draining %u in-flight requests", b->name,
                                 backend_active(b));
                        backend_retire(b);
                }
                backend_unref(b);
        }

        free(p->backends);
        p->backends = next;
        p->n_backends = n_next;
        p->cap_backends = n ? n : 1;
        if (p->balance.rr_next >= n_next)
                p->balance.rr_next = 0;
        view = pool_view_new(p);
        if (view) {
                pool_view_unref(p->view);
                p->view = view;
        } else
                log_error("Out of memory: the proxy keeps the previous set of backends");
        pool_changed(p);
        return 0;
}

size_t pool_count_healthy(const struct pool *p)
{
        return p->n_healthy;
}

void pool_refresh(struct pool *p)
{
        pool_changed(p);
}

void backend_set_healthy(struct backend *b, bool healthy, const char *reason)
{
        if (b->healthy == healthy)
                return;
        b->healthy = healthy;
        b->health_changed_usec = now_usec();
        if (healthy)
                b->been_healthy = true;
        b->rise_count = 0;
        b->fall_count = 0;
        __atomic_store_n(&b->passive_fails, 0, __ATOMIC_RELAXED);
        if (healthy)
                log_notice("backend %s is up: %s", b->name, reason);
        else
                log_warning("backend %s is down: %s", b->name, reason);
        if (b->pool)
                pool_changed(b->pool);
}

void backend_set_maintenance(struct backend *b, bool on)
{
        if (b->maintenance == on)
                return;
        b->maintenance = on;
        if (on)
                log_notice("backend %s is out of rotation for maintenance (%u requests in flight finish)", b->name,
                           backend_active(b));
        else
                log_notice("backend %s is back in rotation after maintenance (health: %s)", b->name,
                           b->healthy ? "up" : "down");
        if (b->pool)
                pool_changed(b->pool);
}

void backend_report_refused(struct backend *b, const char *reason)
{
        b->stats.failures++;
        backend_set_healthy(b, false, reason);
}

/* Whether passive health may take <b> out of its pool: the healthy ones left must stay at least
 * (100 - passive_max_down) percent of the pool. */
static bool backend_passive_may_take_out(struct backend *b)
{
        struct pool *p = b->pool;
        size_t up = 0;

        if (!p || p->passive_max_down >= 100)
                return true;
        for (size_t i = 0; i < p->n_backends; i++)
                up += p->backends[i]->healthy;
        if (up >= 1 && (up - 1) * 100 >= p->n_backends * (100 - p->passive_max_down)) {
                p->passive_held = false;
                return true;
        }
        if (!p->passive_held)
                log_warning("Passive health would take backend %s out, but %zu of %zu backends are healthy and "
                            "passive_max_down is %u %%: it stays, the active checks decide",
                            b->name, up, p->n_backends, p->passive_max_down);
        p->passive_held = true;
        return false;
}

void backend_report_result(struct backend *b, unsigned status, unsigned passive_fall)
{
        unsigned fails;

        if (status == 503)
                return; /* overloaded or in maintenance: neither a failure nor a success */
        if (status != 0 && status < 500) {
                backend_report_ok(b);
                return;
        }
        if (status == 0)
                b->stats.failures++;
        if (passive_fall == 0 || !b->healthy)
                return;
        fails = __atomic_add_fetch(&b->passive_fails, 1, __ATOMIC_RELAXED);
        if (fails >= passive_fall && backend_passive_may_take_out(b)) {
                char reason[64];

                (void)snprintf(reason, sizeof(reason), "%u consecutive %s from live traffic", fails,
                               status == 0 ? "timeouts" : "5xx responses");
                backend_set_healthy(b, false, reason);
        }
}

void backend_note_check(struct backend *b, enum check_result result)
{
        b->last_check = result;
        b->checks[b->n_checks % BACKEND_CHECKS_KEPT] = (uint8_t)result;
        b->n_checks++;
}

const char *backend_check_result_name(enum check_result r)
{
        switch (r) {
        case CHECK_NONE:
                return "none";
        case CHECK_OK:
                return "ok";
        case CHECK_FAIL:
                return "fail";
        case CHECK_TIMEOUT:
                return "timeout";
        case CHECK_REFUSED:
                return "refused";
        case CHECK_ERROR:
                return "error";
        }
        return "error";
}
