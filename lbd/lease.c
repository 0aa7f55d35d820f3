/* The leader's lease in PostgreSQL, on lbd's event loop.
 *
 * The store. Two tables, created if missing: lbd_lease, one row per pool (holder, holder_token, epoch,
 * expires_at), and lbd_lease_hosts, one row per host of a pool (when its last attempt reached the
 * database), which is how each host sees the others. One query does everything, every [lease] renew:
 * it records this host as seen, then
 *
 *   UPDATE lbd_lease SET epoch = CASE WHEN holder_token = me THEN epoch ELSE epoch + 1 END, holder = …,
 *          holder_token = me, expires_at = now() + duration
 *    WHERE pool = … AND (holder_token = me OR expires_at < now()) RETURNING …
 *
 * which takes or renews the lease atomically, with the database's clock only (the hosts' clocks never
 * meet), and answers with the lease as it stands (ours or the holder's) and the other hosts. The
 * holder_token is random per process: a restarted lbd is a new holder and waits for its old lease to
 * expire like anyone else, since nothing tells it what the old process was doing.
 *
 * The rule that keeps two hosts from acting at once (lease_sm_*()): the leader acts only until the moment
 * it sent its last successful query plus duration minus [lease] margin, on its own monotonic clock. The
 * database set expires_at after that query left, so no other host can take the lease before the leader
 * has stopped; the margin absorbs the clocks' rates and the time the leader takes to notice. A leader
 * that can't reach the database goes on until then and stops (fail-static: it keeps proxying and
 * listing). The epoch, which grows with every change of holder, goes into every mutating call
 * (reconcile.c), so a deposed leader's late call is told apart.
 *
 * A planned stop (lease_release(), SIGTERM's drain) ends the leader's authority at once and sets the row's
 * expires_at to now() while the row is still its own (epoch kept): the next host takes it at its next
 * renewal rather than a whole duration later. The release rides the same connection (connecting first
 * when it is down) and is bounded by [lease] timeout, after which the lease merely expires.
 *
 * The connection: one, in libpq's non-blocking mode. DOWN --renew timer--> CONNECTING (PQconnectPoll)
 * --> SETUP (the tables and the pool's row) --> READY <--> QUERY (the lease query). At most one command in
 * flight; each step has [lease] timeout, after which the connection is dropped and the next renew starts
 * afresh (a database behind a dead network answers nothing, so only a timer notices). The connection
 * string comes from [lease] conninfo_file and is never logged; libpq's messages are cut to one line. */
#include "lbd/lease.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/readfile.h"
#include "lbd/config.h"
#include "lbd/history.h"

#define LEASE_SETUP_SQL                                                                                     \
        "CREATE TABLE IF NOT EXISTS lbd_lease (pool text PRIMARY KEY, holder text NOT NULL DEFAULT '', "   \
        "holder_token text NOT NULL DEFAULT '', epoch bigint NOT NULL DEFAULT 0, "                         \
        "expires_at timestamptz NOT NULL DEFAULT to_timestamp(0)); "                                        \
        "CREATE TABLE IF NOT EXISTS lbd_lease_hosts (pool text NOT NULL, name text NOT NULL, "             \
        "seen_at timestamptz NOT NULL, PRIMARY KEY (pool, name)); "

#define LEASE_ROW_SQL "INSERT INTO lbd_lease (pool) VALUES ($1) ON CONFLICT (pool) DO NOTHING"

/* $1 pool, $2 this host's name, $3 its token, $4 the duration in milliseconds. */
#define LEASE_QUERY_SQL                                                                                     \
        "WITH seen AS (INSERT INTO lbd_lease_hosts (pool, name, seen_at) VALUES ($1, $2, now()) "           \
        "ON CONFLICT (pool, name) DO UPDATE SET seen_at = now()), "                                         \
        "took AS (UPDATE lbd_lease SET epoch = CASE WHEN holder_token = $3 THEN epoch ELSE epoch + 1 END, " \
        "holder = $2, holder_token = $3, expires_at = now() + $4::bigint * interval '1 millisecond' "      \
        "WHERE pool = $1 AND (holder_token = $3 OR expires_at < now()) RETURNING holder, epoch, expires_at), " \
        "peers AS (SELECT coalesce(string_agg(name || ' ' || "                                              \
        "greatest(0, (extract(epoch FROM now() - seen_at) * 1000)::bigint), ',' ORDER BY name), '') AS list " \
        "FROM lbd_lease_hosts WHERE pool = $1 AND name <> $2) "                                             \
        "SELECT true, holder, epoch, greatest(0, (extract(epoch FROM expires_at - now()) * 1000)::bigint), " \
        "(SELECT list FROM peers) FROM took "                                                               \
        "UNION ALL SELECT false, holder, epoch, "                                                           \
        "greatest(0, (extract(epoch FROM expires_at - now()) * 1000)::bigint), (SELECT list FROM peers) "   \
        "FROM lbd_lease WHERE pool = $1 AND NOT EXISTS (SELECT 1 FROM took)"

