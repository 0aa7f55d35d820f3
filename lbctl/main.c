/* lbctl: the command line of lbd's admin API, and the provisioning of a pool's EC2 resources.
 *
 *   lbctl [--admin ADDR] [--json] [--timeout SECONDS] [status]
 *   lbctl [--admin ADDR] [--json] [--timeout SECONDS] drain [--wait SECONDS] BACKEND
 *   lbctl [--admin ADDR] [--json] [--timeout SECONDS] enable BACKEND
 *   lbctl provision --subnet SUBNET [OPTIONS]      (provision.c; `lbctl provision --help`)
 *
 * `status` fetches GET /status from the admin listener (libcurl, one blocking request: this is a command
 * line tool, not the daemon) and prints one table row per backend and per instance that is not a backend
 * (pending, stopped, being terminated), with a summary line of the control plane above; --json prints the
 * document as lbd sent it, for scripts. The answer is read into a buffer of at most LBCTL_BODY_MAX bytes and
 * every printed field is cut to LBCTL_FIELD_MAX. `drain` and `enable` POST /backends/NAME/drain or /enable
 * (NAME: an address or an instance id) to take a backend out of rotation for maintenance or put it back;
 * `drain --wait` then polls /status until no request is in flight to it.
 *
 * Exit status: 0 success, 1 the admin API answered with an error or something unreadable, 2 bad usage,
 * 4 the admin API could not be reached. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cjson.h"
#include "common/macro.h"
#include "common/netaddr.h"
#include "common/parse.h"
#include "lbctl/provision.h"
#include "lbd-version.h"

#define LBCTL_EXIT_HTTP       1
#define LBCTL_EXIT_USAGE      2
#define LBCTL_EXIT_CONNECT    4
#define LBCTL_DEFAULT_ADMIN   "127.0.0.1:9180"
#define LBCTL_BODY_MAX        (8u * 1024u * 1024u)
#define LBCTL_FIELD_MAX       64
#define LBCTL_COLUMNS         9 /* the last, LAUNCH, only when a backend has a launch hash */
#define LBCTL_DEFAULT_TIMEOUT 5

struct lbctl_buffer {
        char *data;
        size_t len;
        bool too_big;
};

static const char *const lbctl_headers[LBCTL_COLUMNS] = {
        "INSTANCE", "ADDRESS", "STATE", "HEALTH", "IN ROTATION", "REQUESTS", "ERRORS", "AGE", "LAUNCH",
};

struct lbctl_row {
        char cell[LBCTL_COLUMNS][LBCTL_FIELD_MAX];
        char zone[LBCTL_FIELD_MAX]; /* its subnet, "" when not known: rows are grouped by it */
};

struct lbctl_table {
        struct lbctl_row *rows;
        size_t n;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(CURL *, curl_easy_cleanup)

static void lbctl_help(void)
{
        printf("Usage: lbctl [OPTIONS] [status]\n"
               "       lbctl [OPTIONS] drain [--wait SECONDS] BACKEND\n"
               "       lbctl [OPTIONS] enable BACKEND\n"
               "       lbctl [OPTIONS] refresh [--min-healthy PCT] [--warmup SECONDS] | --cancel\n"
               "       lbctl provision --subnet SUBNET [OPTIONS]\n"
               "\n"
               "status (the default): what lbd's admin API reports, one row per backend and per instance\n"
               "that isn't one, under a summary of the control plane.\n"
               "\n"
               "  -a, --admin ADDR       the admin API (default " LBCTL_DEFAULT_ADMIN ")\n"
               "  -j, --json             print the /status document as it is, for scripts\n"
               "  -t, --timeout SECONDS  give up after this long (default %d)\n"
               "  -h, --help             show this help\n"
               "  -V, --version          show the version\n"
               "\n"
               "Columns: INSTANCE (instance id), ADDRESS, STATE (the instance's: pending, running, ...),\n"
               "HEALTH (up, down, draining; \"down, kept\" while every backend fails and it is among the\n"
               "least bad kept in rotation; \", drained\" while out of rotation for maintenance), IN ROTATION, REQUESTS (sent to it), ERRORS (connect failures,\n"
               "resets and timeouts, plus 5xx responses), AGE (since the instance's launch).\n"
               "\n"
               "drain BACKEND: takes the backend (its address or instance id) out of rotation for\n"
               "maintenance: no new requests, those in flight finish, and the control plane does not replace\n"
               "it while it lasts; with --wait, waits up to SECONDS until none is in flight (exit 1 if some\n"
               "still are). enable BACKEND: puts it back (in rotation once its health checks pass).\n"
               "\n"
               "refresh: replaces the instances launched with other settings than lbd's current ones, in\n"
               "batches that keep at least PCT percent of desired serving (default [pool]\n"
               "refresh_min_healthy), each new instance counted once healthy for SECONDS (default [pool]\n"
               "refresh_warmup); --cancel stops a running refresh where it is. LAUNCH in the status table\n"
               "shows each instance's launch settings hash, \"(old)\" when not the current one.\n"
               "\n"
               "Exit status: 0 ok, 1 the admin API answered with an error, 2 bad usage, 4 it can't be "
               "reached.\n"
               "\n"
               "provision: creates or finds the pool's security groups, image and web host in EC2 and\n"
               "prints lbd's settings for them; see 'lbctl provision --help'.\n",
               LBCTL_DEFAULT_TIMEOUT);
}

static size_t lbctl_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        struct lbctl_buffer *b = userdata;
        size_t n = size * nmemb;
        char *data;

