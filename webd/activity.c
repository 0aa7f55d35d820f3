/* The activity log: journal line, batched table writes, retention, and GET /activity.
 *
 * activity_record() runs for every answered request (it is the server's log hook): it writes the journal
 * line and copies the entry into a ring of ACTIVITY_QUEUE_MAX slots. A flush sends up to
 * ACTIVITY_BATCH_MAX entries from the head of the ring, each column as a PostgreSQL array literal, in one
 * prepared INSERT ... SELECT FROM unnest($1, ..., $9): one statement and one commit per batch instead of
 * one per request. When the database has a COPY connection ready (db_copy()), a batch goes instead as one
 * COPY ... FROM STDIN in PostgreSQL's binary format, which costs the server about a third of the INSERT per
 * row (bench/README.md); the INSERT remains for the rest: the COPY connection down, and the entries sent
 * again alone or after a broken connection (below). One flush is in flight at a time; the next starts when
 * it returns if a full batch is waiting, otherwise ACTIVITY_FLUSH_USEC after the first entry queued.
 *
 * An entry leaves the ring only once the database has acknowledged its row (or refused it alone). What a
 * flush's outcome does to the entries it sent:
 *   - written: they leave the ring;
 *   - the database is down, the pool busy, or a transient error (deadlock, out of resources): they stay,
 *     and the flush is tried again ACTIVITY_RETRY_USEC later, for as long as it takes;
 *   - the connection broke with the batch in flight: the batch may or may not have been committed, so
 *     those entries are "unsure" and are sent again with a statement that inserts only the rows not there
 *     yet (same time and request id), which the index on the time makes cheap: nothing lost, nothing twice;
 *   - the database refused the batch (a bad value in one row): every entry of it is sent again alone
 *     ("solo"), so one bad row costs only itself; a row refused alone is dropped, counted and logged.
 * Rows do not depend on the user: there is no foreign key (migration 3), and a row keeps the user's id and
 * name as they were. The one loss left is a full ring (the database down or too slow for 4096 entries):
 * the new entry is dropped and counted. The journal line is written in every case.
 *
 * Health probes (routes marked probe) are counted, not logged: each relay and lbd probe every second, and
 * these rows would be most of the table while saying nothing. A probe that fails is still a journal line.
 *
 * Retention: every retention_interval, rows older than retention are deleted, ACTIVITY_SWEEP_BATCH at a
 * time (the oldest first, found through the index on the time) until fewer are left, so each delete is a
 * short transaction. Nothing of it runs on a request's path. */
#include "webd/activity.h"

#include <endian.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/list.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/parse.h"
#include "webd/db.h"
#include "webd/config.h"
#include "webd/json.h"
#include "webd/metrics.h"
#include "webd/server.h"

#define ACTIVITY_FLUSH_USEC      (100 * USEC_PER_MSEC)
#define ACTIVITY_RETRY_USEC      (250 * USEC_PER_MSEC)
#define ACTIVITY_REPORT_USEC     (10 * USEC_PER_SEC)
#define ACTIVITY_SWEEP_FIRST_USEC (1 * USEC_PER_SEC)
#define ACTIVITY_READ_WAIT_USEC  (1 * USEC_PER_SEC)
#define ACTIVITY_PATH_MAX        512
#define ACTIVITY_COLUMNS         9
/* The columns of a row, in the order of the unnest() arrays and of the COPY's fields. */
#define ACTIVITY_INSERT_COLUMNS "at, user_id, username, method, path, status, latency_ms, request_id, client"

struct activity_entry {
        uint64_t at_usec; /* wall clock */
        int64_t user_id;  /* 0: anonymous */
        int status;
        double latency_ms;
        char method[8];
        char path[ACTIVITY_PATH_MAX];
        char request_id[SERVER_REQUEST_ID_MAX + 1];
        char client[NETADDR_STRLEN];
        char user_name[SERVER_USER_NAME_MAX]; /* "" when none */
};

/* A GET /activity waiting for the caller's queued entries to be written (see activity_list()). */
struct activity_reader {
        struct server_request *r; /* a reference */
        uint64_t until;           /* runs once this many entries have left the ring (activity.done) */
        uint64_t deadline_usec;   /* or at this time, whatever is written by then */
        DLIST_FIELDS(struct activity_reader, readers);
};

struct activity {
        struct event_base *base;
        struct db *db;
        const struct config *config;
        bool enabled;
        struct activity_entry *ring;
        size_t head, count; /* count includes the entries in flight, which are the first ones */
        size_t in_flight;   /* entries of the batch in flight */
        bool in_flight_copy; /* sent with COPY */
        size_t solo;        /* entries at the head to send one at a time: their batch was refused */
        size_t unsure;      /* entries at the head whose last write has an unknown outcome */
        uint64_t done;      /* entries that have left the ring so far: the head's sequence number */
        DLIST_HEAD(struct activity_reader, readers); /* the oldest last */
        struct event *read_timer;
        struct event *timer;
        struct db_query *flush;
        struct event *sweep_timer;
        struct db_query *sweep;
        uint64_t swept; /* rows deleted by the sweep round in progress */
        struct activity_stats stats;
        uint64_t reported, last_report_usec, last_refused_usec;
        unsigned insert, insert_missing, list, expire;
        time_t at_second;   /* the second at_text shows */
        char at_text[32];
        void (*drained)(void *userdata);
        void *drained_userdata;
};