/* A planned stop gives the lease up: it ends now, by the database's clock, if this host still holds it.
 * The epoch stays: the next holder takes epoch + 1 as after any expiry. $1 pool, $2 this host's token. */
#define LEASE_RELEASE_SQL                                                                                   \
        "UPDATE lbd_lease SET expires_at = now() WHERE pool = $1 AND holder_token = $2 AND expires_at > now() " \
        "RETURNING epoch"

#define LEASE_PEERS_TEXT_MAX 4096 /* bytes of the peers column read */

/* ---- the state machine ---- */

void lease_sm_init(struct lease_sm *s, const struct lease_policy *p)
{
        *s = (struct lease_sm){ .policy = *p };
}

int lease_sm_answer(struct lease_sm *s, uint64_t sent, uint64_t now, const struct lease_answer *a)
{
        uint64_t span = s->policy.duration_usec > s->policy.margin_usec
                                ? s->policy.duration_usec - s->policy.margin_usec
                                : 0;
        bool could_act = s->leader && now < s->valid_until;
        int events = LEASE_EVENT_NONE;

        if (a->epoch < s->epoch)
                return -ESTALE;
        if (s->answered && a->epoch != s->epoch) {
                s->changes++;
                events |= LEASE_EVENT_EPOCH;
        }
        if (s->store_down || !s->answered) {
                if (s->store_down)
                        events |= LEASE_EVENT_STORE_UP;
                s->store_down = false;
        }
        s->failures = 0;
        s->answered = true;
        s->epoch = a->epoch;
        s->answer_usec = now;
        s->expires_usec = now + a->remaining_usec;
        (void)snprintf(s->holder, sizeof(s->holder), "%s", a->holder ? a->holder : "");

        if (a->mine) {
                if (!s->leader || (events & LEASE_EVENT_EPOCH))
                        s->acquired++;
                s->leader = true;
                s->valid_until = sent + span;
                if (!could_act && now < s->valid_until)
                        events |= LEASE_EVENT_GAINED;
        } else {
                if (s->leader)
                        events |= LEASE_EVENT_LOST;
                s->leader = false;
                s->valid_until = 0;
        }
        return events;
}

int lease_sm_failed(struct lease_sm *s, uint64_t now)
{
        s->failures++;
        if (s->store_down)
                return LEASE_EVENT_NONE;
        s->store_down = true;
        s->down_since = now;
        return LEASE_EVENT_STORE_DOWN;
}

bool lease_sm_may_mutate(const struct lease_sm *s, uint64_t now, uint64_t *ret_epoch)
{
        if (!s->leader || now >= s->valid_until)
                return false;
        if (ret_epoch)
                *ret_epoch = s->epoch;
        return true;
}

size_t lease_parse_peers(const char *s, struct lease_peer *peers, size_t max)
{
        size_t n = 0;

        while (s && *s && n < max) {
                const char *end = strchr(s, ','), *space;
                size_t len = end ? (size_t)(end - s) : strlen(s), name_len;
                char digits[21];
                char *stop;
                unsigned long long ms;
                bool ok = true;

                space = memchr(s, ' ', len);
                if (space) {
                        name_len = (size_t)(space - s);
                        size_t dlen = len - name_len - 1;

                        if (name_len == 0 || name_len >= LEASE_NAME_MAX || dlen == 0 || dlen >= sizeof(digits))
                                ok = false;
                        for (size_t i = 0; ok && i < name_len; i++)
                                if (!config_lease_name_char(s[i]))
                                        ok = false;
                        if (ok) {
                                memcpy(digits, space + 1, dlen);
                                digits[dlen] = '\0';
                                errno = 0;
                                ms = strtoull(digits, &stop, 10);
                                if (errno != 0 || *stop != '\0' || digits[0] < '0' || digits[0] > '9' ||
                                    ms > UINT64_MAX / USEC_PER_MSEC)
                                        ok = false;
                        }
                        if (ok) {
                                memcpy(peers[n].name, s, name_len);
                                peers[n].name[name_len] = '\0';
                                peers[n].seen_ago_usec = (uint64_t)ms * USEC_PER_MSEC;
                                n++;
                        }
                }
                s = end ? end + 1 : NULL;
        }
        return n;
}

