/* The admin API: GET /status (JSON) and GET /metrics (Prometheus text format 0.0.4) on a separate
 * listener, served by the HTTP engine (http/server.h) on the daemon's main event loop; and POST /backends/NAME/drain and
 * POST /backends/NAME/enable, which take a backend (NAME: its address or its instance id) out of rotation
 * for maintenance and put it back (lbctl drain / enable), refused when a browser sends them on another
 * site's behalf (statuspage_post_allowed()). The status page at / and /page... is statuspage.c's, served
 * on this listener.
 *
 * Besides that one flag it only reads: the pool's backends (backend.c's pool owns them), the proxy's
 * counters, the daemon's start time, and the reconciler's view of the instances (reconcile.h).
 * Every answer is built whole in memory from that state and sent at once; the state is small (a few
 * hundred backends at most), so a request costs little loop time. The listener is meant for loopback and
 * trusted tools, but it gets the engine's guarantees as the proxy's clients do: at most
 * ADMIN_MAX_CONNECTIONS connections, a small head and body, a head within 10 s of its first byte (a
 * slowloris is answered 408 and closed), idle connections closed after 10 s, strict framing, and a backoff
 * with one log line when accept() runs out of descriptors. Anything else is 404; a method a path doesn't
 * take, 405. */
#include "lbd/admin.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cjson.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/netaddr.h"
#include "common/parse.h"
#include "http/server.h"
#include "lbd-version.h"
#include "lbd/autoscale.h"
#include "lbd/schedule.h"
#include "lbd/backend.h"
#include "lbd/history.h"
#include "lbd/lease.h"
#include "lbd/peer.h"
#include "lbd/lbd.h"
#include "lbd/provider.h"
#include "lbd/loops.h"
#include "lbd/proxy.h"
#include "lbd/reconcile.h"
#include "lbd/statuspage.h"
#include "lbd/tls.h"

#define ADMIN_MAX_HEADERS_SIZE 8192
#define ADMIN_MAX_BODY_SIZE    1024
#define ADMIN_TIMEOUT_USEC     (10 * USEC_PER_SEC) /* for a head, a body, an idle connection */
#define ADMIN_MAX_CONNECTIONS  256
#define ADMIN_QUERY_PARAMS_MAX 16
#define ADMIN_LABEL_MAX        (2 * NETADDR_STRLEN + 1)

#define ADMIN_CONTENT_JSON    "application/json"
#define ADMIN_CONTENT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define ADMIN_CONTENT_TEXT    "text/plain; charset=utf-8"

struct admin {
        struct lbd *lbd;
        struct http_server *http;
        struct statuspage *page; /* the status page at / (statuspage.h) */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct evbuffer *, evbuffer_free)

static const char *admin_state_name(const struct backend *b)
{
        if (b->state == BACKEND_DRAINING)
                return "draining";
        return b->healthy ? "up" : "down";
}

/* Microseconds in seconds (<unit> USEC_PER_SEC) or milliseconds (USEC_PER_MSEC), rounded to 3 decimals:
 * an integer count of thousandths divided by 1000 prints short ("0.412", not "0.41200000000000003"). */
static double admin_round(uint64_t usec, uint64_t unit)
{
        uint64_t step = unit / 1000;

        return (double)((usec + step / 2) / step) / 1000.0;
}

/* The proxy's counters, summed over the event loops, in <buf>; NULL when there is no proxy. */
static const struct proxy_stats *admin_proxy_stats(const struct admin *a, struct proxy_stats *buf)
{
        if (!a->lbd->proxy && !a->lbd->loops)
                return NULL;
        lbd_proxy_stats(a->lbd, buf);
        return buf;
}

/* Adds "<name>": seconds since the wall clock time <launched_usec>, or null when unknown. */
static bool admin_add_age(cJSON *o, const char *name, uint64_t launched_usec, uint64_t wall)
{
        uint64_t age = wall > launched_usec ? wall - launched_usec : 0;

        if (launched_usec == 0)
                return cJSON_AddNullToObject(o, name) != NULL;
        return cJSON_AddNumberToObject(o, name, admin_round(age, USEC_PER_SEC)) != NULL;
}

static bool admin_add_string_or_null(cJSON *o, const char *name, const char *value)
{
        if (!value || value[0] == '\0')
                return cJSON_AddNullToObject(o, name) != NULL;
        return cJSON_AddStringToObject(o, name, value) != NULL;
}

/* ---- /status ---- */

static int admin_status_backend(cJSON *array, const struct backend *b, uint64_t now, uint64_t wall)
{
        static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
        uint64_t by_class[ELEMENTSOF(classes)] = {0};
        struct backend_stats st;
        cJSON *o, *responses, *check;

        o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(array, o)) {
                cJSON_Delete(o);
                return -ENOMEM;
        }

        backend_get_stats(b, &st);
        for (size_t i = 0; i < ELEMENTSOF(st.by_code); i++)
                by_class[(BACKEND_CODE_MIN + i) / 100 - 1] += st.by_code[i];

        if (!cJSON_AddStringToObject(o, "address", b->name) ||
            !cJSON_AddStringToObject(o, "state", admin_state_name(b)) ||
            !cJSON_AddBoolToObject(o, "in_rotation", backend_in_rotation(b)) ||
            !cJSON_AddNumberToObject(o, "active", backend_active(b)) ||
            !cJSON_AddNumberToObject(o, "load", b->load) ||
            !cJSON_AddNumberToObject(o, "requests", (double)st.requests) ||
            !cJSON_AddNumberToObject(o, "failures", (double)st.failures) ||
            !admin_add_string_or_null(o, "instance_id", b->instance_id) ||
            !admin_add_string_or_null(o, "instance_state", b->instance_state) ||
            !admin_add_string_or_null(o, "zone", b->zone) ||
            !admin_add_age(o, "age_s", b->launched_usec, wall) ||
            !admin_add_string_or_null(o, "launch_hash", b->launch_hash) ||
            !admin_add_string_or_null(o, "subnet", b->subnet) ||
            !cJSON_AddBoolToObject(o, "forced", b->forced) ||
            !cJSON_AddBoolToObject(o, "maintenance", b->maintenance))
                return -ENOMEM;

        responses = cJSON_AddObjectToObject(o, "responses");
        if (!responses)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(classes); i++)
                if (by_class[i] > 0 && !cJSON_AddNumberToObject(responses, classes[i], (double)by_class[i]))
                        return -ENOMEM;

        check = cJSON_AddObjectToObject(o, "last_check");
        if (!check || !cJSON_AddStringToObject(check, "result", backend_check_result_name(b->last_check)) ||
            !cJSON_AddNumberToObject(check, "status", b->last_check_status) ||
            !cJSON_AddNumberToObject(check, "duration_ms",
                                     admin_round(b->last_check_duration_usec, USEC_PER_MSEC)))
                return -ENOMEM;
        if (b->last_check_at_usec == 0) {
                if (!cJSON_AddNullToObject(check, "age_s"))
                        return -ENOMEM;
        } else if (!cJSON_AddNumberToObject(
                           check, "age_s",
                           admin_round(now > b->last_check_at_usec ? now - b->last_check_at_usec : 0,
                                       USEC_PER_SEC)))
                return -ENOMEM;
        return 0;
}

