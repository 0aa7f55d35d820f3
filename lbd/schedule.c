/* Scheduled changes of the pool's size: the cron parser and matcher (pure, tested on their own), and a
 * timer on the loop that applies the actions at their minutes (see schedule.h). Times are UTC: a host's
 * time zone never moves an action, and the log says the minute in UTC. */
#include "lbd/schedule.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/conf.h"
#include "common/macro.h"
#include "common/parse.h"
#include "lbd/autoscale.h"
#include "lbd/config.h"
#include "lbd/history.h"
#include "lbd/lbd.h"
#include "lbd/reconcile.h"

/* ---- cron times ---- */

struct schedule_field {
        const char *what;
        unsigned lo, hi;
        const char *const *names; /* names for lo.. (months, weekdays), or NULL */
};

static const char *const schedule_months[] = { "jan", "feb", "mar", "apr", "may", "jun",
                                               "jul", "aug", "sep", "oct", "nov", "dec", NULL };
static const char *const schedule_weekdays[] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL };

static const struct schedule_field schedule_fields[5] = {
        { "minute", 0, 59, NULL },
        { "hour", 0, 23, NULL },
        { "day of the month", 1, 31, NULL },
        { "month", 1, 12, schedule_months },
        { "day of the week", 0, 7, schedule_weekdays },
};

