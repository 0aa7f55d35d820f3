/* The live status page (statuspage.h): one view of the daemon's state, rendered two ways from the same
 * rows. page_build() reads the pool, the reconciler's view and the history into a struct page (the pool's
 * summary and one row per backend or instance); page_html() writes the page a browser without JavaScript
 * shows, and page_json() what the script (page.js) redraws the same page from every second. The charts
 * are drawn the same way on both sides: SVG paths over the last HISTORY_SECONDS, scaled to the highest
 * value shown.
 *
 * Ownership: struct statuspage holds only the token; everything else is read from struct lbd for the
 * length of one request and written into the answer's buffer. Nothing is kept between requests, so ten
 * open pages cost ten small JSON documents a second and nothing while nobody looks. */
#include "lbd/statuspage.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/cjson.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/netaddr.h"
#include "http/server.h"
#include "lbd-version.h"
#include "lbd/admin.h"
#include "lbd/backend.h"
#include "lbd/history.h"
#include "lbd/lbd.h"
#include "lbd/reconcile.h"
#include "lbd/statuspage-assets.h"

#define PAGE_FORBIDDEN     403
#define PAGE_QUERY_MAX     16 /* parameters in a query or form */
#define PAGE_ACTION_PREFIX "/page/backends/"
#define PAGE_TOKEN_HEADER  "X-LBD-Token"
#define PAGE_MAX_ROWS      4096 /* rows on one page; the pool is far smaller */
#define PAGE_CHART_W       300
#define PAGE_CHART_H       100

#define PAGE_CSP                                                                                            \
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "     \
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

struct statuspage {
        struct lbd *lbd;
        char token[2 * STATUSPAGE_TOKEN_BYTES + 1];
};

/* ---- the view: what both renderings show ---- */

struct page_row {
        const struct backend *b; /* NULL for an instance that is no backend (launching, terminating) */
        char address[NETADDR_STRLEN];
        const char *instance_id; /* "" when unknown */
        const char *zone;        /* "" when unknown */
        int64_t age_s;           /* -1 when unknown */
        const char *state;       /* the word */
        const char *state_class; /* the colour's class: up, down, pending, drained, forced, gone */
        char checks[BACKEND_CHECKS_KEPT + 1]; /* oldest first: o ok, f fail, t timeout, r refused, e error */
        unsigned active;
        struct history_backend_view figures;
};

struct page {
        uint64_t wall_usec;
        bool managed;
        const char *provider;
        uint64_t desired;
        size_t healthy, total, launching, draining, held;
        bool guard, all_failing;
        bool listed, list_ok;
        uint64_t list_wall_usec;
        const char *error; /* the provider's last error in its words, NULL when none */
        bool failing;      /* and a call is failing now */
        uint64_t failing_usec;
        unsigned failing_attempts;
        struct reconcile_view view;
        struct page_row *rows;
        size_t n_rows;
};

static void page_free(struct page *pg)
{
        free(pg->rows);
}

static char page_check_letter(enum check_result r)
{
        switch (r) {
        case CHECK_OK:
                return 'o';
        case CHECK_FAIL:
                return 'f';
        case CHECK_TIMEOUT:
                return 't';
        case CHECK_REFUSED:
                return 'r';
        case CHECK_ERROR:
                return 'e';
        case CHECK_NONE:
                break;
        }
        return '-';
}

static void page_row_backend(struct page_row *row, const struct backend *b, const struct history *h,
                             uint64_t wall)
{
        uint64_t n = MIN(b->n_checks, (uint64_t)BACKEND_CHECKS_KEPT);
        size_t k = 0;

        row->b = b;
        memcpy(row->address, b->name, sizeof(row->address));
        row->instance_id = b->instance_id;
        row->zone = b->zone;
        row->age_s = b->launched_usec && wall > b->launched_usec
                             ? (int64_t)((wall - b->launched_usec) / USEC_PER_SEC)
                             : -1;
        if (b->state != BACKEND_ACTIVE) {
                row->state = "removing";
                row->state_class = "gone";
        } else if (b->maintenance) {
                row->state = "drained";
                row->state_class = "drained";
        } else if (b->healthy) {
                row->state = "up";
                row->state_class = "up";
        } else if (b->forced) {
                row->state = "down, kept in rotation";
                row->state_class = "forced";
        } else if (!b->checked_once && b->last_check == CHECK_NONE) {
                row->state = "checking";
                row->state_class = "pending";
        } else {
                row->state = "down";
                row->state_class = "down";
        }
        for (uint64_t i = b->n_checks - n; i < b->n_checks; i++)
                row->checks[k++] = page_check_letter((enum check_result)b->checks[i % BACKEND_CHECKS_KEPT]);
        row->checks[k] = '\0';
        row->active = backend_active(b);
        if (h)
                history_backend(h, b, &row->figures);
        else
                row->figures =
                        (struct history_backend_view){.error_rate = -1, .p50_usec = -1, .p99_usec = -1};
}

/* An instance the reconciler knows that has no backend in the pool: launching, terminating, or elsewhere. */
static void page_row_instance(struct page_row *row, const struct reconcile_instance *k, uint64_t wall)
{
        *row = (struct page_row){
                .instance_id = k->inst.id,
                .zone = k->inst.zone,
                .age_s = k->inst.launched_usec && wall > k->inst.launched_usec
                                 ? (int64_t)((wall - k->inst.launched_usec) / USEC_PER_SEC)
                                 : -1,
                .figures = {.error_rate = -1, .p50_usec = -1, .p99_usec = -1},
        };
        if (k->inst.has_addr)
                (void)netaddr_format(&k->inst.addr, row->address, sizeof(row->address));
        if (k->terminating) {
                row->state = "terminating";
                row->state_class = "gone";
        } else if (k->outside) {
                row->state = "outside [pool] networks";
                row->state_class = "down";
        } else if (k->inst.state == INSTANCE_PENDING || k->inst.state == INSTANCE_RUNNING) {
                row->state = "launching";
                row->state_class = "pending";
        } else {
                row->state = provider_instance_state_name(k->inst.state);
                row->state_class = "gone";
        }
}

