/* Unit tests for http/server.c, on a real event loop and loopback sockets: pipelined requests answered in
 * order and one at a time, the access hook for every answer (the engine's own refusals too), the head
 * deadline, a client that takes nothing of its answers, the connection limit, per-route body limits, a
 * request that outlives its connection, and the query-string parser. */
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
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
#include "http/server.h"

#define HELD_MAX 8

struct app {
        struct event_base *base;
        struct http_server *server;
        bool hold;                        /* keep requests instead of answering them */
        struct http_request *held[HELD_MAX];
        size_t n_held;
        unsigned handled;
        unsigned statuses[32];            /* what the access hook saw, in order */
        size_t n_statuses;
        char last_body[64];
};

static void app_answer(struct http_request *req)
{
        char body[128];
        int n = snprintf(body, sizeof(body), "%s %s %zu", req->method_name, req->path, req->body_len);

        http_request_respond(req, &(struct http_response){
                                          .status = 200,
                                          .content_type = "text/plain",
                                          .body = body,
                                          .body_len = (size_t)n,
                                  });
}

static void app_request(struct http_request *req, void *userdata)
{
        struct app *a = userdata;

        a->handled++;
        (void)snprintf(a->last_body, sizeof(a->last_body), "%s", req->body);
        if (a->hold) {
                assert_true(a->n_held < HELD_MAX);
                a->held[a->n_held++] = req;
                return;
        }
        app_answer(req);
}

static uint64_t app_body_limit(const struct http_request *req, void *userdata)
{
        return strcmp(req->path, "/small") == 0 ? 10 : 0;
}

static void app_access(const struct http_request *req, unsigned status, size_t body_len, void *userdata)
{
        struct app *a = userdata;

        if (a->n_statuses < ELEMENTSOF(a->statuses))
                a->statuses[a->n_statuses++] = status;
}

static void app_start(struct app *a, const struct http_server_limits *limits)
{
        static const struct http_server_ops ops = {
                .request = app_request,
                .body_limit = app_body_limit,
                .access = app_access,
        };
        struct netaddr any;

        *a = (struct app){0};
        a->base = event_base_new();
        assert_non_null(a->base);
        assert_int_equal(http_server_new(a->base, limits, &ops, a, &a->server), 0);
        assert_int_equal(netaddr_parse("127.0.0.1:0", 0, true, &any), 0);
        assert_int_equal(http_server_listen(a->server, &any, "test"), 0);
}

static void app_stop(struct app *a)
{
        for (size_t i = 0; i < a->n_held; i++)
                if (a->held[i])
                        app_answer(a->held[i]);
        a->server = http_server_free(a->server);
        event_base_free(a->base);
}

static const struct http_server_limits limits_default = {
        .max_connections = 16,
        .max_head_size = 1024,
        .max_body_size = 100,
        .head_timeout_usec = 5 * USEC_PER_SEC,
        .body_timeout_usec = 5 * USEC_PER_SEC,
        .idle_timeout_usec = 5 * USEC_PER_SEC,
};

static int client_connect(struct app *a)
{
        struct netaddr addr;
        int fd;

        assert_int_equal(http_server_bound(a->server, 0, &addr), 0);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, &addr.u.sa, addr.len), 0);
        return fd;
}

static void client_send(int fd, const char *s)
{
        assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Runs the loop for about <ms> milliseconds. */
static void run_for(struct app *a, unsigned ms)
{
        struct timeval tv = timeval_from_usec(ms * USEC_PER_MSEC);

        (void)event_base_loopexit(a->base, &tv);
        (void)event_base_dispatch(a->base);
}

/* Runs the loop until <fd> has <want> bytes of answers in <buf> containing <needle> (or the peer closed),
 * for at most 5 s. Returns the bytes read; *<closed> tells whether the peer closed. */
static size_t client_read(struct app *a, int fd, char *buf, size_t size, const char *needle, bool *closed)
{
        size_t len = 0;

        *closed = false;
        for (int i = 0; i < 500; i++) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t n;

                run_for(a, 10);
                if (poll(&p, 1, 0) <= 0)
                        continue;
                n = recv(fd, buf + len, size - 1 - len, MSG_DONTWAIT);
                if (n <= 0) {
                        *closed = true;
                        break;
                }
                len += (size_t)n;
                buf[len] = '\0';
                if (needle && strstr(buf, needle))
                        break;
        }
        buf[len] = '\0';
        return len;
}