int activity_array_append(char *buf, size_t size, size_t *len, const char *value)
{
        size_t n = *len, need;

        if (!value) {
                need = (n > 1 ? 1 : 0) + 4;
                if (n + need + 1 > size)
                        return -ENOBUFS;
                if (n > 1)
                        buf[n++] = ',';
                memcpy(buf + n, "NULL", 4);
                n += 4;
        } else {
                need = (n > 1 ? 1 : 0) + 2;
                for (const char *p = value; *p; p++)
                        need += (*p == '"' || *p == '\\') ? 2 : 1;
                if (n + need + 1 > size)
                        return -ENOBUFS;
                if (n > 1)
                        buf[n++] = ',';
                buf[n++] = '"';
                for (const char *p = value; *p; p++) {
                        if (*p == '"' || *p == '\\')
                                buf[n++] = '\\';
                        buf[n++] = *p;
                }
                buf[n++] = '"';
        }
        buf[n] = '\0';
        *len = n;
        return 0;
}

size_t activity_clean_path(const char *path, char *buf, size_t size)
{
        static const char hex[] = "0123456789ABCDEF";
        size_t n = 0;

        if (size == 0)
                return 0;
        for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
                if (*p > 0x20 && *p < 0x7f) {
                        if (n + 2 > size)
                                break;
                        buf[n++] = (char)*p;
                } else {
                        if (n + 4 > size)
                                break;
                        buf[n++] = '%';
                        buf[n++] = hex[*p >> 4];
                        buf[n++] = hex[*p & 0xf];
                }
        }
        buf[n] = '\0';
        return n;
}


size_t activity_copy_name(char *dst, size_t size, const char *src)
{
        size_t n = server_copy_text(dst, size, src), k = n;

        /* Cut inside a character when the first byte left out continues it: then drop its first bytes. */
        while (k > 0 && ((unsigned char)src[k] & 0xc0) == 0x80)
                k--;
        if (k < n)
                dst[n = k] = '\0';
        return n;
}

/* Logs, at most every ACTIVITY_REPORT_USEC, how many entries never made it to the table. */
static void activity_report(struct activity *a)
{
        uint64_t now = now_usec(), lost = a->stats.dropped_full + a->stats.dropped_refused;

        if (lost > a->reported && now - a->last_report_usec >= ACTIVITY_REPORT_USEC) {
                log_warning("Activity log: %" PRIu64 " entries not written to the database so far (%" PRIu64
                            " with the queue full, %" PRIu64 " refused); the journal has every request",
                            lost, a->stats.dropped_full, a->stats.dropped_refused);
                a->reported = lost;
                a->last_report_usec = now;
        }
}

static void activity_schedule(struct event *timer, uint64_t usec)
{
        struct timeval tv = timeval_from_usec(usec);

        if (!evtimer_pending(timer, NULL))
                (void)evtimer_add(timer, &tv);
}

/* Like activity_schedule(), but moves a pending timer to <usec> from now. */
static void activity_reschedule(struct event *timer, uint64_t usec)
{
        struct timeval tv = timeval_from_usec(usec);

        (void)evtimer_add(timer, &tv);
}

static void activity_check_drained(struct activity *a)
{
        void (*cb)(void *) = a->drained;

        if (cb && (a->count == 0 || !db_is_up(a->db)) && !a->flush) {
                a->drained = NULL;
                cb(a->drained_userdata);
        }
}

/* The first <n> entries of the ring are done with (written, or refused alone). */
static void activity_consume(struct activity *a, size_t n)
{
        a->head = (a->head + n) % ACTIVITY_QUEUE_MAX;
        a->count -= n;
        a->done += n;
        if (a->readers) /* on the next turn of the loop, not inside the database's callback */
                activity_reschedule(a->read_timer, 0);
        a->solo -= MIN(a->solo, n);
        a->unsure -= MIN(a->unsure, n);
}

static void activity_flush(struct activity *a);

/* After a flush's outcome: the next flush now (a full batch, rows to send alone, a stop), or later. */
static void activity_next(struct activity *a, bool retry)
{
        if (retry)
                activity_schedule(a->timer, ACTIVITY_RETRY_USEC);
        else if (a->count >= ACTIVITY_BATCH_MAX || a->solo > 0 || a->unsure > 0 || (a->drained && a->count > 0))
                activity_flush(a);
        else if (a->count > 0)
                activity_schedule(a->timer, ACTIVITY_FLUSH_USEC);
        activity_check_drained(a);
}

/* The first <n> entries can't be written together, for <why>: a batch is sent again one entry at a
 * time, so that only the bad entry is lost; an entry alone is dropped (counted, logged). */
