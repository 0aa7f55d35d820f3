/* The activity log: every answered request (time, user, method, path, status, latency, request id,
 * client) as one journal line and one row of the activity table, and GET /activity, the caller's own
 * entries.
 *
 * Rows are not written on the request's path: entries go to a bounded in-memory queue that is written in
 * batches (one INSERT ... SELECT FROM unnest(...) per batch) shortly after. When the database is down or the
 * queue is full, entries are dropped and counted (the journal line is always written). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct server;
struct server_log_entry;
struct db;
struct activity;

/* Entries waiting to be written, at most; one batch holds at most ACTIVITY_BATCH_MAX. */
#define ACTIVITY_QUEUE_MAX 4096
#define ACTIVITY_BATCH_MAX 256

/* Registers the statements with <db>, the route with <s>, and, when <enabled>, itself as <s>'s log hook.
 * Returns 0, -ENOMEM, or the error of db_statement() / server_route(). */
int activity_new(struct event_base *base, struct server *s, struct db *db, bool enabled, struct activity **ret);

/* Records one answered request (the server's log hook). */
void activity_record(const struct server_log_entry *e, void *userdata);

/* Writes what is queued now; <done> is called once the queue is empty and nothing is in flight (at once
 * if so already, or when the database is down). For a clean stop. */
void activity_drain(struct activity *a, void (*done)(void *userdata), void *userdata);

/* Entries dropped so far (database down, queue full, failed batch). */
uint64_t activity_dropped(const struct activity *a);

/* Frees the module; queued entries not yet written are dropped. Returns NULL. */
struct activity *activity_free(struct activity *a);

/* Appends <value> (NULL: SQL NULL) as an element of the PostgreSQL array literal being built in <buf>
 * (which starts with "{"; <size> bytes of room, <*len> used): a comma unless it is the first element,
 * then a quoted string with '"' and '\' escaped. Returns 0, or -ENOBUFS (nothing appended). Exposed for
 * tests. */
int activity_array_append(char *buf, size_t size, size_t *len, const char *value);

/* Copies <path> into <buf> (<size> bytes, NUL-terminated), replacing bytes outside printable ASCII with
 * %XX and cutting it to fit. Returns the length. Exposed for tests. */
size_t activity_clean_path(const char *path, char *buf, size_t size);
