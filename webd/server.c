/* The HTTP server: the HTTP engine (http/server.h) underneath, our routing and request lifecycle on top.
 *
 * Every request goes through server_dispatch(), in this order: route (404; a trailing "/" is the same
 * route), method (405 with Allow), body size (413), bearer token (401), query parameters (400 for one the
 * method doesn't take or one given twice), Content-Type and JSON body (415, 400), then the route's
 * handler.
 *
 * The bearer token is checked in two places. Here, without the database: signature, expiry, claims. Then
 * in the database, by the handler's own statement (SERVER_AUTH_SQL, server_query_auth()): that the user
 * still exists and the token's generation is still the user's. Every handler of an authenticated route
 * goes through server_query_auth(), so a deleted user's or a revoked token is refused with the same 401 on
 * every route, at the cost of a primary-key lookup inside a statement the request makes anyway. The
 * handler answers at once or starts a query; a deadline (request_timeout) answers 503 for it if nothing
 * else has by then, and cancels the query. After the answer the log hook sees the request (method, path,
 * status, latency, request id, client, user), which is how the activity log is fed.
 *
 * The engine hands over complete requests, the body in one buffer of at most max_body_size bytes. What it
 * refuses itself (a malformed or oversized head, a body too large or too slow, an unknown method, another
 * HTTP version: 400, 408, 413, 431, 501, 505) comes to server_refused(), which answers it like any other
 * error: in the JSON shape, through the log hook, so it reaches the journal and the activity table. A
 * request outlives its connection (the engine's promise): a client that goes away is noticed by the engine,
 * and our answer then only reaches the log hook.
 *
 * Every answer carries X-Request-Id (the client's, when it is sane, else one made here), Cache-Control:
 * no-store (answers hold tokens and private data) and, with a body, Content-Type: application/json. */
#include "webd/server.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/parse.h"
#include "common/tlsio.h"
#include "webd/db.h"
#include "webd/json.h"
#include "webd/jwt.h"
#include "webd/secret.h"

#define SERVER_ROUTES_MAX      32
#define SERVER_METHODS_MAX     8
#define SERVER_ROUTE_PATH_MAX  64
#define SERVER_TOKEN_SLOTS     256 /* verified tokens remembered */

/* A token that passed jwt_verify(), remembered so that the next request bearing it costs a lookup
 * instead of an HMAC and two JSON parses. Only a byte-for-byte identical token matches (compared in
 * constant time), and its expiry is checked again on every use; so the cache accepts exactly what
 * jwt_verify() would, as long as the key doesn't change, which it doesn't while the process runs. */
struct server_token {
        char *token; /* NULL: empty slot */
        size_t len;
        int64_t user_id;
        int64_t exp;
        int64_t gen;
        char name[SERVER_USER_NAME_MAX];
};

struct server_route_entry {
        char path[SERVER_ROUTE_PATH_MAX];
        size_t len;
        bool with_id;
        struct server_method methods[SERVER_METHODS_MAX];
        size_t n_methods;
        void *userdata;
};

/* The list of requests in progress, to answer them all when the server is freed. */
struct server_link {
        TAILQ_ENTRY(server_link) entry;
        struct server_request *request;
};
TAILQ_HEAD(server_link_list, server_link);

struct server {
        struct event_base *base;
        const struct config *config;
        struct db *db;
        struct http_server *http;
        uint8_t key[SECRET_MAX];
        size_t key_len;
        struct server_route_entry routes[SERVER_ROUTES_MAX];
        size_t n_routes;
        server_log_cb log_cb;
        void *log_userdata;
        struct server_link_list requests;
        size_t n_requests;
        bool stopping;
        void (*stopped_cb)(void *userdata);
        void *stopped_userdata;
        struct event *stopped; /* deferred call of stopped_cb */
        const struct timeval *request_timeout; /* request_timeout as a libevent common timeout */
        struct server_token tokens[SERVER_TOKEN_SLOTS];
        unsigned check; /* the token check alone, for answers held back */
};

static void server_stopped_cb(evutil_socket_t fd, short what, void *userdata);

/* An error answer held back while the token is checked in the database (server_defer_error()). */
struct server_deferred {
        int status; /* 0: none */
        char code[32];
        char message[256];
        cJSON *fields;
};

/* Where a request's link and deadline live: allocated with it, so they can't fail separately. */
struct server_request_full {
        struct server_request r;
        struct server_link link;
        struct server_deferred deferred;
        struct event timer;         /* r.timer points here once assigned */
};

char *server_int_text(int64_t v, char buf[static SERVER_INT_MAX])
{
        char tmp[SERVER_INT_MAX];
        uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        size_t n = 0, i = 0;

        do {
                tmp[n++] = (char)('0' + u % 10);
                u /= 10;
        } while (u > 0);
        if (v < 0)
                buf[i++] = '-';
        while (n > 0)
                buf[i++] = tmp[--n];
        buf[i] = '\0';
        return buf;
}