/* ---- the connection ---- */

enum lease_conn_state {
        LEASE_DOWN,
        LEASE_CONNECTING,
        LEASE_SETUP, /* the tables */
        LEASE_ROW,   /* the pool's row */
        LEASE_READY,
        LEASE_QUERY,
        LEASE_RELEASE, /* the release at a planned stop */
};

struct lease {
        struct event_base *base;
        char name[LEASE_NAME_MAX], pool[LEASE_NAME_MAX]; /* copied: a reload replaces the config */
        char *conninfo;
        char token[33];
        struct lease_sm sm;
        void (*on_change)(void *userdata);
        void *on_change_userdata;
        struct history *history;

        enum lease_conn_state state;
        PGconn *pg;
        struct event *io;        /* the socket: what PQconnectPoll() waits for, then reads */
        struct event *write;     /* one-shot while a command is being flushed */
        struct event renew_timer;
        struct event timeout_timer;
        struct event lapse_timer; /* the leader's authority ends */
        bool started;
        bool failed_command;      /* the command in flight got an error result */
        bool got_row;
        bool releasing;           /* lease_release() was called: never acts again */
        void (*released)(void *userdata); /* the release's end, once; NULL when none is pending */
        void *released_userdata;
        struct event release_timer; /* bounds the release */
        uint64_t sent_usec;       /* the lease query's */
        struct lease_answer answer;
        char holder[LEASE_NAME_MAX];
        struct lease_peer peers[LEASE_PEERS_MAX];
        size_t n_peers;
        uint64_t attempts, failures_total;
        char last_error[LEASE_ERROR_MAX];
        char command_error[LEASE_ERROR_MAX];
};

static void lease_changed(struct lease *l)
{
        if (l->on_change)
                l->on_change(l->on_change_userdata);
}