static bool page_instance_is_backend(const struct pool *pool, const struct reconcile_instance *k)
{
        for (size_t i = 0; pool && i < pool->n_backends; i++)
                if (strcmp(pool->backends[i]->instance_id, k->inst.id) == 0)
                        return true;
        return false;
}

/* Reads the daemon's state into <pg>. Returns 0 or -ENOMEM. */
static int page_build(const struct lbd *lbd, struct page *pg)
{
        const struct pool *pool = lbd->pool;
        size_t n_backends = pool ? pool->n_backends : 0, cap;

        *pg = (struct page){.wall_usec = realtime_usec(), .provider = "static"};
        if (lbd->reconcile) {
                reconcile_get_view(lbd->reconcile, &pg->view);
                pg->provider = pg->view.provider;
                pg->managed = pg->view.managed;
                pg->guard = pg->view.guard;
                pg->held = pg->view.held;
                pg->all_failing = pg->view.panic;
                pg->listed = pg->view.listed;
                pg->list_ok = pg->view.list_ok;
                pg->list_wall_usec = pg->view.list_wall_usec;
                pg->error = pg->view.failing ? pg->view.failing_error : pg->view.last_error_text;
                if (pg->error && pg->error[0] == '\0')
                        pg->error = pg->view.last_error_text;
                pg->failing = pg->view.failing;
                pg->failing_usec = pg->view.failing_usec;
                pg->failing_attempts = pg->view.failing_attempts;
        }
        pg->desired = pg->managed ? pg->view.desired : n_backends;

        cap = MIN(n_backends + pg->view.n_instances, (size_t)PAGE_MAX_ROWS);
        pg->rows = calloc(MAX(cap, (size_t)1), sizeof(*pg->rows));
        if (!pg->rows)
                return -ENOMEM;
        for (size_t i = 0; i < n_backends && pg->n_rows < cap; i++) {
                const struct backend *b = pool->backends[i];

                page_row_backend(&pg->rows[pg->n_rows++], b, lbd->history, pg->wall_usec);
                pg->total++;
                if (b->healthy)
                        pg->healthy++;
                if (b->maintenance)
                        pg->draining++;
                else if (!b->healthy && !b->checked_once && b->last_check == CHECK_NONE)
                        pg->launching++;
        }
        for (size_t i = 0; i < pg->view.n_instances && pg->n_rows < cap; i++) {
                const struct reconcile_instance *k = &pg->view.instances[i];

                if (page_instance_is_backend(pool, k))
                        continue;
                page_row_instance(&pg->rows[pg->n_rows], k, pg->wall_usec);
                if (strcmp(pg->rows[pg->n_rows].state, "launching") == 0)
                        pg->launching++;
                else if (k->terminating)
                        pg->draining++;
                pg->n_rows++;
        }
        return 0;
}

/* ---- output helpers ---- */

static void out_add(struct admin_out *o, const char *s)
{
        if (evbuffer_add(o->out, s, strlen(s)) < 0)
                o->failed = true;
}

/* <s> escaped for HTML text and attribute values. */
static void out_html(struct admin_out *o, const char *s)
{
        for (const char *p = s; *p; p++) {
                const char *esc = NULL;

                switch (*p) {
                case '&':
                        esc = "&amp;";
                        break;
                case '<':
                        esc = "&lt;";
                        break;
                case '>':
                        esc = "&gt;";
                        break;
                case '"':
                        esc = "&quot;";
                        break;
                case '\'':
                        esc = "&#39;";
                        break;
                default:
                        break;
                }
                if (esc)
                        out_add(o, esc);
                else if (evbuffer_add(o->out, p, 1) < 0)
                        o->failed = true;
        }
}

/* "HH:MM:SS" in UTC. */
static const char *page_clock(uint64_t wall_usec, char *buf, size_t size)
{
        time_t t = (time_t)(wall_usec / USEC_PER_SEC);
        struct tm tm;

        if (!gmtime_r(&t, &tm) || strftime(buf, size, "%H:%M:%S", &tm) == 0)
                (void)snprintf(buf, size, "?");
        return buf;
}

/* "4 s", "3 min", "2 h 5 min", "3 d 4 h". */
static const char *page_duration(int64_t s, char *buf, size_t size)
{
        if (s < 0)
                (void)snprintf(buf, size, "\xe2\x80\x94");
        else if (s < 120)
                (void)snprintf(buf, size, "%" PRId64 " s", s);
        else if (s < 7200)
                (void)snprintf(buf, size, "%" PRId64 " min", s / 60);
        else if (s < 172800)
                (void)snprintf(buf, size, "%" PRId64 " h %" PRId64 " min", s / 3600, s % 3600 / 60);
        else
                (void)snprintf(buf, size, "%" PRId64 " d %" PRId64 " h", s / 86400, s % 86400 / 3600);
        return buf;
}

