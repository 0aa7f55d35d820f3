/* Active health checks: one probe per active backend, run on the event loop.
 *
 * A struct health_probe belongs to this module and to one backend (b->probe points back at it); it holds a
 * reference to the backend, so a backend dropped by a reload stays valid until health_sync() lets the probe
 * go. All the memory a check needs is inside the probe: two events assigned in place (one timer, one socket
 * event) and two bounded buffers, so a check allocates nothing.
 *
 * One check: a non-blocking socket connects to the backend, sends a small "GET <path> HTTP/1.1" with
 * "Connection: close", and reads until the end of the status line (at most HEALTH_READ_MAX bytes); only
 * "HTTP/1.x NNN" is looked at. The probe's timer does two jobs: while a check runs it is the check's
 * timeout, counted from the start of the connect; between checks it waits for the next one. Checks start
 * every [health] interval counted from the previous start (minus up to 10% of random jitter, so backends
 * added together don't stay in lockstep); the first one runs as soon as the loop reaches it.
 *
 * The verdict: each completed check records last_check* on the backend and counts stats.health_ok/fail. A
 * backend that is down comes up after `rise` passes in a row, or after one pass if it had never been
 * checked; an up backend goes down after `fall` failures in a row. Changes go through
 * backend_set_healthy(), which is always the last thing a callback does with the probe. */
#include "lbd/health.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/list.h"
#include "common/log.h"
#include "common/macro.h"
#include "lbd/backend.h"
#include "lbd/config.h"
#include "lbd/tls.h"

#define HEALTH_READ_MAX    4096u /* bytes of response read at most */
#define HEALTH_REQUEST_MAX (CONFIG_PATH_MAX + NETADDR_STRLEN + 128u)
#define HEALTH_DETAIL_MAX  96u
#define HEALTH_MIN_USEC    (1 * USEC_PER_MSEC) /* floor for intervals and timeouts */

enum probe_phase {
        PROBE_IDLE,       /* timer = time of the next check */
        PROBE_CONNECTING, /* timer = check timeout, io = writable */
        PROBE_HANDSHAKE,  /* [tls] backend = on: timer = check timeout, io = what OpenSSL wants */
        PROBE_SENDING,    /* timer = check timeout, io = writable */
        PROBE_READING,    /* timer = check timeout, io = readable */
};

struct health_probe {
        struct health *health;
        struct backend *backend; /* a reference */
        DLIST_FIELDS(struct health_probe, probes);

        struct event timer;
        struct event io;
        bool io_assigned;
        int fd;
        SSL *ssl;                /* [tls] backend = on: the check's TLS connection */
        enum probe_phase phase;
        uint64_t started_usec; /* start of the current or last check, 0 before the first */
        uint64_t next_usec;    /* while idle: when the next check starts */

        char request[HEALTH_REQUEST_MAX];
        size_t request_len, request_sent;
        char response[HEALTH_READ_MAX];
        size_t response_len;
};

struct health {
        struct event_base *base;
        struct pool *pool;
        const struct config *config;
        struct tls_client *tls;  /* checks over TLS when set (not owned) */
        DLIST_HEAD(struct health_probe, probes);
        uint64_t rng;
};

static uint64_t health_random(struct health *h)
{
        /* xorshift64: spreading probes in time needs no better. */
        h->rng ^= h->rng << 13;
        h->rng ^= h->rng >> 7;
        h->rng ^= h->rng << 17;
        return h->rng;
}

/* Arms the timer to start the next check in <delay_usec>. */
static void probe_schedule(struct health_probe *p, uint64_t delay_usec)
{
        struct timeval tv = timeval_from_usec(delay_usec);

        p->next_usec = now_usec() + delay_usec;
        (void)evtimer_add(&p->timer, &tv);
}

