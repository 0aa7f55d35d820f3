/* Unit tests for lbd/health.c with the real backend.c: a small HTTP server in the test, on 127.0.0.1 and on
 * the same event loop, answers the probes with 200, 500, malformed status lines, nothing at all (timeout),
 * a reset, or isn't there (a closed port: refused). Checks the request a probe sends, the rise/fall rules
 * (one pass at startup, `rise` passes after a failure, `fall` failures to go down), the last_check fields,
 * the probe counters, health_sync() letting removed backends go, and health_set_config().
 * Intervals and timeouts are tens of milliseconds and every wait has a deadline. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/macro.h"
#include "common/netaddr.h"
#include "lbd/backend.h"
#include "lbd/config.h"
#include "lbd/health.h"

/* ---- a tiny HTTP server on the test's event loop ---- */

struct conn {
        struct server *server;
        int fd;
        struct event *ev;
        char buf[2048];
        size_t len;
        struct conn *next, *prev;
};

struct server {
        struct event_base *base;
        int fd;
        struct netaddr addr;
        struct event *accept_ev;
        const char *response; /* NULL: never answer */
        bool reset;           /* answer with a TCP reset */
        unsigned requests;
        char last_request[2048];
        struct conn *conns;
};

static void conn_free(struct conn *c)
{
        if (c->prev)
                c->prev->next = c->next;
        else
                c->server->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        event_free(c->ev);
        close(c->fd);
        free(c);
}

static void conn_on_read(evutil_socket_t fd, short what, void *userdata)
{
        struct conn *c = userdata;
        struct server *s = c->server;
        ssize_t k;

        k = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
        if (k <= 0) {
                if (k < 0 && errno == EAGAIN)
                        return;
                conn_free(c);
                return;
        }
        c->len += (size_t)k;
        c->buf[c->len] = '\0';
        if (!strstr(c->buf, "\r\n\r\n"))
                return;

        s->requests++;
        memcpy(s->last_request, c->buf, c->len + 1);
        if (s->reset) {
                struct linger l = {.l_onoff = 1, .l_linger = 0};

                assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)), 0);
                conn_free(c);
                return;
        }
        if (!s->response)
                return; /* silent: wait for the probe to give up and close */
        assert_int_equal(send(c->fd, s->response, strlen(s->response), MSG_NOSIGNAL),
                         (ssize_t)strlen(s->response));
        conn_free(c);
}

static void server_on_accept(evutil_socket_t fd, short what, void *userdata)
{
        struct server *s = userdata;
        struct conn *c;
        int cfd;

        cfd = accept(s->fd, NULL, NULL);
        if (cfd < 0)
                return;
        assert_int_equal(evutil_make_socket_nonblocking(cfd), 0);
        c = calloc(1, sizeof(*c));
        assert_non_null(c);
        c->server = s;
        c->fd = cfd;
        c->ev = event_new(s->base, cfd, EV_READ | EV_PERSIST, conn_on_read, c);
        assert_non_null(c->ev);
        assert_int_equal(event_add(c->ev, NULL), 0);
        c->next = s->conns;
        if (s->conns)
                s->conns->prev = c;
        s->conns = c;
}

/* Binds 127.0.0.1 on a free port; with <listening> false the port is closed again, so connecting to it is
 * refused. */
static struct server *server_new(struct event_base *base, bool listening)
{
        struct server *s = calloc(1, sizeof(*s));
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sin);

        assert_non_null(s);
        s->base = base;
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(s->fd >= 0);
        assert_int_equal(bind(s->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sin, &len), 0);
        s->addr = (struct netaddr){.len = sizeof(sin)};
        s->addr.u.in = sin;
        if (!listening) {
                close(s->fd);
                s->fd = -1;
                return s;
        }
        assert_int_equal(listen(s->fd, 16), 0);
        assert_int_equal(evutil_make_socket_nonblocking(s->fd), 0);
        s->accept_ev = event_new(base, s->fd, EV_READ | EV_PERSIST, server_on_accept, s);
        assert_non_null(s->accept_ev);
        assert_int_equal(event_add(s->accept_ev, NULL), 0);
        s->response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        return s;
}

