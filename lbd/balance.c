/* Balancing algorithms. Each pick() looks only at backends in rotation that the request has not tried
 * yet; all are O(number of backends), which is small (tens), and allocate nothing. They run on any event
 * loop: the set is the loop's view, the verdict and the in-flight counts are read atomically (the counts
 * summed over the loops, so least-conn and p2c see every loop's requests), and the cursor and random
 * state are the loop's own. */
#include "lbd/balance.h"

#include "common/macro.h"

static bool balance_excluded(const struct backend *b, struct backend *const *exclude, size_t n_exclude)
{
        for (size_t i = 0; i < n_exclude; i++)
                if (exclude[i] == b)
                        return true;
        return false;
}

static bool balance_usable(const struct backend *b, struct backend *const *exclude, size_t n_exclude)
{
        return backend_rotation(b) && !balance_excluded(b, exclude, n_exclude);
}

static struct backend *balance_rr_pick(const struct pool_view *p, struct balance_state *s,
                                       struct backend *const *exclude, size_t n_exclude)
{
        for (size_t k = 0; k < p->n; k++) {
                size_t i = (s->rr_next + k) % p->n;
                struct backend *b = p->backends[i];

                if (balance_usable(b, exclude, n_exclude)) {
                        s->rr_next = (i + 1) % p->n;
                        return b;
                }
        }
        return NULL;
}

static struct backend *balance_lc_pick(const struct pool_view *p, struct balance_state *s,
                                       struct backend *const *exclude, size_t n_exclude)
{
        struct backend *best = NULL;
        size_t best_i = 0;
        unsigned best_active = 0;

        for (size_t k = 0; k < p->n; k++) {
                size_t i = (s->rr_next + k) % p->n;
                struct backend *b = p->backends[i];
                unsigned active;

                if (!balance_usable(b, exclude, n_exclude))
                        continue;
                active = backend_active(b);
                if (!best || active < best_active) {
                        best = b;
                        best_i = i;
                        best_active = active;
                }
        }
        if (best)
                s->rr_next = (best_i + 1) % p->n;
        return best;
}

/* xorshift64*: fast, good enough to spread load; not for secrets. */
static uint64_t balance_random(struct balance_state *p)
{
        uint64_t x = p->rng;

        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        p->rng = x;
        return x * UINT64_C(2685821657736338717);
}

static struct backend *balance_p2c_pick(const struct pool_view *p, struct balance_state *s,
                                        struct backend *const *exclude, size_t n_exclude)
{
        struct backend *usable[64], *a, *b;
        size_t n = 0;

        if (p->n > ELEMENTSOF(usable))
                return balance_lc_pick(p, s, exclude, n_exclude);

        for (size_t i = 0; i < p->n; i++)
                if (balance_usable(p->backends[i], exclude, n_exclude))
                        usable[n++] = p->backends[i];
        if (n == 0)
                return NULL;
        if (n == 1)
                return usable[0];

        uint64_t r = balance_random(s);
        size_t i = (size_t)(r % n), j = (size_t)((r >> 32) % (n - 1));
        if (j >= i)
                j++;
        a = usable[i];
        b = usable[j];
        return backend_active(b) < backend_active(a) ? b : a;
}

const struct balancer_ops balance_round_robin = {
        .name = "round-robin",
        .pick = balance_rr_pick,
};

const struct balancer_ops balance_least_conn = {
        .name = "least-conn",
        .pick = balance_lc_pick,
};

const struct balancer_ops balance_p2c = {
        .name = "p2c",
        .pick = balance_p2c_pick,
};

const struct balancer_ops *balance_from_kind(enum balance_kind k)
{
        switch (k) {
        case BALANCE_LEAST_CONN:
                return &balance_least_conn;
        case BALANCE_P2C:
                return &balance_p2c;
        case BALANCE_ROUND_ROBIN:
        default:
                return &balance_round_robin;
        }
}