/* A latency in ms, "—" when none. */
static const char *page_ms(int64_t usec, char *buf, size_t size)
{
        if (usec < 0)
                (void)snprintf(buf, size, "\xe2\x80\x94");
        else
                (void)snprintf(buf, size, "%.1f ms", (double)usec / 1000.0);
        return buf;
}

static const char *page_percent(double rate, char *buf, size_t size)
{
        if (rate < 0)
                (void)snprintf(buf, size, "\xe2\x80\x94");
        else
                (void)snprintf(buf, size, "%.1f%%", rate * 100.0);
        return buf;
}

/* ---- charts ---- */

enum page_series {
        PAGE_SERIES_RPS,
        PAGE_SERIES_ERRORS,
        PAGE_SERIES_P99,
        PAGE_SERIES_HEALTHY,
        _PAGE_SERIES_MAX,
};

static const struct {
        const char *id, *title, *unit;
} page_charts[_PAGE_SERIES_MAX] = {
        [PAGE_SERIES_RPS] = {"rps", "Requests per second", "/s"},
        [PAGE_SERIES_ERRORS] = {"errors", "Errors (5xx) per second", "/s"},
        [PAGE_SERIES_P99] = {"p99", "p99 latency", " ms"},
        [PAGE_SERIES_HEALTHY] = {"healthy", "Healthy backends", ""},
};

/* The value of <s> in sample <x>; < 0 when it has none (no request ended in that second). */
static double page_series_value(const struct history_sample *x, enum page_series s)
{
        switch (s) {
        case PAGE_SERIES_RPS:
                return x->requests;
        case PAGE_SERIES_ERRORS:
                return x->errors;
        case PAGE_SERIES_P99:
                return x->p99_usec < 0 ? -1 : (double)x->p99_usec / 1000.0;
        case PAGE_SERIES_HEALTHY:
        case _PAGE_SERIES_MAX:
                break;
        }
        return x->healthy;
}

/* One chart as SVG: a path over the last HISTORY_SECONDS ending at <end_sec>, scaled to the highest value
 * (at least 1); a gap where a second has no value. page.js draws the same. */
static void page_chart(struct admin_out *o, const struct history *h, enum page_series s, uint64_t end_sec)
{
        size_t n = h ? history_n_samples(h) : 0;
        double max = 1, last = -1;
        bool pen = false;

        for (size_t i = 0; i < n; i++) {
                double v = page_series_value(history_sample_at(h, i), s);

                max = v > max ? v : max;
                last = v;
        }
        admin_printf(o, "<figure class=\"chart\" id=\"chart-%s\"><figcaption>%s <span class=\"now\">",
                   page_charts[s].id, page_charts[s].title);
        if (last >= 0)
                admin_printf(o, "%.*f%s", s == PAGE_SERIES_P99 ? 1 : 0, last, page_charts[s].unit);
        else
                out_add(o, "\xe2\x80\x94");
        admin_printf(o,
                   "</span> <span class=\"max\">max %.*f</span></figcaption>"
                   "<svg viewBox=\"0 0 %d %d\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"%s\">"
                   "<path class=\"line\" d=\"",
                   s == PAGE_SERIES_P99 ? 1 : 0, max, PAGE_CHART_W, PAGE_CHART_H, page_charts[s].title);
        for (size_t i = 0; i < n; i++) {
                const struct history_sample *x = history_sample_at(h, i);
                double v = page_series_value(x, s), px, py;

                if (v < 0 || x->wall_sec + HISTORY_SECONDS < end_sec) {
                        pen = false;
                        continue;
                }
                px = (double)(x->wall_sec + HISTORY_SECONDS - end_sec) * PAGE_CHART_W / HISTORY_SECONDS;
                py = PAGE_CHART_H - v / max * (PAGE_CHART_H - 5);
                admin_printf(o, "%s%.1f %.1f", pen ? " L" : (i ? " M" : "M"), px, py);
                pen = true;
        }
        out_add(o, "\"/></svg><div class=\"axis\"><span>15 min ago</span><span>now</span></div></figure>");
}

/* ---- the HTML page ---- */

static void page_html_summary(struct admin_out *o, const struct page *pg)
{
        char when[16], ago[32];

        out_add(o, "<section id=\"summary\"><h2>Pool</h2><dl class=\"stats\">");
        admin_printf(o, "<div><dt>Desired</dt><dd id=\"s-desired\">%" PRIu64 "</dd></div>", pg->desired);
        admin_printf(o, "<div><dt>Healthy</dt><dd id=\"s-healthy\">%zu of %zu</dd></div>", pg->healthy,
                   pg->total);
        admin_printf(o, "<div><dt>Launching</dt><dd id=\"s-launching\">%zu</dd></div>", pg->launching);
        admin_printf(o, "<div><dt>Draining</dt><dd id=\"s-draining\">%zu</dd></div>", pg->draining);
        admin_printf(o,
                   "<div class=\"%s\"><dt>Held back by the storm guard</dt><dd id=\"s-held\">%zu</dd></div>",
                   pg->guard ? "warn" : "", pg->held);
        out_add(o, "</dl><p id=\"s-provider\">");
        admin_printf(o, "Provider <b>%s</b>%s. ", pg->provider, pg->managed ? "" : " (a fixed list)");
        if (!pg->listed)
                out_add(o, "No successful list yet. ");
        else
                admin_printf(o, "Last successful list: %s ago, at %s UTC%s. ",
                           page_duration((int64_t)((pg->wall_usec > pg->list_wall_usec
                                                            ? pg->wall_usec - pg->list_wall_usec
                                                            : 0) /
                                                   USEC_PER_SEC),
                                         ago, sizeof(ago)),
                           page_clock(pg->list_wall_usec, when, sizeof(when)),
                           pg->list_ok ? "" : " (the last one failed)");
        if (pg->failing) {
                admin_printf(o, "<span class=\"bad\">Failing for %s, %u attempts in a row: ",
                           page_duration((int64_t)(pg->failing_usec / USEC_PER_SEC), ago, sizeof(ago)),
                           pg->failing_attempts);
                out_html(o, pg->error ? pg->error : "?");
                out_add(o, "</span>");
        } else if (pg->error) {
                out_add(o, "Last error: ");
                out_html(o, pg->error);
        } else
                out_add(o, "Last error: none.");
        if (pg->all_failing)
                out_add(o, " <span class=\"bad\">Every backend is failing: serving from the least bad, "
                           "terminating "
                           "nothing.</span>");
        out_add(o, "</p></section>");
}