size_t server_copy_text(char *dst, size_t size, const char *src)
{
        size_t n = strnlen(src, size - 1);

        memcpy(dst, src, n);
        dst[n] = '\0';
        return n;
}

bool server_request_id_sane(const char *id)
{
        size_t n = 0;

        if (!id)
                return false;
        for (; id[n]; n++) {
                char c = id[n];

                if (n >= SERVER_REQUEST_ID_MAX)
                        return false;
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == ':' || c == '-'))
                        return false;
        }
        return n > 0;
}

int server_parse_id(const char *s, bool slash, int64_t *ret)
{
        char digits[24];
        size_t n = strspn(s, "0123456789");
        uint64_t v;

        if (n == 0 || n >= sizeof(digits) || s[0] == '0')
                return -EINVAL;
        if (s[n] != '\0' && !(slash && s[n] == '/' && s[n + 1] == '\0'))
                return -EINVAL;
        memcpy(digits, s, n);
        digits[n] = '\0';
        if (parse_uint(digits, 1, INT64_MAX, &v) < 0)
                return -EINVAL;
        *ret = (int64_t)v;
        return 0;
}

bool server_content_type_is_json(const char *value)
{
        static const char json[] = "application/json";
        size_t n = sizeof(json) - 1;

        if (!value)
                return false;
        value += strspn(value, " \t");
        if (strncasecmp(value, json, n) != 0)
                return false;
        value += n;
        value += strspn(value, " \t");
        return *value == '\0' || *value == ';';
}

static void server_on_request(struct http_request *hr, void *userdata);
static void server_refused(struct http_request *hr, unsigned status, const char *reason, void *userdata);

int server_new(struct event_base *base, const struct config *config, struct db *db, const uint8_t *key,
               size_t key_len, struct server **ret)
{
        static const struct http_server_ops ops = {
                .request = server_on_request,
                .error = server_refused,
        };
        struct http_server_limits limits;
        struct timeval deadline;
        struct server *s;
        int k;

        if (!base || !config || !key || key_len == 0 || key_len > SECRET_MAX)
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->base = base;
        s->config = config;
        s->db = db;
        memcpy(s->key, key, key_len);
        s->key_len = key_len;
        TAILQ_INIT(&s->requests);

        if (db && db_statement(db, SERVER_AUTH_SQL("SELECT 1", ""), 2, &s->check) < 0) {
                server_free(s);
                return -ENOMEM;
        }
        limits = (struct http_server_limits){
                .max_connections = (size_t)config->max_connections,
                .max_head_size = (size_t)config->max_header_size,
                .max_body_size = config->max_body_size,
                .head_timeout_usec = config->header_timeout_usec,
                .body_timeout_usec = config->body_timeout_usec,
                .idle_timeout_usec = config->idle_timeout_usec,
        };
        k = http_server_new(base, &limits, &ops, s, &s->http);
        if (k < 0) {
                server_free(s);
                return k;
        }
        s->stopped = event_new(base, -1, 0, server_stopped_cb, s);
        deadline = timeval_from_usec(config->request_timeout_usec);
        s->request_timeout = event_base_init_common_timeout(base, &deadline);
        if (!s->stopped) {
                server_free(s);
                return -ENOMEM;
        }
        *ret = s;
        return 0;
}

int server_route(struct server *s, const char *path, bool with_id, const struct server_method *m, size_t n,
                 void *userdata)
{
        struct server_route_entry *e;
        size_t len = strlen(path);

        if (path[0] != '/' || len >= SERVER_ROUTE_PATH_MAX || n == 0 || n > SERVER_METHODS_MAX)
                return -EINVAL;
        if (s->n_routes >= SERVER_ROUTES_MAX)
                return -E2BIG;
        e = &s->routes[s->n_routes++];
        memcpy(e->path, path, len + 1);
        e->len = len;
        e->with_id = with_id;
        memcpy(e->methods, m, n * sizeof(*m));
        e->n_methods = n;
        e->userdata = userdata;
        return 0;
}

void server_set_log(struct server *s, server_log_cb cb, void *userdata)
{
        s->log_cb = cb;
        s->log_userdata = userdata;
}

struct db *server_db(const struct server *s)
{
        return s->db;
}

struct server_request *server_request_ref(struct server_request *r)
{
        r->refs++;
        return r;
}

struct server_request *server_request_unref(struct server_request *r)
{
        if (!r || --r->refs > 0)
                return NULL;
        /* Only the request itself: the server may be gone by now (see server_free()). */
        if (r->timer)
                (void)evtimer_del(r->timer);
        free(r->params);
        cJSON_Delete(((struct server_request_full *)r)->deferred.fields);
        cJSON_Delete(r->body);
        free(r);
        return NULL;
}

