/* The access log: one line per request, logfmt, to stderr (priority 6, so journald keeps it) or to a
 * file, written without ever blocking the event loop: lines gather in a bounded buffer that is flushed
 * when it fills and by a short timer; if the target can't keep up, whole lines are dropped and counted
 * (the count is logged once the target catches up). */
#pragma once

#include <stdint.h>
#include <stddef.h>

#include "common/netaddr.h"

struct event_base;
struct accesslog;

struct accesslog_entry {
        const struct netaddr *client;
        const char *method;
        const char *path;        /* not NUL-terminated */
        size_t path_len;
        unsigned status;
        uint64_t bytes;          /* response body bytes sent to the client */
        const char *backend;     /* NULL: none */
        uint64_t duration_usec;
        const char *request_id;  /* NULL: none */
};

/* <target>: "stderr", "off" or an absolute path (opened O_APPEND, created 0640). Returns 0 and
 * *ret = NULL for "off"; -errno when the file can't be opened. */
int accesslog_open(struct event_base *base, const char *target, struct accesslog **ret);

/* A log on a worker loop's <base> whose flushes (same thresholds) hand a malloc'ed block of whole lines
 * to <forward> (which owns it then), formatted as <like> formats them. *ret = NULL when <like> is NULL
 * (logging off). Returns 0 or -ENOMEM. */
int accesslog_open_forward(struct event_base *base, const struct accesslog *like,
                           void (*forward)(void *userdata, char *buf, size_t len), void *userdata,
                           struct accesslog **ret);

/* Queues <len> bytes of whole lines (a forwarded block) as if written one by one; dropped whole and
 * counted when they don't fit. <a> may be NULL. */
void accesslog_append(struct accesslog *a, const char *buf, size_t len);

/* Formats and queues one line. <a> may be NULL (logging off). */
void accesslog_write(struct accesslog *a, const struct accesslog_entry *e);

/* Number of lines dropped so far. */
uint64_t accesslog_dropped(const struct accesslog *a);

/* Flushes what it can without blocking and closes. Returns NULL. */
struct accesslog *accesslog_free(struct accesslog *a);
