/* The PostgreSQL connection pool, on the event loop.
 *
 * Each connection is a small state machine:
 *
 *   DOWN --timer--> CONNECTING --PQconnectPoll OK--> SETUP --all statements prepared--> READY
 *     ^                 |                              |                                  |
 *     +----- backoff ---+------------------------------+---------- error / EOF -----------+
 *
 * CONNECTING follows PQconnectPoll(), waiting on whatever it asks for (the socket may change between
 * steps, so the event is made anew each time). SETUP runs the session settings, then prepares every
 * registered statement, one command at a time. READY connections are in libpq's pipeline mode: each
 * takes up to DB_PIPELINE_MAX queries at once. Queries go to the first connection with fewer than DB_FILL
 * in flight, else to the least loaded one, else wait in the queue: few connections while the load is light
 * (bigger segments, below), all of them under heavy load.
 *
 * Segments (group commit). Queries given to a connection are sent back to back and closed by one Sync:
 * the server runs such a segment as one implicit transaction, with one wake-up, one commit (one WAL
 * flush) and one answer for the lot, instead of one of each per query. A connection keeps one segment in
 * flight at a time: while it runs, new queries gather in the open segment, which is closed as soon as the
 * one in flight is answered; on an idle connection the open segment is closed at the end of the loop turn
 * (the flush event, activated behind the callbacks already due). So segments grow with the load, and
 * cost no waiting when there is none. At most DB_SEGMENT_MAX queries go in one segment. That is what lets
 * a small pool keep up with many clients.
 *
 * A query's callback runs when its segment's Sync result (ReadyForQuery) arrives, not at its
 * CommandComplete: the transaction commits at the Sync, and a write must not be acknowledged before. If
 * a query of a segment fails, the server rolls the whole segment back: the failed query receives its error
 * and every other query of the segment is queued again, at the head, to be sent alone (a segment of
 * one), where it succeeds or fails on its own. Nothing of a rolled-back segment was committed, so this
 * never applies a write twice; and no query is retried after its connection broke (outcome unknown).
 *
 * libpq is in non-blocking mode: a send that doesn't fit in the socket buffer is finished by PQflush()
 * when the socket is writable.
 *
 * Callbacks never run inside db_query() or db_query_cancel(): results come from the socket's read event,
 * and the failures found elsewhere (a connection lost, the pool down) are put on the done list, which a
 * deferred event empties on the next loop turn. The pool owns every query until its callback returns.
 *
 * COPY. db_copy() runs COPY ... FROM STDIN on a connection of its own (db_add_copy_connection()), outside
 * the pool and outside pipeline mode, where libpq does not allow COPY: the command, then the data and its
 * end once the server asks for them (PGRES_COPY_IN), then its result. One at a time, each its own
 * transaction; its callback runs once the server has answered (committed, or refused as a whole). A bulk
 * load through COPY costs the server far less per row than an INSERT of the same rows, which is what the
 * activity log wants. The pool never waits for it: while that connection is down, db_copy() fails with
 * -ENOTCONN and the caller inserts through the pool instead.
 *
 * The connection string is passed to libpq with our defaults placed before it (connect timeout, TCP
 * keepalives, application name), so anything the administrator writes wins, and client_encoding after it,
 * since the API speaks UTF-8. Nothing here ever logs the connection string. */
#include "webd/db.h"

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>

#include "common/log.h"

#define DB_BACKOFF_MIN_USEC     (50 * USEC_PER_MSEC)
#define DB_BACKOFF_MAX_USEC     (3 * USEC_PER_SEC)
#define DB_CONNECT_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define DB_ERROR_MAX            256
#define DB_SIZE_MAX             64
#define DB_PIPELINE_MAX         64
#define DB_SEGMENT_MAX          16
#define DB_FILL                 8

enum db_conn_state {
        DB_CONN_DOWN,
        DB_CONN_CONNECTING,
        DB_CONN_SETUP,
        DB_CONN_READY,
};

enum db_copy_step {
        DB_COPY_IDLE,
        DB_COPY_STARTING, /* the command sent: waiting for the server to ask for the data */
        DB_COPY_ENDING,   /* the data and its end sent: waiting for the result */
};

enum db_query_state {
        DB_QUERY_QUEUED,
        DB_QUERY_SENT,
        DB_QUERY_DONE,
};

struct db_query {
        TAILQ_ENTRY(db_query) entry;
        struct db *db;
        db_callback_t cb; /* NULL once cancelled while in flight */
        void *userdata;
        enum db_query_state state;
        int result; /* on the done list: what the callback receives */
        PGresult *res; /* in flight: its result, kept until its segment's Sync */
        bool ends_segment; /* the Sync follows this query */
        bool solo;         /* send alone: it was part of a segment that failed */
        bool copy;         /* db_copy(): <copy_sql>, then <copy_len> bytes of <data> */
        const char *copy_sql;
        size_t copy_len;
        unsigned stmt;
        int n_values;
        const char *values[DB_PARAMS_MAX];
        char data[]; /* the copied values */
};