static void server_free(struct server *s)
{
        while (s->conns)
                conn_free(s->conns);
        if (s->accept_ev)
                event_free(s->accept_ev);
        if (s->fd >= 0)
                close(s->fd);
        free(s);
}

/* ---- fixture: an event loop, a pool, a config and the checker ---- */

struct fixture {
        struct event_base *base;
        struct pool *pool;
        struct config config;
        struct health *health;
        unsigned changes; /* on_change calls */
};

static void on_change(struct pool *p, void *userdata)
{
        struct fixture *f = userdata;

        f->changes++;
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        f->base = event_base_new();
        assert_non_null(f->base);
        f->pool = pool_new(f->base, NULL);
        assert_non_null(f->pool);
        f->pool->on_change = on_change;
        f->pool->on_change_userdata = f;

        memcpy(f->config.health_path, "/healthcheck", sizeof("/healthcheck"));
        f->config.health_interval_usec = 40 * USEC_PER_MSEC;
        f->config.health_timeout_usec = 100 * USEC_PER_MSEC;
        f->config.health_rise = 2;
        f->config.health_fall = 3;
        f->config.health_expect_min = 200;
        f->config.health_expect_max = 399;

        f->health = health_new(f->base, f->pool, &f->config);
        assert_non_null(f->health);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        f->health = health_free(f->health);
        f->pool = pool_free(f->pool);
        event_base_free(f->base);
        free(f);
        return 0;
}

/* Runs the loop in 2 ms steps until <done>(<arg>) or <max_ms> pass. Returns whether <done> came true. */
static bool run_until(struct event_base *base, bool (*done)(const void *arg), const void *arg,
                      unsigned max_ms)
{
        uint64_t deadline = now_usec() + max_ms * USEC_PER_MSEC;
        const struct timeval step = {.tv_sec = 0, .tv_usec = 2000};

        while (!done(arg)) {
                if (now_usec() > deadline)
                        return false;
                assert_int_equal(event_base_loopexit(base, &step), 0);
                assert_true(event_base_dispatch(base) >= 0);
        }
        return true;
}

static void run_for(struct event_base *base, unsigned msec)
{
        const struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)msec * 1000};

        assert_int_equal(event_base_loopexit(base, &tv), 0);
        assert_true(event_base_dispatch(base) >= 0);
}

/* Conditions for run_until(): "the backend has completed more than N checks". */
struct checks_after {
        const struct backend *b;
        uint64_t n;
};

static bool checks_done(const void *arg)
{
        const struct checks_after *c = arg;

        return c->b->stats.health_ok + c->b->stats.health_fail > c->n;
}

/* Runs until the next check of <b> completes; fails the test after 1 s. */
static void next_check(struct fixture *f, const struct backend *b)
{
        struct checks_after c = {.b = b, .n = b->stats.health_ok + b->stats.health_fail};

        assert_true(run_until(f->base, checks_done, &c, 1000));
        assert_int_equal(b->stats.health_ok + b->stats.health_fail, c.n + 1);
}

static struct backend *add_backend(struct fixture *f, const struct netaddr *addr)
{
        struct netaddr addrs[CONFIG_MAX_BACKENDS];
        size_t n = f->pool->n_backends;

        for (size_t i = 0; i < n; i++)
                addrs[i] = f->pool->backends[i]->addr;
        addrs[n] = *addr;
        assert_int_equal(pool_set_backends(f->pool, addrs, n + 1), 0);
        assert_int_equal(health_sync(f->health), 0);
        return pool_find(f->pool, addr);
}

/* Adds a backend for <s> and runs its first check, which brings it up. */
static struct backend *add_up_backend(struct fixture *f, struct server *s)
{
        struct backend *b = add_backend(f, &s->addr);

        next_check(f, b);
        assert_true(b->healthy);
        return b;
}

/* ---- tests ---- */