static size_t count(const char *text, const char *needle)
{
        size_t n = 0;

        for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

/* Sends <request> on a new connection and checks that the answer holds <expect>. */
static void exchange(struct app *a, const char *request, const char *expect, char *buf, size_t size)
{
        bool closed;
        int fd = client_connect(a);

        client_send(fd, request);
        (void)client_read(a, fd, buf, size, expect, &closed);
        assert_non_null(strstr(buf, expect));
        close(fd);
}

static void test_pipelined_in_order(void **state)
{
        struct app a;
        char buf[8192];
        bool closed;
        int fd;

        app_start(&a, &limits_default);
        fd = client_connect(&a);
        client_send(fd, "GET /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: one\r\n\r\n"
                        "GET /b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                        "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                        "GET /d HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n");
        (void)client_read(&a, fd, buf, sizeof(buf), "400 Bad Request", &closed);
        assert_non_null(strstr(buf, "X-Request-Id: one\r\n"));
        assert_true(strstr(buf, "GET /a 0") < strstr(buf, "GET /b 0"));
        assert_true(strstr(buf, "GET /b 0") < strstr(buf, "POST /c 5"));
        assert_true(strstr(buf, "POST /c 5") < strstr(buf, "HTTP/1.1 400 Bad Request"));
        assert_string_equal(a.last_body, "hello");
        assert_int_equal(a.handled, 3);
        /* The refusal went through the access hook too, and closed the connection. */
        assert_int_equal(a.n_statuses, 4);
        assert_int_equal(a.statuses[3], 400);
        assert_non_null(strstr(buf, "Connection: close"));
        if (!closed)
                (void)client_read(&a, fd, buf, sizeof(buf), NULL, &closed);
        assert_true(closed);
        close(fd);
        app_stop(&a);
}

static void test_one_at_a_time(void **state)
{
        struct app a;
        char buf[8192];
        bool closed;
        int fd;

        app_start(&a, &limits_default);
        a.hold = true;
        fd = client_connect(&a);
        client_send(fd, "GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n");
        run_for(&a, 100);
        /* The second head waits until the first is answered. */
        assert_int_equal(a.handled, 1);
        assert_string_equal(a.held[0]->path, "/first");
        app_answer(a.held[0]);
        a.held[0] = NULL;
        assert_int_equal(a.handled, 2);
        assert_string_equal(a.held[1]->path, "/second");
        app_answer(a.held[1]);
        a.held[1] = NULL;
        (void)client_read(&a, fd, buf, sizeof(buf), "GET /second", &closed);
        assert_true(strstr(buf, "GET /first") < strstr(buf, "GET /second"));
        close(fd);
        app_stop(&a);
}

static void test_request_outlives_connection(void **state)
{
        struct app a;
        struct http_request *req;
        int fd;

        app_start(&a, &limits_default);
        a.hold = true;
        fd = client_connect(&a);
        client_send(fd, "GET /gone HTTP/1.1\r\nHost: x\r\n\r\n");
        run_for(&a, 50);
        assert_int_equal(a.handled, 1);
        /* A reset: the client is gone (a plain close could be a half-close that waits for the answer). */
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger){ .l_onoff = 1, .l_linger = 0 },
                                    sizeof(struct linger)), 0);
        close(fd);
        run_for(&a, 50);
        req = a.held[0];
        assert_null(req->conn);
        assert_int_equal(http_server_connections(a.server), 0);
        app_answer(req); /* only reported */
        a.held[0] = NULL;
        assert_int_equal(a.n_statuses, 1);
        assert_int_equal(a.statuses[0], 200);
        app_stop(&a);
}

