/* The HTTP/1.1 server engine (see server.h): listeners, connections, and the requests read from them.
 *
 * Objects, all on one event loop, no locks:
 * - struct http_server owns its listeners and every connection (a list), the accept backoff, and the
 *   request-id counter.
 * - struct http_conn is one accepted connection: its socket, input and output buffers, one timer, the
 *   parser, and at most one request (struct http_request) at a time.
 * - struct http_request is created when a head is complete (or when the engine refuses one), owned by the
 *   connection while its body arrives, then by the application until http_request_respond() frees it.
 *
 * Connection states: IDLE (between requests) -> HEAD (a head arriving, bounded by its deadline) -> BODY
 * (its body arriving, bounded by its deadline) -> HANDLER (with the application) -> IDLE, or CLOSING (the
 * answer goes out, then the connection closes). The one timer means, by state: IDLE, HANDLER, CLOSING:
 * the client took nothing of its answer for idle_timeout (or, with nothing queued in IDLE, the keep-alive
 * timeout; in CLOSING after the answer, the lingering close's end); HEAD and BODY: their deadlines, fixed
 * when the state starts and never pushed back by what trickles in.
 *
 * Reading: while HEAD and BODY every read is parsed at once, so input holds at most one head (the parse
 * refuses more than max_head_size) plus one read; in HANDLER the socket is read only while the input holds
 * less than max_head_size (pipelined requests wait there, and a close is noticed); nothing is read while
 * the output holds more than HTTP_SERVER_OUTPUT_MAX bytes. I/O is speculative: answers are written as they
 * are queued (pipelined ones together, once the input is parsed), and the write event is armed only when
 * the kernel refuses some.
 *
 * At the connection limit the listeners are unwatched, not accept()ed and closed: the kernel's backlog then
 * holds newcomers until a connection ends, and the deadlines make sure one ends (a held connection lasts at
 * most head_timeout, body_timeout or idle_timeout at a time), whereas accept-and-close would spend two
 * system calls per attempt of a client that retries at once, and refuse clients that a moment's wait
 * would have served.
 *
 * A refused request's answer closes the connection. When the client may still be sending (the rest of a
 * body, pipelined requests), the close lingers (our side shut, what arrives read and dropped, at most
 * HTTP_LINGER_MAX bytes for HTTP_LINGER_USEC), so the client reads the answer rather than a reset; not
 * after a 408, whose client is too slow to wait for.
 *
 * Lifetimes: a callback may close the connection it runs for. Closing releases the socket at once and
 * the memory when no callback runs on it any more (`busy`). A request with the application when its
 * connection closes is left to it (req->conn = NULL). */
#include "http/server.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/acceptpause.h"
#include "common/list.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/parse.h"
#include "common/sockio.h"
#include "common/tlsio.h"

#define HTTP_READ_SIZE    (16 * 1024)
#define HTTP_ACCEPT_BATCH 64
#define HTTP_REFUSED_LOG_USEC (10 * USEC_PER_SEC) /* at most one line this often about a client's share */
#define HTTP_BACKLOG      4096
#define HTTP_LINGER_MAX   (1024 * 1024)
#define HTTP_LINGER_USEC  (2 * USEC_PER_SEC)
#define HTTP_BODY_FRAMING (64 * 1024) /* chunk framing allowed on top of the body limit */

enum http_conn_state {
        HTTP_CONN_IDLE,
        HTTP_CONN_HEAD,
        HTTP_CONN_BODY,
        HTTP_CONN_HANDLER,
        HTTP_CONN_CLOSING,
};

struct http_conn {
        struct http_server *server;
        int fd;
        enum http_conn_state state;
        struct event rev, wev, timer;
        struct evbuffer *in, *out;
        SSL *ssl;                     /* on a TLS server (http_server_set_tls()); NULL for plain HTTP */
        struct http_request *req;     /* being read (HEAD, BODY), or with the application (HANDLER) */
        http_parser parser;
        uint64_t head_start_usec;     /* the current head's first byte (the accept for the first head) */
        uint64_t progress_usec;       /* the client last took some of its answers (or they began to wait) */
        uint64_t body_start_usec;     /* BODY: when the body's deadline began */
        uint64_t body_limit;
        uint64_t body_raw;            /* body bytes as sent, chunk framing included */
        uint64_t linger_left;
        struct netaddr peer;
        char ip[NETADDR_STRLEN];
        unsigned busy;
        bool dead;
        bool reading;
        bool writing;
        bool processing;              /* inside http_conn_process(): answers are flushed at its end */
        bool head_armed;              /* the timer runs the next head's deadline already (from the accept) */
        bool read_eof;
        bool close_after;             /* close once the answer in progress is out */
        bool linger_wanted;           /* a refused request's client may still be sending its body */
        bool no_linger;               /* refused for its slowness (408): no lingering close */
        bool lingering;               /* CLOSING: what the client still sends is read and dropped */
        bool shut;                    /* lingering and the answer is out: our side is shut down */
        bool handshaking;             /* TLS: the handshake is not done yet (state IDLE meanwhile) */
        bool tls_broken;              /* TLS: a fatal error, no close_notify may be sent */
        DLIST_FIELDS(struct http_conn, conns);
};

struct http_listener {
        int fd;
        struct event ev;
        const char *what;
};

struct http_server {
        struct event_base *base;
        struct http_server_limits limits;
        struct http_server_ops ops;
        void *userdata;
        struct http_listener listeners[HTTP_SERVER_LISTEN_MAX];
        size_t n_listeners;
        SSL_CTX *tls;                 /* new connections speak TLS with this context; one reference */
        struct evbuffer *tls_in;      /* TLS reads land here, then go through readbuf (see below) */
        bool accepting;
        bool shutting_down;
        struct acceptpause pause;
        DLIST_HEAD(struct http_conn, conns);
        size_t n_conns;
        uint64_t refused_per_client;  /* accepted and closed at once: their address held its share */
        uint64_t refused_logged_usec; /* when the last line about it was logged */
        char id_prefix[17];
        uint64_t id_counter;
        struct http_head scratch;     /* heads are parsed here until complete: a held connection costs no
                                       * struct http_head of its own */
        time_t date_sec;
        char date[64];                /* "Date: ...\r\n" of date_sec */
        /* libevent common timeouts (O(1) queues instead of the timer heap) for the configured durations */
        const struct timeval *tv_head, *tv_body, *tv_idle, *tv_linger;
        /* Every read lands here first and only what came is copied to the connection's input: a held
         * connection then costs the bytes it sent, not a read-sized buffer each. */
        char readbuf[HTTP_READ_SIZE];
};

