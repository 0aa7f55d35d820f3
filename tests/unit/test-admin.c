/* Unit tests for lbd/admin.c: the admin listener on 127.0.0.1, queried over real sockets on the test's event
 * loop. Checks every /status field against a pool and a proxy in a known state, the exact /metrics page,
 * content types, HEAD, 404 and 405, the request limits, and a bind failure. Every exchange has a deadline.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
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
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/macro.h"
#include "common/netaddr.h"
#include "lbd-version.h"
#include "lbd/admin.h"
#include "lbd/backend.h"
#include "lbd/config.h"
#include "lbd/lbd.h"
#include "lbd/proxy.h"
#include "lbd/reconcile.h"

#define RESPONSE_MAX (256u * 1024u)

struct fixture {
        struct lbd lbd;
        struct config config;
        struct netaddr addr; /* the admin listener */
        struct admin *admin;
};

/* Finds a free port on 127.0.0.1. */
static struct netaddr free_loopback_addr(void)
{
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sin);
        struct netaddr a = {.len = sizeof(sin)};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
        close(fd);
        a.u.in = sin;
        return a;
}

static struct netaddr parse_addr(const char *s)
{
        struct netaddr a;

        assert_int_equal(netaddr_parse(s, 0, false, &a), 0);
        return a;
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        struct netaddr backends[3] = {
                parse_addr("127.0.0.1:8081"),
                parse_addr("127.0.0.1:8082"),
                parse_addr("[::1]:8083"),
        };

        assert_non_null(f);
        f->lbd.base = event_base_new();
        assert_non_null(f->lbd.base);
        f->lbd.config = &f->config;
        f->lbd.pool = pool_new(f->lbd.base, NULL);
        assert_non_null(f->lbd.pool);
        assert_int_equal(pool_set_backends(f->lbd.pool, backends, ELEMENTSOF(backends)), 0);
        f->lbd.proxy = proxy_new(&f->lbd, f->lbd.base, NULL, 0, NULL);
        assert_non_null(f->lbd.proxy);
        f->lbd.started_usec = now_usec() - 12300 * USEC_PER_MSEC;

        f->addr = free_loopback_addr();
        assert_int_equal(admin_new(&f->lbd, &f->addr, &f->admin), 0);
        assert_non_null(f->admin);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        f->admin = admin_free(f->admin);
        f->lbd.proxy = proxy_free(f->lbd.proxy);
        f->lbd.pool = pool_free(f->lbd.pool);
        event_base_free(f->lbd.base);
        free(f);
        return 0;
}

/* Sends <request> (then half-closes when <shutdown_after>) and collects the answer until the server closes
 * the connection, running the event loop meanwhile; fails the test after 3 s. Returns a string to free. */
static char *exchange(struct fixture *f, const char *request, size_t request_len)
{
        const struct timeval step = {.tv_sec = 0, .tv_usec = 2000};
        uint64_t deadline = now_usec() + 3 * USEC_PER_SEC;
        char *buf = malloc(RESPONSE_MAX);
        size_t sent = 0, len = 0;
        int fd;

        assert_non_null(buf);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_true(connect(fd, &f->addr.u.sa, f->addr.len) == 0 || errno == EINPROGRESS);

        for (;;) {
                ssize_t k;

                assert_true(now_usec() < deadline);
                assert_int_equal(event_base_loopexit(f->lbd.base, &step), 0);
                assert_true(event_base_dispatch(f->lbd.base) >= 0);

                if (sent < request_len) {
                        k = send(fd, request + sent, request_len - sent, MSG_NOSIGNAL);
                        if (k > 0)
                                sent += (size_t)k;
                        else if (k < 0 && errno != EAGAIN && errno != ENOTCONN)
                                break; /* the server gave up on us: read what it said */
                }
                k = recv(fd, buf + len, RESPONSE_MAX - 1 - len, 0);
                if (k == 0 || (k < 0 && errno == ECONNRESET))
                        break;
                if (k > 0)
                        len += (size_t)k;
                assert_true(len < RESPONSE_MAX - 1);
        }
        buf[len] = '\0';
        close(fd);
        return buf;
}

static char *get(struct fixture *f, const char *method, const char *path)
{
        char request[512];
        int n;

        n = snprintf(request, sizeof(request),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method, path);
        assert_true(n > 0 && (size_t)n < sizeof(request));
        return exchange(f, request, (size_t)n);
}

/* Returns the status of response <r>. */
static int status_of(const char *r)
{
        assert_memory_equal(r, "HTTP/1.1 ", 9);
        return (int)strtol(r + 9, NULL, 10);
}