/* "api_failing": null, or while a provider call is failing and retrying, for how long, how many
 * attempts in a row have failed and the last one's error. Returns 0 or -ENOMEM. */
static int admin_status_api(cJSON *control, const struct reconcile_view *v)
{
        cJSON *api;

        if (!v->failing)
                return cJSON_AddNullToObject(control, "api_failing") ? 0 : -ENOMEM;
        api = cJSON_AddObjectToObject(control, "api_failing");
        if (!api || !cJSON_AddNumberToObject(api, "for_s", admin_round(v->failing_usec, USEC_PER_SEC)) ||
            !cJSON_AddNumberToObject(api, "failed_attempts", v->failing_attempts) ||
            !cJSON_AddStringToObject(api, "error", v->failing_error))
                return -ENOMEM;
        return 0;
}

/* "refresh": the instance refresh's state, settings and progress. Returns 0 or -ENOMEM. */
static int admin_status_refresh(cJSON *control, const struct reconcile_view *v)
{
        const struct refresh_counts *c = &v->refresh_counts;
        cJSON *o = cJSON_AddObjectToObject(control, "refresh");

        if (!o || !cJSON_AddStringToObject(o, "state", refresh_state_name(v->refresh)) ||
            !admin_add_string_or_null(o, "target", v->launch_hash) ||
            !cJSON_AddNumberToObject(o, "min_healthy", (double)v->refresh_settings.min_healthy) ||
            !cJSON_AddNumberToObject(o, "warmup_s", admin_round(v->refresh_settings.warmup_usec, USEC_PER_SEC)) ||
            !cJSON_AddNumberToObject(o, "timeout_s",
                                     admin_round(v->refresh_settings.timeout_usec, USEC_PER_SEC)) ||
            !cJSON_AddStringToObject(o, "on_failure", refresh_on_failure_name(v->refresh_settings.on_failure)) ||
            !cJSON_AddNumberToObject(o, "old", (double)c->old_total) ||
            !cJSON_AddNumberToObject(o, "old_serving", (double)c->old_serving) ||
            !cJSON_AddNumberToObject(o, "new", (double)c->new_total) ||
            !cJSON_AddNumberToObject(o, "new_counted", (double)c->new_warm) ||
            !cJSON_AddNumberToObject(o, "replaced", (double)v->refresh_replaced) ||
            !(v->refresh_started_wall_usec
                      ? cJSON_AddNumberToObject(o, "started_unix",
                                                admin_round(v->refresh_started_wall_usec, USEC_PER_SEC))
                      : cJSON_AddNullToObject(o, "started_unix")) ||
            !admin_add_string_or_null(o, "reason", v->refresh_reason))
                return -ENOMEM;
        return 0;
}

/* "zones": per zone (subnet), its instances alive and when a launch may go there again (0: now). Returns 0
 * or -ENOMEM. */
static int admin_status_zones(cJSON *control, const struct reconcile_view *v)
{
        cJSON *zones = cJSON_AddArrayToObject(control, "zones");

        if (!zones)
                return -ENOMEM;
        for (size_t z = 0; z < v->zones->n; z++) {
                const struct zone *zone = &v->zones->z[z];
                cJSON *o = cJSON_CreateObject();
                size_t n = 0;

                if (!o || !cJSON_AddItemToArray(zones, o)) {
                        cJSON_Delete(o);
                        return -ENOMEM;
                }
                for (size_t i = 0; i < v->n_instances; i++) {
                        const struct reconcile_instance *k = &v->instances[i];

                        if (!k->terminating && strcmp(k->inst.subnet, zone->name) == 0 &&
                            (k->inst.state == INSTANCE_PENDING || k->inst.state == INSTANCE_RUNNING))
                                n++;
                }
                if (!cJSON_AddStringToObject(o, "subnet", zone->name) ||
                    !cJSON_AddNumberToObject(o, "instances", (double)n) ||
                    !cJSON_AddNumberToObject(o, "capacity_refusals", zone->refusals) ||
                    !cJSON_AddNumberToObject(o, "retry_in_s",
                                             zone->retry_usec > v->now_usec
                                                     ? admin_round(zone->retry_usec - v->now_usec, USEC_PER_SEC)
                                                     : 0))
                        return -ENOMEM;
        }
        return 0;
}

/* "autoscale": null when scaling on demand is off, else its bounds, targets, figures and last decision.
 * Returns 0 or -ENOMEM. */
static int admin_status_autoscale(cJSON *control, const struct lbd *lbd)
{
        const struct autoscale_state *st = autoscale_get_state(lbd->autoscale);
        const struct autoscale_settings *s = autoscale_get_settings(lbd->autoscale);
        cJSON *o;

        if (!st)
                return cJSON_AddNullToObject(control, "autoscale") ? 0 : -ENOMEM;
        /* The bounds in force: [pool]'s, or a scheduled action's. */
        o = cJSON_AddObjectToObject(control, "autoscale");
        if (!o || !cJSON_AddNumberToObject(o, "min", (double)s->min) ||
            !cJSON_AddNumberToObject(o, "max", (double)s->max) ||
            !cJSON_AddNumberToObject(o, "target_rps", (double)s->target_rps) ||
            !cJSON_AddNumberToObject(o, "target_inflight", (double)s->target_inflight) ||
            !cJSON_AddNumberToObject(o, "target_p90_ms", (double)s->target_p90_usec / (double)USEC_PER_MSEC) ||
            !(st->slow_share >= 0 ? cJSON_AddNumberToObject(o, "slow_share", st->slow_share)
                                  : cJSON_AddNullToObject(o, "slow_share")) ||
            !cJSON_AddBoolToObject(o, "data_ok", st->data_ok) ||
            !cJSON_AddNumberToObject(o, "rps", st->rps) || !cJSON_AddNumberToObject(o, "inflight", st->inflight) ||
            !admin_add_string_or_null(o, "last_decision", st->last))
                return -ENOMEM;
        return 0;
}

static cJSON *admin_add_count_or_null(cJSON *o, const char *name, int64_t v)
{
        return v >= 0 ? cJSON_AddNumberToObject(o, name, (double)v) : cJSON_AddNullToObject(o, name);
}

/* "schedule": null without [schedule] actions, else the action in force (what it set, null: left as it
 * was) and the next one. Returns 0 or -ENOMEM. */