        if (n > LBCTL_BODY_MAX - b->len) {
                b->too_big = true;
                return 0;
        }
        data = realloc(b->data, b->len + n + 1);
        if (!data)
                return 0;
        b->data = data;
        memcpy(b->data + b->len, ptr, n);
        b->len += n;
        b->data[b->len] = '\0';
        return n;
}

/* Sends <method> (GET or POST, without a body) for http://<admin><path> and reads the answer into <b>.
 * Returns 0 on a 200, or an exit status (the error printed; a 404 says <missing> when not NULL). */
static int lbctl_request(const char *admin, long timeout, const char *method, const char *path,
                         const char *missing, struct lbctl_buffer *b)
{
        _cleanup_(curl_easy_cleanupp) CURL *curl = NULL;
        char url[NETADDR_STRLEN + 256], error[CURL_ERROR_SIZE] = "";
        long status = 0;
        CURLcode code;

        if ((size_t)snprintf(url, sizeof(url), "http://%s%s", admin, path) >= sizeof(url)) {
                fprintf(stderr, "lbctl: the backend's name is too long\n");
                return LBCTL_EXIT_USAGE;
        }
        curl = curl_easy_init();
        if (!curl) {
                fprintf(stderr, "lbctl: out of memory\n");
                return LBCTL_EXIT_HTTP;
        }
        if (curl_easy_setopt(curl, CURLOPT_URL, url) != CURLE_OK ||
            curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http") != CURLE_OK ||
            curl_easy_setopt(curl, CURLOPT_NOPROXY, "*") != CURLE_OK ||
            curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error) != CURLE_OK ||
            curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
            curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout) != CURLE_OK ||
            curl_easy_setopt(curl, CURLOPT_USERAGENT, "lbctl/" PACKAGE_VERSION) != CURLE_OK ||
            curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, lbctl_write) != CURLE_OK ||
            curl_easy_setopt(curl, CURLOPT_WRITEDATA, b) != CURLE_OK ||
            (strcmp(method, "POST") == 0 && (curl_easy_setopt(curl, CURLOPT_POST, 1L) != CURLE_OK ||
                                             curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L) != CURLE_OK))) {
                fprintf(stderr, "lbctl: failed to set up the request\n");
                return LBCTL_EXIT_HTTP;
        }

        code = curl_easy_perform(curl);
        if (code != CURLE_OK) {
                if (b->too_big) {
                        fprintf(stderr, "lbctl: %s: the answer is larger than %u bytes\n", url,
                                LBCTL_BODY_MAX);
                        return LBCTL_EXIT_HTTP;
                }
                fprintf(stderr, "lbctl: can't reach the admin API at %s: %s\n", admin,
                        error[0] ? error : curl_easy_strerror(code));
                return code == CURLE_COULDNT_CONNECT || code == CURLE_OPERATION_TIMEDOUT ||
                                       code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_RECV_ERROR ||
                                       code == CURLE_SEND_ERROR || code == CURLE_GOT_NOTHING
                               ? LBCTL_EXIT_CONNECT
                               : LBCTL_EXIT_HTTP;
        }
        (void)curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (status == 404 && missing) {
                fprintf(stderr, "lbctl: %s\n", missing);
                return LBCTL_EXIT_HTTP;
        }
        if (status != 200) {
                fprintf(stderr, "lbctl: %s answered HTTP %ld%s%.200s\n", url, status, b->len ? ": " : "",
                        b->data ? b->data : "");
                return LBCTL_EXIT_HTTP;
        }
        if (!b->data) {
                fprintf(stderr, "lbctl: %s answered an empty document\n", url);
                return LBCTL_EXIT_HTTP;
        }
        return 0;
}

static int lbctl_fetch(const char *admin, long timeout, struct lbctl_buffer *b)
{
        return lbctl_request(admin, timeout, "GET", "/status", NULL, b);
}

/* ---- reading the document ---- */

static const char *lbctl_string(const cJSON *o, const char *name)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

        return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

static bool lbctl_number(const cJSON *o, const char *name, double *ret)
{
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
                return false;
        *ret = v->valuedouble;
        return true;
}

static bool lbctl_bool(const cJSON *o, const char *name)
{
        return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, name));
}

