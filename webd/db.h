/* A pool of PostgreSQL connections driven by the event loop: libpq in non-blocking pipeline mode, every
 * socket watched by libevent, prepared statements only, a bounded queue of queries waiting for room on a
 * connection, and reconnection with capped exponential backoff and jitter when the server goes away.
 *
 * The queries given to one connection during one turn of the loop form a segment that the server runs as
 * one transaction (group commit): callers must not rely on a statement having a transaction of its own
 * (no SET LOCAL, no explicit BEGIN). A segment in which a statement fails is rolled back whole; its other
 * statements are then sent again on their own, so each statement still succeeds or fails by itself.
 *
 * The pool is "up" while at least one connection is ready. While it is down, db_query() fails at once with
 * -ENOTCONN, so the HTTP layer can answer 503 without waiting. A query in flight on a connection that breaks
 * fails with -ECONNRESET: its outcome is unknown to us (a write may or may not have committed), and the
 * client is told to retry; such a query is never sent again by the pool. Results arrive only after the
 * transaction has committed: a write whose callback sees r == 0 is durable. */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/macro.h"

struct event_base;
struct db;
struct db_query;

#define DB_STATEMENTS_MAX 32
#define DB_PARAMS_MAX     16
/* Queries waiting for a connection, at most; beyond it db_query() fails with -EBUSY. */
#define DB_QUEUE_MAX 4096
/* COPYs waiting for the COPY connection, at most; beyond it db_copy() fails with -EBUSY. */
#define DB_COPY_QUEUE_MAX 4

DEFINE_TRIVIAL_CLEANUP_FUNC(PGresult *, PQclear)

/* <r> is 0 and <res> a PGRES_TUPLES_OK or PGRES_COMMAND_OK result; or <r> is -EEXIST (unique violation),
 * -ENOENT (foreign key violation), -EINVAL (the server refused a value: bad input syntax, out of range,
 * bad encoding), -EAGAIN (deadlock, serialization failure, out of resources: try later) or -EIO (any
 * other error), with <res> the error result (PQresultErrorMessage() tells why); or <r> is -ECONNRESET
 * (the connection broke: outcome unknown) or -ENOTCONN (the pool went down before the query could be
 * sent) with <res> NULL. <res> is owned by the pool and valid during the call.
 * Callbacks run from the event loop, never from inside db_query() or db_query_cancel(). */
typedef void (*db_callback_t)(int r, const PGresult *res, void *userdata);

/* Called when the pool goes up (first connection ready) or down (last one lost). */
typedef void (*db_state_callback_t)(struct db *d, bool up, void *userdata);

/* Creates a pool of <size> (1..64) connections to <conninfo> (a libpq conninfo string or URI, copied).
 * Nothing connects before db_start(). Returns 0, -EINVAL or -ENOMEM. */
int db_new(struct event_base *base, const char *conninfo, unsigned size, struct db **ret);

/* Registers a statement that every connection prepares before it is used. <sql> (with $1..$n
 * placeholders) must live as long as the pool: pass a literal. Only before db_start(). Returns 0 and the
 * statement's id in *<ret_id>, or -E2BIG (DB_STATEMENTS_MAX), -EINVAL. */
int db_statement(struct db *d, const char *sql, int n_params, unsigned *ret_id);

void db_set_state_callback(struct db *d, db_state_callback_t cb, void *userdata);

/* Opens the connections. Returns 0 or -ENOMEM; connection failures are retried, never returned. */
int db_start(struct db *d);

/* Runs statement <stmt> with the <n_values> text parameters <values> (copied; a NULL entry is SQL NULL)
 * on a ready connection (see db.c for which). <cb> will be called exactly once unless the query is cancelled. Returns 0
 * and, when <ret> is not NULL, a handle for db_query_cancel() (valid until the callback runs); -ENOTCONN
 * when the pool is down, -EBUSY when the queue is full, -EINVAL, -ENOMEM. */
int db_query(struct db *d, unsigned stmt, const char *const *values, int n_values, db_callback_t cb,
             void *userdata, struct db_query **ret);

/* Adds one connection outside the pool, for db_copy(). Only before db_start(). Returns 0, -EINVAL or
 * -ENOMEM. */
int db_add_copy_connection(struct db *d);

/* Whether the COPY connection is ready (db_copy() would take a COPY now). */
bool db_copy_ready(const struct db *d);

/* Runs <sql>, a COPY ... FROM STDIN (a literal that lives as long as the pool), on the COPY connection
 * with the <len> bytes of <data> (copied) as its data, in a transaction of its own; COPYs run one at a time,
 * in order. <cb> is called exactly once unless cancelled, as for db_query(): r == 0 when the rows are
 * committed. Returns 0 and, when <ret> is not NULL, a handle for db_query_cancel(); -ENOTCONN when the COPY
 * connection is not ready (or there is none), -EBUSY when DB_COPY_QUEUE_MAX wait already, -EINVAL,
 * -ENOMEM. */
int db_copy(struct db *d, const char *sql, const void *data, size_t len, db_callback_t cb, void *userdata,
            struct db_query **ret);

/* Makes sure <q>'s callback is never called. A query still queued is dropped; one already sent finishes
 * on its connection and its result is discarded. NULL is allowed. */
void db_query_cancel(struct db_query *q);

struct db_stats {
        uint64_t queries;  /* sent, retries included */
        uint64_t segments; /* Syncs sent: queries / segments is the mean batch */
        uint64_t retries;  /* queries sent again after their segment failed */
        uint64_t copies;   /* COPY commands sent */
};

const struct db_stats *db_get_stats(const struct db *d);

bool db_is_up(const struct db *d);
/* Connections ready (idle or busy) now. */
unsigned db_connections_up(const struct db *d);
/* The last connection error libpq gave, for messages (never holds a password), or "". */
const char *db_last_error(const struct db *d);

/* Closes every connection. Queries not yet called back are dropped without callbacks: cancel yours
 * first. Returns NULL. */
struct db *db_free(struct db *d);

/* The delay before reconnection attempt <failures> (0 for the first retry): 50 ms doubling up to 3 s, of
 * which a random part (taken from <random>) is removed so connections don't retry in lockstep. Exposed
 * for tests. */
uint64_t db_backoff_usec(unsigned failures, uint64_t random);

/* Maps a SQLSTATE ("23505") to what callbacks get (-EEXIST, ...). Exposed for tests. */
int db_error_from_sqlstate(const char *sqlstate);