/* The delay from now until the check after the one that started at p->started_usec. */
static uint64_t probe_next_delay(struct health_probe *p)
{
        uint64_t interval = MAX(p->health->config->health_interval_usec, HEALTH_MIN_USEC);
        uint64_t due = p->started_usec + interval - health_random(p->health) % (interval / 10 + 1);
        uint64_t now = now_usec();

        return due > now ? due - now : 0;
}

/* Parses "HTTP/1.x NNN" at the start of the status line <line> (<n> bytes, no line end). Returns 0, or
 * -EBADMSG when it is anything else. */
static int health_parse_status_line(const char *line, size_t n, unsigned *ret_status)
{
        unsigned status = 0;

        if (n < 12 || memcmp(line, "HTTP/1.", 7) != 0 || line[7] < '0' || line[7] > '9' || line[8] != ' ')
                return -EBADMSG;
        for (size_t i = 9; i < 12; i++) {
                if (line[i] < '0' || line[i] > '9')
                        return -EBADMSG;
                status = status * 10 + (unsigned)(line[i] - '0');
        }
        if (n > 12 && line[12] != ' ')
                return -EBADMSG;
        if (status < 100 || status > 599)
                return -EBADMSG;
        *ret_status = status;
        return 0;
}

/* Applies the outcome of a completed check to the backend. May call backend_set_healthy(), whose
 * on_change may do anything: the caller must not touch the probe afterwards. */
static void health_verdict(struct health *h, struct backend *b, enum check_result result, const char *detail)
{
        const struct config *c = h->config;
        bool first = !b->checked_once;
        char reason[HEALTH_DETAIL_MAX + 64];

        b->checked_once = true;
        if (result == CHECK_OK)
                b->stats.health_ok++;
        else
                b->stats.health_fail++;
        if (b->state != BACKEND_ACTIVE)
                return;

        if (result == CHECK_OK) {
                b->fall_count = 0;
                if (b->healthy)
                        return;
                b->rise_count++;
                if (first || b->rise_count >= c->health_rise) {
                        if (first)
                                (void)snprintf(reason, sizeof(reason), "health check passed");
                        else
                                (void)snprintf(reason, sizeof(reason), "health check passed %u times",
                                               b->rise_count);
                        backend_set_healthy(b, true, reason);
                        b->rise_count = 0;
                }
                return;
        }

        if (!b->healthy) {
                /* It was coming back and fails again: the reconciler judges it from when it went down
                 * (reconcile.c), so the pool hears of it now rather than at the next poll. */
                if (b->rise_count > 0) {
                        b->rise_count = 0;
                        pool_refresh(b->pool);
                }
                return;
        }
        b->rise_count = 0;
        b->fall_count++;
        if (b->fall_count >= c->health_fall) {
                (void)snprintf(reason, sizeof(reason), "health check failed %u times: %s", b->fall_count,
                               detail);
                backend_set_healthy(b, false, reason);
                b->fall_count = 0;
        }
}

static void probe_close(struct health_probe *p)
{
        if (p->io_assigned) {
                (void)event_del(&p->io);
                p->io_assigned = false;
        }
        SSL_free(p->ssl);
        p->ssl = NULL;
        if (p->fd >= 0) {
                (void)close(p->fd);
                p->fd = -1;
        }
}

/* Ends the running check with <result>: records it, schedules the next check, then gives the verdict.
 * <status> is the HTTP status when one was read, else 0. */
static void probe_finish(struct health_probe *p, enum check_result result, unsigned status,
                         const char *detail)
{
        struct backend *b = p->backend;
        uint64_t now = now_usec();

        probe_close(p);
        (void)evtimer_del(&p->timer);
        p->phase = PROBE_IDLE;

        backend_note_check(b, result);
        b->last_check_status = status;
        b->last_check_duration_usec = now - p->started_usec;
        b->last_check_at_usec = now;
        log_debug("Health check of %s: %s (%s) in %llu us", b->name, backend_check_result_name(result), detail,
                  (unsigned long long)b->last_check_duration_usec);

        if (b->state == BACKEND_ACTIVE)
                probe_schedule(p, probe_next_delay(p));
        health_verdict(p->health, b, result, detail);
}

