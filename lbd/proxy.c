/* The data plane: accepts clients, reads each request head, picks a backend, streams the request to it and
 * the response back, and keeps both connections alive when HTTP allows.
 *
 * Objects (all on the proxy's own event loop, no locks; with [lbd] threads > 1 there is one proxy per loop,
 * loops.c, and nothing here is touched by another loop but the counters, written with COUNTER_ADD):
 * - struct client: one accepted connection. It owns its input/output buffers and, while a request is in
 *   flight, one struct txn (the exchange: parsed heads, body framing, tries, the replay copy).
 * - struct upstream: one connection to a backend. While busy it belongs to exactly one client; when idle it
 *   sits in its backend's idle list for this loop (b->loops[p->index], backend.h), watched for the backend
 *   closing it.
 *
 * Client states: IDLE (between requests) -> HEAD (request head arriving, bounded by the header timeout)
 * -> FORWARD (exchange in flight) -> back to IDLE, or CLOSING (flush what is queued, then close).
 *
 * I/O is speculative: data is written as soon as it is queued, and a write event is armed only when the
 * kernel refuses some. Each direction is bounded: a reader stops reading while its peer's output holds more
 * than BUF_HIGH bytes and resumes below BUF_LOW, so a 1 GiB body streams in constant memory, and a client
 * that does not read pins at most about BUF_HIGH + BACKEND_READ_SIZE bytes of lbd's memory.
 *
 * Blame: passive health (backend_report_*) hears only of what a backend caused: a refused or timed-out
 * connect, a reset or close before any response byte once the whole request was sent, a response timeout
 * while lbd was actually waiting on it (upstream_awaited()), a stall mid-response, a malformed response.
 * A backend that answers early (413 while the body is still arriving) is forwarded: lbd reads what it sent
 * before giving up on a failed write, stops sending it the body, and the client's connection, if the rest
 * of its body does not arrive, ends in a bounded lingering close (read and discarded, LINGER_MAX bytes,
 * LINGER_USEC) so that the client sees the answer rather than a reset.
 *
 * Lifetimes: a callback may close the object it runs for, or its peer. Closing marks the object dead and
 * releases its socket at once; the memory goes when no callback is running on it any more (the `busy`
 * counters), so nothing is used after free.
 *
 * Reading order: the I/O helpers and the small pieces first; then a connection as it goes: accepted by a
 * listener, its request read by the client code, sent by the exchange to an upstream connection, the
 * response streamed back (or the connection turned into a tunnel), the client closed; the functions
 * proxy.h declares last. */
#include "lbd/proxy.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/acceptpause.h"
#include "common/list.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/sockio.h"
#include "http/http.h"
#include "lbd/accesslog.h"
#include "lbd/backend.h"
#include "lbd/balance.h"
#include "lbd/config.h"
#include "lbd/https.h"
#include "lbd/lbd.h"
#include "lbd/loops.h"
#include "lbd/tls.h"

/* A read reserves its size in one evbuffer chain, whose allocation (header included) libevent rounds up to a
 * power of two: read sizes stay a little below one, or a 64 KiB read would allocate 128 KiB. */
#define CHAIN_SLACK    256
#define READ_SIZE      (16 * 1024 - CHAIN_SLACK)
#define BACKEND_READ_SIZE (64 * 1024 - CHAIN_SLACK)
#define BUF_HIGH       (64 * 1024)
#define BUF_LOW        (16 * 1024)
#define LINGER_MAX     (4 * 1024 * 1024) /* request bytes read and dropped after an early answer */
#define LINGER_USEC    (5 * USEC_PER_SEC)
#define TRIM_MIN_CONNS 16                /* a peak of client connections worth a malloc_trim() ... */
#define TRIM_FRACTION  4                 /* ... once all but 1/TRIM_FRACTION of them closed, */
#define TRIM_INTERVAL_USEC USEC_PER_SEC  /* ... and at most this often (it walks the heap) */
#define REPLAY_MAX     (64 * 1024)
#define MAX_TRIES      11
#define ACCEPT_BATCH   64
#define CLOSE_LINGER_USEC (5 * USEC_PER_SEC)
#define REQUEST_ID_MAX 129
#define TARGET_INLINE  256           /* longer targets get their own allocation */
#define TXN_FREE_MAX   256           /* recycled exchanges kept for reuse */
#define TIMEOUTS_MAX   16

enum client_state {
        CLIENT_IDLE,
        CLIENT_HEAD,
        CLIENT_FORWARD,
        CLIENT_TUNNEL,  /* switched protocols (101): bytes relayed both ways until either side closes */
        CLIENT_CLOSING,
};

struct upstream;

struct txn {
        /* Zeroed for every request (up to `replay`). */
        enum http_method method;
        char *target;                /* copy of the request target, for the access log */
        size_t target_len;
        char request_id[REQUEST_ID_MAX];
        struct backend *tried[MAX_TRIES];
        size_t n_tried;
        struct upstream *up;
        uint64_t start_usec;
        uint64_t sent_usec;          /* when it went to its current upstream (the backend's busy time) */
        uint64_t req_body_bytes;
        uint64_t resp_body_bytes;
        unsigned status;             /* final status sent to the client */
        char backend_name[NETADDR_STRLEN];
        bool req_complete;           /* the whole request was read from the client */
        bool resp_head_done;         /* the final response head was parsed */
        bool resp_started;           /* response bytes went to the client: no retry any more */
        bool sent_any;               /* request bytes reached the current upstream socket */
        bool replayable;
        bool close_after;            /* close the client once this exchange is done */
        bool dechunk;                /* HTTP/1.0 client, chunked response */
        bool client_http10;
        bool started;                /* the head was accepted: method and target are known */
        bool tunnel;                 /* the backend switched protocols: a byte tunnel now */
        bool logged;                 /* its access log line is written */
        bool body_dropped;           /* the backend answered and stopped reading: the rest of the body
                                      * is read from the client and dropped */
        uint64_t req_dropped_bytes;

        /* Kept across requests when the txn is recycled; set up by whoever uses them. */
        struct evbuffer *replay;     /* what was sent so far, while it fits in REPLAY_MAX */
        struct txn *next_free;
        char target_inline[TARGET_INLINE];
        http_parser req_parser;
        http_parser resp_parser;
        struct http_head req;
        struct http_head resp;
};

struct client {
        struct proxy *proxy;
        int fd;
        enum client_state state;
        struct event rev, wev, timer;
        struct evbuffer *in, *out;
        struct txn *txn;
        SSL *ssl;                    /* a TLS listener's client; NULL for plain HTTP */
        struct netaddr peer;         /* formatted only when needed: an idle connection costs no text */
        unsigned busy;
        bool dead;
        bool reading;
        bool writing;
        bool read_eof;
        bool redirect;               /* from a redirect listener: requests are answered with 308 to https */
        bool handshaking;            /* TLS: the handshake is not done yet (state IDLE meanwhile) */
        bool tls_broken;             /* TLS: a fatal error, no close_notify may be sent */
        bool lingering;              /* CLOSING: what the client still sends is read and dropped */
        bool shut;                   /* lingering and the answer is out: our side is shut down */
        uint64_t linger_left;        /* bytes it may still send before the connection is closed */
        DLIST_FIELDS(struct client, clients);
};

/* <c>'s address as text in <buf>: for the rare log line and the X-Forwarded-For of a request. */
static const char *client_ip(const struct client *c, char buf[static NETADDR_STRLEN])
{
        if (netaddr_format_host(&c->peer, buf, NETADDR_STRLEN) < 0)
                memcpy(buf, "unknown", 8);
        return buf;
}

/* client_ip() into a buffer that lives as long as the enclosing block (a log call's arguments). */
#define CLIENT_IP(c) client_ip((c), (char[NETADDR_STRLEN]){0})

struct upstream {
        struct proxy *proxy;
        int fd;
        struct event rev, wev, timer;
        struct evbuffer *in, *out;
        struct backend *b;
        struct client *c;            /* owner while busy, NULL while idle */
        SSL *ssl;                    /* [tls] backend = on: the TLS connection; else NULL */
        DLIST_FIELDS(struct upstream, idle); /* on its backend's b->loops[index].idle while idle */
        DLIST_FIELDS(struct upstream, all);  /* on p->upstreams while live */
        unsigned busy;
        bool dead;
        bool tcp_connected;          /* TLS: the socket is connected, the handshake may still run */
        bool connected;              /* ready for requests (the handshake done, over TLS) */
        bool tls_broken;             /* TLS: a fatal error, no close_notify may be sent */
        bool reused;
        bool reading;
        bool writing;
        bool idle;
        bool eof;                    /* the backend closed: a close-delimited body ends once drained */
        bool shut;                   /* tunnel: our side of the connection is shut down for writing */
};

struct listener {
        struct proxy *proxy;
        int fd;
        struct event ev;
        bool tls;                    /* terminates TLS with proxy->tls */
        bool redirect;               /* answers every request with a redirect to https:// */
};

struct proxy {
        struct lbd *lbd;
        struct event_base *base;
        struct loop *loop;           /* the worker loop it runs on; NULL: the main loop (threads = 1) */
        unsigned index;              /* its slot in each backend's loops[] */
        struct accesslog *accesslog; /* its loop's (forwarded to the main loop); NULL: lbd->accesslog */
        struct pool_view *view;      /* the backends as this loop sees them; NULL: lbd->pool->view */
        struct balance_state balance;
        const struct config *cfg;
        struct tls *tls;             /* lbd->tls: the TLS listeners' contexts, shared by every loop (tls.h) */
        struct tls_stats tls_stats;  /* this loop's handshakes (written here only) */
        struct tls_client *backend_tls; /* this loop's TLS to the backends (a clone of lbd->backend_tls) */
        struct listener listeners[CONFIG_MAX_LISTEN];
        size_t n_listeners;
        bool accepting;
        struct acceptpause accept_pause; /* out of descriptors: listeners unwatched for a backoff */
        DLIST_HEAD(struct client, clients);
        DLIST_HEAD(struct upstream, upstreams);
        struct proxy_stats stats;
        uint64_t id_prefix;
        uint64_t id_counter;
        struct txn *free_txns;
        size_t n_free_txns;
        /* libevent common timeouts (O(1) queues instead of the timer heap), one per duration in use */
        struct {
                uint64_t usec;
                const struct timeval *tv;
        } timeouts[TIMEOUTS_MAX];
        size_t n_timeouts;
        size_t conns_high;           /* most client connections open since the last malloc_trim() */
        uint64_t trimmed_usec;       /* when it ran last */
        bool draining;
        void (*drain_done)(void *userdata);
        void *drain_userdata;
};

/* The flow below calls back and forth (a client wakes its upstream and the other way round): declared here,
 * in the order they are defined. */