static int admin_status_schedule(cJSON *control, const struct lbd *lbd)
{
        const struct schedule_state *st = schedule_get_state(lbd->schedule);
        cJSON *o, *cur;

        if (!st)
                return cJSON_AddNullToObject(control, "schedule") ? 0 : -ENOMEM;
        o = cJSON_AddObjectToObject(control, "schedule");
        if (!o || !cJSON_AddNumberToObject(o, "actions", (double)lbd->config->n_schedule))
                return -ENOMEM;
        if (!st->applied)
                cur = cJSON_AddNullToObject(o, "in_force");
        else if ((cur = cJSON_AddObjectToObject(o, "in_force")) &&
                 (!cJSON_AddStringToObject(cur, "name", st->name) ||
                  !cJSON_AddNumberToObject(cur, "matched_unix", (double)st->at) ||
                  !admin_add_count_or_null(cur, "min", st->min) || !admin_add_count_or_null(cur, "max", st->max) ||
                  !admin_add_count_or_null(cur, "desired", st->desired)))
                return -ENOMEM;
        if (!cur || !admin_add_string_or_null(o, "next", st->next_name) ||
            !(st->next_at >= 0 ? cJSON_AddNumberToObject(o, "next_unix", (double)st->next_at)
                               : cJSON_AddNullToObject(o, "next_unix")))
                return -ENOMEM;
        return 0;
}

/* The reconciler's part of /status: "control". Returns 0 or -ENOMEM. */
static int admin_status_control(cJSON *root, const struct lbd *lbd, uint64_t wall)
{
        struct reconcile_view v;
        cJSON *control, *instances;

        if (!lbd->reconcile)
                return cJSON_AddNullToObject(root, "control") ? 0 : -ENOMEM;
        reconcile_get_view(lbd->reconcile, &v);

        control = cJSON_AddObjectToObject(root, "control");
        if (!control || !cJSON_AddStringToObject(control, "provider", v.provider) ||
            !cJSON_AddBoolToObject(control, "managed", v.managed) ||
            !admin_add_string_or_null(control, "launch_hash", v.launch_hash) ||
            !cJSON_AddNumberToObject(control, "desired", (double)v.desired) ||
            !cJSON_AddBoolToObject(control, "list_ok", v.list_ok) ||
            !(v.listed ? cJSON_AddNumberToObject(control, "list_age_s",
                                                 admin_round(v.list_age_usec, USEC_PER_SEC))
                       : cJSON_AddNullToObject(control, "list_age_s")) ||
            !(v.listed ? cJSON_AddNumberToObject(control, "last_list_unix",
                                                 admin_round(v.list_wall_usec, USEC_PER_SEC))
                       : cJSON_AddNullToObject(control, "last_list_unix")) ||
            !admin_add_string_or_null(control, "last_error", v.last_error_text) ||
            admin_status_api(control, &v) < 0 ||
            !cJSON_AddBoolToObject(control, "all_failing", v.panic) ||
            !cJSON_AddBoolToObject(control, "storm_guard", v.guard) ||
            !cJSON_AddNumberToObject(control, "replacements_in_window", v.replacements) ||
            !cJSON_AddNumberToObject(control, "launches", (double)v.stats.launches) ||
            !cJSON_AddNumberToObject(control, "terminations", (double)v.stats.terminations) ||
            !cJSON_AddNumberToObject(control, "provider_errors", (double)v.stats.provider_errors) ||
            admin_status_refresh(control, &v) < 0 || admin_status_zones(control, &v) < 0 ||
            admin_status_autoscale(control, lbd) < 0 || admin_status_schedule(control, lbd) < 0)
                return -ENOMEM;

        instances = cJSON_AddArrayToObject(control, "instances");
        if (!instances)
                return -ENOMEM;
        for (size_t i = 0; i < v.n_instances; i++) {
                const struct reconcile_instance *k = &v.instances[i];
                char addr[NETADDR_STRLEN] = "";
                cJSON *o = cJSON_CreateObject();

                if (!o || !cJSON_AddItemToArray(instances, o)) {
                        cJSON_Delete(o);
                        return -ENOMEM;
                }
                if (k->inst.has_addr)
                        (void)netaddr_format(&k->inst.addr, addr, sizeof(addr));
                if (!cJSON_AddStringToObject(o, "id", k->inst.id) ||
                    !cJSON_AddStringToObject(o, "state", provider_instance_state_name(k->inst.state)) ||
                    !admin_add_string_or_null(o, "address", addr) ||
                    !admin_add_age(o, "age_s", k->inst.launched_usec, wall) ||
                    !admin_add_string_or_null(o, "launch_hash", k->inst.launch_hash) ||
                    !admin_add_string_or_null(o, "subnet", k->inst.subnet) ||
                    !cJSON_AddBoolToObject(o, "listed", k->listed) ||
                    !cJSON_AddBoolToObject(o, "terminating", k->terminating) ||
                    !cJSON_AddBoolToObject(o, "outside_networks", k->outside))
                        return -ENOMEM;
        }
        return 0;
}

/* "hosts" of "lease": what each of [lease] peers answered on its lease listener (peer.h). */
static int admin_status_lease_hosts(cJSON *o, const struct lbd *lbd)
{
        struct peer_view views[CONFIG_MAX_LEASE_PEERS];
        size_t n = peers_get_view(lbd->peers, views, ELEMENTSOF(views));
        cJSON *hosts = cJSON_AddArrayToObject(o, "hosts");

        if (!hosts)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const struct peer_view *v = &views[i];
                cJSON *h = cJSON_CreateObject();

                if (!h || !cJSON_AddItemToArray(hosts, h)) {
                        cJSON_Delete(h);
                        return -ENOMEM;
                }
                if (!cJSON_AddStringToObject(h, "address", v->address) || !cJSON_AddBoolToObject(h, "up", v->up) ||
                    !admin_add_string_or_null(h, "name", v->ever ? v->name : "") ||
                    !cJSON_AddBoolToObject(h, "leader", v->up && v->leader) ||
                    !cJSON_AddNumberToObject(h, "epoch", (double)v->epoch) ||
                    !cJSON_AddBoolToObject(h, "store_up", v->up && v->store_up) ||
                    !(v->ever ? cJSON_AddNumberToObject(h, "answered_s", admin_round(v->answered_ago_usec, USEC_PER_SEC))
                              : cJSON_AddNullToObject(h, "answered_s")) ||
                    !cJSON_AddNumberToObject(h, "down_s", admin_round(v->down_usec, USEC_PER_SEC)) ||
                    !admin_add_string_or_null(h, "error", v->up ? "" : v->error))
                        return -ENOMEM;
        }
        return 0;
}

