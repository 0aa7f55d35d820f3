/* The activity log: journal line, batched table writes, and GET /activity.
 *
 * activity_record() runs for every answered request (it is the server's log hook): it writes the journal
 * line and copies the entry into a ring of ACTIVITY_QUEUE_MAX slots. A flush takes up to
 * ACTIVITY_BATCH_MAX entries off the ring, turns each column into a PostgreSQL array literal and sends one
 * prepared INSERT ... SELECT FROM unnest($1, ..., $8): one statement and one commit per batch instead of
 * one per request, so the log costs the database little. One flush is in flight at a time; the next starts
 * when it returns if a full batch is waiting, otherwise ACTIVITY_FLUSH_USEC after the first entry queued.
 *
 * Entries are dropped, and counted, when the database is down at the time of the request, when the ring
 * is full, or when their batch fails. The journal line is written in every case. */
#include "webd/activity.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/macro.h"
#include "webd/db.h"
#include "webd/json.h"
#include "webd/server.h"

#define ACTIVITY_FLUSH_USEC  (100 * USEC_PER_MSEC)
#define ACTIVITY_REPORT_USEC (10 * USEC_PER_SEC)
#define ACTIVITY_PATH_MAX    512
#define ACTIVITY_COLUMNS     8

struct activity_entry {
        uint64_t at_usec; /* wall clock */
        int64_t user_id;  /* 0: anonymous */
        int status;
        double latency_ms;
        char method[8];
        char path[ACTIVITY_PATH_MAX];
        char request_id[SERVER_REQUEST_ID_MAX + 1];
        char client[NETADDR_STRLEN];
};

struct activity {
        struct db *db;
        bool enabled;
        struct activity_entry *ring;
        size_t head, count;
        struct event *timer;
        struct db_query *flush;
        size_t in_flight; /* entries of the batch in flight */
        uint64_t dropped, reported;
        uint64_t last_report_usec;
        unsigned insert, list;
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

static void activity_drop(struct activity *a, uint64_t n)
{
        uint64_t now = now_usec();

        a->dropped += n;
        if (a->dropped > a->reported && now - a->last_report_usec >= ACTIVITY_REPORT_USEC) {
                log_warning("Activity log: %" PRIu64 " entries not written to the database so far "
                            "(database down, queue full or write failed); the journal has every request",
                            a->dropped);
                a->reported = a->dropped;
                a->last_report_usec = now;
        }
}

static void activity_check_drained(struct activity *a)
{
        void (*cb)(void *) = a->drained;

        if (cb && (a->count == 0 || !db_is_up(a->db)) && !a->flush) {
                a->drained = NULL;
                cb(a->drained_userdata);
        }
}

static void activity_flush(struct activity *a);

static void activity_flushed(int error, const PGresult *res, void *userdata)
{
        struct activity *a = userdata;

        a->flush = NULL;
        if (error < 0) {
                log_debug("Activity log: writing %zu entries failed: %s", a->in_flight,
                          res ? PQresultErrorMessage(res) : "database unavailable");
                activity_drop(a, a->in_flight);
        }
        a->in_flight = 0;
        if (a->count >= ACTIVITY_BATCH_MAX || (a->drained && a->count > 0))
                activity_flush(a);
        else if (a->count > 0 && !evtimer_pending(a->timer, NULL)) {
                struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)ACTIVITY_FLUSH_USEC};

                (void)evtimer_add(a->timer, &tv);
        }
        activity_check_drained(a);
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

/* Writes <ms> with three decimals ("12.345"). */
static void activity_format_ms(double ms, char buf[static 40])
{
        uint64_t us = ms > 0 && ms < 1e12 ? (uint64_t)(ms * 1000.0 + 0.5) : 0;
        size_t n;

        server_int_text((int64_t)(us / 1000), buf);
        n = strlen(buf);
        buf[n++] = '.';
        n = activity_digits(buf, n, us % 1000, 3);
        buf[n] = '\0';
}