static void http_conn_process(struct http_conn *c);
static void http_conn_flush(struct http_conn *c);
static void http_conn_close(struct http_conn *c);
static void http_conn_reject(struct http_conn *c, unsigned status, const char *reason);

/* ---- helpers: timers, request ids, the Date field ---- */

static const struct timeval *http_common_timeout(struct event_base *base, uint64_t usec)
{
        struct timeval tv = timeval_from_usec(usec);

        return event_base_init_common_timeout(base, &tv);
}

/* Arms the connection's timer with one of the server's common timeouts, or <usec> when NULL. While answers
 * wait to go out, the timer never runs past idle_timeout after the client last took some of them: what
 * happens meanwhile (requests answered, a head or body arriving) does not push that back, or a client that
 * reads nothing would be held for as long as it keeps the application busy. */
static void http_conn_arm(struct http_conn *c, const struct timeval *common, uint64_t usec)
{
        struct timeval tv;

        if (evbuffer_get_length(c->out) > 0) {
                uint64_t now = now_usec(), stall_end = c->progress_usec + c->server->limits.idle_timeout_usec;

                if (stall_end < now + usec) {
                        tv = timeval_from_usec(stall_end > now ? stall_end - now : 0);
                        (void)event_add(&c->timer, &tv);
                        return;
                }
        }
        if (common) {
                (void)event_add(&c->timer, common);
                return;
        }
        tv = timeval_from_usec(usec);
        (void)event_add(&c->timer, &tv);
}

/* With the application (HANDLER) the connection has no deadline of its own, but earlier answers still
 * waiting to go out keep theirs. */
static void http_conn_handler_timer(struct http_conn *c)
{
        if (evbuffer_get_length(c->out) > 0)
                http_conn_arm(c, c->server->tv_idle, c->server->limits.idle_timeout_usec);
        else
                (void)event_del(&c->timer);
}

/* Whether the client has taken nothing of its waiting answers for idle_timeout. */
static bool http_conn_stalled(const struct http_conn *c)
{
        return evbuffer_get_length(c->out) > 0 &&
               now_usec() >= c->progress_usec + c->server->limits.idle_timeout_usec;
}

/* Writes "<random prefix>-<counter in hex>" into <buf>. */
static void http_server_make_request_id(struct http_server *s, char buf[static HTTP_SERVER_REQUEST_ID_MAX + 1])
{
        static const char hex[] = "0123456789abcdef";
        uint64_t n = ++s->id_counter;
        char tmp[16];
        size_t len = sizeof(s->id_prefix) - 1, k = 0;

        memcpy(buf, s->id_prefix, len);
        buf[len++] = '-';
        do {
                tmp[k++] = hex[n & 0xf];
                n >>= 4;
        } while (n > 0);
        while (k > 0)
                buf[len++] = tmp[--k];
        buf[len] = '\0';
}

