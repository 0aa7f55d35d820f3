/* webd's entry point: the command line, the configuration, the start (signing key, schema migrations),
 * wiring the modules onto one event loop, systemd notification, and the signals: SIGTERM/SIGINT stop
 * taking connections, let the requests in progress finish, write the activity log out, and exit.
 *
 * The start is in two phases. Before the loop: the configuration, the key (secret.c), and the migrations,
 * on a blocking connection, retried with backoff for up to startup_timeout while the database is not
 * there yet (systemd hears STATUS= meanwhile). Then the loop: the connection pool, the password workers,
 * the HTTP server; READY=1 once it listens.
 *
 * Exit codes: 0 done (or --check-config passed), 1 runtime failure, 2 bad command line, 78 (EX_CONFIG)
 * invalid configuration. */
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "common/conf.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/notify.h"
#include "lbd-version.h"
#include "webd/activity.h"
#include "webd/config.h"
#include "webd/db.h"
#include "webd/health.h"
#include "webd/metrics.h"
#include "webd/migrate.h"
#include "webd/password.h"
#include "webd/secret.h"
#include "webd/server.h"
#include "webd/tasks.h"
#include "webd/users.h"

#define MAIN_PASSWORD_THREADS 2
#define MAIN_ACTIVITY_DRAIN_USEC (3 * USEC_PER_SEC)

enum {
        ARG_SET = DAEMON_ARG_FIRST,
};

static const struct option main_options[] = {
        { "config", required_argument, NULL, 'c' },
        { "listen", required_argument, NULL, 'l' },
        { "database", required_argument, NULL, 'd' },
        { "set", required_argument, NULL, ARG_SET },
        { "check-config", no_argument, NULL, DAEMON_ARG_CHECK_CONFIG },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
};

static void main_help(void)
{
        printf("Usage: webd [OPTIONS]\n"
               "\n"
               "REST application server for tasks on PostgreSQL, with token authentication and an activity log.\n"
               "\n"
               "  -c, --config FILE          read the configuration from FILE (INI; see README)\n"
               "  -l, --listen ADDR          listen on ADDR (e.g. 127.0.0.1:8080, [::1]:8080)\n"
               "  -d, --database CONNINFO    libpq connection string, e.g. \"host=/run/postgresql dbname=webd\"\n"
               "                             (also from the WEBD_DATABASE environment variable)\n"
               "      --set SECTION.KEY=VALUE  set any configuration key, e.g. webd.pool_size=8\n"
               "      --check-config         validate the configuration (file, environment, options), then exit\n"
               "  -h, --help                 show this help\n"
               "  -V, --version              show the version\n"
               "\n"
               "Precedence: options, then WEBD_DATABASE, then the file, then the defaults.\n"
               "Signals: SIGTERM and SIGINT finish the requests in progress and exit.\n"
               "Exit status: 0 ok, 1 runtime failure, 2 bad usage, 78 invalid configuration.\n");
}

/* Applies the options that set configuration keys, in order. Returns 0 or -EINVAL (logged). */
static int main_apply_options(struct config *c, int argc, char **argv)
{
        int r = 0;

        optind = 1;
        for (;;) {
                struct conf_assignment set;
                int opt = getopt_long(argc, argv, "c:l:d:hV", main_options, NULL);

                if (opt < 0)
                        break;
                switch (opt) {
                case 'l':
                        if (config_set(c, "webd", "listen", optarg, "--listen") < 0)
                                r = -EINVAL;
                        break;
                case 'd':
                        if (config_set(c, "webd", "database", optarg, "--database") < 0)
                                r = -EINVAL;
                        break;
                case ARG_SET:
                        if (conf_parse_assignment(optarg, &set) < 0) {
                                log_error("--set: expected SECTION.KEY=VALUE");
                                r = -EINVAL;
                                break;
                        }
                        if (config_set(c, set.section, set.key, set.value, "--set") < 0)
                                r = -EINVAL;
                        break;
                default:
                        break;
                }
        }
        return r;
}

