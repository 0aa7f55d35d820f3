/* The admin API, on its own loopback listener (libevent's evhttp; small, trusted clients only):
 *   GET /status   JSON: every backend's address, state, health, counters and last check
 *   GET /metrics  Prometheus text format, version 0.0.4
 *   POST /backends/NAME/drain, /backends/NAME/enable   maintenance (refused from another site's page)
 *   GET /, /page...  the status page (statuspage.h)
 * Anything else is 404, other methods 405. Changes nothing but the maintenance flag. */
#pragma once

#include <stdbool.h>

struct lbd;
struct admin;
struct backend;
struct netaddr;

/* The active backend called <name> (its address or its instance id), or NULL. */
struct backend *admin_find_backend(const struct lbd *lbd, const char *name);
/* Takes <b> out of rotation (<drain>) or puts it back, and tells the timeline, naming <by> ("admin API"). */
void admin_set_maintenance(struct lbd *lbd, struct backend *b, bool drain, const char *by);

/* Binds <addr> and serves on lbd->base. Returns 0, or -errno (logged by the caller). */
int admin_new(struct lbd *lbd, const struct netaddr *addr, struct admin **ret);
struct admin *admin_free(struct admin *a);
