/* Balancing algorithms. Each pick() looks only at backends in rotation that the request has not tried
 * yet; all are O(number of backends), which is small (tens), and allocate nothing. */
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
        return backend_in_rotation(b) && !balance_excluded(b, exclude, n_exclude);
}

static struct backend *balance_rr_pick(struct pool *p, struct backend *const *exclude, size_t n_exclude)
{
        for (size_t k = 0; k < p->n_backends; k++) {
                size_t i = (p->rr_next + k) % p->n_backends;
                struct backend *b = p->backends[i];

                if (balance_usable(b, exclude, n_exclude)) {
                        p->rr_next = (i + 1) % p->n_backends;
                        return b;
                }
        }
        return NULL;
}

static struct backend *balance_lc_pick(struct pool *p, struct backend *const *exclude, size_t n_exclude)
{
        struct backend *best = NULL;
        size_t best_i = 0;

        for (size_t k = 0; k < p->n_backends; k++) {
                size_t i = (p->rr_next + k) % p->n_backends;
                struct backend *b = p->backends[i];

                if (!balance_usable(b, exclude, n_exclude))
                        continue;
                if (!best || b->active < best->active) {
                        best = b;
                        best_i = i;
                }
        }
        if (best)
                p->rr_next = (best_i + 1) % p->n_backends;
        return best;
}

/* xorshift64*: fast, good enough to spread load; not for secrets. */
static uint64_t balance_random(struct pool *p)
{
        uint64_t x = p->rng;

        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        p->rng = x;
        return x * UINT64_C(2685821657736338717);
}

static struct backend *balance_p2c_pick(struct pool *p, struct backend *const *exclude, size_t n_exclude)
{
        struct backend *usable[64], *a, *b;
        size_t n = 0;

        if (p->n_backends > ELEMENTSOF(usable))
                return balance_lc_pick(p, exclude, n_exclude);

        for (size_t i = 0; i < p->n_backends; i++)
                if (balance_usable(p->backends[i], exclude, n_exclude))
                        usable[n++] = p->backends[i];
        if (n == 0)
                return NULL;
        if (n == 1)
                return usable[0];

        uint64_t r = balance_random(p);
        size_t i = (size_t)(r % n), j = (size_t)((r >> 32) % (n - 1));
        if (j >= i)
                j++;
        a = usable[i];
        b = usable[j];
        return b->active < a->active ? b : a;
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