/* Ends the check on socket error <error> (a positive errno). */
static void probe_fail_errno(struct health_probe *p, int error)
{
        char detail[HEALTH_DETAIL_MAX];

        switch (error) {
        case ECONNREFUSED:
                probe_finish(p, CHECK_REFUSED, 0, "connection refused");
                return;
        case ECONNRESET:
                probe_finish(p, CHECK_REFUSED, 0, "connection reset");
                return;
        default:
                (void)snprintf(detail, sizeof(detail), "%s", strerror(error));
                probe_finish(p, CHECK_ERROR, 0, detail);
                return;
        }
}

/* Looks at what was read so far. <eof>: the backend closed the connection. Returns true when the check
 * ended. */
static bool probe_check_response(struct health_probe *p, bool eof)
{
        const struct config *c = p->health->config;
        const char *nl = memchr(p->response, '\n', p->response_len);
        char detail[HEALTH_DETAIL_MAX];
        unsigned status;
        size_t n;

        if (!nl && !eof && p->response_len < sizeof(p->response))
                return false;
        if (!nl) {
                probe_finish(p, CHECK_FAIL, 0,
                             eof ? "connection closed before the status line" : "status line too long");
                return true;
        }

        n = (size_t)(nl - p->response);
        if (n > 0 && p->response[n - 1] == '\r')
                n--;
        if (health_parse_status_line(p->response, n, &status) < 0) {
                probe_finish(p, CHECK_FAIL, 0, "malformed status line");
                return true;
        }

        (void)snprintf(detail, sizeof(detail), "status %u", status);
        probe_finish(
                p, status >= c->health_expect_min && status <= c->health_expect_max ? CHECK_OK : CHECK_FAIL,
                status, detail);
        return true;
}

static void probe_on_io(evutil_socket_t fd, short what, void *userdata);

static void probe_watch(struct health_probe *p, short events)
{
        if (p->io_assigned)
                (void)event_del(&p->io);
        (void)event_assign(&p->io, p->health->base, p->fd, (short)(events | EV_PERSIST), probe_on_io, p);
        p->io_assigned = true;
        (void)event_add(&p->io, NULL);
}

/* Over TLS: the bytes done (> 0), 0 at the end of the stream, or -1 with errno (EAGAIN while OpenSSL waits
 * for the socket, after arming the event it waits for). */
static ssize_t probe_tls_io(struct health_probe *p, bool write, void *buf, size_t len)
{
        size_t done = 0;
        int r, err;

        ERR_clear_error();
        r = write ? SSL_write_ex(p->ssl, buf, len, &done) : SSL_read_ex(p->ssl, buf, len, &done);
        if (r == 1)
                return (ssize_t)done;
        err = SSL_get_error(p->ssl, r);
        ERR_clear_error();
        if (err == SSL_ERROR_ZERO_RETURN)
                return 0;
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                probe_watch(p, err == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE);
                errno = EAGAIN;
                return -1;
        }
        if (err == SSL_ERROR_SYSCALL && errno == 0)
                return 0;
        errno = err == SSL_ERROR_SYSCALL ? errno : EPROTO;
        return -1;
}

static void probe_send(struct health_probe *p)
{
        while (p->request_sent < p->request_len) {
                ssize_t k = p->ssl ? probe_tls_io(p, true, p->request + p->request_sent,
                                                  p->request_len - p->request_sent)
                                   : send(p->fd, p->request + p->request_sent, p->request_len - p->request_sent,
                                          MSG_NOSIGNAL);

                if (k < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                                return;
                        probe_fail_errno(p, errno);
                        return;
                }
                p->request_sent += (size_t)k;
        }
        p->phase = PROBE_READING;
        probe_watch(p, EV_READ);
}