/* Builds the configuration: defaults, file, WEBD_DATABASE, options. Returns 0 or -EINVAL (logged). */
static int main_load_config(const char *path, int argc, char **argv, struct config **ret)
{
        _cleanup_free_ struct config *c = NULL;
        const char *env;
        int r;

        c = malloc(sizeof(*c));
        if (!c)
                return log_error_errno(ENOMEM, "Out of memory");
        config_init(c);
        if (path) {
                r = config_load_file(c, path);
                if (r < 0)
                        return r;
        }
        env = getenv("WEBD_DATABASE");
        if (env && env[0] && config_set(c, "webd", "database", env, "WEBD_DATABASE") < 0)
                return -EINVAL;
        r = main_apply_options(c, argc, argv);
        if (r < 0)
                return r;
        r = config_validate(c);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

struct main_state {
        struct config *config;
        struct daemon daemon;
        struct db *db;
        struct password_pool *passwords;
        struct server *server;
        struct health *health;
        struct users *users;
        struct tasks *tasks;
        struct activity *activity;
        struct metrics *metrics;
        uint8_t key[SECRET_MAX];
        size_t key_len;
        char listen_name[NETADDR_STRLEN];
};

static void main_status(struct main_state *m)
{
        char status[160];

        if (m->daemon.stopping)
                return;
        (void)snprintf(status, sizeof(status), "Serving on %s; database %s (%u/%llu connections)",
                       m->listen_name, db_is_up(m->db) ? "up" : "down", db_connections_up(m->db),
                       (unsigned long long)m->config->pool_size);
        notify_status(m->daemon.notify, status);
}

static void main_db_state(struct db *d, bool up, void *userdata)
{
        struct main_state *m = userdata;

        if (up)
                log_info("Database available (%u connections up)", db_connections_up(d));
        else
                log_warning("Database unavailable: %s; answering 503 and reconnecting", db_last_error(d));
        main_status(m);
}

static void main_exit(void *userdata)
{
        struct main_state *m = userdata;

        daemon_exit(&m->daemon);
}

static void main_drained(void *userdata)
{
        struct main_state *m = userdata;

        log_info("Requests finished; writing out the activity log");
        activity_drain(m->activity, main_exit, m);
}

static void main_deadline(void *userdata)
{
        struct main_state *m = userdata;

        log_warning("Stop deadline passed with %zu requests in progress; exiting",
                    server_requests_in_progress(m->server));
}

static void main_on_sighup(void *userdata)
{
        struct main_state *m = userdata;

        if (m->config->tls_cert[0]) {
                (void)server_reload_tls(m->server);
                return;
        }
        log_notice("SIGHUP: webd has nothing to reload; restart it to apply configuration changes");
}

static void main_stop(void *userdata)
{
        struct main_state *m = userdata;

        log_info("Stopping: finishing %zu requests in progress", server_requests_in_progress(m->server));
        notify_stopping(m->daemon.notify, "Finishing requests in progress");
        daemon_set_deadline(&m->daemon, m->config->request_timeout_usec + MAIN_ACTIVITY_DRAIN_USEC);
        server_stop(m->server, main_drained, m);
}

static const struct daemon_ops main_ops = {
        .reload = main_on_sighup,
        .stop = main_stop,
        .deadline = main_deadline,
};

/* Applies the migrations, retrying while the database can't be reached, for up to startup_timeout.
 * Returns 0 or a negative value (logged). */
static int main_migrate(struct main_state *m)
{
        uint64_t start = now_usec(), delay = 200 * USEC_PER_MSEC;
        bool told = false;
        char error[512];
        int r;

        for (;;) {
                uint64_t left, elapsed = now_usec() - start;

                left = m->config->startup_timeout_usec > elapsed ? m->config->startup_timeout_usec - elapsed : 0;
                r = migrate_run(m->config->database, (unsigned)MAX(left / USEC_PER_SEC, (uint64_t)2), error,
                                sizeof(error));
                if (r >= 0) {
                        if (r > 0)
                                log_info("Database schema migrated: %d migrations applied", r);
                        return 0;
                }
                if (r != -ECONNREFUSED)
                        return log_error_errno(r, "Database migration failed: %s", error);

                elapsed = now_usec() - start;
                if (elapsed + delay > m->config->startup_timeout_usec)
                        return log_error_errno(ECONNREFUSED, "Cannot reach the database: %s", error);
                if (!told) {
                        log_warning("Waiting for the database: %s", error);
                        told = true;
                }
                (void)sd_notify(0, "STATUS=Waiting for the database\nWATCHDOG=1");
                {
                        struct timespec ts = {
                                .tv_sec = (time_t)(delay / USEC_PER_SEC),
                                .tv_nsec = (long)(delay % USEC_PER_SEC * NSEC_PER_USEC),
                        };
                        (void)nanosleep(&ts, NULL);
                }
                delay = MIN(delay * 2, 2 * USEC_PER_SEC);
        }
}

#define MAIN_NOFILE_MARGIN 64 /* descriptors besides the clients': listener, database, logs, eventfds */

/* Raises the soft limit on descriptors towards the hard one when max_connections clients and the
 * database pool would not fit, and says so once when they still do not: accept() then backs off when out
 * of descriptors (http/server.h) rather than failing. */
static void main_raise_nofile(const struct config *c)
{
        uint64_t want = c->max_connections + c->pool_size + MAIN_NOFILE_MARGIN;
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
                return;
        if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > rl.rlim_cur) {
                rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? (rlim_t)want : rl.rlim_max;
                (void)setrlimit(RLIMIT_NOFILE, &rl);
                (void)getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur < want)
                log_notice("Descriptors limited to %llu, fewer than max_connections (%llu) needs (%llu): "
                           "connections beyond wait until others end (raise LimitNOFILE)",
                           (unsigned long long)rl.rlim_cur, (unsigned long long)c->max_connections,
                           (unsigned long long)want);
}

