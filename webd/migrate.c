/* Schema migrations. They run once at start, on a blocking connection of their own, before the event
 * loop and the connection pool exist (the pool prepares its statements against the migrated schema).
 *
 * All pending migrations and their schema_migrations rows are applied in one transaction, under a
 * transaction-scoped advisory lock, so two webd processes starting together can't both apply one, and a
 * failure leaves the database as it was. A database with a version newer than the newest known here is
 * refused: this program would not understand it. To change the schema, append a migration; never edit one
 * that has shipped. */
#include "webd/migrate.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/macro.h"
#include "webd/db.h"

/* Any constant will do, as long as nothing else on the server uses it: "webd" in ASCII. */
#define MIGRATE_LOCK_KEY "2003133796"

const struct migration migrate_migrations[] = {
        {
                1,
                "init",
                "CREATE TABLE users ("
                "  id bigserial PRIMARY KEY,"
                "  username text NOT NULL UNIQUE,"
                "  password_hash text NOT NULL,"
                "  created_at timestamptz NOT NULL DEFAULT now());"
                "CREATE TABLE tasks ("
                "  id bigserial PRIMARY KEY,"
                "  user_id bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
                "  title text NOT NULL,"
                "  description text NOT NULL DEFAULT '',"
                "  done boolean NOT NULL DEFAULT false,"
                "  created_at timestamptz NOT NULL DEFAULT now(),"
                "  updated_at timestamptz NOT NULL DEFAULT now());"
                "CREATE INDEX tasks_user_id_id ON tasks (user_id, id DESC);"
                "CREATE TABLE activity ("
                "  id bigserial PRIMARY KEY,"
                "  at timestamptz NOT NULL DEFAULT now(),"
                "  user_id bigint REFERENCES users(id) ON DELETE SET NULL,"
                "  method text NOT NULL,"
                "  path text NOT NULL,"
                "  status int NOT NULL,"
                "  latency_ms double precision NOT NULL,"
                "  request_id text NOT NULL,"
                "  client text NOT NULL);"
                "CREATE INDEX activity_user_id_id ON activity (user_id, id DESC);",
        },
        {
                /* A user's tokens carry the generation they were issued under; bumping it (logout
                 * everywhere, a password change) revokes them all. Every user starts at 0, which is also
                 * what a token without the claim reads as: tokens issued before this stay valid until
                 * the first revocation or their expiry. */
                2,
                "token_generation",
                "ALTER TABLE users ADD COLUMN token_generation bigint NOT NULL DEFAULT 0;",
        },
        {
                /* The activity log is an audit trail: a row keeps the user's id and name as they were
                 * when the request was made, whether the user still exists or not. Without the foreign
                 * key no row can fail for its user, and a deleted user's rows keep their id (the old
                 * ON DELETE SET NULL erased it). The name is filled in for the rows already there whose
                 * user still exists. The index on the time is for retention's deletes. */
                3,
                "activity_audit",
                "DO $$ DECLARE c name; BEGIN"
                "  FOR c IN SELECT conname FROM pg_constraint"
                "           WHERE conrelid = 'activity'::regclass AND contype = 'f' LOOP"
                "    EXECUTE format('ALTER TABLE activity DROP CONSTRAINT %I', c);"
                "  END LOOP;"
                "END $$;"
                "ALTER TABLE activity ADD COLUMN username text;"
                "UPDATE activity SET username = users.username FROM users"
                "  WHERE activity.user_id = users.id;"
                "CREATE INDEX activity_at ON activity (at);",
        },
        {
                /* Usernames are unique without regard to case. Accounts that already differ only by
                 * case are kept, none is deleted: the oldest (lowest id) keeps its name, each newer one
                 * is renamed to its name cut to fit, a dot and its id ("ALICE.12"; a further ".N" if even
                 * that is taken), its tokens are revoked, and the rename is recorded in users_renamed so
                 * the operator can tell those users. So the migration never fails on existing data. */
                4,
                "username_case",
                "CREATE TABLE users_renamed ("
                "  user_id bigint PRIMARY KEY,"
                "  old_username text NOT NULL,"
                "  new_username text NOT NULL,"
                "  renamed_at timestamptz NOT NULL DEFAULT now());"
                "DO $$ DECLARE d record; candidate text; suffix text; n int; BEGIN"
                "  FOR d IN SELECT u.id, u.username FROM users u WHERE EXISTS ("
                "             SELECT 1 FROM users o WHERE lower(o.username) = lower(u.username) AND o.id < u.id)"
                "           ORDER BY u.id LOOP"
                "    n := 0;"
                "    LOOP"
                "      suffix := '.' || d.id || CASE WHEN n = 0 THEN '' ELSE '.' || n END;"
                "      candidate := left(d.username, greatest(32 - length(suffix), 1)) || suffix;"
                "      EXIT WHEN NOT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower(candidate));"
                "      n := n + 1;"
                "    END LOOP;"
                "    UPDATE users SET username = candidate, token_generation = token_generation + 1"
                "      WHERE id = d.id;"
                "    INSERT INTO users_renamed (user_id, old_username, new_username)"
                "      VALUES (d.id, d.username, candidate);"
                "  END LOOP;"
                "END $$;"
                "CREATE UNIQUE INDEX users_username_lower ON users (lower(username));",
        },
};
const unsigned migrate_n_migrations = ELEMENTSOF(migrate_migrations);