/* Sends the oldest entries (up to a batch) as one INSERT. */
static void activity_flush(struct activity *a)
{
        char *columns[ACTIVITY_COLUMNS] = {0};
        size_t sizes[ACTIVITY_COLUMNS] = {0}, lens[ACTIVITY_COLUMNS], n = MIN(a->count, (size_t)ACTIVITY_BATCH_MAX);
        int k = 0;

        (void)evtimer_del(a->timer);
        if (a->flush || n == 0)
                return;
        if (!db_is_up(a->db)) {
                a->head = (a->head + a->count) % ACTIVITY_QUEUE_MAX;
                activity_drop(a, a->count);
                a->count = 0;
                return;
        }

        /* Room for the worst case of every column: each byte escaped, quotes, commas, braces. */
        for (size_t i = 0; i < n; i++) {
                const struct activity_entry *e = &a->ring[(a->head + i) % ACTIVITY_QUEUE_MAX];

                sizes[0] += 40;
                sizes[1] += 24;
                sizes[2] += 2 * strlen(e->method) + 3;
                sizes[3] += 2 * strlen(e->path) + 3;
                sizes[4] += 16;
                sizes[5] += 40;
                sizes[6] += 2 * strlen(e->request_id) + 3;
                sizes[7] += 2 * strlen(e->client) + 3;
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

                activity_format_at(a, e->at_usec, at, sizeof(at));
                server_int_text(e->user_id, user);
                server_int_text(e->status, status);
                activity_format_ms(e->latency_ms, latency);
                k = activity_array_append(columns[0], sizes[0], &lens[0], at);
                if (k >= 0)
                        k = activity_array_append(columns[1], sizes[1], &lens[1], e->user_id > 0 ? user : NULL);
                if (k >= 0)
                        k = activity_array_append(columns[2], sizes[2], &lens[2], e->method);
                if (k >= 0)
                        k = activity_array_append(columns[3], sizes[3], &lens[3], e->path);
                if (k >= 0)
                        k = activity_array_append(columns[4], sizes[4], &lens[4], status);
                if (k >= 0)
                        k = activity_array_append(columns[5], sizes[5], &lens[5], latency);
                if (k >= 0)
                        k = activity_array_append(columns[6], sizes[6], &lens[6], e->request_id);
                if (k >= 0)
                        k = activity_array_append(columns[7], sizes[7], &lens[7], e->client);
        }
        for (size_t c = 0; c < ACTIVITY_COLUMNS && k >= 0; c++) {
                columns[c][lens[c]++] = '}';
                columns[c][lens[c]] = '\0';
        }
        if (k >= 0)
                k = db_query(a->db, a->insert, (const char *const *)columns, ACTIVITY_COLUMNS, activity_flushed, a,
                             &a->flush);

finish:
        a->head = (a->head + n) % ACTIVITY_QUEUE_MAX;
        a->count -= n;
        if (k < 0)
                activity_drop(a, n);
        else
                a->in_flight = n;
        for (size_t c = 0; c < ACTIVITY_COLUMNS; c++)
                free(columns[c]);
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

        path_len = activity_clean_path(e->path, path, sizeof(path));
        if (e->user_id > 0)
                server_int_text(e->user_id, user);
        log_info("%s %s %d %.1fms user=%s client=%s request_id=%s name=%s", e->method, path, e->status,
                 e->latency_ms, user, e->client, e->request_id,
                 e->user_name && e->user_name[0] ? e->user_name : "-");

        if (!db_is_up(a->db) || a->count >= ACTIVITY_QUEUE_MAX) {
                activity_drop(a, 1);
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
        a->count++;

        if (a->count >= ACTIVITY_BATCH_MAX && !a->flush)
                activity_flush(a);
        else if (!a->flush && !evtimer_pending(a->timer, NULL)) {
                struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)ACTIVITY_FLUSH_USEC};

                (void)evtimer_add(a->timer, &tv);
        }
}