/* Copies <s> into a cell, printable ASCII only, cut to the cell's size. */
static void lbctl_cell(char *cell, const char *s)
{
        size_t n = 0;

        if (!s || !*s)
                s = "-";
        for (; *s && n < LBCTL_FIELD_MAX - 1; s++)
                cell[n++] = (unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f ? *s : '?';
        cell[n] = '\0';
}

static void lbctl_cell_count(char *cell, const cJSON *o, const char *name)
{
        double v;

        if (lbctl_number(o, name, &v) && v >= 0 && v < 1e18)
                (void)snprintf(cell, LBCTL_FIELD_MAX, "%" PRIu64, (uint64_t)v);
        else
                lbctl_cell(cell, NULL);
}

/* "42s", "17m", "5h", "3d" from seconds in <o>'s <name>, "-" when null. */
static void lbctl_cell_age(char *cell, const cJSON *o, const char *name)
{
        double v;
        uint64_t s;

        if (!lbctl_number(o, name, &v) || v < 0 || v > 1e12) {
                lbctl_cell(cell, NULL);
                return;
        }
        s = (uint64_t)v;
        if (s < 120)
                (void)snprintf(cell, LBCTL_FIELD_MAX, "%" PRIu64 "s", s);
        else if (s < 2 * 3600)
                (void)snprintf(cell, LBCTL_FIELD_MAX, "%" PRIu64 "m", s / 60);
        else if (s < 2 * 86400)
                (void)snprintf(cell, LBCTL_FIELD_MAX, "%" PRIu64 "h", s / 3600);
        else
                (void)snprintf(cell, LBCTL_FIELD_MAX, "%" PRIu64 "d", s / 86400);
}

static struct lbctl_row *lbctl_add_row(struct lbctl_table *t)
{
        struct lbctl_row *rows = realloc(t->rows, (t->n + 1) * sizeof(*rows));

        if (!rows)
                return NULL;
        t->rows = rows;
        memset(&rows[t->n], 0, sizeof(rows[0]));
        return &rows[t->n++];
}

/* The LAUNCH cell: the launch hash, marked "old" when it is not <target>'s (the one lbd launches with now) */
static void lbctl_cell_launch(struct lbctl_row *row, const cJSON *o, const char *target)
{
        const char *hash = lbctl_string(o, "launch_hash");
        char cell[LBCTL_FIELD_MAX];

        if (hash && target && strcmp(hash, target) != 0) {
                (void)snprintf(cell, sizeof(cell), "%.40s (old)", hash);
                lbctl_cell(row->cell[8], cell);
        } else if (!hash && target)
                lbctl_cell(row->cell[8], "none (old)");
        else
                lbctl_cell(row->cell[8], hash);
        lbctl_cell(row->zone, lbctl_string(o, "subnet"));
        if (strcmp(row->zone, "-") == 0)
                row->zone[0] = '\0';
}

static int lbctl_backend_row(struct lbctl_table *t, const cJSON *b, const char *target)
{
        const cJSON *responses = cJSON_GetObjectItemCaseSensitive(b, "responses");
        struct lbctl_row *row = lbctl_add_row(t);
        const char *health = lbctl_string(b, "state");
        double failures = 0, errors5xx = 0;

        if (!row)
                return -ENOMEM;
        lbctl_cell(row->cell[0], lbctl_string(b, "instance_id"));
        lbctl_cell(row->cell[1], lbctl_string(b, "address"));
        lbctl_cell(row->cell[2], lbctl_string(b, "instance_state"));
        if (health && strcmp(health, "down") == 0 && lbctl_bool(b, "forced"))
                health = "down, kept";
        if (health && lbctl_bool(b, "maintenance")) {
                char drained[LBCTL_FIELD_MAX];

                (void)snprintf(drained, sizeof(drained), "%s, drained", health);
                lbctl_cell(row->cell[3], drained);
        } else
                lbctl_cell(row->cell[3], health);
        lbctl_cell(row->cell[4], lbctl_bool(b, "in_rotation") ? "yes" : "no");
        lbctl_cell_count(row->cell[5], b, "requests");
        (void)lbctl_number(b, "failures", &failures);
        (void)lbctl_number(responses, "5xx", &errors5xx);
        if (failures + errors5xx >= 0 && failures + errors5xx < 1e18)
                (void)snprintf(row->cell[6], LBCTL_FIELD_MAX, "%" PRIu64, (uint64_t)(failures + errors5xx));
        lbctl_cell_age(row->cell[7], b, "age_s");
        lbctl_cell_launch(row, b, target);
        return 0;
}

static bool lbctl_is_backend(const cJSON *backends, const char *id)
{
        const cJSON *b;

        cJSON_ArrayForEach(b, backends)
        {
                const char *bid = lbctl_string(b, "instance_id");

                if (bid && strcmp(bid, id) == 0)
                        return true;
        }
        return false;
}

static int lbctl_instance_row(struct lbctl_table *t, const cJSON *inst, const char *target)
{
        struct lbctl_row *row = lbctl_add_row(t);
        char state[LBCTL_FIELD_MAX];
        const char *s = lbctl_string(inst, "state");

        if (!row)
                return -ENOMEM;
        (void)snprintf(state, sizeof(state), "%s%s%s", s ? s : "-",
                       lbctl_bool(inst, "terminating") ? ", terminating" : "",
                       lbctl_bool(inst, "outside_networks") ? ", outside networks" : "");
        lbctl_cell(row->cell[0], lbctl_string(inst, "id"));
        lbctl_cell(row->cell[1], lbctl_string(inst, "address"));
        lbctl_cell(row->cell[2], state);
        lbctl_cell(row->cell[3], NULL);
        lbctl_cell(row->cell[4], "no");
        lbctl_cell(row->cell[5], NULL);
        lbctl_cell(row->cell[6], NULL);
        lbctl_cell_age(row->cell[7], inst, "age_s");
        lbctl_cell_launch(row, inst, target);
        return 0;
}

/* "API failing for 40 s, retrying (3 attempts failed): Failed to connect to … (Connection refused)" */
static void lbctl_print_api_failing(const cJSON *api)
{
        const char *error = lbctl_string(api, "error");
        double seconds = 0, failed = 0;

        if (!cJSON_IsObject(api))
                return;
        (void)lbctl_number(api, "for_s", &seconds);
        (void)lbctl_number(api, "failed_attempts", &failed);
        printf("API failing for %.0f s, retrying (%.0f attempt%s failed)%s%.300s\n", seconds, failed,
               failed == 1 ? "" : "s", error && *error ? ": " : "", error ? error : "");
}

/* "instance refresh running: 2 with other settings (2 serving), 2 new (1 counted), 1 replaced;
 * min healthy 100%, warmup 30 s", or how the last one ended. Nothing when none ever ran. */
static void lbctl_print_refresh(const cJSON *refresh)
{
        const char *state = lbctl_string(refresh, "state"), *reason = lbctl_string(refresh, "reason");
        double old = 0, old_serving = 0, fresh = 0, counted = 0, replaced = 0, min_healthy = 0, warmup = 0;

        if (!state || strcmp(state, "none") == 0)
                return;
        if (strcmp(state, "running") != 0) {
                printf("instance refresh %.40s%s%.300s\n", state, reason ? ": " : "", reason ? reason : "");
                return;
        }
        (void)lbctl_number(refresh, "old", &old);
        (void)lbctl_number(refresh, "old_serving", &old_serving);
        (void)lbctl_number(refresh, "new", &fresh);
        (void)lbctl_number(refresh, "new_counted", &counted);
        (void)lbctl_number(refresh, "replaced", &replaced);
        (void)lbctl_number(refresh, "min_healthy", &min_healthy);
        (void)lbctl_number(refresh, "warmup_s", &warmup);
        printf("instance refresh running: %.0f with other settings (%.0f serving), %.0f new (%.0f counted), "
               "%.0f replaced; min healthy %.0f%%, warmup %.0f s\n",
               old, old_serving, fresh, counted, replaced, min_healthy, warmup);
}

/* "scaling on demand between 1 and 3 (targets: 20 req/s, 0 in flight per backend): 84.3 req/s, 0.2 in
 * flight; last: 1 -> 3 (out): ..." Nothing when it is off. */
static void lbctl_print_autoscale(const cJSON *a)
{
        double min = 0, max = 0, rps = 0, inflight = 0, target_rps = 0, target_inflight = 0, target_p90 = 0,
               slow = 0;
        const char *last = lbctl_string(a, "last_decision");

        if (!cJSON_IsObject(a))
                return;
        (void)lbctl_number(a, "min", &min);
        (void)lbctl_number(a, "max", &max);
        (void)lbctl_number(a, "target_rps", &target_rps);
        (void)lbctl_number(a, "target_inflight", &target_inflight);
        (void)lbctl_number(a, "rps", &rps);
        (void)lbctl_number(a, "inflight", &inflight);
        (void)lbctl_number(a, "target_p90_ms", &target_p90);
        printf("scaling on demand between %.0f and %.0f (targets per backend: %.0f req/s, %.0f in flight; 0: "
               "none): %.1f req/s, %.1f in flight",
               min, max, target_rps, target_inflight, rps, inflight);
        if (target_p90 > 0 && lbctl_number(a, "slow_share", &slow))
                printf("; p90 target %.0f ms, %.0f %% of requests slower", target_p90, slow * 100);
        else if (target_p90 > 0)
                printf("; p90 target %.0f ms", target_p90);
        printf("%s%s%.300s\n", lbctl_bool(a, "data_ok") ? "" : " (gathering data)", last ? "; last: " : "",
               last ? last : "");
}

/* One of an action's settings: " min 2", or nothing when it leaves it as it was. */
static void lbctl_print_setting(const cJSON *o, const char *name)
{
        double v;

        if (lbctl_number(o, name, &v))
                printf(" %s %.0f", name, v);
}

/* "schedule: 'busy' in force (matched 2026-12-07 08:00 UTC): min 2 max 3; next 'night' at 2026-12-07 20:00
 * UTC". Nothing without a schedule. */
static void lbctl_print_schedule(const cJSON *sched)
{
        const cJSON *cur = cJSON_GetObjectItemCaseSensitive(sched, "in_force");
        const char *name = lbctl_string(cur, "name"), *next = lbctl_string(sched, "next");
        double at = 0, next_at = 0;
        char when[32] = "?", next_when[32] = "?";
        struct tm tm;
        time_t t;

        if (!cJSON_IsObject(sched))
                return;
        /* Seconds since the epoch within what a time_t holds on any host (years 1970-5138). */
        if (lbctl_number(cur, "matched_unix", &at) && at >= 0 && at < 1e11 && (t = (time_t)at, gmtime_r(&t, &tm)))
                (void)strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", &tm);
        if (lbctl_number(sched, "next_unix", &next_at) && next_at >= 0 && next_at < 1e11 &&
            (t = (time_t)next_at, gmtime_r(&t, &tm)))
                (void)strftime(next_when, sizeof(next_when), "%Y-%m-%d %H:%M UTC", &tm);
        if (name) {
                printf("schedule: '%.32s' in force (matched %s):", name, when);
                lbctl_print_setting(cur, "min");
                lbctl_print_setting(cur, "max");
                lbctl_print_setting(cur, "desired");
        } else
                printf("schedule: no action matched in the last 8 days");
        if (next)
                printf("; next '%.32s' at %s\n", next, next_when);
        else
                printf("; none due in the next 8 days\n");
}

/* What each of [lease] peers said itself: "other host 192.0.2.7:9181 (lb-b): not leading, epoch 4, lease
 * store up, answered 0.4 s ago", or "other host 192.0.2.7:9181: no answer for 3 s: <why>". */
static void lbctl_print_lease_hosts(const cJSON *hosts)
{
        const cJSON *h;

        cJSON_ArrayForEach(h, hosts) {
                const char *addr = lbctl_string(h, "address"), *name = lbctl_string(h, "name"),
                           *error = lbctl_string(h, "error");
                double epoch = 0, ago = 0, down = 0;

                if (lbctl_bool(h, "up")) {
                        (void)lbctl_number(h, "epoch", &epoch);
                        (void)lbctl_number(h, "answered_s", &ago);
                        printf("other host %.64s (%.64s): %s, epoch %.0f, lease store %s, answered %.1f s ago\n",
                               addr ? addr : "?", name ? name : "?", lbctl_bool(h, "leader") ? "leading" : "not leading",
                               epoch, lbctl_bool(h, "store_up") ? "up" : "DOWN", ago);
                } else {
                        (void)lbctl_number(h, "down_s", &down);
                        printf("other host %.64s: no answer for %.0f s: %.200s\n", addr ? addr : "?", down,
                               error ? error : "not asked yet");
                }
        }
}

/* "leader: lb-a (this host), epoch 4, lease expires in 11.2 s; store up" and one line per other host:
 * "other host lb-b: seen 0.8 s ago". Nothing without a lease. */
static void lbctl_print_lease(const cJSON *lease)
{
        const char *name = lbctl_string(lease, "name"), *holder = lbctl_string(lease, "holder"),
                   *error = lbctl_string(lease, "last_error");
        const cJSON *peers = cJSON_GetObjectItemCaseSensitive(lease, "peers"), *p;
        double epoch = 0, expires = 0, down = 0, seen = 0;
        bool leader = lbctl_bool(lease, "leader");

        if (!cJSON_IsObject(lease))
                return;
        (void)lbctl_number(lease, "epoch", &epoch);
        printf("leader: %.64s%s, epoch %.0f", holder ? holder : "unknown",
               leader ? " (this host)" : name && holder && strcmp(name, holder) == 0 ? " (this host, not acting)" : "",
               epoch);
        if (lbctl_number(lease, "expires_in_s", &expires))
                printf(", lease expires in %.1f s", expires);
        if (lbctl_bool(lease, "store_up"))
                printf("; lease store up\n");
        else {
                (void)lbctl_number(lease, "store_down_s", &down);
                printf("; lease store DOWN for %.0f s: nobody acts on the pool%s%.200s\n", down, error ? ": " : "",
                       error ? error : "");
        }
        cJSON_ArrayForEach(p, peers) {
                const char *peer = lbctl_string(p, "name");

                (void)lbctl_number(p, "seen_s", &seen);
                printf("other host %.64s: seen %.1f s ago%s\n", peer ? peer : "?", seen,
                       lbctl_bool(p, "leader") ? " (leader)" : "");
        }
        lbctl_print_lease_hosts(cJSON_GetObjectItemCaseSensitive(lease, "hosts"));
}

static void lbctl_print_summary(const cJSON *root)
{
        const cJSON *control = cJSON_GetObjectItemCaseSensitive(root, "control");
        double healthy = 0, total = 0, desired = 0, age = 0;
        const char *provider = lbctl_string(control, "provider"),
                   *error = lbctl_string(control, "last_error"), *failing_error;
        const cJSON *api;

        (void)lbctl_number(root, "healthy", &healthy);
        (void)lbctl_number(root, "total", &total);
        if (!cJSON_IsObject(control)) {
                printf("%.0f/%.0f backends healthy\n", healthy, total);
                return;
        }
        printf("provider %s", provider ? provider : "?");
        if (lbctl_bool(control, "managed") && lbctl_number(control, "desired", &desired))
                printf(", desired %.0f", desired);
        printf(", %.0f/%.0f backends healthy", healthy, total);
        if (lbctl_number(control, "list_age_s", &age))
                printf(", listed %.0fs ago%s", age,
                       lbctl_bool(control, "list_ok") ? "" : " (the last list failed)");
        printf("\n");
        api = cJSON_GetObjectItemCaseSensitive(control, "api_failing");
        lbctl_print_api_failing(api);
        failing_error = lbctl_string(api, "error");
        if (error && !(failing_error && strcmp(failing_error, error) == 0))
                printf("last provider error: %.300s\n", error);
        if (lbctl_bool(control, "all_failing"))
                printf("every backend is failing: nothing is terminated, the least bad are kept in "
                       "rotation\n");
        if (lbctl_bool(control, "storm_guard"))
                printf("the replacement storm guard is holding back replacements\n");
        lbctl_print_refresh(cJSON_GetObjectItemCaseSensitive(control, "refresh"));
        lbctl_print_autoscale(cJSON_GetObjectItemCaseSensitive(control, "autoscale"));
        lbctl_print_schedule(cJSON_GetObjectItemCaseSensitive(control, "schedule"));
        lbctl_print_lease(cJSON_GetObjectItemCaseSensitive(root, "lease"));
}

/* Orders the rows by zone, keeping the order within each zone (an insertion sort: tables are short). */
static void lbctl_sort_zones(struct lbctl_table *t)
{
        for (size_t i = 1; i < t->n; i++) {
                struct lbctl_row row = t->rows[i];
                size_t j = i;

                while (j > 0 && strcmp(t->rows[j - 1].zone, row.zone) > 0) {
                        t->rows[j] = t->rows[j - 1];
                        j--;
                }
                t->rows[j] = row;
        }
}

/* Prints the table; with zones known (ec2 subnets), grouped by zone under a line naming it and counting
 * its rows. The LAUNCH column shows only when some row has a launch hash. */
static void lbctl_print_table(struct lbctl_table *t)
{
        size_t width[LBCTL_COLUMNS], columns = LBCTL_COLUMNS - 1;
        bool zones = false;

        for (size_t i = 0; i < t->n; i++) {
                if (strcmp(t->rows[i].cell[8], "-") != 0)
                        columns = LBCTL_COLUMNS;
                if (t->rows[i].zone[0])
                        zones = true;
        }
        if (zones)
                lbctl_sort_zones(t);
        for (size_t c = 0; c < columns; c++) {
                width[c] = strlen(lbctl_headers[c]);
                for (size_t i = 0; i < t->n; i++)
                        width[c] = MAX(width[c], strlen(t->rows[i].cell[c]));
        }
        for (size_t c = 0; c < columns; c++)
                printf("%-*s%s", (int)width[c], lbctl_headers[c], c + 1 < columns ? "  " : "\n");
        for (size_t i = 0; i < t->n; i++) {
                if (zones && (i == 0 || strcmp(t->rows[i].zone, t->rows[i - 1].zone) != 0)) {
                        size_t n = 0;

                        while (i + n < t->n && strcmp(t->rows[i + n].zone, t->rows[i].zone) == 0)
                                n++;
                        printf("zone %s: %zu instance%s\n", t->rows[i].zone[0] ? t->rows[i].zone : "unknown",
                               n, n == 1 ? "" : "s");
                }
                for (size_t c = 0; c < columns; c++) {
                        /* Numbers are right-aligned. */
                        bool right = c == 5 || c == 6 || c == 7;

                        printf(right ? "%*s%s" : "%-*s%s", (int)width[c], t->rows[i].cell[c],
                               c + 1 < columns ? "  " : "\n");
                }
        }
}

/* The TLS certificates lbd serves, one line each, with the days left before each expires. */
static void lbctl_print_certificates(const cJSON *root)
{
        const cJSON *tls = cJSON_GetObjectItemCaseSensitive(root, "tls");
        const cJSON *certs = cJSON_GetObjectItemCaseSensitive(tls, "certificates"), *item;
        double failed = 0;

        if (!cJSON_IsArray(certs))
                return;
        printf("\nTLS certificates:\n");
        cJSON_ArrayForEach(item, certs)
        {
                const char *name = lbctl_string(item, "name"), *key = lbctl_string(item, "key"),
                           *file = lbctl_string(item, "file");
                double days = 0, not_after = 0;
                char date[32] = "?";

                (void)lbctl_number(item, "days_left", &days);
                if (lbctl_number(item, "not_after", &not_after)) {
                        time_t when = (time_t)not_after;
                        struct tm tm;

                        if (gmtime_r(&when, &tm))
                                (void)strftime(date, sizeof(date), "%Y-%m-%d", &tm);
                }
                printf("  %-30.253s %-7.16s expires %s (%s%.0f days%s)  %.300s%s\n", name ? name : "?",
                       key ? key : "?", date, days < 0 ? "expired " : "", days < 0 ? -days : days,
                       days < 0 ? " ago" : "", file ? file : "?", lbctl_bool(item, "default") ? "  (default)" : "");
        }
        if (lbctl_number(tls, "reloads_failed", &failed) && failed > 0)
                printf("  %.0f certificate reload%s refused (see lbd's log)\n", failed, failed == 1 ? "" : "s");
}

static int lbctl_status(const char *body)
{
        _cleanup_(cJSON_Deletep) cJSON *root = cJSON_Parse(body);
        struct lbctl_table t = {0};
        const cJSON *backends, *control, *instances, *item;
        const char *target;
        int r = 0;

        if (!cJSON_IsObject(root)) {
                fprintf(stderr, "lbctl: /status is not a JSON object\n");
                return LBCTL_EXIT_HTTP;
        }
        backends = cJSON_GetObjectItemCaseSensitive(root, "backends");
        control = cJSON_GetObjectItemCaseSensitive(root, "control");
        instances = cJSON_GetObjectItemCaseSensitive(control, "instances");
        target = lbctl_string(control, "launch_hash");

        cJSON_ArrayForEach(item, backends)
        {
                if (lbctl_backend_row(&t, item, target) < 0)
                        r = -ENOMEM;
        }
        cJSON_ArrayForEach(item, instances)
        {
                const char *id = lbctl_string(item, "id"), *state = lbctl_string(item, "state");

                if (!id || (lbctl_is_backend(backends, id) && !lbctl_bool(item, "terminating")))
                        continue;
                /* Static pools list their backends as instances: shown once, as backends. */
                if (!lbctl_bool(control, "managed"))
                        continue;
                /* Long gone: not worth a row. */
                if (state && strcmp(state, "terminated") == 0)
                        continue;
                if (lbctl_instance_row(&t, item, target) < 0)
                        r = -ENOMEM;
        }
        if (r < 0) {
                free(t.rows);
                fprintf(stderr, "lbctl: out of memory\n");
                return LBCTL_EXIT_HTTP;
        }

        lbctl_print_summary(root);
        lbctl_print_table(&t);
        lbctl_print_certificates(root);
        free(t.rows);
        return 0;
}

/* ---- drain and enable ---- */

#define LBCTL_NAME_MAX    128
#define LBCTL_POLL_USEC   (200 * USEC_PER_MSEC)

/* Writes the admin API's path for <action> on backend <name>; the brackets of an IPv6 address are
 * percent-encoded, anything but an address's or an instance id's characters refused. Returns 0 or
 * -EINVAL. */
static int lbctl_action_path(const char *name, const char *action, char *path, size_t size)
{
        char enc[3 * LBCTL_NAME_MAX + 1];
        size_t n = 0;

        if (!*name || strlen(name) > LBCTL_NAME_MAX)
                return -EINVAL;
        for (const char *c = name; *c; c++) {
                if (*c == '[' || *c == ']') {
                        enc[n++] = '%';
                        enc[n++] = '5';
                        enc[n++] = *c == '[' ? 'B' : 'D';
                } else if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                           *c == '.' || *c == ':' || *c == '-' || *c == '_')
                        enc[n++] = *c;
                else
                        return -EINVAL;
        }
        enc[n] = '\0';
        return (size_t)snprintf(path, size, "/backends/%s/%s", enc, action) < size ? 0 : -EINVAL;
}