static void client_read_cb(evutil_socket_t fd, short what, void *userdata);
static void client_write_cb(evutil_socket_t fd, short what, void *userdata);
static void client_timer_cb(evutil_socket_t fd, short what, void *userdata);
static void client_process(struct client *c);
static void client_start(struct client *c, struct txn *t, const char *buf, size_t head_len);
static void client_answer_redirect(struct client *c, struct txn *t, const char *buf, size_t head_len);
static void client_answer_acme(struct client *c, struct txn *t, size_t head_len);
static void txn_finish(struct client *c);
static void client_reject(struct client *c, unsigned status, const char *detail);
static int client_forward_body(struct client *c);
static void client_update_reading(struct client *c);
static void client_flush(struct client *c);
static void client_timer_stop(struct client *c);
static void client_closing(struct client *c, bool linger);
static void txn_dispatch(struct client *c);
static void txn_fail(struct client *c, unsigned status, const char *detail);
static int upstream_connect(struct proxy *p, struct backend *b, struct upstream **ret);
static int upstream_handshake(struct upstream *up);
static void upstream_timer_cb(evutil_socket_t fd, short what, void *userdata);
static void upstream_idle_timeout(struct upstream *up);
static void upstream_write_cb(evutil_socket_t fd, short what, void *userdata);
static void upstream_read_cb(evutil_socket_t fd, short what, void *userdata);
static void upstream_process(struct upstream *up);
static void upstream_forward_body(struct upstream *up, struct client *c);
static void upstream_flush(struct upstream *up);
static void upstream_write_failed(struct upstream *up, ssize_t err);
static void upstream_read_pending(struct upstream *up);
static void upstream_stop_sending(struct upstream *up, struct txn *t);
static void upstream_release(struct upstream *up, bool keep);
static void tunnel_start(struct client *c, struct upstream *up, const char *buf, size_t head_len);
static void tunnel_to_client(struct upstream *up, struct client *c);
static void tunnel_to_upstream(struct client *c);
static void tunnel_upstream_closed(struct client *c);
static void tunnel_touch(struct client *c, struct upstream *up);
static void client_close(struct client *c);
static void proxy_trim(struct proxy *p);

/* ---- helpers: timers, socket I/O, request ids ---- */

/* Arms <ev> to fire in <usec>. The few durations in use (the configured timeouts) each get a libevent
 * common-timeout queue, where adding and removing is O(1) instead of a heap operation. */
static void proxy_arm_in(struct proxy *p, struct event *ev, uint64_t usec)
{
        struct timeval tv;

        for (size_t i = 0; i < p->n_timeouts; i++)
                if (p->timeouts[i].usec == usec) {
                        (void)event_add(ev, p->timeouts[i].tv);
                        return;
                }
        tv = timeval_from_usec(usec);
        if (p->n_timeouts < TIMEOUTS_MAX) {
                const struct timeval *common = event_base_init_common_timeout(p->base, &tv);

                if (common) {
                        p->timeouts[p->n_timeouts].usec = usec;
                        p->timeouts[p->n_timeouts++].tv = common;
                        (void)event_add(ev, common);
                        return;
                }
        }
        (void)event_add(ev, &tv);
}

/* Reads from a client or an upstream: sockio_read(), or decrypted through <ssl> when it is a TLS
 * connection. A TLS failure sets *<tls_broken> (no close_notify may follow). Records already inside
 * OpenSSL wake no socket event: while <reading>, <rev> is activated to come back for them. */
static ssize_t proxy_recv(SSL *ssl, int fd, struct evbuffer *buf, size_t max, bool *tls_broken,
                          struct event *rev, bool reading)
{
        bool again = false;
        ssize_t n;

        if (!ssl)
                return sockio_read(fd, buf, max);
        n = tls_read(ssl, buf, max, &again);
        if (n < 0 && n != -EAGAIN)
                *tls_broken = true;
        else if (n > 0 && reading && again)
                event_active(rev, EV_READ, 0);
        return n;
}

/* Writes to a client or an upstream: sockio_write(), or through <ssl>. */
static ssize_t proxy_send(SSL *ssl, int fd, struct evbuffer *buf, bool *tls_broken)
{
        ssize_t n;

        if (!ssl)
                return sockio_write(fd, buf);
        n = tls_write(ssl, buf);
        if (n < 0)
                *tls_broken = true;
        return n;
}

/* Appends a copy of <from> to <to>, leaving <from> as it is. */
static int proxy_copy(struct evbuffer *to, struct evbuffer *from)
{
        struct evbuffer_ptr pos;
        struct evbuffer_iovec v[8];
        int n;

        if (evbuffer_ptr_set(from, &pos, 0, EVBUFFER_PTR_SET) < 0)
                return -EINVAL;
        for (;;) {
                n = evbuffer_peek(from, -1, &pos, v, (int)ELEMENTSOF(v));
                if (n <= 0)
                        return 0;
                n = (int)MIN((size_t)n, ELEMENTSOF(v));
                for (int i = 0; i < n; i++) {
                        if (evbuffer_add(to, v[i].iov_base, v[i].iov_len) < 0)
                                return -ENOMEM;
                        if (evbuffer_ptr_set(from, &pos, v[i].iov_len, EVBUFFER_PTR_ADD) < 0)
                                return 0;
                }
        }
}

static void proxy_count_rejected(struct proxy *p, unsigned status)
{
        if (status >= PROXY_CODE_MIN && status <= PROXY_CODE_MAX)
                COUNTER_ADD(p->stats.rejected[status - PROXY_CODE_MIN], 1);
}

/* 32 hex digits: a random per-process prefix and a counter. <size> must be at least 33. */
static void proxy_make_request_id(struct proxy *p, char *buf, size_t size)
{
        static const char hex[] = "0123456789abcdef";
        uint64_t v[2] = { p->id_prefix, ++p->id_counter };

        if (size < 33)
                return;
        for (size_t k = 0; k < 2; k++)
                for (size_t i = 0; i < 16; i++)
                        buf[k * 16 + i] = hex[(v[k] >> (60 - 4 * i)) & 0xf];
        buf[32] = 0;
}

/* ---- the pieces: watching sockets, lifetimes, exchanges taken and given back ---- */

static void upstream_set_reading(struct upstream *up, bool on)
{
        if (up->reading == on || up->dead)
                return;
        up->reading = on;
        if (on)
                (void)event_add(&up->rev, NULL);
        else
                (void)event_del(&up->rev);
        /* Decrypted bytes OpenSSL holds wake no socket event. */
        if (on && up->ssl && up->connected && tls_has_pending(up->ssl))
                event_active(&up->rev, EV_READ, 0);
}

static ssize_t upstream_recv(struct upstream *up, size_t max)
{
        return proxy_recv(up->ssl, up->fd, up->in, max, &up->tls_broken, &up->rev, up->reading);
}

static ssize_t upstream_send(struct upstream *up)
{
        return proxy_send(up->ssl, up->fd, up->out, &up->tls_broken);
}

static void upstream_set_writing(struct upstream *up, bool on)
{
        if (up->writing == on || up->dead)
                return;
        up->writing = on;
        if (on)
                (void)event_add(&up->wev, NULL);
        else
                (void)event_del(&up->wev);
}

/* Whether lbd is waiting on <up>'s backend, so that its silence is the backend's: the request is sent (or
 * being sent and the backend does not take it) and the response is being read. Not while the request body
 * is still coming from the client, nor while lbd stopped reading the response because the client does not
 * read it (its own send timeout covers that). */
static bool upstream_awaited(const struct upstream *up)
{
        const struct client *c = up->c;
        const struct txn *t;

        if (up->dead || !up->connected || up->eof || !c || c->dead || !c->txn || c->txn->up != up)
                return false;
        t = c->txn;
        if (t->resp_head_done && !up->reading)
                return false;
        if (evbuffer_get_length(up->out) > 0 && !t->body_dropped)
                return true;
        return t->req_complete || t->resp_head_done;
}

/* Keeps <up>'s response timer running exactly while upstream_awaited(); <progress>: the backend just sent
 * or took bytes, so its time starts again. Not for connecting, idle or tunnelled connections, whose timer
 * means something else. */
static void upstream_watch(struct upstream *up, bool progress)
{
        struct client *c = up->c;

        if (up->dead || !up->connected || !c || !c->txn || c->txn->up != up || c->txn->tunnel)
                return;
        if (!upstream_awaited(up))
                (void)event_del(&up->timer);
        else if (progress || !evtimer_pending(&up->timer, NULL))
                proxy_arm_in(up->proxy, &up->timer, up->proxy->cfg->backend_timeout_usec);
}

static void upstream_unlink_idle(struct upstream *up)
{
        struct backend_loop *bl = &up->b->loops[up->proxy->index];

        if (!up->idle)
                return;
        DLIST_REMOVE(idle, bl->idle, up);
        up->idle = false;
        bl->n_idle--;
}

static void upstream_destroy(struct upstream *up)
{
        SSL_free(up->ssl);
        evbuffer_free(up->in);
        evbuffer_free(up->out);
        backend_unref(up->b);
        free(up);
}

/* Closes the socket now; the memory goes when no callback runs on it. */
static void upstream_close(struct upstream *up)
{
        if (up->dead)
                return;
        upstream_unlink_idle(up);
        (void)event_del(&up->rev);
        (void)event_del(&up->wev);
        (void)event_del(&up->timer);
        up->reading = up->writing = false;
        if (up->ssl && up->connected && !up->tls_broken)
                tls_shutdown(up->ssl);
        if (up->fd >= 0)
                (void)close(up->fd);
        up->fd = -1;
        up->dead = true;
        up->c = NULL;
        DLIST_REMOVE(all, up->proxy->upstreams, up);
        if (up->busy == 0)
                upstream_destroy(up);
}

static void upstream_leave(struct upstream *up)
{
        if (--up->busy == 0 && up->dead)
                upstream_destroy(up);
}

static void client_enter(struct client *c)
{
        c->busy++;
}

static void client_destroy(struct client *c)
{
        SSL_free(c->ssl);
        evbuffer_free(c->in);
        evbuffer_free(c->out);
        free(c);
}

static void client_leave(struct client *c)
{
        if (--c->busy == 0 && c->dead)
                client_destroy(c);
}

static struct txn *txn_new(struct proxy *p)
{
        struct txn *t = p->free_txns;

        if (t) {
                p->free_txns = t->next_free;
                p->n_free_txns--;
                (void)evbuffer_drain(t->replay, evbuffer_get_length(t->replay));
        } else {
                t = malloc(sizeof(*t));
                if (!t)
                        return NULL;
                t->replay = evbuffer_new();
                if (!t->replay) {
                        free(t);
                        return NULL;
                }
        }
        memset(t, 0, offsetof(struct txn, replay));
        return t;
}

static void txn_release(struct proxy *p, struct txn *t)
{
        if (!t)
                return;
        if (t->target != t->target_inline)
                free(t->target);
        if (p->n_free_txns < TXN_FREE_MAX && evbuffer_get_length(t->replay) <= REPLAY_MAX) {
                /* A recycled exchange keeps its buffer, not the request it carried. */
                (void)evbuffer_drain(t->replay, evbuffer_get_length(t->replay));
                t->next_free = p->free_txns;
                p->free_txns = t;
                p->n_free_txns++;
                return;
        }
        evbuffer_free(t->replay);
        free(t);
}

/* Ends the tie between <t> and its upstream: the one place where the backend's count of requests in
 * flight (what least-connections balancing and drain-before-terminate read) goes down, once for each
 * time txn_dispatch() raised it, and where the time the request held it adds to its busy time (the
 * smoothed load the reconciler scales in by, backend.h). Returns the upstream, which the caller closes or
 * releases. */
