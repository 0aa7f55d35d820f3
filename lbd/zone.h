/* Zones: where the provider may put instances (EC2 subnets, one per Availability Zone), and what the
 * reconciler remembers of each: a zone that refused a launch for want of capacity, or whose instances
 * keep failing, is left alone for a while (doubling while it goes on). Pure bookkeeping and choices, no calls: the reconciler
 * (reconcile.c) counts the instances per zone and acts. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lbd/provider.h"

#define ZONE_BACKOFF_DOUBLINGS 4 /* the backoff grows to 16 x [pool] zone_backoff at most */

struct zone {
        char name[INSTANCE_ID_MAX];
        uint64_t retry_usec; /* monotonic: no launch there before it; 0 when open */
        unsigned refusals;   /* capacity refusals (or failing zones) in a row */
        uint64_t failed_usec; /* monotonic: when an instance there last failed its checks, 0 never */
};

struct zones {
        struct zone z[PROVIDER_MAX_ZONES];
        size_t n;
};

/* Makes <zs> the provider's zones, in its order, keeping what is known of the zones still there. */
void zones_sync(struct zones *zs, const struct provider *p);
/* The index of zone <name>, or -1 when it is none of them ("" included). */
int zones_find(const struct zones *zs, const char *name);
bool zones_open(const struct zones *zs, size_t i, uint64_t now);
/* Zone <i> refused a launch at <now>: closed for <base_usec> doubled per refusal in a row (at most
 * ZONE_BACKOFF_DOUBLINGS times). Returns the delay. */
uint64_t zones_refused(struct zones *zs, size_t i, uint64_t now, uint64_t base_usec);
/* An instance in zone <i> failed its health checks at <now>. Returns true when another one there failed
 * within <window> before it: the zone itself is likely failing (the caller closes it with
 * zones_refused(), so the replacement goes elsewhere). */
bool zones_instance_failed(struct zones *zs, size_t i, uint64_t now, uint64_t window);
/* Zone <i> accepted a launch: open, its refusals forgotten. */
void zones_accepted(struct zones *zs, size_t i);
/* Where the next instance goes: the open zone with the fewest of <counts> (per zone), the first of
 * equals; when every zone is closed, the one that reopens first (a pool is never left short for want
 * of a zone). Requires zs->n > 0. */
size_t zones_pick(const struct zones *zs, const size_t *counts, uint64_t now);
/* True when the pool is unbalanced: an open zone has at least 2 instances fewer than another. Then
 * <ret_to> is the open zone with the fewest and <ret_from> the zone with the most. */
bool zones_unbalanced(const struct zones *zs, const size_t *counts, uint64_t now, size_t *ret_from,
                      size_t *ret_to);