/* One pass brings a fresh backend up; the request is what the interface promises. */
static void test_first_pass(void **state)
{
        struct fixture *f = *state;
        struct server *s = server_new(f->base, true);
        struct backend *b;
        char expect[256];
        uint64_t before = now_usec();

        b = add_backend(f, &s->addr);
        assert_non_null(b);
        assert_non_null(b->probe);
        assert_false(b->healthy);
        assert_int_equal(b->last_check, CHECK_NONE);

        next_check(f, b);
        assert_true(b->healthy);
        assert_true(b->checked_once);
        assert_int_equal(pool_count_healthy(f->pool), 1);
        assert_int_equal(b->last_check, CHECK_OK);
        assert_int_equal(b->last_check_status, 200);
        assert_true(b->last_check_at_usec >= before && b->last_check_at_usec <= now_usec());
        assert_true(b->last_check_duration_usec < USEC_PER_SEC);
        assert_int_equal(b->stats.health_ok, 1);
        assert_int_equal(b->stats.health_fail, 0);

        (void)snprintf(expect, sizeof(expect),
                       "GET /healthcheck HTTP/1.1\r\nHost: %s\r\nUser-Agent: lbd-health\r\n"
                       "Connection: close\r\n\r\n",
                       b->name);
        assert_string_equal(s->last_request, expect);

        /* Later checks keep coming, one per interval. */
        next_check(f, b);
        next_check(f, b);
        assert_int_equal(b->stats.health_ok, 3);
        assert_int_equal(s->requests, 3);
        assert_true(b->healthy);

        server_free(s);
}

/* Up, then `fall` failures take it down (not one fewer), then `rise` passes bring it back. */
static void test_fall_and_rise(void **state)
{
        struct fixture *f = *state;
        struct server *s = server_new(f->base, true);
        struct backend *b = add_up_backend(f, s);
        unsigned changes = f->changes;

        s->response = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
        next_check(f, b);
        assert_true(b->healthy);
        assert_int_equal(b->last_check, CHECK_FAIL);
        assert_int_equal(b->last_check_status, 500);
        next_check(f, b);
        assert_true(b->healthy);
        assert_int_equal(f->changes, changes);
        next_check(f, b);
        assert_false(b->healthy);
        assert_int_equal(pool_count_healthy(f->pool), 0);
        assert_int_equal(f->changes, changes + 1);
        assert_int_equal(b->stats.health_fail, 3);

        /* Down stays down while failing. */
        next_check(f, b);
        assert_false(b->healthy);

        s->response = "HTTP/1.0 302 Found\r\nLocation: /\r\n\r\n";
        next_check(f, b);
        assert_false(b->healthy); /* one pass is not enough once checked */
        assert_int_equal(b->last_check, CHECK_OK);
        assert_int_equal(b->last_check_status, 302);
        next_check(f, b);
        assert_true(b->healthy);
        assert_int_equal(f->changes, changes + 2);

        /* A pass in between restarts the count of failures. */
        s->response = "HTTP/1.1 503 Busy\r\n\r\n";
        next_check(f, b);
        next_check(f, b);
        s->response = "HTTP/1.1 200 OK\r\n\r\n";
        next_check(f, b);
        s->response = "HTTP/1.1 503 Busy\r\n\r\n";
        next_check(f, b);
        next_check(f, b);
        assert_true(b->healthy);
        next_check(f, b);
        assert_false(b->healthy);

        server_free(s);
}

/* A down backend that passes (coming back, rise not reached) and then fails again: the pool is told, so
 * the reconciler can judge it at once; failures while plainly down change nothing. */
static void test_fails_again_while_coming_back(void **state)
{
        struct fixture *f = *state;
        struct server *s = server_new(f->base, true);
        struct backend *b = add_up_backend(f, s);
        unsigned changes;

        backend_set_healthy(b, false, "live traffic");
        changes = f->changes;

        s->response = "HTTP/1.1 500 Internal Server Error\r\n\r\n";
        next_check(f, b);
        assert_int_equal(f->changes, changes);
        s->response = "HTTP/1.1 200 OK\r\n\r\n";
        next_check(f, b);
        assert_false(b->healthy);
        assert_int_equal(b->rise_count, 1);
        assert_int_equal(f->changes, changes);
        s->response = "HTTP/1.1 500 Internal Server Error\r\n\r\n";
        next_check(f, b);
        assert_false(b->healthy);
        assert_int_equal(b->rise_count, 0);
        assert_int_equal(f->changes, changes + 1);
        next_check(f, b);
        assert_int_equal(f->changes, changes + 1);
        server_free(s);
}