static void page_html_actions(struct admin_out *o, const struct page_row *row)
{
        const char *action = row->b->maintenance ? "enable" : "drain";

        out_add(o, "<form method=\"get\" action=\"/page/confirm\"><input type=\"hidden\" name=\"backend\" "
                   "value=\"");
        out_html(o, row->address);
        admin_printf(o, "\"><button name=\"action\" value=\"%s\" class=\"act\">%s</button></form>", action,
                   row->b->maintenance ? "Enable" : "Drain");
}

static void page_html_row(struct admin_out *o, const struct page_row *row)
{
        char age[32], rps[32], err[16], p50[32], p99[32];

        out_add(o, "<tr data-backend=\"");
        out_html(o, row->address);
        admin_printf(o, "\" data-state=\"%s\"><td class=\"addr\" data-label=\"Address\">", row->state_class);
        out_html(o, row->address[0] ? row->address : "\xe2\x80\x94");
        admin_printf(o,
                   "</td><td data-label=\"State\"><span class=\"state st-%s\">%s</span></td>"
                   "<td data-label=\"Instance\">",
                   row->state_class, row->state);
        out_html(o, row->instance_id[0] ? row->instance_id : "\xe2\x80\x94");
        out_add(o, "</td><td data-label=\"Zone\">");
        out_html(o, row->zone[0] ? row->zone : "\xe2\x80\x94");
        admin_printf(
                o,
                "</td><td data-label=\"Age\">%s</td><td data-label=\"Health checks\"><span class=\"strip\">",
                page_duration(row->age_s, age, sizeof(age)));
        for (const char *c = row->checks; *c; c++)
                admin_printf(o, "<i class=\"ck-%c\">%c</i>", *c, *c == 'o' ? '+' : *c);
        (void)snprintf(rps, sizeof(rps), "%.1f", row->figures.rps);
        admin_printf(o,
                   "</span></td><td class=\"num\" data-label=\"In flight\">%u</td>"
                   "<td class=\"num\" data-label=\"Req/s\">%s</td><td class=\"num\" "
                   "data-label=\"Errors\">%s</td>"
                   "<td class=\"num\" data-label=\"p50\">%s</td><td class=\"num\" data-label=\"p99\">%s</td>"
                   "<td class=\"action\">",
                   row->active, rps, page_percent(row->figures.error_rate, err, sizeof(err)),
                   page_ms(row->figures.p50_usec, p50, sizeof(p50)),
                   page_ms(row->figures.p99_usec, p99, sizeof(p99)));
        if (row->b)
                page_html_actions(o, row);
        out_add(o, "</td></tr>");
}

static void page_html_head(struct admin_out *o, const char *token, const char *title)
{
        out_add(o, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                   "<meta name=\"lbd-token\" content=\"");
        out_add(o, token);
        out_add(o, "\"><title>");
        out_html(o, title);
        out_add(o, "</title><link rel=\"stylesheet\" href=\"/page.css\">");
}

static void page_html(struct admin_out *o, const struct statuspage *sp, const struct page *pg)
{
        const struct history *h = sp->lbd->history;
        size_t n_events = h ? history_n_events(h) : 0;
        char when[16];

        page_html_head(o, sp->token, "lbd status");
        out_add(o, "<script src=\"/page.js\" defer></script>"
                   "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript></head><body>");
        admin_printf(o,
                   "<header><h1>lbd</h1><p>version %s, pid %ld; <span id=\"updated\">as of %s UTC</span></p>"
                   "</header><main>",
                   PACKAGE_VERSION, (long)getpid(), page_clock(pg->wall_usec, when, sizeof(when)));
        page_html_summary(o, pg);

        out_add(o, "<section><h2>Backends</h2><div class=\"scroll\"><table id=\"backends\"><thead><tr>"
                   "<th>Address</th><th>State</th><th>Instance</th><th>Zone</th><th>Age</th>"
                   "<th>Health checks <small>(oldest first)</small></th><th>In flight</th><th>Req/s</th>"
                   "<th>Errors</th><th>p50</th><th>p99</th><th>Action</th></tr></thead><tbody>");
        for (size_t i = 0; i < pg->n_rows; i++)
                page_html_row(o, &pg->rows[i]);
        out_add(o,
                "</tbody></table></div><p class=\"legend\">Health checks: <i class=\"ck-o\">+</i> passed, "
                "<i class=\"ck-f\">f</i> wrong answer, <i class=\"ck-t\">t</i> timeout, <i "
                "class=\"ck-r\">r</i> "
                "refused, <i class=\"ck-e\">e</i> error. Req/s, errors and latency over the last "
                "10 s.</p></section>");

        out_add(o, "<section><h2>Last 15 minutes</h2><div class=\"charts\">");
        for (int s = 0; s < _PAGE_SERIES_MAX; s++)
                page_chart(o, h, (enum page_series)s, pg->wall_usec / USEC_PER_SEC);
        out_add(o, "</div></section>");

        out_add(o, "<section><h2>Timeline <small>(newest first, UTC)</small></h2><ol id=\"timeline\">");
        for (size_t i = n_events; i-- > 0;) {
                const struct history_event *e = history_event_at(h, i);

                admin_printf(o, "<li class=\"ev-%u\"><time>%s</time> <b>%s</b> ", (unsigned)e->kind,
                           page_clock(e->wall_usec, when, sizeof(when)), history_event_kind_name(e->kind));
                out_html(o, e->text);
                out_add(o, "</li>");
        }
        if (n_events == 0)
                out_add(o, "<li class=\"empty\">Nothing yet.</li>");
        out_add(o, "</ol></section></main></body></html>\n");
}

