/* The HTTP side of webd: on the HTTP engine (http/server.h), a route table, bearer-token checks, JSON bodies,
 * the one error shape of the API, request ids, per-request deadlines, and a hook that sees every finished
 * request (the activity log).
 *
 * A request is a reference-counted struct server_request. The server holds one reference until the
 * response is sent; whoever starts something asynchronous on its behalf (a query, a password hash) takes
 * another and drops it when called back. A callback that finds the request already answered (it timed out
 * meanwhile) just drops its reference: the response goes out exactly once. */
#pragma once

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/netaddr.h"
#include "http/server.h"
#include "webd/config.h"
#include "webd/json.h"

struct event_base;
struct db;
struct db_query;
struct server;
struct server_request;

#define SERVER_REQUEST_ID_MAX 128
#define SERVER_USER_NAME_MAX  64
#define SERVER_HEADERS_OUT_MAX 256 /* the fields handlers add to an answer (server_add_header()) */

/* Called with the result of server_query(): <error> and <res> as for db_callback_t. Only called while the
 * request is unanswered. */
typedef void (*server_query_cb)(struct server_request *r, int error, const PGresult *res);
/* Called when the request's deadline passes before it was answered; must answer it. */
typedef void (*server_timeout_cb)(struct server_request *r);

struct server_request {
        struct server *server;
        struct http_request *req;   /* the engine's; NULL once answered */
        unsigned refs;
        bool answered;
        enum http_method method;    /* when <parsed> */
        bool parsed;                /* a request the engine could parse (else it refused it) */
        const char *method_name;    /* "GET", ...; "-" when not <parsed> */
        const char *path;           /* raw, as received ("-" when not <parsed>); valid until answered */
        const char *query;          /* raw query string, or NULL; valid until answered */
        void *userdata;             /* the route's */
        int64_t id;                 /* the {id} of a route that has one, else 0 */
        cJSON *body;                /* the JSON object body, for routes that take one */
        int64_t user_id;            /* the authenticated user, for routes that need one, else 0 */
        int64_t token_gen;          /* the token generation the token was issued under */
        char user_name[SERVER_USER_NAME_MAX];
        bool probe;                 /* the route's method is a health probe (server_method.probe) */
        char request_id[SERVER_REQUEST_ID_MAX + 1];
        char client[NETADDR_STRLEN]; /* the client's address, without the port (server_client_address()) */
        struct netaddr client_addr;  /* the same; len 0 when unknown */
        uint64_t start_usec;
        int status;
        struct event *timer;
        server_timeout_cb on_timeout;
        struct db_query *pending;   /* the query in flight for server_query() */
        server_query_cb pending_cb;
        bool pending_auth;          /* the query in flight checks the token too (server_query_auth()) */
        bool auth;                  /* the route needs a token */
        bool auth_checked;          /* a server_query_auth() statement found the token good (or couldn't ask) */
        struct http_param *params;  /* the query string, parsed on first use (one allocation with its text) */
        int n_params;               /* or -EINVAL when it could not be parsed */
        char headers[SERVER_HEADERS_OUT_MAX]; /* added to the answer: "Name: value\r\n" lines */
        size_t headers_len;
};

typedef void (*server_handler_t)(struct server_request *r, void *userdata);

struct server_method {
        unsigned method;           /* HTTP_GET, ... (http_parser's); a GET handler also answers HEAD */
        server_handler_t handler;
        bool auth;                 /* needs a valid bearer token: 401 otherwise */
        bool body;                 /* takes a JSON object body: 415 / 400 otherwise */
        const char *const *params; /* the query parameters it takes, NULL-terminated; NULL: none (400) */
        bool probe;                /* a health probe: the log hook is told (it counts, not logs, them) */
};

/* The parameters of server_paging(). */
extern const char *const server_paging_params[];

/* What the server reports about every answered request. Strings are valid during the call only. */
struct server_log_entry {
        const char *method;
        const char *path;
        int status;
        double latency_ms;
        const char *request_id;
        const char *client;
        int64_t user_id;       /* 0: anonymous */
        const char *user_name; /* the token's name, the name a login tried (sanitised), or "" */
        bool probe;            /* a health probe */
};

typedef void (*server_log_cb)(const struct server_log_entry *e, void *userdata);