int server_add_header(struct server_request *r, const char *name, const char *value)
{
        size_t n = strlen(name), v = strlen(value);

        if (!r->req)
                return -ENOTCONN;
        if (n + v + 4 >= sizeof(r->headers) - r->headers_len)
                return -ENOBUFS;
        memcpy(r->headers + r->headers_len, name, n);
        memcpy(r->headers + r->headers_len + n, ": ", 2);
        memcpy(r->headers + r->headers_len + n + 2, value, v);
        memcpy(r->headers + r->headers_len + n + 2 + v, "\r\n", 3);
        r->headers_len += n + v + 4;
        return 0;
}

static void server_check_stopped(struct server *s)
{
        if (s->stopping && s->n_requests == 0 && s->stopped_cb)
                event_active(s->stopped, 0, 0);
}

static void server_stopped_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct server *s = userdata;
        void (*cb)(void *) = s->stopped_cb;

        s->stopped_cb = NULL;
        if (cb)
                cb(s->stopped_userdata);
}

/* Sends the answer and runs the log hook; the request must be unanswered. The answer's body is the JSON
 * <body> (NULL: none), or else the <len> bytes at <raw> (copied) of Content-Type <type>. */
static void server_send(struct server_request *r, int status, cJSON *body, const char *type, const char *raw,
                        size_t len)
{
        struct server_request_full *full = (struct server_request_full *)r;
        struct server *s = r->server;
        struct http_response resp = { .headers = r->headers };
        char *text = NULL;

        r->answered = true;
        r->status = status;
        if (r->timer)
                (void)evtimer_del(r->timer);
        if (r->pending) {
                db_query_cancel(r->pending);
                r->pending = NULL;
                server_request_unref(r); /* the query's reference; the server's is still held */
        }

        if (body) {
                text = cJSON_PrintUnformatted(body);
                if (!text) {
                        status = r->status = 500;
                        body = NULL;
                }
        }
        if (text) {
                resp.content_type = "application/json";
                resp.body = text;
                resp.body_len = strlen(text);
        } else if (raw) {
                resp.content_type = type;
                resp.body = raw;
                resp.body_len = len;
        }
        resp.status = (unsigned)status;

        /* The path belongs to the engine's request: log before it is answered and freed. */
        if (s->log_cb) {
                struct server_log_entry e = {
                        .method = r->method_name,
                        .path = r->path,
                        .status = status,
                        .latency_ms = (double)(now_usec() - r->start_usec) / 1000.0,
                        .request_id = r->request_id,
                        .client = r->client,
                        .user_id = r->user_id,
                        .user_name = r->user_name,
                        .probe = r->probe,
                };
                s->log_cb(&e, s->log_userdata);
        }

        http_request_respond(r->req, &resp);
        cJSON_free(text);
        r->req = NULL;
        r->path = "";
        r->query = NULL;

        TAILQ_REMOVE(&s->requests, &full->link, entry);
        s->n_requests--;
        server_check_stopped(s);
        server_request_unref(r);
}

void server_reply(struct server_request *r, int status, cJSON *body)
{
        if (!r || r->answered) {
                cJSON_Delete(body);
                return;
        }
        server_send(r, status, body, NULL, NULL, 0);
        cJSON_Delete(body);
}

void server_reply_raw(struct server_request *r, int status, const char *type, const char *data, size_t len)
{
        if (r && !r->answered)
                server_send(r, status, NULL, type, data, len);
}

static cJSON *server_error_body(const char *code, const char *message, cJSON *fields)
{
        cJSON *body = cJSON_CreateObject(), *error = cJSON_CreateObject();

        if (!body || !error || !cJSON_AddStringToObject(error, "code", code) ||
            !cJSON_AddStringToObject(error, "message", message)) {
                cJSON_Delete(body);
                cJSON_Delete(error);
                cJSON_Delete(fields);
                return NULL;
        }
        if (fields)
                cJSON_AddItemToObject(error, "fields", fields);
        cJSON_AddItemToObject(body, "error", error);
        return body;
}

static void server_reply_error_fields(struct server_request *r, int status, const char *code,
                                      const char *message, cJSON *fields);

static void server_deferred_checked(struct server_request *r, int error, const PGresult *res)
{
        struct server_deferred *d = &((struct server_request_full *)r)->deferred;
        cJSON *fields = TAKE_PTR(d->fields);

        /* The token is good (or the database failed: then the request's own error still stands). */
        server_reply_error_fields(r, d->status, d->code, d->message, fields);
}

/* A request with a token that verified but wasn't checked in the database yet, answered 400 or 415 before
 * its statement ran: the token is checked first, so that a revoked token or a deleted user's gets the same
 * 401 whatever else is wrong with the request. Costs a query on that error path only. Returns 0 when the
 * answer is held back (<fields> taken), < 0 when it must go now. */
