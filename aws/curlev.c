/* libcurl's multi "socket" interface on libevent: the HTTP client of the control plane (EC2 API calls and
 * the instance metadata service).
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to wake it up
 * (CURLMOPT_TIMERFUNCTION); each socket has a persistent libevent event (struct curlev_socket, attached
 * to curl's socket with curl_multi_assign()) and the multi handle one timer. When an event fires we hand
 * the socket to curl_multi_socket_action() and then collect finished transfers with
 * curl_multi_info_read(), outside of any curl callback, so the user's callbacks may start or cancel
 * transfers freely.
 *
 * A struct curlev_transfer owns its easy handle, its header list and its response buffer (an evbuffer
 * capped at max_response by the write callback). It lives in the curlev's list from curlev_start() until
 * its callback returns or it is cancelled. Timeouts and the size cap are curl's (CURLOPT_TIMEOUT_MS,
 * CURLOPT_CONNECTTIMEOUT_MS) plus the write callback's own check, so no transfer can hang or grow
 * without bound. */
#include "aws/curlev.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/list.h"
#include "common/log.h"
#include "lbd-version.h"

struct curlev_socket {
        struct curlev *curlev;
        curl_socket_t fd;
        struct event ev;
        bool added;
};

struct curlev_transfer {
        struct curlev *curlev;
        DLIST_FIELDS(struct curlev_transfer, transfers);
        CURL *easy;
        struct curl_slist *headers;
        struct evbuffer *body;
        size_t max_response;
        bool too_big;
        curlev_done_cb cb;
        void *userdata;
        char error[CURL_ERROR_SIZE];
};

struct curlev {
        struct event_base *base;
        CURLM *multi;
        struct event *timer;
        DLIST_HEAD(struct curlev_transfer, transfers);
        size_t n_transfers;
        bool *freed; /* set while callbacks run: tells the dispatcher that a callback freed us */
        bool global_init;
};

static int curlev_error(CURLcode code, bool too_big)
{
        if (too_big)
                return -EFBIG;
        switch (code) {
        case CURLE_OK:
                return 0;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_GOT_NOTHING:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_PARTIAL_FILE:
                return -ECONNRESET;
        case CURLE_FILESIZE_EXCEEDED:
                return -EFBIG;
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
                return -EINVAL;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_BAD_CONTENT_ENCODING:
                return -EPROTO;
        default:
                return -EIO;
        }
}

static void curlev_transfer_destroy(struct curlev_transfer *t)
{
        struct curlev *c = t->curlev;

        DLIST_REMOVE(transfers, c->transfers, t);
        c->n_transfers--;

        if (t->easy) {
                (void)curl_multi_remove_handle(c->multi, t->easy);
                curl_easy_cleanup(t->easy);
        }
        curl_slist_free_all(t->headers);
        if (t->body)
                evbuffer_free(t->body);
        free(t);
}

/* Collects finished transfers and calls their callbacks. Returns false when a callback freed <c>. */
/* curl's message for a failed connect names no cause ("Couldn't connect to server"): adds the system's
 * own ("Connection refused", "Network is unreachable") when curl kept one and it fits. */
static void curlev_add_os_error(struct curlev_transfer *t)
{
        long os_errno = 0;
        char cause[96];
        size_t len = strlen(t->error);
        int n;

        if (curl_easy_getinfo(t->easy, CURLINFO_OS_ERRNO, &os_errno) != CURLE_OK || os_errno <= 0 ||
            os_errno > INT_MAX)
                return;
        n = snprintf(cause, sizeof(cause), "%s", strerror((int)os_errno));
        if (n <= 0 || strstr(t->error, cause))
                return;
        (void)snprintf(t->error + len, sizeof(t->error) - len, " (%s)", cause);
}

static bool curlev_check_done(struct curlev *c)
{
        bool freed = false;
        CURLMsg *msg;
        int pending;

        c->freed = &freed;
        while ((msg = curl_multi_info_read(c->multi, &pending))) {
                struct curlev_transfer *t = NULL;
                struct curlev_response resp = {.error = ""};
                CURLcode code;
                int r;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                code = msg->data.result;
                if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t) != CURLE_OK || !t)
                        continue;
                (void)curl_multi_remove_handle(c->multi, t->easy);

                r = curlev_error(code, t->too_big);
                (void)curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &resp.status);
                if (r >= 0 && evbuffer_add(t->body, "", 1) < 0)
                        r = -ENOMEM;
                if (r >= 0) {
                        resp.body_len = evbuffer_get_length(t->body) - 1;
                        resp.body = (const char *)evbuffer_pullup(t->body, -1);
                        if (!resp.body)
                                r = -ENOMEM;
                }
                if (r < 0) {
                        resp.body = "";
                        resp.body_len = 0;
                        if (t->too_big)
                                (void)snprintf(t->error, sizeof(t->error), "response larger than %zu bytes",
                                               t->max_response);
                        else if (!t->error[0])
                                (void)snprintf(t->error, sizeof(t->error), "%s", curl_easy_strerror(code));
                        curlev_add_os_error(t);
                        resp.error = t->error;
                }

                t->cb(r, &resp, t->userdata);
                if (freed)
                        return false;
                curlev_transfer_destroy(t);
        }
        c->freed = NULL;
        return true;
}