TAILQ_HEAD(db_query_list, db_query);

struct db_conn {
        struct db *db;
        unsigned index;
        enum db_conn_state state;
        PGconn *pg;
        struct event *read, *write; /* SETUP/READY: persistent read, one-shot write while flushing */
        struct event *poll;         /* CONNECTING: what PQconnectPoll() waits for */
        struct event *timer;        /* DOWN: reconnect; CONNECTING/SETUP: give up */
        unsigned failures;          /* consecutive failed attempts, for the backoff */
        unsigned setup_step;        /* 0: session settings; i > 0: statement i - 1 */
        struct db_query_list inflight; /* READY: sent, in order, awaiting their results */
        unsigned n_inflight;
        unsigned n_open;            /* queries sent since the last Sync (the open segment) */
        unsigned n_segments;        /* closed segments in flight (their Sync sent, not answered) */
        unsigned n_read;            /* queries of the oldest segment whose results are all in */
        PGresult *result;           /* SETUP, and the COPY connection: of the command being read */
        bool copy;                  /* the COPY connection: outside the pool, not in pipeline mode */
        enum db_copy_step copy_step;
};

struct db_statement {
        const char *sql;
        int n_params;
};

struct db {
        struct event_base *base;
        char *conninfo;
        struct db_statement statements[DB_STATEMENTS_MAX];
        unsigned n_statements;
        struct db_conn *conns;
        unsigned n_conns;
        struct db_conn *copy_conn;       /* NULL unless db_add_copy_connection() */
        struct db_query_list copy_queue; /* for copy_conn, one at a time */
        size_t n_copy_queued;
        unsigned n_up;
        struct db_query_list queue;
        size_t n_queued;
        struct db_query_list done;
        struct event *deferred;
        struct event *flush; /* closes the open segments at the end of the loop turn */
        db_state_callback_t state_cb;
        void *state_userdata;
        uint64_t rng;
        struct db_stats stats;
        bool started;
        char last_error[DB_ERROR_MAX];
};

static void db_conn_connect(struct db_conn *c);
static void db_conn_fail(struct db_conn *c, const char *why);
static void db_dispatch(struct db *d);
static void db_copy_dispatch(struct db *d);

uint64_t db_backoff_usec(unsigned failures, uint64_t random)
{
        uint64_t delay = DB_BACKOFF_MIN_USEC;

        for (unsigned i = 0; i < failures && delay < DB_BACKOFF_MAX_USEC; i++)
                delay *= 2;
        delay = MIN(delay, DB_BACKOFF_MAX_USEC);
        /* Full delay minus up to half of it: spread, but never shorter than half the schedule. */
        return delay - random % (delay / 2 + 1);
}

int db_error_from_sqlstate(const char *sqlstate)
{
        if (!sqlstate || strlen(sqlstate) != 5)
                return -EIO;
        if (strcmp(sqlstate, "23505") == 0)
                return -EEXIST;
        if (strcmp(sqlstate, "23503") == 0)
                return -ENOENT;
        if (strncmp(sqlstate, "22", 2) == 0)
                return -EINVAL;
        /* The server is shutting down or the connection failed: the statement did not complete. */
        if (strncmp(sqlstate, "57P", 3) == 0 || strncmp(sqlstate, "08", 2) == 0)
                return -ECONNRESET;
        /* Serialization failure, deadlock, out of resources: worth retrying later. */
        if (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0 || strncmp(sqlstate, "53", 2) == 0)
                return -EAGAIN;
        return -EIO;
}

static int db_result_code(const PGresult *res)
{
        if (!res)
                return -EIO;
        switch (PQresultStatus(res)) {
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
                return 0;
        default:
                return db_error_from_sqlstate(PQresultErrorField(res, PG_DIAG_SQLSTATE));
        }
}

static uint64_t db_random(struct db *d)
{
        /* xorshift64*: the jitter needs spread, not secrecy. */
        d->rng ^= d->rng >> 12;
        d->rng ^= d->rng << 25;
        d->rng ^= d->rng >> 27;
        return d->rng * UINT64_C(2685821657736338717);
}

static void db_set_error(struct db *d, const char *why)
{
        size_t n = strlen(why);

        while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' '))
                n--;
        n = MIN(n, sizeof(d->last_error) - 1);
        memcpy(d->last_error, why, n);
        d->last_error[n] = '\0';
}

static void db_notice(void *userdata, const char *message)
{
        log_debug("PostgreSQL: %s", message);
}

static void db_timer_add(struct db_conn *c, uint64_t usec)
{
        struct timeval tv = timeval_from_usec(usec);

        (void)evtimer_add(c->timer, &tv);
}

