/* Balancing algorithms, each a struct balancer_ops (see backend.h):
 * - round robin: the next backend in rotation after the last one picked;
 * - least connections: the fewest requests in flight, ties broken round robin;
 * - power of two choices: two distinct backends at random, the one with fewer requests in flight. */
#pragma once

#include "lbd/backend.h"
#include "lbd/config.h"

extern const struct balancer_ops balance_round_robin;
extern const struct balancer_ops balance_least_conn;
extern const struct balancer_ops balance_p2c;

const struct balancer_ops *balance_from_kind(enum balance_kind k);