static void curlev_socket_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct curlev_socket *s = userdata;
        struct curlev *c = s->curlev;
        int action = 0, running = 0;

        if (what & EV_READ)
                action |= CURL_CSELECT_IN;
        if (what & EV_WRITE)
                action |= CURL_CSELECT_OUT;
        (void)curl_multi_socket_action(c->multi, fd, action, &running);
        (void)curlev_check_done(c);
}

static void curlev_timer_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct curlev *c = userdata;
        int running = 0;

        (void)curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        (void)curlev_check_done(c);
}

/* CURLMOPT_SOCKETFUNCTION: watch <fd> for <what>, or stop watching it. */
static int curlev_socket_fn(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
        struct curlev *c = userp;
        struct curlev_socket *s = socketp;
        short events = EV_PERSIST;

        if (what == CURL_POLL_REMOVE) {
                if (s) {
                        if (s->added)
                                (void)event_del(&s->ev);
                        (void)curl_multi_assign(c->multi, fd, NULL);
                        free(s);
                }
                return 0;
        }
        if (!s) {
                s = calloc(1, sizeof(*s));
                if (!s)
                        return -1;
                s->curlev = c;
                s->fd = fd;
                if (curl_multi_assign(c->multi, fd, s) != CURLM_OK) {
                        free(s);
                        return -1;
                }
        } else if (s->added) {
                (void)event_del(&s->ev);
                s->added = false;
        }
        if (what & CURL_POLL_IN)
                events |= EV_READ;
        if (what & CURL_POLL_OUT)
                events |= EV_WRITE;
        if (event_assign(&s->ev, c->base, fd, events, curlev_socket_cb, s) < 0 ||
            event_add(&s->ev, NULL) < 0)
                return -1;
        s->added = true;
        return 0;
}

/* CURMOPT_TIMERFUNCTION: wake curl up in <timeout_ms> (-1: never). */
static int curlev_timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
        struct curlev *c = userp;
        struct timeval tv;

        if (timeout_ms < 0)
                return event_del(c->timer) < 0 ? -1 : 0;
        tv.tv_sec = timeout_ms / 1000;
        tv.tv_usec = (timeout_ms % 1000) * 1000;
        return evtimer_add(c->timer, &tv) < 0 ? -1 : 0;
}

static size_t curlev_write_fn(char *data, size_t size, size_t n, void *userdata)
{
        struct curlev_transfer *t = userdata;
        size_t len = size * n;

        if (len > t->max_response || evbuffer_get_length(t->body) > t->max_response - len) {
                t->too_big = true;
                return 0;
        }
        if (evbuffer_add(t->body, data, len) < 0)
                return 0;
        return len;
}

int curlev_new(struct event_base *base, struct curlev **ret)
{
        struct curlev *c;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->base = base;
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                free(c);
                return -EIO;
        }
        c->global_init = true;
        c->multi = curl_multi_init();
        c->timer = evtimer_new(base, curlev_timer_cb, c);
        if (!c->multi || !c->timer) {
                curlev_free(c);
                return -ENOMEM;
        }
        if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curlev_socket_fn) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curlev_timer_fn) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)CURLEV_MAX_TRANSFERS) !=
                    CURLM_OK) {
                curlev_free(c);
                return -EIO;
        }
        *ret = c;
        return 0;
}

struct curlev *curlev_free(struct curlev *c)
{
        if (!c)
                return NULL;
        if (c->freed)
                *c->freed = true;
        while (c->transfers)
                curlev_transfer_destroy(c->transfers);
        if (c->multi)
                (void)curl_multi_cleanup(c->multi);
        if (c->timer)
                event_free(c->timer);
        if (c->global_init)
                curl_global_cleanup();
        free(c);
        return NULL;
}

static bool curlev_method_ok(const char *m)
{
        return m && (strcmp(m, "GET") == 0 || strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 ||
                     strcmp(m, "DELETE") == 0 || strcmp(m, "HEAD") == 0);
}