/* Returns the value of header <name> in <r> (a static buffer), or NULL. */
static const char *header_of(const char *r, const char *name)
{
        static char value[256];
        const char *end = strstr(r, "\r\n\r\n");
        size_t n = strlen(name);

        for (const char *p = strstr(r, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n")) {
                const char *line = p + 2, *eol = strstr(line, "\r\n");

                if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
                        const char *v = line + n + 1;

                        while (*v == ' ')
                                v++;
                        assert_true((size_t)(eol - v) < sizeof(value));
                        memcpy(value, v, (size_t)(eol - v));
                        value[eol - v] = '\0';
                        return value;
                }
        }
        return NULL;
}

static const char *body_of(const char *r)
{
        const char *p = strstr(r, "\r\n\r\n");

        assert_non_null(p);
        return p + 4;
}

/* Puts the pool and the proxy in a known state. */
static void fill_state(struct fixture *f)
{
        struct pool *pool = f->lbd.pool;
        struct backend *b0 = pool->backends[0], *b1 = pool->backends[1];
        struct proxy_stats *ps = (struct proxy_stats *)proxy_get_stats(f->lbd.proxy);

        backend_set_healthy(b0, true, "test");
        b0->checked_once = true;
        b0->loops[0].active = 2;
        b0->load = 1.25;
        b0->stats.requests = 10;
        b0->stats.failures = 1;
        b0->stats.health_ok = 7;
        b0->stats.health_fail = 2;
        b0->stats.by_code[200 - BACKEND_CODE_MIN] = 8;
        b0->stats.by_code[204 - BACKEND_CODE_MIN] = 1;
        b0->stats.by_code[503 - BACKEND_CODE_MIN] = 1;
        b0->last_check = CHECK_OK;
        b0->last_check_status = 200;
        memcpy(b0->zone, "us-east-1a", sizeof("us-east-1a"));
        b0->last_check_duration_usec = 500;
        b0->last_check_at_usec = now_usec() - 200 * USEC_PER_MSEC;

        b1->checked_once = true;
        b1->stats.health_fail = 3;
        b1->last_check = CHECK_TIMEOUT;
        b1->last_check_duration_usec = 1000000;
        b1->last_check_at_usec = now_usec();

        ps->connections = 5;
        ps->retries_total = 4;
        ps->rejected[400 - PROXY_CODE_MIN] = 3;
        ps->rejected[503 - PROXY_CODE_MIN] = 1;
}

static double number(const cJSON *o, const char *name)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

        assert_true(cJSON_IsNumber(v));
        return v->valuedouble;
}

static const char *string(const cJSON *o, const char *name)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

        assert_true(cJSON_IsString(v));
        return v->valuestring;
}

static void test_status(void **state)
{
        struct fixture *f = *state;
        const cJSON *backends, *b, *responses, *check;
        char *r;
        cJSON *root;

        fill_state(f);
        r = get(f, "GET", "/status");
        assert_int_equal(status_of(r), 200);
        assert_string_equal(header_of(r, "Content-Type"), "application/json");
        root = cJSON_Parse(body_of(r));
        assert_non_null(root);

        assert_string_equal(string(root, "version"), PACKAGE_VERSION);
        assert_int_equal((int)number(root, "pid"), (int)getpid());
        assert_true(number(root, "uptime_s") >= 12.3 && number(root, "uptime_s") < 14);
        assert_int_equal((int)number(root, "healthy"), 1);
        assert_int_equal((int)number(root, "total"), 3);
        assert_int_equal((int)number(root, "connections"), 5);

        backends = cJSON_GetObjectItemCaseSensitive(root, "backends");
        assert_true(cJSON_IsArray(backends));
        assert_int_equal(cJSON_GetArraySize(backends), 3);

        b = cJSON_GetArrayItem(backends, 0);
        assert_string_equal(string(b, "address"), "127.0.0.1:8081");
        assert_string_equal(string(b, "state"), "up");
        assert_string_equal(string(b, "zone"), "us-east-1a");
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(backends, 1), "zone")));
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "in_rotation")));
        assert_int_equal((int)number(b, "active"), 2);
        assert_int_equal((int)number(b, "requests"), 10);
        assert_int_equal((int)number(b, "failures"), 1);
        responses = cJSON_GetObjectItemCaseSensitive(b, "responses");
        assert_int_equal(cJSON_GetArraySize(responses), 2);
        assert_int_equal((int)number(responses, "2xx"), 9);
        assert_int_equal((int)number(responses, "5xx"), 1);
        check = cJSON_GetObjectItemCaseSensitive(b, "last_check");
        assert_string_equal(string(check, "result"), "ok");
        assert_int_equal((int)number(check, "status"), 200);
        assert_true(number(check, "duration_ms") == 0.5);
        assert_true(number(check, "age_s") >= 0.2 && number(check, "age_s") < 2);

        b = cJSON_GetArrayItem(backends, 1);
        assert_string_equal(string(b, "address"), "127.0.0.1:8082");
        assert_string_equal(string(b, "state"), "down");
        assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(b, "in_rotation")));
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(b, "responses")), 0);
        check = cJSON_GetObjectItemCaseSensitive(b, "last_check");
        assert_string_equal(string(check, "result"), "timeout");
        assert_int_equal((int)number(check, "status"), 0);
        assert_true(number(check, "duration_ms") == 1000);

        b = cJSON_GetArrayItem(backends, 2);
        assert_string_equal(string(b, "address"), "[::1]:8083");
        check = cJSON_GetObjectItemCaseSensitive(b, "last_check");
        assert_string_equal(string(check, "result"), "none");
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(check, "age_s")));

        /* Short numbers, not binary noise. */
        assert_non_null(strstr(r, "\"duration_ms\":0.5,"));
        assert_null(strstr(r, "0000000"));

        cJSON_Delete(root);
        free(r);

        /* A removed backend is no longer listed. */
        assert_int_equal(pool_set_backends(f->lbd.pool, &f->lbd.pool->backends[0]->addr, 1), 0);
        r = get(f, "GET", "/status?verbose=1");
        assert_int_equal(status_of(r), 200);
        root = cJSON_Parse(body_of(r));
        assert_non_null(root);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "backends")), 1);
        assert_int_equal((int)number(root, "total"), 1);
        cJSON_Delete(root);
        free(r);
}

