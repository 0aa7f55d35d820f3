/* The database schema: versioned migrations, applied at start before the server takes requests.
 *
 * The pending migrations run in one transaction together with their rows in schema_migrations, so they
 * are applied entirely or not at all; a transaction-scoped advisory lock makes several webd processes
 * starting at once apply each migration exactly once. */
#pragma once

#include <libpq-fe.h>

struct migration {
        int version;
        const char *name;
        const char *sql;
};

/* The migrations in order of version. */
extern const struct migration migrate_migrations[];
extern const unsigned migrate_n_migrations;

/* Brings the database behind <pg> (a connection in blocking mode, with no transaction open) to the newest
 * version. Returns the number of migrations applied (0 when up to date), or -EIO (the reason is in
 * <error>, <size> bytes) after rolling back, or -EPROTO when the database is newer than this program. */
int migrate_apply(PGconn *pg, char *error, size_t size);

/* Connects to <conninfo> (blocking, at most <timeout_sec> seconds) and applies the migrations. Returns
 * like migrate_apply(), or -ECONNREFUSED when it can't connect (reason in <error>). Used at start, before
 * the event loop runs. */
int migrate_run(const char *conninfo, unsigned timeout_sec, char *error, size_t size);