/* Sets the easy handle's options for <req>. Returns a CURLcode. */
static CURLcode curlev_setup(struct curlev_transfer *t, const struct curlev_request *req)
{
        CURL *e = t->easy;
        long connect_ms = (long)((req->connect_timeout_usec ? req->connect_timeout_usec
                                                            : CURLEV_DEFAULT_CONNECT_USEC) /
                                 USEC_PER_MSEC);
        long total_ms = (long)((req->timeout_usec ? req->timeout_usec : CURLEV_DEFAULT_TIMEOUT_USEC) /
                               USEC_PER_MSEC);
        bool has_body =
                req->body_len > 0 || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0;
        CURLcode code = CURLE_OK;

#define SET(opt, val)                                                                                       \
        do {                                                                                                \
                if (code == CURLE_OK)                                                                       \
                        code = curl_easy_setopt(e, opt, val);                                               \
        } while (0)
        SET(CURLOPT_URL, req->url);
        SET(CURLOPT_PROTOCOLS_STR, "http,https");
        SET(CURLOPT_FOLLOWLOCATION, 0L);
        SET(CURLOPT_NOSIGNAL, 1L);
        SET(CURLOPT_CONNECTTIMEOUT_MS, MAX(connect_ms, 1L));
        SET(CURLOPT_TIMEOUT_MS, MAX(total_ms, 1L));
        SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)t->max_response);
        SET(CURLOPT_WRITEFUNCTION, curlev_write_fn);
        SET(CURLOPT_WRITEDATA, t);
        SET(CURLOPT_PRIVATE, t);
        SET(CURLOPT_ERRORBUFFER, t->error);
        SET(CURLOPT_USERAGENT, "lbd/" PACKAGE_VERSION);
        SET(CURLOPT_HTTPHEADER, t->headers);
        if (req->no_proxy)
                SET(CURLOPT_NOPROXY, "*");
        if (has_body) {
                SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
                SET(CURLOPT_COPYPOSTFIELDS, req->body_len > 0 ? (const char *)req->body : "");
        }
        if (strcmp(req->method, "HEAD") == 0)
                SET(CURLOPT_NOBODY, 1L);
        else if (strcmp(req->method, has_body ? "POST" : "GET") != 0)
                SET(CURLOPT_CUSTOMREQUEST, req->method);
#undef SET
        return code;
}

int curlev_start(struct curlev *c, const struct curlev_request *req, curlev_done_cb cb, void *userdata,
                 struct curlev_transfer **ret)
{
        struct curlev_transfer *t;
        CURLcode code;

        if (!req || !cb || !curlev_method_ok(req->method) || !req->url ||
            (strncmp(req->url, "http://", 7) != 0 && strncmp(req->url, "https://", 8) != 0) ||
            (req->body_len > 0 && !req->body) || req->body_len > LONG_MAX)
                return -EINVAL;
        if (c->n_transfers >= CURLEV_MAX_TRANSFERS)
                return -EBUSY;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->curlev = c;
        t->cb = cb;
        t->userdata = userdata;
        t->max_response = req->max_response ? req->max_response : CURLEV_DEFAULT_MAX_RESPONSE;
        DLIST_PREPEND(transfers, c->transfers, t);
        c->n_transfers++;

        t->body = evbuffer_new();
        t->easy = curl_easy_init();
        if (!t->body || !t->easy)
                goto nomem;
        /* No "Expect: 100-continue" round trip before a body. */
        t->headers = curl_slist_append(NULL, "Expect:");
        if (!t->headers)
                goto nomem;
        for (size_t i = 0; i < req->n_headers; i++) {
                struct curl_slist *l = curl_slist_append(t->headers, req->headers[i]);

                if (!l)
                        goto nomem;
                t->headers = l;
        }
        code = curlev_setup(t, req);
        if (code != CURLE_OK) {
                int r = curlev_error(code, false);

                curlev_transfer_destroy(t);
                return r == -ENOMEM ? r : -EINVAL;
        }
        if (curl_multi_add_handle(c->multi, t->easy) != CURLM_OK)
                goto nomem;
        if (ret)
                *ret = t;
        return 0;

nomem:
        curlev_transfer_destroy(t);
        return -ENOMEM;
}

struct curlev_transfer *curlev_cancel(struct curlev_transfer *t)
{
        if (t)
                curlev_transfer_destroy(t);
        return NULL;
}

size_t curlev_running(const struct curlev *c)
{
        return c ? c->n_transfers : 0;
}