static void test_metrics(void **state)
{
        static const char expect[] =
                "# HELP lbd_requests_total Responses from each backend, by HTTP status code.\n"
                "# TYPE lbd_requests_total counter\n"
                "lbd_requests_total{backend=\"127.0.0.1:8081\",code=\"200\"} 8\n"
                "lbd_requests_total{backend=\"127.0.0.1:8081\",code=\"204\"} 1\n"
                "lbd_requests_total{backend=\"127.0.0.1:8081\",code=\"503\"} 1\n"
                "# HELP lbd_backend_up Whether the backend is in rotation (1) or not (0).\n"
                "# TYPE lbd_backend_up gauge\n"
                "lbd_backend_up{backend=\"127.0.0.1:8081\"} 1\n"
                "lbd_backend_up{backend=\"127.0.0.1:8082\"} 0\n"
                "lbd_backend_up{backend=\"[::1]:8083\"} 0\n"
                "# HELP lbd_backend_maintenance Whether the operator took the backend out of rotation (1) or "
                "not (0).\n"
                "# TYPE lbd_backend_maintenance gauge\n"
                "lbd_backend_maintenance{backend=\"127.0.0.1:8081\"} 0\n"
                "lbd_backend_maintenance{backend=\"127.0.0.1:8082\"} 0\n"
                "lbd_backend_maintenance{backend=\"[::1]:8083\"} 0\n"
                "# HELP lbd_backend_active_requests Requests in flight to the backend.\n"
                "# TYPE lbd_backend_active_requests gauge\n"
                "lbd_backend_active_requests{backend=\"127.0.0.1:8081\"} 2\n"
                "lbd_backend_active_requests{backend=\"127.0.0.1:8082\"} 0\n"
                "lbd_backend_active_requests{backend=\"[::1]:8083\"} 0\n"
                "# HELP lbd_backend_load Requests in flight to the backend, smoothed over about 10 s (what "
                "scaling in goes by).\n"
                "# TYPE lbd_backend_load gauge\n"
                "lbd_backend_load{backend=\"127.0.0.1:8081\"} 1.25\n"
                "lbd_backend_load{backend=\"127.0.0.1:8082\"} 0.00\n"
                "lbd_backend_load{backend=\"[::1]:8083\"} 0.00\n"
                "# HELP lbd_backend_failures_total Connect failures, resets, timeouts and malformed "
                "responses from "
                "the backend.\n"
                "# TYPE lbd_backend_failures_total counter\n"
                "lbd_backend_failures_total{backend=\"127.0.0.1:8081\"} 1\n"
                "lbd_backend_failures_total{backend=\"127.0.0.1:8082\"} 0\n"
                "lbd_backend_failures_total{backend=\"[::1]:8083\"} 0\n"
                "# HELP lbd_health_checks_total Active health checks of the backend, by result.\n"
                "# TYPE lbd_health_checks_total counter\n"
                "lbd_health_checks_total{backend=\"127.0.0.1:8081\",result=\"ok\"} 7\n"
                "lbd_health_checks_total{backend=\"127.0.0.1:8081\",result=\"fail\"} 2\n"
                "lbd_health_checks_total{backend=\"127.0.0.1:8082\",result=\"ok\"} 0\n"
                "lbd_health_checks_total{backend=\"127.0.0.1:8082\",result=\"fail\"} 3\n"
                "lbd_health_checks_total{backend=\"[::1]:8083\",result=\"ok\"} 0\n"
                "lbd_health_checks_total{backend=\"[::1]:8083\",result=\"fail\"} 0\n"
                "# HELP lbd_retries_total Requests tried again on another backend.\n"
                "# TYPE lbd_retries_total counter\n"
                "lbd_retries_total 4\n"
                "# HELP lbd_client_connections Client connections open now.\n"
                "# TYPE lbd_client_connections gauge\n"
                "lbd_client_connections 5\n"
                "# HELP lbd_requests_rejected_total Requests answered by lbd itself with an error, by HTTP "
                "status code.\n"
                "# TYPE lbd_requests_rejected_total counter\n"
                "lbd_requests_rejected_total{code=\"400\"} 3\n"
                "lbd_requests_rejected_total{code=\"503\"} 1\n";
        struct fixture *f = *state;
        char *r;

        fill_state(f);
        r = get(f, "GET", "/metrics");
        assert_int_equal(status_of(r), 200);
        assert_string_equal(header_of(r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
        assert_string_equal(body_of(r), expect);
        free(r);
}

static void test_head(void **state)
{
        struct fixture *f = *state;
        char *r;

        char *g, length[32];

        r = get(f, "HEAD", "/metrics");
        assert_int_equal(status_of(r), 200);
        assert_string_equal(header_of(r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
        assert_string_equal(body_of(r), "");
        /* The length the GET would have. */
        g = get(f, "GET", "/metrics");
        (void)snprintf(length, sizeof(length), "%zu", strlen(body_of(g)));
        assert_string_equal(header_of(r, "Content-Length"), length);
        free(g);
        free(r);
}

static void test_not_found(void **state)
{
        static const char *const paths[] = {"/index.html", "/statusx", "/status/", "/metrics/x",
                                            "/STATUS",     "/x/../status", "/page/nope", "/pagex"};
        struct fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                char *r = get(f, "GET", paths[i]);

                print_message("GET %s\n", paths[i]);
                assert_int_equal(status_of(r), 404);
                assert_string_equal(header_of(r, "Content-Type"), "text/plain; charset=utf-8");
                assert_string_equal(body_of(r), "404 Not Found\n");
                free(r);
        }
}

static void test_bad_method(void **state)
{
        static const char *const methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
        struct fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
                char *r = get(f, methods[i], i % 2 ? "/metrics" : "/status");

                print_message("%s\n", methods[i]);
                assert_int_equal(status_of(r), 405);
                assert_string_equal(header_of(r, "Allow"), "GET, HEAD");
                assert_string_equal(body_of(r), "405 Method Not Allowed\n");
                free(r);
        }
        /* An unknown path stays 404 whatever the method. */
        {
                char *r = get(f, "POST", "/drain");

                assert_int_equal(status_of(r), 404);
                free(r);
        }
}

/* POST /backends/NAME/drain and /enable: by address (an IPv6 one percent-encoded) or instance id. */
static void test_maintenance(void **state)
{
        static const char *const not_found[] = {
                "/backends/127.0.0.1:9999/drain", "/backends/127.0.0.1:8082", "/backends//drain",
                "/backends/127.0.0.1:8082/reboot", "/backends/",
        };
        struct fixture *f = *state;
        struct backend *b = f->lbd.pool->backends[1];
        char *r;

        backend_set_healthy(b, true, "test");
        r = get(f, "POST", "/backends/127.0.0.1:8082/drain");
        assert_int_equal(status_of(r), 200);
        assert_string_equal(header_of(r, "Content-Type"), "application/json");
        assert_string_equal(body_of(r), "{\"backend\":\"127.0.0.1:8082\",\"instance_id\":null,\"maintenance\":true,"
                                        "\"state\":\"up\",\"in_rotation\":false,\"active\":0}\n");
        free(r);
        assert_true(b->maintenance);
        assert_false(backend_in_rotation(b));

        memcpy(b->instance_id, "i-0123456789abcdef0", 20);
        r = get(f, "POST", "/backends/i-0123456789abcdef0/enable");
        assert_int_equal(status_of(r), 200);
        assert_non_null(strstr(body_of(r), "\"maintenance\":false"));
        assert_non_null(strstr(body_of(r), "\"in_rotation\":true"));
        free(r);
        assert_false(b->maintenance);

        r = get(f, "POST", "/backends/%5B::1%5D:8083/drain");
        assert_int_equal(status_of(r), 200);
        free(r);
        assert_true(f->lbd.pool->backends[2]->maintenance);

        r = get(f, "GET", "/backends/127.0.0.1:8082/drain");
        assert_int_equal(status_of(r), 405);
        assert_string_equal(header_of(r, "Allow"), "POST");
        free(r);
        for (size_t i = 0; i < ELEMENTSOF(not_found); i++) {
                print_message("POST %s\n", not_found[i]);
                r = get(f, "POST", not_found[i]);
                assert_int_equal(status_of(r), 404);
                free(r);
        }
}

/* Oversized heads and bodies are refused, not buffered. */
static void test_limits(void **state)
{
        struct fixture *f = *state;
        size_t size = 64 * 1024, n;
        char *request = malloc(size), *r;

        assert_non_null(request);
        n = (size_t)snprintf(request, size, "GET /status HTTP/1.1\r\nHost: x\r\nX-Big: ");
        memset(request + n, 'a', size - n - 4);
        memcpy(request + size - 4, "\r\n\r\n", 4);
        r = exchange(f, request, size);
        assert_true(r[0] == '\0' || status_of(r) >= 400);
        free(r);

        n = (size_t)snprintf(
                request, size,
                "PUT /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n",
                (size_t)20000);
        memset(request + n, 'b', 20000);
        r = exchange(f, request, n + 20000);
        assert_true(r[0] == '\0' || status_of(r) >= 400);
        free(r);
        free(request);

        /* Still serving afterwards. */
        r = get(f, "GET", "/metrics");
        assert_int_equal(status_of(r), 200);
        free(r);
}

/* Several requests on one keep-alive connection. */
static void test_keep_alive(void **state)
{
        static const char requests[] = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
                                       "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        struct fixture *f = *state;
        char *r = exchange(f, requests, sizeof(requests) - 1);
        const char *second;

        assert_int_equal(status_of(r), 200);
        second = strstr(r + 1, "HTTP/1.1 200");
        assert_non_null(second);
        assert_non_null(strstr(second, "lbd_client_connections 0\n"));
        free(r);
}

/* ---- the control plane's part: a reconciler on a provider whose calls and status the test sets ---- */

static void run_for(struct fixture *f, unsigned ms)
{
        const struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)ms * 1000};

        assert_int_equal(event_base_loopexit(f->lbd.base, &tv), 0);
        assert_true(event_base_dispatch(f->lbd.base) >= 0);
}