static struct upstream *txn_detach(struct txn *t)
{
        struct upstream *up = t->up;

        struct backend_loop *bl = up ? &up->b->loops[up->proxy->index] : NULL;

        assert(bl && bl->active > 0);
        COUNTER_SUB(bl->active, 1);
        COUNTER_ADD(bl->stats.busy_usec, now_usec() - t->sent_usec);
        t->up = NULL;
        return up;
}

/* Writes the exchange's one access log line (once), and counts it for the status page's figures: its
 * duration in the proxy's histogram, and in its backend's when the backend answered (still attached: the
 * response came from it); 5xx answers as errors. A tunnel's lifetime is no latency: not counted. */
static void txn_log(struct client *c, struct txn *t, unsigned status, uint64_t bytes)
{
        struct proxy_stats *stats = &c->proxy->stats;
        struct accesslog_entry e = {
                .client = &c->peer,
                .method = t->started ? http_method_str(t->method) : NULL,
                .path = t->target,
                .path_len = t->target_len,
                .status = status,
                .bytes = bytes,
                .backend = t->n_tried ? t->backend_name : NULL,
                .duration_usec = now_usec() - t->start_usec,
                .request_id = t->request_id,
        };

        if (t->logged)
                return;
        t->logged = true;
        if (status >= 500)
                COUNTER_ADD(stats->errors_total, 1);
        if (!t->tunnel) {
                latency_add(&stats->latency, e.duration_usec);
                if (t->up && t->resp_head_done)
                        latency_add(&t->up->b->loops[c->proxy->index].stats.latency, e.duration_usec);
        }
        accesslog_write(c->proxy->accesslog ? c->proxy->accesslog : c->proxy->lbd->accesslog, &e);
}

/* Whether the client may still be sending: part of its request is unread, or input waits. */
static bool client_may_send_more(const struct client *c)
{
        return evbuffer_get_length(c->in) > 0 || (c->txn && c->txn->started && !c->txn->req_complete);
}

/* ---- listeners: where a connection starts ---- */

/* [lbd] max_connections is for the whole of lbd: a worker loop's share is max_connections / threads. */
static uint64_t proxy_max_connections(const struct proxy *p)
{
        if (!p->loop)
                return p->cfg->max_connections;
        return MAX(UINT64_C(1), p->cfg->max_connections / MAX(UINT64_C(1), p->cfg->threads));
}

static void proxy_update_accepting(struct proxy *p)
{
        bool want = !p->draining && !p->accept_pause.paused && p->stats.connections < proxy_max_connections(p);

        if (want == p->accepting)
                return;
        p->accepting = want;
        for (size_t i = 0; i < p->n_listeners; i++) {
                if (p->listeners[i].fd < 0)
                        continue;
                if (want)
                        (void)event_add(&p->listeners[i].ev, NULL);
                else
                        (void)event_del(&p->listeners[i].ev);
        }
}

static void proxy_set_listening(void *userdata, bool on)
{
        proxy_update_accepting(userdata);
}

static void proxy_accept_cb(evutil_socket_t lfd, short what, void *userdata)
{
        struct listener *l = userdata;
        struct proxy *p = l->proxy;

        for (int i = 0; i < ACCEPT_BATCH && p->accepting; i++) {
                struct netaddr peer = { .len = sizeof(peer.u) };
                struct client *c;
                int fd, one = 1;

                fd = accept4(lfd, &peer.u.sa, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        int e = errno;

                        /* Out of descriptors or memory: unwatched for a while, not woken again at once. */
                        if (!acceptpause_failed(&p->accept_pause, e) && e != EAGAIN && e != EWOULDBLOCK &&
                            e != EINTR && e != ECONNABORTED)
                                log_debug_errno(e, "accept() failed: %m");
                        return;
                }
                acceptpause_accepted(&p->accept_pause);
                (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

                c = calloc(1, sizeof(*c));
                if (!c) {
                        (void)close(fd);
                        continue;
                }
                c->proxy = p;
                c->fd = fd;
                c->peer = peer;
                c->in = evbuffer_new();
                c->out = evbuffer_new();
                if (!c->in || !c->out) {
                        if (c->in)
                                evbuffer_free(c->in);
                        if (c->out)
                                evbuffer_free(c->out);
                        free(c);
                        (void)close(fd);
                        continue;
                }
                if (l->tls) {
                        c->ssl = tls_accept(p->tls, fd);
                        if (!c->ssl) {
                                client_destroy(c);
                                (void)close(fd);
                                continue;
                        }
                        c->handshaking = true;
                }
                c->redirect = l->redirect;
                (void)event_assign(&c->rev, p->base, fd, EV_READ | EV_PERSIST, client_read_cb, c);
                (void)event_assign(&c->wev, p->base, fd, EV_WRITE | EV_PERSIST, client_write_cb, c);
                (void)evtimer_assign(&c->timer, p->base, client_timer_cb, c);
                c->state = CLIENT_IDLE;
                c->reading = true;
                (void)event_add(&c->rev, NULL);
                proxy_arm_in(c->proxy, &c->timer, p->cfg->client_header_timeout_usec);

                DLIST_PREPEND(clients, p->clients, c);
                COUNTER_ADD(p->stats.connections, 1);
                COUNTER_ADD(p->stats.connections_total, 1);
                if (p->stats.connections > p->conns_high)
                        p->conns_high = p->stats.connections;
                proxy_update_accepting(p);
        }
}

/* ---- clients: reading requests, writing responses ---- */

/* Drives a TLS client's handshake. Until it is done the client is IDLE with no input, under the header
 * timeout armed at accept; then its requests are read as on a plain connection. */
static void client_handshake(struct client *c)
{
        enum tls_failure why = TLS_FAIL_OTHER;
        int r = tls_handshake(c->ssl, &c->proxy->tls_stats, &why);

        if (r < 0) {
                log_debug("TLS handshake with %s failed: %s", CLIENT_IP(c), tls_failure_name(why));
                c->tls_broken = true;
                client_close(c);
                return;
        }
        if (r == TLS_WANT_WRITE) {
                c->writing = true;
                (void)event_add(&c->wev, NULL);
                return;
        }
        if (c->writing) {
                c->writing = false;
                (void)event_del(&c->wev);
        }
        if (r == TLS_DONE) {
                c->handshaking = false;
                /* The first request may have come with the handshake's last flight and be inside
                 * OpenSSL already (read ahead); what is still in the socket wakes the read event. Not
                 * reading otherwise saves a read() that would find nothing, at every handshake. */
                if (tls_has_pending(c->ssl))
                        event_active(&c->rev, EV_READ, 0);
        }
}

static ssize_t client_recv(struct client *c)
{
        return proxy_recv(c->ssl, c->fd, c->in, READ_SIZE, &c->tls_broken, &c->rev, c->reading);
}

static ssize_t client_send(struct client *c)
{
        return proxy_send(c->ssl, c->fd, c->out, &c->tls_broken);
}

static void client_read_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct client *c = userdata;
        ssize_t n;

        client_enter(c);
        if (c->handshaking) {
                client_handshake(c);
                goto out;
        }
        /* A wake-up for data OpenSSL holds may come after reading stopped: it waits for the next turn. */
        if (c->ssl && !c->reading)
                goto out;
        n = client_recv(c);
        if (n == -EAGAIN)
                goto out;
        if (n <= 0) {
                c->read_eof = true;
                if (c->state == CLIENT_TUNNEL) {
                        struct upstream *up = c->txn ? c->txn->up : NULL;

                        if (n < 0 || !up || up->dead || up->eof) {
                                client_close(c);
                                goto out;
                        }
                        /* Half-closed: what it sent goes on, then the backend sees the close too. */
                        c->reading = false;
                        (void)event_del(&c->rev);
                        upstream_flush(up);
                        goto out;
                }
                if (c->state == CLIENT_CLOSING) {
                        /* Lingering: the client has seen the answer and is done; else the answer still
                         * goes out, then the connection closes. */
                        if (n < 0 || evbuffer_get_length(c->out) == 0)
                                client_close(c);
                        else
                                client_update_reading(c);
                        goto out;
                }
                if (c->state == CLIENT_IDLE || (c->state == CLIENT_HEAD && evbuffer_get_length(c->in) == 0) ||
                    n < 0) {
                        client_close(c);
                        goto out;
                }
                if (c->state == CLIENT_HEAD) {
                        /* Half a head and the client is done sending: nothing to answer. */
                        client_close(c);
                        goto out;
                }
                if (c->state == CLIENT_FORWARD && !c->txn->req_complete) {
                        client_close(c);
                        goto out;
                }
                /* Request complete and half-closed: its answer, and those of the requests pipelined
                 * behind it, still go out; then the connection closes (client_process(), once the input
                 * is used up). */
                c->reading = false;
                (void)event_del(&c->rev);
                goto out;
        }
        client_process(c);
out:
        client_leave(c);
}

static void client_write_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct client *c = userdata;

        client_enter(c);
        if (c->handshaking) {
                client_handshake(c);
                goto out;
        }
        client_flush(c);
        if (!c->dead && c->txn && c->txn->up && !c->txn->up->dead && c->txn->resp_head_done &&
            evbuffer_get_length(c->out) < BUF_LOW) {
                struct upstream *up = c->txn->up;

                up->busy++;
                upstream_process(up);
                upstream_leave(up);
        }
        /* The last answer is out: a pipelined request waiting for that goes on. */
        if (!c->dead && c->state == CLIENT_IDLE && !c->writing && evbuffer_get_length(c->in) > 0)
                client_process(c);
out:
        client_leave(c);
}

static void client_timer_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct client *c = userdata;

        client_enter(c);
        switch (c->state) {
        case CLIENT_HEAD:
                client_reject(c, 408, "request head not received in time");
                break;
        case CLIENT_FORWARD:
                if (c->txn && !c->txn->req_complete) {
                        if (c->txn->up)
                                upstream_close(txn_detach(c->txn));
                        c->txn->close_after = true;
                        txn_fail(c, 408, "request body not received in time");
                } else
                        client_close(c); /* the client stopped reading the response */
                break;
        case CLIENT_TUNNEL:
                log_debug("Tunnel from %s idle for too long: closing it", CLIENT_IP(c));
                client_close(c);
                break;
        case CLIENT_IDLE:
        case CLIENT_CLOSING:
                if (c->handshaking) {
                        tls_count_failure(&c->proxy->tls_stats, TLS_FAIL_TIMEOUT);
                        log_debug("TLS handshake with %s not done in time", CLIENT_IP(c));
                }
                client_close(c);
                break;
        }
        client_leave(c);
}

