/* A scripted HTTP server for unit tests of the control plane's HTTP clients (test-ec2.c, test-awscred.c):
 * libevent's evhttp on 127.0.0.1 and an ephemeral port, on the test's own event loop.
 *
 * A test queues answers (status + body, or a handler) and runs the loop; every request is recorded
 * (method, URI, headers, body) for the test to check. When the queue is empty the server answers 500.
 * Header-only: each test program includes it once. */
#pragma once

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define FAKEHTTP_MAX      32
#define FAKEHTTP_TEXT_MAX (64 * 1024)

struct fakehttp_request {
        char method[16];
        char uri[1024];
        char headers[8192]; /* "name: value\n" each, as received */
        char body[FAKEHTTP_TEXT_MAX];
};

struct fakehttp_answer {
        int status;
        const char *body;
};

struct fakehttp {
        struct event_base *base;
        struct evhttp *http;
        unsigned short port;
        struct fakehttp_answer answers[FAKEHTTP_MAX];
        size_t n_answers, next_answer;
        struct fakehttp_request requests[FAKEHTTP_MAX];
        size_t n_requests;
        /* Optional: answers instead of the queue when it returns a status > 0. */
        int (*handler)(struct fakehttp *f, const struct fakehttp_request *req, const char **ret_body);
        void *userdata;
};

static const char *fakehttp_method(enum evhttp_cmd_type t)
{
        switch (t) {
        case EVHTTP_REQ_GET:
                return "GET";
        case EVHTTP_REQ_POST:
                return "POST";
        case EVHTTP_REQ_PUT:
                return "PUT";
        case EVHTTP_REQ_DELETE:
                return "DELETE";
        case EVHTTP_REQ_HEAD:
                return "HEAD";
        default:
                return "OTHER";
        }
}

static void fakehttp_cb(struct evhttp_request *req, void *userdata)
{
        struct fakehttp *f = userdata;
        struct fakehttp_request *r =
                &f->requests[f->n_requests < FAKEHTTP_MAX ? f->n_requests : FAKEHTTP_MAX - 1];
        struct evbuffer *in = evhttp_request_get_input_buffer(req), *out = evbuffer_new();
        struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
        const char *body = NULL;
        size_t n = MIN(evbuffer_get_length(in), sizeof(r->body) - 1), used = 0;
        int status = 0;

        memset(r, 0, sizeof(*r));
        (void)snprintf(r->method, sizeof(r->method), "%s", fakehttp_method(evhttp_request_get_command(req)));
        (void)snprintf(r->uri, sizeof(r->uri), "%s", evhttp_request_get_uri(req));
        for (struct evkeyval *h = headers->tqh_first; h; h = h->next.tqe_next) {
                int w = snprintf(r->headers + used, sizeof(r->headers) - used, "%s: %s\n", h->key, h->value);

                if (w < 0 || (size_t)w >= sizeof(r->headers) - used)
                        break;
                used += (size_t)w;
        }
        (void)evbuffer_copyout(in, r->body, n);
        r->body[n] = 0;
        if (f->n_requests < FAKEHTTP_MAX)
                f->n_requests++;

        if (f->handler)
                status = f->handler(f, r, &body);
        if (status <= 0) {
                if (f->next_answer < f->n_answers) {
                        status = f->answers[f->next_answer].status;
                        body = f->answers[f->next_answer].body;
                        f->next_answer++;
                } else {
                        status = 500;
                        body = "no answer queued";
                }
        }
        (void)evbuffer_add(out, body ? body : "", body ? strlen(body) : 0);
        evhttp_send_reply(req, status, status == 200 ? "OK" : "Scripted", out);
        evbuffer_free(out);
}

static void fakehttp_start(struct fakehttp *f, struct event_base *base)
{
        struct evhttp_bound_socket *sock;
        struct sockaddr_in sin;
        socklen_t len = sizeof(sin);

        memset(f, 0, sizeof(*f));
        f->base = base;
        f->http = evhttp_new(base);
        assert_non_null(f->http);
        evhttp_set_allowed_methods(f->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT);
        evhttp_set_gencb(f->http, fakehttp_cb, f);
        sock = evhttp_bind_socket_with_handle(f->http, "127.0.0.1", 0);
        assert_non_null(sock);
        assert_int_equal(getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&sin, &len), 0);
        f->port = ntohs(sin.sin_port);
}

_unused_ static void fakehttp_stop(struct fakehttp *f)
{
        if (f->http)
                evhttp_free(f->http);
        f->http = NULL;
}

_unused_ static void fakehttp_queue(struct fakehttp *f, int status, const char *body)
{
        assert_true(f->n_answers < FAKEHTTP_MAX);
        f->answers[f->n_answers++] = (struct fakehttp_answer){status, body};
}

/* True when request <i> carries a header line starting with <prefix> (case-insensitive name). */
_unused_ static bool fakehttp_has_header(const struct fakehttp *f, size_t i, const char *prefix)
{
        const char *p = f->requests[i].headers;
        size_t n = strlen(prefix);

        while (*p) {
                if (strncasecmp(p, prefix, n) == 0)
                        return true;
                p = strchr(p, '\n');
                if (!p)
                        break;
                p++;
        }
        return false;
}