/* Keeps the first line of libpq's <message>, printable ASCII only. */
static void lease_set_error(struct lease *l, char *buf, size_t size, const char *message)
{
        size_t n = 0;

        for (const char *p = message ? message : ""; *p && *p != '\n' && n + 1 < size; p++)
                buf[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
        buf[n] = '\0';
        if (n == 0)
                (void)snprintf(buf, size, "unknown error");
}

static void lease_free_event(struct event **e)
{
        if (*e) {
                event_free(*e);
                *e = NULL;
        }
}

static void lease_close(struct lease *l)
{
        lease_free_event(&l->io);
        lease_free_event(&l->write);
        (void)evtimer_del(&l->timeout_timer);
        if (l->pg) {
                PQfinish(l->pg);
                l->pg = NULL;
        }
        l->state = LEASE_DOWN;
}

static void lease_arm_lapse(struct lease *l)
{
        uint64_t now = now_usec();
        struct timeval tv;

        (void)evtimer_del(&l->lapse_timer);
        if (!lease_sm_may_mutate(&l->sm, now, NULL))
                return;
        tv = timeval_from_usec(l->sm.valid_until - now);
        (void)evtimer_add(&l->lapse_timer, &tv);
}

static void lease_on_lapse(evutil_socket_t fd, short what, void *userdata)
{
        struct lease *l = userdata;
        uint64_t now = now_usec();

        if (lease_sm_may_mutate(&l->sm, now, NULL)) {
                lease_arm_lapse(l); /* renewed meanwhile, or a timer a little early */
                return;
        }
        log_warning("Lease of pool %s not renewed in time (last answer %llu ms ago): this host stops acting "
                    "on the pool in epoch %" PRIu64 " and keeps serving",
                    l->pool, (unsigned long long)((now - l->sm.answer_usec) / USEC_PER_MSEC),
                    l->sm.epoch);
        history_event(l->history, HISTORY_EVENT_LEADER, "Lease not renewed in time: stopped acting (epoch %" PRIu64 ")",
                      l->sm.epoch);
        lease_changed(l);
}

static void lease_release_done(struct lease *l, const char *outcome);

/* An attempt failed: drops the connection, which the next renew makes anew (while releasing, the
 * release has failed). */
static void lease_fail(struct lease *l, const char *why)
{
        uint64_t now = now_usec();
        int events;

        lease_set_error(l, l->last_error, sizeof(l->last_error), why);
        lease_close(l);
        if (l->releasing) {
                lease_release_done(l, l->last_error);
                return;
        }
        l->failures_total++;
        events = lease_sm_failed(&l->sm, now);
        if (events & LEASE_EVENT_STORE_DOWN) {
                if (lease_sm_may_mutate(&l->sm, now, NULL))
                        log_warning("Lease store unreachable: %s; this host leads pool %s for %llu ms more "
                                    "unless a renewal succeeds, then nobody acts on the pool",
                                    l->last_error, l->pool,
                                    (unsigned long long)((l->sm.valid_until - now) / USEC_PER_MSEC));
                else
                        log_warning("Lease store unreachable: %s; nobody here acts on pool %s, every host "
                                    "keeps serving",
                                    l->last_error, l->pool);
                history_event(l->history, HISTORY_EVENT_LEADER, "Lease store unreachable: %s", l->last_error);
                lease_changed(l);
        } else {
                log_debug("Lease attempt failed again: %s", l->last_error);
        }
}

static int lease_flush(struct lease *l)
{
        int r = PQflush(l->pg);

        if (r < 0)
                return -EIO;
        if (r > 0 && event_add(l->write, NULL) < 0)
                return -ENOMEM;
        return 0;
}

static void lease_arm_timeout(struct lease *l)
{
        struct timeval tv = timeval_from_usec(l->sm.policy.timeout_usec);

        (void)evtimer_del(&l->timeout_timer);
        (void)evtimer_add(&l->timeout_timer, &tv);
}

/* The command a ready connection sends: the lease query, or the release once lease_release() was called. */
static enum lease_conn_state lease_next_query(const struct lease *l)
{
        return l->releasing ? LEASE_RELEASE : LEASE_QUERY;
}

/* Sends the next command for the state <next>. */
static void lease_send(struct lease *l, enum lease_conn_state next)
{
        char ms[24];
        const char *pool = l->pool;
        int ok;

        l->failed_command = false;
        l->got_row = false;
        l->command_error[0] = '\0';
        switch (next) {
        case LEASE_SETUP:
                ok = PQsendQuery(l->pg, LEASE_SETUP_SQL);
                break;
        case LEASE_ROW: {
                const char *values[] = { pool };

                ok = PQsendQueryParams(l->pg, LEASE_ROW_SQL, 1, NULL, values, NULL, NULL, 0);
                break;
        }
        case LEASE_QUERY: {
                const char *values[] = { pool, l->name, l->token, ms };

                (void)snprintf(ms, sizeof(ms), "%" PRIu64, l->sm.policy.duration_usec / USEC_PER_MSEC);
                l->attempts++;
                l->sent_usec = now_usec();
                ok = PQsendQueryParams(l->pg, LEASE_QUERY_SQL, 4, NULL, values, NULL, NULL, 0);
                break;
        }
        case LEASE_RELEASE: {
                const char *values[] = { pool, l->token };

                ok = PQsendQueryParams(l->pg, LEASE_RELEASE_SQL, 2, NULL, values, NULL, NULL, 0);
                break;
        }
        default:
                return;
        }
        if (!ok || lease_flush(l) < 0) {
                lease_fail(l, PQerrorMessage(l->pg));
                return;
        }
        l->state = next;
        lease_arm_timeout(l);
}

/* Copies one row of the lease query into l->answer. Returns 0 or -EBADMSG. */
static int lease_read_row(struct lease *l, const PGresult *res)
{
        const char *mine, *holder, *epoch, *ms, *peers;
        char *end;
        unsigned long long e, m;

        if (PQntuples(res) != 1 || PQnfields(res) != 5)
                return -EBADMSG;
        for (int i = 0; i < 4; i++)
                if (PQgetisnull(res, 0, i))
                        return -EBADMSG;
        mine = PQgetvalue(res, 0, 0);
        holder = PQgetvalue(res, 0, 1);
        epoch = PQgetvalue(res, 0, 2);
        ms = PQgetvalue(res, 0, 3);
        peers = PQgetisnull(res, 0, 4) ? "" : PQgetvalue(res, 0, 4);
        if (strlen(holder) >= LEASE_NAME_MAX)
                return -EBADMSG;
        errno = 0;
        e = strtoull(epoch, &end, 10);
        if (errno != 0 || *end != '\0' || epoch[0] < '0' || epoch[0] > '9')
                return -EBADMSG;
        m = strtoull(ms, &end, 10);
        if (errno != 0 || *end != '\0' || ms[0] < '0' || ms[0] > '9' || m > UINT64_MAX / USEC_PER_MSEC)
                return -EBADMSG;
        memcpy(l->holder, holder, strlen(holder) + 1);
        l->answer = (struct lease_answer){
                .mine = strcmp(mine, "t") == 0,
                .epoch = e,
                .remaining_usec = (uint64_t)m * USEC_PER_MSEC,
                .holder = l->holder,
        };
        l->n_peers = strlen(peers) < LEASE_PEERS_TEXT_MAX ? lease_parse_peers(peers, l->peers, LEASE_PEERS_MAX) : 0;
        l->got_row = true;
        return 0;
}

static void lease_answered(struct lease *l)
{
        uint64_t now = now_usec();
        bool first = !l->sm.answered;
        int events = lease_sm_answer(&l->sm, l->sent_usec, now, &l->answer);

        if (events < 0) {
                log_error("Lease store answered epoch %" PRIu64 " for pool %s, older than %" PRIu64
                          " already seen: ignoring it (was the database restored from a backup?)",
                          l->answer.epoch, l->pool, l->sm.epoch);
                lease_fail(l, "the store went back in epochs");
                return;
        }
        l->last_error[0] = '\0';
        if (events & LEASE_EVENT_STORE_UP) {
                log_notice("Lease store answers again after %llu s",
                           (unsigned long long)((now - l->sm.down_since) / USEC_PER_SEC));
                history_event(l->history, HISTORY_EVENT_LEADER, "Lease store answers again");
        }
        if (events & LEASE_EVENT_GAINED) {
                log_notice("This host (%s) leads pool %s in epoch %" PRIu64 ": it acts on the pool for %llu ms "
                           "unless renewed",
                           l->name, l->pool, l->sm.epoch,
                           (unsigned long long)((l->sm.valid_until - now) / USEC_PER_MSEC));
                history_event(l->history, HISTORY_EVENT_LEADER, "This host (%s) leads, epoch %" PRIu64,
                              l->name, l->sm.epoch);
        } else if (events & LEASE_EVENT_LOST) {
                log_notice("%s leads pool %s now (epoch %" PRIu64 "): this host stops acting on the pool",
                           l->holder, l->pool, l->sm.epoch);
                history_event(l->history, HISTORY_EVENT_LEADER, "%s leads now, epoch %" PRIu64 "; this host follows",
                              l->holder, l->sm.epoch);
        } else if (!l->answer.mine && (first || (events & LEASE_EVENT_EPOCH))) {
                log_notice("%s leads pool %s (epoch %" PRIu64 "): this host follows", l->holder,
                           l->pool, l->sm.epoch);
                history_event(l->history, HISTORY_EVENT_LEADER, "%s leads, epoch %" PRIu64 "; this host follows",
                              l->holder, l->sm.epoch);
        }
        lease_arm_lapse(l);
        if (events & (LEASE_EVENT_GAINED | LEASE_EVENT_LOST | LEASE_EVENT_STORE_UP | LEASE_EVENT_EPOCH))
                lease_changed(l);
}

/* The command in flight is complete: goes on to the next step. */
static void lease_command_done(struct lease *l)
{
        (void)evtimer_del(&l->timeout_timer);
        if (l->failed_command) {
                lease_fail(l, l->command_error);
                return;
        }
        switch (l->state) {
        case LEASE_SETUP:
                lease_send(l, LEASE_ROW);
                return;
        case LEASE_ROW:
                lease_send(l, lease_next_query(l));
                return;
        case LEASE_QUERY:
                l->state = LEASE_READY;
                if (!l->got_row) {
                        lease_fail(l, "the lease row is missing or malformed");
                        return;
                }
                lease_answered(l);
                if (l->released && l->state == LEASE_READY)
                        lease_send(l, LEASE_RELEASE); /* asked for while this query was in flight */
                return;
        case LEASE_RELEASE:
                l->state = LEASE_READY;
                lease_release_done(l, l->got_row ? NULL : "");
                return;
        default:
                return;
        }
}

static void lease_read(struct lease *l)
{
        if (!PQconsumeInput(l->pg)) {
                lease_fail(l, PQerrorMessage(l->pg));
                return;
        }
        while (l->pg && !PQisBusy(l->pg)) {
                PGresult *res = PQgetResult(l->pg);
                ExecStatusType st;

                if (!res) {
                        if (l->state == LEASE_SETUP || l->state == LEASE_ROW || l->state == LEASE_QUERY ||
                            l->state == LEASE_RELEASE)
                                lease_command_done(l);
                        return;
                }
                st = PQresultStatus(res);
                if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
                        if (!l->failed_command)
                                lease_set_error(l, l->command_error, sizeof(l->command_error),
                                                PQresultErrorMessage(res));
                        l->failed_command = true;
                } else if (l->state == LEASE_RELEASE && st == PGRES_TUPLES_OK) {
                        l->got_row = PQntuples(res) == 1;
                } else if (l->state == LEASE_QUERY && st == PGRES_TUPLES_OK && !l->failed_command &&
                           lease_read_row(l, res) < 0) {
                        l->failed_command = true;
                        (void)snprintf(l->command_error, sizeof(l->command_error),
                                       "the lease query's answer is malformed");
                }
                PQclear(res);
        }
}