static int server_defer_error(struct server_request *r, int status, const char *code, const char *message,
                              cJSON *fields)
{
        struct server_deferred *d = &((struct server_request_full *)r)->deferred;

        if ((status != 400 && status != 415) || !r->auth || r->auth_checked || r->user_id <= 0 || d->status ||
            !r->server->db)
                return -EALREADY;
        d->status = status;
        server_copy_text(d->code, sizeof(d->code), code);
        server_copy_text(d->message, sizeof(d->message), message);
        if (server_query_auth(r, r->server->check, NULL, 0, server_deferred_checked) < 0) {
                r->auth_checked = true; /* the database can't tell now: the request's own answer */
                return -EAGAIN;
        }
        d->fields = fields;
        return 0;
}

static void server_reply_error_fields(struct server_request *r, int status, const char *code,
                                      const char *message, cJSON *fields)
{
        if (!r || r->answered) {
                cJSON_Delete(fields);
                return;
        }
        if (server_defer_error(r, status, code, message, fields) >= 0)
                return;
        if (status == 401)
                (void)server_add_header(r, "WWW-Authenticate", "Bearer realm=\"webd\"");
        if (status == 503)
                (void)server_add_header(r, "Retry-After", "1");
        server_reply(r, status, server_error_body(code, message, fields));
}

void server_reply_error(struct server_request *r, int status, const char *code, const char *message)
{
        server_reply_error_fields(r, status, code, message, NULL);
}

void server_reply_invalid(struct server_request *r, struct json_problems *p)
{
        size_t listed = (size_t)cJSON_GetArraySize(p->fields);
        cJSON *body, *error;
        char message[96];

        if (!r || r->answered || p->count <= listed) {
                server_reply_error_fields(r, 400, "validation_failed", "the request has invalid fields",
                                          TAKE_PTR(p->fields));
                json_problems_clear(p);
                return;
        }
        (void)snprintf(message, sizeof(message),
                       "the request has %zu invalid fields; the first %zu are listed", p->count, listed);
        body = server_error_body("validation_failed", message, TAKE_PTR(p->fields));
        error = cJSON_GetObjectItemCaseSensitive(body, "error");
        if (error && !cJSON_AddNumberToObject(error, "unlisted", (double)(p->count - listed))) {
                cJSON_Delete(body);
                body = NULL;
        }
        json_problems_clear(p);
        if (!body)
                server_reply_error(r, 500, "internal", "internal error");
        else
                server_reply(r, 400, body);
}

void server_reply_db_error(struct server_request *r, int error, const PGresult *res)
{
        switch (error) {
        case -ENOTCONN:
        case -ECONNRESET:
        case -EBUSY:
        case -EAGAIN:
        case -ETIMEDOUT:
                server_reply_error(r, 503, "unavailable", "the database is unavailable; try again");
                return;
        default:
                log_error_errno(error, "Request %s: database error: %s", r->request_id,
                                res ? PQresultErrorMessage(res) : "%m");
                server_reply_error(r, 500, "internal", "internal error");
        }
}

void server_reply_revoked(struct server_request *r)
{
        server_reply_error(r, 401, "unauthorized",
                           "the token was revoked or its user no longer exists; log in again");
}

static void server_query_done(int error, const PGresult *res, void *userdata)
{
        struct server_request *r = userdata;
        server_query_cb cb = r->pending_cb;

        r->pending = NULL;
        if (!r->answered) {
                /* A foreign key violation: the user was deleted while the statement ran. */
                if (r->pending_auth && (error == -ENOENT || (error >= 0 && (PQntuples(res) < 1 ||
                                                                             PQgetvalue(res, 0, 0)[0] != 't'))))
                        server_reply_revoked(r);
                else {
                        if (r->pending_auth)
                                r->auth_checked = true;
                        cb(r, error, res);
                }
        }
        server_request_unref(r);
}

int server_query(struct server_request *r, unsigned stmt, const char *const *values, int n, server_query_cb cb)
{
        int k;

        if (r->answered || r->pending)
                return -EINVAL;
        k = db_query(r->server->db, stmt, values, n, server_query_done, r, &r->pending);
        if (k < 0)
                return k;
        r->pending_cb = cb;
        r->pending_auth = false;
        server_request_ref(r);
        return 0;
}

int server_query_auth(struct server_request *r, unsigned stmt, const char *const *values, int n,
                      server_query_cb cb)
{
        char user[SERVER_INT_MAX], gen[SERVER_INT_MAX];
        const char *all[DB_PARAMS_MAX];
        int k;

        if (n < 0 || n > DB_PARAMS_MAX - 2 || r->user_id <= 0)
                return -EINVAL;
        all[0] = server_int_text(r->user_id, user);
        all[1] = server_int_text(r->token_gen, gen);
        for (int i = 0; i < n; i++)
                all[i + 2] = values[i];
        k = server_query(r, stmt, all, n + 2, cb);
        if (k >= 0)
                r->pending_auth = true;
        return k;
}