/* Reads from /status the requests in flight to the backend at <address> into *<ret_n>, or -1 when it is
 * not in the pool. Returns 0, or an exit status (the error printed). */
static int lbctl_in_flight(const char *admin, long timeout, const char *address, int *ret_n)
{
        _cleanup_(cJSON_Deletep) cJSON *root = NULL;
        struct lbctl_buffer body = {0};
        const cJSON *item;
        int r;

        r = lbctl_fetch(admin, timeout, &body);
        if (r == 0)
                root = cJSON_Parse(body.data);
        free(body.data);
        if (r != 0)
                return r;
        *ret_n = -1;
        cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(root, "backends"))
        {
                const char *a = lbctl_string(item, "address");
                double active;

                if (a && strcmp(a, address) == 0 && lbctl_number(item, "active", &active) && active >= 0 &&
                    active < 1e9)
                        *ret_n = (int)active;
        }
        return 0;
}

/* POSTs to <path> and reads the answer, a JSON object with the string <key> (printed as it is with
 * <json>), into <ret>. Returns an exit status. */
static int lbctl_post_json(const char *admin, long timeout, const char *path, const char *missing,
                           const char *key, bool json, cJSON **ret)
{
        struct lbctl_buffer body = {0};
        cJSON *answer;
        int r;

        r = lbctl_request(admin, timeout, "POST", path, missing, &body);
        if (r != 0) {
                free(body.data);
                return r;
        }
        answer = cJSON_Parse(body.data);
        if (!answer || !lbctl_string(answer, key)) {
                fprintf(stderr, "lbctl: unreadable answer from the admin API: %.200s\n", body.data);
                cJSON_Delete(answer);
                free(body.data);
                return LBCTL_EXIT_HTTP;
        }
        if (json)
                printf("%s", body.data);
        free(body.data);
        *ret = answer;
        return 0;
}