/* "lease": who leads the pool, in which epoch, until when, and the other hosts; null without [lease]. */
int admin_lease_json(cJSON *root, const struct lbd *lbd)
{
        struct lease_view v;
        cJSON *o, *peers;

        if (!lbd->lease)
                return cJSON_AddNullToObject(root, "lease") ? 0 : -ENOMEM;
        lease_get_view(lbd->lease, &v);
        o = cJSON_AddObjectToObject(root, "lease");
        if (!o || !cJSON_AddStringToObject(o, "name", v.name) || !cJSON_AddStringToObject(o, "pool", v.pool) ||
            !cJSON_AddBoolToObject(o, "leader", v.leader) ||
            !admin_add_string_or_null(o, "holder", v.answered ? v.holder : "") ||
            !cJSON_AddNumberToObject(o, "epoch", (double)v.epoch) ||
            !(v.answered ? cJSON_AddNumberToObject(o, "expires_in_s", admin_round(v.expires_in_usec, USEC_PER_SEC))
                         : cJSON_AddNullToObject(o, "expires_in_s")) ||
            !cJSON_AddNumberToObject(o, "acts_for_s", admin_round(v.valid_for_usec, USEC_PER_SEC)) ||
            !cJSON_AddBoolToObject(o, "store_up", v.answered && !v.store_down) ||
            !cJSON_AddNumberToObject(o, "store_down_s", admin_round(v.store_down_usec, USEC_PER_SEC)) ||
            !admin_add_string_or_null(o, "last_error", v.last_error) ||
            !cJSON_AddNumberToObject(o, "changes", (double)v.changes) ||
            !cJSON_AddNumberToObject(o, "acquired", (double)v.acquired))
                return -ENOMEM;
        peers = cJSON_AddArrayToObject(o, "peers");
        if (!peers)
                return -ENOMEM;
        for (size_t i = 0; i < v.n_peers; i++) {
                cJSON *p = cJSON_CreateObject();

                if (!p || !cJSON_AddItemToArray(peers, p)) {
                        cJSON_Delete(p);
                        return -ENOMEM;
                }
                if (!cJSON_AddStringToObject(p, "name", v.peers[i].name) ||
                    !cJSON_AddNumberToObject(p, "seen_s", admin_round(v.peers[i].seen_ago_usec, USEC_PER_SEC)) ||
                    !cJSON_AddBoolToObject(p, "leader", v.answered && strcmp(v.peers[i].name, v.holder) == 0 &&
                                                                v.expires_in_usec > 0))
                        return -ENOMEM;
        }
        return admin_status_lease_hosts(o, lbd);
}

/* "tls": the loaded certificates with their expiry, when a listener is TLS. */
static int admin_status_tls(cJSON *root, const struct lbd *lbd, uint64_t wall)
{
        const struct tls *t = lbd->tls;
        struct tls_cert_info certs[CONFIG_MAX_CERTS];
        int64_t now = (int64_t)(wall / USEC_PER_SEC);
        cJSON *tls, *array;
        size_t n;

        if (!t)
                return 0;
        tls = cJSON_AddObjectToObject(root, "tls");
        array = tls ? cJSON_AddArrayToObject(tls, "certificates") : NULL;
        if (!array)
                return -ENOMEM;
        n = MIN(tls_get_certs(t, certs, ELEMENTSOF(certs)), ELEMENTSOF(certs));
        for (size_t i = 0; i < n; i++) {
                cJSON *o = cJSON_CreateObject();

                if (!o || !cJSON_AddItemToArray(array, o)) {
                        cJSON_Delete(o);
                        return -ENOMEM;
                }
                if (!cJSON_AddStringToObject(o, "file", certs[i].file) ||
                    !cJSON_AddStringToObject(o, "name", certs[i].name) ||
                    !cJSON_AddStringToObject(o, "key", certs[i].key_type) ||
                    !cJSON_AddNumberToObject(o, "not_after", (double)certs[i].not_after) ||
                    !cJSON_AddNumberToObject(o, "days_left",
                                             (double)((certs[i].not_after - now) / (24 * 3600))) ||
                    !cJSON_AddBoolToObject(o, "default", certs[i].is_default))
                        return -ENOMEM;
        }
        if (!cJSON_AddNumberToObject(tls, "reloads_failed", (double)tls_reloads_failed(t)))
                return -ENOMEM;
        return 0;
}

/* Builds the /status document into <out>. Returns 0 or -ENOMEM. */
static int admin_status(const struct admin *a, struct evbuffer *out)
{
        const struct lbd *lbd = a->lbd;
        const struct pool *pool = lbd->pool;
        struct proxy_stats psv;
        const struct proxy_stats *ps = admin_proxy_stats(a, &psv);
        _cleanup_(cJSON_Deletep) cJSON *root = NULL;
        _cleanup_(cJSON_freep) char *text = NULL;
        cJSON *backends;
        uint64_t now = now_usec(), wall = realtime_usec();
        size_t healthy = 0;
        int r;

        for (size_t i = 0; pool && i < pool->n_backends; i++)
                if (pool->backends[i]->healthy)
                        healthy++;

        root = cJSON_CreateObject();
        if (!root)
                return -ENOMEM;
        if (!cJSON_AddStringToObject(root, "version", PACKAGE_VERSION) ||
            !cJSON_AddNumberToObject(root, "pid", (double)getpid()) ||
            !cJSON_AddNumberToObject(
                    root, "uptime_s",
                    admin_round(now > lbd->started_usec ? now - lbd->started_usec : 0, USEC_PER_SEC)) ||
            !cJSON_AddNumberToObject(root, "healthy", (double)healthy) ||
            !cJSON_AddNumberToObject(root, "total", pool ? (double)pool->n_backends : 0) ||
            !cJSON_AddNumberToObject(root, "connections", ps ? (double)ps->connections : 0))
                return -ENOMEM;

        backends = cJSON_AddArrayToObject(root, "backends");
        if (!backends)
                return -ENOMEM;
        for (size_t i = 0; pool && i < pool->n_backends; i++) {
                r = admin_status_backend(backends, pool->backends[i], now, wall);
                if (r < 0)
                        return r;
        }
        r = admin_status_control(root, lbd, wall);
        if (r < 0)
                return r;
        r = admin_status_tls(root, lbd, wall);
        if (r < 0)
                return r;
        r = admin_lease_json(root, lbd);
        if (r < 0)
                return r;

        text = cJSON_PrintUnformatted(root);
        if (!text)
                return -ENOMEM;
        if (evbuffer_add(out, text, strlen(text)) < 0 || evbuffer_add(out, "\n", 1) < 0)
                return -ENOMEM;
        return 0;
}

/* ---- /metrics ---- */

void admin_printf(struct admin_out *m, const char *format, ...)
{
        va_list ap;

        va_start(ap, format);
        if (evbuffer_add_vprintf(m->out, format, ap) < 0)
                m->failed = true;
        va_end(ap);
}