static void activity_listed(struct server_request *r, int error, const PGresult *res)
{
        int64_t limit = 20, offset = 0;
        struct json_problems problems = {0};
        cJSON *body, *items;
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
        n = PQntuples(res);
        for (int i = 0; i < n && i < limit; i++) {
                char at[JSON_TIME_MAX];
                cJSON *item = cJSON_CreateObject();

                if (!item)
                        goto fail;
                cJSON_AddItemToArray(items, item);
                if (json_timestamp(PQgetvalue(res, i, 1), at, sizeof(at)) < 0 ||
                    !cJSON_AddNumberToObject(item, "id", strtod(PQgetvalue(res, i, 0), NULL)) ||
                    !cJSON_AddStringToObject(item, "at", at) ||
                    !cJSON_AddStringToObject(item, "method", PQgetvalue(res, i, 2)) ||
                    !cJSON_AddStringToObject(item, "path", PQgetvalue(res, i, 3)) ||
                    !cJSON_AddNumberToObject(item, "status", strtod(PQgetvalue(res, i, 4), NULL)) ||
                    !cJSON_AddNumberToObject(item, "latency_ms", strtod(PQgetvalue(res, i, 5), NULL)) ||
                    !cJSON_AddStringToObject(item, "request_id", PQgetvalue(res, i, 6)) ||
                    !cJSON_AddStringToObject(item, "client", PQgetvalue(res, i, 7)))
                        goto fail;
        }
        if (!cJSON_AddNumberToObject(body, "limit", (double)limit) ||
            !cJSON_AddNumberToObject(body, "offset", (double)offset) ||
            !(n > limit ? cJSON_AddNumberToObject(body, "next_offset", (double)(offset + limit))
                        : cJSON_AddNullToObject(body, "next_offset")))
                goto fail;
        server_reply(r, 200, body);
        return;
fail:
        cJSON_Delete(body);
        server_reply_error(r, 500, "internal", "internal error");
}

static void activity_list(struct server_request *r, void *userdata)
{
        struct activity *a = userdata;
        _cleanup_(json_problems_clear) struct json_problems problems = {0};
        char user[SERVER_INT_MAX], limit_text[SERVER_INT_MAX], offset_text[SERVER_INT_MAX];
        const char *values[3] = {user, limit_text, offset_text};
        int64_t limit, offset;
        int k;

        k = server_paging(r, &limit, &offset, &problems);
        if (k < 0) {
                server_reply_error(r, 500, "internal", "internal error");
                return;
        }
        if (problems.count > 0) {
                server_reply_invalid(r, &problems);
                return;
        }
        server_int_text(r->user_id, user);
        server_int_text(limit + 1, limit_text);
        server_int_text(offset, offset_text);
        k = server_query(r, a->list, values, 3, activity_listed);
        if (k < 0)
                server_reply_db_error(r, k, NULL);
}

int activity_new(struct event_base *base, struct server *s, struct db *db, bool enabled, struct activity **ret)
{
        static const struct server_method methods[] = {
                { EVHTTP_REQ_GET, activity_list, true, false, server_paging_params },
        };
        struct activity *a;
        int r;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->db = db;
        a->enabled = enabled;
        a->timer = evtimer_new(base, activity_timer_cb, a);
        a->ring = enabled ? calloc(ACTIVITY_QUEUE_MAX, sizeof(*a->ring)) : NULL;
        if (!a->timer || (enabled && !a->ring)) {
                activity_free(a);
                return -ENOMEM;
        }
        r = db_statement(db,
                         "INSERT INTO activity (at, user_id, method, path, status, latency_ms, request_id, client) "
                         "SELECT * FROM unnest($1::timestamptz[], $2::bigint[], $3::text[], $4::text[], "
                         "$5::int[], $6::float8[], $7::text[], $8::text[])",
                         ACTIVITY_COLUMNS, &a->insert);
        if (r >= 0)
                r = db_statement(db,
                                 "SELECT id, at, method, path, status, latency_ms, request_id, client "
                                 "FROM activity WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
                                 3, &a->list);
        if (r >= 0)
                r = server_route(s, "/activity", false, methods, ELEMENTSOF(methods), a);
        if (r < 0) {
                activity_free(a);
                return r;
        }
        if (enabled)
                server_set_log(s, activity_record, a);
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

uint64_t activity_dropped(const struct activity *a)
{
        return a ? a->dropped : 0;
}

struct activity *activity_free(struct activity *a)
{
        if (!a)
                return NULL;
        db_query_cancel(a->flush);
        if (a->timer)
                event_free(a->timer);
        free(a->ring);
        free(a);
        return NULL;
}
