/* The admin API, on its own loopback listener (libevent's evhttp; small, trusted clients only):
 *   GET /status   JSON: every backend's address, state, health, counters and last check
 *   GET /metrics  Prometheus text format, version 0.0.4
 * Anything else is 404, other methods 405. Reads the daemon's state; changes nothing. */
#pragma once

struct lbd;
struct admin;
struct netaddr;

/* Binds <addr> and serves on lbd->base. Returns 0, or -errno (logged by the caller). */
int admin_new(struct lbd *lbd, const struct netaddr *addr, struct admin **ret);
struct admin *admin_free(struct admin *a);