/* lbctl refresh: POST /refresh with the settings given (<min_healthy> or <warmup> NULL: lbd's own), or
 * POST /refresh/cancel; prints the refresh's state. Returns an exit status. */
static int lbctl_refresh(const char *admin, long timeout, const char *min_healthy, const char *warmup,
                         bool cancel, bool json)
{
        _cleanup_(cJSON_Deletep) cJSON *answer = NULL;
        char path[128];
        const char *state, *reason;
        int r;

        /* Both values are checked numbers: nothing to encode. */
        if (cancel)
                (void)snprintf(path, sizeof(path), "/refresh/cancel");
        else
                (void)snprintf(path, sizeof(path), "/refresh?min_healthy=%.8s&warmup=%.8s",
                               min_healthy ? min_healthy : "", warmup ? warmup : "");
        r = lbctl_post_json(admin, timeout, path, "this lbd has no instance refresh", "state", json, &answer);
        if (r != 0 || json)
                return r;
        state = lbctl_string(answer, "state");
        reason = lbctl_string(answer, "reason");
        printf("instance refresh %.40s%s%.300s\n", state, reason ? ": " : "", reason ? reason : "");
        return 0;
}

/* lbctl drain|enable NAME: the POST, its answer, and for a drain with <wait_s> > 0 the wait for the
 * requests in flight. Returns an exit status. */