static void client_process(struct client *c)
{
        struct proxy *p = c->proxy;
        const struct config *cfg = p->cfg;

        while (!c->dead) {
                size_t len = evbuffer_get_length(c->in);

                switch (c->state) {
                case CLIENT_IDLE:
                        if (len == 0 && c->read_eof) { /* every request it sent is answered */
                                client_closing(c, false);
                                return;
                        }
                        if (len == 0)
                                goto io;
                        /* A pipelined request waits until the client has taken the last answer (the kernel
                         * holds it): one that reads nothing gets nothing more sent on its behalf. */
                        if (c->writing)
                                goto io;
                        c->state = CLIENT_HEAD;
                        proxy_arm_in(c->proxy, &c->timer, cfg->client_header_timeout_usec);
                        break;
                case CLIENT_HEAD: {
                        const char *reason = "malformed request";
                        unsigned char *buf;
                        struct txn *t = c->txn;
                        int r;

                        if (len == 0)
                                goto io;
                        if (!t) {
                                t = txn_new(p);
                                if (!t) {
                                        client_close(c);
                                        return;
                                }
                                t->start_usec = now_usec();
                                c->txn = t;
                        }
                        buf = evbuffer_pullup(c->in, (ev_ssize_t)MIN(len, (size_t)cfg->max_header_size + 1));
                        r = http_parse_request(&t->req_parser, (const char *)buf, len, cfg->max_header_size,
                                               &t->req, &reason);
                        if (r == 0 && c->read_eof) { /* half a head, and the client is done: no answer */
                                client_closing(c, false);
                                return;
                        }
                        if (r == 0)
                                goto io;
                        if (r < 0) {
                                if (r == -EMSGSIZE)
                                        client_reject(c, 431, "request head too large");
                                else if (r == -ENOTSUP)
                                        client_reject(c, t->req.major != 1 ? 505 : 405, reason);
                                else
                                        client_reject(c, 400, reason);
                                return;
                        }
                        client_start(c, t, (const char *)buf, (size_t)r);
                        break;
                }
                case CLIENT_FORWARD:
                        if (!c->txn->req_complete && client_forward_body(c) < 0)
                                return;
                        goto io;
                case CLIENT_TUNNEL:
                        tunnel_to_upstream(c);
                        goto io;
                case CLIENT_CLOSING:
                        if (c->lingering && len > 0) {
                                (void)evbuffer_drain(c->in, len);
                                if (len >= c->linger_left) {
                                        log_debug("Client %s sent more than %d bytes after its answer: closing",
                                                  CLIENT_IP(c), LINGER_MAX);
                                        client_close(c);
                                        return;
                                }
                                c->linger_left -= len;
                        }
                        goto io;
                }
        }
        return;
io:
        client_update_reading(c);
}

/* Sends lbd's own answer to the request whose head (<head_len> bytes) starts c->in: <status>, the header
 * fields <fields> (each ending in CRLF), and <body> (emptied; not sent for HEAD). The request's body, if
 * any, is not read: the connection then ends after the answer, lingering to drop it. */
static void client_answer(struct client *c, struct txn *t, size_t head_len, unsigned status, const char *fields,
                          struct evbuffer *body)
{
        size_t len = evbuffer_get_length(body);

        (void)evbuffer_drain(c->in, head_len);
        if (t->req.body == HTTP_BODY_NONE || (t->req.body == HTTP_BODY_LENGTH && t->req.content_length == 0))
                t->req_complete = true;
        else
                t->close_after = true;
        t->status = status;
        t->resp_started = t->resp_head_done = true;
        if (evbuffer_add_printf(c->out, "HTTP/1.1 %u %s\r\n%sContent-Length: %zu\r\nX-Request-Id: %s\r\n%s\r\n",
                                status, http_status_reason(status), fields, len, t->request_id,
                                t->close_after ? "Connection: close\r\n" : "") < 0 ||
            (t->method != HTTP_HEAD && evbuffer_add_buffer(c->out, body) < 0)) {
                client_close(c);
                return;
        }
        t->resp_body_bytes = t->method == HTTP_HEAD ? 0 : len;
        c->state = CLIENT_FORWARD;
        client_timer_stop(c);
        client_enter(c);
        client_flush(c);
        if (!c->dead)
                txn_finish(c);
        client_leave(c);
}

/* Queues the backend's response head for the client; over TLS with [tls] hsts set, with
 * Strict-Transport-Security added unless the backend sent its own. Returns 0 or -ENOMEM. */
static int client_write_response_head(struct client *c, struct txn *t, const char *buf)
{
        uint64_t max_age = c->proxy->cfg->tls_hsts_max_age;
        struct evbuffer *head;
        size_t len;
        int r;

        for (size_t i = 0; c->ssl && max_age > 0 && i < t->resp.n_fields; i++)
                if (http_field_name_eq(buf, &t->resp.fields[i], "Strict-Transport-Security", 25))
                        max_age = 0;
        if (!c->ssl || max_age == 0)
                return http_write_response_head(c->out, buf, &t->resp, t->request_id, t->dechunk, t->close_after,
                                                t->client_http10);
        /* The head ends with its empty line: the field goes in before it. */
        head = evbuffer_new();
        if (!head)
                return -ENOMEM;
        r = http_write_response_head(head, buf, &t->resp, t->request_id, t->dechunk, t->close_after,
                                     t->client_http10);
        len = evbuffer_get_length(head);
        if (r >= 0 && (len < 2 || evbuffer_remove_buffer(head, c->out, len - 2) != (int)(len - 2) ||
                       evbuffer_add_printf(c->out, "Strict-Transport-Security: max-age=%llu\r\n\r\n",
                                           (unsigned long long)max_age) < 0))
                r = -ENOMEM;
        evbuffer_free(head);
        return r < 0 ? r : 0;
}

/* The port that the redirect sends clients to: the first TLS listener's, else 443. */
static uint16_t proxy_https_port(const struct config *cfg)
{
        for (size_t i = 0; i < MIN(cfg->n_listen, (size_t)CONFIG_MAX_LISTEN); i++)
                if (cfg->listen_tls[i])
                        return netaddr_port(&cfg->listen[i]);
        return 443;
}

/* 308 to the same URL over https (method and body kept by the client, RFC 9110 15.4.9). */
static void client_answer_redirect(struct client *c, struct txn *t, const char *buf, size_t head_len)
{
        const struct http_field *host = t->req.host >= 0 ? &t->req.fields[t->req.host] : NULL;
        struct evbuffer *loc = evbuffer_new(), *empty = evbuffer_new();
        char *text = NULL;
        int r = -ENOMEM;

        if (loc && empty) {
                r = evbuffer_add(loc, "Location: ", 10) < 0
                            ? -ENOMEM
                            : https_redirect_location(loc, buf + t->req.target_off, t->req.target_len,
                                                      host ? buf + host->value_off : NULL,
                                                      host ? host->value_len : 0, proxy_https_port(c->proxy->cfg));
                if (r >= 0 && evbuffer_add(loc, "\r\n\0", 3) == 0)
                        text = (char *)evbuffer_pullup(loc, -1);
        }
        if (!text) {
                (void)evbuffer_drain(c->in, head_len);
                txn_fail(c, r == -EINVAL ? 400 : 500, r == -EINVAL ? "no host name to redirect to https" : "out of memory");
        } else
                client_answer(c, t, head_len, 308, text, empty);
        if (loc)
                evbuffer_free(loc);
        if (empty)
                evbuffer_free(empty);
}

/* An ACME http-01 challenge file from [tls] acme_challenge_dir, or 404. */
static void client_answer_acme(struct client *c, struct txn *t, size_t head_len)
{
        struct evbuffer *body = evbuffer_new();
        int r;

        if (!body) {
                client_close(c);
                return;
        }
        if (t->method != HTTP_GET && t->method != HTTP_HEAD) {
                (void)evbuffer_drain(c->in, head_len);
                txn_fail(c, 405, "the ACME challenge is read with GET");
        } else {
                r = https_acme_read(body, c->proxy->cfg->acme_dir, t->target, t->target_len);
                if (r < 0) {
                        log_debug("ACME challenge %.*s from %s not served: %s", (int)MIN(t->target_len, 200),
                                  t->target ? t->target : "", CLIENT_IP(c), strerror(-r));
                        (void)evbuffer_drain(body, evbuffer_get_length(body));
                        (void)evbuffer_add_printf(body, "404 Not Found: no such challenge\n");
                }
                client_answer(c, t, head_len, r < 0 ? 404 : 200,
                              "Content-Type: text/plain\r\nCache-Control: no-store\r\n", body);
        }
        evbuffer_free(body);
}

/* A complete request head is at the start of c->in: set up the exchange and dispatch it. */
static void client_start(struct client *c, struct txn *t, const char *buf, size_t head_len)
{
        struct proxy *p = c->proxy;
        const struct config *cfg = p->cfg;
        char ip[NETADDR_STRLEN];
        struct http_forward fw = {
                .client_ip = client_ip(c, ip),
                .proto = c->ssl ? "https" : "http",
                .request_id = t->request_id,
                /* HTTP/1.1 requires a Host: an HTTP/1.0 request without one gets the empty one RFC 9112 3.2
                 * prescribes (or its absolute-form's authority), else the next lbd would refuse it. */
                .host = "",
        };
        const char *reason = NULL;
        int r;

        COUNTER_ADD(p->stats.requests_total, 1);
        t->started = true;
        t->method = t->req.method;
        t->client_http10 = t->req.minor == 0;
        t->target_len = t->req.target_len;
        t->target = t->target_len < TARGET_INLINE ? t->target_inline : malloc(t->target_len + 1);
        if (t->target) {
                memcpy(t->target, buf + t->req.target_off, t->target_len);
                t->target[t->target_len] = 0;
        } else
                t->target_len = 0;
        if (t->req.request_id >= 0) {
                const struct http_field *f = &t->req.fields[t->req.request_id];
                memcpy(t->request_id, buf + f->value_off, f->value_len);
                t->request_id[f->value_len] = 0;
        } else
                proxy_make_request_id(p, t->request_id, sizeof(t->request_id));
        if (!t->req.keep_alive || p->draining)
                t->close_after = true;

        /* On a plain listener: the ACME challenge (when configured) and the redirect to HTTPS are lbd's. */
        if (!c->ssl && cfg->acme_dir[0] && https_is_acme(t->target, t->target_len)) {
                client_answer_acme(c, t, head_len);
                return;
        }
        if (c->redirect) {
                client_answer_redirect(c, t, buf, head_len);
                return;
        }

        if (cfg->max_body_size > 0 && t->req.body == HTTP_BODY_LENGTH && t->req.content_length > cfg->max_body_size) {
                (void)evbuffer_drain(c->in, head_len);
                txn_fail(c, 413, "request body too large");
                return;
        }

        /* An upgrade to a protocol not on the list goes as a plain request (Upgrade, Connection: upgrade
         * and HTTP2-Settings dropped), so that nothing but those protocols bypasses lbd's HTTP (h2c). */
        if (t->req.upgrade && !http_upgrade_allowed(buf, &t->req, cfg->upgrades))
                t->req.upgrade = false;
        r = http_write_request_head(t->replay, buf, &t->req, &fw);
        if (r < 0) {
                (void)evbuffer_drain(c->in, head_len);
                if (r == -EMSGSIZE)
                        txn_fail(c, 431, "too many header fields");
                else
                        txn_fail(c, 500, "out of memory");
                return;
        }
        t->replayable = true;
        (void)evbuffer_drain(c->in, head_len);

        r = http_body_begin(&t->req_parser, &t->req, &reason);
        if (r < 0) {
                txn_fail(c, 400, reason);
                return;
        }
        t->req_complete = r == 1;
        c->state = CLIENT_FORWARD;
        client_timer_stop(c);
        if (!t->req_complete)
                proxy_arm_in(c->proxy, &c->timer, cfg->client_body_timeout_usec);
        /* The first body bytes that came with the head go into the replay copy before dispatch. */
        if (!t->req_complete && client_forward_body(c) < 0)
                return;
        txn_dispatch(c);
}