static void activity_refused(struct activity *a, size_t n, const char *why)
{
        if (n > 1) {
                log_debug("Activity log: a batch of %zu entries was refused (%s); writing them one by one", n,
                          why);
                a->solo = MAX(a->solo, n);
                return;
        }
        /* One line per ACTIVITY_REPORT_USEC at most: if every row is refused (a table gone), not a flood. */
        if (now_usec() - a->last_refused_usec >= ACTIVITY_REPORT_USEC) {
                log_warning("Activity log: the database refused the entry of request %s: %s",
                            a->ring[a->head].request_id, why);
                a->last_refused_usec = now_usec();
        } else
                log_debug("Activity log: the database refused the entry of request %s: %s",
                          a->ring[a->head].request_id, why);
        activity_consume(a, n);
        a->stats.dropped_refused += n;
        activity_report(a);
}

static void activity_flushed(int error, const PGresult *res, void *userdata)
{
        struct activity *a = userdata;
        size_t n = a->in_flight;
        bool retry = false;

        a->flush = NULL;
        a->in_flight = 0;
        if (error == -ECONNRESET) /* maybe committed, maybe not: sent again, inserting only what isn't there */
                a->unsure = MAX(a->unsure, n);
        switch (error) {
        case 0:
                activity_consume(a, n);
                a->stats.written += n;
                if (a->in_flight_copy)
                        a->stats.copied += n;
                break;
        case -ECONNRESET:
        case -ENOTCONN:
        case -EAGAIN:
                log_debug("Activity log: writing %zu entries failed for now (%s); trying again", n,
                          res ? PQresultErrorMessage(res) : "database unavailable");
                a->stats.retried++;
                retry = true;
                break;
        default:
                activity_refused(a, n, res ? PQresultErrorMessage(res) : "unknown error");
                break;
        }
        activity_next(a, retry);
}

/* Appends the <width> last decimal digits of <v> to <buf> at <n>; returns the new length. */
static size_t activity_digits(char *buf, size_t n, uint64_t v, unsigned width)
{
        for (unsigned i = width; i > 0; i--) {
                buf[n + i - 1] = (char)('0' + v % 10);
                v /= 10;
        }
        return n + width;
}

/* Writes <usec> as "YYYY-MM-DD HH:MM:SS.uuuuuu+00" (<size> >= 40). The date part is made once per
 * second: a batch holds many entries of the same second. */
static void activity_format_at(struct activity *a, uint64_t usec, char *buf, size_t size)
{
        time_t t = (time_t)(usec / USEC_PER_SEC);
        size_t n;

        if (t != a->at_second || a->at_text[0] == '\0') {
                struct tm tm;

                if (!gmtime_r(&t, &tm) ||
                    strftime(a->at_text, sizeof(a->at_text), "%Y-%m-%d %H:%M:%S", &tm) == 0)
                        memcpy(a->at_text, "1970-01-01 00:00:00", 20);
                a->at_second = t;
        }
        n = server_copy_text(buf, size, a->at_text);
        buf[n++] = '.';
        n = activity_digits(buf, n, usec % USEC_PER_SEC, 6);
        memcpy(buf + n, "+00", 4);
}

/* <ms> rounded to whole microseconds: the table keeps latencies to three decimals of a millisecond. */
static uint64_t activity_latency_us(double ms)
{
        return ms > 0 && ms < 1e12 ? (uint64_t)(ms * 1000.0 + 0.5) : 0;
}

/* Writes <ms> with three decimals ("12.345"). */
static void activity_format_ms(double ms, char buf[static 40])
{
        uint64_t us = activity_latency_us(ms);
        size_t n;

        server_int_text((int64_t)(us / 1000), buf);
        n = strlen(buf);
        buf[n++] = '.';
        n = activity_digits(buf, n, us % 1000, 3);
        buf[n] = '\0';
}

/* PostgreSQL's binary COPY format: a signature, flags and a header extension length; then per row the
 * number of fields and each field as its length (-1: NULL) and its bytes in the type's binary form, big-
 * endian; then -1 as the field count. timestamptz is microseconds since 2000-01-01 UTC. */
static const char activity_copy_signature[11] = "PGCOPY\n\377\r\n";
#define ACTIVITY_COPY_HEADER   (sizeof(activity_copy_signature) + 4 + 4)
#define ACTIVITY_PG_EPOCH_USEC INT64_C(946684800000000)
#define ACTIVITY_COPY_SQL      "COPY activity (" ACTIVITY_INSERT_COLUMNS ") FROM STDIN WITH (FORMAT binary)"

static char *activity_put16(char *p, int16_t v)
{
        uint16_t be = htobe16((uint16_t)v);

        memcpy(p, &be, sizeof(be));
        return p + sizeof(be);
}

static char *activity_put32(char *p, int32_t v)
{
        uint32_t be = htobe32((uint32_t)v);

        memcpy(p, &be, sizeof(be));
        return p + sizeof(be);
}