static int lbctl_maintenance(const char *admin, long timeout, bool drain, const char *name, uint64_t wait_s,
                             bool json)
{
        _cleanup_(cJSON_Deletep) cJSON *answer = NULL;
        char path[3 * LBCTL_NAME_MAX + 64], missing[LBCTL_NAME_MAX + 64], address[LBCTL_FIELD_MAX];
        const char *state;
        double active = 0;
        uint64_t deadline;
        int r;

        if (lbctl_action_path(name, drain ? "drain" : "enable", path, sizeof(path)) < 0) {
                fprintf(stderr, "lbctl: '%.*s' is not a backend's address or instance id\n", LBCTL_NAME_MAX, name);
                return LBCTL_EXIT_USAGE;
        }
        (void)snprintf(missing, sizeof(missing), "no backend '%s' (see lbctl status)", name);
        r = lbctl_post_json(admin, timeout, path, missing, "backend", json, &answer);
        if (r != 0)
                return r;
        lbctl_cell(address, lbctl_string(answer, "backend"));
        state = lbctl_string(answer, "state");
        (void)lbctl_number(answer, "active", &active);
        if (!json) {
                if (drain)
                        printf("%s: out of rotation for maintenance, %.0f request(s) in flight\n", address, active);
                else if (lbctl_bool(answer, "in_rotation"))
                        printf("%s: back in rotation\n", address);
                else
                        printf("%s: back from maintenance; in rotation once its health checks pass (now %s)\n",
                               address, state ? state : "unknown");
        }
        if (!drain || wait_s == 0)
                return 0;

        deadline = now_usec() + wait_s * USEC_PER_SEC;
        for (;;) {
                int n;

                r = lbctl_in_flight(admin, timeout, address, &n);
                if (r != 0)
                        return r;
                if (n < 0) {
                        fprintf(stderr, "lbctl: %s left the pool while draining\n", address);
                        return LBCTL_EXIT_HTTP;
                }
                if (n == 0) {
                        if (!json)
                                printf("%s: drained, no request in flight\n", address);
                        return 0;
                }
                if (now_usec() >= deadline) {
                        fprintf(stderr, "lbctl: %s: still %d request(s) in flight after %" PRIu64 " s\n", address,
                                n, wait_s);
                        return LBCTL_EXIT_HTTP;
                }
                (void)usleep(LBCTL_POLL_USEC);
        }
}