static void lease_on_io(evutil_socket_t fd, short what, void *userdata);

static int lease_watch(struct lease *l, short what, bool persist)
{
        int fd = PQsocket(l->pg);

        lease_free_event(&l->io);
        if (fd < 0)
                return -EBADF;
        l->io = event_new(l->base, fd, what | (persist ? EV_PERSIST : 0), lease_on_io, l);
        if (!l->io || event_add(l->io, NULL) < 0)
                return -ENOMEM;
        return 0;
}

/* The server's notices ("relation ... already exists, skipping") are not events: debug only. */
static void lease_notice(void *userdata, const char *message)
{
        log_debug("Lease store notice: %.200s", message);
}

static void lease_connect_poll(struct lease *l)
{
        PostgresPollingStatusType st = PQconnectPoll(l->pg);

        switch (st) {
        case PGRES_POLLING_OK:
                if (PQsetnonblocking(l->pg, 1) < 0) {
                        lease_fail(l, PQerrorMessage(l->pg));
                        return;
                }
                (void)PQsetNoticeProcessor(l->pg, lease_notice, l);
                l->write = event_new(l->base, PQsocket(l->pg), EV_WRITE, lease_on_io, l);
                if (!l->write || lease_watch(l, EV_READ, true) < 0) {
                        lease_fail(l, "out of memory");
                        return;
                }
                lease_send(l, LEASE_SETUP);
                return;
        case PGRES_POLLING_READING:
        case PGRES_POLLING_WRITING:
                if (lease_watch(l, st == PGRES_POLLING_READING ? EV_READ : EV_WRITE, false) < 0)
                        lease_fail(l, PQerrorMessage(l->pg));
                return;
        default:
                lease_fail(l, PQerrorMessage(l->pg));
                return;
        }
}