/* One value of field <f>: a number or a name. Returns 0 or -EINVAL. */
static int schedule_value(const struct schedule_field *f, const char *s, size_t len, unsigned *ret)
{
        char buf[8];
        uint64_t v;

        if (len == 0 || len >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, s, len);
        buf[len] = '\0';
        if (f->names)
                for (unsigned i = 0; f->names[i]; i++)
                        if (strcasecmp(buf, f->names[i]) == 0) {
                                *ret = f->lo + i;
                                return 0;
                        }
        if (parse_uint(buf, f->lo, f->hi, &v) < 0)
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

/* Parses one field (<len> bytes at <s>) into the bit set <ret> (bit i: value i). */
static int schedule_parse_field(const struct schedule_field *f, const char *s, size_t len, uint64_t *ret,
                                bool *ret_any, char *reason, size_t size)
{
        uint64_t bits = 0;
        size_t i = 0;

        *ret_any = len == 1 && s[0] == '*';
        while (i <= len) {
                size_t end = i, slash;
                unsigned a, b, step = 1;

                while (end < len && s[end] != ',')
                        end++;
                slash = i;
                while (slash < end && s[slash] != '/')
                        slash++;
                if (slash < end) {
                        uint64_t v;
                        char buf[8];

                        if (end - slash - 1 == 0 || end - slash - 1 >= sizeof(buf))
                                goto bad;
                        memcpy(buf, s + slash + 1, end - slash - 1);
                        buf[end - slash - 1] = '\0';
                        if (parse_uint(buf, 1, f->hi + 1, &v) < 0)
                                goto bad;
                        step = (unsigned)v;
                }
                if (slash - i == 1 && s[i] == '*') {
                        a = f->lo;
                        b = f->hi == 7 ? 6 : f->hi; /* weekdays: 0-6 (7 is Sunday again) */
                } else {
                        const char *dash = memchr(s + i, '-', slash - i);

                        if (dash) {
                                if (schedule_value(f, s + i, (size_t)(dash - (s + i)), &a) < 0 ||
                                    schedule_value(f, dash + 1, slash - (size_t)(dash + 1 - s), &b) < 0 || a > b)
                                        goto bad;
                        } else {
                                if (schedule_value(f, s + i, slash - i, &a) < 0)
                                        goto bad;
                                /* "5/15": from 5 to the end, every 15 */
                                b = slash < end ? (f->hi == 7 ? 6 : f->hi) : a;
                        }
                }
                for (unsigned v = a; v <= b; v += step)
                        bits |= UINT64_C(1) << (f->hi == 7 && v == 7 ? 0 : v);
                i = end + 1;
        }
        *ret = bits;
        return 0;
bad:
        return conf_reason(reason, size, "%s: '%.*s' is not a value, range, step or list of %u-%u", f->what,
                           (int)len, s, f->lo, f->hi);
}

/* "min=N", "max=N" or "desired=N" into <a>. */
static int schedule_parse_setting(struct schedule_action *a, const char *s, size_t len, char *reason, size_t size)
{
        static const char *const keys[] = { "min", "max", "desired" };
        int64_t *fields[] = { &a->min, &a->max, &a->desired };
        const char *eq = memchr(s, '=', len);
        char buf[16];
        uint64_t v;

        for (size_t k = 0; eq && k < ELEMENTSOF(keys); k++) {
                if ((size_t)(eq - s) != strlen(keys[k]) || memcmp(s, keys[k], strlen(keys[k])) != 0)
                        continue;
                if (*fields[k] >= 0)
                        return conf_reason(reason, size, "%s is given twice", keys[k]);
                if (len - (size_t)(eq + 1 - s) >= sizeof(buf))
                        break;
                memcpy(buf, eq + 1, len - (size_t)(eq + 1 - s));
                buf[len - (size_t)(eq + 1 - s)] = '\0';
                if (parse_uint(buf, 0, SCHEDULE_COUNT_MAX, &v) < 0)
                        return conf_reason(reason, size, "%s must be a number from 0 to %d", keys[k],
                                           SCHEDULE_COUNT_MAX);
                *fields[k] = (int64_t)v;
                return 0;
        }
        return conf_reason(reason, size, "'%.*s' is not min=N, max=N or desired=N", (int)MIN(len, 40), s);
}

int schedule_parse_action(const char *text, struct schedule_action *ret, char *reason, size_t size)
{
        struct schedule_action a = { .min = -1, .max = -1, .desired = -1 };
        const char *p = text, *when = NULL;
        size_t n_words = 0;
        int r;

        while (*p) {
                const char *w;
                size_t len;

                while (*p == ' ' || *p == '\t')
                        p++;
                if (!*p)
                        break;
                w = p;
                while (*p && *p != ' ' && *p != '\t')
                        p++;
                len = (size_t)(p - w);
                if (n_words == 0) {
                        if (len >= sizeof(a.name))
                                return conf_reason(reason, size, "the name is longer than %d bytes",
                                                   SCHEDULE_NAME_MAX - 1);
                        for (size_t i = 0; i < len; i++)
                                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.",
                                            w[i]))
                                        return conf_reason(reason, size,
                                                           "the name must be letters, digits, '_', '-' or '.'");
                        memcpy(a.name, w, len);
                } else if (n_words <= 5) {
                        const struct schedule_field *f = &schedule_fields[n_words - 1];
                        uint64_t bits = 0;
                        bool any = false;

                        if (n_words == 1)
                                when = w;
                        r = schedule_parse_field(f, w, len, &bits, &any, reason, size);
                        if (r < 0)
                                return r;
                        switch (n_words) {
                        case 1:
                                a.cron.minutes = bits;
                                break;
                        case 2:
                                a.cron.hours = (uint32_t)bits;
                                break;
                        case 3:
                                a.cron.days = (uint32_t)bits;
                                a.cron.days_any = any;
                                break;
                        case 4:
                                a.cron.months = (uint16_t)bits;
                                break;
                        default:
                                a.cron.weekdays = (uint8_t)bits;
                                a.cron.weekdays_any = any;
                                if ((size_t)(p - when) >= sizeof(a.when))
                                        return conf_reason(reason, size, "the time is longer than %d bytes",
                                                           SCHEDULE_TEXT_MAX - 1);
                                memcpy(a.when, when, (size_t)(p - when));
                                break;
                        }
                } else {
                        r = schedule_parse_setting(&a, w, len, reason, size);
                        if (r < 0)
                                return r;
                }
                n_words++;
        }
        if (n_words < 6)
                return conf_reason(reason, size, "must be NAME, a cron time (minute hour day month weekday) and "
                                                 "min=N, max=N and/or desired=N");
        if (a.min < 0 && a.max < 0 && a.desired < 0)
                return conf_reason(reason, size, "sets nothing: give min=N, max=N and/or desired=N");
        if (a.min >= 0 && a.max >= 0 && a.min > a.max)
                return conf_reason(reason, size, "min is above max");
        *ret = a;
        return 0;
}

