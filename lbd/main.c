/* lbd's entry point: the command line, the configuration, wiring the modules onto one event loop, and the
 * signals: SIGHUP reloads, SIGTERM/SIGINT drain and exit.
 *
 * The pool's backends always come through the reconciler (reconcile.c) from the provider [pool] provider
 * names: for the static provider it only mirrors [pool] backends into the pool; for local and ec2 it also
 * launches and terminates. A reload hands the new settings to the provider and the reconciler (desired
 * count, launch parameters, health settings) without a restart; changing the provider itself needs one.
 *
 * Exit codes: 0 done (or --check-config passed), 1 runtime failure, 2 bad command line, 78 (EX_CONFIG)
 * invalid configuration. */
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <http_parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/conf.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/notify.h"
#include "lbd-version.h"
#include "lbd/accesslog.h"
#include "lbd/admin.h"
#include "lbd/autoscale.h"
#include "lbd/schedule.h"
#include "lbd/backend.h"
#include "lbd/balance.h"
#include "lbd/config.h"
#include "lbd/health.h"
#include "lbd/history.h"
#include "lbd/eip.h"
#include "lbd/lease.h"
#include "lbd/peer.h"
#include "lbd/lbd.h"
#include "lbd/provider.h"
#include "lbd/loops.h"
#include "lbd/proxy.h"
#include "lbd/reconcile.h"
#include "lbd/tls.h"

enum {
        ARG_ADMIN = DAEMON_ARG_FIRST,
        ARG_BALANCE,
        ARG_ACCESS_LOG,
        ARG_SET,
        ARG_LOG_LEVEL,
};