static void probe_receive(struct health_probe *p)
{
        for (;;) {
                ssize_t k = p->ssl ? probe_tls_io(p, false, p->response + p->response_len,
                                                  sizeof(p->response) - p->response_len)
                                   : recv(p->fd, p->response + p->response_len,
                                          sizeof(p->response) - p->response_len, 0);

                if (k < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                                return;
                        probe_fail_errno(p, errno);
                        return;
                }
                p->response_len += (size_t)k;
                if (probe_check_response(p, k == 0))
                        return;
        }
}

/* The TCP connection is up: over TLS the handshake comes first, then the request. */
static void probe_connected(struct health_probe *p)
{
        char reason[HEALTH_DETAIL_MAX] = "TLS handshake failed";
        int r;

        if (p->health->tls && !p->ssl) {
                p->ssl = tls_client_connect(p->health->tls, p->fd, &p->backend->addr);
                if (!p->ssl) {
                        probe_fail_errno(p, ENOMEM);
                        return;
                }
                p->phase = PROBE_HANDSHAKE;
        }
        if (p->ssl && p->phase == PROBE_HANDSHAKE) {
                r = tls_client_handshake(p->ssl, reason, sizeof(reason));
                if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
                        probe_watch(p, r == TLS_WANT_READ ? EV_READ : EV_WRITE);
                        return;
                }
                if (r < 0) {
                        probe_finish(p, CHECK_FAIL, 0, reason);
                        return;
                }
        }
        p->phase = PROBE_SENDING;
        probe_send(p);
}

static void probe_on_io(evutil_socket_t fd, short what, void *userdata)
{
        struct health_probe *p = userdata;
        int error = 0;
        socklen_t len = sizeof(error);

        switch (p->phase) {
        case PROBE_CONNECTING:
                if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0) {
                        probe_fail_errno(p, error);
                        return;
                }
                probe_connected(p);
                return;
        case PROBE_HANDSHAKE:
                probe_connected(p);
                return;
        case PROBE_SENDING:
                probe_send(p);
                return;
        case PROBE_READING:
                probe_receive(p);
                return;
        case PROBE_IDLE:
                return;
        }
}

/* A check that could not start for want of lbd's own resources (descriptors, memory, local ports) says
 * nothing about the backend: no verdict, no result recorded, the next check at its usual time. Returns
 * true when <error> (a positive errno from socket() or connect()) is such a shortage. */
static bool probe_skip_on_shortage(struct health_probe *p, int error)
{
        if (error != EMFILE && error != ENFILE && error != ENOBUFS && error != ENOMEM && error != EADDRNOTAVAIL)
                return false;
        log_debug_errno(error, "Health check of %s not started: %m", p->backend->name);
        probe_close(p);
        (void)evtimer_del(&p->timer);
        p->phase = PROBE_IDLE;
        probe_schedule(p, probe_next_delay(p));
        return true;
}

static void probe_start(struct health_probe *p)
{
        const struct config *c = p->health->config;
        struct backend *b = p->backend;
        struct timeval tv;
        int n;

        p->started_usec = now_usec();
        p->request_sent = 0;
        p->response_len = 0;

        /* The path goes into the request line as it is: refuse what would break the request. */
        for (const char *q = c->health_path; *q != '\0'; q++)
                if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f) {
                        probe_finish(p, CHECK_ERROR, 0, "invalid [health] path");
                        return;
                }

        n = snprintf(p->request, sizeof(p->request),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: lbd-health\r\nConnection: close\r\n\r\n",
                     c->health_path, b->name);
        if (n < 0 || (size_t)n >= sizeof(p->request)) {
                probe_finish(p, CHECK_ERROR, 0, "request too long");
                return;
        }
        p->request_len = (size_t)n;

        tv = timeval_from_usec(MAX(c->health_timeout_usec, HEALTH_MIN_USEC));
        (void)evtimer_add(&p->timer, &tv);

        p->fd = socket(b->addr.u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (p->fd < 0) {
                if (probe_skip_on_shortage(p, errno))
                        return;
                p->phase = PROBE_CONNECTING;
                probe_fail_errno(p, errno);
                return;
        }
        if (connect(p->fd, &b->addr.u.sa, b->addr.len) < 0) {
                if (errno != EINPROGRESS) {
                        if (probe_skip_on_shortage(p, errno))
                                return;
                        p->phase = PROBE_CONNECTING;
                        probe_fail_errno(p, errno);
                        return;
                }
                p->phase = PROBE_CONNECTING;
                probe_watch(p, EV_WRITE);
                return;
        }
        p->phase = PROBE_CONNECTING;
        probe_watch(p, EV_WRITE);
}