static char *activity_put64(char *p, int64_t v)
{
        uint64_t be = htobe64((uint64_t)v);

        memcpy(p, &be, sizeof(be));
        return p + sizeof(be);
}

/* A field of 8 bytes. */
static char *activity_put_int8(char *p, int64_t v)
{
        return activity_put64(activity_put32(p, 8), v);
}

/* A text field, or NULL when <text> is NULL. */
static char *activity_put_text(char *p, const char *text)
{
        size_t n;

        if (!text)
                return activity_put32(p, -1);
        n = strlen(text);
        p = activity_put32(p, (int32_t)n);
        memcpy(p, text, n);
        return p + n;
}

/* Sends the oldest <n> entries (<n> >= 1) as one COPY. Returns 0 or the error of db_copy(), -ENOMEM. */
static int activity_send_copy(struct activity *a, size_t n)
{
        size_t size = ACTIVITY_COPY_HEADER + 2;
        char *buf, *p;
        int k;

        for (size_t i = 0; i < n; i++) {
                const struct activity_entry *e = &a->ring[(a->head + i) % ACTIVITY_QUEUE_MAX];

                size += 2 + ACTIVITY_COLUMNS * 4 + 8 + 8 + 4 + 8 + strlen(e->user_name) + strlen(e->method) +
                        strlen(e->path) + strlen(e->request_id) + strlen(e->client);
        }
        buf = malloc(size);
        if (!buf)
                return -ENOMEM;
        memcpy(buf, activity_copy_signature, sizeof(activity_copy_signature));
        p = activity_put32(activity_put32(buf + sizeof(activity_copy_signature), 0), 0);
        for (size_t i = 0; i < n; i++) {
                const struct activity_entry *e = &a->ring[(a->head + i) % ACTIVITY_QUEUE_MAX];
                double ms = (double)activity_latency_us(e->latency_ms) / 1000.0; /* as the INSERT's text */
                int64_t bits;

                memcpy(&bits, &ms, sizeof(bits));
                p = activity_put16(p, ACTIVITY_COLUMNS);
                p = activity_put_int8(p, (int64_t)e->at_usec - ACTIVITY_PG_EPOCH_USEC);
                p = e->user_id > 0 ? activity_put_int8(p, e->user_id) : activity_put32(p, -1);
                p = activity_put_text(p, e->user_name[0] ? e->user_name : NULL);
                p = activity_put_text(p, e->method);
                p = activity_put_text(p, e->path);
                p = activity_put32(activity_put32(p, 4), e->status);
                p = activity_put_int8(p, bits);
                p = activity_put_text(p, e->request_id);
                p = activity_put_text(p, e->client);
        }
        p = activity_put16(p, -1);
        k = db_copy(a->db, ACTIVITY_COPY_SQL, buf, (size_t)(p - buf), activity_flushed, a, &a->flush);
        free(buf);
        return k;
}

/* Sends the oldest <n> entries (<n> >= 1) with statement <stmt>. Returns 0 or the error of db_query(),
 * -ENOMEM. */
static int activity_send(struct activity *a, unsigned stmt, size_t n)
{
        char *columns[ACTIVITY_COLUMNS] = {0};
        size_t sizes[ACTIVITY_COLUMNS] = {0}, lens[ACTIVITY_COLUMNS];
        int k = 0;

        /* Room for the worst case of every column: each byte escaped, quotes, commas, braces. */
        for (size_t i = 0; i < n; i++) {
                const struct activity_entry *e = &a->ring[(a->head + i) % ACTIVITY_QUEUE_MAX];

                sizes[0] += 40;
                sizes[1] += 24;
                sizes[2] += 2 * strlen(e->user_name) + 5; /* or NULL and a comma */
                sizes[3] += 2 * strlen(e->method) + 3;
                sizes[4] += 2 * strlen(e->path) + 3;
                sizes[5] += 16;
                sizes[6] += 40;
                sizes[7] += 2 * strlen(e->request_id) + 3;
                sizes[8] += 2 * strlen(e->client) + 3;
        }
        for (size_t c = 0; c < ACTIVITY_COLUMNS; c++) {
                sizes[c] += 3;
                columns[c] = malloc(sizes[c]);
                if (!columns[c]) {
                        k = -ENOMEM;
                        goto finish;
                }
                columns[c][0] = '{';
                columns[c][1] = '\0';
                lens[c] = 1;
        }
        for (size_t i = 0; i < n && k >= 0; i++) {
                const struct activity_entry *e = &a->ring[(a->head + i) % ACTIVITY_QUEUE_MAX];
                char at[40], user[SERVER_INT_MAX], status[SERVER_INT_MAX], latency[40];
                const char *values[ACTIVITY_COLUMNS];

                activity_format_at(a, e->at_usec, at, sizeof(at));
                server_int_text(e->user_id, user);
                server_int_text(e->status, status);
                activity_format_ms(e->latency_ms, latency);
                values[0] = at;
                values[1] = e->user_id > 0 ? user : NULL;
                values[2] = e->user_name[0] ? e->user_name : NULL;
                values[3] = e->method;
                values[4] = e->path;
                values[5] = status;
                values[6] = latency;
                values[7] = e->request_id;
                values[8] = e->client;
                for (size_t c = 0; c < ACTIVITY_COLUMNS && k >= 0; c++)
                        k = activity_array_append(columns[c], sizes[c], &lens[c], values[c]);
        }
        for (size_t c = 0; c < ACTIVITY_COLUMNS && k >= 0; c++) {
                columns[c][lens[c]++] = '}';
                columns[c][lens[c]] = '\0';
        }
        if (k >= 0)
                k = db_query(a->db, stmt, (const char *const *)columns, ACTIVITY_COLUMNS, activity_flushed, a,
                             &a->flush);
finish:
        for (size_t c = 0; c < ACTIVITY_COLUMNS; c++)
                free(columns[c]);
        return k;
}

