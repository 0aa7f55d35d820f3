/* GET /metrics: the route, the text buffer the modules write their samples into, and who may read it.
 *
 * Modules register a writer (metrics_add()) at start; a scrape runs every writer in order into one
 * buffer of METRICS_TEXT_MAX bytes, so a scrape can't grow: a line that doesn't fit ends the text, with a
 * comment saying it was cut. Nothing here touches the database. */
#include "webd/metrics.h"

#include <errno.h>
#include <event2/http.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "webd/server.h"

#define METRICS_CUT "# cut here: the text reached its size limit\n"

struct metrics_source {
        metrics_writer_t writer;
        void *userdata;
};

struct metrics {
        struct metrics_source sources[METRICS_SOURCES_MAX];
        size_t n_sources;
};

bool metrics_client_local(const char *client)
{
        return strncmp(client, "127.", 4) == 0 || strcmp(client, "::1") == 0 ||
               strncmp(client, "::ffff:127.", 11) == 0;
}

/* Appends one line; once one doesn't fit, nothing more is appended. */
_printf_(2, 3) static void metrics_line(struct metrics_text *t, const char *format, ...)
{
        size_t room = sizeof(t->buf) - sizeof(METRICS_CUT) - t->len;
        va_list ap;
        int n;

        if (t->truncated)
                return;
        va_start(ap, format);
        n = vsnprintf(t->buf + t->len, room, format, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= room) {
                t->truncated = true;
                memcpy(t->buf + t->len, METRICS_CUT, sizeof(METRICS_CUT));
                t->len += sizeof(METRICS_CUT) - 1;
                return;
        }
        t->len += (size_t)n;
}

void metrics_family(struct metrics_text *t, const char *name, const char *type, const char *help)
{
        metrics_line(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_sample(struct metrics_text *t, const char *name, const char *labels, uint64_t value)
{
        if (labels && labels[0])
                metrics_line(t, "%s{%s} %" PRIu64 "\n", name, labels, value);
        else
                metrics_line(t, "%s %" PRIu64 "\n", name, value);
}

void metrics_single(struct metrics_text *t, const char *name, const char *type, const char *help,
                    uint64_t value)
{
        metrics_family(t, name, type, help);
        metrics_sample(t, name, NULL, value);
}

static void metrics_get(struct server_request *r, void *userdata)
{
        struct metrics *m = userdata;
        struct metrics_text *t;

        if (!metrics_client_local(r->client) ||
            http_request_header(r->req, "X-Forwarded-For")) {
                server_reply_error(r, 404, "not_found", "not found");
                return;
        }
        t = malloc(sizeof(*t));
        if (!t) {
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        t->len = 0;
        t->truncated = false;
        for (size_t i = 0; i < m->n_sources; i++)
                m->sources[i].writer(t, m->sources[i].userdata);
        server_reply_raw(r, 200, "text/plain; version=0.0.4; charset=utf-8", t->buf, t->len);
        free(t);
}

int metrics_new(struct server *s, struct metrics **ret)
{
        static const struct server_method methods[] = {
                { HTTP_GET, metrics_get, false, false, NULL, false },
        };
        struct metrics *m;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        r = server_route(s, "/metrics", false, methods, ELEMENTSOF(methods), m);
        if (r < 0) {
                free(m);
                return r;
        }
        *ret = m;
        return 0;
}

int metrics_add(struct metrics *m, metrics_writer_t writer, void *userdata)
{
        if (m->n_sources >= METRICS_SOURCES_MAX)
                return -E2BIG;
        m->sources[m->n_sources++] = (struct metrics_source){.writer = writer, .userdata = userdata};
        return 0;
}

struct metrics *metrics_free(struct metrics *m)
{
        free(m);
        return NULL;
}