static void probe_on_timer(evutil_socket_t fd, short what, void *userdata)
{
        struct health_probe *p = userdata;

        if (p->phase != PROBE_IDLE) {
                probe_finish(p, CHECK_TIMEOUT, 0, "timeout");
                return;
        }
        if (p->backend->state != BACKEND_ACTIVE)
                return; /* health_sync() releases it */
        probe_start(p);
}

static struct health_probe *probe_free(struct health_probe *p)
{
        struct health *h;

        if (!p)
                return NULL;
        h = p->health;
        probe_close(p);
        (void)evtimer_del(&p->timer);
        DLIST_REMOVE(probes, h->probes, p);
        if (p->backend->probe == p)
                p->backend->probe = NULL;
        backend_unref(p->backend);
        free(p);
        return NULL;
}

static int probe_new(struct health *h, struct backend *b)
{
        struct health_probe *p;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->health = h;
        p->backend = backend_ref(b);
        p->fd = -1;
        p->phase = PROBE_IDLE;
        (void)evtimer_assign(&p->timer, h->base, probe_on_timer, p);

        DLIST_PREPEND(probes, h->probes, p);
        b->probe = p;

        probe_schedule(p, 0);
        return 0;
}

struct health *health_new(struct event_base *base, struct pool *pool, const struct config *c)
{
        struct health *h;

        h = calloc(1, sizeof(*h));
        if (!h)
                return NULL;
        h->base = base;
        h->pool = pool;
        h->config = c;
        h->rng = (now_usec() ^ ((uint64_t)getpid() << 32)) | 1;
        return h;
}

/* True when <b> is one of the pool's active backends. */
static bool health_in_pool(const struct health *h, const struct backend *b)
{
        const struct pool *pool = h->pool;

        return b->state == BACKEND_ACTIVE && b->pool == pool && b->index < pool->n_backends &&
               pool->backends[b->index] == b;
}

int health_sync(struct health *h)
{
        int r = 0;

        DLIST_FOREACH_SAFE(probes, p, next, h->probes)
                if (!health_in_pool(h, p->backend))
                        probe_free(p);

        for (size_t i = 0; i < h->pool->n_backends; i++) {
                struct backend *b = h->pool->backends[i];

                if (!b->probe && probe_new(h, b) < 0)
                        r = -ENOMEM;
        }
        return r;
}

void health_set_config(struct health *h, const struct config *c)
{
        uint64_t interval = MAX(c->health_interval_usec, HEALTH_MIN_USEC), now = now_usec();

        h->config = c;

        /* A shorter interval shouldn't wait for the end of the longer one. */
        DLIST_FOREACH(probes, p, h->probes) {
                uint64_t due = p->started_usec + interval;

                if (p->phase != PROBE_IDLE || p->started_usec == 0 || due >= p->next_usec)
                        continue;
                if (!evtimer_pending(&p->timer, NULL))
                        continue;
                probe_schedule(p, due > now ? due - now : 0);
        }
}

struct health *health_free(struct health *h)
{
        if (!h)
                return NULL;
        while (h->probes)
                probe_free(h->probes);
        free(h);
        return NULL;
}

void health_set_tls(struct health *h, struct tls_client *tc)
{
        h->tls = tc;
}