/* Sends the oldest entries: a batch, or one alone after a refused batch; the unsure ones with the
 * statement that skips rows already there. While that can't be done, tries again later. */
static void activity_flush(struct activity *a)
{
        size_t n = MIN(a->count, (size_t)ACTIVITY_BATCH_MAX);
        int k;

        (void)evtimer_del(a->timer);
        if (a->flush || n == 0)
                return;
        if (!db_is_up(a->db)) {
                activity_schedule(a->timer, ACTIVITY_RETRY_USEC);
                return;
        }
        if (a->solo > 0)
                n = 1;
        if (a->unsure > 0)
                n = MIN(n, a->unsure);
        k = -ENOTCONN;
        if (a->solo == 0 && a->unsure == 0 && db_copy_ready(a->db))
                k = activity_send_copy(a, n);
        a->in_flight_copy = k >= 0;
        if (k == -ENOTCONN || k == -EBUSY) /* no COPY now: the pool takes the INSERT */
                k = activity_send(a, a->unsure > 0 ? a->insert_missing : a->insert, n);
        if (k == -ENOTCONN || k == -EBUSY || k == -ENOMEM) {
                log_debug("Activity log: can't send %zu entries now (%s); trying again", n, strerror(-k));
                activity_schedule(a->timer, ACTIVITY_RETRY_USEC);
                return;
        }
        if (k < 0) {
                /* Entries that can't even be put into a statement (a bug): as if the database refused them. */
                activity_refused(a, n, strerror(-k));
                activity_schedule(a->timer, 0); /* the next turn of the loop, not a recursion */
                return;
        }
        a->in_flight = n;
}

static void activity_timer_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct activity *a = userdata;

        activity_flush(a);
        activity_check_drained(a);
}

void activity_record(const struct server_log_entry *e, void *userdata)
{
        struct activity *a = userdata;
        struct activity_entry *slot;
        char path[ACTIVITY_PATH_MAX], user[SERVER_INT_MAX] = "-";
        size_t path_len;
        uint64_t tenths;

        if (e->probe) {
                if (e->status >= 200 && e->status < 300) {
                        a->stats.probes_ok++;
                        return;
                }
                a->stats.probes_failed++;
        }
        path_len = activity_clean_path(e->path, path, sizeof(path));
        if (e->user_id > 0)
                server_int_text(e->user_id, user);
        /* The latency in tenths of a ms, by integers: printf's %f was a quarter of the line's cost. */
        tenths = e->latency_ms > 0 && e->latency_ms < 1e12 ? (uint64_t)(e->latency_ms * 10.0 + 0.5) : 0;
        log_info("%s %s %d %" PRIu64 ".%ums user=%s client=%s request_id=%s name=%s", e->method, path,
                 e->status, tenths / 10, (unsigned)(tenths % 10), user, e->client, e->request_id,
                 e->user_name && e->user_name[0] ? e->user_name : "-");
        if (e->probe)
                return;

        if (a->count >= ACTIVITY_QUEUE_MAX) {
                a->stats.dropped_full++;
                activity_report(a);
                return;
        }
        slot = &a->ring[(a->head + a->count) % ACTIVITY_QUEUE_MAX];
        *slot = (struct activity_entry){
                .at_usec = realtime_usec(),
                .user_id = e->user_id,
                .status = e->status,
                .latency_ms = e->latency_ms,
        };
        server_copy_text(slot->method, sizeof(slot->method), e->method);
        memcpy(slot->path, path, path_len + 1);
        server_copy_text(slot->request_id, sizeof(slot->request_id), e->request_id);
        server_copy_text(slot->client, sizeof(slot->client), e->client);
        if (e->user_name)
                activity_copy_name(slot->user_name, sizeof(slot->user_name), e->user_name);
        a->count++;

        if (a->flush)
                return; /* its outcome starts the next */
        if (a->count >= ACTIVITY_BATCH_MAX)
                activity_flush(a);
        else
                activity_schedule(a->timer, ACTIVITY_FLUSH_USEC);
}