/* A first check that fails means the next pass alone isn't enough: `rise` passes are needed. */
static void test_first_fail_needs_rise(void **state)
{
        struct fixture *f = *state;
        struct server *s = server_new(f->base, true);
        struct backend *b;

        s->response = "HTTP/1.1 404 Not Found\r\n\r\n";
        b = add_backend(f, &s->addr);
        next_check(f, b);
        assert_false(b->healthy);
        assert_int_equal(b->last_check, CHECK_FAIL);
        assert_int_equal(b->last_check_status, 404);

        s->response = "HTTP/1.1 204 No Content\r\n\r\n";
        next_check(f, b);
        assert_false(b->healthy);
        next_check(f, b);
        assert_true(b->healthy);
        server_free(s);
}

/* Status lines: what passes, what is malformed. */
static void test_status_lines(void **state)
{
        static const struct {
                const char *response;
                enum check_result result;
                unsigned status;
        } cases[] = {
                {"HTTP/1.1 200 OK\r\n\r\n", CHECK_OK, 200},
                {"HTTP/1.0 200\r\n\r\n", CHECK_OK, 200},
                {"HTTP/1.1 399 X\n\n", CHECK_OK, 399},
                {"HTTP/1.1 400 Bad\r\n\r\n", CHECK_FAIL, 400},
                {"HTTP/1.1 199 Early\r\n\r\n", CHECK_FAIL, 199},
                {"HTTP/2 200\r\n\r\n", CHECK_FAIL, 0},
                {"HTTP/1.1 2000 OK\r\n\r\n", CHECK_FAIL, 0},
                {"HTTP/1.1 20x OK\r\n\r\n", CHECK_FAIL, 0},
                {"HTTP/1.1 099 Low\r\n\r\n", CHECK_FAIL, 0},
                {"HTTP/1.1  200 OK\r\n\r\n", CHECK_FAIL, 0},
                {"http/1.1 200 OK\r\n\r\n", CHECK_FAIL, 0},
                {"SSH-2.0-OpenSSH_9.2\r\n", CHECK_FAIL, 0},
                {"HTTP/1.1 200 OK", CHECK_FAIL, 0}, /* closed before the end of the line */
                {"", CHECK_FAIL, 0},                /* closed without a byte */
        };
        struct fixture *f = *state;
        struct server *s = server_new(f->base, true);
        struct backend *b;

        s->response = cases[0].response;
        b = add_backend(f, &s->addr);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                print_message("response '%s'\n", cases[i].response);
                s->response = cases[i].response;
                next_check(f, b);
                assert_int_equal(b->last_check, cases[i].result);
                assert_int_equal(b->last_check_status, cases[i].status);
        }
        server_free(s);
}

/* A status line longer than the read limit is malformed, and reading stops there. */
static void test_status_line_too_long(void **state)
{
        struct fixture *f = *state;
        struct server *s = server_new(f->base, true);
        char *big = malloc(8192);
        struct backend *b;

        assert_non_null(big);
        memcpy(big, "HTTP/1.1 200 ", 13);
        memset(big + 13, 'x', 8192 - 14);
        big[8191] = '\0';
        s->response = big;
        b = add_backend(f, &s->addr);
        next_check(f, b);
        assert_int_equal(b->last_check, CHECK_FAIL);
        assert_false(b->healthy);
        server_free(s);
        free(big);
}

/* The expected range comes from the config. */
static void test_expect_range(void **state)
{
        struct fixture *f = *state;
        struct server *s = server_new(f->base, true);
        struct backend *b;

        f->config.health_expect_min = 200;
        f->config.health_expect_max = 200;
        s->response = "HTTP/1.1 204 No Content\r\n\r\n";
        b = add_backend(f, &s->addr);
        next_check(f, b);
        assert_int_equal(b->last_check, CHECK_FAIL);
        assert_int_equal(b->last_check_status, 204);
        assert_false(b->healthy);
        server_free(s);
}

