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
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"
#include "lbd-version.h"
#include "common/notify.h"
#include "webd/activity.h"
#include "webd/config.h"
#include "webd/db.h"
#include "webd/health.h"
#include "webd/migrate.h"
#include "webd/password.h"
#include "webd/secret.h"
#include "webd/server.h"
#include "webd/tasks.h"
#include "webd/users.h"

#define EXIT_USAGE  2
#define EXIT_CONFIG 78

#define MAIN_PASSWORD_THREADS 2
#define MAIN_ACTIVITY_DRAIN_USEC (3 * USEC_PER_SEC)

enum {
        ARG_SET = 0x100,
        ARG_CHECK_CONFIG,
};

static const struct option main_options[] = {
        { "config", required_argument, NULL, 'c' },
        { "listen", required_argument, NULL, 'l' },
        { "database", required_argument, NULL, 'd' },
        { "set", required_argument, NULL, ARG_SET },
        { "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
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
                case ARG_SET: {
                        const char *dot = strchr(optarg, '.'), *eq = strchr(optarg, '=');
                        char section[64], key[128];

                        if (!dot || !eq || dot > eq || (size_t)(dot - optarg) >= sizeof(section) ||
                            (size_t)(eq - dot - 1) >= sizeof(key)) {
                                log_error("--set: expected SECTION.KEY=VALUE");
                                r = -EINVAL;
                                break;
                        }
                        memcpy(section, optarg, (size_t)(dot - optarg));
                        section[dot - optarg] = '\0';
                        memcpy(key, dot + 1, (size_t)(eq - dot - 1));
                        key[eq - dot - 1] = '\0';
                        if (config_set(c, section, key, eq + 1, "--set") < 0)
                                r = -EINVAL;
                        break;
                }
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
        struct event_base *base;
        struct notify *notify;
        struct db *db;
        struct password_pool *passwords;
        struct server *server;
        struct health *health;
        struct users *users;
        struct tasks *tasks;
        struct activity *activity;
        struct event *sig_term, *sig_int, *sig_hup, *deadline;
        uint8_t key[SECRET_MAX];
        size_t key_len;
        bool stopping;
        char listen_name[NETADDR_STRLEN];
};

static void main_status(struct main_state *m)
{
        char status[160];

        if (m->stopping)
                return;
        (void)snprintf(status, sizeof(status), "Serving on %s; database %s (%u/%llu connections)",
                       m->listen_name, db_is_up(m->db) ? "up" : "down", db_connections_up(m->db),
                       (unsigned long long)m->config->pool_size);
        notify_status(m->notify, status);
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

        (void)event_base_loopexit(m->base, NULL);
}

static void main_drained(void *userdata)
{
        struct main_state *m = userdata;

        log_info("Requests finished; writing out the activity log");
        activity_drain(m->activity, main_exit, m);
}

static void main_deadline_cb(evutil_socket_t fd, short what, void *userdata)
{
        struct main_state *m = userdata;

        log_warning("Stop deadline passed with %zu requests in progress; exiting",
                    server_requests_in_progress(m->server));
        (void)event_base_loopexit(m->base, NULL);
}

static void main_signal_cb(evutil_socket_t sig, short what, void *userdata)
{
        struct main_state *m = userdata;
        uint64_t deadline = m->config->request_timeout_usec + MAIN_ACTIVITY_DRAIN_USEC;
        struct timeval tv = {
                .tv_sec = (time_t)(deadline / USEC_PER_SEC),
                .tv_usec = (suseconds_t)(deadline % USEC_PER_SEC),
        };

        if (sig == SIGHUP) {
                log_notice("SIGHUP: webd has nothing to reload; restart it to apply configuration changes");
                return;
        }
        if (m->stopping) {
                log_notice("Second stop signal: exiting now");
                (void)event_base_loopexit(m->base, NULL);
                return;
        }
        m->stopping = true;
        log_info("Stopping: finishing %zu requests in progress", server_requests_in_progress(m->server));
        notify_stopping(m->notify, "Finishing requests in progress");
        m->deadline = evtimer_new(m->base, main_deadline_cb, m);
        if (m->deadline)
                (void)evtimer_add(m->deadline, &tv);
        server_stop(m->server, main_drained, m);
}

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

static int main_run(struct main_state *m)
{
        struct event_config *ec;
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

        ec = event_config_new();
        if (!ec)
                return log_error_errno(ENOMEM, "Out of memory");
        (void)event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
        m->base = event_base_new_with_config(ec);
        event_config_free(ec);
        if (!m->base)
                return log_error_errno(ENOMEM, "Failed to create the event loop");

        r = notify_new(m->base, &m->notify);
        if (r < 0)
                return log_error_errno(r, "Failed to set up systemd notification: %m");

        r = db_new(m->base, m->config->database, (unsigned)m->config->pool_size, &m->db);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the database pool: %m");
        db_set_state_callback(m->db, main_db_state, m);

        r = password_pool_new(m->base, MAIN_PASSWORD_THREADS, &m->passwords);
        if (r < 0)
                return log_error_errno(r, "Failed to start the password workers: %m");

        r = server_new(m->base, m->config, m->db, m->key, m->key_len, &m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the HTTP server: %m");
        r = health_new(m->server, m->db, &m->health);
        if (r >= 0)
                r = users_new(m->server, m->db, m->passwords, m->config, m->key, m->key_len, &m->users);
        if (r >= 0)
                r = tasks_new(m->server, m->db, &m->tasks);
        if (r >= 0)
                r = activity_new(m->base, m->server, m->db, m->config->activity, &m->activity);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the routes: %m");

        r = db_start(m->db);
        if (r < 0)
                return log_error_errno(r, "Failed to start the database pool: %m");

        (void)netaddr_format(&m->config->listen, m->listen_name, sizeof(m->listen_name));
        r = server_listen(m->server);
        if (r < 0)
                return log_error_errno(r, "Failed to listen on %s: %m", m->listen_name);

        m->sig_term = evsignal_new(m->base, SIGTERM, main_signal_cb, m);
        m->sig_int = evsignal_new(m->base, SIGINT, main_signal_cb, m);
        m->sig_hup = evsignal_new(m->base, SIGHUP, main_signal_cb, m);
        if (!m->sig_term || !m->sig_int || !m->sig_hup || evsignal_add(m->sig_term, NULL) < 0 ||
            evsignal_add(m->sig_int, NULL) < 0 || evsignal_add(m->sig_hup, NULL) < 0)
                return log_error_errno(ENOMEM, "Failed to set up signal handling");

        (void)snprintf(status, sizeof(status), "Serving on %s", m->listen_name);
        notify_ready(m->notify, status);
        log_info("webd %s ready on %s (pool of %llu connections, activity log %s)", PACKAGE_VERSION,
                 m->listen_name, (unsigned long long)m->config->pool_size, m->config->activity ? "on" : "off");

        if (event_base_dispatch(m->base) < 0)
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
        m->db = db_free(m->db);
        m->notify = notify_free(m->notify);
        if (m->sig_term)
                event_free(m->sig_term);
        if (m->sig_int)
                event_free(m->sig_int);
        if (m->sig_hup)
                event_free(m->sig_hup);
        if (m->deadline)
                event_free(m->deadline);
        if (m->base)
                event_base_free(m->base);
        explicit_bzero(m->key, sizeof(m->key));
        free(m->config);
        m->config = NULL;
}

int main(int argc, char **argv)
{
        struct main_state m = {0};
        const char *config_path = NULL;
        bool check = false;
        int r;

        log_set_ident("webd");
        opterr = 1;
        for (;;) {
                int opt = getopt_long(argc, argv, "c:l:d:hV", main_options, NULL);

                if (opt < 0)
                        break;
                switch (opt) {
                case 'c':
                        config_path = optarg;
                        break;
                case 'h':
                        main_help();
                        return 0;
                case 'V':
                        printf("webd %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_CHECK_CONFIG:
                        check = true;
                        break;
                case 'l':
                case 'd':
                case ARG_SET:
                        break;
                default:
                        fprintf(stderr, "Try 'webd --help'.\n");
                        return EXIT_USAGE;
                }
        }
        if (optind < argc) {
                log_error("Unexpected argument '%s'; try 'webd --help'", argv[optind]);
                return EXIT_USAGE;
        }
        opterr = 0;

        r = main_load_config(config_path, argc, argv, &m.config);
        if (r < 0) {
                log_error("Invalid configuration%s%s", config_path ? " in " : "", config_path ? config_path : "");
                return EXIT_CONFIG;
        }
        log_set_max_level(m.config->log_level);
        if (check) {
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
