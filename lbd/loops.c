/* The data plane on several event loops: [lbd] threads = N > 1 starts N worker threads, each running its
 * own libevent loop with its own struct proxy. With threads = 1 nothing here runs and the proxy is on the
 * main loop, exactly as it always was.
 *
 * Per loop (owned by its thread, touched by no other): the event base; the proxy with its client and
 * upstream connections, timers, recycled exchanges and buffers; its slot of every backend
 * (struct backend_loop: the idle keep-alive connections, the in-flight count and the traffic counters);
 * its balancer cursor and random state; its access log buffer. A connection is accepted by one loop and
 * stays on it until it closes; so do the upstream connections it uses.
 *
 * Main loop: the control plane (reconciler, provider, active health checks, autoscaling), the admin API,
 * signals, the watchdog, the pool and every verdict. The loops read what it decides without a lock:
 *   - the set of backends: an immutable pool_view (backend.h), reference counted, built by the main loop
 *     after each change of the set and sent to every loop as a message; a loop drops the old view when it
 *     takes the new one, so a view is freed by whichever thread lets go last (atomic count), and a backend
 *     by whoever drops its last reference (atomic count);
 *   - the verdicts: each backend's `rotation` flag, published by the pool with a relaxed atomic store
 *     after every change and read by the balancers with a relaxed load; a verdict reaches every loop at
 *     once, and one request that is being picked while it changes is the only one that can miss it;
 *   - the in-flight counts: each loop counts its own in its backend slot; least-conn and p2c sum the
 *     slots (two loads per backend with two loops), so they see every loop's requests and no loop ever
 *     writes a cache line another loop writes.
 * Counters are written only by their own loop (COUNTER_ADD: a relaxed atomic store, the same instruction
 * as a plain add on x86) and summed by the main loop for /metrics, /status and the status page.
 *
 * Messages: each loop, and the main loop, has an inbox: a mutex-protected list and an eventfd that wakes
 * the loop. The mutex is held only to link or unlink a message, never across I/O, and messages are rare
 * (a change of the set, a reload, a drain, a passive health failure, an access log block of up to 16 KiB
 * of lines, a deferred free): none is sent per request. What they carry:
 *   - passive health: a loop that sees a backend refuse or time out sends the report to the main loop,
 *     which applies the one verdict for every loop (backend_report_*). A good response resets the
 *     consecutive-failure count where it is seen (an atomic store, only when it was not 0 already);
 *   - reload: every loop takes the new settings; the old ones are freed once every loop answered;
 *   - deferred frees (loops_defer()): a loop answers at once; once every loop has, nothing it runs can
 *     still see what the main loop unpublished before asking (a TLS generation, ticket keys, settings);
 *   - drain (SIGTERM): every loop closes its listening sockets (new connections are refused at once, as
 *     with one loop), closes its idle clients and lets busy ones finish with "Connection: close"; once
 *     every loop has no client left the stop completes; the drain deadline ends the loops regardless;
 *   - stop: the main loop tells each loop to leave its event loop, joins the threads, and then frees the
 *     proxies (closing what is left) from the main thread, which nothing else uses by then;
 *   - the access log: only the main loop writes the target; a loop's log gathers lines in its own buffer
 *     and hands each full or timed-out buffer (whole lines) to the main loop, whose log writes it as its
 *     own, so lines are never interleaved mid-line whatever the target (file, pipe or journald socket).
 *
 * Descriptors: the loops share one table of descriptors, so a number one thread closes may be reused at
 * once by another. No loop uses libevent's epoll change list (EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST, which
 * the one loop of threads = 1 uses): it defers epoll_ctl() to the next turn, when the number may already
 * be another thread's connection. The kernel would refuse that late call harmlessly, but only the
 * immediate call keeps every loop's epoll_ctl() on descriptors it still owns, which ThreadSanitizer checks.
 *
 * The watchdog: each loop stamps a heartbeat from a timer every LOOPS_BEAT_USEC; the main loop sends
 * WATCHDOG=1 only while every stamp is recent, so a wedged worker gets lbd restarted like a wedged main
 * loop does.
 *
 * Listening sockets: one per loop and address, bound with SO_REUSEPORT, so the kernel spreads new
 * connections over the loops by their addresses' hash. One socket shared by every loop was tried first and
 * measured (bench/README.md): every loop wakes for each connection and the first one up takes it, so wrk's
 * 50 connections went 45 to one loop and 5 to the other, and the busy loop set the tail latency (p99 3.3
 * times HAProxy's with 2 threads). libevent 2.1 cannot ask for EPOLLEXCLUSIVE, which would only cut the
 * wake-ups, not the imbalance. The price of SO_REUSEPORT: a connection waits in its own loop's queue even
 * when another loop has room; a loop stops accepting only when full (its share of max_connections) or
 * stopping, and a stop stops every loop at once, so what waits is what a full single loop would make
 * wait too.
 *
 * Limits: max_connections keeps its documented meaning, client connections at once for the whole of lbd:
 * each loop takes its share (max_connections / threads, at least 1). max_idle_per_backend is per loop.
 *
 * TLS (tls.c says how): shared or per loop, piece by piece.
 *   - Shared, published by the main loop and read without a lock: the server contexts and certificates
 *     (one generation: an atomic pointer, replaced on SIGHUP), and the ticket keys (likewise, replaced at
 *     each rotation). What they replace is freed through loops_defer(): a message to every loop and its
 *     answer, after which no loop can still hold the old pointer (none keeps one past the callback that
 *     loaded it). OpenSSL counts references to each SSL_CTX, so a connection created from an old context,
 *     or moved onto an old certificate's, keeps it until it closes.
 *   - Shared, locked by OpenSSL: the session cache on the base context, so that a client resumes on
 *     whichever loop its second connection lands on (a per-loop cache would miss half the time with two
 *     loops). Tickets need no cache: with them on (the default) the lock is taken for TLS 1.2 handshakes
 *     only.
 *   - Per loop: the handshake counters (in the proxy, summed by lbd_tls_stats()), and the client side's
 *     table of sessions to resume with each backend (a tls_client cloned over the one shared client
 *     context, which nothing changes after start). The health checks have their own on the main loop.
 *   - Main loop only: loading the files, the rotation timer, the reload failure counter, the expiry dates
 *     that /status and /metrics show. */