/* Creates the server on <base> for <config> (not copied: must outlive the server), verifying bearer tokens
 * with <key> (copied). Queries go to <db>. Doesn't listen yet. Returns 0, -EINVAL or -ENOMEM. */
int server_new(struct event_base *base, const struct config *config, struct db *db, const uint8_t *key,
               size_t key_len, struct server **ret);

/* Routes requests for <path> ("/tasks") and "<path>/": with <with_id>, for "<path>/<id>" and
 * "<path>/<id>/" where <id> is a positive decimal integer (anything else there is 404). The methods are
 * copied; <userdata> goes to their handlers. Returns 0, -E2BIG or -EINVAL. */
int server_route(struct server *s, const char *path, bool with_id, const struct server_method *m, size_t n,
                 void *userdata);

/* Sets what sees every answered request. */
void server_set_log(struct server *s, server_log_cb cb, void *userdata);

/* Starts accepting connections on the configured address. Returns 0 or -errno. */
int server_listen(struct server *s);

/* SIGHUP with [webd] tls_cert set: loads the certificate and key files again (a renewal); new connections
 * use them, open ones keep theirs. A bad file is logged and the running certificate kept: -EINVAL. */
int server_reload_tls(struct server *s);

/* Stops accepting; <done> is called (from the loop) once no request is in progress. */
void server_stop(struct server *s, void (*done)(void *userdata), void *userdata);
/* Requests being handled now. */
size_t server_requests_in_progress(const struct server *s);

/* Answers every request still in progress with 503, closes everything. Returns NULL. */
struct server *server_free(struct server *s);

struct server_request *server_request_ref(struct server_request *r);
struct server_request *server_request_unref(struct server_request *r);

/* Adds a response header (copied) to the unanswered request. Returns 0, -ENOTCONN (answered), or -ENOBUFS
 * beyond SERVER_HEADERS_OUT_MAX bytes of them. */
int server_add_header(struct server_request *r, const char *name, const char *value);

/* Answers <r> with <status> and the JSON <body> (taken over and freed; NULL: no body, e.g. 204). Does
 * nothing if already answered. */
void server_reply(struct server_request *r, int status, cJSON *body);
/* Answers <r> with <status> and the <len> bytes at <data> (copied) as a body of Content-Type <type>. Does
 * nothing if already answered. */
void server_reply_raw(struct server_request *r, int status, const char *type, const char *data, size_t len);
/* Answers with the error shape {"error":{"code":<code>,"message":<message>}}. */
void server_reply_error(struct server_request *r, int status, const char *code, const char *message);
/* Answers 400 validation_failed with <p>'s list as "fields" ({"field":"problem"}) and, when <p> counted
 * more than it lists, their number as "unlisted". Takes the list: <p> is left empty. */
void server_reply_invalid(struct server_request *r, struct json_problems *p);
/* Answers for a failed query or a failed server_query() call: 503 unavailable when the database is down,
 * busy or the connection broke, 500 internal otherwise (logged). */
void server_reply_db_error(struct server_request *r, int error, const PGresult *res);

/* Runs statement <stmt> for <r>: <cb> receives the result if <r> is still unanswered by then. Holds a reference
 * meanwhile; answering <r> first (deadline) cancels the query. One at a time per request. Returns 0, or
 * the error of db_query() (nothing will be called back). */
int server_query(struct server_request *r, unsigned stmt, const char *const *values, int n, server_query_cb cb);

/* Statements of authenticated routes check, in the same statement and so in the same round trip, that the
 * token's user still exists and that its token generation is still the token's (a bumped generation
 * revokes every token issued before). SERVER_AUTH_SQL(<inner>, <order>) wraps a statement for
 * server_query_auth(): $1 is the user id and $2 the token generation; <inner> takes its own parameters from
 * $3, and gates itself on EXISTS (SELECT 1 FROM auth), so that a revoked token reads and writes nothing
 * (e.g. "UPDATE tasks ... WHERE id = $3 AND user_id = $1 AND EXISTS (SELECT 1 FROM auth) RETURNING ...",
 * a one-time filter for the planner; an INSERT selects from auth). The result
 * has one more column, first, true when the token is still good, and always at least one row: <inner>'s
 * rows after it (ordered by <order>, e.g. "ORDER BY q.id DESC", or ""), or one row of NULLs when it had
 * none. */