/* Reads optarg as the number of option --<name>, <lo>..<hi> <unit>; says what was expected when it isn't.
 * Returns true on success. */
static bool lbctl_option_number(const char *name, uint64_t lo, uint64_t hi, const char *unit, uint64_t *ret)
{
        if (parse_uint(optarg, lo, hi, ret) >= 0)
                return true;
        fprintf(stderr, "lbctl: --%s '%s': expected %" PRIu64 "..%" PRIu64 " %s\n", name, optarg, lo, hi, unit);
        return false;
}

int main(int argc, char **argv)
{
        static const struct option options[] = {
                {"admin", required_argument, NULL, 'a'},   {"json", no_argument, NULL, 'j'},
                {"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},       {"wait", required_argument, NULL, 'w'},
                {"min-healthy", required_argument, NULL, 'm'}, {"warmup", required_argument, NULL, 'W'},
                {"cancel", no_argument, NULL, 'c'},        {NULL, 0, NULL, 0},
        };
        const char *min_healthy = NULL, *warmup = NULL;
        bool cancel = false;
        uint64_t number;
        const char *command = "status";
        uint64_t wait_s = 0;
        bool wait_given = false;
        const char *admin = LBCTL_DEFAULT_ADMIN;
        char admin_name[NETADDR_STRLEN];
        struct lbctl_buffer body = {0};
        struct netaddr addr;
        uint64_t timeout = LBCTL_DEFAULT_TIMEOUT;
        bool json = false;
        int r;

        if (argc > 1 && strcmp(argv[1], "provision") == 0)
                return provision_main(argc - 1, argv + 1);
        for (;;) {
                int opt = getopt_long(argc, argv, "a:jt:hVw:", options, NULL); /* long options only for refresh */

                if (opt < 0)
                        break;
                switch (opt) {
                case 'a':
                        admin = optarg;
                        break;
                case 'j':
                        json = true;
                        break;
                case 't':
                        if (!lbctl_option_number("timeout", 1, 3600, "seconds", &timeout))
                                return LBCTL_EXIT_USAGE;
                        break;
                case 'w':
                        if (!lbctl_option_number("wait", 1, 3600, "seconds", &wait_s))
                                return LBCTL_EXIT_USAGE;
                        wait_given = true;
                        break;
                case 'm':
                        if (!lbctl_option_number("min-healthy", 0, 100, "(percent)", &number))
                                return LBCTL_EXIT_USAGE;
                        min_healthy = optarg;
                        break;
                case 'W':
                        if (!lbctl_option_number("warmup", 0, 86400, "seconds", &number))
                                return LBCTL_EXIT_USAGE;
                        warmup = optarg;
                        break;
                case 'c':
                        cancel = true;
                        break;
                case 'h':
                        lbctl_help();
                        return 0;
                case 'V':
                        printf("lbctl %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "Try 'lbctl --help'.\n");
                        return LBCTL_EXIT_USAGE;
                }
        }
        if (optind < argc)
                command = argv[optind++];
        if (strcmp(command, "status") != 0 && strcmp(command, "drain") != 0 && strcmp(command, "enable") != 0 &&
            strcmp(command, "refresh") != 0) {
                fprintf(stderr, "lbctl: unknown command '%s'; try 'lbctl --help'\n", command);
                return LBCTL_EXIT_USAGE;
        }
        if ((min_healthy || warmup || cancel) && strcmp(command, "refresh") != 0) {
                fprintf(stderr, "lbctl: --min-healthy, --warmup and --cancel go with refresh\n");
                return LBCTL_EXIT_USAGE;
        }
        if (cancel && (min_healthy || warmup)) {
                fprintf(stderr, "lbctl: refresh --cancel takes no settings\n");
                return LBCTL_EXIT_USAGE;
        }
        if (strcmp(command, "refresh") == 0) {
                if (optind < argc) {
                        fprintf(stderr, "lbctl: unexpected argument '%s'\n", argv[optind]);
                        return LBCTL_EXIT_USAGE;
                }
        } else if (strcmp(command, "status") != 0 && optind >= argc) {
                fprintf(stderr, "lbctl: %s: which backend? Give its address or instance id\n", command);
                return LBCTL_EXIT_USAGE;
        }
        if (strcmp(command, "refresh") != 0 && optind + (strcmp(command, "status") != 0) < argc) {
                fprintf(stderr, "lbctl: unexpected argument '%s'\n", argv[optind + (strcmp(command, "status") != 0)]);
                return LBCTL_EXIT_USAGE;
        }
        if (wait_given && strcmp(command, "drain") != 0) {
                fprintf(stderr, "lbctl: --wait goes with drain\n");
                return LBCTL_EXIT_USAGE;
        }
        /* Numeric only (never a DNS lookup), and the same forms lbd's admin key takes. */
        if (netaddr_parse(admin, 0, false, &addr) < 0 ||
            netaddr_format(&addr, admin_name, sizeof(admin_name)) < 0) {
                fprintf(stderr,
                        "lbctl: --admin '%s': expected an address with a port, e.g. 127.0.0.1:9180\n",
                        admin);
                return LBCTL_EXIT_USAGE;
        }

        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                fprintf(stderr, "lbctl: failed to initialize libcurl\n");
                return LBCTL_EXIT_HTTP;
        }
        if (strcmp(command, "refresh") == 0) {
                r = lbctl_refresh(admin_name, (long)timeout, min_healthy, warmup, cancel, json);
                curl_global_cleanup();
                if (fflush(stdout) != 0 && r == 0)
                        r = LBCTL_EXIT_HTTP;
                return r;
        }
        if (strcmp(command, "status") != 0) {
                r = lbctl_maintenance(admin_name, (long)timeout, strcmp(command, "drain") == 0, argv[optind], wait_s,
                                      json);
                curl_global_cleanup();
                if (fflush(stdout) != 0 && r == 0)
                        r = LBCTL_EXIT_HTTP;
                return r;
        }
        r = lbctl_fetch(admin_name, (long)timeout, &body);
        if (r == 0) {
                if (json) {
                        fputs(body.data, stdout);
                        if (body.len == 0 || body.data[body.len - 1] != '\n')
                                putchar('\n');
                } else
                        r = lbctl_status(body.data);
        }
        free(body.data);
        curl_global_cleanup();
        if (fflush(stdout) != 0 && r == 0)
                r = LBCTL_EXIT_HTTP;
        return r;
}