/* The Date field (RFC 9110 6.6.1), formatted once a second. */
static const char *http_server_date(struct http_server *s)
{
        time_t now = time(NULL);
        struct tm tm;

        if (now != s->date_sec && gmtime_r(&now, &tm)) {
                size_t n = strftime(s->date, sizeof(s->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);

                s->date_sec = now;
                if (n == 0)
                        s->date[0] = '\0';
        }
        return s->date;
}

/* ---- requests ---- */

/* A request of <c>'s, unparsed: its head is left unwritten (most of its size, and most requests have few
 * fields), see http_request_set_head(). */
static struct http_request *http_request_new(struct http_conn *c)
{
        struct http_request *req = malloc(sizeof(*req));

        if (!req)
                return NULL;
        memset(req, 0, offsetof(struct http_request, head));
        req->server = c->server;
        req->conn = c;
        req->method_name = "";
        req->path = "";
        req->body = "";
        req->start_usec = c->head_start_usec;
        req->peer_addr = c->peer;
        memcpy(req->peer, c->ip, sizeof(req->peer));
        return req;
}

static void http_request_free(struct http_request *req)
{
        if (!req)
                return;
        if (req->body_buf)
                evbuffer_free(req->body_buf);
        free(req->buf);
        free(req);
}

/* Copies the parsed head <h> into <req>: the struct without the fields it does not use. */
static void http_request_set_head(struct http_request *req, const struct http_head *h)
{
        struct http_head *d = &req->head;
        size_t after = offsetof(struct http_head, fields) + sizeof(h->fields);

        memcpy(d, h, offsetof(struct http_head, fields));
        memcpy(d->fields, h->fields, h->n_fields * sizeof(h->fields[0]));
        memcpy((char *)d + after, (const char *)h + after, sizeof(*h) - after);
}

/* Sets up <req>'s view of the head at <buf> (<len> bytes, copied): method, path, query, request id, and
 * every field value NUL-terminated in the copy. Returns 0 or -ENOMEM. */
static int http_request_take_head(struct http_request *req, const char *buf, size_t len)
{
        struct http_head *h = &req->head;
        char *t, *q;

        req->buf = malloc(len + 1);
        if (!req->buf)
                return -ENOMEM;
        memcpy(req->buf, buf, len);
        req->buf[len] = '\0';
        req->parsed = true;
        req->method = h->method;
        req->method_name = http_method_str(h->method);
        req->head_only = h->method == HTTP_HEAD;

        /* The bytes after a target or a trimmed value (SP, HTAB, CR) are no part of anything we read. */
        t = req->buf + h->target_off;
        t[h->target_len] = '\0';
        for (size_t i = 0; i < h->n_fields; i++)
                req->buf[h->fields[i].value_off + h->fields[i].value_len] = '\0';

        if (t[0] != '/' && t[0] != '*') {
                /* absolute-form (http.c checked it): the path starts after the authority */
                char *a = strstr(t, "://");

                t = a ? a + 3 + strcspn(a + 3, "/?") : t + strlen(t);
        }
        q = strchr(t, '?');
        if (q) {
                *q = '\0';
                req->query = q + 1;
        }
        req->path = t;

        if (h->request_id >= 0) {
                const struct http_field *f = &h->fields[h->request_id];

                memcpy(req->request_id, req->buf + f->value_off, f->value_len + 1);
        } else
                http_server_make_request_id(req->server, req->request_id);
        return 0;
}

const char *http_request_header(const struct http_request *req, const char *name)
{
        size_t n = strlen(name);

        if (!req->parsed)
                return NULL;
        for (size_t i = 0; i < req->head.n_fields; i++)
                if (http_field_name_eq(req->buf, &req->head.fields[i], name, n))
                        return req->buf + req->head.fields[i].value_off;
        return NULL;
}

int http_request_header_each(const struct http_request *req, const char *name,
                             int (*fn)(const char *value, void *userdata), void *userdata)
{
        size_t n = strlen(name);

        if (!req->parsed)
                return 0;
        for (size_t i = 0; i < req->head.n_fields; i++)
                if (http_field_name_eq(req->buf, &req->head.fields[i], name, n)) {
                        int r = fn(req->buf + req->head.fields[i].value_off, userdata);

                        if (r > 0)
                                return r;
                }
        return 0;
}

size_t http_query_count(const char *query)
{
        size_t n = 1;

        if (!query || !*query)
                return 0;
        for (; *query; query++)
                n += *query == '&';
        return n;
}

int http_parse_query(const char *query, char *buf, struct http_param *params, size_t max)
{
        size_t n = 0, len;
        char *p = buf;

        if (!query || !*query)
                return 0;
        len = strlen(query);
        memcpy(buf, query, len + 1);
        for (;;) {
                char *part = p, *end = part + strcspn(part, "&"), *eq, *w;
                bool last = *end == '\0';

                *end = '\0';
                eq = strchr(part, '=');
                if (!eq || eq == part)
                        return -EINVAL;
                if (n >= max)
                        return -E2BIG;
                *eq = '\0';
                params[n].name = part;
                params[n].value = w = eq + 1;
                for (const char *r = eq + 1; *r; r++) {
                        char c = *r;

                        if (c == '+')
                                c = ' ';
                        else if (c == '%' && parse_hex_digit(r[1]) >= 0 && parse_hex_digit(r[2]) >= 0) {
                                c = (char)(parse_hex_digit(r[1]) * 16 + parse_hex_digit(r[2]));
                                r += 2;
                        }
                        *w++ = c; /* a decoded %00 ends the value as C reads it: the rest is ignored */
                }
                *w = '\0';
                n++;
                if (last)
                        return (int)n;
                p = end + 1;
        }
}

/* ---- connections: watching sockets, lifetimes ---- */

static void http_conn_set_reading(struct http_conn *c, bool on)
{
        if (c->reading == on || c->dead)
                return;
        c->reading = on;
        if (on) {
                (void)event_add(&c->rev, NULL);
                /* Decrypted bytes OpenSSL holds wake no socket event. */
                if (c->ssl && !c->handshaking && tls_has_pending(c->ssl))
                        event_active(&c->rev, EV_READ, 0);
        } else
                (void)event_del(&c->rev);
}

static void http_conn_set_writing(struct http_conn *c, bool on)
{
        if (c->writing == on || c->dead)
                return;
        c->writing = on;
        if (on)
                (void)event_add(&c->wev, NULL);
        else
                (void)event_del(&c->wev);
}

/* Reads exactly when the state wants input and the buffers have room (see the top). */
static void http_conn_update_reading(struct http_conn *c)
{
        const struct http_server *s = c->server;
        bool want;

        if (c->dead)
                return;
        if (c->read_eof)
                want = false;
        else if (c->state == HTTP_CONN_CLOSING)
                want = c->lingering;
        else if (evbuffer_get_length(c->out) >= HTTP_SERVER_OUTPUT_MAX)
                want = false;
        else if (c->state == HTTP_CONN_HANDLER || c->state == HTTP_CONN_IDLE)
                want = evbuffer_get_length(c->in) < s->limits.max_head_size;
        else
                want = true;
        http_conn_set_reading(c, want);
}

static void http_conn_enter(struct http_conn *c)
{
        c->busy++;
}

static void http_conn_destroy(struct http_conn *c)
{
        evbuffer_free(c->in);
        evbuffer_free(c->out);
        free(c);
}

static void http_conn_leave(struct http_conn *c)
{
        if (--c->busy == 0 && c->dead)
                http_conn_destroy(c);
}

static void http_server_update_accepting(struct http_server *s)
{
        bool want = !s->shutting_down && !s->pause.paused && s->n_conns < s->limits.max_connections;

        if (want == s->accepting)
                return;
        s->accepting = want;
        for (size_t i = 0; i < s->n_listeners; i++) {
                if (want)
                        (void)event_add(&s->listeners[i].ev, NULL);
                else
                        (void)event_del(&s->listeners[i].ev);
        }
}

/* Closes the socket now; the memory goes when no callback runs on the connection. A request with the
 * application is left to it; one still being read was never answered and goes. */
static void http_conn_close(struct http_conn *c)
{
        struct http_server *s = c->server;

        if (c->dead)
                return;
        (void)event_del(&c->rev);
        (void)event_del(&c->wev);
        (void)event_del(&c->timer);
        c->reading = c->writing = false;
        if (c->ssl) {
                if (!c->tls_broken)
                        tls_shutdown(c->ssl);
                SSL_free(c->ssl);
                c->ssl = NULL;
        }
        (void)close(c->fd);
        c->fd = -1;
        c->dead = true;
        if (c->req) {
                if (c->state == HTTP_CONN_HANDLER)
                        c->req->conn = NULL;
                else
                        http_request_free(c->req);
                c->req = NULL;
        }
        DLIST_REMOVE(conns, s->conns, c);
        s->n_conns--;
        http_server_update_accepting(s);
        if (c->busy == 0)
                http_conn_destroy(c);
}

/* Starts waiting for the next request, or closing when that is what comes next. */
static void http_conn_next(struct http_conn *c)
{
        struct http_server *s = c->server;

        if (c->close_after || s->shutting_down) {
                c->state = HTTP_CONN_CLOSING;
                /* Linger when the client may still be sending: unread input, or a body not read. */
                c->lingering = !c->read_eof && !c->no_linger &&
                               (c->linger_wanted || evbuffer_get_length(c->in) > 0);
                (void)evbuffer_drain(c->in, evbuffer_get_length(c->in));
                c->linger_left = HTTP_LINGER_MAX;
                http_conn_arm(c, s->tv_idle, s->limits.idle_timeout_usec);
                return;
        }
        c->state = HTTP_CONN_IDLE;
        c->head_armed = false;
        http_conn_arm(c, s->tv_idle, s->limits.idle_timeout_usec);
}

/* ---- answers ---- */

/* A head being written, on the stack: appends past its end are dropped and noted. */
struct http_text {
        char buf[HTTP_SERVER_HEADERS_MAX];
        size_t len;
        bool over;
};

static void http_put(struct http_text *t, const char *s, size_t n)
{
        if (n > sizeof(t->buf) - t->len) {
                t->over = true;
                return;
        }
        memcpy(t->buf + t->len, s, n);
        t->len += n;
}

static void http_puts(struct http_text *t, const char *s)
{
        http_put(t, s, strlen(s));
}

static void http_put_uint(struct http_text *t, uint64_t v)
{
        char tmp[24];
        size_t n = 0;

        do {
                tmp[sizeof(tmp) - ++n] = (char)('0' + v % 10);
                v /= 10;
        } while (v > 0);
        http_put(t, tmp + sizeof(tmp) - n, n);
}

/* Appends the answer's head and body to <c>'s output. Returns 0 or -ENOMEM. */
static int http_conn_write_response(struct http_conn *c, const struct http_request *req,
                                    const struct http_response *resp, bool close)
{
        struct http_server *s = c->server;
        bool no_body = resp->status == 204 || resp->status == 304 || (resp->status >= 100 && resp->status < 200);
        bool http10 = req->parsed && req->head.minor == 0;
        struct http_text t;

        t.len = 0;
        t.over = false;
        http_puts(&t, "HTTP/1.1 ");
        http_put_uint(&t, resp->status);
        http_put(&t, " ", 1);
        http_puts(&t, http_status_reason(resp->status));
        http_put(&t, "\r\n", 2);
        http_puts(&t, http_server_date(s));
        if (!no_body) {
                http_puts(&t, "Content-Length: ");
                http_put_uint(&t, resp->body_len);
                http_put(&t, "\r\n", 2);
        }
        if (resp->content_type && !no_body) {
                http_puts(&t, "Content-Type: ");
                http_puts(&t, resp->content_type);
                http_put(&t, "\r\n", 2);
        }
        http_puts(&t, "X-Request-Id: ");
        http_puts(&t, req->request_id);
        http_put(&t, "\r\n", 2);
        if (close)
                http_puts(&t, "Connection: close\r\n");
        else if (http10)
                http_puts(&t, "Connection: keep-alive\r\n");
        if (resp->headers)
                http_puts(&t, resp->headers);
        http_put(&t, "\r\n", 2);
        if (t.over) /* more than HTTP_SERVER_HEADERS_MAX bytes of fields */
                return -EINVAL;
        if (evbuffer_get_length(c->out) == 0)
                c->progress_usec = now_usec(); /* the client's time to take it starts now */
        if (evbuffer_add(c->out, t.buf, t.len) < 0)
                return -ENOMEM;
        if (!no_body && !req->head_only && resp->body_len > 0 &&
            evbuffer_add(c->out, resp->body, resp->body_len) < 0)
                return -ENOMEM;
        return 0;
}

void http_request_respond(struct http_request *req, const struct http_response *resp)
{
        struct http_server *s = req->server;
        struct http_conn *c = req->conn;

        if (c) {
                bool close;

                assert(c->req == req && c->state == HTTP_CONN_HANDLER);
                c->req = NULL;
                close = c->close_after || s->shutting_down || !req->parsed || !req->head.keep_alive;
                if (close)
                        c->close_after = true;
                if (http_conn_write_response(c, req, resp, close) < 0) {
                        log_debug("Could not queue the answer to %s for %s: closing", req->request_id, c->ip);
                        http_conn_close(c);
                        c = NULL;
                }
        }
        if (s->ops.access)
                s->ops.access(req, resp->status, resp->body_len, s->userdata);
        http_request_free(req);
        if (!c)
                return;

        http_conn_next(c);
        if (c->processing)
                return; /* the loop that called the application goes on, and flushes */
        http_conn_enter(c);
        http_conn_flush(c);
        if (!c->dead)
                http_conn_process(c);
        http_conn_leave(c);
}

static void http_default_error(struct http_request *req, unsigned status, const char *reason)
{
        char body[256];
        int n = snprintf(body, sizeof(body), "%u %s: %s\n", status, http_status_reason(status), reason);

        http_request_respond(req, &(struct http_response){
                                          .status = status,
                                          .content_type = "text/plain; charset=utf-8",
                                          .body = body,
                                          .body_len = n < 0 ? 0 : MIN((size_t)n, sizeof(body) - 1),
                                  });
}

/* The engine refuses the request being read: its answer (the application's, through ops.error) closes the
 * connection. */
static void http_conn_reject(struct http_conn *c, unsigned status, const char *reason)
{
        struct http_server *s = c->server;
        struct http_request *req = c->req;

        log_debug("Refused a request from %s: %u %s", c->ip, status, reason);
        if (!req) {
                req = http_request_new(c);
                if (!req) {
                        http_conn_close(c);
                        return;
                }
                http_server_make_request_id(s, req->request_id);
                c->req = req;
        }
        c->close_after = true;
        /* What the client still sends after the answer is dropped (a lingering close), except after a 408:
         * that client is too slow to wait for. A parsed request is refused during its body. */
        c->no_linger = status == 408;
        c->linger_wanted = req->parsed;
        c->state = HTTP_CONN_HANDLER;
        http_conn_handler_timer(c);
        if (s->ops.error)
                s->ops.error(req, status, reason, s->userdata);
        else
                http_default_error(req, status, reason);
}

/* Whether the bytes at <buf> start with a method that is a token but not one http_parser knows: 501 rather
 * than 400 (RFC 9110 9.1). */
static bool http_unknown_method(const char *buf, size_t len)
{
        size_t i = 0, n;

        while (i + 1 < len && buf[i] == '\r' && buf[i + 1] == '\n')
                i += 2;
        buf += i;
        len -= i;
        n = 0;
        while (n < len && n < 32 && buf[n] != ' ')
                n++;
        if (n == 0 || n >= len || n >= 32 || !http_is_token(buf, n))
                return false;
        for (int m = 0; m < 64; m++) {
                const char *name = http_method_str((enum http_method)m);

                if (strlen(name) == n && memcmp(name, buf, n) == 0)
                        return false;
        }
        return true;
}

/* Hands the complete request to the application. */
static void http_conn_dispatch(struct http_conn *c)
{
        struct http_server *s = c->server;
        struct http_request *req = c->req;

        if (req->body_buf) {
                size_t len = evbuffer_get_length(req->body_buf);
                unsigned char *p;

                if (evbuffer_add(req->body_buf, "", 1) < 0 || !(p = evbuffer_pullup(req->body_buf, -1))) {
                        http_conn_reject(c, 500, "out of memory");
                        return;
                }
                req->body = (const char *)p;
                req->body_len = len;
        }
        c->state = HTTP_CONN_HANDLER;
        http_conn_handler_timer(c);
        s->ops.request(req, s->userdata);
}

/* A head is complete at the start of the input (<buf>, <len> bytes): the request is set up, and its body
 * awaited or it goes to the application. */
static void http_conn_start(struct http_conn *c, const char *buf, size_t len)
{
        struct http_server *s = c->server;
        const char *reason = "malformed body";
        struct http_request *req;
        uint64_t limit = 0;
        int r;

        req = http_request_new(c);
        if (!req) {
                http_conn_close(c);
                return;
        }
        http_request_set_head(req, &s->scratch);
        if (http_request_take_head(req, buf, len) < 0) {
                http_request_free(req);
                http_conn_close(c);
                return;
        }
        c->req = req;
        (void)evbuffer_drain(c->in, len);
        if (!req->head.keep_alive)
                c->close_after = true;

        r = http_body_begin(&c->parser, &req->head, &reason);
        if (r < 0) {
                http_conn_reject(c, 400, reason);
                return;
        }
        if (r == 1) {
                http_conn_dispatch(c);
                return;
        }
        if (s->ops.body_limit)
                limit = s->ops.body_limit(req, s->userdata);
        c->body_limit = limit > 0 ? limit : s->limits.max_body_size;
        c->body_raw = 0;
        if (req->head.body == HTTP_BODY_LENGTH && req->head.content_length > c->body_limit) {
                http_conn_reject(c, 413, "request body too large");
                return;
        }
        req->body_buf = evbuffer_new();
        if (!req->body_buf) {
                http_conn_close(c);
                return;
        }
        /* Asked to confirm before the body is sent, and nothing of it came yet. */
        if (req->head.expect_continue && req->head.minor == 1 && evbuffer_get_length(c->in) == 0) {
                if (evbuffer_get_length(c->out) == 0)
                        c->progress_usec = now_usec();
                (void)evbuffer_add(c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
        c->state = HTTP_CONN_BODY;
        c->body_start_usec = now_usec();
        http_conn_arm(c, s->tv_body, s->limits.body_timeout_usec);
}

/* Feeds the input to the body parser. Returns 1 when the body is complete, 0 for more, < 0 when the
 * request was refused. */
static int http_conn_read_body(struct http_conn *c)
{
        struct http_request *req = c->req;

        while (evbuffer_get_length(c->in) > 0) {
                struct evbuffer_iovec v;
                const char *reason = "malformed body";
                size_t consumed = 0;
                bool chunked = req->head.body == HTTP_BODY_CHUNKED;
                int r;

                if (evbuffer_peek(c->in, -1, NULL, &v, 1) < 1)
                        break;
                r = http_body_feed(&c->parser, &req->head, v.iov_base, v.iov_len, chunked ? req->body_buf : NULL,
                                   &consumed, &reason);
                if (r < 0) {
                        http_conn_reject(c, 400, reason);
                        return -EBADMSG;
                }
                if (chunked)
                        (void)evbuffer_drain(c->in, consumed);
                else if (evbuffer_remove_buffer(c->in, req->body_buf, consumed) != (int)consumed) {
                        http_conn_reject(c, 500, "out of memory");
                        return -ENOMEM;
                }
                c->body_raw += consumed;
                if (evbuffer_get_length(req->body_buf) > c->body_limit ||
                    c->body_raw > 2 * c->body_limit + HTTP_BODY_FRAMING) {
                        http_conn_reject(c, 413, "request body too large");
                        return -EFBIG;
                }
                if (r == 1)
                        return 1;
        }
        return 0;
}

/* Parses what the input holds, as far as the state allows, then sets up the I/O for what comes next. */
static void http_conn_process(struct http_conn *c)
{
        struct http_server *s = c->server;

        c->processing = true;
        while (!c->dead) {
                size_t len = evbuffer_get_length(c->in);

                switch (c->state) {
                case HTTP_CONN_IDLE:
                        if (len == 0) {
                                if (c->read_eof) { /* every request it sent is answered: close once out */
                                        c->close_after = true;
                                        http_conn_next(c);
                                }
                                goto io;
                        }
                        if (evbuffer_get_length(c->out) >= HTTP_SERVER_OUTPUT_MAX)
                                goto io; /* the client reads its answers first */
                        c->state = HTTP_CONN_HEAD;
                        if (!c->head_armed) {
                                c->head_start_usec = now_usec();
                                http_conn_arm(c, s->tv_head, s->limits.head_timeout_usec);
                        }
                        c->head_armed = false;
                        break;
                case HTTP_CONN_HEAD: {
                        const char *reason = "malformed request";
                        const char *buf;
                        size_t max = s->limits.max_head_size;
                        int r;

                        buf = (const char *)evbuffer_pullup(c->in, (ev_ssize_t)MIN(len, max + 1));
                        if (!buf) {
                                http_conn_close(c);
                                goto io;
                        }
                        r = http_parse_request(&c->parser, buf, len, max, &s->scratch, &reason);
                        if (r == 0) {
                                if (c->read_eof) { /* half a head and the client is done: nothing to */
                                        c->close_after = true; /* answer, but the earlier answers go out */
                                        http_conn_next(c);
                                }
                                goto io;
                        }
                        if (r == -EMSGSIZE)
                                http_conn_reject(c, 431, "request head too large");
                        else if (r == -ENOTSUP)
                                http_conn_reject(c, s->scratch.major != 1 ? 505 : 501, reason);
                        else if (r < 0 && http_unknown_method(buf, MIN(len, max)))
                                http_conn_reject(c, 501, "unknown method");
                        else if (r < 0)
                                http_conn_reject(c, 400, reason);
                        else
                                http_conn_start(c, buf, (size_t)r);
                        break;
                }
                case HTTP_CONN_BODY: {
                        int r = http_conn_read_body(c);

                        if (r < 0)
                                break;
                        if (r == 0) {
                                if (c->read_eof)
                                        http_conn_close(c); /* the client stopped halfway */
                                goto io;
                        }
                        http_conn_dispatch(c);
                        break;
                }
                case HTTP_CONN_HANDLER:
                        goto io;
                case HTTP_CONN_CLOSING:
                        if (len > 0) {
                                (void)evbuffer_drain(c->in, len);
                                if (len >= c->linger_left) {
                                        http_conn_close(c);
                                        goto io;
                                }
                                c->linger_left -= len;
                        }
                        goto io;
                }
        }
io:
        c->processing = false;
        if (c->dead)
                return;
        http_conn_flush(c);
        http_conn_update_reading(c);
}

/* Writes what is queued; arms the write event for what the kernel does not take. */
static void http_conn_flush(struct http_conn *c)
{
        struct http_server *s = c->server;
        ssize_t n;

        if (c->dead)
                return;
        if (evbuffer_get_length(c->out) > 0) {
                n = c->ssl ? tls_write(c->ssl, c->out) : sockio_write(c->fd, c->out);
                if (n < 0) {
                        c->tls_broken = true;
                        http_conn_close(c);
                        return;
                }
                if (n > 0) {
                        c->progress_usec = now_usec();
                        if (c->state != HTTP_CONN_HEAD && c->state != HTTP_CONN_BODY)
                                http_conn_arm(c, s->tv_idle, s->limits.idle_timeout_usec); /* progress */
                }
        }
        if (evbuffer_get_length(c->out) > 0) {
                http_conn_set_writing(c, true);
                return;
        }
        http_conn_set_writing(c, false);
        if (c->state == HTTP_CONN_HANDLER)
                (void)event_del(&c->timer); /* the answer is out; the application has the next request */
        if (c->state != HTTP_CONN_CLOSING)
                return;
        if (!c->lingering) {
                http_conn_close(c);
                return;
        }
        if (!c->shut) {
                c->shut = true;
                if (c->ssl)
                        tls_shutdown(c->ssl);
                (void)shutdown(c->fd, SHUT_WR);
                http_conn_arm(c, s->tv_linger, HTTP_LINGER_USEC);
        }
}

/* ---- callbacks ---- */

/* Drives the TLS handshake; the connection's head deadline (from the accept) bounds it. */
static void http_conn_handshake(struct http_conn *c)
{
        int err = 0, r = tls_handshake_step(c->ssl, &err);

        if (r < 0) {
                log_debug("TLS handshake with %s failed: %s", c->ip,
                          err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN ? "the client closed" :
                                                                                   "protocol error");
                ERR_clear_error();
                c->tls_broken = true;
                http_conn_close(c);
                return;
        }
        http_conn_set_writing(c, r == TLS_WANT_WRITE);
        if (r != TLS_DONE)
                return;
        c->handshaking = false;
        if (tls_has_pending(c->ssl)) /* the first request came with the handshake's last flight */
                event_active(&c->rev, EV_READ, 0);
}

/* Reads what the socket has into the input: > 0 bytes, 0 at the end, -EAGAIN, or -errno. *<again> when
 * more waits inside OpenSSL. */
static ssize_t http_conn_recv(struct http_conn *c, bool *again)
{
        ssize_t n;

        *again = false;
        if (c->ssl) {
                /* Through the server's buffers, as plain reads: decrypting into the connection's input
                 * would leave it a read-sized chain, 16 KiB held by each connection that sent a few bytes
                 * of a head. */
                struct http_server *s = c->server;

                n = tls_read(c->ssl, s->tls_in, sizeof(s->readbuf), again);
                if (n < 0 && n != -EAGAIN)
                        c->tls_broken = true;
                if (n > 0 && (evbuffer_remove(s->tls_in, s->readbuf, (size_t)n) != n ||
                              evbuffer_add(c->in, s->readbuf, (size_t)n) < 0))
                        return -ENOMEM;
                return n;
        }
        do
                n = recv(c->fd, c->server->readbuf, sizeof(c->server->readbuf), 0);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        if (n > 0 && evbuffer_add(c->in, c->server->readbuf, (size_t)n) < 0)
                return -ENOMEM;
        return n;
}

static void http_conn_read_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct http_conn *c = userdata;
        bool again;
        ssize_t n;

        http_conn_enter(c);
        if (c->handshaking) {
                http_conn_handshake(c);
                goto out;
        }
        /* A wake-up for data OpenSSL holds may come after reading stopped: it waits for its turn. */
        if (c->ssl && !c->reading)
                goto out;
        n = http_conn_recv(c, &again);
        if (n == -EAGAIN)
                goto out;
        if (n < 0 || (n == 0 && c->state == HTTP_CONN_CLOSING)) {
                http_conn_close(c);
                goto out;
        }
        if (n == 0) {
                /* The client is done sending: every request it sent is still answered, pipelined ones too,
                 * then the connection closes (http_conn_process(), once the input is used up). */
                c->read_eof = true;
                http_conn_set_reading(c, false);
        }
        http_conn_process(c);
        if (again && !c->dead && c->reading)
                event_active(&c->rev, EV_READ, 0);
out:
        http_conn_leave(c);
}

static void http_conn_write_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct http_conn *c = userdata;

        http_conn_enter(c);
        if (c->handshaking) {
                http_conn_handshake(c);
                http_conn_leave(c);
                return;
        }
        http_conn_flush(c);
        /* Room again in the output: parse what waited for it. */
        if (!c->dead && evbuffer_get_length(c->out) < HTTP_SERVER_OUTPUT_MAX)
                http_conn_process(c);
        http_conn_leave(c);
}

static void http_conn_timer_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct http_conn *c = userdata;
        const struct http_server *s = c->server;

        http_conn_enter(c);
        if (c->state != HTTP_CONN_CLOSING && http_conn_stalled(c)) {
                http_conn_close(c); /* it takes nothing of its answers: whatever it is sending, it is done */
                http_conn_leave(c);
                return;
        }
        if (c->state == HTTP_CONN_HEAD || c->state == HTTP_CONN_BODY) {
                /* Set for the stall, which the client has since ended: the state's own deadline goes on. */
                uint64_t end = c->state == HTTP_CONN_HEAD ? c->head_start_usec + s->limits.head_timeout_usec
                                                          : c->body_start_usec + s->limits.body_timeout_usec;
                uint64_t now = now_usec();

                if (now < end) {
                        http_conn_arm(c, NULL, end - now);
                        http_conn_leave(c);
                        return;
                }
        }
        switch (c->state) {
        case HTTP_CONN_HEAD:
                http_conn_reject(c, 408, "request head not received in time");
                break;
        case HTTP_CONN_BODY:
                http_conn_reject(c, 408, "request body not received in time");
                break;
        case HTTP_CONN_IDLE:
        case HTTP_CONN_HANDLER: /* the client took nothing of its answer */
        case HTTP_CONN_CLOSING:
                http_conn_close(c);
                break;
        }
        http_conn_leave(c);
}