/* No answer: the check times out after [health] timeout, counted from the connect. */
static void test_timeout(void **state)
{
        struct fixture *f = *state;
        struct server *s = server_new(f->base, true);
        struct backend *b;

        next_check(f, b = add_backend(f, &s->addr));
        assert_true(b->healthy);

        s->response = NULL;
        for (unsigned i = 0; i < 3; i++) {
                next_check(f, b);
                assert_int_equal(b->last_check, CHECK_TIMEOUT);
                assert_int_equal(b->last_check_status, 0);
                /* libevent's timers run on a coarse clock: allow them a few ms early. */
                assert_true(b->last_check_duration_usec >= 90 * USEC_PER_MSEC);
                assert_true(b->last_check_duration_usec < 300 * USEC_PER_MSEC);
        }
        assert_false(b->healthy);
        assert_int_equal(s->requests, 4);

        /* The probe closed its side each time: at most the current check's connection is open. */
        run_for(f->base, 20);
        {
                unsigned open_conns = 0;

                for (struct conn *c = s->conns; c; c = c->next)
                        open_conns++;
                assert_true(open_conns <= 1);
        }
        server_free(s);
}

/* A closed port is refused; so is a reset. */
static void test_refused(void **state)
{
        struct fixture *f = *state;
        struct server *closed = server_new(f->base, false);
        struct server *s = server_new(f->base, true);
        struct backend *b, *r;

        b = add_backend(f, &closed->addr);
        next_check(f, b);
        assert_int_equal(b->last_check, CHECK_REFUSED);
        assert_false(b->healthy);
        assert_int_equal(b->stats.health_fail, 1);

        r = add_backend(f, &s->addr);
        next_check(f, r);
        assert_true(r->healthy);
        s->reset = true;
        for (unsigned i = 0; i < 3; i++) {
                next_check(f, r);
                assert_int_equal(r->last_check, CHECK_REFUSED);
        }
        assert_false(r->healthy);

        server_free(s);
        server_free(closed);
}

/* health_sync() lets go of backends that left the pool (they are draining) and probes new ones. */
static void test_sync(void **state)
{
        struct fixture *f = *state;
        struct server *s1 = server_new(f->base, true), *s2 = server_new(f->base, true);
        struct backend *b1, *b2;
        unsigned refs;
        uint64_t checks;

        b1 = add_backend(f, &s1->addr);
        b2 = add_backend(f, &s2->addr);
        next_check(f, b1);
        if (b2->stats.health_ok == 0)
                next_check(f, b2);
        assert_true(b1->healthy && b2->healthy);

        /* Keep b1 alive to look at it after the pool drops it. */
        backend_ref(b1);
        refs = b1->refs;
        assert_int_equal(pool_set_backends(f->pool, &s2->addr, 1), 0);
        assert_int_equal(b1->state, BACKEND_DRAINING);
        assert_int_equal(health_sync(f->health), 0);
        assert_null(b1->probe);
        assert_int_equal(b1->refs, refs - 3); /* the pool's, its view's and the probe's */
        checks = b1->stats.health_ok + b1->stats.health_fail;
        assert_non_null(b2->probe);

        next_check(f, b2);
        next_check(f, b2);
        assert_int_equal(b1->stats.health_ok + b1->stats.health_fail, checks);
        backend_unref(b1);

        /* Syncing again changes nothing; an empty pool stops everything. */
        assert_int_equal(health_sync(f->health), 0);
        assert_int_equal(pool_set_backends(f->pool, NULL, 0), 0);
        assert_int_equal(health_sync(f->health), 0);
        checks = s2->requests;
        run_for(f->base, 100);
        assert_int_equal(s2->requests, checks);

        server_free(s1);
        server_free(s2);
}