static void admin_family(struct admin_out *m, const char *name, const char *type, const char *help)
{
        admin_printf(m, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Writes <value> escaped for a label value (backslash, double quote and newline) into <buf>; cut short
 * if it doesn't fit, never in the middle of an escape. */
static const char *admin_label(const char *value, char *buf, size_t size)
{
        size_t n = 0;

        for (const char *p = value; *p != '\0'; p++) {
                const char *esc = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
                size_t len = esc ? 2 : 1;

                if (n + len >= size)
                        break;
                if (esc)
                        memcpy(buf + n, esc, 2);
                else
                        buf[n] = *p;
                n += len;
        }
        buf[n] = '\0';
        return buf;
}

/* The TLS listeners' handshakes and certificates, when lbd has any. */
static void admin_metrics_tls(const struct admin *a, struct admin_out *m)
{
        const struct tls *t = a->lbd->tls;
        struct tls_cert_info certs[CONFIG_MAX_CERTS];
        struct tls_stats sv;
        const struct tls_stats *s = &sv;
        char file[ADMIN_LABEL_MAX], name[ADMIN_LABEL_MAX];
        size_t n;

        if (!t)
                return;
        lbd_tls_stats(a->lbd, &sv);
        admin_family(m, "lbd_tls_handshakes_total", "counter", "TLS handshakes completed.");
        admin_printf(m, "lbd_tls_handshakes_total %" PRIu64 "\n", s->handshakes);
        admin_family(m, "lbd_tls_resumed_total", "counter",
                     "TLS handshakes that resumed a session (ticket or cache) instead of a full one.");
        admin_printf(m, "lbd_tls_resumed_total %" PRIu64 "\n", s->resumed);
        if (a->lbd->loops) {
                admin_family(m, "lbd_loop_tls_handshakes_total", "counter",
                             "TLS handshakes completed on each event loop ([lbd] threads), and of those resumed.");
                for (size_t i = 0; i < loops_count(a->lbd->loops); i++) {
                        struct tls_stats ls = {0};

                        loops_add_loop_stats(a->lbd->loops, i, NULL, &ls);
                        admin_printf(m, "lbd_loop_tls_handshakes_total{loop=\"%zu\",resumed=\"no\"} %" PRIu64 "\n",
                                     i, ls.handshakes - ls.resumed);
                        admin_printf(m, "lbd_loop_tls_handshakes_total{loop=\"%zu\",resumed=\"yes\"} %" PRIu64 "\n",
                                     i, ls.resumed);
                }
        }
        admin_family(m, "lbd_tls_handshake_failures_total", "counter", "TLS handshakes that failed, by reason.");
        for (size_t i = 0; i < TLS_FAIL_MAX; i++)
                admin_printf(m, "lbd_tls_handshake_failures_total{reason=\"%s\"} %" PRIu64 "\n",
                             tls_failure_name((enum tls_failure)i), s->failures[i]);
        admin_family(m, "lbd_tls_reloads_failed_total", "counter",
                     "Certificate reloads refused for a bad file (the running certificates kept).");
        admin_printf(m, "lbd_tls_reloads_failed_total %" PRIu64 "\n", tls_reloads_failed(t));
        n = MIN(tls_get_certs(t, certs, ELEMENTSOF(certs)), ELEMENTSOF(certs));
        admin_family(m, "lbd_tls_certificate_expiry_timestamp_seconds", "gauge",
                     "When each loaded certificate expires (its notAfter), seconds since the epoch.");
        for (size_t i = 0; i < n; i++)
                admin_printf(m,
                             "lbd_tls_certificate_expiry_timestamp_seconds{file=\"%s\",domain=\"%s\","
                             "key=\"%s\"} %" PRId64 "\n",
                             admin_label(certs[i].file, file, sizeof(file)),
                             admin_label(certs[i].name, name, sizeof(name)), certs[i].key_type,
                             certs[i].not_after);
}

/* Builds the /metrics page into <out>. Returns 0 or -ENOMEM. */
/* The lease's families ([lease] only). */
static void admin_metrics_lease(const struct admin *a, struct admin_out *m)
{
        struct lease_view v;

        if (!a->lbd->lease)
                return;
        lease_get_view(a->lbd->lease, &v);
        admin_family(m, "lbd_lease_is_leader", "gauge", "1 while this host holds the lease and may act on the pool.");
        admin_printf(m, "lbd_lease_is_leader %d\n", v.leader ? 1 : 0);
        admin_family(m, "lbd_lease_epoch", "gauge", "The lease's epoch in the store's last answer.");
        admin_printf(m, "lbd_lease_epoch %" PRIu64 "\n", v.epoch);
        admin_family(m, "lbd_lease_expires_in_seconds", "gauge",
                     "Until the lease expires, by the store's last answer (0 when past or unknown).");
        admin_printf(m, "lbd_lease_expires_in_seconds %.3f\n", (double)v.expires_in_usec / (double)USEC_PER_SEC);
        admin_family(m, "lbd_lease_changes_total", "counter", "Leadership changes seen (the epoch moved).");
        admin_printf(m, "lbd_lease_changes_total %" PRIu64 "\n", v.changes);
        if (a->lbd->peers) {
                admin_family(m, "lbd_lease_listener_refused_total", "counter",
                             "Connections the lease listener closed at once: their address held its share.");
                admin_printf(m, "lbd_lease_listener_refused_total %" PRIu64 "\n",
                             peers_listener_refused(a->lbd->peers));
        }
        admin_family(m, "lbd_lease_acquired_total", "counter", "Times this host took the lease.");
        admin_printf(m, "lbd_lease_acquired_total %" PRIu64 "\n", v.acquired);
        admin_family(m, "lbd_lease_store_up", "gauge", "1 while the lease store answers.");
        admin_printf(m, "lbd_lease_store_up %d\n", v.answered && !v.store_down ? 1 : 0);
        admin_family(m, "lbd_lease_store_failures_total", "counter", "Lease attempts that failed.");
        admin_printf(m, "lbd_lease_store_failures_total %" PRIu64 "\n", v.failures_total);
}

static int admin_metrics(const struct admin *a, struct evbuffer *out)
{
        const struct pool *pool = a->lbd->pool;
        struct proxy_stats psv;
        const struct proxy_stats *ps = admin_proxy_stats(a, &psv);
        const struct autoscale_state *st = autoscale_get_state(a->lbd->autoscale);
        struct backend_stats bs;
        struct admin_out m = {.out = out};
        size_t n = pool ? pool->n_backends : 0;
        char label[ADMIN_LABEL_MAX];

        admin_family(&m, "lbd_requests_total", "counter",
                     "Responses from each backend, by HTTP status code.");
        for (size_t i = 0; i < n; i++) {
                const struct backend *b = pool->backends[i];

                admin_label(b->name, label, sizeof(label));
                backend_get_stats(b, &bs);
                for (size_t c = 0; c < ELEMENTSOF(bs.by_code); c++)
                        if (bs.by_code[c] > 0)
                                admin_printf(&m,
                                             "lbd_requests_total{backend=\"%s\",code=\"%zu\"} %" PRIu64 "\n",
                                             label, BACKEND_CODE_MIN + c, bs.by_code[c]);
        }

        admin_family(&m, "lbd_backend_up", "gauge", "Whether the backend is in rotation (1) or not (0).");
        for (size_t i = 0; i < n; i++)
                admin_printf(&m, "lbd_backend_up{backend=\"%s\"} %d\n",
                             admin_label(pool->backends[i]->name, label, sizeof(label)),
                             backend_in_rotation(pool->backends[i]) ? 1 : 0);

        admin_family(&m, "lbd_backend_maintenance", "gauge",
                     "Whether the operator took the backend out of rotation (1) or not (0).");
        for (size_t i = 0; i < n; i++)
                admin_printf(&m, "lbd_backend_maintenance{backend=\"%s\"} %d\n",
                             admin_label(pool->backends[i]->name, label, sizeof(label)),
                             pool->backends[i]->maintenance ? 1 : 0);

        admin_family(&m, "lbd_backend_active_requests", "gauge", "Requests in flight to the backend.");
        for (size_t i = 0; i < n; i++)
                admin_printf(&m, "lbd_backend_active_requests{backend=\"%s\"} %u\n",
                             admin_label(pool->backends[i]->name, label, sizeof(label)),
                             backend_active(pool->backends[i]));

        admin_family(&m, "lbd_backend_load", "gauge",
                     "Requests in flight to the backend, smoothed over about 10 s (what scaling in goes by).");
        for (size_t i = 0; i < n; i++)
                admin_printf(&m, "lbd_backend_load{backend=\"%s\"} %.2f\n",
                             admin_label(pool->backends[i]->name, label, sizeof(label)), pool->backends[i]->load);

        admin_family(&m, "lbd_backend_failures_total", "counter",
                     "Connect failures, resets, timeouts and malformed responses from the backend.");
        for (size_t i = 0; i < n; i++) {
                backend_get_stats(pool->backends[i], &bs);
                admin_printf(&m, "lbd_backend_failures_total{backend=\"%s\"} %" PRIu64 "\n",
                             admin_label(pool->backends[i]->name, label, sizeof(label)), bs.failures);
        }

        admin_family(&m, "lbd_health_checks_total", "counter",
                     "Active health checks of the backend, by result.");
        for (size_t i = 0; i < n; i++) {
                const struct backend *b = pool->backends[i];

                admin_label(b->name, label, sizeof(label));
                admin_printf(&m, "lbd_health_checks_total{backend=\"%s\",result=\"ok\"} %" PRIu64 "\n",
                             label, b->stats.health_ok);
                admin_printf(&m, "lbd_health_checks_total{backend=\"%s\",result=\"fail\"} %" PRIu64 "\n",
                             label, b->stats.health_fail);
        }

        admin_family(&m, "lbd_retries_total", "counter", "Requests tried again on another backend.");
        admin_printf(&m, "lbd_retries_total %" PRIu64 "\n", ps ? ps->retries_total : 0);

        admin_family(&m, "lbd_client_connections", "gauge", "Client connections open now.");
        admin_printf(&m, "lbd_client_connections %" PRIu64 "\n", ps ? ps->connections : 0);
        if (a->lbd->loops) {
                admin_family(&m, "lbd_loop_client_connections", "gauge",
                             "Client connections open now on each event loop ([lbd] threads).");
                for (size_t i = 0; i < loops_count(a->lbd->loops); i++)
                        admin_printf(&m, "lbd_loop_client_connections{loop=\"%zu\"} %" PRIu64 "\n", i,
                                     loops_connections(a->lbd->loops, i));
        }
        if (a->lbd->loops) {
                admin_family(&m, "lbd_loop_requests_total", "counter",
                             "Requests read from clients on each event loop ([lbd] threads).");
                for (size_t i = 0; i < loops_count(a->lbd->loops); i++) {
                        struct proxy_stats lps = {0};

                        loops_add_loop_stats(a->lbd->loops, i, &lps, NULL);
                        admin_printf(&m, "lbd_loop_requests_total{loop=\"%zu\"} %" PRIu64 "\n", i,
                                     lps.requests_total);
                }
        }

        admin_family(&m, "lbd_requests_rejected_total", "counter",
                     "Requests answered by lbd itself with an error, by HTTP status code.");
        for (size_t c = 0; ps && c < ELEMENTSOF(ps->rejected); c++)
                if (ps->rejected[c] > 0)
                        admin_printf(&m, "lbd_requests_rejected_total{code=\"%zu\"} %" PRIu64 "\n",
                                     PROXY_CODE_MIN + c, ps->rejected[c]);

        admin_metrics_tls(a, &m);
        admin_metrics_lease(a, &m);

        if (a->lbd->reconcile) {
                struct reconcile_view v;

                reconcile_get_view(a->lbd->reconcile, &v);
                admin_family(&m, "lbd_instances", "gauge",
                             "The pool's instances in the provider's last list, by state.");
                for (size_t i = 0; i < ELEMENTSOF(v.by_state); i++)
                        admin_printf(&m, "lbd_instances{state=\"%s\"} %zu\n",
                                     provider_instance_state_name((enum instance_state)i), v.by_state[i]);
                admin_family(&m, "lbd_launches_total", "counter", "Instances launched.");
                admin_printf(&m, "lbd_launches_total %" PRIu64 "\n", v.stats.launches);
                admin_family(&m, "lbd_terminations_total", "counter", "Instances terminated.");
                admin_printf(&m, "lbd_terminations_total %" PRIu64 "\n", v.stats.terminations);
                admin_family(&m, "lbd_provider_errors_total", "counter",
                             "Provider calls (list, launch, terminate) that failed.");
                admin_printf(&m, "lbd_provider_errors_total %" PRIu64 "\n", v.stats.provider_errors);
                admin_family(&m, "lbd_provider_api_failing_seconds", "gauge",
                             "How long the provider's API has been failing (calls retrying), 0 when not.");
                admin_printf(&m, "lbd_provider_api_failing_seconds %.1f\n",
                             v.failing ? (double)v.failing_usec / (double)USEC_PER_SEC : 0.0);
                if (v.listed) {
                        admin_family(&m, "lbd_provider_last_list_timestamp_seconds", "gauge",
                                     "Wall clock time of the last successful list of the pool's instances.");
                        admin_printf(&m, "lbd_provider_last_list_timestamp_seconds %" PRIu64 "\n",
                                     v.list_wall_usec / USEC_PER_SEC);
                }
                admin_family(&m, "lbd_pool_all_failing", "gauge",
                             "1 while every backend fails at once and the least bad are kept in rotation.");
                admin_printf(&m, "lbd_pool_all_failing %d\n", v.panic ? 1 : 0);
                admin_family(&m, "lbd_storm_guard", "gauge",
                             "1 while the replacement-storm guard holds replacements back.");
                admin_printf(&m, "lbd_storm_guard %d\n", v.guard ? 1 : 0);
                admin_family(&m, "lbd_desired_instances", "gauge",
                             "The desired count: [pool] desired, or what scaling on demand set.");
                admin_printf(&m, "lbd_desired_instances %" PRIu64 "\n", v.desired);
                admin_family(&m, "lbd_refresh_running", "gauge", "1 while an instance refresh runs.");
                admin_printf(&m, "lbd_refresh_running %d\n", v.refresh == REFRESH_RUNNING ? 1 : 0);
                if (st) {
                        admin_family(&m, "lbd_autoscale_requests_per_second", "gauge",
                                     "Requests per second over the scale-out window (scaling on demand).");
                        admin_printf(&m, "lbd_autoscale_requests_per_second %.3f\n", st->rps);
                        admin_family(&m, "lbd_autoscale_in_flight", "gauge",
                                     "Mean requests in flight over the scale-out window (scaling on demand).");
                        admin_printf(&m, "lbd_autoscale_in_flight %.3f\n", st->inflight);
                }
        }

        return m.failed ? -ENOMEM : 0;
}

/* ---- requests ---- */

void admin_respond(struct http_request *req, unsigned status, const char *content_type, const char *fields,
                   struct evbuffer *body)
{
        char head[HTTP_SERVER_HEADERS_MAX / 2];
        const void *data = NULL;
        size_t len = body ? evbuffer_get_length(body) : 0;
        int n;

        n = snprintf(head, sizeof(head), "Cache-Control: no-store\r\n%s", fields ? fields : "");
        if (n < 0 || (size_t)n >= sizeof(head) || (len > 0 && !(data = evbuffer_pullup(body, -1)))) {
                /* Our own fields too long, or no memory for the body: a bug or a starved process. */
                status = 500;
                content_type = NULL;
                head[0] = '\0';
                len = 0;
        }
        http_request_respond(req, &(struct http_response){
                                          .status = status,
                                          .content_type = content_type,
                                          .headers = head,
                                          .body = data,
                                          .body_len = len,
                                  });
}

void admin_respond_text(struct http_request *req, unsigned status, const char *fields, const char *reason,
                        const char *detail)
{
        char body[512];
        int n = snprintf(body, sizeof(body), "%u %s%s%s\n", status, reason ? reason : http_status_reason(status),
                         detail ? ": " : "", detail ? detail : "");
        char head[HTTP_SERVER_HEADERS_MAX / 2];
        int m = snprintf(head, sizeof(head), "Cache-Control: no-store\r\n%s", fields ? fields : "");

        http_request_respond(req, &(struct http_response){
                                          .status = status,
                                          .content_type = ADMIN_CONTENT_TEXT,
                                          .headers = m < 0 || (size_t)m >= sizeof(head) ? NULL : head,
                                          .body = body,
                                          .body_len = n < 0 ? 0 : MIN((size_t)n, sizeof(body) - 1),
                                  });
}

static void admin_reply_text(struct http_request *req, unsigned status, const char *reason)
{
        admin_respond_text(req, status, NULL, reason, NULL);
}

/* Answers 405 to anything but a POST, and 403 to a POST from another site (statuspage_post_allowed()).
 * Returns true for a POST that may go on. */
static bool admin_require_post(struct http_request *req)
{
        if (req->method == HTTP_POST)
                return statuspage_post_allowed(req);
        admin_respond_text(req, 405, "Allow: POST\r\n", NULL, NULL);
        return false;
}

/* ---- maintenance ---- */

#define ADMIN_BACKENDS_PREFIX "/backends/"

struct backend *admin_find_backend(const struct lbd *lbd, const char *name)
{
        struct pool *pool = lbd->pool;

        for (size_t i = 0; pool && i < pool->n_backends; i++) {
                struct backend *b = pool->backends[i];

                if (strcmp(b->name, name) == 0 || (b->instance_id[0] && strcmp(b->instance_id, name) == 0))
                        return b;
        }
        return NULL;
}

int admin_action_parse(const char *rest, bool *ret_drain, char *name, size_t size)
{
        const char *slash = strrchr(rest, '/');
        size_t n = 0;

        if (!slash || slash == rest || (strcmp(slash, "/drain") != 0 && strcmp(slash, "/enable") != 0))
                return -ENOENT;
        /* An IPv6 address may come percent-encoded ("%5B::1%5D:8081"). A decoded NUL or a name too long
         * names no backend. */
        for (const char *r = rest; r < slash; r++) {
                char c = *r;

                if (c == '%' && r + 2 < slash && parse_hex_digit(r[1]) >= 0 && parse_hex_digit(r[2]) >= 0) {
                        c = (char)(parse_hex_digit(r[1]) * 16 + parse_hex_digit(r[2]));
                        r += 2;
                }
                if (c == '\0' || n + 1 >= size)
                        return -ENOENT;
                name[n++] = c;
        }
        name[n] = '\0';
        *ret_drain = strcmp(slash, "/drain") == 0;
        return 0;
}

void admin_set_maintenance(struct lbd *lbd, struct backend *b, bool drain, const char *by)
{
        if (b->maintenance != drain)
                history_event(lbd->history, HISTORY_EVENT_OPERATOR, "%s %s (%s)", drain ? "Drained" : "Enabled",
                              b->name, by);
        backend_set_maintenance(b, drain);
}

/* POST /backends/NAME/drain or /backends/NAME/enable (<path> starts with ADMIN_BACKENDS_PREFIX). Answers
 * with the backend's state after the change: {backend, instance_id, maintenance, state, in_rotation,
 * active}. */
static void admin_backend_action(const struct admin *a, struct http_request *req, const char *path)
{
        _cleanup_(cJSON_Deletep) cJSON *o = NULL;
        _cleanup_(cJSON_freep) char *text = NULL;
        _cleanup_(evbuffer_freep) struct evbuffer *body = NULL;
        char name[ADMIN_BACKEND_NAME_MAX];
        struct backend *b;
        bool drain;
        int r;

        r = admin_action_parse(path + strlen(ADMIN_BACKENDS_PREFIX), &drain, name, sizeof(name));
        if (r < 0) {
                admin_reply_text(req, 404, NULL);
                return;
        }
        if (!admin_require_post(req))
                return;
        b = admin_find_backend(a->lbd, name);
        if (!b) {
                admin_reply_text(req, 404, "No such backend");
                return;
        }
        admin_set_maintenance(a->lbd, b, drain, "admin API");

        o = cJSON_CreateObject();
        if (!o || !cJSON_AddStringToObject(o, "backend", b->name) ||
            !admin_add_string_or_null(o, "instance_id", b->instance_id) ||
            !cJSON_AddBoolToObject(o, "maintenance", b->maintenance) ||
            !cJSON_AddStringToObject(o, "state", admin_state_name(b)) ||
            !cJSON_AddBoolToObject(o, "in_rotation", backend_in_rotation(b)) ||
            !cJSON_AddNumberToObject(o, "active", backend_active(b)) || !(text = cJSON_PrintUnformatted(o)) ||
            !(body = evbuffer_new()) || evbuffer_add_printf(body, "%s\n", text) < 0) {
                admin_reply_text(req, 500, NULL);
                return;
        }
        admin_respond(req, 200, ADMIN_CONTENT_JSON, NULL, body);
}

/* POST /refresh[?min_healthy=PCT&warmup=DURATION&timeout=DURATION&on_failure=rollback|stop] starts an
 * instance refresh (settings left out or empty are [pool]'s), POST /refresh/cancel stops it. Answers with the
 * "refresh" object of /status. */
/* The value of <name> among <params>, or NULL. */
static const char *admin_param(const struct http_param *params, int n, const char *name)
{
        for (int i = 0; i < n; i++)
                if (strcmp(params[i].name, name) == 0)
                        return params[i].value;
        return NULL;
}

static void admin_refresh(const struct admin *a, struct http_request *req, const char *path)
{
        const char *query = req->query, *v;
        const struct config *c = a->lbd->config;
        struct refresh_settings s = {
                .min_healthy = c->refresh_min_healthy,
                .warmup_usec = c->refresh_warmup_usec,
                .timeout_usec = c->refresh_timeout_usec,
                .on_failure = (enum refresh_on_failure)c->refresh_on_failure,
        };
        struct http_param params[ADMIN_QUERY_PARAMS_MAX];
        _cleanup_free_ char *qbuf = NULL;
        int n = 0;
        _cleanup_(cJSON_Deletep) cJSON *o = NULL;
        _cleanup_(cJSON_freep) char *text = NULL;
        _cleanup_(evbuffer_freep) struct evbuffer *body = NULL;
        struct reconcile_view view;
        const char *bad = NULL;
        bool cancel = strcmp(path, "/refresh/cancel") == 0;
        int r;

        if (!cancel && strcmp(path, "/refresh") != 0) {
                admin_reply_text(req, 404, NULL);
                return;
        }
        if (!admin_require_post(req))
                return;
        if (!a->lbd->reconcile) {
                admin_reply_text(req, 400, "No managed pool: nothing to refresh");
                return;
        }
        if (query && *query) {
                qbuf = malloc(strlen(query) + 1);
                if (!qbuf) {
                        admin_reply_text(req, 500, NULL);
                        return;
                }
                n = http_parse_query(query, qbuf, params, ELEMENTSOF(params));
                if (n < 0)
                        bad = "Malformed query";
        }
        if (!bad && (v = admin_param(params, n, "min_healthy")) && *v && parse_uint(v, 0, 100, &s.min_healthy) < 0)
                bad = "min_healthy must be a percentage, 0 to 100";
        if (!bad && (v = admin_param(params, n, "warmup")) && *v && parse_duration(v, &s.warmup_usec) < 0)
                bad = "warmup must be a duration (30s, 2m)";
        if (!bad && (v = admin_param(params, n, "timeout")) && *v &&
            (parse_duration(v, &s.timeout_usec) < 0 || s.timeout_usec == 0))
                bad = "timeout must be a duration greater than 0 (10m)";
        if (!bad && (v = admin_param(params, n, "on_failure")) && *v) {
                if (strcmp(v, "rollback") == 0)
                        s.on_failure = REFRESH_ROLLBACK;
                else if (strcmp(v, "stop") == 0)
                        s.on_failure = REFRESH_STOP;
                else
                        bad = "on_failure must be rollback or stop";
        }
        if (bad) {
                admin_reply_text(req, 400, bad);
                return;
        }

        r = cancel ? reconcile_refresh_cancel(a->lbd->reconcile) : reconcile_refresh_start(a->lbd->reconcile, &s);
        if (r == -ESRCH) {
                admin_reply_text(req, 409, "No refresh is running");
                return;
        }
        if (r == -EOPNOTSUPP) {
                admin_reply_text(req, 400, "This provider has no launch settings to refresh");
                return;
        }
        if (r == -EAGAIN) {
                admin_reply_text(req, 503, "The pool has not been listed yet: try again");
                return;
        }
        reconcile_get_view(a->lbd->reconcile, &view);
        o = cJSON_CreateObject();
        if (r < 0 || !o || admin_status_refresh(o, &view) < 0 || !(text = cJSON_PrintUnformatted(
                                                                          cJSON_GetObjectItem(o, "refresh"))) ||
            !(body = evbuffer_new()) || evbuffer_add_printf(body, "%s\n", text) < 0) {
                admin_reply_text(req, 500, NULL);
                return;
        }
        admin_respond(req, 200, ADMIN_CONTENT_JSON, NULL, body);
}

static void admin_on_request(struct http_request *req, void *userdata)
{
        struct admin *a = userdata;
        const char *path = req->path;
        int (*build)(const struct admin *a, struct evbuffer *out);
        const char *content_type;
        _cleanup_(evbuffer_freep) struct evbuffer *body = NULL;
        int r;

        if (statuspage_owns(path)) {
                statuspage_handle(a->page, req, path);
                return;
        }
        if (strcmp(path, "/status") == 0) {
                build = admin_status;
                content_type = ADMIN_CONTENT_JSON;
        } else if (strcmp(path, "/metrics") == 0) {
                build = admin_metrics;
                content_type = ADMIN_CONTENT_METRICS;
        } else if (strncmp(path, ADMIN_BACKENDS_PREFIX, strlen(ADMIN_BACKENDS_PREFIX)) == 0) {
                admin_backend_action(a, req, path);
                return;
        } else if (strncmp(path, "/refresh", strlen("/refresh")) == 0) {
                admin_refresh(a, req, path);
                return;
        } else {
                admin_reply_text(req, 404, NULL);
                return;
        }

        if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
                admin_respond_text(req, 405, "Allow: GET, HEAD\r\n", NULL, NULL);
                return;
        }

        body = evbuffer_new();
        r = body ? build(a, body) : -ENOMEM;
        if (r < 0) {
                log_warning_errno(r, "Admin API: failed to answer %s: %m", path);
                admin_reply_text(req, 500, NULL);
                return;
        }
        /* HEAD: the engine announces the length and sends no body. */
        admin_respond(req, 200, content_type, NULL, body);
}

/* The engine's own refusals (a malformed, oversized or too slow request): logged at debug level only, as
 * the admin API's answers are; the listener is for loopback and trusted tools. */
static void admin_access(const struct http_request *req, unsigned status, size_t body_len, void *userdata)
{
        (void)userdata;
        (void)body_len;
        if (status >= 400)
                log_debug("admin API: %s %s from %s: %u", req->parsed ? req->method_name : "-",
                          req->parsed ? req->path : "-", req->peer, status);
}

static uint64_t admin_body_limit(const struct http_request *req, void *userdata)
{
        (void)req;
        (void)userdata;
        return ADMIN_MAX_BODY_SIZE;
}

int admin_new(struct lbd *lbd, const struct netaddr *addr, struct admin **ret)
{
        static const struct http_server_limits limits = {
                .max_connections = ADMIN_MAX_CONNECTIONS,
                .max_head_size = ADMIN_MAX_HEADERS_SIZE,
                .max_body_size = ADMIN_MAX_BODY_SIZE,
                .head_timeout_usec = ADMIN_TIMEOUT_USEC,
                .body_timeout_usec = ADMIN_TIMEOUT_USEC,
                .idle_timeout_usec = ADMIN_TIMEOUT_USEC,
        };
        static const struct http_server_ops ops = {
                .request = admin_on_request,
                .body_limit = admin_body_limit,
                .access = admin_access,
        };
        struct admin *a;
        int r;

        if (!lbd || !lbd->base || !addr || !ret)
                return -EINVAL;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->lbd = lbd;
        r = statuspage_new(lbd, &a->page);
        if (r >= 0)
                r = http_server_new(lbd->base, &limits, &ops, a, &a->http);
        if (r >= 0) {
                http_server_set_name(a->http, "admin API");
                r = http_server_listen(a->http, addr, "admin API");
        }
        if (r < 0) {
                admin_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

struct admin *admin_free(struct admin *a)
{
        if (!a)
                return NULL;
        a->http = http_server_free(a->http);
        statuspage_free(a->page);
        free(a);
        return NULL;
}