/* Whether <peer> holds its share of the connections already (<max_per_client>). A scan: the listeners that
 * set the limit hold few connections (lbd's lease listener, 64). */
static bool http_server_client_full(struct http_server *s, const struct netaddr *peer)
{
        size_t n = 0;

        if (s->limits.max_per_client == 0)
                return false;
        DLIST_FOREACH(conns, c, s->conns) {
                if (netaddr_same_host(&c->peer, peer) && ++n >= s->limits.max_per_client)
                        return true;
        }
        return false;
}

/* Closes a connection whose address holds its share: at once, before a byte is read or a descriptor kept.
 * One line at most every HTTP_REFUSED_LOG_USEC. */
static void http_server_refuse_client(struct http_server *s, int fd, const struct netaddr *peer)
{
        uint64_t now = now_usec();
        char ip[NETADDR_STRLEN];

        (void)close(fd);
        s->refused_per_client++;
        if (now - s->refused_logged_usec < HTTP_REFUSED_LOG_USEC && s->refused_logged_usec != 0)
                return;
        s->refused_logged_usec = now;
        if (netaddr_format_host(peer, ip, sizeof(ip)) < 0)
                memcpy(ip, "unknown", 8);
        log_warning("%s: %s holds %zu connections, its share: closing its next ones (%" PRIu64 " so far)",
                    s->pause.what, ip, s->limits.max_per_client,
                    s->refused_per_client);
}