static void activity_sweep_cb(evutil_socket_t fd, short what, void *userdata);

/* The next sweep after a second (or the interval, if shorter): the database wasn't there to ask. */
static void activity_sweep_soon(struct activity *a)
{
        activity_schedule(a->sweep_timer, MIN(a->config->activity_sweep_usec, ACTIVITY_SWEEP_FIRST_USEC));
}

static void activity_swept(int error, const PGresult *res, void *userdata)
{
        struct activity *a = userdata;
        uint64_t n = 0;

        a->sweep = NULL;
        if (error < 0) {
                log_warning("Activity log: deleting rows past retention failed: %s; trying again in %" PRIu64
                            "s",
                            res ? PQresultErrorMessage(res) : "database unavailable",
                            a->config->activity_sweep_usec / USEC_PER_SEC);
                activity_schedule(a->sweep_timer, a->config->activity_sweep_usec);
                return;
        }
        (void)parse_uint(PQcmdTuples((PGresult *)res), 0, UINT64_MAX, &n);
        a->stats.expired += n;
        a->swept += n;
        if (n >= ACTIVITY_SWEEP_BATCH) {
                /* More to go: the next batch on the next turn of the loop, so requests come in between. */
                activity_schedule(a->sweep_timer, 0);
                return;
        }
        if (a->swept > 0)
                log_info("Activity log: deleted %" PRIu64 " rows older than the retention of %" PRIu64 "s",
                         a->swept, a->config->activity_retention_usec / USEC_PER_SEC);
        a->swept = 0;
        activity_schedule(a->sweep_timer, a->config->activity_sweep_usec);
}

static void activity_sweep_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct activity *a = userdata;
        char age[SERVER_INT_MAX], limit[SERVER_INT_MAX];
        const char *values[2] = {age, limit};
        int k;

        if (a->sweep)
                return;
        if (!db_is_up(a->db)) {
                activity_sweep_soon(a);
                return;
        }
        server_int_text((int64_t)(a->config->activity_retention_usec / USEC_PER_SEC), age);
        server_int_text(ACTIVITY_SWEEP_BATCH, limit);
        k = db_query(a->db, a->expire, values, 2, activity_swept, a, &a->sweep);
        if (k < 0)
                activity_sweep_soon(a);
}

static void activity_listed(struct server_request *r, int error, const PGresult *res)
{
        int64_t limit = 20, offset = 0;
        struct json_problems problems = {0};
        cJSON *body, *items;
        const char *last_id = NULL;
        int n;

        if (error < 0) {
                server_reply_db_error(r, error, res);
                return;
        }
        (void)server_paging(r, &limit, &offset, &problems);
        json_problems_clear(&problems);
        body = cJSON_CreateObject();
        items = cJSON_AddArrayToObject(body, "items");
        if (!items)
                goto fail;
        /* Column 0 is SERVER_AUTH_SQL's; with no entry at all there is one row of NULLs. */
        n = PQgetisnull(res, 0, 1) ? 0 : PQntuples(res);
        for (int i = 0; i < n && i < limit; i++) {
                char at[JSON_TIME_MAX];
                cJSON *item = cJSON_CreateObject();

                if (!item)
                        goto fail;
                cJSON_AddItemToArray(items, item);
                last_id = PQgetvalue(res, i, 1);
                if (json_timestamp(PQgetvalue(res, i, 2), at, sizeof(at)) < 0 ||
                    !cJSON_AddNumberToObject(item, "id", strtod(PQgetvalue(res, i, 1), NULL)) ||
                    !cJSON_AddStringToObject(item, "at", at) ||
                    !cJSON_AddStringToObject(item, "method", PQgetvalue(res, i, 3)) ||
                    !cJSON_AddStringToObject(item, "path", PQgetvalue(res, i, 4)) ||
                    !cJSON_AddNumberToObject(item, "status", strtod(PQgetvalue(res, i, 5), NULL)) ||
                    !cJSON_AddNumberToObject(item, "latency_ms", strtod(PQgetvalue(res, i, 6), NULL)) ||
                    !cJSON_AddStringToObject(item, "request_id", PQgetvalue(res, i, 7)) ||
                    !cJSON_AddStringToObject(item, "client", PQgetvalue(res, i, 8)))
                        goto fail;
        }
        if (!cJSON_AddNumberToObject(body, "limit", (double)limit) ||
            !cJSON_AddNumberToObject(body, "offset", (double)offset) ||
            !(n > limit ? cJSON_AddNumberToObject(body, "next_offset", (double)(offset + limit))
                        : cJSON_AddNullToObject(body, "next_offset")) ||
            !(n > limit && last_id ? cJSON_AddNumberToObject(body, "next_before", strtod(last_id, NULL))
                                   : cJSON_AddNullToObject(body, "next_before")))
                goto fail;
        server_reply(r, 200, body);
        return;
fail:
        cJSON_Delete(body);
        server_reply_error(r, 500, "internal", "internal error");
}