static void server_timeout_fired(evutil_socket_t fd, short what, void *userdata)
{
        struct server_request *r = userdata;

        if (r->answered)
                return;
        if (r->on_timeout)
                r->on_timeout(r);
        else
                server_reply_error(r, 503, "unavailable", "the request took too long; try again");
}

int server_request_set_timeout(struct server_request *r, uint64_t usec, server_timeout_cb cb)
{
        struct server_request_full *full = (struct server_request_full *)r;
        struct server *s = r->server;
        struct timeval tv = timeval_from_usec(usec);

        if (!r->timer) {
                if (evtimer_assign(&full->timer, s->base, server_timeout_fired, r) < 0)
                        return -ENOMEM;
                r->timer = &full->timer;
        }
        r->on_timeout = cb;
        /* The usual deadline is a common timeout: an O(1) queue instead of the timer heap. */
        if (usec == s->config->request_timeout_usec && s->request_timeout)
                return evtimer_add(r->timer, s->request_timeout) < 0 ? -ENOMEM : 0;
        return evtimer_add(r->timer, &tv) < 0 ? -ENOMEM : 0;
}

/* Parses the query string into r->params once. Returns the number of parameters, -EINVAL (malformed) or
 * -ENOMEM. Bounded by the head's size, which holds the query string. */
static int server_parse_params(struct server_request *r)
{
        size_t len, max;
        int n;

        if (r->params || r->n_params < 0)
                return r->n_params;
        if (!r->query)
                return 0;
        len = strlen(r->query);
        max = http_query_count(r->query);
        r->params = malloc(max * sizeof(*r->params) + len + 1);
        if (!r->params)
                return -ENOMEM;
        n = http_parse_query(r->query, (char *)(r->params + max), r->params, max);
        r->n_params = n;
        return n;
}

const char *server_param(struct server_request *r, const char *name)
{
        if (server_parse_params(r) <= 0)
                return NULL;
        for (int i = 0; i < r->n_params; i++)
                if (strcmp(r->params[i].name, name) == 0)
                        return r->params[i].value;
        return NULL;
}

/* Reads an integer parameter in [min, max]; absent: <def>. Returns 0, or 1 after adding a problem. */
static int server_int_param(struct server_request *r, const char *name, uint64_t min, uint64_t max,
                            uint64_t def, int64_t *ret, struct json_problems *problems)
{
        const char *v = server_param(r, name);
        uint64_t n = def;
        char message[64];
        int k;

        if (v && parse_uint(v, min, max, &n) < 0) {
                (void)snprintf(message, sizeof(message), "must be an integer from %" PRIu64 " to %" PRIu64,
                               min, max);
                k = json_add_problem(problems, name, message);
                return k < 0 ? k : 1;
        }
        *ret = (int64_t)n;
        return 0;
}

int server_paging(struct server_request *r, int64_t *ret_limit, int64_t *ret_offset,
                  struct json_problems *problems)
{
        int64_t limit = 20, offset = 0;
        int a, b;

        a = server_int_param(r, "limit", 1, 100, 20, &limit, problems);
        if (a < 0)
                return a;
        b = server_int_param(r, "offset", 0, 1000000000, 0, &offset, problems);
        if (b < 0)
                return b;
        if (a + b == 0) {
                *ret_limit = limit;
                *ret_offset = offset;
        }
        return a + b;
}

/* Finds the route for <path>; every route takes a trailing "/" too. Returns it, with *<ret_id> for routes
 * with an id, or NULL. */
static const struct server_route_entry *server_find_route(const struct server *s, const char *path,
                                                          int64_t *ret_id)
{
        for (size_t i = 0; i < s->n_routes; i++) {
                const struct server_route_entry *e = &s->routes[i];

                if (strncmp(path, e->path, e->len) != 0)
                        continue;
                if (!e->with_id) {
                        if (path[e->len] == '\0' || strcmp(path + e->len, "/") == 0)
                                return e;
                        continue;
                }
                if (path[e->len] == '/' && server_parse_id(path + e->len + 1, true, ret_id) >= 0)
                        return e;
        }
        return NULL;
}

const char *const server_paging_params[] = {"limit", "offset", NULL};

/* Checks the query string of <r> against <allowed> (NULL: none; at most 64 names): each parameter known
 * and given once. Returns 0, or answers 400 and returns < 0. Linear in the length of the query string. */