static void test_head_deadline(void **state)
{
        struct http_server_limits limits = limits_default;
        struct app a;
        char buf[4096];
        bool closed;
        int fd;

        limits.head_timeout_usec = 300 * USEC_PER_MSEC;
        app_start(&a, &limits);
        fd = client_connect(&a);
        client_send(fd, "GET /slow HTTP/1.1\r\n");
        for (int i = 0; i < 5; i++) { /* trickling does not push the deadline back */
                run_for(&a, 50);
                client_send(fd, "X-A: b\r\n");
        }
        (void)client_read(&a, fd, buf, sizeof(buf), "408", &closed);
        assert_non_null(strstr(buf, "HTTP/1.1 408 Request Timeout"));
        assert_int_equal(a.handled, 0);
        assert_int_equal(a.n_statuses, 1);
        assert_int_equal(a.statuses[0], 408);
        close(fd);
        app_stop(&a);
}

/* The engine's side of the connection whose client is <client> (the test and the engine share the process). */
static int server_side(int client)
{
        struct sockaddr_in mine, peer;
        socklen_t len = sizeof(mine);

        assert_int_equal(getsockname(client, (struct sockaddr *)&mine, &len), 0);
        for (int fd = 3; fd < 1024; fd++) {
                len = sizeof(peer);
                if (fd != client && getpeername(fd, (struct sockaddr *)&peer, &len) == 0 &&
                    peer.sin_family == AF_INET && peer.sin_port == mine.sin_port)
                        return fd;
        }
        fail_msg("no server side for the client's connection");
        return -1;
}

/* A client that pipelines requests and takes nothing of its answers is closed idle_timeout after it last
 * took some, even while the application goes on answering what it sent: answering is not the client's
 * progress (it used to push the deadline back, holding such a client as long as it kept the application
 * busy). */