/* ---- the JSON for page.js ---- */

static cJSON *page_json_row(const struct page_row *row)
{
        cJSON *o = cJSON_CreateObject();
        const struct history_backend_view *f = &row->figures;

        if (!o || !cJSON_AddStringToObject(o, "address", row->address) ||
            !cJSON_AddStringToObject(o, "instance_id", row->instance_id) ||
            !cJSON_AddStringToObject(o, "zone", row->zone) ||
            !(row->age_s < 0 ? cJSON_AddNullToObject(o, "age_s")
                             : cJSON_AddNumberToObject(o, "age_s", (double)row->age_s)) ||
            !cJSON_AddStringToObject(o, "state", row->state) ||
            !cJSON_AddStringToObject(o, "state_class", row->state_class) ||
            !cJSON_AddStringToObject(o, "checks", row->checks) ||
            !cJSON_AddNumberToObject(o, "active", row->active) ||
            !cJSON_AddNumberToObject(o, "rps", f->rps) ||
            !(f->error_rate < 0 ? cJSON_AddNullToObject(o, "error_rate")
                                : cJSON_AddNumberToObject(o, "error_rate", f->error_rate)) ||
            !(f->p50_usec < 0 ? cJSON_AddNullToObject(o, "p50_ms")
                              : cJSON_AddNumberToObject(o, "p50_ms", (double)f->p50_usec / 1000.0)) ||
            !(f->p99_usec < 0 ? cJSON_AddNullToObject(o, "p99_ms")
                              : cJSON_AddNumberToObject(o, "p99_ms", (double)f->p99_usec / 1000.0)) ||
            !(row->b ? cJSON_AddStringToObject(o, "action", row->b->maintenance ? "enable" : "drain")
                     : cJSON_AddNullToObject(o, "action"))) {
                cJSON_Delete(o);
                return NULL;
        }
        return o;
}

static int page_json_summary(cJSON *root, const struct page *pg)
{
        cJSON *s = cJSON_AddObjectToObject(root, "summary");

        if (!s || !cJSON_AddStringToObject(s, "provider", pg->provider) ||
            !cJSON_AddBoolToObject(s, "managed", pg->managed) ||
            !cJSON_AddNumberToObject(s, "desired", (double)pg->desired) ||
            !cJSON_AddNumberToObject(s, "healthy", (double)pg->healthy) ||
            !cJSON_AddNumberToObject(s, "total", (double)pg->total) ||
            !cJSON_AddNumberToObject(s, "launching", (double)pg->launching) ||
            !cJSON_AddNumberToObject(s, "draining", (double)pg->draining) ||
            !cJSON_AddNumberToObject(s, "held", (double)pg->held) ||
            !cJSON_AddBoolToObject(s, "guard", pg->guard) ||
            !cJSON_AddBoolToObject(s, "all_failing", pg->all_failing) ||
            !(pg->listed ? cJSON_AddNumberToObject(s, "last_list_unix",
                                                   (double)(pg->list_wall_usec / USEC_PER_SEC))
                         : cJSON_AddNullToObject(s, "last_list_unix")) ||
            !cJSON_AddBoolToObject(s, "list_ok", pg->list_ok) ||
            !(pg->error ? cJSON_AddStringToObject(s, "error", pg->error)
                        : cJSON_AddNullToObject(s, "error")) ||
            !cJSON_AddBoolToObject(s, "failing", pg->failing) ||
            !cJSON_AddNumberToObject(s, "failing_s", (double)(pg->failing_usec / USEC_PER_SEC)) ||
            !cJSON_AddNumberToObject(s, "failing_attempts", pg->failing_attempts))
                return -ENOMEM;
        return 0;
}

/* The samples after <since> (a Unix second) as arrays t, rps, errors, p99_ms (null: no request), healthy. */
static int page_json_series(cJSON *root, const struct history *h, uint64_t since)
{
        cJSON *s = cJSON_AddObjectToObject(root, "series"), *arr[1 + _PAGE_SERIES_MAX];
        size_t n = h ? history_n_samples(h) : 0;

        if (!s || !(arr[0] = cJSON_AddArrayToObject(s, "t")))
                return -ENOMEM;
        for (int k = 0; k < _PAGE_SERIES_MAX; k++)
                if (!(arr[1 + k] = cJSON_AddArrayToObject(s, page_charts[k].id)))
                        return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const struct history_sample *x = history_sample_at(h, i);
                cJSON *item;

                if (x->wall_sec <= since)
                        continue;
                item = cJSON_CreateNumber((double)x->wall_sec);
                if (!item || !cJSON_AddItemToArray(arr[0], item)) {
                        cJSON_Delete(item);
                        return -ENOMEM;
                }
                for (int k = 0; k < _PAGE_SERIES_MAX; k++) {
                        double v = page_series_value(x, (enum page_series)k);

                        item = v < 0 ? cJSON_CreateNull() : cJSON_CreateNumber(v);
                        if (!item || !cJSON_AddItemToArray(arr[1 + k], item)) {
                                cJSON_Delete(item);
                                return -ENOMEM;
                        }
                }
        }
        return 0;
}