static int server_check_params(struct server_request *r, const char *const *allowed)
{
        _cleanup_(json_problems_clear) struct json_problems problems = {0};
        uint64_t seen = 0;
        int k;

        if (!r->query)
                return 0;
        k = server_parse_params(r);
        if (k == -EINVAL) {
                server_reply_error(r, 400, "bad_request", "the query string is malformed (name=value&...)");
                return k;
        }
        for (int j = 0; j < r->n_params && k >= 0; j++) {
                const struct http_param *p = &r->params[j];
                size_t i = 0;

                while (allowed && allowed[i] && i < 64 && strcmp(allowed[i], p->name) != 0)
                        i++;
                if (!allowed || !allowed[i] || i >= 64)
                        k = json_add_problem(&problems, p->name, "unknown parameter");
                else if (seen & (UINT64_C(1) << i))
                        k = json_add_problem(&problems, p->name, "given more than once");
                else
                        seen |= UINT64_C(1) << i;
        }
        if (k < 0) {
                server_reply_error(r, 500, "internal", "internal error");
                return k;
        }
        if (problems.count > 0) {
                server_reply_invalid(r, &problems);
                return -EINVAL;
        }
        return 0;
}

static const struct server_method *server_find_method(const struct server_route_entry *e, enum http_method m)
{
        for (size_t i = 0; i < e->n_methods; i++)
                if (e->methods[i].method == (unsigned)m)
                        return &e->methods[i];
        if (m == HTTP_HEAD)
                return server_find_method(e, HTTP_GET);
        return NULL;
}

static void server_reply_method_not_allowed(struct server_request *r, const struct server_route_entry *e)
{
        char allow[SERVER_METHODS_MAX * 16] = "";
        size_t len = 0;

        /* At most SERVER_METHODS_MAX methods of at most 7 letters, and HEAD: it always fits. */
        for (size_t i = 0; i < e->n_methods; i++) {
                len += (size_t)snprintf(allow + len, sizeof(allow) - len, "%s%s", len ? ", " : "",
                                        http_method_str((enum http_method)e->methods[i].method));
                if (e->methods[i].method == HTTP_GET)
                        len += (size_t)snprintf(allow + len, sizeof(allow) - len, ", HEAD");
        }
        (void)server_add_header(r, "Allow", allow);
        server_reply_error(r, 405, "method_not_allowed", "method not allowed on this resource");
}

/* The cache slot of <token> (<len> bytes): FNV-1a of the signature's end, which a client can't choose
 * for a token that verifies. */
static struct server_token *server_token_slot(struct server *s, const char *token, size_t len)
{
        uint64_t h = UINT64_C(14695981039346656037);

        for (size_t i = len > 16 ? len - 16 : 0; i < len; i++)
                h = (h ^ (unsigned char)token[i]) * UINT64_C(1099511628211);
        return &s->tokens[h % SERVER_TOKEN_SLOTS];
}

/* Checks the bearer token. Returns 0 (r->user_id set), or -ENOKEY (none), -ETIME (expired), -ERANGE
 * (issued in the future), or another negative value (invalid). */
static int server_authenticate(struct server *s, struct server_request *r)
{
        const char *h = http_request_header(r->req, "Authorization");
        int64_t now = (int64_t)(realtime_usec() / USEC_PER_SEC);
        struct server_token *slot;
        struct jwt_claims claims;
        size_t len;
        uint64_t id;
        int k;

        if (!h)
                return -ENOKEY;
        h += strspn(h, " \t");
        if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
                return -EINVAL;
        h += 6;
        h += strspn(h, " \t");
        len = strnlen(h, JWT_MAX + 1);
        if (len == 0 || len > JWT_MAX)
                return -EBADMSG;

        slot = server_token_slot(s, h, len);
        if (slot->token && slot->len == len && CRYPTO_memcmp(slot->token, h, len) == 0) {
                if (slot->exp <= now)
                        return -ETIME;
                r->user_id = slot->user_id;
                r->token_gen = slot->gen;
                memcpy(r->user_name, slot->name, sizeof(r->user_name));
                return 0;
        }

        k = jwt_verify(s->key, s->key_len, h, now, &claims);
        if (k < 0)
                return k;
        if (parse_uint(claims.sub, 1, INT64_MAX, &id) < 0)
                return -EBADMSG;
        r->user_id = (int64_t)id;
        r->token_gen = claims.gen;
        (void)snprintf(r->user_name, sizeof(r->user_name), "%s", claims.name);

        free(slot->token);
        slot->token = malloc(len);
        if (slot->token) {
                memcpy(slot->token, h, len);
                slot->len = len;
                slot->user_id = r->user_id;
                slot->exp = claims.exp;
                slot->gen = claims.gen;
                memcpy(slot->name, r->user_name, sizeof(slot->name));
        }
        return 0;
}

/* Parses the body of <r> into r->body. Returns 0, or answers the request and returns < 0. */
static int server_read_body(struct server_request *r)
{
        const char *type = http_request_header(r->req, "Content-Type");
        int k;

        if (!server_content_type_is_json(type)) {
                server_reply_error(r, 415, "unsupported_media_type",
                                   "the body must be JSON, with Content-Type: application/json");
                return -EINVAL;
        }
        k = json_parse(r->req->body, r->req->body_len, &r->body);
        if (k == -ENOMEM) {
                server_reply_error(r, 500, "internal", "internal error");
                return k;
        }
        if (k < 0) {
                server_reply_error(r, 400, "bad_request", json_parse_reason(k));
                return k;
        }
        if (!cJSON_IsObject(r->body)) {
                server_reply_error(r, 400, "bad_request", "the body must be a JSON object");
                return -EINVAL;
        }
        return 0;
}

