/* The pool's public address follows the leader: with [lease] elastic_ip, the host that takes the lease
 * moves the Elastic IP to its own instance ([lease] instance_id) with AssociateAddress and
 * AllowReassociation, through an EC2 client of its own (ec2.h). The call is made only while the lease
 * says this host may act (asked right before each attempt), once per epoch, and tried again every few
 * seconds until it succeeds or the host stops leading. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct config;
struct eip;

#define EIP_RETRY_USEC (2 * UINT64_C(1000000))

/* <may_act> answers whether this host may act now and in which epoch (lease_may_mutate()). The settings
 * of <c> are copied. Returns 0 or -errno (logged). */
int eip_new(struct event_base *base, const struct config *c, bool (*may_act)(void *userdata, uint64_t *ret_epoch),
            void *userdata, struct eip **ret);
struct eip *eip_free(struct eip *e);
/* Leadership may have changed: moves the address when this host leads in an epoch it has not moved it
 * in yet. */
void eip_update(struct eip *e);
/* The epoch the address was last moved in by this host, 0 if never. */
uint64_t eip_moved_epoch(const struct eip *e);