static void client_reject(struct client *c, unsigned status, const char *detail)
{
        struct txn *t = c->txn;

        log_info("Rejected request from %s: %u %s", CLIENT_IP(c), status, detail);
        if (!t) {
                proxy_count_rejected(c->proxy, status);
                (void)http_write_error(c->out, status, detail, NULL, true);
                client_closing(c, status != 408 && client_may_send_more(c));
                return;
        }
        t->target_len = 0;
        txn_fail(c, status, detail);
}

/* Moves request body bytes from the client to the upstream, through the framing parser. */
static int client_forward_body(struct client *c)
{
        struct txn *t = c->txn;
        const struct config *cfg = c->proxy->cfg;
        bool moved = false;

        while (!t->req_complete && evbuffer_get_length(c->in) > 0) {
                struct upstream *up = t->up;
                struct evbuffer_iovec v;
                const char *reason = NULL;
                size_t consumed = 0;
                int r;

                if (up && !t->body_dropped && evbuffer_get_length(up->out) >= BUF_HIGH)
                        break;
                if (t->body_dropped && t->req_dropped_bytes >= LINGER_MAX)
                        break;
                if (!up && evbuffer_get_length(t->replay) >= BUF_HIGH)
                        break;
                if (evbuffer_peek(c->in, -1, NULL, &v, 1) < 1)
                        break;
                r = http_body_feed(&t->req_parser, &t->req, v.iov_base, v.iov_len, NULL, &consumed, &reason);
                if (r < 0) {
                        log_info("Bad request body from %s: %s", CLIENT_IP(c), reason);
                        if (t->up)
                                upstream_close(txn_detach(t));
                        txn_fail(c, 400, reason);
                        return -EBADMSG;
                }
                t->req_body_bytes += consumed;
                if (cfg->max_body_size > 0 && t->req_body_bytes > cfg->max_body_size + 16) {
                        if (t->up)
                                upstream_close(txn_detach(t));
                        txn_fail(c, 413, "request body too large");
                        return -EFBIG;
                }
                if (t->body_dropped) {
                        /* The backend answered and stopped reading: the rest only ends the request. */
                        (void)evbuffer_drain(c->in, consumed);
                        t->req_dropped_bytes += consumed;
                        moved = true;
                        if (r == 1)
                                t->req_complete = true;
                        continue;
                }
                /* Keep a copy for a retry while it is small; past that, a retry is impossible. */
                if (t->replayable && t->up) {
                        if (evbuffer_get_length(t->replay) + consumed <= REPLAY_MAX)
                                (void)evbuffer_add(t->replay, v.iov_base, consumed);
                        else
                                t->replayable = false;
                }
                if (up)
                        (void)evbuffer_remove_buffer(c->in, up->out, consumed);
                else
                        (void)evbuffer_remove_buffer(c->in, t->replay, consumed);
                moved = true;
                if (r == 1)
                        t->req_complete = true;
        }
        if (t->req_complete)
                client_timer_stop(c);
        else if (moved)
                proxy_arm_in(c->proxy, &c->timer, cfg->client_body_timeout_usec);
        if (moved && t->up && t->up->connected)
                upstream_flush(t->up);
        return 0;
}

/* Read while there is room: a head still arriving, a body with somewhere to go, a little pipelined input,
 * or, lingering, what is to be dropped. */
static void client_update_reading(struct client *c)
{
        const struct config *cfg = c->proxy->cfg;

        if (c->dead)
                return;
        {
                size_t len = evbuffer_get_length(c->in);
                bool want;

                if (c->read_eof)
                        want = false;
                else if (c->state == CLIENT_CLOSING)
                        want = c->lingering;
                else if (c->state == CLIENT_TUNNEL)
                        want = c->txn && c->txn->up && !c->txn->up->dead &&
                               evbuffer_get_length(c->txn->up->out) < BUF_HIGH;
                else if (c->state == CLIENT_FORWARD && !c->txn->req_complete && c->txn->body_dropped)
                        want = c->txn->req_dropped_bytes < LINGER_MAX;
                else if (c->state == CLIENT_FORWARD && !c->txn->req_complete)
                        want = !c->txn->up ? evbuffer_get_length(c->txn->replay) < BUF_HIGH
                                           : evbuffer_get_length(c->txn->up->out) < BUF_HIGH;
                else
                        want = len <= cfg->max_header_size;
                if (want != c->reading) {
                        c->reading = want;
                        if (want)
                                (void)event_add(&c->rev, NULL);
                        else
                                (void)event_del(&c->rev);
                        /* Decrypted bytes OpenSSL holds wake no socket event. */
                        if (want && c->ssl && !c->handshaking && tls_has_pending(c->ssl))
                                event_active(&c->rev, EV_READ, 0);
                }
        }
}

/* No deadline of the client's own from here on, except the send timeout of an answer still waiting for it:
 * that one runs on (client_flush()). */
static void client_timer_stop(struct client *c)
{
        if (!c->writing)
                (void)event_del(&c->timer);
}

static void client_flush(struct client *c)
{
        ssize_t n;

        if (c->dead)
                return;
        n = client_send(c);
        if (n < 0) {
                client_close(c);
                return;
        }
        if (evbuffer_get_length(c->out) > 0) {
                /* The send timeout runs from when the answer began to wait or the client last took some:
                 * more queued meanwhile does not push it back. */
                if (c->state == CLIENT_TUNNEL || (c->state != CLIENT_CLOSING && (n > 0 || !c->writing)))
                        proxy_arm_in(c->proxy, &c->timer, c->proxy->cfg->client_body_timeout_usec);
                else if (c->state == CLIENT_CLOSING && n > 0)
                        proxy_arm_in(c->proxy, &c->timer, CLOSE_LINGER_USEC);
                if (!c->writing) {
                        c->writing = true;
                        (void)event_add(&c->wev, NULL);
                }
                return;
        }
        if (c->writing) {
                c->writing = false;
                (void)event_del(&c->wev);
                /* Between requests the keep-alive timeout starts once the last answer is out. */
                if (c->state == CLIENT_IDLE)
                        proxy_arm_in(c->proxy, &c->timer, c->proxy->cfg->client_idle_timeout_usec);
        }
        if (c->state == CLIENT_CLOSING) {
                if (!c->lingering || c->read_eof) {
                        client_close(c);
                        return;
                }
                /* The answer is out: the client sees its end, and whatever it still sends is dropped until
                 * it closes, for LINGER_USEC at most. */
                if (!c->shut) {
                        c->shut = true;
                        if (c->ssl)
                                tls_shutdown(c->ssl);
                        (void)shutdown(c->fd, SHUT_WR);
                        proxy_arm_in(c->proxy, &c->timer, LINGER_USEC);
                }
                return;
        }
        if (c->state == CLIENT_TUNNEL)
                proxy_arm_in(c->proxy, &c->timer, c->proxy->cfg->tunnel_timeout_usec);
        /* Nothing queued for the client: no send timeout. While the request body still arrives, its
         * own timeout applies; after that the backend's. */
        if (c->state == CLIENT_FORWARD && c->txn) {
                if (c->txn->req_complete)
                        (void)event_del(&c->timer);
                else
                        proxy_arm_in(c->proxy, &c->timer, c->proxy->cfg->client_body_timeout_usec);
        }
        /* The client took the backlog: let the upstream send more, in its own time again. */
        if (c->txn && c->txn->up && !c->txn->up->dead && !c->txn->up->eof && c->txn->resp_head_done) {
                upstream_set_reading(c->txn->up, true);
                upstream_watch(c->txn->up, false);
        }
}

/* Ends the client's connection once what is queued for it went out. With <linger>, what the client still
 * sends (the rest of a body nobody wants) is read and dropped meanwhile, and after the answer went out for
 * LINGER_USEC or LINGER_MAX bytes at most: a socket closed with unread input sends a reset, which can
 * destroy the answer in the client's kernel before the client reads it. */
static void client_closing(struct client *c, bool linger)
{
        client_enter(c);
        c->state = CLIENT_CLOSING;
        c->lingering = linger && !c->read_eof;
        c->linger_left = LINGER_MAX;
        client_flush(c);
        if (!c->dead)
                client_process(c);
        client_leave(c);
}

/* ---- exchanges: from the request to a backend and back ---- */

/* Sends the request (replay copy) to a backend picked by the balancer. */
static void txn_dispatch(struct client *c)
{
        struct proxy *p = c->proxy;
        struct txn *t = c->txn;
        struct pool *pool = p->lbd->pool;
        const struct balancer_ops *balancer = balance_from_kind(p->cfg->balance);

        for (;;) {
                struct backend *b;
                struct backend_loop *bl;
                struct upstream *up;
                int r;

                b = p->view ? balancer->pick(p->view, &p->balance, t->tried, t->n_tried)
                            : balancer->pick(pool->view, &pool->balance, t->tried, t->n_tried);
                if (!b) {
                        if (t->n_tried == 0)
                                txn_fail(c, 503, "no healthy backend");
                        else
                                txn_fail(c, 502, "every backend tried failed");
                        return;
                }
                t->tried[t->n_tried++] = b;
                memcpy(t->backend_name, b->name, sizeof(t->backend_name));

                bl = &b->loops[p->index];
                up = bl->idle;
                if (up) {
                        upstream_unlink_idle(up);
                        (void)event_del(&up->timer);
                } else {
                        r = upstream_connect(p, b, &up);
                        if (r < 0) {
                                COUNTER_ADD(bl->stats.failures, 1);
                                if (r == -ECONNREFUSED)
                                        loop_report_refused(p->loop, b, "connection refused");
                                if (t->n_tried <= p->cfg->retries && t->n_tried < MAX_TRIES) {
                                        COUNTER_ADD(p->stats.retries_total, 1);
                                        continue;
                                }
                                txn_fail(c, 502, "could not connect to a backend");
                                return;
                        }
                }
                up->c = c;
                t->up = up;
                t->sent_usec = now_usec();
                COUNTER_ADD(bl->active, 1);
                COUNTER_ADD(bl->stats.requests, 1);
                if (proxy_copy(up->out, t->replay) < 0) {
                        txn_fail(c, 502, "out of memory");
                        return;
                }
                if (up->connected) {
                        upstream_watch(up, true);
                        upstream_flush(up);
                }
                return;
        }
}