/* A removed backend whose check is under way: health_sync() stops it cleanly. */
static void test_sync_during_check(void **state)
{
        struct fixture *f = *state;
        struct server *s = server_new(f->base, true);
        struct backend *b = add_backend(f, &s->addr);

        s->response = NULL;
        run_for(f->base, 20); /* connected, waiting for an answer */
        assert_int_equal(s->requests, 1);
        assert_int_equal(pool_set_backends(f->pool, NULL, 0), 0);
        assert_int_equal(health_sync(f->health), 0);
        (void)b; /* freed now: the pool and the probe held the only references */
        run_for(f->base, 200);
        assert_int_equal(s->requests, 1);
        server_free(s);
}

/* New settings apply from the next probe; a shorter interval doesn't wait for the old one. */
static void test_set_config(void **state)
{
        struct fixture *f = *state;
        struct server *s = server_new(f->base, true);
        struct config c2;
        struct backend *b;

        f->config.health_interval_usec = 30 * USEC_PER_SEC;
        b = add_backend(f, &s->addr);
        next_check(f, b);
        run_for(f->base, 100);
        assert_int_equal(b->stats.health_ok, 1); /* the next one is 30 s away */

        c2 = f->config;
        c2.health_interval_usec = 20 * USEC_PER_MSEC;
        memcpy(c2.health_path, "/other", sizeof("/other"));
        health_set_config(f->health, &c2);
        next_check(f, b);
        assert_int_equal(b->stats.health_ok, 2);
        assert_non_null(strstr(s->last_request, "GET /other HTTP/1.1\r\n"));

        /* Back to a long interval; the replaced config (wiped here) must not be read any more. */
        f->config.health_interval_usec = 30 * USEC_PER_SEC;
        health_set_config(f->health, &f->config);
        memset(&c2, 0, sizeof(c2));
        next_check(f, b); /* the one scheduled at the short interval */
        run_for(f->base, 100);
        assert_int_equal(b->stats.health_ok, 3);
        server_free(s);
}

/* Many backends, some down: each has its own probe and verdict. */
static void test_many(void **state)
{
        enum { N = 8 };
        struct fixture *f = *state;
        struct server *s[N];
        struct netaddr addrs[N];

        for (unsigned i = 0; i < N; i++) {
                s[i] = server_new(f->base, i % 3 != 2);
                if (i % 3 == 1)
                        s[i]->response = "HTTP/1.1 500 No\r\n\r\n";
                addrs[i] = s[i]->addr;
        }
        assert_int_equal(pool_set_backends(f->pool, addrs, N), 0);
        assert_int_equal(health_sync(f->health), 0);
        for (unsigned i = 0; i < N; i++) {
                struct checks_after c = {.b = pool_find(f->pool, &addrs[i]), .n = 1};

                assert_true(run_until(f->base, checks_done, &c, 2000));
        }
        for (unsigned i = 0; i < N; i++) {
                struct backend *b = pool_find(f->pool, &addrs[i]);

                assert_non_null(b);
                assert_true(b->stats.health_ok + b->stats.health_fail >= 2);
                assert_int_equal(b->healthy, i % 3 == 0);
                assert_int_equal(b->last_check, i % 3 == 0   ? CHECK_OK
                                                : i % 3 == 1 ? CHECK_FAIL
                                                             : CHECK_REFUSED);
        }
        assert_int_equal(pool_count_healthy(f->pool), 3);
        for (unsigned i = 0; i < N; i++)
                server_free(s[i]);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_first_pass, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fall_and_rise, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fails_again_while_coming_back, setup, teardown),
                cmocka_unit_test_setup_teardown(test_first_fail_needs_rise, setup, teardown),
                cmocka_unit_test_setup_teardown(test_status_lines, setup, teardown),
                cmocka_unit_test_setup_teardown(test_status_line_too_long, setup, teardown),
                cmocka_unit_test_setup_teardown(test_expect_range, setup, teardown),
                cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sync, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sync_during_check, setup, teardown),
                cmocka_unit_test_setup_teardown(test_set_config, setup, teardown),
                cmocka_unit_test_setup_teardown(test_many, setup, teardown),
        };

        alarm(120);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