static void lease_on_io(evutil_socket_t fd, short what, void *userdata)
{
        struct lease *l = userdata;

        if (l->state == LEASE_CONNECTING) {
                lease_connect_poll(l);
                return;
        }
        if (!l->pg)
                return;
        if ((what & EV_WRITE) && lease_flush(l) < 0) {
                lease_fail(l, PQerrorMessage(l->pg));
                return;
        }
        if (what & EV_READ)
                lease_read(l);
}

static void lease_connect(struct lease *l)
{
        /* Ours before the administrator's string (which may override them). */
        static const char *const keywords[] = {
                "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                "fallback_application_name", "dbname", NULL,
        };
        const char *values[] = { "1", "10", "5", "3", "lbd", l->conninfo, NULL };

        l->pg = PQconnectStartParams(keywords, values, 1);
        if (!l->pg) {
                lease_fail(l, "out of memory");
                return;
        }
        if (PQstatus(l->pg) == CONNECTION_BAD) {
                lease_fail(l, PQerrorMessage(l->pg));
                return;
        }
        l->state = LEASE_CONNECTING;
        lease_arm_timeout(l);
        if (lease_watch(l, EV_WRITE, false) < 0)
                lease_fail(l, PQerrorMessage(l->pg));
}

static void lease_on_timeout(evutil_socket_t fd, short what, void *userdata)
{
        struct lease *l = userdata;

        lease_fail(l, l->state == LEASE_CONNECTING ? "timed out connecting to the lease store"
                                                   : "the lease store did not answer in time");
}