static const struct option main_options[] = {
        { "config", required_argument, NULL, 'c' },
        { "listen", required_argument, NULL, 'l' },
        { "backend", required_argument, NULL, 'b' },
        { "admin", required_argument, NULL, ARG_ADMIN },
        { "balance", required_argument, NULL, ARG_BALANCE },
        { "access-log", required_argument, NULL, ARG_ACCESS_LOG },
        { "set", required_argument, NULL, ARG_SET },
        { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
        { "check-config", no_argument, NULL, DAEMON_ARG_CHECK_CONFIG },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
};

static void main_help(void)
{
        printf("Usage: lbd [OPTIONS]\n"
               "\n"
               "HTTP/1.1 load balancer: keeps a pool of backends healthy and proxies traffic to them.\n"
               "\n"
               "  -c, --config FILE        read the configuration from FILE (INI; see README)\n"
               "  -l, --listen ADDR        listen on ADDR (e.g. 0.0.0.0:80, [::]:80); repeatable\n"
               "  -b, --backend ADDR       proxy to the backend ADDR (static pool); repeatable\n"
               "      --admin ADDR|off     admin API address (loopback only; default 127.0.0.1:9180)\n"
               "      --balance NAME       round-robin (default), least-conn or p2c\n"
               "      --access-log WHERE   stderr (default), off, or a file path\n"
               "      --set SECTION.KEY=VALUE  set any configuration key, e.g. health.interval=500ms\n"
               "      --log-level LEVEL    debug, info (default), notice, warning or error\n"
               "      --check-config       validate the configuration (file and options), then exit\n"
               "  -h, --help               show this help\n"
               "  -V, --version            show the version\n"
               "\n"
               "Options override the file. Signals: SIGHUP reloads the file, SIGTERM drains and exits.\n"
               "Exit status: 0 ok, 1 runtime failure, 2 bad usage, 78 invalid configuration.\n");
}

/* The first pass's own option: the log level applies before the configuration is read. */
static int main_first_pass_option(int opt, const char *arg)
{
        int level;

        if (opt != ARG_LOG_LEVEL)
                return 0;
        if (conf_parse_log_level(arg, &level) < 0) {
                log_error("--log-level '%s': expected debug, info, notice, warning or error", arg);
                return -EINVAL;
        }
        log_set_max_level(level);
        return 0;
}

/* Appends <value> to the comma-separated list <buf>. Returns 0 or -E2BIG. */
static int main_list_add(char *buf, size_t size, const char *value)
{
        size_t len = strlen(buf), n = strlen(value);

        if (len + n + 2 > size)
                return -E2BIG;
        if (len > 0)
                buf[len++] = ',';
        memcpy(buf + len, value, n + 1);
        return 0;
}

/* Applies the options that set configuration keys. Repeated --listen / --backend options form one list
 * that replaces the file's. Returns 0 or -EINVAL (logged). */
static int main_apply_options(struct config *c, int argc, char **argv)
{
        _cleanup_free_ char *listen = NULL, *backends = NULL;
        const size_t list_max = 64 * 1024;
        int r = 0;

        listen = calloc(1, list_max);
        backends = calloc(1, list_max);
        if (!listen || !backends)
                return log_error_errno(ENOMEM, "Out of memory");

        optind = 1;
        for (;;) {
                const char *section = NULL, *key = NULL, *origin = NULL, *value;
                struct conf_assignment set;
                int opt = getopt_long(argc, argv, "c:l:b:hV", main_options, NULL);

                if (opt < 0)
                        break;
                value = optarg;
                switch (opt) {
                case 'l':
                case 'b':
                        if (main_list_add(opt == 'l' ? listen : backends, list_max, optarg) < 0) {
                                log_error("--%s: too many addresses", opt == 'l' ? "listen" : "backend");
                                r = -EINVAL;
                        }
                        continue;
                case ARG_ADMIN:
                        section = "lbd", key = "admin", origin = "--admin";
                        break;
                case ARG_BALANCE:
                        section = "lbd", key = "balance", origin = "--balance";
                        break;
                case ARG_ACCESS_LOG:
                        section = "lbd", key = "access_log", origin = "--access-log";
                        break;
                case ARG_SET:
                        if (conf_parse_assignment(optarg, &set) < 0) {
                                log_error("--set '%s': expected SECTION.KEY=VALUE", optarg);
                                r = -EINVAL;
                                continue;
                        }
                        section = set.section, key = set.key, value = set.value, origin = "--set";
                        break;
                default:
                        continue;
                }
                if (config_set(c, section, key, value, origin) < 0)
                        r = -EINVAL;
        }
        if (listen[0] && config_set(c, "lbd", "listen", listen, "--listen") < 0)
                r = -EINVAL;
        if (backends[0] && config_set(c, "pool", "backends", backends, "--backend") < 0)
                r = -EINVAL;
        return r;
}

/* Reads the file (if any) and the options into a new config. Returns 0, or -EINVAL (logged). */
static int main_load_config(const char *path, int argc, char **argv, struct config **ret)
{
        _cleanup_free_ struct config *c = NULL;
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
        r = main_apply_options(c, argc, argv);
        if (r < 0)
                return r;
        config_finish(c);
        r = config_validate(c);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

struct main_state {
        struct lbd lbd;
        struct daemon daemon;
        const char *config_path;
        int argc;
        char **argv;
        bool drained;   /* stopping: every connection finished */
        bool releasing; /* stopping: the lease's release is under way */
};

/* "N/M backends healthy", and what the control plane is holding back. */
static void main_status_text(const struct lbd *l, char *buf, size_t size)
{
        const struct pool *p = l->pool;
        struct reconcile_view view = {0};
        size_t healthy = 0;

        for (size_t i = 0; i < p->n_backends; i++)
                if (p->backends[i]->healthy)
                        healthy++;
        if (l->reconcile)
                reconcile_get_view(l->reconcile, &view);
        (void)snprintf(buf, size, "%zu/%zu backends healthy%s%s%s%s", healthy, p->n_backends,
                       view.panic ? "; every backend failing: serving from the least bad, terminating "
                                    "nothing"
                                  : "",
                       view.guard ? "; replacement storm guard holding back replacements" : "",
                       view.listed && !view.list_ok ? "; the provider's list is failing" : "",
                       view.following ? "; not leading: changing nothing" : "");
}

static void main_update_status(struct pool *p, void *userdata)
{
        struct main_state *m = userdata;
        char status[256];

        if (m->lbd.loops)
                loops_update_view(m->lbd.loops);
        if (m->lbd.stopping)
                return;
        main_status_text(&m->lbd, status, sizeof(status));
        notify_status(m->lbd.notify, status);
        reconcile_pool_changed(m->lbd.reconcile);
}

/* The reconciler changed the pool's set (new backends need probes) or its own state. */
static void main_on_reconcile_change(void *userdata)
{
        struct main_state *m = userdata;
        struct lbd *l = &m->lbd;
        char status[256];
        int r;

        if (l->health) {
                r = health_sync(l->health);
                if (r < 0)
                        log_error_errno(r, "Failed to start health checks: %m");
        }
        if (l->stopping)
                return;
        main_status_text(l, status, sizeof(status));
        notify_status(l->notify, status);
}

/* ---- the leader's lease ([lease]) ---- */

static bool main_lease_may_mutate(void *userdata, uint64_t *ret_epoch)
{
        return lease_may_mutate(userdata, ret_epoch);
}

/* Leadership changed or the store went down or up: a new leader polls at once (and so acts at once). */
static void main_on_lease_change(void *userdata)
{
        struct main_state *m = userdata;

        if (m->lbd.stopping)
                return;
        reconcile_poll(m->lbd.reconcile);
        eip_update(m->lbd.eip);
        main_on_reconcile_change(m);
}

/* With [lease], the reconciler acts only while this host holds the lease. Returns 0 or -errno (logged). */
static int main_lease_setup(struct main_state *m)
{
        struct lbd *l = &m->lbd;
        struct reconcile_authority a;
        int r;

        if (!config_lease_enabled(l->config))
                return 0;
        r = lease_new(l->base, l->config, &l->lease);
        if (r < 0)
                return r;
        a = (struct reconcile_authority){ .may_mutate = main_lease_may_mutate, .userdata = l->lease };
        reconcile_set_authority(l->reconcile, &a);
        lease_set_on_change(l->lease, main_on_lease_change, m);
        r = peers_new(l, &l->peers);
        if (r < 0)
                return log_error_errno(r, "Failed to start the lease listener on [lease] listen: %m");
        if (l->config->lease_elastic_ip[0] != '\0')
                return eip_new(l->base, l->config, main_lease_may_mutate, l->lease, &l->eip);
        return 0;
}

static bool main_same_addrs(const struct netaddr *a, size_t na, const struct netaddr *b, size_t nb)
{
        if (na != nb)
                return false;
        for (size_t i = 0; i < na; i++)
                if (!netaddr_equal(&a[i], &b[i]))
                        return false;
        return true;
}

/* [lease] is read once: turning it on or off takes a restart (refused here: false), and other changes
 * are left for the next start (said in the log). */
static bool main_lease_reload_ok(const struct config *prev, const struct config *next)
{
        if (config_lease_enabled(prev) != config_lease_enabled(next)) {
                log_error("Configuration not reloaded: [lease] turned %s, which takes a restart; keeping the "
                          "running one",
                          config_lease_enabled(next) ? "on" : "off");
                return false;
        }
        if (strcmp(prev->lease_conninfo_file, next->lease_conninfo_file) != 0 ||
            strcmp(prev->lease_name, next->lease_name) != 0 || strcmp(prev->lease_pool, next->lease_pool) != 0 ||
            prev->lease_duration_usec != next->lease_duration_usec ||
            prev->lease_renew_usec != next->lease_renew_usec || prev->lease_margin_usec != next->lease_margin_usec ||
            prev->lease_timeout_usec != next->lease_timeout_usec ||
            strcmp(prev->lease_elastic_ip, next->lease_elastic_ip) != 0 ||
            strcmp(prev->lease_instance_id, next->lease_instance_id) != 0 ||
            prev->lease_listen_set != next->lease_listen_set ||
            (prev->lease_listen_set && !netaddr_equal(&prev->lease_listen, &next->lease_listen)) ||
            !main_same_addrs(prev->lease_peers, prev->n_lease_peers, next->lease_peers, next->n_lease_peers))
                log_warning("[lease] changed: the running lease keeps its settings until the next start");
        return true;
}

static void main_reload(struct main_state *m)
{
        struct lbd *l = &m->lbd;
        struct config *next = NULL, *prev = l->config;
        int r;

        notify_reloading(l->notify);
        log_info("Reloading configuration%s%s", m->config_path ? " from " : "",
                 m->config_path ? m->config_path : "");
        r = main_load_config(m->config_path, m->argc, m->argv, &next);
        if (r < 0) {
                log_error("Configuration not reloaded: it has errors; keeping the running one");
                history_event(l->history, HISTORY_EVENT_RELOAD,
                              "Configuration not reloaded: it has errors (see the log); keeping the running one");
                goto done;
        }
        if (next->provider != prev->provider) {
                log_error("Configuration not reloaded: [pool] provider changed from %s to %s, which takes a "
                          "restart; keeping the running one",
                          config_provider_name(prev->provider), config_provider_name(next->provider));
                history_event(l->history, HISTORY_EVENT_RELOAD,
                              "Configuration not reloaded: the provider changed, which takes a restart");
                free(next);
                goto done;
        }
        if (!main_lease_reload_ok(prev, next)) {
                history_event(l->history, HISTORY_EVENT_RELOAD,
                              "Configuration not reloaded: [lease] turned on or off, which takes a restart");
                free(next);
                goto done;
        }
        r = l->provider->ops->set_config(l->provider, next);
        if (r < 0) {
                log_error_errno(r,
                                "Configuration not reloaded: the %s provider refused it (%m); keeping "
                                "the running one",
                                l->provider->ops->name);
                history_event(l->history, HISTORY_EVENT_RELOAD,
                              "Configuration not reloaded: the %s provider refused it", l->provider->ops->name);
                free(next);
                goto done;
        }
        if (next->n_listen != prev->n_listen || memcmp(next->listen, prev->listen, sizeof(prev->listen)) != 0)
                log_warning("Changed listen addresses take effect on restart");
        if (next->backend_tls != prev->backend_tls || strcmp(next->backend_ca, prev->backend_ca) != 0 ||
            strcmp(next->backend_name, prev->backend_name) != 0)
                log_warning("Changed [tls] backend settings take effect on restart");
        if (next->threads != prev->threads)
                log_warning("A changed number of threads takes effect on restart");
        next->threads = prev->threads;
        if (next->admin_enabled != prev->admin_enabled ||
            !netaddr_equal(&next->admin, &prev->admin))
                log_warning("A changed admin address takes effect on restart");
        /* A file is opened anew on every reload, even under the same name: after logrotate has moved it
         * away, `systemctl reload lbd` starts a new one (what is queued still goes to the old one). */
        if (strcmp(next->access_log, prev->access_log) != 0 || next->access_log[0] == '/') {
                struct accesslog *a = NULL;

                r = accesslog_open(l->base, next->access_log, &a);
                if (r < 0) {
                        log_error_errno(r, "Failed to open access log %s: %m; keeping the old one",
                                        next->access_log);
                        memcpy(next->access_log, prev->access_log, sizeof(next->access_log));
                } else {
                        l->accesslog = accesslog_free(l->accesslog);
                        l->accesslog = a;
                }
        }

        /* Certificates that fail to load leave the running ones in place; the rest of the reload goes on. */
        if (l->tls)
                (void)tls_reload(l->tls, next);
        l->config = next;
        l->pool->balancer = balance_from_kind(next->balance);
        l->pool->passive_max_down = (unsigned)next->health_passive_max_down;
        if (l->proxy)
                proxy_set_config(l->proxy, next);
        health_set_config(l->health, next);
        reconcile_set_config(l->reconcile, next);
        if (next->pool_max == 0)
                l->autoscale = autoscale_free(l->autoscale);
        else if (l->autoscale)
                autoscale_set_config(l->autoscale);
        else if (autoscale_new(l, &l->autoscale) < 0)
                log_error("Out of memory: scaling on demand stays off");
        /* After the bounds went back to [pool]'s: the action in force sets its own again. */
        if (next->n_schedule == 0)
                l->schedule = schedule_free(l->schedule);
        else if (l->schedule)
                schedule_set_config(l->schedule);
        else if (schedule_new(l, &l->schedule) < 0)
                log_error("Out of memory: the schedule stays off");
        if (l->loops)
                loops_set_config(l->loops, next, prev); /* frees <prev> once every loop has moved on */
        else
                free(prev);
        if (next->provider == PROVIDER_STATIC) {
                log_info("Configuration reloaded: %zu backends, balance %s", next->n_backends,
                         config_balance_name(next->balance));
                history_event(l->history, HISTORY_EVENT_RELOAD, "Configuration reloaded: %zu backends, balance %s",
                              next->n_backends, config_balance_name(next->balance));
        } else {
                log_info("Configuration reloaded: provider %s, desired %llu, balance %s",
                         config_provider_name(next->provider), (unsigned long long)next->desired,
                         config_balance_name(next->balance));
                history_event(l->history, HISTORY_EVENT_RELOAD,
                              "Configuration reloaded: provider %s, desired %llu, balance %s",
                              config_provider_name(next->provider), (unsigned long long)next->desired,
                              config_balance_name(next->balance));
        }
done: {
        char status[256];

        main_status_text(l, status, sizeof(status));
        notify_ready(l->notify, status);
}
}

/* Exits once the connections are drained and the lease released (each bounded by its own timeout). */
static void main_drained(void *userdata)
{
        struct main_state *m = userdata;

        m->drained = true;
        if (m->releasing)
                return;
        log_info("All connections finished; exiting");
        daemon_exit(&m->daemon);
}

static void main_lease_released(void *userdata)
{
        struct main_state *m = userdata;

        m->releasing = false;
        if (m->drained) {
                log_info("All connections finished; exiting");
                daemon_exit(&m->daemon);
        }
}

static void main_drain_deadline(void *userdata)
{
        struct main_state *m = userdata;
        struct proxy_stats s;

        lbd_proxy_stats(&m->lbd, &s);
        log_warning("Drain deadline passed with %llu connections open; closing them",
                    (unsigned long long)s.connections);
}

static void main_on_sighup(void *userdata)
{
        struct main_state *m = userdata;

        if (!m->lbd.stopping)
                main_reload(m);
}

static void main_stop(void *userdata)
{
        struct main_state *m = userdata;
        struct lbd *l = &m->lbd;

        l->stopping = true;
        log_info("Stopping: draining connections (at most %llu ms)",
                 (unsigned long long)(l->config->drain_timeout_usec / USEC_PER_MSEC));
        notify_stopping(l->notify, "Draining connections");
        /* Nothing is launched or terminated while stopping: instances and local backends stay for the
         * next start to adopt. The provider goes first, so none of its callbacks reaches a freed
         * reconciler. */
        l->schedule = schedule_free(l->schedule);
        l->autoscale = autoscale_free(l->autoscale);
        l->provider = provider_free(l->provider);
        l->reconcile = reconcile_free(l->reconcile);
        l->eip = eip_free(l->eip);
        l->peers = peers_free(l->peers);
        /* The lease is given up now, not left to expire, so another host leads within one renewal. */
        if (l->lease)
                m->releasing = lease_release(l->lease, main_lease_released, m) > 0;
        l->health = health_free(l->health);
        l->admin = admin_free(l->admin);
        daemon_set_deadline(&m->daemon, l->config->drain_timeout_usec);
        if (l->loops)
                loops_drain(l->loops, main_drained, m);
        else
                proxy_drain(l->proxy, main_drained, m);
}

static bool main_loops_alive(void *userdata, uint64_t usec)
{
        return loops_alive(userdata, usec);
}

static void main_get_stats(void *userdata, struct proxy_stats *ret)
{
        lbd_proxy_stats(userdata, ret);
}

static const struct daemon_ops main_ops = {
        .reload = main_on_sighup,
        .stop = main_stop,
        .deadline = main_drain_deadline,
};

static int main_run(struct main_state *m)
{
        struct lbd *l = &m->lbd;
        char status[256];
        int r;

        /* With worker loops, no loop defers its epoll_ctl() calls (loops.c says why). */
        r = daemon_start(&m->daemon, l->config->threads > 1 ? EVENT_BASE_FLAG_NOLOCK
                                                           : EVENT_BASE_FLAG_NOLOCK | EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        if (r < 0)
                return r;
        l->base = m->daemon.base;
        l->notify = m->daemon.notify;

        l->pool = pool_new(l->base, balance_from_kind(l->config->balance));
        if (!l->pool)
                return log_error_errno(ENOMEM, "Out of memory");
        r = pool_set_loops(l->pool, (unsigned)l->config->threads);
        if (r < 0)
                return log_error_errno(r, "Failed to set up %llu event loops: %m",
                                       (unsigned long long)l->config->threads);
        l->pool->on_change = main_update_status;
        l->pool->passive_max_down = (unsigned)l->config->health_passive_max_down;
        l->pool->on_change_userdata = m;

        r = provider_new(l->base, l->config, &l->provider);
        if (r < 0)
                return r;
        r = reconcile_new(l->base, l->provider, l->pool, l->config, &l->reconcile);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the reconciler: %m");
        reconcile_set_on_change(l->reconcile, main_on_reconcile_change, m);
        r = main_lease_setup(m);
        if (r < 0)
                return r;

        r = accesslog_open(l->base, l->config->access_log, &l->accesslog);
        if (r < 0)
                return log_error_errno(r, "Failed to open access log %s: %m", l->config->access_log);

        if (l->config->backend_tls) {
                r = tls_client_new(l->config, &l->backend_tls);
                if (r < 0)
                        return r;
        }
        if (config_has_tls(l->config)) {
                r = tls_new(l->base, l->config, &l->tls);
                if (r < 0)
                        return r;
        }
        if (l->config->threads > 1) {
                r = loops_new(l, &l->loops);
                if (r < 0)
                        return r;
                if (l->tls)
                        tls_set_defer(l->tls, loops_defer, l->loops);
                notify_set_alive(l->notify, main_loops_alive, l->loops);
        } else {
                l->proxy = proxy_new(l, l->base, NULL, 0, NULL);
                if (!l->proxy)
                        return log_error_errno(ENOMEM, "Out of memory");
                r = proxy_listen(l->proxy, l->config);
                if (r < 0)
                        return r;
        }
        l->history = history_new(l->base, l->pool, main_get_stats, l);
        if (!l->history)
                return log_error_errno(ENOMEM, "Out of memory");
        reconcile_set_history(l->reconcile, l->history);
        if (l->lease)
                lease_set_history(l->lease, l->history);

        if (l->config->admin_enabled) {
                r = admin_new(l, &l->config->admin, &l->admin);
                if (r < 0) {
                        char name[NETADDR_STRLEN];

                        (void)netaddr_format(&l->config->admin, name, sizeof(name));
                        return log_error_errno(r, "Failed to start the admin API on %s: %m", name);
                }
        }

        l->health = health_new(l->base, l->pool, l->config);
        if (!l->health)
                return log_error_errno(ENOMEM, "Out of memory");
        health_set_tls(l->health, l->backend_tls);
        if (l->lease)
                lease_start(l->lease);
        peers_start(l->peers);
        reconcile_start(l->reconcile);
        r = autoscale_new(l, &l->autoscale);
        if (r < 0)
                return log_error_errno(r, "Failed to set up scaling on demand: %m");
        r = schedule_new(l, &l->schedule);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the schedule: %m");

        r = daemon_catch_signals(&m->daemon, &main_ops, m);
        if (r < 0)
                return r;

        l->started_usec = now_usec();
        main_status_text(l, status, sizeof(status));
        notify_ready(l->notify, status);
        if (l->config->provider == PROVIDER_STATIC)
                log_info("lbd %s ready: %zu backends, balance %s", PACKAGE_VERSION, l->config->n_backends,
                         config_balance_name(l->config->balance));
        else
                log_info("lbd %s ready: provider %s, desired %llu, balance %s", PACKAGE_VERSION,
                         config_provider_name(l->config->provider), (unsigned long long)l->config->desired,
                         config_balance_name(l->config->balance));

        return daemon_run(&m->daemon);
}

static void main_cleanup(struct main_state *m)
{
        struct lbd *l = &m->lbd;
        struct loops *ls;

        l->admin = admin_free(l->admin);
        l->schedule = schedule_free(l->schedule);
        l->autoscale = autoscale_free(l->autoscale);
        l->provider = provider_free(l->provider);
        l->reconcile = reconcile_free(l->reconcile);
        l->eip = eip_free(l->eip);
        l->peers = peers_free(l->peers);
        l->lease = lease_free(l->lease);
        l->health = health_free(l->health);
        l->history = history_free(l->history);
        l->proxy = proxy_free(l->proxy);
        notify_set_alive(l->notify, NULL, NULL);
        ls = TAKE_PTR(l->loops); /* its last messages may change the pool: nothing may reach it then */
        if (l->tls)
                tls_set_defer(l->tls, NULL, NULL);
        ls = loops_free(ls); /* runs what it deferred: before the TLS contexts go */
        l->tls = tls_free(l->tls);
        l->pool = pool_free(l->pool);
        l->backend_tls = tls_client_free(l->backend_tls);
        l->accesslog = accesslog_free(l->accesslog);
        daemon_done(&m->daemon);
        l->notify = NULL;
        l->base = NULL;
        free(l->config);
        l->config = NULL;
}

int main(int argc, char **argv)
{
        struct main_state m = {
                .argc = argc,
                .argv = argv,
        };
        static const struct daemon_cli cli = {
                .name = "lbd",
                .version = PACKAGE_VERSION,
                .short_options = "c:l:b:hV",
                .options = main_options,
                .help = main_help,
                .option = main_first_pass_option,
        };
        struct daemon_args args;
        int r;

        log_set_ident("lbd");
        r = daemon_parse_command_line(&cli, argc, argv, &args);
        if (r != 0)
                return r > 0 ? EXIT_SUCCESS : DAEMON_EXIT_USAGE;
        m.config_path = args.config_path;

        r = main_load_config(m.config_path, argc, argv, &m.lbd.config);
        if (r < 0) {
                log_error("Invalid configuration%s%s", m.config_path ? " in " : "",
                          m.config_path ? m.config_path : "");
                return DAEMON_EXIT_CONFIG;
        }
        if (args.check && config_has_tls(m.lbd.config) && tls_check(m.lbd.config) < 0) {
                log_error("Invalid TLS certificates%s%s", m.config_path ? " in " : "",
                          m.config_path ? m.config_path : "");
                free(m.lbd.config);
                return DAEMON_EXIT_CONFIG;
        }
        if (args.check) {
                printf("%s: configuration OK (%zu backends, %zu listeners)\n",
                       m.config_path ? m.config_path : "options", m.lbd.config->n_backends,
                       m.lbd.config->n_listen);
                free(m.lbd.config);
                return 0;
        }

        (void)signal(SIGPIPE, SIG_IGN);
        /* Our own limit ([limits] max_header_size, at most 1 MiB) applies before http_parser's. */
        http_parser_set_max_header_size(2 * 1024 * 1024);

        r = main_run(&m);
        main_cleanup(&m);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