static void db_free_event(struct event **e)
{
        if (*e) {
                event_free(*e);
                *e = NULL;
        }
}

/* Puts <q> on the done list with <result>; its callback runs on the next loop turn. */
static void db_defer(struct db *d, struct db_query *q, int result)
{
        q->state = DB_QUERY_DONE;
        q->result = result;
        TAILQ_INSERT_TAIL(&d->done, q, entry);
        event_active(d->deferred, 0, 0);
}

static void db_deferred_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct db *d = userdata;
        struct db_query *q;

        while ((q = TAILQ_FIRST(&d->done))) {
                TAILQ_REMOVE(&d->done, q, entry);
                if (q->cb)
                        q->cb(q->result, NULL, q->userdata);
                free(q);
        }
}

static void db_set_up(struct db *d, bool up)
{
        if (d->state_cb)
                d->state_cb(d, up, d->state_userdata);
}

static void db_conn_close(struct db_conn *c)
{
        db_free_event(&c->read);
        db_free_event(&c->write);
        db_free_event(&c->poll);
        if (c->result) {
                PQclear(c->result);
                c->result = NULL;
        }
        if (c->pg) {
                PQfinish(c->pg);
                c->pg = NULL;
        }
}

/* Closes <c> after an error and schedules the next attempt. A query in flight fails with -ECONNRESET;
 * when the last ready connection goes, the queue fails with -ENOTCONN. */
static void db_conn_fail(struct db_conn *c, const char *why)
{
        struct db *d = c->db;
        bool was_ready = c->state == DB_CONN_READY;
        struct db_query *q;
        uint64_t delay;

        db_set_error(d, why);
        log_debug("Database connection %u: %s", c->index, d->last_error);

        while ((q = TAILQ_FIRST(&c->inflight))) {
                TAILQ_REMOVE(&c->inflight, q, entry);
                PQclear(q->res);
                q->res = NULL;
                db_defer(d, q, -ECONNRESET);
        }
        c->n_inflight = 0;
        c->n_open = 0;
        c->n_read = 0;
        c->n_segments = 0;
        c->copy_step = DB_COPY_IDLE;
        db_conn_close(c);
        c->state = DB_CONN_DOWN;
        delay = db_backoff_usec(c->failures, db_random(d));
        if (c->failures < 64)
                c->failures++;
        (void)evtimer_del(c->timer);
        db_timer_add(c, delay);

        if (c->copy) {
                /* What waited for it is handed back: the caller has the pool for it. */
                while ((q = TAILQ_FIRST(&d->copy_queue))) {
                        TAILQ_REMOVE(&d->copy_queue, q, entry);
                        d->n_copy_queued--;
                        db_defer(d, q, -ENOTCONN);
                }
        } else if (was_ready) {
                d->n_up--;
                if (d->n_up == 0) {
                        while ((q = TAILQ_FIRST(&d->queue))) {
                                TAILQ_REMOVE(&d->queue, q, entry);
                                d->n_queued--;
                                db_defer(d, q, -ENOTCONN);
                        }
                        db_set_up(d, false);
                }
        }
}

/* Pushes out what libpq has buffered; waits for writability if the socket is full. */
static int db_conn_flush(struct db_conn *c)
{
        int r = PQflush(c->pg);

        if (r < 0)
                return -EIO;
        if (r > 0)
                return event_add(c->write, NULL) < 0 ? -ENOMEM : 0;
        return 0;
}

static void db_statement_name(unsigned i, char *buf, size_t size)
{
        (void)snprintf(buf, size, "webd_%u", i);
}