static void lease_on_renew(evutil_socket_t fd, short what, void *userdata)
{
        struct lease *l = userdata;
        struct timeval tv = timeval_from_usec(l->sm.policy.renew_usec);

        if (!l->releasing)
                (void)evtimer_add(&l->renew_timer, &tv);
        switch (l->state) {
        case LEASE_DOWN:
                lease_connect(l);
                return;
        case LEASE_READY:
                lease_send(l, lease_next_query(l));
                return;
        default:
                return; /* an attempt is in flight: its timeout is shorter than renew */
        }
}

/* ---- the release at a planned stop ---- */

/* The release ended: <outcome> NULL when the row was released, "" when it was no longer this host's,
 * else why it failed. Runs the callback once. */
static void lease_release_done(struct lease *l, const char *outcome)
{
        void (*done)(void *userdata) = l->released;
        uint64_t now = now_usec();

        (void)evtimer_del(&l->release_timer);
        (void)evtimer_del(&l->renew_timer);
        (void)evtimer_del(&l->lapse_timer);
        if (!done)
                return;
        l->released = NULL;
        if (!outcome) {
                log_notice("Lease of pool %s released in epoch %" PRIu64 " (this host is stopping): another host "
                           "takes it at its next renewal",
                           l->pool, l->sm.epoch);
                history_event(l->history, HISTORY_EVENT_LEADER, "Lease released at stop (epoch %" PRIu64 ")",
                              l->sm.epoch);
        } else if (!outcome[0]) {
                log_info("Lease of pool %s no longer held by this host: nothing to release", l->pool);
        } else {
                log_warning("Lease of pool %s not released (%s): another host takes it when it expires, "
                            "in %llu ms at most (or at its next renewal, if the release reached the store)",
                            l->pool, outcome,
                            (unsigned long long)(l->sm.expires_usec > now ? (l->sm.expires_usec - now) / USEC_PER_MSEC
                                                                          : 0));
        }
        done(l->released_userdata);
}

static void lease_on_release_timeout(evutil_socket_t fd, short what, void *userdata)
{
        struct lease *l = userdata;

        lease_close(l);
        lease_release_done(l, "the lease store did not answer in time");
}

int lease_release(struct lease *l, void (*done)(void *userdata), void *userdata)
{
        const struct timeval now = { 0, 0 };
        struct timeval tv = timeval_from_usec(l->sm.policy.timeout_usec);

        if (l->releasing)
                return 0;
        l->releasing = true;
        (void)evtimer_del(&l->lapse_timer);
        if (!l->sm.leader) {
                (void)evtimer_del(&l->renew_timer);
                return 0;
        }
        l->released = done;
        l->released_userdata = userdata;
        (void)evtimer_add(&l->release_timer, &tv);
        /* Down or idle: the renew timer, at once, connects or sends the release (never inside this call).
         * Otherwise the step in flight goes on to the release when it ends. */
        if (l->state == LEASE_DOWN || l->state == LEASE_READY)
                (void)evtimer_add(&l->renew_timer, &now);
        else
                (void)evtimer_del(&l->renew_timer);
        return 1;
}

/* ---- the object ---- */

