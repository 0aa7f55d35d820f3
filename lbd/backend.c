/* Backends and the pool: reference counting, the health verdict, passive signals from traffic, and
 * reconciling the active set with a new list of addresses on reload.
 *
 * Ownership: the pool holds one reference per active backend (in pool->backends). Upstream connections
 * (proxy.c) and health probes (health.c) hold their own, so a backend dropped from the pool stays valid,
 * DRAINING, until the last of them lets go. Idle upstream connections are closed by the proxy when it sees
 * the backend draining. */
#include "lbd/backend.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/log.h"

static struct backend *backend_new(struct pool *p, const struct netaddr *addr)
{
        struct backend *b;

        b = calloc(1, sizeof(*b));
        if (!b)
                return NULL;
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
                b->refs++;
        return b;
}

struct backend *backend_unref(struct backend *b)
{
        if (!b)
                return NULL;
        if (--b->refs == 0)
                free(b);
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
        if (getrandom(&p->rng, sizeof(p->rng), GRND_NONBLOCK) != sizeof(p->rng))
                p->rng = now_usec();
        p->rng |= 1;
        return p;
}

static void pool_changed(struct pool *p)
{
        size_t n = 0;

        for (size_t i = 0; i < p->n_backends; i++)
                if (backend_in_rotation(p->backends[i]))
                        n++;
        p->n_healthy = n;
        if (p->on_change)
                p->on_change(p, p->on_change_userdata);
}

struct pool *pool_free(struct pool *p)
{
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_backends; i++) {
                p->backends[i]->state = BACKEND_DRAINING;
                p->backends[i]->pool = NULL;
                backend_unref(p->backends[i]);
        }
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
                        log_info("backend %s removed; draining %u in-flight requests", b->name, b->active);
                        b->state = BACKEND_DRAINING;
                        b->pool = NULL;
                }
                backend_unref(b);
        }

        free(p->backends);
        p->backends = next;
        p->n_backends = n_next;
        p->cap_backends = n ? n : 1;
        if (p->rr_next >= n_next)
                p->rr_next = 0;
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
        b->passive_fails = 0;
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
                           b->active);
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
        if (status == 503)
                return; /* overloaded or in maintenance: neither a failure nor a success */
        if (status != 0 && status < 500) {
                b->passive_fails = 0;
                return;
        }
        if (status == 0)
                b->stats.failures++;
        if (passive_fall == 0 || !b->healthy)
                return;
        if (++b->passive_fails >= passive_fall && backend_passive_may_take_out(b)) {
                char reason[64];

                (void)snprintf(reason, sizeof(reason), "%u consecutive %s from live traffic", b->passive_fails,
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