static bool server_trusted(const struct netaddr *a, const struct netaddr_cidr *trusted, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (netaddr_cidr_contains(&trusted[i], a))
                        return true;
        return false;
}

/* Walks the X-Forwarded-For entries of <value> from the right, updating *<client> with each one that
 * parses. Returns 1 when a client was found (an untrusted entry, or one that is not an address: the walk
 * ends), 0 to go on with the header before. */
static int server_forwarded_walk(const char *value, const struct netaddr_cidr *trusted, size_t n,
                                 struct netaddr *client)
{
        const char *end = value + strlen(value);

        while (end > value) {
                const char *start = end;
                char entry[NETADDR_STRLEN];
                struct netaddr a;
                size_t len;

                while (start > value && start[-1] != ',')
                        start--;
                len = (size_t)(end - start);
                end = start > value ? start - 1 : value;
                while (len > 0 && (*start == ' ' || *start == '\t'))
                        start++, len--;
                while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t'))
                        len--;
                /* netaddr_parse() reads ":80" and "*:80" as 0.0.0.0: not an address here. */
                if (len == 0 || len >= sizeof(entry) || *start == ':' || *start == '*')
                        return 1;
                memcpy(entry, start, len);
                entry[len] = '\0';
                if (netaddr_parse(entry, 1, true, &a) < 0)
                        return 1;
                *client = a;
                if (!server_trusted(&a, trusted, n))
                        return 1;
        }
        return 0;
}

int server_client_address(const char *peer, const char *const *xff, size_t n_xff,
                          const struct netaddr_cidr *trusted, size_t n, struct netaddr *ret)
{
        struct netaddr client;

        if (!peer || netaddr_parse(peer, 1, true, &client) < 0)
                return -EINVAL;
        if (server_trusted(&client, trusted, n))
                for (size_t i = n_xff; i > 0; i--)
                        if (server_forwarded_walk(xff[i - 1], trusted, n, &client) > 0)
                                break;
        netaddr_set_port(&client, 0);
        *ret = client;
        return 0;
}

/* The X-Forwarded-For values of a request, in order. */
struct server_xff {
        const char *values[HTTP_MAX_FIELDS];
        size_t n;
};

static int server_xff_add(const char *value, void *userdata)
{
        struct server_xff *x = userdata;

        if (x->n < ELEMENTSOF(x->values))
                x->values[x->n++] = value;
        return 0;
}

/* Sets r->client and r->client_addr: the peer, or the client a trusted relay names. */
static void server_set_client(struct server *s, struct server_request *r)
{
        const char *peer = r->req->peer;
        struct server_xff xff = { .n = 0 };

        if (s->config->n_trusted_proxies > 0)
                (void)http_request_header_each(r->req, "X-Forwarded-For", server_xff_add, &xff);
        if (server_client_address(peer, xff.values, xff.n, s->config->trusted_proxies,
                                  s->config->n_trusted_proxies, &r->client_addr) < 0 ||
            netaddr_format_host(&r->client_addr, r->client, sizeof(r->client)) < 0) {
                r->client_addr.len = 0;
                server_copy_text(r->client, sizeof(r->client), peer);
        }
}

void server_request_set_user_name(struct server_request *r, const char *name)
{
        size_t i;

        for (i = 0; name[i] && i < sizeof(r->user_name) - 1; i++)
                r->user_name[i] = name[i] > 0x20 && name[i] < 0x7f ? name[i] : '?';
        r->user_name[i] = '\0';
}

static void server_dispatch(struct server *s, struct server_request *r)
{
        const struct server_route_entry *route;
        const struct server_method *m;
        int k;

        route = server_find_route(s, r->path, &r->id);
        if (!route) {
                server_reply_error(r, 404, "not_found", "not found");
                return;
        }
        m = server_find_method(route, r->method);
        if (!m) {
                server_reply_method_not_allowed(r, route);
                return;
        }
        r->probe = m->probe;
        if (m->auth) {
                r->auth = true;
                k = server_authenticate(s, r);
                if (k < 0) {
                        server_reply_error(r, 401, "unauthorized",
                                           k == -ENOKEY  ? "a bearer token is required"
                                           : k == -ETIME ? "the token has expired; log in again"
                                           : k == -ERANGE
                                                   ? "the token was issued in the future; check the clocks"
                                                   : "the token is not valid");
                        return;
                }
        }
        if (server_check_params(r, m->params) < 0)
                return;
        if (m->body && server_read_body(r) < 0)
                return;
        r->userdata = route->userdata;
        m->handler(r, route->userdata);
}