/* Sends the setup command for the current step, or makes the connection ready when there is none left. */
static void db_conn_setup_next(struct db_conn *c)
{
        struct db *d = c->db;
        int ok;

        if (c->setup_step == 0) {
                ok = PQsendQuery(c->pg, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'");
        } else if (!c->copy && c->setup_step - 1 < d->n_statements) {
                const struct db_statement *s = &d->statements[c->setup_step - 1];
                char name[32];

                db_statement_name(c->setup_step - 1, name, sizeof(name));
                ok = PQsendPrepare(c->pg, name, s->sql, s->n_params, NULL);
        } else if (c->copy) {
                /* Its statements are COPY commands, sent as they come: nothing to prepare. */
                (void)evtimer_del(c->timer);
                c->state = DB_CONN_READY;
                c->failures = 0;
                c->copy_step = DB_COPY_IDLE;
                log_debug("Database connection %u (COPY) ready", c->index);
                db_copy_dispatch(d);
                return;
        } else {
                if (!PQenterPipelineMode(c->pg)) {
                        db_conn_fail(c, PQerrorMessage(c->pg));
                        return;
                }
                (void)evtimer_del(c->timer);
                c->state = DB_CONN_READY;
                c->failures = 0;
                log_debug("Database connection %u ready", c->index);
                if (++d->n_up == 1)
                        db_set_up(d, true);
                db_dispatch(d);
                return;
        }
        if (!ok || db_conn_flush(c) < 0)
                db_conn_fail(c, PQerrorMessage(c->pg));
}

/* Keeps <res> as the result of the command being read: a command may yield several results; the first
 * error wins, else the last. */
static void db_conn_keep_result(struct db_conn *c, PGresult *res)
{
        if (c->result && PQresultStatus(c->result) == PGRES_FATAL_ERROR) {
                PQclear(res);
                return;
        }
        PQclear(c->result);
        c->result = res;
}

/* Puts <q> back at the head of the queue (behind the other queries of its segment put back before it),
 * to be sent alone; or frees it if it was cancelled meanwhile. */
static void db_requeue(struct db *d, struct db_query *q, struct db_query **after)
{
        if (!q->cb) {
                free(q);
                return;
        }
        q->state = DB_QUERY_QUEUED;
        q->solo = true;
        d->stats.retries++;
        q->ends_segment = false;
        if (*after)
                TAILQ_INSERT_AFTER(&d->queue, *after, q, entry);
        else
                TAILQ_INSERT_HEAD(&d->queue, q, entry);
        *after = q;
        d->n_queued++;
}

/* The oldest segment in flight is done (its Sync answered): every query of it receives its result, or, when
 * one of them failed, that one receives its error and the others are queued again. */
static void db_conn_complete_segment(struct db_conn *c)
{
        struct db *d = c->db;
        struct db_query_list segment;
        struct db_query *q, *failed = NULL, *after = NULL;
        unsigned n = 0;

        c->n_segments--;
        TAILQ_INIT(&segment);
        while ((q = TAILQ_FIRST(&c->inflight))) {
                bool last = q->ends_segment;

                TAILQ_REMOVE(&c->inflight, q, entry);
                c->n_inflight--;
                TAILQ_INSERT_TAIL(&segment, q, entry);
                n++;
                if (!failed && (!q->res || db_result_code(q->res) < 0))
                        failed = q;
                if (last)
                        break;
        }

        while ((q = TAILQ_FIRST(&segment))) {
                PGresult *res = q->res;

                TAILQ_REMOVE(&segment, q, entry);
                q->res = NULL;
                if (failed && q != failed) {
                        /* Rolled back with the segment (or never run): it goes again, alone. */
                        PQclear(res);
                        db_requeue(d, q, &after);
                        continue;
                }
                if (q == failed && n > 1 && res && db_result_code(res) == -EAGAIN) {
                        /* A deadlock or serialization failure may come from the batching itself. */
                        PQclear(res);
                        db_requeue(d, q, &after);
                        continue;
                }
                if (q->cb)
                        q->cb(res ? db_result_code(res) : -EIO, res, q->userdata);
                PQclear(res);
                free(q);
        }
}

/* The query whose results are being read: the first of the oldest segment whose results are not all in. */
static struct db_query *db_conn_current(struct db_conn *c)
{
        struct db_query *q;
        unsigned i = 0;

        TAILQ_FOREACH(q, &c->inflight, entry) {
                if (i++ == c->n_read)
                        return q;
                if (q->ends_segment)
                        break;
        }
        return NULL;
}

/* READY: reads the results of the queries in flight, in order. Returns once libpq needs more input. */
static void db_conn_read_pipeline(struct db_conn *c)
{
        bool completed = false;

        while (c->state == DB_CONN_READY && c->n_inflight > 0 && !PQisBusy(c->pg)) {
                PGresult *res = PQgetResult(c->pg);
                struct db_query *q;

                if (!res) {
                        /* A broken connection answers NULL for ever: stop here. */
                        if (PQstatus(c->pg) == CONNECTION_BAD) {
                                db_conn_fail(c, PQerrorMessage(c->pg));
                                return;
                        }
                        if (!db_conn_current(c))
                                break; /* nothing more before the Sync's result: wait for it */
                        c->n_read++; /* the end of a query's results */
                        continue;
                }
                if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
                        PQclear(res);
                        c->n_read = 0;
                        db_conn_complete_segment(c);
                        completed = true;
                        continue;
                }
                /* A result of the query being read; one may yield several: the first error wins, else the
                 * last. */
                q = db_conn_current(c);
                if (!q) {
                        PQclear(res);
                        continue;
                }
                if (q->res && PQresultStatus(q->res) == PGRES_FATAL_ERROR) {
                        PQclear(res);
                } else {
                        PQclear(q->res);
                        q->res = res;
                }
        }
        if (completed) {
                /* What gathered while the segment ran goes now, with what this turn adds to it. */
                if (c->state == DB_CONN_READY && c->n_open > 0 && c->n_segments == 0)
                        event_active(c->db->flush, 0, 0);
                db_dispatch(c->db);
        }
}