/* The events numbered <from> and later (an event's number counts every event since the start). */
static int page_json_events(cJSON *root, const struct history *h, uint64_t from)
{
        cJSON *arr = cJSON_AddArrayToObject(root, "events");
        size_t n = h ? history_n_events(h) : 0;
        uint64_t total = h ? history_events_total(h) : 0;

        if (!arr || !cJSON_AddNumberToObject(root, "events_total", (double)total))
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const struct history_event *e = history_event_at(h, i);
                uint64_t seq = total - n + i;
                cJSON *o;

                if (seq < from)
                        continue;
                o = cJSON_CreateObject();
                if (!o || !cJSON_AddItemToArray(arr, o)) {
                        cJSON_Delete(o);
                        return -ENOMEM;
                }
                if (!cJSON_AddNumberToObject(o, "seq", (double)seq) ||
                    !cJSON_AddNumberToObject(o, "t", (double)(e->wall_usec / USEC_PER_SEC)) ||
                    !cJSON_AddStringToObject(o, "kind", history_event_kind_name(e->kind)) ||
                    !cJSON_AddStringToObject(o, "text", e->text))
                        return -ENOMEM;
        }
        return 0;
}

static int page_json(struct admin_out *o, const struct statuspage *sp, const struct page *pg, uint64_t since,
                     uint64_t events_from)
{
        _cleanup_(cJSON_Deletep) cJSON *root = cJSON_CreateObject();
        _cleanup_(cJSON_freep) char *text = NULL;
        cJSON *rows;
        int r;

        if (!root || !cJSON_AddNumberToObject(root, "now", (double)(pg->wall_usec / USEC_PER_SEC)) ||
            !cJSON_AddNumberToObject(root, "window_s", HISTORY_SECONDS) ||
            !(rows = cJSON_AddArrayToObject(root, "rows")))
                return -ENOMEM;
        r = page_json_summary(root, pg);
        if (r < 0)
                return r;
        for (size_t i = 0; i < pg->n_rows; i++) {
                cJSON *row = page_json_row(&pg->rows[i]);

                if (!row || !cJSON_AddItemToArray(rows, row)) {
                        cJSON_Delete(row);
                        return -ENOMEM;
                }
        }
        r = page_json_series(root, sp->lbd->history, since);
        if (r < 0)
                return r;
        r = page_json_events(root, sp->lbd->history, events_from);
        if (r < 0)
                return r;
        text = cJSON_PrintUnformatted(root);
        if (!text)
                return -ENOMEM;
        out_add(o, text);
        out_add(o, "\n");
        return o->failed ? -ENOMEM : 0;
}

/* ---- requests ---- */

DEFINE_TRIVIAL_CLEANUP_FUNC(struct evbuffer *, evbuffer_free)

/* The fields of every page answer: nothing of it may be framed, sniffed or sent to other sites. */
#define PAGE_FIELDS                                                                                         \
        "X-Content-Type-Options: nosniff\r\n"                                                                \
        "X-Frame-Options: DENY\r\n"                                                                          \
        /* Not no-referrer: browsers then send "Origin: null" with the page's own forms, which is refused. */ \
        "Referrer-Policy: same-origin\r\n"                                                                   \
        "Content-Security-Policy: " PAGE_CSP "\r\n"

static void page_reply(struct http_request *req, unsigned status, const char *type, struct evbuffer *body)
{
        admin_respond(req, status, type, PAGE_FIELDS, body);
}

/* A short text answer: "<status> <reason>: <detail>". <fields>: more fields, or NULL. */
static void page_reply_text_with(struct http_request *req, unsigned status, const char *fields,
                                 const char *detail)
{
        char head[1024];
        int n = snprintf(head, sizeof(head), PAGE_FIELDS "%s", fields ? fields : "");

        admin_respond_text(req, status, n < 0 || (size_t)n >= sizeof(head) ? PAGE_FIELDS : head, NULL, detail);
}

static void page_reply_text(struct http_request *req, unsigned status, const char *detail)
{
        page_reply_text_with(req, status, NULL, detail);
}

/* Whether the Host of <req> names an IP address or localhost (with a port or not): what a browser sends
 * for the admin listener's own address, and never for a DNS name an attacker controls. */
static bool page_host_ok(const struct http_request *req)
{
        const char *host = http_request_header(req, "Host");
        struct netaddr a;
        size_t len;

        if (!host || host[0] == '\0' || host[0] == ':' || host[0] == '*')
                return false;
        len = strlen(host);
        if (strncasecmp(host, "localhost", 9) == 0 && (len == 9 || host[9] == ':')) {
                const char *port = host + 9;

                if (len == 9)
                        return true;
                if (port[1] == '\0' || strlen(port + 1) > 5)
                        return false;
                for (const char *p = port + 1; *p; p++)
                        if (*p < '0' || *p > '9')
                                return false;
                return true;
        }
        return netaddr_parse(host, 80, false, &a) == 0;
}

