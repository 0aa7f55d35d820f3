/* The data plane on several event loops ([lbd] threads > 1): one worker thread per loop, each with its own
 * proxy (clients, upstream connections, idle pools, timers, access log buffer); the main loop keeps the
 * control plane and the verdicts. loops.c's opening comment says what is shared and how. With threads = 1
 * none of this runs: the one proxy lives on the main loop, as lbd->proxy. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lbd;
struct loop;
struct loops;
struct backend;
struct config;
struct proxy_stats;
struct tls_stats;

/* Creates lbd->config->threads loops, each with a proxy, binds the listeners and starts the threads.
 * Needs lbd->pool (with pool_set_loops() done), lbd->accesslog and lbd->config. Returns 0 or -errno
 * (logged). */
int loops_new(struct lbd *l, struct loops **ret);

/* Every loop uses <next> for new work; <prev> is freed once every loop has moved to <next>. */
void loops_set_config(struct loops *ls, const struct config *next, struct config *prev);

/* Runs fn(arg) on the main loop once every loop has finished what it was running when this was called (a
 * message to each loop and its answer), so that <arg>, no longer published, can be freed: no loop can
 * still hold it, provided a loop never keeps a published pointer past the callback it loaded it in. If a
 * loop cannot be asked (out of memory), fn never runs and <arg> stays. <userdata> is the struct loops
 * (the shape tls_set_defer() takes). Main loop only. */
void loops_defer(void *userdata, void (*fn)(void *arg), void *arg);

/* Hands the pool's current view (lbd->pool->view) to every loop, if it changed since the last call. */
void loops_update_view(struct loops *ls);

/* Every loop stops accepting (the listening sockets close once all have), closes idle clients and lets
 * busy ones finish their exchange; <done> runs on the main loop once no loop has a client left. */
void loops_drain(struct loops *ls, void (*done)(void *userdata), void *userdata);

/* Whether every loop answered its heartbeat within <usec> (the watchdog pings only then). */
bool loops_alive(const struct loops *ls, uint64_t usec);

/* Adds every loop's proxy counters to <ret> (read atomically). */
void loops_add_stats(const struct loops *ls, struct proxy_stats *ret);

/* Client connections open on loop <i> (0..loops_count() - 1). */
size_t loops_count(const struct loops *ls);
uint64_t loops_connections(const struct loops *ls, size_t i);

/* Adds loop <i>'s proxy counters to <ret> and its TLS handshake counters to <ret_tls> (either may be
 * NULL), read atomically. */
void loops_add_loop_stats(const struct loops *ls, size_t i, struct proxy_stats *ret, struct tls_stats *ret_tls);

/* Stops every loop, joins its thread and closes what is left. Returns NULL. */
struct loops *loops_free(struct loops *ls);

/* Passive health from a proxy on loop <lp> (NULL: the main loop's own proxy, threads = 1): the verdict
 * is the main loop's, so a worker sends the signal there (backend.h's backend_report_*), with a copy of
 * <reason> (which may be on the caller's stack). */
void loop_report_refused(struct loop *lp, struct backend *b, const char *reason);
void loop_report_result(struct loop *lp, struct backend *b, unsigned status, unsigned passive_fall);

/* The proxies' counters summed, whichever way lbd runs (one proxy on the main loop, or loops). */
void lbd_proxy_stats(const struct lbd *l, struct proxy_stats *ret);

/* The TLS listeners' handshake counters summed likewise. */
void lbd_tls_stats(const struct lbd *l, struct tls_stats *ret);