static void test_client_taking_nothing(void **state)
{
        static char big[128 * 1024];
        struct http_server_limits limits = limits_default;
        int small = 2048, fd, sfd;
        uint64_t start = 0;
        struct app a;

        limits.idle_timeout_usec = 400 * USEC_PER_MSEC;
        app_start(&a, &limits);
        a.hold = true;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
        {
                struct netaddr addr;

                assert_int_equal(http_server_bound(a.server, 0, &addr), 0);
                assert_int_equal(connect(fd, &addr.u.sa, addr.len), 0);
        }
        for (int i = 0; i < 150; i++)
                client_send(fd, "GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
        run_for(&a, 50);
        sfd = server_side(fd);
        assert_int_equal(setsockopt(sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
        memset(big, 'b', sizeof(big));
        /* The first answer fills what the kernel holds; then one small answer every 50 ms for up to 5 s. */
        for (int i = 0; i < 100 && http_server_connections(a.server) > 0; i++) {
                if (a.n_held > 0) {
                        struct http_request *req = a.held[0];

                        a.n_held = 0;
                        if (start == 0)
                                start = now_usec();
                        http_request_respond(req, &(struct http_response){
                                                          .status = 200,
                                                          .body = big,
                                                          .body_len = i == 0 ? sizeof(big) : 100,
                                                  });
                }
                run_for(&a, 50);
        }
        assert_true(start > 0);
        assert_int_equal(http_server_connections(a.server), 0);
        assert_true(now_usec() - start < 1500 * USEC_PER_MSEC);
        assert_true(a.handled >= 2); /* it was closed while answers still came */
        for (size_t i = 0; i < a.n_held; i++)
                app_answer(a.held[i]); /* its connection is gone: only reported */
        a.n_held = 0;
        close(fd);
        app_stop(&a);
}

static void test_connection_limit(void **state)
{
        struct http_server_limits limits = limits_default;
        struct app a;
        int fds[3];

        limits.max_connections = 2;
        app_start(&a, &limits);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                fds[i] = client_connect(&a); /* the kernel completes all three */
        run_for(&a, 100);
        assert_int_equal(http_server_connections(a.server), 2);
        close(fds[0]);
        run_for(&a, 100);
        /* One ended: the one waiting in the backlog is taken. */
        assert_int_equal(http_server_connections(a.server), 2);
        close(fds[1]);
        close(fds[2]);
        run_for(&a, 100);
        assert_int_equal(http_server_connections(a.server), 0);
        app_stop(&a);
}

static void test_body_limits(void **state)
{
        struct app a;
        char buf[8192];
        bool closed;
        int fd;

        app_start(&a, &limits_default);
        /* The route's limit (10) from the head, before a byte of the body; the server's (100) elsewhere. */
        fd = client_connect(&a);
        client_send(fd, "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n01234567890123456789");
        (void)client_read(&a, fd, buf, sizeof(buf), "POST /big 20", &closed);
        assert_non_null(strstr(buf, "200 OK"));
        client_send(fd, "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\nExpect: 100-continue\r\n\r\n");
        (void)client_read(&a, fd, buf, sizeof(buf), "413", &closed);
        assert_non_null(strstr(buf, "HTTP/1.1 413 "));
        assert_null(strstr(buf, "100 Continue"));
        close(fd);
        /* Chunked: counted as it is decoded. */
        exchange(&a, "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "6\r\n012345\r\n6\r\n012345\r\n0\r\n\r\n", "HTTP/1.1 413 ", buf, sizeof(buf));
        exchange(&a, "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "POST /small 5", buf, sizeof(buf));
        assert_string_equal(a.last_body, "abcde");
        assert_int_equal(count(buf, "HTTP/1.1"), 1);
        app_stop(&a);
}

static void test_unknown_method_and_version(void **state)
{
        struct app a;
        char buf[4096];
        bool closed;
        int fd;

        app_start(&a, &limits_default);
        exchange(&a, "BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 501 ", buf, sizeof(buf));
        exchange(&a, "GET / HTTP/3.0\r\nHost: x\r\n\r\n", "HTTP/1.1 505 ", buf, sizeof(buf));
        fd = client_connect(&a);
        client_send(fd, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
        for (int i = 0; i < 20; i++)
                client_send(fd, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        (void)client_read(&a, fd, buf, sizeof(buf), "431", &closed);
        assert_non_null(strstr(buf, "HTTP/1.1 431 "));
        close(fd);
        assert_int_equal(a.handled, 0);
        assert_int_equal(a.n_statuses, 3);
        app_stop(&a);
}

static void test_query(void **state)
{
        struct http_param p[4];
        char buf[64];

        assert_int_equal(http_query_count(NULL), 0);
        assert_int_equal(http_query_count(""), 0);
        assert_int_equal(http_query_count("a=1&b=2&&"), 4);
        assert_int_equal(http_parse_query(NULL, buf, p, 4), 0);
        assert_int_equal(http_parse_query("a=1&b=x%20y+z&c=", buf, p, 4), 3);
        assert_string_equal(p[0].name, "a");
        assert_string_equal(p[0].value, "1");
        assert_string_equal(p[1].value, "x y z");
        assert_string_equal(p[2].name, "c");
        assert_string_equal(p[2].value, "");
        assert_int_equal(http_parse_query("d=%00x", buf, p, 4), 1);
        assert_string_equal(p[0].value, "");
        assert_int_equal(http_parse_query("bad=%zz%4", buf, p, 4), 1);
        assert_string_equal(p[0].value, "%zz%4");
        assert_int_equal(http_parse_query("limit", buf, p, 4), -EINVAL);
        assert_int_equal(http_parse_query("=1", buf, p, 4), -EINVAL);
        assert_int_equal(http_parse_query("a=1&&b=2", buf, p, 4), -EINVAL);
        assert_int_equal(http_parse_query("a=1&", buf, p, 4), -EINVAL);
        assert_int_equal(http_parse_query("a=1&b=2&c=3&d=4&e=5", buf, p, 4), -E2BIG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pipelined_in_order),
                cmocka_unit_test(test_one_at_a_time),
                cmocka_unit_test(test_request_outlives_connection),
                cmocka_unit_test(test_head_deadline),
                cmocka_unit_test(test_client_taking_nothing),
                cmocka_unit_test(test_connection_limit),
                cmocka_unit_test(test_body_limits),
                cmocka_unit_test(test_unknown_method_and_version),
                cmocka_unit_test(test_query),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