/* A new request object for the engine's <hr>, on the list of those in progress; NULL when out of memory
 * (<hr> is then answered 500 here). */
static struct server_request *server_request_new(struct server *s, struct http_request *hr)
{
        struct server_request_full *full;
        struct server_request *r;

        full = calloc(1, sizeof(*full));
        if (!full) {
                static const char body[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";

                http_request_respond(hr, &(struct http_response){ .status = 500,
                                                                 .content_type = "application/json",
                                                                 .body = body,
                                                                 .body_len = sizeof(body) - 1 });
                return NULL;
        }
        r = &full->r;
        r->server = s;
        r->req = hr;
        r->refs = 1;
        r->start_usec = hr->start_usec;
        r->parsed = hr->parsed;
        r->method = hr->method;
        /* Answers hold tokens and private data: never cached. First, so that it always fits. */
        r->headers_len = server_copy_text(r->headers, sizeof(r->headers), "Cache-Control: no-store\r\n");
        r->method_name = hr->parsed ? hr->method_name : "-";
        r->path = hr->parsed ? hr->path : "-";
        r->query = hr->query;
        server_copy_text(r->request_id, sizeof(r->request_id), hr->request_id);
        server_set_client(s, r);

        full->link.request = r;
        TAILQ_INSERT_TAIL(&s->requests, &full->link, entry);
        s->n_requests++;
        return r;
}

static void server_on_request(struct http_request *hr, void *userdata)
{
        struct server *s = userdata;
        struct server_request *r = server_request_new(s, hr);

        if (!r)
                return;
        if (server_request_set_timeout(r, s->config->request_timeout_usec, NULL) < 0) {
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        server_dispatch(s, r);
}

/* What the engine refused itself: answered in the API's error shape, and logged like every request. */
static void server_refused(struct http_request *hr, unsigned status, const char *reason, void *userdata)
{
        struct server *s = userdata;
        struct server_request *r = server_request_new(s, hr);
        const char *code;
        char message[128];

        if (!r)
                return;
        switch (status) {
        case 408:
                code = "request_timeout";
                break;
        case 413:
                code = "payload_too_large";
                (void)snprintf(message, sizeof(message), "the body is larger than %" PRIu64 " bytes",
                               s->config->max_body_size);
                reason = message;
                break;
        case 431:
                code = "header_too_large";
                break;
        case 501:
                code = "not_implemented";
                break;
        case 505:
                code = "version_not_supported";
                break;
        case 500:
                code = "internal";
                break;
        default:
                code = "bad_request";
                break;
        }
        server_reply_error(r, (int)status, code, reason);
}

/* Loads the configured certificate and key into a new context for the connections accepted from now on.
 * Returns 0 or -EINVAL (logged: file and reason); the running context, if any, stays then. */
static int server_load_tls(struct server *s)
{
        char reason[512];
        SSL_CTX *ctx = tls_server_ctx_new(s->config->tls_cert, s->config->tls_key, false, reason, sizeof(reason));
        int r;

        if (!ctx) {
                log_error("TLS: %s", reason);
                return -EINVAL;
        }
        r = http_server_set_tls(s->http, ctx);
        SSL_CTX_free(ctx);
        if (r < 0) {
                log_error("TLS: out of memory");
                return r;
        }
        return 0;
}

int server_listen(struct server *s)
{
        if (s->config->tls_cert[0] && server_load_tls(s) < 0)
                return -EINVAL;
        return http_server_listen(s->http, &s->config->listen, "webd");
}

int server_reload_tls(struct server *s)
{
        if (!s->config->tls_cert[0])
                return 0;
        if (server_load_tls(s) < 0) {
                log_error("TLS: reload refused, the running certificate stays");
                return -EINVAL;
        }
        log_notice("TLS: loaded %s; new connections use it", s->config->tls_cert);
        return 0;
}

void server_stop(struct server *s, void (*done)(void *userdata), void *userdata)
{
        http_server_shutdown(s->http);
        s->stopping = true;
        s->stopped_cb = done;
        s->stopped_userdata = userdata;
        server_check_stopped(s);
}

size_t server_requests_in_progress(const struct server *s)
{
        return s ? s->n_requests : 0;
}

struct server *server_free(struct server *s)
{
        struct server_link *l;

        if (!s)
                return NULL;
        s->stopping = true;
        s->stopped_cb = NULL;
        while ((l = TAILQ_FIRST(&s->requests)))
                server_reply_error(l->request, 503, "unavailable", "the server is stopping; try again");
        s->http = http_server_free(s->http);
        if (s->stopped)
                event_free(s->stopped);
        explicit_bzero(s->key, sizeof(s->key));
        for (size_t i = 0; i < SERVER_TOKEN_SLOTS; i++)
                free(s->tokens[i].token);
        free(s);
        return NULL;
}