static void http_server_accept_cb(evutil_socket_t lfd, short what, void *userdata)
{
        struct http_server *s = userdata;

        for (int i = 0; i < HTTP_ACCEPT_BATCH && s->accepting; i++) {
                struct netaddr peer = { .len = sizeof(peer.u) };
                struct http_conn *c;
                int fd, one = 1;

                fd = accept4(lfd, &peer.u.sa, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        int e = errno;

                        /* Out of descriptors or memory: unwatched for a while, not woken again at once. */
                        if (!acceptpause_failed(&s->pause, e) && e != EAGAIN && e != EWOULDBLOCK && e != EINTR &&
                            e != ECONNABORTED)
                                log_debug_errno(e, "accept() failed: %m");
                        return;
                }
                acceptpause_accepted(&s->pause);
                if (http_server_client_full(s, &peer)) {
                        http_server_refuse_client(s, fd, &peer);
                        continue;
                }
                (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

                c = calloc(1, sizeof(*c));
                if (c) {
                        c->in = evbuffer_new();
                        c->out = evbuffer_new();
                }
                if (!c || !c->in || !c->out) {
                        if (c && c->in)
                                evbuffer_free(c->in);
                        if (c && c->out)
                                evbuffer_free(c->out);
                        free(c);
                        (void)close(fd);
                        continue;
                }
                if (s->tls && !(c->ssl = SSL_new(s->tls))) {
                        ERR_clear_error();
                        evbuffer_free(c->in);
                        evbuffer_free(c->out);
                        free(c);
                        (void)close(fd);
                        continue;
                }
                if (c->ssl) {
                        if (SSL_set_fd(c->ssl, fd) != 1)
                                ERR_clear_error(); /* the handshake fails, and closes it */
                        SSL_set_accept_state(c->ssl);
                        c->handshaking = true;
                }
                c->server = s;
                c->fd = fd;
                c->peer = peer;
                if (netaddr_format_host(&peer, c->ip, sizeof(c->ip)) < 0)
                        memcpy(c->ip, "unknown", 8);
                (void)event_assign(&c->rev, s->base, fd, EV_READ | EV_PERSIST, http_conn_read_cb, c);
                (void)event_assign(&c->wev, s->base, fd, EV_WRITE | EV_PERSIST, http_conn_write_cb, c);
                (void)evtimer_assign(&c->timer, s->base, http_conn_timer_cb, c);
                c->state = HTTP_CONN_IDLE;
                /* The first head's deadline runs from the accept: a connection that sends nothing, or
                 * part of a head, is closed (or answered 408) within head_timeout. */
                c->head_start_usec = now_usec();
                c->head_armed = true;
                http_conn_arm(c, s->tv_head, s->limits.head_timeout_usec);
                http_conn_set_reading(c, true);
                DLIST_PREPEND(conns, s->conns, c);
                s->n_conns++;
                http_server_update_accepting(s);
        }
}

/* ---- the server ---- */

static void http_server_set_listening(void *userdata, bool on)
{
        http_server_update_accepting(userdata);
}

int http_server_new(struct event_base *base, const struct http_server_limits *limits,
                    const struct http_server_ops *ops, void *userdata, struct http_server **ret)
{
        struct http_server *s;
        uint8_t seed[8];

        if (!base || !limits || !ops || !ops->request || limits->max_connections == 0 ||
            limits->max_head_size == 0 || limits->max_body_size == 0 || limits->head_timeout_usec == 0 ||
            limits->body_timeout_usec == 0 || limits->idle_timeout_usec == 0)
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->base = base;
        s->limits = *limits;
        s->ops = *ops;
        s->userdata = userdata;
        s->date_sec = (time_t)-1;
        if (acceptpause_init(&s->pause, base, "HTTP server", http_server_set_listening, s) < 0) {
                free(s);
                return -ENOMEM;
        }
        s->tv_head = http_common_timeout(base, limits->head_timeout_usec);
        s->tv_body = http_common_timeout(base, limits->body_timeout_usec);
        s->tv_idle = http_common_timeout(base, limits->idle_timeout_usec);
        s->tv_linger = http_common_timeout(base, HTTP_LINGER_USEC);

        /* Request ids made here: a random prefix per process, then a counter. */
        if (getrandom(seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed)) {
                uint64_t t = now_usec();

                memcpy(seed, &t, sizeof(seed));
        }
        for (size_t i = 0; i < sizeof(seed); i++)
                (void)snprintf(s->id_prefix + 2 * i, 3, "%02x", seed[i]);
        *ret = s;
        return 0;
}

int http_server_listen(struct http_server *s, const struct netaddr *addr, const char *what)
{
        struct http_listener *l;
        int fd;

        if (s->n_listeners >= HTTP_SERVER_LISTEN_MAX)
                return -E2BIG;
        fd = netaddr_listen(addr, HTTP_BACKLOG);
        if (fd < 0)
                return fd;
        l = &s->listeners[s->n_listeners++];
        l->fd = fd;
        l->what = what;
        (void)event_assign(&l->ev, s->base, fd, EV_READ | EV_PERSIST, http_server_accept_cb, s);
        if (s->accepting)
                (void)event_add(&l->ev, NULL);
        else
                http_server_update_accepting(s);
        return 0;
}

uint64_t http_server_refused_per_client(const struct http_server *s)
{
        return s ? s->refused_per_client : 0;
}

void http_server_set_name(struct http_server *s, const char *name)
{
        s->pause.what = name;
}

void http_server_shutdown(struct http_server *s)
{
        struct http_conn *c, *next;

        s->shutting_down = true;
        http_server_update_accepting(s);
        for (c = s->conns; c; c = next) {
                next = c->conns_next;
                /* Nothing in progress: closed now. The others close after their answer. */
                if (c->state == HTTP_CONN_IDLE && evbuffer_get_length(c->out) == 0)
                        http_conn_close(c);
                else if (c->state == HTTP_CONN_HEAD)
                        http_conn_close(c);
        }
}

size_t http_server_connections(const struct http_server *s)
{
        return s ? s->n_conns : 0;
}

int http_server_bound(const struct http_server *s, size_t i, struct netaddr *ret)
{
        struct netaddr a = { .len = sizeof(a.u) };

        if (i >= s->n_listeners)
                return -ENOENT;
        if (getsockname(s->listeners[i].fd, &a.u.sa, &a.len) < 0)
                return -errno;
        *ret = a;
        return 0;
}

struct http_server *http_server_free(struct http_server *s)
{
        if (!s)
                return NULL;
        s->shutting_down = true;
        while (s->conns)
                http_conn_close(s->conns);
        for (size_t i = 0; i < s->n_listeners; i++) {
                (void)event_del(&s->listeners[i].ev);
                (void)close(s->listeners[i].fd);
        }
        acceptpause_done(&s->pause);
        SSL_CTX_free(s->tls);
        if (s->tls_in)
                evbuffer_free(s->tls_in);
        free(s);
        return NULL;
}

int http_server_set_tls(struct http_server *s, struct ssl_ctx_st *ctx)
{
        if (ctx && !s->tls_in && !(s->tls_in = evbuffer_new()))
                return -ENOMEM;
        if (ctx)
                (void)SSL_CTX_up_ref(ctx);
        SSL_CTX_free(s->tls);
        s->tls = ctx;
        return 0;
}