bool schedule_cron_matches(const struct schedule_cron *c, const struct tm *tm)
{
        bool day, weekday;

        if (!(c->minutes & (UINT64_C(1) << tm->tm_min)) || !(c->hours & (UINT32_C(1) << tm->tm_hour)) ||
            !(c->months & (1u << (tm->tm_mon + 1))))
                return false;
        day = c->days & (UINT32_C(1) << tm->tm_mday);
        weekday = c->weekdays & (1u << tm->tm_wday);
        if (!c->days_any && !c->weekdays_any)
                return day || weekday;
        return day && weekday;
}

/* Walks minute by minute from <from> in <dir> (+60 or -60) for at most <span> seconds. Whole hours and
 * days that cannot match are skipped. */
static int64_t schedule_cron_walk(const struct schedule_cron *c, int64_t from, int64_t dir, int64_t span)
{
        int64_t t = from - from % 60, end = dir > 0 ? from + span : from - span;

        while (dir > 0 ? t <= end : t >= end) {
                time_t tt = (time_t)t;
                struct tm tm;

                if (!gmtime_r(&tt, &tm))
                        return -1;
                if (schedule_cron_matches(c, &tm))
                        return t;
                /* An hour that cannot match: to its edge in one step. */
                if (!(c->hours & (UINT32_C(1) << tm.tm_hour))) {
                        t = dir > 0 ? t - tm.tm_min * 60 + 3600 : t - tm.tm_min * 60 - 60;
                        continue;
                }
                t += dir;
        }
        return -1;
}

int64_t schedule_cron_prev(const struct schedule_cron *c, int64_t now, int64_t lookback)
{
        return schedule_cron_walk(c, now, -60, lookback);
}

int64_t schedule_cron_next(const struct schedule_cron *c, int64_t now, int64_t lookahead)
{
        return schedule_cron_walk(c, now - now % 60 + 60, 60, lookahead);
}

/* ---- the daemon's part ---- */

struct schedule {
        struct lbd *lbd;
        struct event *timer;
        struct schedule_state state;
        int64_t last_minute; /* the minute last looked at, so none is applied twice */
};

static void schedule_text(char *buf, size_t size, const char *what, int64_t v)
{
        if (v < 0)
                (void)snprintf(buf, size, "%s as it was", what);
        else
                (void)snprintf(buf, size, "%s %" PRId64, what, v);
}

/* Applies <a>, which matched at <at>. <at_start>: the one in force at start or reload; on reload its
 * desired is not set again (scaling on demand may have moved the count since it matched). */