static void txn_finish(struct client *c)
{
        struct txn *t = c->txn;
        struct upstream *up = t->up;

        txn_log(c, t, t->status, t->resp_body_bytes);
        if (up) {
                (void)txn_detach(t);
                /* Reused only when the backend read the whole request: anything else would be read as
                 * the start of the next one. */
                upstream_release(up, t->resp.keep_alive && t->req_complete && !t->body_dropped);
        }
        if (t->close_after || !t->req_complete) {
                bool linger = client_may_send_more(c);

                c->txn = NULL;
                txn_release(c->proxy, t);
                client_closing(c, linger);
                return;
        }
        c->txn = NULL;
        txn_release(c->proxy, t);
        c->state = CLIENT_IDLE;
        /* Part of the answer still waiting keeps the send timeout it has; client_flush() starts the
         * keep-alive timeout once it is out. */
        if (!c->writing)
                proxy_arm_in(c->proxy, &c->timer, c->proxy->cfg->client_idle_timeout_usec);
        if (c->proxy->draining && evbuffer_get_length(c->in) == 0) {
                client_closing(c, false);
                return;
        }
        /* A pipelined request may be waiting already. */
        client_process(c);
}

/* The request's tries so far failed with <status> (502/504) or the client is gone: answer, or abort. */
static void txn_fail(struct client *c, unsigned status, const char *detail)
{
        struct txn *t = c->txn;
        int body;

        if (t->resp_started) {
                /* The client has part of a response: the only honest signal left is closing. */
                log_warning("Aborting response to %s for %.*s: %s", CLIENT_IP(c), (int)MIN(t->target_len, 200),
                            t->target, detail);
                client_close(c);
                return;
        }
        t->status = status;
        t->close_after = true;
        if (!t->request_id[0])
                proxy_make_request_id(c->proxy, t->request_id, sizeof(t->request_id));
        proxy_count_rejected(c->proxy, status);
        body = http_write_error(c->out, status, detail, t->request_id, true);
        t->resp_started = true;
        txn_log(c, t, status, body > 0 ? (uint64_t)body : 0);
        /* A client too slow to send its request gets no more time to send the rest. */
        client_closing(c, status != 408 && client_may_send_more(c));
}

/* The current upstream failed. <refused>: the connection was refused or reset (the backend is down);
 * <timeout>: no answer in time. Retries when the rules allow, else answers 502/504. */
static void txn_upstream_failed(struct client *c, const char *what, bool refused, bool timeout)
{
        struct txn *t = c->txn;
        struct upstream *up = t->up;
        struct backend *b = up->b;
        const struct config *cfg = c->proxy->cfg;
        bool sent = t->sent_any, reused = up->reused, connected = up->connected;
        /* Still sending a body the client is still sending, or that lbd has not passed on yet: a backend
         * that closes or resets then may be refusing it (too large, too slow), which is the client's doing. */
        bool body_pending = up->connected && t->req.body != HTTP_BODY_NONE &&
                            (!t->req_complete || evbuffer_get_length(up->out) > 0);

        log_debug("backend %s failed for %s %.*s: %s%s", b->name, http_method_str(t->method),
                  (int)MIN(t->target_len, 200), t->target, what, reused ? " (reused connection)" : "");

        upstream_close(txn_detach(t));

        if (body_pending && !timeout)
                log_debug("backend %s closed while the request body was still being sent: not held against it",
                          b->name);
        else if (refused && !(reused && sent))
                loop_report_refused(c->proxy->loop, b, what);
        else if (timeout || !connected)
                /* No answer in time, or a connect that timed out or failed otherwise than refused */
                loop_report_result(c->proxy->loop, b, 0, (unsigned)cfg->health_passive_fall);
        else
                COUNTER_ADD(b->loops[c->proxy->index].stats.failures, 1);

        if (t->resp_started) {
                txn_fail(c, 502, what);
                return;
        }
        if (timeout) {
                /* Waiting again elsewhere would double the client's wait: 504 now. */
                txn_fail(c, 504, "the backend did not answer in time");
                return;
        }
        if (t->n_tried <= cfg->retries && t->n_tried < MAX_TRIES && t->replayable &&
            (!sent || http_method_idempotent(t->method))) {
                COUNTER_ADD(c->proxy->stats.retries_total, 1);
                t->sent_any = false;
                t->resp_head_done = false;
                txn_dispatch(c);
                return;
        }
        txn_fail(c, 502, "the backend failed before answering");
}

/* ---- upstream connections ---- */

static int upstream_connect(struct proxy *p, struct backend *b, struct upstream **ret)
{
        struct upstream *up;
        int fd, one = 1, r;

        fd = socket(b->addr.u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        up = calloc(1, sizeof(*up));
        if (!up) {
                (void)close(fd);
                return -ENOMEM;
        }
        up->proxy = p;
        up->fd = fd;
        up->in = evbuffer_new();
        up->out = evbuffer_new();
        if (!up->in || !up->out) {
                r = -ENOMEM;
                goto fail;
        }
        up->b = backend_ref(b);
        (void)event_assign(&up->rev, p->base, fd, EV_READ | EV_PERSIST, upstream_read_cb, up);
        (void)event_assign(&up->wev, p->base, fd, EV_WRITE | EV_PERSIST, upstream_write_cb, up);
        (void)evtimer_assign(&up->timer, p->base, upstream_timer_cb, up);

        if (p->backend_tls) {
                up->ssl = tls_client_connect(p->backend_tls, fd, &up->b->addr);
                if (!up->ssl) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        r = connect(fd, &b->addr.u.sa, b->addr.len);
        if (r < 0 && errno != EINPROGRESS) {
                r = -errno;
                goto fail;
        }
        if (r == 0 && up->ssl) {
                /* Connected at once: the handshake starts from the write callback. */
                up->tcp_connected = true;
                upstream_set_writing(up, true);
                proxy_arm_in(up->proxy, &up->timer, p->cfg->connect_timeout_usec);
        } else if (r == 0) {
                up->connected = true;
                upstream_set_reading(up, true);
                proxy_arm_in(up->proxy, &up->timer, p->cfg->backend_timeout_usec);
        } else {
                upstream_set_writing(up, true);
                proxy_arm_in(up->proxy, &up->timer, p->cfg->connect_timeout_usec);
        }
        DLIST_PREPEND(all, p->upstreams, up);
        *ret = up;
        return 0;
fail:
        SSL_free(up->ssl);
        if (up->b)
                backend_unref(up->b);
        if (up->in)
                evbuffer_free(up->in);
        if (up->out)
                evbuffer_free(up->out);
        free(up);
        (void)close(fd);
        return r;
}

static void upstream_timer_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct upstream *up = userdata;
        struct client *c = up->c;

        up->busy++;
        if (up->idle || !c)
                upstream_idle_timeout(up);
        else {
                client_enter(c);
                if (c->txn->tunnel) {
                        log_debug("Tunnel to %s idle for too long: closing it", up->b->name);
                        client_close(c);
                } else if (!up->connected)
                        txn_upstream_failed(c, "connect timed out", false, false);
                else if (!upstream_awaited(up))
                        /* lbd was not waiting on the backend (upstream_watch() keeps it from firing then) */
                        log_debug("Response timer of %s fired while not waiting on it", up->b->name);
                else if (!c->txn->resp_head_done)
                        txn_upstream_failed(c, "response timed out", false, true);
                else {
                        loop_report_result(c->proxy->loop, up->b, 0, (unsigned)c->proxy->cfg->health_passive_fall);
                        txn_fail(c, 504, "the backend stalled mid-response");
                }
                client_leave(c);
        }
        upstream_leave(up);
}

static void upstream_idle_timeout(struct upstream *up)
{
        upstream_close(up);
}

/* Drives <up>'s TLS handshake. Returns 1 when done, 0 while it waits for the socket, or -EPROTO when it
 * failed (a wrong CA or name fails closed): the exchange was told, and may have freed <up>. */
static int upstream_handshake(struct upstream *up)
{
        char reason[200] = "unknown error", what[256];
        struct client *c = up->c;
        int r;

        r = tls_client_handshake(up->ssl, reason, sizeof(reason));
        if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
                upstream_set_reading(up, r == TLS_WANT_READ);
                upstream_set_writing(up, r == TLS_WANT_WRITE);
                return 0;
        }
        if (r == TLS_DONE) {
                upstream_set_writing(up, false);
                return 1;
        }
        up->tls_broken = true;
        log_warning("TLS handshake with backend %s failed: %s", up->b->name, reason);
        if (c && c->txn) {
                (void)snprintf(what, sizeof(what), "TLS handshake failed: %s", reason);
                txn_upstream_failed(c, what, false, false);
        } else
                upstream_close(up);
        return -EPROTO;
}

static void upstream_write_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct upstream *up = userdata;
        struct client *c = up->c;

        up->busy++;
        if (c)
                client_enter(c);
        if (!up->connected && !up->tcp_connected) {
                int err = 0;
                socklen_t len = sizeof(err);

                if (getsockopt(up->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        err = errno;
                if (err != 0) {
                        if (c && c->txn) {
                                char what_buf[96];

                                (void)snprintf(what_buf, sizeof(what_buf), "connect failed: %s", strerror(err));
                                txn_upstream_failed(c, what_buf, err == ECONNREFUSED || err == ECONNRESET,
                                                    false);
                        } else
                                upstream_close(up);
                        goto out;
                }
                up->tcp_connected = true;
        }
        if (!up->connected) {
                if (up->ssl && upstream_handshake(up) <= 0)
                        goto out;
                up->connected = true;
                upstream_set_reading(up, true);
                upstream_watch(up, true);
        }
        upstream_flush(up);
out:
        if (c)
                client_leave(c);
        upstream_leave(up);
}

static void upstream_read_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct upstream *up = userdata;
        struct client *c = up->c;
        size_t max = BACKEND_READ_SIZE;
        ssize_t n;

        up->busy++;
        if (!up->connected) {
                /* The TLS handshake, which reads as well as writes. */
                upstream_write_cb(fd, EV_WRITE, up);
                goto out_up;
        }
        if (up->idle && up->ssl) {
                /* A record that carries no data (a TLS 1.3 session ticket) leaves it idle. */
                n = upstream_recv(up, 1);
                if (n == -EAGAIN)
                        goto out_up;
        }
        if (up->idle || !c) {
                /* An idle connection has nothing to say: EOF or stray bytes both end it. */
                upstream_close(up);
                goto out_up;
        }
        client_enter(c);
        /* A response body is read only as far as the client's side has room: a client that does not read
         * pins no more than that. */
        if (c->txn && c->txn->up == up && c->txn->resp_head_done && !c->txn->tunnel) {
                size_t queued = evbuffer_get_length(c->out) + evbuffer_get_length(up->in);

                if (queued >= BUF_HIGH) {
                        upstream_set_reading(up, false);
                        upstream_watch(up, false);
                        goto out;
                }
                max = MIN(max, BUF_HIGH - queued);
        }
        n = upstream_recv(up, max);
        if (n == -EAGAIN)
                goto out;
        if (n <= 0) {
                struct txn *t = c->txn;

                if (n < 0 && n != -ECONNRESET && n != -EPIPE)
                        log_debug("read from backend %s failed: %s", up->b->name, strerror((int)-n));
                if (t && t->up == up && t->tunnel) {
                        up->eof = true;
                        upstream_set_reading(up, false);
                        tunnel_upstream_closed(c);
                        goto out;
                }
                if (t && t->up == up && t->resp_head_done && t->resp.body == HTTP_BODY_EOF && n == 0) {
                        /* The close delimits the body: complete once what is buffered went out. */
                        up->eof = true;
                        upstream_set_reading(up, false);
                        upstream_process(up);
                        goto out;
                }
                if (t && t->up == up) {
                        if (t->resp_head_done || evbuffer_get_length(up->in) > 0) {
                                /* Mid-response: nothing to retry, the client must see the truncation. */
                                loop_report_result(up->proxy->loop, up->b, 0, 0);
                                upstream_close(txn_detach(t));
                                if (!t->resp_started)
                                        txn_fail(c, 502, "the backend closed mid-response");
                                else
                                        client_close(c);
                        } else
                                txn_upstream_failed(c, n == 0 ? "connection closed before any response"
                                                              : "connection reset before any response",
                                                    n == -ECONNRESET, false);
                } else
                        upstream_close(up);
                goto out;
        }
        upstream_watch(up, true);
        upstream_process(up);
out:
        client_leave(c);
out_up:
        upstream_leave(up);
}