struct fake_provider {
        provider_list_cb list_cb;
        void *userdata;
        struct provider_status status;
};

static int fake_list(struct provider *p, provider_list_cb cb, void *userdata)
{
        struct fake_provider *fp = p->data;

        fp->list_cb = cb;
        fp->userdata = userdata;
        return 0;
}

static void fake_status(struct provider *p, struct provider_status *ret)
{
        *ret = ((struct fake_provider *)p->data)->status;
}

static const struct provider_ops fake_ops = {
        .name = "fake",
        .managed = true,
        .list = fake_list,
        .status = fake_status,
};

static void fake_answer(struct fake_provider *fp, struct provider *p, int r)
{
        provider_list_cb cb = fp->list_cb;

        assert_non_null(cb);
        fp->list_cb = NULL;
        cb(p, r, NULL, 0, fp->userdata);
}

static cJSON *get_control(struct fixture *f, cJSON **root)
{
        char *r = get(f, "GET", "/status");
        cJSON *control;

        assert_int_equal(status_of(r), 200);
        *root = cJSON_Parse(body_of(r));
        free(r);
        assert_non_null(*root);
        control = cJSON_GetObjectItemCaseSensitive(*root, "control");
        assert_true(cJSON_IsObject(control));
        return control;
}

/* /status says why the provider fails in its own words (not an errno string), when the last good list
 * was, and that a call is failing right now (for how long, how many attempts); /metrics too. */
