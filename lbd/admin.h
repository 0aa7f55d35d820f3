/* The admin API, on its own loopback listener (the HTTP engine, http/server.h; small, trusted clients only):
 *   GET /status   JSON: every backend's address, state, health, counters and last check
 *   GET /metrics  Prometheus text format, version 0.0.4
 *   POST /backends/NAME/drain, /backends/NAME/enable   maintenance (refused from another site's page)
 *   GET /, /page...  the status page (statuspage.h)
 * Anything else is 404, other methods 405. Changes nothing but the maintenance flag. */
#pragma once

#include <stdbool.h>

#include "common/macro.h"
#include "common/netaddr.h"
#include "lbd/backend.h"

struct evbuffer;
struct http_request;
struct lbd;
struct admin;
struct backend;
struct netaddr;

/* A text answer being written: writes to <out> that remember a failure (out of memory), checked once at
 * the end, rather than after every line. */
struct admin_out {
        struct evbuffer *out;
        bool failed;
};
void admin_printf(struct admin_out *m, const char *format, ...) _printf_(2, 3);

#define ADMIN_BACKEND_NAME_MAX (NETADDR_STRLEN + BACKEND_INSTANCE_ID_MAX) /* an address or instance id */

/* Reads <rest>, "NAME/drain" or "NAME/enable" of a maintenance path, into <ret_drain> and NAME
 * percent-decoded (<name>, <size> bytes). Returns 0, or -ENOENT when <rest> is neither, or NAME is empty,
 * too long or holds a NUL. */
int admin_action_parse(const char *rest, bool *ret_drain, char *name, size_t size);

/* The active backend called <name> (its address or its instance id), or NULL. */
struct backend *admin_find_backend(const struct lbd *lbd, const char *name);
/* Takes <b> out of rotation (<drain>) or puts it back, and tells the timeline, naming <by> ("admin API"). */
void admin_set_maintenance(struct lbd *lbd, struct backend *b, bool drain, const char *by);

/* Answers <req> with <status>, <content_type>, "Cache-Control: no-store", more <fields> (whole "Name:
 * value\r\n" lines, or NULL) and all of <body> (NULL: none). */
void admin_respond(struct http_request *req, unsigned status, const char *content_type, const char *fields,
                   struct evbuffer *body);
/* A short text/plain answer: "<status> <reason>[: <detail>]" (<reason> NULL: the status's own phrase). */
void admin_respond_text(struct http_request *req, unsigned status, const char *fields, const char *reason,
                        const char *detail);
/* Adds "lease" to <root>: this host's lease as /status shows it (null without [lease]); the lease
 * listener (peer.c) answers with the same object. Returns 0 or -ENOMEM. */
struct cJSON;
int admin_lease_json(struct cJSON *root, const struct lbd *lbd);

/* Binds <addr> and serves on lbd->base. Returns 0, or -errno (logged by the caller). */
int admin_new(struct lbd *lbd, const struct netaddr *addr, struct admin **ret);
struct admin *admin_free(struct admin *a);