/* The COPY connection: when the server asks for the data, sends it and its end; when the command is over,
 * its query receives the result (the first error, else the last) and the next COPY goes. */
static void db_conn_read_copy(struct db_conn *c)
{
        struct db *d = c->db;

        while (c->state == DB_CONN_READY && c->copy_step != DB_COPY_IDLE && !PQisBusy(c->pg)) {
                PGresult *res = PQgetResult(c->pg);
                struct db_query *q = TAILQ_FIRST(&c->inflight);

                if (res && PQresultStatus(res) == PGRES_COPY_IN) {
                        PQclear(res);
                        if (c->copy_step != DB_COPY_STARTING) {
                                db_conn_fail(c, "the server asked for COPY data twice");
                                return;
                        }
                        /* Non-blocking: libpq keeps what the socket does not take, and flushes it. */
                        if (PQputCopyData(c->pg, q->data, (int)q->copy_len) != 1 ||
                            PQputCopyEnd(c->pg, NULL) != 1 || db_conn_flush(c) < 0) {
                                db_conn_fail(c, PQerrorMessage(c->pg));
                                return;
                        }
                        c->copy_step = DB_COPY_ENDING;
                        continue;
                }
                if (res) {
                        db_conn_keep_result(c, res);
                        continue;
                }
                if (PQstatus(c->pg) == CONNECTION_BAD) {
                        db_conn_fail(c, PQerrorMessage(c->pg));
                        return;
                }
                /* The command is over: committed, or refused as a whole. */
                res = c->result;
                c->result = NULL;
                TAILQ_REMOVE(&c->inflight, q, entry);
                c->n_inflight--;
                c->copy_step = DB_COPY_IDLE;
                if (q->cb)
                        q->cb(res ? db_result_code(res) : -EIO, res, q->userdata);
                PQclear(res);
                free(q);
                db_copy_dispatch(d);
        }
}

/* Reads what the server sent and finishes the commands whose results are all in. */
static void db_conn_readable(struct db_conn *c)
{
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
                db_conn_fail(c, PQerrorMessage(c->pg));
                return;
        }
        if (c->state == DB_CONN_READY) {
                if (c->copy)
                        db_conn_read_copy(c);
                else
                        db_conn_read_pipeline(c);
                return;
        }
        while (c->state == DB_CONN_SETUP) {
                PGresult *res;

                if (PQisBusy(c->pg))
                        return;
                res = PQgetResult(c->pg);
                if (res) {
                        db_conn_keep_result(c, res);
                        continue;
                }

                /* The setup command is complete. */
                if (db_result_code(c->result) < 0) {
                        char why[DB_ERROR_MAX];

                        (void)snprintf(why, sizeof(why), "setup step %u failed: %s", c->setup_step,
                                       c->result ? PQresultErrorMessage(c->result) : "no result");
                        db_conn_fail(c, why);
                        return;
                }
                PQclear(c->result);
                c->result = NULL;
                c->setup_step++;
                db_conn_setup_next(c);
                return;
        }
}

static void db_conn_io_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct db_conn *c = userdata;

        if (what & EV_WRITE) {
                if (db_conn_flush(c) < 0) {
                        db_conn_fail(c, PQerrorMessage(c->pg));
                        return;
                }
        }
        if (what & EV_READ)
                db_conn_readable(c);
}

/* The connection is established: watch its socket for good and start the setup. */
static void db_conn_established(struct db_conn *c)
{
        struct db *d = c->db;
        int fd = PQsocket(c->pg);

        db_free_event(&c->poll);
        if (PQsetnonblocking(c->pg, 1) < 0) {
                db_conn_fail(c, PQerrorMessage(c->pg));
                return;
        }
        (void)PQsetNoticeProcessor(c->pg, db_notice, c);
        c->read = event_new(d->base, fd, EV_READ | EV_PERSIST, db_conn_io_cb, c);
        c->write = event_new(d->base, fd, EV_WRITE, db_conn_io_cb, c);
        if (!c->read || !c->write || event_add(c->read, NULL) < 0) {
                db_conn_fail(c, "out of memory");
                return;
        }
        c->state = DB_CONN_SETUP;
        c->setup_step = 0;
        db_conn_setup_next(c);
}

static void db_conn_poll_cb(evutil_socket_t fd, short what, void *userdata);

/* Waits for what PQconnectPoll() asked for. The socket may be a new one at every step. */
static void db_conn_poll_wait(struct db_conn *c, PostgresPollingStatusType st)
{
        int fd = PQsocket(c->pg);

        db_free_event(&c->poll);
        if (fd < 0) {
                db_conn_fail(c, PQerrorMessage(c->pg));
                return;
        }
        c->poll = event_new(c->db->base, fd, st == PGRES_POLLING_READING ? EV_READ : EV_WRITE,
                            db_conn_poll_cb, c);
        if (!c->poll || event_add(c->poll, NULL) < 0)
                db_conn_fail(c, "out of memory");
}

