/* Zones: the reconciler's memory of the provider's zones and its choices among them (see zone.h). The
 * state lives in the reconciler; everything here is a function of its arguments and that state. */
#include "lbd/zone.h"

#include <string.h>

#include "common/macro.h"

void zones_sync(struct zones *zs, const struct provider *p)
{
        struct zones next = {0};

        for (size_t i = 0; i < p->n_zones && i < PROVIDER_MAX_ZONES; i++) {
                int old = zones_find(zs, p->zones[i]);

                if (old >= 0)
                        next.z[next.n] = zs->z[old];
                else
                        memcpy(next.z[next.n].name, p->zones[i], sizeof(next.z[next.n].name));
                next.z[next.n].name[sizeof(next.z[next.n].name) - 1] = '\0';
                next.n++;
        }
        *zs = next;
}

int zones_find(const struct zones *zs, const char *name)
{
        if (!name || !name[0])
                return -1;
        for (size_t i = 0; i < zs->n; i++)
                if (strcmp(zs->z[i].name, name) == 0)
                        return (int)i;
        return -1;
}

bool zones_open(const struct zones *zs, size_t i, uint64_t now)
{
        return i < zs->n && now >= zs->z[i].retry_usec;
}

uint64_t zones_refused(struct zones *zs, size_t i, uint64_t now, uint64_t base_usec)
{
        uint64_t delay = base_usec;

        if (i >= zs->n)
                return 0;
        for (unsigned k = 0; k < MIN(zs->z[i].refusals, (unsigned)ZONE_BACKOFF_DOUBLINGS); k++)
                delay *= 2;
        zs->z[i].refusals++;
        zs->z[i].retry_usec = now + delay;
        return delay;
}

bool zones_instance_failed(struct zones *zs, size_t i, uint64_t now, uint64_t window)
{
        bool again;

        if (i >= zs->n)
                return false;
        again = zs->z[i].failed_usec != 0 && now < zs->z[i].failed_usec + window;
        zs->z[i].failed_usec = now;
        return again;
}

void zones_accepted(struct zones *zs, size_t i)
{
        if (i >= zs->n)
                return;
        zs->z[i].refusals = 0;
        zs->z[i].retry_usec = 0;
}

size_t zones_pick(const struct zones *zs, const size_t *counts, uint64_t now)
{
        size_t best = SIZE_MAX, first = 0;

        for (size_t i = 0; i < zs->n; i++) {
                if (zones_open(zs, i, now) && (best == SIZE_MAX || counts[i] < counts[best]))
                        best = i;
                if (zs->z[i].retry_usec < zs->z[first].retry_usec)
                        first = i;
        }
        return best != SIZE_MAX ? best : first;
}

bool zones_unbalanced(const struct zones *zs, const size_t *counts, uint64_t now, size_t *ret_from,
                      size_t *ret_to)
{
        size_t from = 0, to = SIZE_MAX;

        for (size_t i = 0; i < zs->n; i++) {
                if (counts[i] > counts[from])
                        from = i;
                if (zones_open(zs, i, now) && (to == SIZE_MAX || counts[i] < counts[to]))
                        to = i;
        }
        if (zs->n < 2 || to == SIZE_MAX || counts[to] + 2 > counts[from])
                return false;
        *ret_from = from;
        *ret_to = to;
        return true;
}
