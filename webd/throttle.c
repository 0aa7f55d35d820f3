/* Login throttling (see throttle.h for the rules).
 *
 * One table holds the three kinds of counter. Entries are allocated once, all of them; a hash of chains
 * finds them (the hash is seeded at random, so that nobody can choose names that share a chain), and a
 * list in order of use gives the entry to reuse when all are taken. Every operation costs a few chain
 * walks: nothing here depends on how many names or addresses have been seen. */
#include "webd/throttle.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/macro.h"

#define THROTTLE_NONE       UINT32_MAX
#define THROTTLE_FIRST_USEC USEC_PER_SEC
#define THROTTLE_FORGET     3 /* times max_delay after the last failure */

enum throttle_kind {
        THROTTLE_PAIR = 1,
        THROTTLE_ADDRESS,
        THROTTLE_ACCOUNT,
};

/* Compared and hashed as bytes: always zeroed before it is filled. */
struct throttle_key {
        uint8_t kind;
        uint8_t family; /* 4, 6, or 0: no address in this key */
        uint8_t addr[8]; /* IPv4, or the /64 of IPv6 */
        char account[THROTTLE_ACCOUNT_MAX];
};

struct throttle_entry {
        struct throttle_key key;
        uint64_t last_failure_usec;
        uint64_t until_usec; /* attempts before this are refused */
        uint32_t failures;
        bool known;          /* a pair the account has logged in from */
        uint32_t chain;      /* next entry in the bucket */
        uint32_t prev, next; /* order of use, most recent first */
};

struct throttle {
        struct throttle_limits limits;
        struct throttle_entry *entries;
        uint32_t *buckets;
        size_t n_buckets; /* a power of two */
        size_t used;
        uint32_t newest, oldest;
        uint64_t seed;
};

int throttle_new(const struct throttle_limits *l, struct throttle **ret)
{
        struct throttle *t;

        if (l->pair == 0 || l->address == 0 || l->account == 0 || l->max_delay_usec < USEC_PER_SEC ||
            l->entries < 16 || l->entries >= THROTTLE_NONE / 2)
                return -EINVAL;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->limits = *l;
        t->n_buckets = 16;
        while (t->n_buckets < l->entries)
                t->n_buckets *= 2;
        t->entries = calloc(l->entries, sizeof(*t->entries));
        t->buckets = malloc(t->n_buckets * sizeof(*t->buckets));
        if (!t->entries || !t->buckets) {
                throttle_free(t);
                return -ENOMEM;
        }
        for (size_t i = 0; i < t->n_buckets; i++)
                t->buckets[i] = THROTTLE_NONE;
        t->newest = t->oldest = THROTTLE_NONE;
        if (getrandom(&t->seed, sizeof(t->seed), GRND_NONBLOCK) != sizeof(t->seed))
                t->seed = now_usec() ^ (uint64_t)(uintptr_t)t;
        *ret = t;
        return 0;
}

struct throttle *throttle_free(struct throttle *t)
{
        if (!t)
                return NULL;
        free(t->entries);
        free(t->buckets);
        free(t);
        return NULL;
}

size_t throttle_size(const struct throttle *t)
{
        return t->used;
}

/* Fills <k>; <account> NULL: an address key; <a> NULL: an account key. */
static void throttle_key(struct throttle_key *k, enum throttle_kind kind, const char *account,
                         const struct netaddr *a)
{
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

        memset(k, 0, sizeof(*k));
        k->kind = (uint8_t)kind;
        if (account)
                memcpy(k->account, account, strnlen(account, sizeof(k->account) - 1));
        if (!a)
                return;
        if (a->u.sa.sa_family == AF_INET) {
                k->family = 4;
                memcpy(k->addr, &a->u.in.sin_addr, 4);
        } else if (a->u.sa.sa_family == AF_INET6) {
                const uint8_t *b = a->u.in6.sin6_addr.s6_addr;

                if (memcmp(b, mapped, sizeof(mapped)) == 0) {
                        k->family = 4;
                        memcpy(k->addr, b + 12, 4);
                } else {
                        k->family = 6;
                        memcpy(k->addr, b, 8);
                }
        }
}

static size_t throttle_bucket(const struct throttle *t, const struct throttle_key *k)
{
        const uint8_t *p = (const uint8_t *)k;
        uint64_t h = t->seed ^ UINT64_C(14695981039346656037);

        for (size_t i = 0; i < sizeof(*k); i++)
                h = (h ^ p[i]) * UINT64_C(1099511628211);
        h ^= h >> 33;
        h *= UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 33;
        return (size_t)(h & (t->n_buckets - 1));
}

static void throttle_unlink_use(struct throttle *t, uint32_t i)
{
        struct throttle_entry *e = &t->entries[i];

        if (e->prev != THROTTLE_NONE)
                t->entries[e->prev].next = e->next;
        else
                t->newest = e->next;
        if (e->next != THROTTLE_NONE)
                t->entries[e->next].prev = e->prev;
        else
                t->oldest = e->prev;
}