static void test_status_provider_errors(void **state)
{
        struct fixture *f = *state;
        struct fake_provider fp = {0};
        struct provider p = {.ops = &fake_ops, .base = f->lbd.base, .config = &f->config, .data = &fp};
        const cJSON *control, *api;
        cJSON *root;
        uint64_t wall = realtime_usec();
        char *r;

        config_init(&f->config);
        f->config.desired = 0; /* nothing to launch: lists only */
        assert_int_equal(reconcile_new(f->lbd.base, &p, f->lbd.pool, &f->config, &f->lbd.reconcile), 0);
        reconcile_start(f->lbd.reconcile);
        run_for(f, 20);

        /* Before any list. */
        control = get_control(f, &root);
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(control, "last_list_unix")));
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(control, "last_error")));
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(control, "api_failing")));
        cJSON_Delete(root);

        /* A good list, then one refused: the API's words, a control character made harmless. */
        fake_answer(&fp, &p, 0);
        reconcile_poll(f->lbd.reconcile);
        run_for(f, 20);
        (void)snprintf(fp.status.error, sizeof(fp.status.error), "%s",
                       "AuthFailure: AWS was not able to validate the provided access credentials\x1b[2J");
        fake_answer(&fp, &p, -EACCES);
        control = get_control(f, &root);
        assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(control, "list_ok")));
        assert_string_equal(string(control, "last_error"),
                            "AuthFailure: AWS was not able to validate the provided access credentials?[2J");
        assert_true(number(control, "last_list_unix") >= (double)(wall / USEC_PER_SEC) - 1);
        assert_true(number(control, "last_list_unix") <= (double)(realtime_usec() / USEC_PER_SEC) + 1);
        assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(control, "api_failing")));
        cJSON_Delete(root);

        /* A call failing now, 40 s into an outage, its third attempt failed. */
        fp.status.failures = 3;
        fp.status.failing_since_usec = now_usec() - 40 * USEC_PER_SEC;
        (void)snprintf(fp.status.error, sizeof(fp.status.error), "%s",
                       "Failed to connect to 127.0.0.1 port 9 after 0 ms: Couldn't connect to server "
                       "(Connection refused)");
        control = get_control(f, &root);
        api = cJSON_GetObjectItemCaseSensitive(control, "api_failing");
        assert_true(cJSON_IsObject(api));
        assert_true(number(api, "for_s") >= 40 && number(api, "for_s") < 42);
        assert_int_equal((int)number(api, "failed_attempts"), 3);
        assert_string_equal(string(api, "error"), fp.status.error);
        cJSON_Delete(root);

        r = get(f, "GET", "/metrics");
        assert_int_equal(status_of(r), 200);
        assert_non_null(strstr(body_of(r), "\nlbd_provider_api_failing_seconds 4"));
        assert_non_null(strstr(body_of(r), "\nlbd_provider_last_list_timestamp_seconds 1"));
        free(r);

        f->lbd.reconcile = reconcile_free(f->lbd.reconcile);
}