static void upstream_process(struct upstream *up)
{
        struct client *c = up->c;
        const struct config *cfg = up->proxy->cfg;

        if (c && !c->dead && c->txn && c->txn->up == up && c->txn->tunnel) {
                tunnel_to_client(up, c);
                return;
        }
        while (!up->dead && c && !c->dead && c->txn && c->txn->up == up) {
                struct txn *t = c->txn;
                const char *reason = "malformed response";
                size_t len = evbuffer_get_length(up->in);
                unsigned char *buf;
                int r;

                if (t->resp_head_done) {
                        upstream_forward_body(up, c);
                        if (!up->dead && up->c == c && !up->eof) {
                                upstream_set_reading(up, evbuffer_get_length(c->out) < BUF_HIGH);
                                upstream_watch(up, false);
                        }
                        return;
                }
                if (len == 0)
                        return;
                buf = evbuffer_pullup(up->in, (ev_ssize_t)MIN(len, (size_t)cfg->max_header_size + 1));
                r = http_parse_response(&t->resp_parser, (const char *)buf, len, cfg->max_header_size,
                                        t->method == HTTP_HEAD, &t->resp, &reason);
                if (r == 0)
                        return;
                if (r < 0) {
                        log_warning("Invalid response from backend %s: %s", up->b->name,
                                    r == -EMSGSIZE ? "head too large" : reason);
                        COUNTER_ADD(up->b->loops[up->proxy->index].stats.failures, 1);
                        upstream_close(txn_detach(t));
                        txn_fail(c, 502, "invalid response from the backend");
                        return;
                }
                /* A 101 is relayed only to an upgrade request that was forwarded as one, and only to a
                 * protocol on the list; anything else is a backend speaking out of turn. */
                if (t->resp.status == 101 && t->req.upgrade && t->resp.upgrade &&
                    http_upgrade_allowed((const char *)buf, &t->resp, cfg->upgrades)) {
                        tunnel_start(c, up, (const char *)buf, (size_t)r);
                        return;
                }
                if (t->resp.status == 101) {
                        log_warning("Backend %s switched protocols unasked", up->b->name);
                        upstream_close(txn_detach(t));
                        txn_fail(c, 502, "unexpected protocol switch");
                        return;
                }
                if (t->resp.status < 200) {
                        /* Interim (100 Continue, 103): relayed to HTTP/1.1 clients, then the real one. */
                        if (!t->client_http10) {
                                (void)http_write_response_head(c->out, (const char *)buf, &t->resp, NULL, false,
                                                               false, false);
                                t->resp_started = true;
                        }
                        (void)evbuffer_drain(up->in, (size_t)r);
                        client_flush(c);
                        continue;
                }

                t->resp_head_done = true;
                t->status = t->resp.status;
                COUNTER_ADD(up->b->loops[up->proxy->index].stats.by_code[t->status - BACKEND_CODE_MIN], 1);
                loop_report_result(up->proxy->loop, up->b, t->status, (unsigned)cfg->health_passive_fall);
                if (!t->req.keep_alive || c->proxy->draining || t->resp.body == HTTP_BODY_EOF)
                        t->close_after = true;
                if (t->client_http10 && t->resp.body == HTTP_BODY_CHUNKED) {
                        t->dechunk = true;
                        t->close_after = true;
                }
                if (!t->req_complete)
                        t->close_after = true;
                if (client_write_response_head(c, t, (const char *)buf) < 0) {
                        client_close(c);
                        return;
                }
                t->resp_started = true;
                (void)evbuffer_drain(up->in, (size_t)r);
                r = http_body_begin(&t->resp_parser, &t->resp, &reason);
                if (r < 0) {
                        log_warning("Invalid response framing from %s: %s", up->b->name, reason);
                        client_close(c);
                        return;
                }
                if (r == 1) {
                        client_flush(c);
                        if (!c->dead)
                                txn_finish(c);
                        return;
                }
        }
}

/* Moves response body bytes from the upstream to the client, through the framing parser. */
static void upstream_forward_body(struct upstream *up, struct client *c)
{
        struct txn *t = c->txn;

        while (evbuffer_get_length(up->in) > 0 && evbuffer_get_length(c->out) < BUF_HIGH) {
                struct evbuffer_iovec v;
                const char *reason = NULL;
                size_t consumed = 0;
                size_t before = evbuffer_get_length(c->out);
                int r;

                if (evbuffer_peek(up->in, -1, NULL, &v, 1) < 1)
                        break;
                r = http_body_feed(&t->resp_parser, &t->resp, v.iov_base, v.iov_len, t->dechunk ? c->out : NULL,
                                   &consumed, &reason);
                if (r < 0) {
                        log_warning("Malformed response body from %s: %s", up->b->name, reason);
                        COUNTER_ADD(up->b->loops[up->proxy->index].stats.failures, 1);
                        t->close_after = true;
                        client_close(c);
                        return;
                }
                if (t->dechunk) {
                        t->resp_body_bytes += evbuffer_get_length(c->out) - before;
                        (void)evbuffer_drain(up->in, consumed);
                } else {
                        t->resp_body_bytes += consumed;
                        (void)evbuffer_remove_buffer(up->in, c->out, consumed);
                }
                if (r == 1) {
                        client_flush(c);
                        if (!c->dead)
                                txn_finish(c);
                        return;
                }
        }
        if (up->eof && evbuffer_get_length(up->in) == 0 && t->resp.body == HTTP_BODY_EOF) {
                (void)http_body_eof(&t->resp_parser, &t->resp);
                client_flush(c);
                if (!c->dead)
                        txn_finish(c);
                return;
        }
        client_flush(c);
}

static void upstream_flush(struct upstream *up)
{
        struct client *c = up->c;
        ssize_t n;

        if (up->dead || !up->connected)
                return;
        if (c && c->txn && c->txn->up == up && c->txn->body_dropped)
                (void)evbuffer_drain(up->out, evbuffer_get_length(up->out));
        n = upstream_send(up);
        if (n < 0) {
                upstream_write_failed(up, n);
                return;
        }
        if (n > 0 && c && c->txn)
                c->txn->sent_any = true;
        upstream_set_writing(up, evbuffer_get_length(up->out) > 0);
        upstream_watch(up, n > 0);

        /* Room again for the request body, or the tunnel's bytes: read the client once more. */
        if (c && !c->dead && c->txn && (!c->txn->req_complete || c->state == CLIENT_TUNNEL) &&
            evbuffer_get_length(up->out) < BUF_LOW)
                client_process(c);
        /* The client is done sending into the tunnel and all of it went out: pass the half-close on. */
        if (c && !c->dead && c->state == CLIENT_TUNNEL && c->read_eof && !up->dead && !up->shut &&
            evbuffer_get_length(up->out) == 0) {
                up->shut = true;
                if (up->ssl)
                        tls_shutdown(up->ssl);
                (void)shutdown(up->fd, SHUT_WR);
        }
}

/* A write to <up> failed with <err> (< 0). Reading what the backend sent may end the exchange, and free
 * <up> or its client: both are held while it runs. */
static void upstream_write_failed(struct upstream *up, ssize_t err)
{
        struct client *c = up->c;
        struct txn *t = c ? c->txn : NULL;

        if (!t || t->up != up) {
                upstream_close(up);
                return;
        }
        up->busy++;
        client_enter(c);
        if (!t->resp_head_done && !t->tunnel)
                upstream_read_pending(up);
        if (up->dead || c->dead || c->txn != t || t->up != up)
                goto out; /* the early answer was complete, or failed */
        if (t->resp_head_done && !t->tunnel) {
                log_debug("backend %s answered %u and stopped reading the request body", up->b->name, t->status);
                upstream_stop_sending(up, t);
                client_process(c);
                goto out;
        }
        txn_upstream_failed(c, err == -EPIPE ? "connection closed while sending" : "connection reset while sending",
                            err == -ECONNRESET, false);
out:
        client_leave(c);
        upstream_leave(up);
}

/* Reads what <up>'s backend already sent, up to a response head, and processes it: a write to it failed,
 * and an answer it gave before it stopped reading must not be lost. */
static void upstream_read_pending(struct upstream *up)
{
        struct client *c = up->c;
        size_t max = (size_t)up->proxy->cfg->max_header_size + 1;

        while (!up->dead && evbuffer_get_length(up->in) < max) {
                ssize_t n = upstream_recv(up, BACKEND_READ_SIZE);

                if (n <= 0)
                        break;
        }
        if (!up->dead && c && c->txn && c->txn->up == up && evbuffer_get_length(up->in) > 0)
                upstream_process(up);
}

/* The backend answered and no longer reads the request: the rest of the body goes nowhere. The connection
 * stays open for the rest of the response, and is not reused. */
static void upstream_stop_sending(struct upstream *up, struct txn *t)
{
        (void)evbuffer_drain(up->out, evbuffer_get_length(up->out));
        upstream_set_writing(up, false);
        t->body_dropped = true;
        t->close_after = true;
}

/* Back to the pool when it can carry another request, else closed. */
static void upstream_release(struct upstream *up, bool keep)
{
        struct backend_loop *bl = &up->b->loops[up->proxy->index];
        const struct config *cfg = up->proxy->cfg;

        up->c = NULL;
        if (!keep || up->dead || !backend_is_active(up->b) || bl->n_idle >= cfg->max_idle_per_backend ||
            evbuffer_get_length(up->in) > 0 || evbuffer_get_length(up->out) > 0 || up->proxy->draining) {
                upstream_close(up);
                return;
        }
        up->idle = true;
        up->reused = true;
        DLIST_PREPEND(idle, bl->idle, up);
        bl->n_idle++;
        upstream_set_writing(up, false);
        upstream_set_reading(up, true);
        proxy_arm_in(up->proxy, &up->timer, cfg->backend_idle_timeout_usec);
}

/* ---- tunnels (Upgrade: a WebSocket, say) ---- */

/* The backend answered an upgrade request with 101 and its head is at the start of up->in (<head_len>
 * bytes): the head goes to the client, then the connection is a byte tunnel. The upstream is never reused;
 * the exchange ends, and is logged with status 101, when the tunnel closes. */