static void throttle_push_use(struct throttle *t, uint32_t i)
{
        struct throttle_entry *e = &t->entries[i];

        e->prev = THROTTLE_NONE;
        e->next = t->newest;
        if (t->newest != THROTTLE_NONE)
                t->entries[t->newest].prev = i;
        t->newest = i;
        if (t->oldest == THROTTLE_NONE)
                t->oldest = i;
}

static void throttle_unlink_chain(struct throttle *t, uint32_t i)
{
        uint32_t *p = &t->buckets[throttle_bucket(t, &t->entries[i].key)];

        while (*p != i)
                p = &t->entries[*p].chain;
        *p = t->entries[i].chain;
}

/* Forgets the failures of <e> once they are old enough. */
static void throttle_expire(const struct throttle *t, struct throttle_entry *e, uint64_t now)
{
        if (e->failures > 0 && now - e->last_failure_usec > THROTTLE_FORGET * t->limits.max_delay_usec) {
                e->failures = 0;
                e->until_usec = 0;
        }
}

/* The entry of <k>, or NULL; with <create>, a new one (the least recently used reused when all are
 * taken), which is then the most recently used. */
static struct throttle_entry *throttle_find(struct throttle *t, const struct throttle_key *k, bool create,
                                            uint64_t now)
{
        size_t b = throttle_bucket(t, k);
        uint32_t i;

        for (i = t->buckets[b]; i != THROTTLE_NONE; i = t->entries[i].chain)
                if (memcmp(&t->entries[i].key, k, sizeof(*k)) == 0)
                        break;
        if (i == THROTTLE_NONE && !create)
                return NULL;
        if (i == THROTTLE_NONE) {
                if (t->used < t->limits.entries)
                        i = (uint32_t)t->used++;
                else {
                        i = t->oldest;
                        throttle_unlink_chain(t, i);
                        throttle_unlink_use(t, i);
                }
                t->entries[i] = (struct throttle_entry){.key = *k, .chain = t->buckets[b]};
                t->buckets[b] = i;
        } else if (create)
                throttle_unlink_use(t, i);
        if (create)
                throttle_push_use(t, i);
        throttle_expire(t, &t->entries[i], now);
        return &t->entries[i];
}

static uint64_t throttle_wait(const struct throttle_entry *e, uint64_t now)
{
        return e && e->until_usec > now ? e->until_usec - now : 0;
}

uint64_t throttle_check(struct throttle *t, const char *account, const struct netaddr *address,
                        uint64_t now_usec)
{
        struct throttle_key k;
        struct throttle_entry *pair, *e;
        uint64_t wait;

        throttle_key(&k, THROTTLE_PAIR, account, address);
        pair = throttle_find(t, &k, false, now_usec);
        wait = throttle_wait(pair, now_usec);
        throttle_key(&k, THROTTLE_ADDRESS, NULL, address);
        e = throttle_find(t, &k, false, now_usec);
        wait = MAX(wait, throttle_wait(e, now_usec));
        if (!pair || !pair->known) {
                throttle_key(&k, THROTTLE_ACCOUNT, account, NULL);
                e = throttle_find(t, &k, false, now_usec);
                wait = MAX(wait, throttle_wait(e, now_usec));
        }
        return wait;
}

/* Counts one failure on the counter of <k> with its <limit>. */
static void throttle_count(struct throttle *t, const struct throttle_key *k, uint64_t limit, uint64_t now)
{
        struct throttle_entry *e = throttle_find(t, k, true, now);
        uint64_t delay;

        if (e->failures < UINT32_MAX)
                e->failures++;
        e->last_failure_usec = now;
        if (e->failures < limit)
                return;
        /* 1 s at the limit, doubling after; the shift is capped well before it overflows. */
        delay = THROTTLE_FIRST_USEC << MIN(e->failures - limit, (uint64_t)20);
        e->until_usec = now + MIN(delay, t->limits.max_delay_usec);
}

void throttle_failed(struct throttle *t, const char *account, const struct netaddr *address, uint64_t now_usec)
{
        struct throttle_key k;

        throttle_key(&k, THROTTLE_PAIR, account, address);
        throttle_count(t, &k, t->limits.pair, now_usec);
        throttle_key(&k, THROTTLE_ADDRESS, NULL, address);
        throttle_count(t, &k, t->limits.address, now_usec);
        throttle_key(&k, THROTTLE_ACCOUNT, account, NULL);
        throttle_count(t, &k, t->limits.account, now_usec);
}

void throttle_succeeded(struct throttle *t, const char *account, const struct netaddr *address,
                        uint64_t now_usec)
{
        struct throttle_key k;
        struct throttle_entry *e;

        throttle_key(&k, THROTTLE_PAIR, account, address);
        e = throttle_find(t, &k, true, now_usec);
        e->failures = 0;
        e->until_usec = 0;
        e->known = true;
}