static void db_conn_poll(struct db_conn *c)
{
        PostgresPollingStatusType st = PQconnectPoll(c->pg);

        switch (st) {
        case PGRES_POLLING_OK:
                db_conn_established(c);
                return;
        case PGRES_POLLING_READING:
        case PGRES_POLLING_WRITING:
                db_conn_poll_wait(c, st);
                return;
        default:
                db_conn_fail(c, PQerrorMessage(c->pg));
                return;
        }
}

static void db_conn_poll_cb(evutil_socket_t fd, short what, void *userdata)
{
        db_conn_poll(userdata);
}

static void db_conn_connect(struct db_conn *c)
{
        /* Ours before the administrator's string (which may override them), client_encoding after. */
        static const char *const keywords[] = {
                "connect_timeout", "keepalives",     "keepalives_idle", "keepalives_interval",
                "keepalives_count", "fallback_application_name", "dbname", "client_encoding", NULL,
        };
        const char *values[] = {
                "10", "1", "30", "10", "3", "webd", c->db->conninfo, "UTF8", NULL,
        };

        c->pg = PQconnectStartParams(keywords, values, 1);
        if (!c->pg) {
                db_conn_fail(c, "out of memory");
                return;
        }
        if (PQstatus(c->pg) == CONNECTION_BAD) {
                db_conn_fail(c, PQerrorMessage(c->pg));
                return;
        }
        c->state = DB_CONN_CONNECTING;
        (void)evtimer_del(c->timer);
        db_timer_add(c, DB_CONNECT_TIMEOUT_USEC);
        db_conn_poll_wait(c, PGRES_POLLING_WRITING);
}

static void db_conn_timer_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct db_conn *c = userdata;

        switch (c->state) {
        case DB_CONN_DOWN:
                db_conn_connect(c);
                break;
        case DB_CONN_CONNECTING:
        case DB_CONN_SETUP:
                db_conn_fail(c, "timed out connecting to the database");
                break;
        default:
                break;
        }
}

/* Closes the open segment of <c> with a Sync, and sends it. */
static int db_conn_sync(struct db_conn *c)
{
        if (c->n_open == 0)
                return 0;
        TAILQ_LAST(&c->inflight, db_query_list)->ends_segment = true;
        c->n_open = 0;
        c->n_segments++;
        c->db->stats.segments++;
        if (!PQpipelineSync(c->pg))
                return -EIO;
        return db_conn_flush(c);
}

/* Adds <q> to the open segment of the ready connection <c>; the segment is closed at the end of the loop
 * turn, or now when it is full or <q> goes alone. On failure the caller fails <c>: <q> is then untouched
 * if it never reached libpq, else in flight. */
static int db_conn_send(struct db_conn *c, struct db_query *q)
{
        char name[32];
        int r;

        if (q->solo) {
                r = db_conn_sync(c);
                if (r < 0)
                        return r;
        }
        db_statement_name(q->stmt, name, sizeof(name));
        if (!PQsendQueryPrepared(c->pg, name, q->n_values, q->values, NULL, NULL, 0))
                return -EIO;
        TAILQ_INSERT_TAIL(&c->inflight, q, entry);
        c->n_inflight++;
        c->n_open++;
        c->db->stats.queries++;
        q->state = DB_QUERY_SENT;
        if (q->solo || c->n_open >= DB_SEGMENT_MAX)
                return db_conn_sync(c);
        if (c->n_segments == 0)
                event_active(c->db->flush, 0, 0);
        return 0;
}

static void db_flush_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct db *d = userdata;

        for (unsigned i = 0; i < d->n_conns; i++) {
                struct db_conn *c = &d->conns[i];

                if (c->state == DB_CONN_READY && c->n_open > 0 && c->n_segments == 0 && db_conn_sync(c) < 0)
                        db_conn_fail(c, PQerrorMessage(c->pg));
        }
}

/* The connection for the next query: the first ready one (in pool order) with fewer than DB_FILL queries
 * in flight, so that queries gather into big segments on few connections while the load is light; when
 * every one has that many, the least loaded one that has room. NULL when all are full or down. */
static struct db_conn *db_find_ready(struct db *d)
{
        struct db_conn *best = NULL;

        for (unsigned i = 0; i < d->n_conns; i++) {
                struct db_conn *c = &d->conns[i];

                if (c->state != DB_CONN_READY || c->n_inflight >= DB_PIPELINE_MAX)
                        continue;
                if (c->n_inflight < DB_FILL)
                        return c;
                if (!best || c->n_inflight < best->n_inflight)
                        best = c;
        }
        return best;
}

