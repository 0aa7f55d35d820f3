/* An HTTP/1.1 server engine on one libevent loop: accepts connections, reads each request with http.c's
 * strict parser, assembles its body into one bounded buffer, hands the complete request to the
 * application, and writes the application's answer. The application sees requests, never sockets.
 *
 * What the engine guarantees, whatever the clients do:
 * - Bounds: at most <max_connections> connections (beyond it the listeners are not watched: the kernel's
 *   backlog holds newcomers until a connection ends, see server.c), and with <max_per_client> at most that
 *   many from one address (its next ones are closed at once, so no client holds every slot); a head of at
 *   most <max_head_size> bytes (431); a body of at most the request's limit (413, before a byte of it is
 *   read when the length is declared); a client that does not read its answers stops being read (and parsed)
 *   while its output holds more than HTTP_SERVER_OUTPUT_MAX bytes, and is closed when it takes nothing for
 *   <idle_timeout>.
 * - Deadlines: the whole head within <head_timeout> of its first byte (of the connection's accept for the
 *   first request), whatever trickles in (408); the whole body within <body_timeout> of the head (408); a
 *   keep-alive connection idle for <idle_timeout> is closed.
 * - Out of descriptors or memory at accept(): the listeners are unwatched for a backoff and one line is
 *   logged per episode (common/acceptpause.h).
 * - Framing as http.c rules it (no smuggling: one Content-Length, chunked only, no obs-fold, no bare LF).
 * - One request at a time per connection: pipelined requests are answered in order, the next head parsed
 *   only once the previous answer is queued.
 * - Every answered request, the engine's own refusals included (400, 408, 413, 431, 501, 505), goes
 *   through the ops' <access> hook once. The refusals are first handed to the ops' <error>, which answers
 *   them with a body of the application's choosing (its JSON error shape, say).
 *
 * Request lifetime: a request handed to <request> or <error> belongs to the application until it calls
 * http_request_respond() exactly once, which frees it. The request outlives its connection: when the
 * client goes away first, req->conn is NULL and the answer is only reported to <access>. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/netaddr.h"
#include "http/http.h"

struct event_base;
struct http_server;
struct http_conn;
struct ssl_ctx_st;

#define HTTP_SERVER_LISTEN_MAX     8
#define HTTP_SERVER_OUTPUT_MAX     (256 * 1024) /* queued answer bytes beyond which a client is not read */
#define HTTP_SERVER_REQUEST_ID_MAX 128
#define HTTP_SERVER_HEADERS_MAX    2048 /* an answer's head, the application's fields included */

struct http_server_limits {
        size_t max_connections;     /* connections open at once, 1.. */
        size_t max_per_client;      /* of which from one address (0: no such limit; the listener's clients
                                     * then must be trusted, as relays in front of webd are) */
        size_t max_head_size;       /* request line and fields, bytes (431 beyond) */
        uint64_t max_body_size;     /* the body limit of a request <body_limit> says nothing of (413) */
        uint64_t head_timeout_usec; /* 408 when a head is not complete by then */
        uint64_t body_timeout_usec; /* 408 when a body is not complete this long after its head */
        uint64_t idle_timeout_usec; /* keep-alive connections idle this long are closed; also how long a
                                     * client may take nothing of its answer */
};

struct http_request {
        struct http_server *server;
        struct http_conn *conn;      /* NULL once the client is gone */
        bool parsed;                 /* the head was parsed: method, path, query and fields are known */
        enum http_method method;     /* when <parsed> */
        const char *method_name;     /* "GET"...; "" when not <parsed> */
        const char *path;            /* the target's path, not decoded ("" when not <parsed>) */
        const char *query;           /* after '?', not decoded, or NULL */
        const char *body;            /* the whole body, decoded from chunks, NUL-terminated ("" if none) */
        size_t body_len;
        bool head_only;              /* HEAD: the answer goes without its body */
        char request_id[HTTP_SERVER_REQUEST_ID_MAX + 1]; /* the client's X-Request-Id when sane, else made */
        char peer[NETADDR_STRLEN];   /* the peer's address, without the port */
        struct netaddr peer_addr;
        uint64_t start_usec;         /* the first byte of its head (the accept, for a connection's first) */
        void *userdata;              /* the application's */
        /* the engine's */
        char *buf;                   /* a copy of the head, values NUL-terminated in place */
        struct evbuffer *body_buf;
        struct http_head head;       /* last: only its used part is written (<parsed>) */
};

