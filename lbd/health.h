/* Active health checks: one probe per active backend, every [health] interval, on the event loop.
 *
 * A probe connects (non-blocking), sends "GET <path> HTTP/1.1" with Host, "User-Agent: lbd-health" and
 * "Connection: close", and reads only the status line (bounded buffer). Pass = status within
 * [expect_min, expect_max] before [health] timeout. A backend that is down needs `rise` consecutive passes
 * to come up, except before its first completed probe, when one pass suffices (so a fresh lbd serves within
 * one interval); an up backend goes down after `fall` consecutive failures. Verdicts go through
 * backend_set_healthy(); each probe records last_check* on the backend and counts stats.health_ok/fail. A
 * down backend that had begun to pass (rise_count > 0) and fails again is reported with pool_refresh(), so
 * the reconciler judges it at once. */
#pragma once

struct event_base;
struct pool;
struct config;
struct health;
struct tls_client;

/* Creates the checker; probes start with health_sync(). <c> must outlive the checker or be replaced
 * with health_set_config(). Returns NULL on allocation failure. */
struct health *health_new(struct event_base *base, struct pool *pool, const struct config *c);

/* Starts a probe (the first one at once) for every active backend of the pool that has none, and stops
 * and releases the probes of backends that left the pool. Call after every pool_set_backends().
 * Returns 0 or -ENOMEM. */
int health_sync(struct health *h);

/* Uses new settings from the next probe on. */
void health_set_config(struct health *h, const struct config *c);

/* Checks speak TLS with <tc> (NULL: plain) from the next check on; <tc> must outlive the checker. */
void health_set_tls(struct health *h, struct tls_client *tc);

/* Stops every probe. Returns NULL. */
struct health *health_free(struct health *h);
