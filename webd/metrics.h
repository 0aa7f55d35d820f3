/* GET /metrics: webd's counters in the Prometheus text format (version 0.0.4), gathered from the modules
 * that register a writer. For the operator only: answered to a client on the loopback that came straight
 * to webd (no X-Forwarded-For, so not through a relay); anyone else gets 404, as for a route that doesn't
 * exist. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server;
struct metrics;

#define METRICS_SOURCES_MAX 8
/* The longest answer; what doesn't fit is cut at a line and ends with a comment saying so. */
#define METRICS_TEXT_MAX (16 * 1024)

struct metrics_text {
        char buf[METRICS_TEXT_MAX];
        size_t len;
        bool truncated;
};

/* Appends its module's samples to <t> with metrics_family() and metrics_sample(). */
typedef void (*metrics_writer_t)(struct metrics_text *t, void *userdata);

/* Registers the route with <s>. Returns 0, -ENOMEM, or the error of server_route(). */
int metrics_new(struct server *s, struct metrics **ret);
/* Adds a writer; writers run in the order added. Returns 0 or -E2BIG (METRICS_SOURCES_MAX). */
int metrics_add(struct metrics *m, metrics_writer_t writer, void *userdata);
struct metrics *metrics_free(struct metrics *m);

/* Appends "# HELP <name> <help>" and "# TYPE <name> <type>" (counter, gauge). */
void metrics_family(struct metrics_text *t, const char *name, const char *type, const char *help);
/* Appends "<name>{<labels>} <value>" (<labels>: 'key="value",...', or NULL for none). */
void metrics_sample(struct metrics_text *t, const char *name, const char *labels, uint64_t value);
/* A family of one sample without labels: metrics_family() then metrics_sample(). */
void metrics_single(struct metrics_text *t, const char *name, const char *type, const char *help,
                    uint64_t value);

/* True when <client> (an address as text, no port) is on the loopback. Exposed for tests. */
bool metrics_client_local(const char *client);