static void db_dispatch(struct db *d)
{
        struct db_query *q;
        struct db_conn *c;

        while ((q = TAILQ_FIRST(&d->queue)) && (c = db_find_ready(d))) {
                int r;

                TAILQ_REMOVE(&d->queue, q, entry);
                d->n_queued--;
                r = db_conn_send(c, q);
                if (r < 0) {
                        if (q->state == DB_QUERY_SENT) {
                                /* Handed to libpq but not flushed: it may have reached the server. */
                                db_conn_fail(c, PQerrorMessage(c->pg));
                                continue;
                        }
                        /* Never sent: back to the head of the queue, then drop the connection. */
                        q->state = DB_QUERY_QUEUED;
                        TAILQ_INSERT_HEAD(&d->queue, q, entry);
                        d->n_queued++;
                        db_conn_fail(c, PQerrorMessage(c->pg));
                }
        }
}

/* Sends the next COPY if the COPY connection is ready and idle. */
static void db_copy_dispatch(struct db *d)
{
        struct db_conn *c = d->copy_conn;
        struct db_query *q;

        if (!c || c->state != DB_CONN_READY || c->copy_step != DB_COPY_IDLE)
                return;
        q = TAILQ_FIRST(&d->copy_queue);
        if (!q)
                return;
        TAILQ_REMOVE(&d->copy_queue, q, entry);
        d->n_copy_queued--;
        TAILQ_INSERT_TAIL(&c->inflight, q, entry);
        c->n_inflight++;
        q->state = DB_QUERY_SENT;
        c->copy_step = DB_COPY_STARTING;
        d->stats.copies++;
        if (!PQsendQuery(c->pg, q->copy_sql) || db_conn_flush(c) < 0)
                db_conn_fail(c, PQerrorMessage(c->pg)); /* -ECONNRESET: it may have been sent */
}

int db_new(struct event_base *base, const char *conninfo, unsigned size, struct db **ret)
{
        struct db *d;

        if (!base || !conninfo || size < 1 || size > DB_SIZE_MAX)
                return -EINVAL;
        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->base = base;
        TAILQ_INIT(&d->queue);
        TAILQ_INIT(&d->done);
        TAILQ_INIT(&d->copy_queue);
        d->conninfo = strdup(conninfo);
        d->conns = calloc(size, sizeof(*d->conns));
        d->deferred = event_new(base, -1, 0, db_deferred_cb, d);
        d->flush = event_new(base, -1, 0, db_flush_cb, d);
        if (!d->conninfo || !d->conns || !d->deferred || !d->flush) {
                db_free(d);
                return -ENOMEM;
        }
        d->n_conns = size;
        for (unsigned i = 0; i < size; i++) {
                struct db_conn *c = &d->conns[i];

                c->db = d;
                c->index = i;
                TAILQ_INIT(&c->inflight);
                c->timer = evtimer_new(base, db_conn_timer_cb, c);
                if (!c->timer) {
                        db_free(d);
                        return -ENOMEM;
                }
        }
        if (getrandom(&d->rng, sizeof(d->rng), GRND_NONBLOCK) != sizeof(d->rng) || d->rng == 0)
                d->rng = now_usec() | 1;
        *ret = d;
        return 0;
}

int db_add_copy_connection(struct db *d)
{
        struct db_conn *c;

        if (!d || d->started)
                return -EINVAL;
        if (d->copy_conn)
                return 0;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->db = d;
        c->index = d->n_conns;
        c->copy = true;
        TAILQ_INIT(&c->inflight);
        c->timer = evtimer_new(d->base, db_conn_timer_cb, c);
        if (!c->timer) {
                free(c);
                return -ENOMEM;
        }
        d->copy_conn = c;
        return 0;
}

int db_statement(struct db *d, const char *sql, int n_params, unsigned *ret_id)
{
        if (!d || !sql || n_params < 0 || n_params > DB_PARAMS_MAX || d->started)
                return -EINVAL;
        if (d->n_statements >= DB_STATEMENTS_MAX)
                return -E2BIG;
        d->statements[d->n_statements] = (struct db_statement){.sql = sql, .n_params = n_params};
        *ret_id = d->n_statements++;
        return 0;
}

void db_set_state_callback(struct db *d, db_state_callback_t cb, void *userdata)
{
        d->state_cb = cb;
        d->state_userdata = userdata;
}

int db_start(struct db *d)
{
        if (d->started)
                return 0;
        d->started = true;
        for (unsigned i = 0; i < d->n_conns; i++)
                db_conn_connect(&d->conns[i]);
        if (d->copy_conn)
                db_conn_connect(d->copy_conn);
        return 0;
}