/* The connection string is the file's one line that is neither blank nor a comment ('#' first). */
static int lease_read_conninfo(const char *path, char **ret)
{
        _cleanup_free_ char *buf = NULL;
        char *line = NULL, *p, *out;
        size_t len;
        int r;

        r = readfile_bounded(path, LEASE_CONNINFO_MAX, 0, &buf, &len);
        if (r < 0)
                return r;
        if (strlen(buf) != len)
                return -EINVAL;
        for (p = buf; p && *p;) {
                char *end = strchr(p, '\n'), *e;

                if (end)
                        *end = '\0';
                e = p + strlen(p);
                while (e > p && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
                        *--e = '\0';
                while (*p == ' ' || *p == '\t')
                        p++;
                if (*p && *p != '#') {
                        if (line)
                                return -EINVAL; /* two strings: which one? */
                        line = p;
                }
                p = end ? end + 1 : NULL;
        }
        if (!line)
                return -EINVAL;
        for (const char *c = line; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                        return -EINVAL;
        out = strdup(line);
        explicit_bzero(buf, len);
        if (!out)
                return -ENOMEM;
        *ret = out;
        return 0;
}

int lease_new(struct event_base *base, const struct config *c, struct lease **ret)
{
        struct lease_policy policy = {
                .duration_usec = c->lease_duration_usec,
                .renew_usec = c->lease_renew_usec,
                .margin_usec = c->lease_margin_usec,
                .timeout_usec = c->lease_timeout_usec,
        };
        uint8_t nonce[16];
        struct lease *l;
        int r;

        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        r = lease_read_conninfo(c->lease_conninfo_file, &l->conninfo);
        if (r < 0) {
                free(l);
                return log_error_errno(r, "Failed to read [lease] conninfo_file %s: %m%s", c->lease_conninfo_file,
                                       r == -EINVAL ? " (it needs exactly one line that is not a comment, "
                                                      "without control characters)"
                                                    : "");
        }
        if (getrandom(nonce, sizeof(nonce), GRND_NONBLOCK) != sizeof(nonce)) {
                uint64_t t = now_usec() ^ ((uint64_t)getpid() << 40);

                memcpy(nonce, &t, sizeof(t));
                memcpy(nonce + 8, &t, sizeof(t));
        }
        for (size_t i = 0; i < sizeof(nonce); i++)
                (void)snprintf(l->token + 2 * i, 3, "%02x", nonce[i]);
        l->base = base;
        (void)snprintf(l->name, sizeof(l->name), "%s", c->lease_name);
        (void)snprintf(l->pool, sizeof(l->pool), "%s", c->lease_pool);
        lease_sm_init(&l->sm, &policy);
        (void)evtimer_assign(&l->renew_timer, base, lease_on_renew, l);
        (void)evtimer_assign(&l->timeout_timer, base, lease_on_timeout, l);
        (void)evtimer_assign(&l->lapse_timer, base, lease_on_lapse, l);
        (void)evtimer_assign(&l->release_timer, base, lease_on_release_timeout, l);
        *ret = l;
        return 0;
}

struct lease *lease_free(struct lease *l)
{
        if (!l)
                return NULL;
        lease_close(l);
        (void)evtimer_del(&l->renew_timer);
        (void)evtimer_del(&l->lapse_timer);
        (void)evtimer_del(&l->release_timer);
        if (l->conninfo)
                explicit_bzero(l->conninfo, strlen(l->conninfo));
        free(l->conninfo);
        free(l);
        return NULL;
}

void lease_set_on_change(struct lease *l, void (*on_change)(void *userdata), void *userdata)
{
        l->on_change = on_change;
        l->on_change_userdata = userdata;
}

void lease_set_history(struct lease *l, struct history *h)
{
        l->history = h;
}

void lease_start(struct lease *l)
{
        const struct timeval now = { 0, 0 };

        if (l->started)
                return;
        l->started = true;
        log_info("Lease: host %s, pool %s, duration %llu ms, renewed every %llu ms; nobody here acts on the "
                 "pool until the lease is held",
                 l->name, l->pool,
                 (unsigned long long)(l->sm.policy.duration_usec / USEC_PER_MSEC),
                 (unsigned long long)(l->sm.policy.renew_usec / USEC_PER_MSEC));
        (void)evtimer_add(&l->renew_timer, &now);
}

bool lease_may_mutate(const struct lease *l, uint64_t *ret_epoch)
{
        if (!l) {
                if (ret_epoch)
                        *ret_epoch = 0;
                return true;
        }
        if (l->releasing)
                return false;
        return lease_sm_may_mutate(&l->sm, now_usec(), ret_epoch);
}

void lease_get_view(const struct lease *l, struct lease_view *ret)
{
        uint64_t now = now_usec();

        *ret = (struct lease_view){
                .name = l->name,
                .pool = l->pool,
                .leader = !l->releasing && lease_sm_may_mutate(&l->sm, now, NULL),
                .store_down = l->sm.store_down,
                .store_down_usec = l->sm.store_down ? now - l->sm.down_since : 0,
                .answered = l->sm.answered,
                .epoch = l->sm.epoch,
                .holder = l->sm.holder,
                .expires_in_usec = l->sm.expires_usec > now ? l->sm.expires_usec - now : 0,
                .valid_for_usec = l->sm.leader && l->sm.valid_until > now ? l->sm.valid_until - now : 0,
                .changes = l->sm.changes,
                .acquired = l->sm.acquired,
                .attempts = l->attempts,
                .failures_total = l->failures_total,
                .last_error = l->last_error,
                .n_peers = l->n_peers,
        };
        memcpy(ret->peers, l->peers, sizeof(ret->peers));
}