static void migrate_error(char *error, size_t size, const char *what, const char *why)
{
        size_t n;

        (void)snprintf(error, size, "%s: %s", what, why);
        n = strlen(error);
        while (n > 0 && (error[n - 1] == '\n' || error[n - 1] == ' '))
                error[--n] = '\0';
}

/* Runs <sql> (with <n> text parameters); a result other than <expect> is an error described in <error>. */
static int migrate_exec(PGconn *pg, const char *sql, int n, const char *const *values, ExecStatusType expect,
                        const char *what, char *error, size_t size, PGresult **ret)
{
        _cleanup_(PQclearp) PGresult *res = NULL;

        res = n > 0 ? PQexecParams(pg, sql, n, NULL, values, NULL, NULL, 0) : PQexec(pg, sql);
        if (PQresultStatus(res) != expect) {
                migrate_error(error, size, what, res ? PQresultErrorMessage(res) : PQerrorMessage(pg));
                return -EIO;
        }
        if (ret)
                *ret = TAKE_PTR(res);
        return 0;
}

static void migrate_notice(void *userdata, const char *message)
{
        log_debug("PostgreSQL: %s", message);
}

int migrate_apply(PGconn *pg, char *error, size_t size)
{
        _cleanup_(PQclearp) PGresult *res = NULL;
        int current, newest = migrate_migrations[migrate_n_migrations - 1].version, applied = 0, r;
        uint64_t v;

        (void)PQsetNoticeProcessor(pg, migrate_notice, NULL);
        r = migrate_exec(pg, "BEGIN", 0, NULL, PGRES_COMMAND_OK, "BEGIN", error, size, NULL);
        if (r < 0)
                return r;
        r = migrate_exec(pg, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, PGRES_TUPLES_OK,
                         "Taking the migration lock", error, size, NULL);
        if (r < 0)
                goto rollback;
        r = migrate_exec(pg,
                         "CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "  version int PRIMARY KEY,"
                         "  applied_at timestamptz NOT NULL DEFAULT now())",
                         0, NULL, PGRES_COMMAND_OK, "Creating schema_migrations", error, size, NULL);
        if (r < 0)
                goto rollback;
        r = migrate_exec(pg, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL,
                         PGRES_TUPLES_OK, "Reading the schema version", error, size, &res);
        if (r < 0)
                goto rollback;
        if (PQntuples(res) != 1 || sscanf(PQgetvalue(res, 0, 0), "%" SCNu64, &v) != 1 || v > INT32_MAX) {
                migrate_error(error, size, "Reading the schema version", "unexpected answer");
                r = -EIO;
                goto rollback;
        }
        current = (int)v;
        if (current > newest) {
                (void)snprintf(error, size,
                               "the database schema is at version %d, newer than this program's %d", current,
                               newest);
                r = -EPROTO;
                goto rollback;
        }

        for (unsigned i = 0; i < migrate_n_migrations; i++) {
                const struct migration *m = &migrate_migrations[i];
                char version[16], what[96];
                const char *values[1] = {version};

                if (m->version <= current)
                        continue;
                (void)snprintf(what, sizeof(what), "Migration %03d_%s", m->version, m->name);
                r = migrate_exec(pg, m->sql, 0, NULL, PGRES_COMMAND_OK, what, error, size, NULL);
                if (r < 0)
                        goto rollback;
                (void)snprintf(version, sizeof(version), "%d", m->version);
                r = migrate_exec(pg, "INSERT INTO schema_migrations (version) VALUES ($1::int)", 1, values,
                                 PGRES_COMMAND_OK, what, error, size, NULL);
                if (r < 0)
                        goto rollback;
                applied++;
        }
        r = migrate_exec(pg, "COMMIT", 0, NULL, PGRES_COMMAND_OK, "COMMIT", error, size, NULL);
        if (r < 0)
                return r;
        return applied;

rollback:
        PQclear(PQexec(pg, "ROLLBACK"));
        return r;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(PGconn *, PQfinish)

int migrate_run(const char *conninfo, unsigned timeout_sec, char *error, size_t size)
{
        _cleanup_(PQfinishp) PGconn *pg = NULL;
        char timeout[16];
        const char *const keywords[] = {
                "connect_timeout", "fallback_application_name", "dbname", "client_encoding", NULL,
        };
        const char *values[] = {timeout, "webd", conninfo, "UTF8", NULL};

        /* libpq takes 1 as 2; 0 would mean forever. */
        (void)snprintf(timeout, sizeof(timeout), "%u", MAX(timeout_sec, 2u));
        pg = PQconnectdbParams(keywords, values, 1);
        if (!pg) {
                migrate_error(error, size, "Connecting", "out of memory");
                return -ECONNREFUSED;
        }
        if (PQstatus(pg) != CONNECTION_OK) {
                migrate_error(error, size, "Connecting", PQerrorMessage(pg));
                return -ECONNREFUSED;
        }
        return migrate_apply(pg, error, size);
}