#define SERVER_AUTH_SQL(inner, order)                                                                       \
        "WITH auth AS (SELECT id FROM users WHERE id = $1 AND token_generation = $2), q AS (" inner ") "      \
        "SELECT EXISTS (SELECT 1 FROM auth), q.* FROM (SELECT 1) AS one LEFT JOIN q ON true " order

/* Runs <stmt>, made with SERVER_AUTH_SQL(), for the authenticated request <r>: <values> ($3 on, <n> of
 * them, at most DB_PARAMS_MAX - 2) follow the user id and token generation. When the token turns out to be
 * revoked or its user gone (also a foreign key violation: the user was deleted meanwhile), <r> is answered
 * 401 here, the same way for both; else <cb> gets the result, whose first column it can ignore. Returns like
 * server_query(). */
int server_query_auth(struct server_request *r, unsigned stmt, const char *const *values, int n,
                      server_query_cb cb);

/* Answers 401 for a token that verifies but was revoked, or whose user no longer exists. A 400 or 415 for
 * a request whose token hasn't been checked in the database yet is held back until it has (one query, on
 * that error path only), so that such a token gets this 401 whatever else is wrong with the request. */
void server_reply_revoked(struct server_request *r);

/* Replaces the request's deadline: <cb> (NULL: the default 503) runs if <r> is unanswered <usec> from
 * now. Returns 0 or -ENOMEM. */
int server_request_set_timeout(struct server_request *r, uint64_t usec, server_timeout_cb cb);

/* The value of query-string parameter <name> (decoded), or NULL when absent. NULL too when the query
 * string can't be parsed. */
const char *server_param(struct server_request *r, const char *name);

/* Reads the "limit" (1..100, default 20) and "offset" (0..10^9, default 0) parameters. Bad values are
 * added to *<problems> (see json_add_problem()). Returns the number of problems, or -ENOMEM. */
int server_paging(struct server_request *r, int64_t *ret_limit, int64_t *ret_offset,
                  struct json_problems *problems);

/* Small formatting helpers for the request path, where snprintf() showed in profiles. */
#define SERVER_INT_MAX 21 /* "-9223372036854775808" and a NUL */
/* Writes <v> in decimal into <buf>; returns <buf>. */
char *server_int_text(int64_t v, char buf[static SERVER_INT_MAX]);
/* Copies <src> into <dst> (<size> > 0 bytes), cut to fit, always NUL-terminated; returns the length. */
size_t server_copy_text(char *dst, size_t size, const char *src);

/* The database the server was given. */
struct db *server_db(const struct server *s);

/* True when <id> (may be NULL) is a sane request id: 1..SERVER_REQUEST_ID_MAX bytes of [A-Za-z0-9._:-].
 * Exposed for tests. */
bool server_request_id_sane(const char *id);

/* Parses the id part of a path: a positive decimal integer that fits in int64_t, no sign, no leading
 * zero, optionally followed by "/" when <slash>. Returns 0 and the id, or -EINVAL. Exposed for tests. */
int server_parse_id(const char *s, bool slash, int64_t *ret);

/* Sets the user name reported with <r> (server_log_entry) from <name>, which may come from a client: cut
 * to SERVER_USER_NAME_MAX - 1 bytes, and every byte outside printable ASCII replaced by '?'. */
void server_request_set_user_name(struct server_request *r, const char *name);

/* Finds the client of a request that came from <peer> (an address without a port) with the
 * X-Forwarded-For values <xff> (<n_xff> of them, in the order of the request's fields): when <peer> lies
 * in one of the <n> <trusted> networks (the relays), the right-most X-Forwarded-For entry (over every such
 * value, in order) that is not itself trusted, or the left-most when all are; an entry that is not an
 * address ends the walk at the trusted hop that wrote it. Otherwise <peer> itself. Returns 0 and the
 * address, or -EINVAL when <peer> is not an address. Exposed for tests. */
int server_client_address(const char *peer, const char *const *xff, size_t n_xff,
                          const struct netaddr_cidr *trusted, size_t n, struct netaddr *ret);

/* True when the Content-Type <value> is application/json (parameters such as charset allowed). Exposed
 * for tests. */
bool server_content_type_is_json(const char *value);