/* The parameters of GET /activity: the paging ones, and "before", an entry's id: only older entries (a
 * cursor, stable while new entries arrive, which offsets are not: the reads themselves are entries). */
static const char *const activity_params[] = {"limit", "offset", "before", NULL};

/* Reads "before" into *<ret> (INT64_MAX when absent). Returns 0, or -EINVAL with a problem added. */
static int activity_before(struct server_request *r, int64_t *ret, struct json_problems *problems)
{
        const char *text = server_param(r, "before");
        uint64_t v;

        *ret = INT64_MAX;
        if (!text)
                return 0;
        if (parse_uint(text, 1, INT64_MAX, &v) < 0) {
                (void)json_add_problem(problems, "before", "must be an entry's id (a positive integer)");
                return -EINVAL;
        }
        *ret = (int64_t)v;
        return 0;
}

/* Runs the query of GET /activity for <r> (validated by activity_list()). */
static void activity_query(struct activity *a, struct server_request *r)
{
        char limit_text[SERVER_INT_MAX], offset_text[SERVER_INT_MAX], before_text[SERVER_INT_MAX];
        const char *values[3] = {limit_text, offset_text, before_text};
        struct json_problems problems = {0};
        int64_t limit = 20, offset = 0, before;
        int k;

        (void)server_paging(r, &limit, &offset, &problems);
        (void)activity_before(r, &before, &problems);
        json_problems_clear(&problems);
        server_int_text(limit + 1, limit_text);
        server_int_text(offset, offset_text);
        server_int_text(before, before_text);
        k = server_query_auth(r, a->list, values, 3, activity_listed);
        if (k < 0)
                server_reply_db_error(r, k, NULL);
}

/* Runs the readers whose entries are written, or who waited long enough; the timer for the next
 * deadline otherwise. */
static void activity_read_timer_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct activity *a = userdata;
        uint64_t now = now_usec(), next = UINT64_MAX;

        DLIST_FOREACH_SAFE(readers, i, n, a->readers) {
                if (a->done < i->until && now < i->deadline_usec) {
                        next = MIN(next, i->deadline_usec);
                        continue;
                }
                DLIST_REMOVE(readers, a->readers, i);
                if (!i->r->answered) /* its own deadline may have passed meanwhile */
                        activity_query(a, i->r);
                server_request_unref(i->r);
                free(i);
        }
        if (next != UINT64_MAX)
                activity_reschedule(a->read_timer, next - now);
}

/* GET /activity answers what the table holds, and the caller's entries still queued are not there yet:
 * a client that reads its activity right after its requests would miss them. So when the caller has
 * entries in the ring, the read waits until the ring has been written up to the last of them (a flush
 * starts now), for at most ACTIVITY_READ_WAIT_USEC: with the database too slow or down, it answers with
 * what is there (or the database's error) rather than wait on. */
