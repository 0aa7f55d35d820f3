/* The activity log: every answered request (time, user id and name, method, path, status, latency, request
 * id, client) as one journal line and one row of the activity table, and GET /activity, the caller's own
 * entries. Health probes are counted instead (activity_write_metrics()). Rows older than the configured
 * retention are deleted in the background.
 *
 * Rows are not written on the request's path: entries go to a bounded in-memory queue that is written in
 * batches (one INSERT ... SELECT FROM unnest(...) per batch) shortly after. An entry stays queued until the
 * database has acknowledged it: while the database is down or failing, entries wait (and are written once
 * it is back); only when the queue is full is a new entry dropped, and counted. A batch the database refuses
 * is written again one row at a time, so a bad row costs only itself. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct server;
struct server_log_entry;
struct db;
struct config;
struct metrics_text;
struct activity;

/* Entries waiting to be written, at most; one batch holds at most ACTIVITY_BATCH_MAX. */
#define ACTIVITY_QUEUE_MAX 4096
#define ACTIVITY_BATCH_MAX 256
/* Rows one retention delete removes, at most. */
#define ACTIVITY_SWEEP_BATCH 1000

/* Registers the statements with <db>, the route with <s>, and, when <config>'s activity is on, itself as
 * <s>'s log hook and the retention sweep (<config> must outlive the module). Returns 0, -ENOMEM, or the
 * error of db_statement() / server_route(). */
int activity_new(struct event_base *base, struct server *s, struct db *db, const struct config *config,
                 struct activity **ret);

/* Records one answered request (the server's log hook). */
void activity_record(const struct server_log_entry *e, void *userdata);

/* Writes what is queued now; <done> is called once the queue is empty and nothing is in flight (at once
 * if so already), or when the database is down. For a clean stop. */
void activity_drain(struct activity *a, void (*done)(void *userdata), void *userdata);

/* What the activity log counts. */
struct activity_stats {
        uint64_t written;         /* rows the database acknowledged */
        uint64_t copied;          /* of which written with COPY (the others with INSERT) */
        uint64_t dropped_full;    /* entries dropped because the queue was full */
        uint64_t dropped_refused; /* rows the database refused on their own (written alone) */
        uint64_t probes_ok;       /* health probes answered 2xx, not logged */
        uint64_t probes_failed;   /* health probes answered otherwise: journal only */
        uint64_t retried;         /* batches sent again (database failing, outcome unknown) */
        uint64_t expired;         /* rows deleted by retention */
        size_t queued;            /* entries waiting now */
};
void activity_get_stats(const struct activity *a, struct activity_stats *ret);

/* Entries not written to the database so far: dropped (queue full, refused), or still queued. */
uint64_t activity_dropped(const struct activity *a);

/* The metrics writer (metrics.h) of the module; <userdata> is the struct activity. */
void activity_write_metrics(struct metrics_text *t, void *userdata);

/* Frees the module; queued entries not yet written are dropped. Returns NULL. */
struct activity *activity_free(struct activity *a);

/* Appends <value> (NULL: SQL NULL) as an element of the PostgreSQL array literal being built in <buf>
 * (which starts with "{"; <size> bytes of room, <*len> used): a comma unless it is the first element,
 * then a quoted string with '"' and '\' escaped. Returns 0, or -ENOBUFS (nothing appended). Exposed for
 * tests. */
int activity_array_append(char *buf, size_t size, size_t *len, const char *value);

/* Copies the name <src> into <dst> (<size> > 0 bytes, NUL-terminated), cut to fit at a character
 * boundary: a cut never leaves part of a UTF-8 sequence, which the database would refuse. Returns the
 * length. Exposed for tests. */
size_t activity_copy_name(char *dst, size_t size, const char *src);

/* Copies <path> into <buf> (<size> bytes, NUL-terminated), replacing bytes outside printable ASCII with
 * %XX and cutting it to fit. Returns the length. Exposed for tests. */
size_t activity_clean_path(const char *path, char *buf, size_t size);