/* What an application does with its requests. */
struct http_server_ops {
        /* A complete request (head and body). Answer with http_request_respond(), now or later. */
        void (*request)(struct http_request *req, void *userdata);
        /* The body limit for the request whose head was just parsed (the route's); NULL, or 0 returned:
         * the server's max_body_size. May not answer. */
        uint64_t (*body_limit)(const struct http_request *req, void *userdata);
        /* The engine refuses <req> with <status> for <reason> (a short phrase for logs and bodies): answer
         * it with http_request_respond() and that status. <req> may be unparsed. The connection closes
         * after the answer. NULL: a text/plain answer. */
        void (*error)(struct http_request *req, unsigned status, const char *reason, void *userdata);
        /* Every answered request, once, when the answer is queued: <status> and the body's length. */
        void (*access)(const struct http_request *req, unsigned status, size_t body_len, void *userdata);
};

/* An answer. <headers>: more fields, each a whole "Name: value\r\n" line, or NULL. Content-Length,
 * X-Request-Id, Date and, when needed, Connection are the engine's. The whole head must fit in
 * HTTP_SERVER_HEADERS_MAX bytes (else the connection is closed: a bug of the application's). */
struct http_response {
        unsigned status;
        const char *content_type; /* NULL: none */
        const char *headers;
        const void *body;
        size_t body_len;
};

/* Creates a server on <base> (not listening yet). <limits> and <ops> are copied. Returns 0, -EINVAL (a
 * limit of 0, no request op) or -ENOMEM. */
int http_server_new(struct event_base *base, const struct http_server_limits *limits,
                    const struct http_server_ops *ops, void *userdata, struct http_server **ret);

/* Listens on <addr> too (at most HTTP_SERVER_LISTEN_MAX). <what> names it in log lines and must live as
 * long as the server. Returns 0 or -errno. */
int http_server_listen(struct http_server *s, const struct netaddr *addr, const char *what);

/* From now on every connection accepted speaks TLS with <ctx> (a server context; the server takes a
 * reference), or plain HTTP when NULL. Connections already open keep what they have: a reload of the
 * certificates is a call with the new context. The handshake is bounded by the head timeout. Returns 0
 * or -ENOMEM (nothing changed). */
int http_server_set_tls(struct http_server *s, struct ssl_ctx_st *ctx);

/* Connections closed at their accept because their address held <max_per_client> already. */
uint64_t http_server_refused_per_client(const struct http_server *s);

/* Names the server in its log lines ("admin API": "admin API: out of file descriptors ..."); "HTTP server"
 * until then. <name> must live as long as the server. */
void http_server_set_name(struct http_server *s, const char *name);

/* Stops accepting; idle connections are closed now, the others after the answer in progress, which
 * carries "Connection: close". Requests the application holds stay its own. */
void http_server_shutdown(struct http_server *s);

/* Closes every connection and listener. Requests the application still holds must be answered first
 * (their answers only reach <access> once the server is gone: don't). Returns NULL. */
struct http_server *http_server_free(struct http_server *s);

/* Connections open now. */
size_t http_server_connections(const struct http_server *s);
/* The address listener <i> (in the order of http_server_listen()) is bound to: its port when asked for
 * port 0. Returns 0, -ENOENT or -errno. */
int http_server_bound(const struct http_server *s, size_t i, struct netaddr *ret);

/* Queues the answer to <req> and frees it (every pointer into it is invalid afterwards). */
void http_request_respond(struct http_request *req, const struct http_response *resp);

/* The value of the first field named <name> (case-insensitive), NUL-terminated, or NULL. */
const char *http_request_header(const struct http_request *req, const char *name);
/* Calls <fn> with every value of the fields named <name>, in order, until it returns > 0. Returns that,
 * or 0. */
int http_request_header_each(const struct http_request *req, const char *name,
                             int (*fn)(const char *value, void *userdata), void *userdata);

/* One parameter of a query string, decoded. */
struct http_param {
        const char *name, *value;
};

/* Parses the query string <query> ("a=1&b=x%20y"; NULL or "" is empty) into <params> (at most <max>;
 * http_query_count() says how many it has), decoding %XX in values and '+' as a space, in place in <buf>
 * (strlen(query) + 1 bytes the caller provides). Names are taken as they are; a value is a C string, so a
 * %00 in it ends it. What the values may hold is the application's to check. Returns the number of
 * parameters, -EINVAL when malformed (a part without "=", or with an empty name) or -E2BIG beyond <max>. */
int http_parse_query(const char *query, char *buf, struct http_param *params, size_t max);
/* The number of parameters <query> holds at most ("&"-separated parts): 0 for NULL or "". */
size_t http_query_count(const char *query);