static void test_bind_fails(void **state)
{
        struct fixture *f = *state;
        struct admin *a = (struct admin *)&a;

        assert_int_equal(admin_new(&f->lbd, &f->addr, &a), -EADDRINUSE);
        assert_ptr_equal(a, (struct admin *)&a);
        assert_null(admin_free(NULL));
}

/* ---- the status page (lbd/statuspage.c) ---- */

/* Sends <method> <path> with <headers> (lines ending in CRLF, Host among them) and <body>. */
static char *send_with(struct fixture *f, const char *method, const char *path, const char *headers,
                       const char *body)
{
        char request[2048];
        int n;

        n = snprintf(request, sizeof(request),
                     "%s %s HTTP/1.1\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n%s", method, path,
                     headers, strlen(body), body);
        assert_true(n > 0 && (size_t)n < sizeof(request));
        return exchange(f, request, (size_t)n);
}

/* The token the page carries, as a browser reads it. */
static void page_token(struct fixture *f, char *buf, size_t size)
{
        char *r = get(f, "GET", "/");
        const char *p = strstr(r, "name=\"lbd-token\" content=\"");
        size_t n;

        assert_non_null(p);
        p += strlen("name=\"lbd-token\" content=\"");
        n = strcspn(p, "\"");
        assert_int_equal(n, 32);
        assert_true(n < size);
        memcpy(buf, p, n);
        buf[n] = '\0';
        free(r);
}

static void test_page(void **state)
{
        struct fixture *f = *state;
        struct backend *b1 = f->lbd.pool->backends[1];
        char *r;

        fill_state(f);
        /* What an instance id says is shown, never run. */
        memcpy(b1->instance_id, "i-<script>\"x", sizeof("i-<script>\"x"));
        memcpy(b1->zone, "us-east-1b", sizeof("us-east-1b"));
        r = get(f, "GET", "/");
        assert_int_equal(status_of(r), 200);
        assert_string_equal(header_of(r, "Content-Type"), "text/html; charset=utf-8");
        assert_non_null(strstr(header_of(r, "Content-Security-Policy"), "default-src 'none'"));
        assert_string_equal(header_of(r, "X-Frame-Options"), "DENY");
        /* With no-referrer, a browser would send the page's own forms with "Origin: null". */
        assert_string_equal(header_of(r, "Referrer-Policy"), "same-origin");
        assert_non_null(strstr(body_of(r), "<tr data-backend=\"127.0.0.1:8081\" data-state=\"up\">"));
        assert_non_null(strstr(body_of(r), "<tr data-backend=\"127.0.0.1:8082\" data-state=\"down\">"));
        assert_non_null(strstr(body_of(r), "<tr data-backend=\"[::1]:8083\""));
        assert_non_null(strstr(body_of(r), "i-&lt;script&gt;&quot;x"));
        assert_non_null(strstr(body_of(r), "<td data-label=\"Zone\">us-east-1b</td>"));
        assert_null(strstr(body_of(r), "<script>"));
        assert_non_null(strstr(body_of(r), "<span class=\"state st-up\">up</span>"));
        assert_non_null(strstr(body_of(r), "id=\"chart-rps\""));
        free(r);

        /* Its files, built in. */
        r = get(f, "GET", "/page.js");
        assert_int_equal(status_of(r), 200);
        assert_string_equal(header_of(r, "Content-Type"), "text/javascript; charset=utf-8");
        assert_non_null(strstr(body_of(r), "/page/data"));
        free(r);
        r = get(f, "GET", "/page.css");
        assert_int_equal(status_of(r), 200);
        assert_string_equal(header_of(r, "Content-Type"), "text/css; charset=utf-8");
        free(r);
        r = get(f, "POST", "/");
        assert_int_equal(status_of(r), 405);
        free(r);
}