static void tunnel_start(struct client *c, struct upstream *up, const char *buf, size_t head_len)
{
        struct txn *t = c->txn;

        t->resp_head_done = true;
        t->status = t->resp.status;
        COUNTER_ADD(up->b->loops[up->proxy->index].stats.by_code[t->status - BACKEND_CODE_MIN], 1);
        loop_report_result(up->proxy->loop, up->b, t->status, (unsigned)c->proxy->cfg->health_passive_fall);
        if (http_write_response_head(c->out, buf, &t->resp, t->request_id, false, false, false) < 0) {
                client_close(c);
                return;
        }
        t->resp_started = true;
        t->tunnel = true;
        c->state = CLIENT_TUNNEL;
        (void)evbuffer_drain(up->in, head_len);
        /* What either side sent after its head already speaks the new protocol. */
        if (evbuffer_get_length(c->in) > 0 && evbuffer_add_buffer(up->out, c->in) < 0) {
                client_close(c);
                return;
        }
        tunnel_to_client(up, c);
        if (!c->dead && !up->dead)
                upstream_flush(up);
        if (!c->dead)
                client_process(c); /* sets the client's reading for the tunnel */
}

/* Moves what the backend sent to the client. */
static void tunnel_to_client(struct upstream *up, struct client *c)
{
        size_t n = evbuffer_get_length(up->in);

        if (n > 0) {
                if (evbuffer_add_buffer(c->out, up->in) < 0) {
                        client_close(c);
                        return;
                }
                c->txn->resp_body_bytes += n;
                tunnel_touch(c, up);
        }
        client_flush(c);
        if (!c->dead && !up->dead && !up->eof)
                upstream_set_reading(up, evbuffer_get_length(c->out) < BUF_HIGH);
}

/* Moves what the client sent to the backend. */
static void tunnel_to_upstream(struct client *c)
{
        struct txn *t = c->txn;
        struct upstream *up = t ? t->up : NULL;
        size_t n = evbuffer_get_length(c->in);

        if (!up || up->dead) {
                client_close(c);
                return;
        }
        if (n == 0)
                return;
        if (evbuffer_add_buffer(up->out, c->in) < 0) {
                client_close(c);
                return;
        }
        t->req_body_bytes += n;
        tunnel_touch(c, up);
        upstream_flush(up);
}

/* The backend closed its side: what it sent reaches the client, then the client is closed. */
static void tunnel_upstream_closed(struct client *c)
{
        c->state = CLIENT_CLOSING;
        if (c->reading) {
                c->reading = false;
                (void)event_del(&c->rev);
        }
        client_flush(c);
}

/* Traffic either way keeps both ends' idle timers off. */
static void tunnel_touch(struct client *c, struct upstream *up)
{
        uint64_t usec = c->proxy->cfg->tunnel_timeout_usec;

        proxy_arm_in(c->proxy, &c->timer, usec);
        if (!up->dead)
                proxy_arm_in(up->proxy, &up->timer, usec);
}

/* ---- the end of a client connection ---- */

static void client_close(struct client *c)
{
        struct proxy *p = c->proxy;

        if (c->dead)
                return;
        c->dead = true;
        if (c->txn) {
                struct txn *t = c->txn;

                /* 499 (nginx's "client closed request"): the exchange ended without a full response. */
                if (t->started)
                        txn_log(c, t, t->resp_head_done ? t->status : 499, t->resp_body_bytes);
                if (t->up)
                        upstream_close(txn_detach(t));
                c->txn = NULL;
                txn_release(c->proxy, t);
        }
        (void)event_del(&c->rev);
        (void)event_del(&c->wev);
        (void)event_del(&c->timer);
        if (c->ssl && !c->handshaking && !c->tls_broken)
                tls_shutdown(c->ssl);
        (void)close(c->fd);
        c->fd = -1;
        DLIST_REMOVE(clients, p->clients, c);
        COUNTER_SUB(p->stats.connections, 1);
        if (c->busy == 0)
                client_destroy(c);
        proxy_trim(p);
        proxy_update_accepting(p);
        if (p->draining && p->stats.connections == 0 && p->drain_done) {
                void (*done)(void *) = p->drain_done;
                p->drain_done = NULL;
                done(p->drain_userdata);
        }
}

/* After a mass of connections closed (a flood, an attack of slow clients), gives the memory their buffers
 * held back to the system: glibc keeps freed heap for reuse, and a fragmented heap is not returned by
 * itself. Rare enough to cost nothing: once per peak of TRIM_MIN_CONNS or more, at most once a second
 * however the load swings (a skipped one runs at a later close). */
static void proxy_trim(struct proxy *p)
{
        uint64_t now;

        if (p->stats.connections > p->conns_high)
                p->conns_high = p->stats.connections;
        if (p->conns_high < TRIM_MIN_CONNS || p->stats.connections > p->conns_high / TRIM_FRACTION)
                return;
        now = now_usec();
        if (p->trimmed_usec != 0 && now - p->trimmed_usec < TRIM_INTERVAL_USEC)
                return;
        (void)malloc_trim(0);
        p->trimmed_usec = now;
        p->conns_high = p->stats.connections;
}

/* ---- the proxy: creating, listening, reloading, draining, freeing ---- */

struct proxy *proxy_new(struct lbd *lbd, struct event_base *base, struct loop *loop, unsigned index,
                        struct accesslog *accesslog)
{
        struct proxy *p;

        p = calloc(1, sizeof(*p));
        if (!p)
                return NULL;
        p->lbd = lbd;
        p->base = base;
        p->loop = loop;
        p->index = index;
        p->accesslog = accesslog;
        balance_state_init(&p->balance);
        p->cfg = lbd->config;
        for (size_t i = 0; i < CONFIG_MAX_LISTEN; i++)
                p->listeners[i].fd = -1;
        p->tls = lbd->tls;
        if (lbd->backend_tls) {
                p->backend_tls = tls_client_clone(lbd->backend_tls);
                if (!p->backend_tls) {
                        free(p);
                        return NULL;
                }
        }
        if (acceptpause_init(&p->accept_pause, p->base, "proxy", proxy_set_listening, p) < 0) {
                tls_client_free(p->backend_tls);
                free(p);
                return NULL;
        }
        if (getrandom(&p->id_prefix, sizeof(p->id_prefix), GRND_NONBLOCK) != sizeof(p->id_prefix))
                p->id_prefix = realtime_usec() ^ (uint64_t)getpid();
        return p;
}

int proxy_listen(struct proxy *p, const struct config *c)
{
        int r;

        if (config_has_tls(c) && !p->tls)
                return log_error_errno(EINVAL, "TLS listeners without TLS contexts");
        for (size_t i = 0; i < c->n_listen; i++) {
                const struct netaddr *a = &c->listen[i];
                struct listener *l;
                char name[NETADDR_STRLEN];
                int fd, one = 1;

                (void)netaddr_format(a, name, sizeof(name));
                fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return log_error_errno(errno, "Failed to create a socket for %s: %m", name);
                (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                /* Worker loops: one socket per loop on the same address, the kernel spreading new
                 * connections over them (loops.c). */
                if (p->loop && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
                        r = -errno;
                        (void)close(fd);
                        return log_error_errno(r, "Failed to share %s between event loops: %m", name);
                }
                if (a->u.sa.sa_family == AF_INET6)
                        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
                if (bind(fd, &a->u.sa, a->len) < 0 || listen(fd, 4096) < 0) {
                        r = -errno;
                        (void)close(fd);
                        return log_error_errno(r, "Failed to listen on %s: %m", name);
                }
                l = &p->listeners[p->n_listeners++];
                l->proxy = p;
                l->fd = fd;
                l->tls = c->listen_tls[i];
                l->redirect = c->listen_redirect[i];
                (void)event_assign(&l->ev, p->base, fd, EV_READ | EV_PERSIST, proxy_accept_cb, l);
                log_info("Listening on %s%s", name, l->tls ? " (TLS)" : l->redirect ? " (redirect to https)" : "");
        }
        p->accepting = false;
        proxy_update_accepting(p);
        return 0;
}

void proxy_set_config(struct proxy *p, const struct config *c)
{
        p->cfg = c;
        proxy_update_accepting(p); /* max_connections may have changed */
}

void proxy_drain(struct proxy *p, void (*done)(void *userdata), void *userdata)
{
        p->draining = true;
        p->drain_done = done;
        p->drain_userdata = userdata;
        for (size_t i = 0; i < p->n_listeners; i++) {
                if (p->listeners[i].fd < 0)
                        continue;
                (void)event_del(&p->listeners[i].ev);
                (void)close(p->listeners[i].fd);
                p->listeners[i].fd = -1;
        }
        p->accepting = false;
        DLIST_FOREACH_SAFE(clients, c, next, p->clients) {
                if (c->state == CLIENT_IDLE && evbuffer_get_length(c->in) == 0)
                        client_close(c);
                else if (c->txn)
                        c->txn->close_after = true;
        }
        if (p->stats.connections == 0 && p->drain_done) {
                p->drain_done = NULL;
                done(userdata);
        }
}

const struct proxy_stats *proxy_get_stats(const struct proxy *p)
{
        return &p->stats;
}

void proxy_add_stats(const struct proxy *p, struct proxy_stats *ret)
{
        const struct proxy_stats *s = &p->stats;

        ret->connections += COUNTER_GET(s->connections);
        ret->connections_total += COUNTER_GET(s->connections_total);
        ret->requests_total += COUNTER_GET(s->requests_total);
        ret->retries_total += COUNTER_GET(s->retries_total);
        ret->errors_total += COUNTER_GET(s->errors_total);
        for (size_t i = 0; i < ELEMENTSOF(s->rejected); i++)
                ret->rejected[i] += COUNTER_GET(s->rejected[i]);
        latency_merge(&ret->latency, &s->latency);
}

void proxy_add_tls_stats(const struct proxy *p, struct tls_stats *ret)
{
        tls_stats_add(ret, &p->tls_stats);
}

uint64_t proxy_connections(const struct proxy *p)
{
        return COUNTER_GET(p->stats.connections);
}

void proxy_share_accept_pauses(struct proxy *p, unsigned *counter)
{
        acceptpause_share(&p->accept_pause, counter);
}

void proxy_set_view(struct proxy *p, struct pool_view *v)
{
        pool_view_unref(p->view);
        p->view = v;
}

struct proxy *proxy_free(struct proxy *p)
{
        if (!p)
                return NULL;
        p->drain_done = NULL;
        while (p->clients)
                client_close(p->clients);
        for (size_t i = 0; i < p->n_listeners; i++)
                if (p->listeners[i].fd >= 0) {
                        (void)event_del(&p->listeners[i].ev);
                        (void)close(p->listeners[i].fd);
                }
        /* Idle upstream connections, including those of backends a reload removed. */
        while (p->upstreams)
                upstream_close(p->upstreams);
        while (p->free_txns) {
                struct txn *t = p->free_txns;

                p->free_txns = t->next_free;
                evbuffer_free(t->replay);
                free(t);
        }
        acceptpause_done(&p->accept_pause);
        p->backend_tls = tls_client_free(p->backend_tls);
        pool_view_unref(p->view);
        free(p);
        return NULL;
}