bool statuspage_post_allowed(struct http_request *req)
{
        const char *origin = http_request_header(req, "Origin");
        const char *site = http_request_header(req, "Sec-Fetch-Site");
        const char *host = http_request_header(req, "Host");

        if (site && strcasecmp(site, "same-origin") != 0 && strcasecmp(site, "none") != 0) {
                page_reply_text(req, PAGE_FORBIDDEN, "a request from another site (Sec-Fetch-Site)");
                return false;
        }
        if (!origin)
                return true;
        /* The page's own origin is http://HOST, HOST being an address or localhost (see page_host_ok). */
        if (!host || !page_host_ok(req) || strncasecmp(origin, "http://", 7) != 0 ||
            strcasecmp(origin + 7, host) != 0) {
                page_reply_text(req, PAGE_FORBIDDEN, "a request from another origin (Origin)");
                return false;
        }
        return true;
}

/* Reads "name=value" of the query or form <query> into <buf>; false when absent, malformed or too long. */
static bool page_query(const char *query, const char *name, char *buf, size_t size)
{
        struct http_param params[PAGE_QUERY_MAX];
        _cleanup_free_ char *copy = NULL;
        int n;

        if (!query || !*query || !(copy = malloc(strlen(query) + 1)))
                return false;
        n = http_parse_query(query, copy, params, ELEMENTSOF(params));
        for (int i = 0; i < n; i++)
                if (strcmp(params[i].name, name) == 0) {
                        if (strlen(params[i].value) >= size)
                                return false;
                        memcpy(buf, params[i].value, strlen(params[i].value) + 1);
                        return true;
                }
        return false;
}

/* The token of a POST from the page: the X-LBD-Token header, or the form field "token". */
static bool page_token_ok(const struct statuspage *sp, const struct http_request *req)
{
        const char *given = http_request_header(req, PAGE_TOKEN_HEADER);
        char form_token[2 * STATUSPAGE_TOKEN_BYTES + 2];

        if (!given && req->body_len > 0 && page_query(req->body, "token", form_token, sizeof(form_token)))
                given = form_token;
        return given && strlen(given) == strlen(sp->token) &&
               CRYPTO_memcmp(given, sp->token, strlen(sp->token)) == 0;
}

static void page_send(struct http_request *req, const char *type, const unsigned char *data, size_t len)
{
        _cleanup_(evbuffer_freep) struct evbuffer *body = evbuffer_new();

        if (!body || evbuffer_add(body, data, len) < 0) {
                page_reply_text(req, 500, NULL);
                return;
        }
        page_reply(req, 200, type, body);
}

static uint64_t page_query_uint(const char *query, const char *name)
{
        char buf[24], *end;
        unsigned long long v;

        if (!page_query(query, name, buf, sizeof(buf)) || buf[0] < '0' || buf[0] > '9')
                return 0;
        errno = 0;
        v = strtoull(buf, &end, 10);
        return errno == 0 && *end == '\0' ? (uint64_t)v : 0;
}

typedef int (*page_render_fn)(struct admin_out *o, const struct statuspage *sp, const struct page *pg,
                              const char *query);

static int page_render_html(struct admin_out *o, const struct statuspage *sp, const struct page *pg,
                            const char *query)
{
        page_html(o, sp, pg);
        return o->failed ? -ENOMEM : 0;
}

static int page_render_json(struct admin_out *o, const struct statuspage *sp, const struct page *pg,
                            const char *query)
{
        return page_json(o, sp, pg, page_query_uint(query, "since"), page_query_uint(query, "events"));
}

static void page_render(struct statuspage *sp, struct http_request *req, page_render_fn render,
                        const char *type, const char *query)
{
        _cleanup_(evbuffer_freep) struct evbuffer *body = evbuffer_new();
        struct page pg = {0};
        struct admin_out o = {.out = body};
        int r = body ? page_build(sp->lbd, &pg) : -ENOMEM;

        if (r >= 0)
                r = render(&o, sp, &pg, query);
        page_free(&pg);
        if (r < 0) {
                log_warning_errno(r, "Status page: failed to answer: %m");
                page_reply_text(req, 500, NULL);
                return;
        }
        page_reply(req, 200, type, body);
}

/* <s> with every byte but unreserved ones (RFC 3986: ALPHA DIGIT - . _ ~) as %XX, newly allocated, or NULL. */
static char *page_uri_encode(const char *s)
{
        static const char hex[] = "0123456789ABCDEF";
        char *e = malloc(3 * strlen(s) + 1), *o = e;

        if (!e)
                return NULL;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    *p == '-' || *p == '.' || *p == '_' || *p == '~')
                        *o++ = (char)*p;
                else {
                        *o++ = '%';
                        *o++ = hex[*p >> 4];
                        *o++ = hex[*p & 15];
                }
        }
        *o = '\0';
        return e;
}