static void test_page_data(void **state)
{
        struct fixture *f = *state;
        cJSON *root, *rows, *summary, *series;
        char *r;

        fill_state(f);
        r = get(f, "GET", "/page/data?since=0&events=0");
        assert_int_equal(status_of(r), 200);
        assert_string_equal(header_of(r, "Content-Type"), "application/json");
        root = cJSON_Parse(body_of(r));
        assert_non_null(root);
        rows = cJSON_GetObjectItem(root, "rows");
        assert_int_equal(cJSON_GetArraySize(rows), 3);
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "state")->valuestring, "up");
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "action")->valuestring,
                            "drain");
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 1), "state")->valuestring, "down");
        summary = cJSON_GetObjectItem(root, "summary");
        assert_int_equal(cJSON_GetObjectItem(summary, "healthy")->valueint, 1);
        assert_int_equal(cJSON_GetObjectItem(summary, "total")->valueint, 3);
        series = cJSON_GetObjectItem(root, "series");
        assert_true(cJSON_IsArray(cJSON_GetObjectItem(series, "t")));
        assert_true(cJSON_IsArray(cJSON_GetObjectItem(series, "p99")));
        assert_true(cJSON_IsArray(cJSON_GetObjectItem(root, "events")));
        cJSON_Delete(root);
        free(r);
        /* A malformed query is read as "everything". */
        r = get(f, "GET", "/page/data?since=-1&events=x%");
        assert_int_equal(status_of(r), 200);
        free(r);
}

static void test_page_host(void **state)
{
        static const char *const good[] = {"127.0.0.1", "127.0.0.1:9180", "localhost", "LocalHost:9180",
                                           "[::1]:80"};
        static const char *const bad[] = {
                "evil.example", "evil.example:9180", "localhost.evil.example", "localhost:x", "",
                ":9180",        "127.0.0.1.nip.io"};
        struct fixture *f = *state;
        char headers[256];

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                char *r;

                (void)snprintf(headers, sizeof(headers), "Host: %s\r\n", good[i]);
                r = send_with(f, "GET", "/", headers, "");
                print_message("Host: %s\n", good[i]);
                assert_int_equal(status_of(r), 200);
                free(r);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *r;

                (void)snprintf(headers, sizeof(headers), "Host: %s\r\n", bad[i]);
                r = send_with(f, "GET", "/", headers, "");
                print_message("Host: %s\n", bad[i]);
                assert_int_equal(status_of(r), 403);
                assert_null(strstr(r, "lbd-token"));
                free(r);
                r = send_with(f, "GET", "/page/data", headers, "");
                assert_int_equal(status_of(r), 403);
                free(r);
        }
}

/* Changes from the page need its token and come from its own origin; the admin API for scripts works as
 * before, but not from another site's page. */