static void schedule_apply(struct schedule *s, const struct schedule_action *a, int64_t at, bool at_start,
                           bool set_desired)
{
        struct lbd *l = s->lbd;
        char min[32], max[32], desired[32], when[32];
        time_t tt = (time_t)at;
        struct tm tm;

        s->state.applied = true;
        memcpy(s->state.name, a->name, sizeof(s->state.name));
        s->state.at = at;
        s->state.min = a->min;
        s->state.max = a->max;
        s->state.desired = a->desired;
        schedule_text(min, sizeof(min), "min", a->min);
        schedule_text(max, sizeof(max), "max", a->max);
        schedule_text(desired, sizeof(desired), "desired", a->desired);
        if (!gmtime_r(&tt, &tm) || strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", &tm) == 0)
                when[0] = '\0';
        log_notice("Schedule: %s '%s' (%s, matched %s): %s, %s, %s", at_start ? "in force" : "applying", a->name,
                   a->when, when, min, max, desired);
        if (!at_start)
                history_event(l->history, HISTORY_EVENT_DESIRED, "Schedule '%s' (%s): %s, %s, %s", a->name, a->when,
                              min, max, desired);
        if (l->autoscale && (a->min >= 0 || a->max >= 0))
                autoscale_set_bounds(l->autoscale, a->min, a->max);
        if (a->desired >= 0 && set_desired && l->reconcile) {
                uint64_t d = (uint64_t)a->desired;

                if (l->autoscale)
                        d = autoscale_clamp(l->autoscale, d);
                reconcile_set_desired(l->reconcile, d);
        }
}

/* The next action to match after <now>, for /status. */
static void schedule_find_next(struct schedule *s, int64_t now)
{
        const struct config *c = s->lbd->config;

        s->state.next_name[0] = '\0';
        s->state.next_at = -1;
        for (size_t i = 0; i < c->n_schedule; i++) {
                int64_t t = schedule_cron_next(&c->schedule[i].cron, now, SCHEDULE_LOOKBACK_SEC);

                if (t >= 0 && (s->state.next_at < 0 || t < s->state.next_at)) {
                        s->state.next_at = t;
                        memcpy(s->state.next_name, c->schedule[i].name, sizeof(s->state.next_name));
                }
        }
}

static void schedule_arm(struct schedule *s, int64_t now)
{
        /* A second into the next minute, so that minute is the one gmtime() gives. */
        struct timeval tv = { .tv_sec = (time_t)(60 - now % 60 + 1), .tv_usec = 0 };

        (void)event_add(s->timer, &tv);
}

static void schedule_on_timer(evutil_socket_t fd, short what, void *userdata)
{
        struct schedule *s = userdata;
        const struct config *c = s->lbd->config;
        int64_t now = (int64_t)time(NULL), minute = now - now % 60;

        /* Every minute since the last one looked at (a late wake-up, a clock step forward of a few
         * minutes), in order; a step backward is not replayed. */
        if (s->last_minute < 0 || minute - s->last_minute > 10 * 60)
                s->last_minute = minute - 60;
        for (int64_t m = s->last_minute + 60; m <= minute; m += 60) {
                time_t tt = (time_t)m;
                struct tm tm;

                if (!gmtime_r(&tt, &tm))
                        continue;
                for (size_t i = 0; i < c->n_schedule; i++)
                        if (schedule_cron_matches(&c->schedule[i].cron, &tm))
                                schedule_apply(s, &c->schedule[i], m, false, true);
        }
        if (minute > s->last_minute)
                s->last_minute = minute;
        schedule_find_next(s, now);
        schedule_arm(s, now);
}

/* Start and reload: the action that matched last (the later in the file on a tie) applies. */
static void schedule_catch_up(struct schedule *s, bool set_desired)
{
        const struct config *c = s->lbd->config;
        int64_t now = (int64_t)time(NULL), best_at = -1;
        size_t best = 0;

        memset(&s->state, 0, sizeof(s->state));
        for (size_t i = 0; i < c->n_schedule; i++) {
                int64_t t = schedule_cron_prev(&c->schedule[i].cron, now, SCHEDULE_LOOKBACK_SEC);

                if (t >= 0 && t >= best_at) {
                        best_at = t;
                        best = i;
                }
        }
        if (best_at >= 0)
                schedule_apply(s, &c->schedule[best], best_at, true, set_desired);
        s->last_minute = now - now % 60;
        schedule_find_next(s, now);
        schedule_arm(s, now);
}

int schedule_new(struct lbd *lbd, struct schedule **ret)
{
        struct schedule *s;

        *ret = NULL;
        if (lbd->config->n_schedule == 0 || !lbd->reconcile)
                return 0;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->lbd = lbd;
        s->timer = evtimer_new(lbd->base, schedule_on_timer, s);
        if (!s->timer) {
                free(s);
                return -ENOMEM;
        }
        schedule_catch_up(s, true);
        *ret = s;
        return 0;
}

struct schedule *schedule_free(struct schedule *s)
{
        if (!s)
                return NULL;
        event_free(s->timer);
        free(s);
        return NULL;
}

void schedule_set_config(struct schedule *s)
{
        if (s)
                schedule_catch_up(s, false);
}

const struct schedule_state *schedule_get_state(const struct schedule *s)
{
        return s ? &s->state : NULL;
}