/* GET /page/confirm?backend=NAME&action=drain|enable: a form that POSTs the action with the token. */
static void page_confirm(struct statuspage *sp, struct http_request *req, const char *query)
{
        _cleanup_(evbuffer_freep) struct evbuffer *body = evbuffer_new();
        struct admin_out o = {.out = body};
        char name[ADMIN_BACKEND_NAME_MAX], action[8];
        _cleanup_free_ char *encoded = NULL;

        if (!page_query(query, "backend", name, sizeof(name)) ||
            !page_query(query, "action", action, sizeof(action)) ||
            (strcmp(action, "drain") != 0 && strcmp(action, "enable") != 0)) {
                page_reply_text(req, 400, "needs backend=NAME and action=drain or enable");
                return;
        }
        if (!admin_find_backend(sp->lbd, name)) {
                page_reply_text(req, 404, "no such backend");
                return;
        }
        encoded = page_uri_encode(name);
        if (!body || !encoded) {
                page_reply_text(req, 500, NULL);
                return;
        }
        page_html_head(&o, sp->token, "lbd: confirm");
        out_add(&o, "</head><body><main class=\"confirm\"><h1>");
        out_add(&o, strcmp(action, "drain") == 0 ? "Drain " : "Enable ");
        out_html(&o, name);
        out_add(&o, "?</h1><p>");
        out_add(&o,
                strcmp(action, "drain") == 0
                        ? "It takes no new requests; those in flight finish. It is still health-checked and "
                          "not replaced while drained."
                        : "It takes requests again once its health checks pass.");
        out_add(&o, "</p><form method=\"post\" action=\"" PAGE_ACTION_PREFIX);
        out_html(&o, encoded);
        admin_printf(
                &o,
                "/%s\"><input type=\"hidden\" name=\"token\" value=\"%s\">"
                "<button type=\"submit\" class=\"act\" id=\"confirm\">%s</button> <a href=\"/\">Cancel</a>"
                "</form></main></body></html>\n",
                action, sp->token, strcmp(action, "drain") == 0 ? "Drain" : "Enable");
        if (o.failed) {
                page_reply_text(req, 500, NULL);
                return;
        }
        page_reply(req, 200, "text/html; charset=utf-8", body);
}

/* POST /page/backends/NAME/drain|enable. A form (no script) is sent back to the page; the script gets
 * the backend's new state as JSON. */
static void page_action(struct statuspage *sp, struct http_request *req, const char *path)
{
        char name[ADMIN_BACKEND_NAME_MAX];
        struct backend *b;
        bool drain;
        int r;

        r = admin_action_parse(path + strlen(PAGE_ACTION_PREFIX), &drain, name, sizeof(name));
        if (r < 0) {
                page_reply_text(req, 404, NULL);
                return;
        }
        if (req->method != HTTP_POST) {
                page_reply_text_with(req, 405, "Allow: POST\r\n", NULL);
                return;
        }
        if (!statuspage_post_allowed(req))
                return;
        if (!page_token_ok(sp, req)) {
                page_reply_text(req, PAGE_FORBIDDEN,
                                "the page's token is missing or wrong (reload the page: lbd restarted?)");
                return;
        }
        b = admin_find_backend(sp->lbd, name);
        if (!b) {
                page_reply_text(req, 404, "no such backend");
                return;
        }
        admin_set_maintenance(sp->lbd, b, drain, "status page");
        if (!http_request_header(req, PAGE_TOKEN_HEADER)) {
                page_reply_text_with(req, 303, "Location: /\r\n", drain ? "drained" : "enabled");
                return;
        }
        {
                _cleanup_(evbuffer_freep) struct evbuffer *body = evbuffer_new();

                if (!body || evbuffer_add_printf(body, "{\"backend\":\"%s\",\"maintenance\":%s}\n", b->name,
                                                 b->maintenance ? "true" : "false") < 0) {
                        page_reply_text(req, 500, NULL);
                        return;
                }
                page_reply(req, 200, "application/json", body);
        }
}

bool statuspage_owns(const char *path)
{
        return strcmp(path, "/") == 0 || strcmp(path, "/page.js") == 0 || strcmp(path, "/page.css") == 0 ||
               strcmp(path, "/page") == 0 || strncmp(path, "/page/", 6) == 0;
}

void statuspage_handle(struct statuspage *sp, struct http_request *req, const char *path)
{
        const char *query = req->query;

        if (!page_host_ok(req)) {
                page_reply_text(req, PAGE_FORBIDDEN,
                                "open the page by address (http://127.0.0.1:PORT/) or as localhost");
                return;
        }
        if (strncmp(path, PAGE_ACTION_PREFIX, strlen(PAGE_ACTION_PREFIX)) == 0) {
                page_action(sp, req, path);
                return;
        }
        if (req->method != HTTP_GET) {
                page_reply_text_with(req, 405, "Allow: GET\r\n", NULL);
                return;
        }
        if (strcmp(path, "/") == 0)
                page_render(sp, req, page_render_html, "text/html; charset=utf-8", query);
        else if (strcmp(path, "/page/data") == 0)
                page_render(sp, req, page_render_json, "application/json", query);
        else if (strcmp(path, "/page/confirm") == 0)
                page_confirm(sp, req, query);
        else if (strcmp(path, "/page.js") == 0)
                page_send(req, "text/javascript; charset=utf-8", statuspage_asset_js,
                          statuspage_asset_js_len);
        else if (strcmp(path, "/page.css") == 0)
                page_send(req, "text/css; charset=utf-8", statuspage_asset_css, statuspage_asset_css_len);
        else
                page_reply_text(req, 404, NULL);
}

int statuspage_new(struct lbd *lbd, struct statuspage **ret)
{
        uint8_t raw[STATUSPAGE_TOKEN_BYTES];
        struct statuspage *p;

        if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
                return -(errno ? errno : EIO);
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->lbd = lbd;
        for (size_t i = 0; i < sizeof(raw); i++)
                (void)snprintf(p->token + 2 * i, 3, "%02x", raw[i]);
        OPENSSL_cleanse(raw, sizeof(raw));
        *ret = p;
        return 0;
}

struct statuspage *statuspage_free(struct statuspage *p)
{
        if (!p)
                return NULL;
        OPENSSL_cleanse(p->token, sizeof(p->token));
        free(p);
        return NULL;
}