static void test_page_csrf(void **state)
{
        /* Refused, and nothing changes: no token, a wrong one, a foreign Origin or site, a rebound Host
         * (TOKEN stands for the page's token). Then the admin API from another site. */
        static const struct {
                const char *path, *headers, *body;
        } refused[] = {
                {"/page/backends/127.0.0.1:8081/drain", "Host: 127.0.0.1:9180\r\n", ""},
                {"/page/backends/127.0.0.1:8081/drain",
                 "Host: 127.0.0.1:9180\r\nX-LBD-Token: 00000000000000000000000000000000\r\n", ""},
                {"/page/backends/127.0.0.1:8081/drain", "Host: 127.0.0.1:9180\r\n", "token=short"},
                {"/page/backends/127.0.0.1:8081/drain",
                 "Host: 127.0.0.1:9180\r\nX-LBD-Token: TOKEN\r\nOrigin: http://evil.example\r\n", ""},
                {"/page/backends/127.0.0.1:8081/drain",
                 "Host: 127.0.0.1:9180\r\nX-LBD-Token: TOKEN\r\nOrigin: null\r\n", ""},
                {"/page/backends/127.0.0.1:8081/drain",
                 "Host: 127.0.0.1:9180\r\nX-LBD-Token: TOKEN\r\nSec-Fetch-Site: cross-site\r\n", ""},
                {"/page/backends/127.0.0.1:8081/drain",
                 "Host: evil.example:9180\r\nX-LBD-Token: TOKEN\r\nOrigin: http://evil.example:9180\r\n",
                 ""},
                {"/backends/127.0.0.1:8081/drain", "Host: 127.0.0.1:9180\r\nOrigin: http://evil.example\r\n",
                 ""},
                {"/backends/127.0.0.1:8081/drain", "Host: 127.0.0.1:9180\r\nSec-Fetch-Site: same-site\r\n",
                 ""},
        };
        struct fixture *f = *state;
        struct backend *b0 = f->lbd.pool->backends[0];
        char token[64], headers[512], form[128];
        char *r;

        page_token(f, token, sizeof(token));
        for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
                const char *at = strstr(refused[i].headers, "TOKEN");

                if (at)
                        (void)snprintf(headers, sizeof(headers), "%.*s%s%s", (int)(at - refused[i].headers),
                                       refused[i].headers, token, at + strlen("TOKEN"));
                else
                        (void)snprintf(headers, sizeof(headers), "%s", refused[i].headers);
                print_message("POST %s with %s\n", refused[i].path, headers);
                r = send_with(f, "POST", refused[i].path, headers, refused[i].body);
                assert_int_equal(status_of(r), 403);
                free(r);
                assert_false(b0->maintenance);
        }

        /* The page's script: the token in a header, from its own origin. */
        (void)snprintf(headers, sizeof(headers),
                       "Host: 127.0.0.1:9180\r\nX-LBD-Token: %s\r\nOrigin: "
                       "http://127.0.0.1:9180\r\nSec-Fetch-Site: same-origin\r\n",
                       token);
        r = send_with(f, "POST", "/page/backends/127.0.0.1:8081/drain", headers, "");
        assert_int_equal(status_of(r), 200);
        assert_non_null(strstr(body_of(r), "\"maintenance\":true"));
        free(r);
        assert_true(b0->maintenance);
        /* The page without script: a form with the token, sent back to the page. */
        (void)snprintf(form, sizeof(form), "token=%s", token);
        r = send_with(f, "POST", "/page/backends/127.0.0.1%3A8081/enable",
                      "Host: localhost:9180\r\nOrigin: http://localhost:9180\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n",
                      form);
        assert_int_equal(status_of(r), 303);
        assert_string_equal(header_of(r, "Location"), "/");
        free(r);
        assert_false(b0->maintenance);
        r = send_with(f, "GET", "/page/backends/127.0.0.1:8081/drain", "Host: 127.0.0.1\r\n", "");
        assert_int_equal(status_of(r), 405);
        free(r);

        /* The admin API without Origin (lbctl, curl): as before. */
        r = get(f, "POST", "/backends/127.0.0.1:8081/drain");
        assert_int_equal(status_of(r), 200);
        free(r);
        assert_true(b0->maintenance);
}

static void test_page_confirm(void **state)
{
        struct fixture *f = *state;
        char token[64];
        char *r;

        page_token(f, token, sizeof(token));
        r = get(f, "GET", "/page/confirm?backend=127.0.0.1%3A8082&action=drain");
        assert_int_equal(status_of(r), 200);
        assert_non_null(strstr(body_of(r), "action=\"/page/backends/127.0.0.1%3A8082/drain\""));
        assert_non_null(strstr(body_of(r), token));
        free(r);
        r = get(f, "GET", "/page/confirm?backend=127.0.0.1%3A8082&action=reboot");
        assert_int_equal(status_of(r), 400);
        free(r);
        r = get(f, "GET", "/page/confirm?action=drain");
        assert_int_equal(status_of(r), 400);
        free(r);
        r = get(f, "GET", "/page/confirm?backend=%3Cx%3E&action=drain");
        assert_int_equal(status_of(r), 404);
        free(r);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_status, setup, teardown),
                cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
                cmocka_unit_test_setup_teardown(test_head, setup, teardown),
                cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_method, setup, teardown),
                cmocka_unit_test_setup_teardown(test_maintenance, setup, teardown),
                cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
                cmocka_unit_test_setup_teardown(test_keep_alive, setup, teardown),
                cmocka_unit_test_setup_teardown(test_status_provider_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bind_fails, setup, teardown),
                cmocka_unit_test_setup_teardown(test_page, setup, teardown),
                cmocka_unit_test_setup_teardown(test_page_data, setup, teardown),
                cmocka_unit_test_setup_teardown(test_page_host, setup, teardown),
                cmocka_unit_test_setup_teardown(test_page_csrf, setup, teardown),
                cmocka_unit_test_setup_teardown(test_page_confirm, setup, teardown),
        };

        alarm(60);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