static int main_run(struct main_state *m)
{
        char status[160];
        int r;

        r = secret_load(m->config->secret_file, m->key, sizeof(m->key));
        if (r < 0)
                return log_error_errno(r, "Failed to load the signing key from %s: %m%s",
                                       m->config->secret_file,
                                       r == -EPERM ? " (the file must be ours and mode 0600 or stricter)" : "");
        m->key_len = (size_t)r;

        r = main_migrate(m);
        if (r < 0)
                return r;

        /* The changelist folds the event changes made within one turn of the loop into one epoll_ctl per
         * descriptor. */
        r = daemon_start(&m->daemon, EVENT_BASE_FLAG_NOLOCK | EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        if (r < 0)
                return r;

        r = db_new(m->daemon.base, m->config->database, (unsigned)m->config->pool_size, &m->db);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the database pool: %m");
        db_set_state_callback(m->db, main_db_state, m);

        r = password_pool_new(m->daemon.base, MAIN_PASSWORD_THREADS, &m->passwords);
        if (r < 0)
                return log_error_errno(r, "Failed to start the password workers: %m");

        r = server_new(m->daemon.base, m->config, m->db, m->key, m->key_len, &m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the HTTP server: %m");
        r = health_new(m->server, m->db, &m->health);
        if (r >= 0)
                r = users_new(m->server, m->db, m->passwords, m->config, m->key, m->key_len, &m->users);
        if (r >= 0)
                r = tasks_new(m->server, m->db, &m->tasks);
        if (r >= 0)
                r = activity_new(m->daemon.base, m->server, m->db, m->config, &m->activity);
        if (r >= 0)
                r = metrics_new(m->server, &m->metrics);
        if (r >= 0)
                r = metrics_add(m->metrics, activity_write_metrics, m->activity);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the routes: %m");

        r = db_start(m->db);
        if (r < 0)
                return log_error_errno(r, "Failed to start the database pool: %m");

        (void)netaddr_format(&m->config->listen, m->listen_name, sizeof(m->listen_name));
        main_raise_nofile(m->config);
        r = server_listen(m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to listen on %s: %m", m->listen_name);

        r = daemon_catch_signals(&m->daemon, &main_ops, m);
        if (r < 0)
                return r;

        (void)snprintf(status, sizeof(status), "Serving on %s", m->listen_name);
        notify_ready(m->daemon.notify, status);
        log_info("webd %s ready on %s (pool of %llu connections, activity log %s)", PACKAGE_VERSION,
                 m->listen_name, (unsigned long long)m->config->pool_size, m->config->activity ? "on" : "off");

        if (event_base_dispatch(m->daemon.base) < 0)
                return log_error_errno(EIO, "The event loop failed");
        {
                const struct db_stats *st = db_get_stats(m->db);

                log_info("Database: %llu queries in %llu segments, %llu sent again",
                         (unsigned long long)st->queries, (unsigned long long)st->segments,
                         (unsigned long long)st->retries);
        }
        if (activity_dropped(m->activity) > 0)
                log_notice("Activity log: %llu entries were not written to the database",
                           (unsigned long long)activity_dropped(m->activity));
        log_info("Stopped");
        return 0;
}

static void main_cleanup(struct main_state *m)
{
        /* The server first: it answers what is left, which feeds the activity log and cancels queries.
         * Then the password workers, whose last callbacks find their requests answered. */
        m->server = server_free(m->server);
        m->passwords = password_pool_free(m->passwords);
        m->users = users_free(m->users);
        m->tasks = tasks_free(m->tasks);
        m->health = health_free(m->health);
        m->activity = activity_free(m->activity);
        m->metrics = metrics_free(m->metrics);
        m->db = db_free(m->db);
        daemon_done(&m->daemon);
        explicit_bzero(m->key, sizeof(m->key));
        free(m->config);
        m->config = NULL;
}

int main(int argc, char **argv)
{
        static const struct daemon_cli cli = {
                .name = "webd",
                .version = PACKAGE_VERSION,
                .short_options = "c:l:d:hV",
                .options = main_options,
                .help = main_help,
        };
        struct main_state m = {0};
        struct daemon_args args;
        const char *config_path;
        int r;

        log_set_ident("webd");
        r = daemon_parse_command_line(&cli, argc, argv, &args);
        if (r != 0)
                return r > 0 ? EXIT_SUCCESS : DAEMON_EXIT_USAGE;
        config_path = args.config_path;

        r = main_load_config(config_path, argc, argv, &m.config);
        if (r < 0) {
                log_error("Invalid configuration%s%s", config_path ? " in " : "", config_path ? config_path : "");
                return DAEMON_EXIT_CONFIG;
        }
        log_set_max_level(m.config->log_level);
        if (args.check) {
                char listen[NETADDR_STRLEN];

                (void)netaddr_format(&m.config->listen, listen, sizeof(listen));
                printf("%s: configuration OK (listen %s, pool of %llu connections)\n",
                       config_path ? config_path : "options", listen,
                       (unsigned long long)m.config->pool_size);
                free(m.config);
                return 0;
        }

        (void)signal(SIGPIPE, SIG_IGN);
        r = main_run(&m);
        main_cleanup(&m);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