int db_query(struct db *d, unsigned stmt, const char *const *values, int n_values, db_callback_t cb,
             void *userdata, struct db_query **ret)
{
        struct db_query *q;
        size_t total = 0, lens[DB_PARAMS_MAX];
        char *p;

        if (!d || !cb || stmt >= d->n_statements || n_values != d->statements[stmt].n_params ||
            n_values > DB_PARAMS_MAX || (n_values > 0 && !values))
                return -EINVAL;
        if (d->n_up == 0)
                return -ENOTCONN;
        if (d->n_queued >= DB_QUEUE_MAX)
                return -EBUSY;

        for (int i = 0; i < n_values; i++) {
                lens[i] = values[i] ? strlen(values[i]) + 1 : 0;
                total += lens[i];
        }
        q = malloc(sizeof(*q) + total);
        if (!q)
                return -ENOMEM;
        *q = (struct db_query){
                .db = d,
                .cb = cb,
                .userdata = userdata,
                .state = DB_QUERY_QUEUED,
                .stmt = stmt,
                .n_values = n_values,
        };
        p = q->data;
        for (int i = 0; i < n_values; i++) {
                if (!values[i])
                        continue;
                memcpy(p, values[i], lens[i]);
                q->values[i] = p;
                p += lens[i];
        }

        TAILQ_INSERT_TAIL(&d->queue, q, entry);
        d->n_queued++;
        db_dispatch(d);
        if (ret)
                *ret = q;
        return 0;
}

int db_copy(struct db *d, const char *sql, const void *data, size_t len, db_callback_t cb, void *userdata,
            struct db_query **ret)
{
        struct db_query *q;

        if (!d || !sql || !cb || (len > 0 && !data) || len > INT_MAX)
                return -EINVAL;
        if (!db_copy_ready(d))
                return -ENOTCONN;
        if (d->n_copy_queued >= DB_COPY_QUEUE_MAX)
                return -EBUSY;
        q = malloc(sizeof(*q) + len);
        if (!q)
                return -ENOMEM;
        *q = (struct db_query){
                .db = d,
                .cb = cb,
                .userdata = userdata,
                .state = DB_QUERY_QUEUED,
                .copy = true,
                .copy_sql = sql,
                .copy_len = len,
        };
        if (len > 0)
                memcpy(q->data, data, len);
        TAILQ_INSERT_TAIL(&d->copy_queue, q, entry);
        d->n_copy_queued++;
        if (ret)
                *ret = q;
        db_copy_dispatch(d);
        return 0;
}

bool db_copy_ready(const struct db *d)
{
        return d && d->copy_conn && d->copy_conn->state == DB_CONN_READY;
}

void db_query_cancel(struct db_query *q)
{
        struct db *d;

        if (!q)
                return;
        d = q->db;
        switch (q->state) {
        case DB_QUERY_QUEUED:
                if (q->copy) {
                        TAILQ_REMOVE(&d->copy_queue, q, entry);
                        d->n_copy_queued--;
                } else {
                        TAILQ_REMOVE(&d->queue, q, entry);
                        d->n_queued--;
                }
                free(q);
                break;
        case DB_QUERY_SENT:
                /* The connection owns it now and frees it once the result is in. */
                q->cb = NULL;
                break;
        case DB_QUERY_DONE:
                TAILQ_REMOVE(&d->done, q, entry);
                free(q);
                break;
        }
}

bool db_is_up(const struct db *d)
{
        return d && d->n_up > 0;
}

unsigned db_connections_up(const struct db *d)
{
        return d ? d->n_up : 0;
}

const struct db_stats *db_get_stats(const struct db *d)
{
        return &d->stats;
}

const char *db_last_error(const struct db *d)
{
        return d ? d->last_error : "";
}

/* Frees the queries of <list> without callbacks. */
static void db_free_queries(struct db_query_list *list)
{
        struct db_query *q;

        while ((q = TAILQ_FIRST(list))) {
                TAILQ_REMOVE(list, q, entry);
                PQclear(q->res);
                free(q);
        }
}

/* Closes <c> and frees what it holds (not <c> itself). */
static void db_conn_release(struct db_conn *c)
{
        db_free_queries(&c->inflight);
        db_conn_close(c);
        db_free_event(&c->timer);
}

struct db *db_free(struct db *d)
{
        if (!d)
                return NULL;
        for (unsigned i = 0; d->conns && i < d->n_conns; i++)
                db_conn_release(&d->conns[i]);
        if (d->copy_conn) {
                db_conn_release(d->copy_conn);
                free(d->copy_conn);
        }
        db_free_queries(&d->copy_queue);
        db_free_queries(&d->queue);
        db_free_queries(&d->done);
        db_free_event(&d->deferred);
        db_free_event(&d->flush);
        free(d->conns);
        free(d->conninfo);
        free(d);
        return NULL;
}