#include "lbd/loops.h"

#include <assert.h>
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"
#include "lbd/accesslog.h"
#include "lbd/backend.h"
#include "lbd/config.h"
#include "lbd/lbd.h"
#include "lbd/proxy.h"
#include "lbd/tls.h"

#define LOOPS_BEAT_USEC (250 * USEC_PER_MSEC)

struct loop_msg {
        void (*fn)(void *arg);
        void *arg;
        struct loop_msg *next;
};

/* Messages to one loop: linked under <lock>, run on the loop by the eventfd's event. */
struct inbox {
        pthread_mutex_t lock;
        struct loop_msg *head, *tail;
        int efd;
        struct event *ev;
};

struct loop {
        struct loops *loops;
        unsigned index;
        pthread_t thread;
        bool started;
        struct event_base *base;
        struct proxy *proxy;
        struct accesslog *accesslog;
        struct inbox inbox;
        struct event *beat;
        uint64_t beat_usec; /* atomic: now_usec() at the last heartbeat */
};

struct loops {
        struct lbd *lbd;
        struct inbox inbox; /* the main loop's */
        struct loop *loops;
        size_t n;
        struct pool_view *view; /* the last one sent */
        void (*drain_done)(void *userdata);
        void *drain_userdata;
        size_t drain_left;     /* loops with clients left */
        unsigned accept_pauses; /* loops out of descriptors now (acceptpause_share()) */
};

/* ---- inboxes ---- */