static void activity_list(struct server_request *r, void *userdata)
{
        struct activity *a = userdata;
        _cleanup_(json_problems_clear) struct json_problems problems = {0};
        struct activity_reader *reader;
        int64_t limit, offset;
        size_t last = a->count;
        int k;

        int64_t before;

        k = server_paging(r, &limit, &offset, &problems);
        if (k < 0) {
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        (void)activity_before(r, &before, &problems);
        if (problems.count > 0) {
                server_reply_invalid(r, &problems);
                return;
        }
        while (last > 0 && a->ring[(a->head + last - 1) % ACTIVITY_QUEUE_MAX].user_id != r->user_id)
                last--;
        if (last == 0) {
                activity_query(a, r);
                return;
        }
        reader = calloc(1, sizeof(*reader));
        if (!reader) {
                activity_query(a, r); /* what the table has, rather than nothing */
                return;
        }
        reader->r = server_request_ref(r);
        reader->until = a->done + last;
        reader->deadline_usec = now_usec() + ACTIVITY_READ_WAIT_USEC;
        DLIST_PREPEND(readers, a->readers, reader);
        if (!evtimer_pending(a->read_timer, NULL))
                activity_reschedule(a->read_timer, ACTIVITY_READ_WAIT_USEC);
        activity_flush(a); /* now rather than after ACTIVITY_FLUSH_USEC; nothing if one is in flight */
}

#define ACTIVITY_UNNEST                                                                                   \
        "unnest($1::timestamptz[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::int[], "           \
        "$7::float8[], $8::text[], $9::text[])"

int activity_new(struct event_base *base, struct server *s, struct db *db, const struct config *config,
                 struct activity **ret)
{
        static const struct server_method methods[] = {
                { HTTP_GET, activity_list, true, false, activity_params, false },
        };
        struct activity *a;
        int r;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->base = base;
        a->db = db;
        a->config = config;
        a->enabled = config->activity;
        a->timer = evtimer_new(base, activity_timer_cb, a);
        a->sweep_timer = evtimer_new(base, activity_sweep_cb, a);
        a->read_timer = evtimer_new(base, activity_read_timer_cb, a);
        a->ring = a->enabled ? calloc(ACTIVITY_QUEUE_MAX, sizeof(*a->ring)) : NULL;
        if (!a->timer || !a->sweep_timer || !a->read_timer || (a->enabled && !a->ring) ||
            (a->enabled && db_add_copy_connection(db) < 0)) {
                activity_free(a);
                return -ENOMEM;
        }
        r = db_statement(db, "INSERT INTO activity (" ACTIVITY_INSERT_COLUMNS ") SELECT * FROM " ACTIVITY_UNNEST,
                         ACTIVITY_COLUMNS, &a->insert);
        /* After a broken connection: only the rows that didn't make it (the time and request id of each entry
         * tell it apart; the index on the time finds them). */
        if (r >= 0)
                r = db_statement(db,
                                 "INSERT INTO activity (" ACTIVITY_INSERT_COLUMNS ") "
                                 "SELECT * FROM " ACTIVITY_UNNEST " AS n(" ACTIVITY_INSERT_COLUMNS ") "
                                 "WHERE NOT EXISTS (SELECT 1 FROM activity o "
                                 "WHERE o.at = n.at AND o.request_id = n.request_id)",
                                 ACTIVITY_COLUMNS, &a->insert_missing);
        if (r >= 0)
                r = db_statement(db,
                                 SERVER_AUTH_SQL("SELECT id, at, method, path, status, latency_ms, "
                                                 "request_id, client FROM activity "
                                                 "WHERE user_id = $1 AND id < $5 "
                                                 "AND EXISTS (SELECT 1 FROM auth) "
                                                 "ORDER BY id DESC LIMIT $3 OFFSET $4",
                                                 "ORDER BY q.id DESC"),
                                 5, &a->list);
        if (r >= 0)
                r = db_statement(db,
                                 "DELETE FROM activity WHERE id IN (SELECT id FROM activity "
                                 "WHERE at < now() - $1::bigint * interval '1 second' ORDER BY at LIMIT $2)",
                                 2, &a->expire);
        if (r >= 0)
                r = server_route(s, "/activity", false, methods, ELEMENTSOF(methods), a);
        if (r < 0) {
                activity_free(a);
                return r;
        }
        if (a->enabled)
                server_set_log(s, activity_record, a);
        if (config->activity_retention_usec > 0)
                activity_schedule(a->sweep_timer, ACTIVITY_SWEEP_FIRST_USEC);
        *ret = a;
        return 0;
}

void activity_drain(struct activity *a, void (*done)(void *userdata), void *userdata)
{
        a->drained = done;
        a->drained_userdata = userdata;
        if (a->count > 0)
                activity_flush(a);
        activity_check_drained(a);
}

void activity_get_stats(const struct activity *a, struct activity_stats *ret)
{
        *ret = a->stats;
        ret->queued = a->count;
}

uint64_t activity_dropped(const struct activity *a)
{
        return a ? a->stats.dropped_full + a->stats.dropped_refused + a->count : 0;
}

void activity_write_metrics(struct metrics_text *t, void *userdata)
{
        const struct activity *a = userdata;

        metrics_single(t, "webd_activity_written_total", "counter", "Activity rows the database acknowledged.",
                       a->stats.written);
        metrics_single(t, "webd_activity_copied_total", "counter",
                       "Activity rows written with COPY (the rest of webd_activity_written_total: INSERT).",
                       a->stats.copied);
        metrics_family(t, "webd_activity_dropped_total", "counter",
                       "Activity entries never written to the table (they are in the journal).");
        metrics_sample(t, "webd_activity_dropped_total", "reason=\"queue_full\"", a->stats.dropped_full);
        metrics_sample(t, "webd_activity_dropped_total", "reason=\"refused\"", a->stats.dropped_refused);
        metrics_single(t, "webd_activity_queued", "gauge", "Activity entries waiting to be written.", a->count);
        metrics_single(t, "webd_activity_retries_total", "counter",
                       "Activity batches sent again after the database failed or went away.", a->stats.retried);
        metrics_single(t, "webd_activity_expired_total", "counter", "Activity rows deleted by retention.",
                       a->stats.expired);
        metrics_family(t, "webd_health_probes_total", "counter",
                       "Health probes answered, by result (not written to the activity log).");
        metrics_sample(t, "webd_health_probes_total", "result=\"ok\"", a->stats.probes_ok);
        metrics_sample(t, "webd_health_probes_total", "result=\"failed\"", a->stats.probes_failed);
}

struct activity *activity_free(struct activity *a)
{
        if (!a)
                return NULL;
        db_query_cancel(a->flush);
        db_query_cancel(a->sweep);
        DLIST_FOREACH_SAFE(readers, i, n, a->readers) {
                DLIST_REMOVE(readers, a->readers, i);
                server_request_unref(i->r);
                free(i);
        }
        if (a->read_timer)
                event_free(a->read_timer);
        if (a->timer)
                event_free(a->timer);
        if (a->sweep_timer)
                event_free(a->sweep_timer);
        free(a->ring);
        free(a);
        return NULL;
}