static void inbox_run(evutil_socket_t fd, short what, void *userdata)
{
        struct inbox *in = userdata;
        struct loop_msg *m;
        uint64_t v;

        if (read(in->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                log_debug_errno(errno, "Reading a loop's eventfd failed: %m");
        (void)pthread_mutex_lock(&in->lock);
        m = in->head;
        in->head = in->tail = NULL;
        (void)pthread_mutex_unlock(&in->lock);
        while (m) {
                struct loop_msg *next = m->next;

                m->fn(m->arg);
                free(m);
                m = next;
        }
}

static int inbox_init(struct inbox *in, struct event_base *base)
{
        in->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (in->efd < 0)
                return -errno;
        (void)pthread_mutex_init(&in->lock, NULL);
        in->ev = event_new(base, in->efd, EV_READ | EV_PERSIST, inbox_run, in);
        if (!in->ev || event_add(in->ev, NULL) < 0)
                return -ENOMEM;
        return 0;
}

static void inbox_done(struct inbox *in)
{
        if (in->ev) {
                /* What is still queued runs now: the senders are gone. */
                inbox_run(in->efd, EV_READ, in);
                event_free(in->ev);
                in->ev = NULL;
        }
        if (in->efd >= 0) {
                (void)close(in->efd);
                (void)pthread_mutex_destroy(&in->lock);
        }
        in->efd = -1;
}

/* Queues fn(arg) for the loop of <in>. Returns 0 or -ENOMEM (the message is not sent). */
static int inbox_post(struct inbox *in, void (*fn)(void *arg), void *arg)
{
        struct loop_msg *m = malloc(sizeof(*m));
        uint64_t one = 1;

        if (!m)
                return -ENOMEM;
        m->fn = fn;
        m->arg = arg;
        m->next = NULL;
        (void)pthread_mutex_lock(&in->lock);
        if (in->tail)
                in->tail->next = m;
        else
                in->head = m;
        in->tail = m;
        (void)pthread_mutex_unlock(&in->lock);
        /* A full counter (2^64 - 2 wake-ups unread) still has the loop awake: nothing is lost. */
        if (write(in->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
                log_debug_errno(errno, "Waking a loop failed: %m");
        return 0;
}

/* ---- messages a worker loop runs ---- */

struct loop_arg {
        struct loop *lp;
        void *arg;
};

static int loop_post(struct loop *lp, void (*fn)(void *arg), void *arg)
{
        return inbox_post(&lp->inbox, fn, arg);
}

static void loop_config_cb(void *arg)
{
        struct loop_arg *a = arg;

        proxy_set_config(a->lp->proxy, a->arg);
        free(a);
}

/* ---- deferred frees: after every loop has run what it was running ---- */

struct defer_msg {
        struct loops *ls;
        void (*fn)(void *arg);
        void *arg;
        size_t left; /* loops that have not answered yet (counted on the main loop) */
};

static void main_defer_answered(void *arg)
{
        struct defer_msg *m = arg;

        if (--m->left > 0)
                return;
        m->fn(m->arg);
        free(m);
}

static void loop_defer_cb(void *arg)
{
        struct loop_arg *a = arg;

        if (inbox_post(&a->lp->loops->inbox, main_defer_answered, a->arg) < 0)
                log_error("Out of memory: a loop could not answer; what it was to free stays");
        free(a);
}

static void loop_view_cb(void *arg)
{
        struct loop_arg *a = arg;

        proxy_set_view(a->lp->proxy, a->arg);
        free(a);
}

static void main_loop_drained(void *arg)
{
        struct loops *ls = ((struct loop *)arg)->loops;
        void (*done)(void *) = ls->drain_done;

        assert(ls->drain_left > 0);
        if (--ls->drain_left > 0 || !done)
                return;
        ls->drain_done = NULL;
        done(ls->drain_userdata);
}

/* The loop's proxy has no client left: tell the main loop. */
static void loop_drained(void *userdata)
{
        struct loop *lp = userdata;

        if (inbox_post(&lp->loops->inbox, main_loop_drained, lp) < 0)
                log_error("Out of memory: a drained loop could not say so; the drain deadline ends it");
}

static void loop_drain_cb(void *arg)
{
        struct loop *lp = arg;

        proxy_drain(lp->proxy, loop_drained, lp);
}

static void loop_exit_cb(void *arg)
{
        struct loop *lp = arg;

        (void)event_base_loopbreak(lp->base);
}

static void loop_beat_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct loop *lp = userdata;

        __atomic_store_n(&lp->beat_usec, now_usec(), __ATOMIC_RELAXED);
}

/* A block of access log lines from a loop, written by the main loop's log. */
struct log_block {
        struct loops *ls;
        char *buf;
        size_t len;
};

static void main_log_block(void *arg)
{
        struct log_block *b = arg;

        accesslog_append(b->ls->lbd->accesslog, b->buf, b->len);
        free(b->buf);
        free(b);
}

static void loop_forward_log(void *userdata, char *buf, size_t len)
{
        struct loop *lp = userdata;
        struct log_block *b = malloc(sizeof(*b));

        if (b) {
                b->ls = lp->loops;
                b->buf = buf;
                b->len = len;
        }
        if (!b || inbox_post(&lp->loops->inbox, main_log_block, b) < 0) {
                log_debug("Out of memory: access log lines dropped");
                free(b);
                free(buf);
        }
}

static void *loop_thread(void *arg)
{
        struct loop *lp = arg;

        __atomic_store_n(&lp->beat_usec, now_usec(), __ATOMIC_RELAXED);
        (void)event_base_dispatch(lp->base);
        return NULL;
}

/* ---- passive health ---- */

struct report {
        struct backend *b; /* a reference */
        bool refused;
        char reason[128];  /* refused: a copy (the loop's may be on its stack) */
        unsigned status;
        unsigned passive_fall;
};

static void main_report(void *arg)
{
        struct report *r = arg;

        if (r->refused)
                backend_report_refused(r->b, r->reason);
        else
                backend_report_result(r->b, r->status, r->passive_fall);
        backend_unref(r->b);
        free(r);
}

static void loop_send_report(struct loop *lp, struct backend *b, const char *reason, unsigned status,
                             unsigned passive_fall)
{
        struct report *r = malloc(sizeof(*r));

        if (!r) {
                log_debug("Out of memory: a passive health signal from %s is lost", b->name);
                return;
        }
        r->b = backend_ref(b);
        r->refused = reason != NULL;
        (void)snprintf(r->reason, sizeof(r->reason), "%s", reason ? reason : "");
        r->status = status;
        r->passive_fall = passive_fall;
        if (inbox_post(&lp->loops->inbox, main_report, r) < 0) {
                backend_unref(r->b);
                free(r);
        }
}

void loop_report_refused(struct loop *lp, struct backend *b, const char *reason)
{
        if (!lp)
                backend_report_refused(b, reason);
        else
                loop_send_report(lp, b, reason, 0, 0);
}

void loop_report_result(struct loop *lp, struct backend *b, unsigned status, unsigned passive_fall)
{
        if (status == 503)
                return; /* overload or maintenance: nothing to report (backend_report_result()) */
        if (status != 0 && status < 500)
                backend_report_ok(b);
        else if (!lp)
                backend_report_result(b, status, passive_fall);
        else if (status == 0 || passive_fall > 0)
                loop_send_report(lp, b, NULL, status, passive_fall);
}

/* ---- the main loop's side ---- */

static int loops_start_loop(struct loops *ls, struct loop *lp)
{
        struct lbd *l = ls->lbd;
        const struct timeval beat = timeval_from_usec(LOOPS_BEAT_USEC);
        int r;

        struct event_config *ec = event_config_new();

        /* One thread per base; no change list (see the opening comment). */
        if (!ec)
                return -ENOMEM;
        (void)event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
        lp->base = event_base_new_with_config(ec);
        event_config_free(ec);
        if (!lp->base)
                return -ENOMEM;
        r = inbox_init(&lp->inbox, lp->base);
        if (r < 0)
                return r;
        lp->beat = event_new(lp->base, -1, EV_PERSIST, loop_beat_cb, lp);
        if (!lp->beat || event_add(lp->beat, &beat) < 0)
                return -ENOMEM;
        r = accesslog_open_forward(lp->base, l->accesslog, loop_forward_log, lp, &lp->accesslog);
        if (r < 0)
                return r;
        lp->proxy = proxy_new(l, lp->base, lp, lp->index, lp->accesslog);
        if (!lp->proxy)
                return -ENOMEM;
        proxy_set_view(lp->proxy, pool_view_ref(l->pool->view));
        return 0;
}

int loops_new(struct lbd *l, struct loops **ret)
{
        struct loops *ls;
        int r;

        ls = calloc(1, sizeof(*ls));
        if (!ls)
                return log_error_errno(ENOMEM, "Out of memory");
        ls->lbd = l;
        ls->inbox.efd = -1;
        *ret = ls;
        ls->n = (size_t)l->config->threads;
        ls->loops = calloc(ls->n, sizeof(*ls->loops));
        if (!ls->loops)
                return log_error_errno(ENOMEM, "Out of memory");
        r = inbox_init(&ls->inbox, l->base);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the loops' messages: %m");
        for (size_t i = 0; i < ls->n; i++) {
                struct loop *lp = &ls->loops[i];

                lp->loops = ls;
                lp->index = (unsigned)i;
                lp->inbox.efd = -1;
                r = loops_start_loop(ls, lp);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up event loop %zu: %m", i);
        }
        ls->view = pool_view_ref(l->pool->view);

        for (size_t i = 0; i < ls->n; i++) {
                proxy_share_accept_pauses(ls->loops[i].proxy, &ls->accept_pauses);
                r = proxy_listen(ls->loops[i].proxy, l->config);
                if (r < 0)
                        return r;
        }

        /* The threads start with every signal blocked, so SIGHUP and SIGTERM always reach the main loop's
         * handlers (a signal delivered to a worker blocked in epoll_wait() could wait there). */
        sigset_t all, prev;

        (void)sigfillset(&all);
        (void)pthread_sigmask(SIG_BLOCK, &all, &prev);
        for (size_t i = 0; i < ls->n; i++) {
                struct loop *lp = &ls->loops[i];

                r = pthread_create(&lp->thread, NULL, loop_thread, lp);
                if (r != 0)
                        break;
                lp->started = true;
        }
        (void)pthread_sigmask(SIG_SETMASK, &prev, NULL);
        if (r != 0)
                return log_error_errno(r, "Failed to start the thread of an event loop: %m");
        log_info("Serving on %zu event loops", ls->n);
        return 0;
}

void loops_defer(void *userdata, void (*fn)(void *arg), void *arg)
{
        struct loops *ls = userdata;
        struct defer_msg *m = malloc(sizeof(*m));
        size_t posted = 0;

        if (!m) {
                log_error("Out of memory: what the event loops may still read is not freed");
                return;
        }
        *m = (struct defer_msg){ .ls = ls, .fn = fn, .arg = arg, .left = ls->n + 1 };
        for (size_t i = 0; i < ls->n; i++) {
                struct loop_arg *a = malloc(sizeof(*a));

                if (a) {
                        a->lp = &ls->loops[i];
                        a->arg = m;
                }
                if (!a || loop_post(&ls->loops[i], loop_defer_cb, a) < 0) {
                        /* That loop never answers: <arg> stays, which is safe. */
                        free(a);
                        log_error("Out of memory: event loop %zu cannot be asked; what it may read stays", i);
                        continue;
                }
                posted++;
        }
        /* The main loop's own answer: <fn> runs when the last loop's comes, and never if one was not asked. */
        if (posted == ls->n)
                main_defer_answered(m);
        else if (posted == 0)
                free(m);
}

void loops_set_config(struct loops *ls, const struct config *next, struct config *prev)
{
        bool all = true;

        for (size_t i = 0; i < ls->n; i++) {
                struct loop_arg *a = malloc(sizeof(*a));

                if (a) {
                        a->lp = &ls->loops[i];
                        a->arg = (void *)next;
                }
                if (!a || loop_post(&ls->loops[i], loop_config_cb, a) < 0) {
                        free(a);
                        log_error("Out of memory: event loop %zu keeps the previous settings", i);
                        all = false;
                }
        }
        /* Each inbox runs in order: once a loop answers, it has taken <next>. A loop that keeps <prev>
         * keeps it for good. */
        if (all)
                loops_defer(ls, free, prev);
}

void loops_update_view(struct loops *ls)
{
        struct pool_view *v;

        if (!ls || ls->lbd->pool->view == ls->view)
                return;
        v = ls->lbd->pool->view;
        pool_view_unref(ls->view);
        ls->view = pool_view_ref(v);
        for (size_t i = 0; i < ls->n; i++) {
                struct loop_arg *a = malloc(sizeof(*a));

                if (a) {
                        a->lp = &ls->loops[i];
                        a->arg = pool_view_ref(v);
                }
                if (!a || loop_post(&ls->loops[i], loop_view_cb, a) < 0) {
                        if (a)
                                pool_view_unref(a->arg);
                        free(a);
                        log_error("Out of memory: event loop %zu keeps the previous set of backends", i);
                }
        }
}

void loops_drain(struct loops *ls, void (*done)(void *userdata), void *userdata)
{
        ls->drain_done = done;
        ls->drain_userdata = userdata;
        ls->drain_left = ls->n;
        for (size_t i = 0; i < ls->n; i++)
                if (loop_post(&ls->loops[i], loop_drain_cb, &ls->loops[i]) < 0) {
                        log_error("Out of memory: event loop %zu is not drained; the drain deadline ends it", i);
                }
}

bool loops_alive(const struct loops *ls, uint64_t usec)
{
        uint64_t now = now_usec();

        /* A loop stamps every LOOPS_BEAT_USEC: a shorter bound would call a healthy loop wedged. */
        usec = MAX(usec, 2 * LOOPS_BEAT_USEC);
        for (size_t i = 0; i < ls->n; i++)
                if (now - __atomic_load_n(&ls->loops[i].beat_usec, __ATOMIC_RELAXED) > usec)
                        return false;
        return true;
}

void loops_add_stats(const struct loops *ls, struct proxy_stats *ret)
{
        for (size_t i = 0; i < ls->n; i++)
                if (ls->loops[i].proxy)
                        proxy_add_stats(ls->loops[i].proxy, ret);
}

size_t loops_count(const struct loops *ls)
{
        return ls ? ls->n : 0;
}

uint64_t loops_connections(const struct loops *ls, size_t i)
{
        return i < ls->n && ls->loops[i].proxy ? proxy_connections(ls->loops[i].proxy) : 0;
}

void loops_add_loop_stats(const struct loops *ls, size_t i, struct proxy_stats *ret, struct tls_stats *ret_tls)
{
        if (i >= ls->n || !ls->loops[i].proxy)
                return;
        if (ret)
                proxy_add_stats(ls->loops[i].proxy, ret);
        if (ret_tls)
                proxy_add_tls_stats(ls->loops[i].proxy, ret_tls);
}

struct loops *loops_free(struct loops *ls)
{
        if (!ls)
                return NULL;
        for (size_t i = 0; i < ls->n; i++) {
                struct loop *lp = &ls->loops[i];

                if (!lp->started)
                        continue;
                if (loop_post(lp, loop_exit_cb, lp) < 0) {
                        /* No memory for the message: the loop's eventfd still wakes it to break out. */
                        (void)event_base_loopexit(lp->base, NULL);
                }
                (void)pthread_join(lp->thread, NULL);
        }
        /* The threads are gone: the main thread finishes each loop's work. Its last messages first (the
         * proxy is still there for them), then the proxy, whose last access log lines and reports go to
         * the main loop's inbox, then the log that forwards them. */
        ls->drain_done = NULL;
        for (size_t i = 0; i < (ls->loops ? ls->n : 0); i++) {
                struct loop *lp = &ls->loops[i];

                inbox_done(&lp->inbox);
                lp->proxy = proxy_free(lp->proxy);
                lp->accesslog = accesslog_free(lp->accesslog);
                if (lp->beat)
                        event_free(lp->beat);
                if (lp->base)
                        event_base_free(lp->base);
        }
        /* Reports, log blocks and acknowledgements the loops sent last. */
        inbox_done(&ls->inbox);
        pool_view_unref(ls->view);
        free(ls->loops);
        free(ls);
        return NULL;
}

void lbd_tls_stats(const struct lbd *l, struct tls_stats *ret)
{
        *ret = (struct tls_stats){0};
        for (size_t i = 0; i < loops_count(l->loops); i++)
                loops_add_loop_stats(l->loops, i, NULL, ret);
        if (l->proxy)
                proxy_add_tls_stats(l->proxy, ret);
}

void lbd_proxy_stats(const struct lbd *l, struct proxy_stats *ret)
{
        *ret = (struct proxy_stats){0};
        if (l->loops)
                loops_add_stats(l->loops, ret);
        else if (l->proxy)
                proxy_add_stats(l->proxy, ret);
}
