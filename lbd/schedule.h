/* Scheduled changes of the pool's size (an Auto Scaling Group's scheduled actions): `[schedule] action`
 * entries, each a name, a time in cron form (UTC) and the new min, max and/or desired. At the minute an
 * action's time matches, lbd applies it; at start and reload, the action that matched last within the past
 * SCHEDULE_LOOKBACK_SEC applies, so a restart does not forget the schedule's current state. min and max
 * bound scaling on demand (they need [pool] max > 0); desired sets the count (scaling on demand may move it
 * again within the bounds). See "Scheduled changes" in README.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SCHEDULE_MAX          32
#define SCHEDULE_NAME_MAX     32
#define SCHEDULE_TEXT_MAX     128
#define SCHEDULE_LOOKBACK_SEC (8 * 86400) /* at start: the last action within 8 days applies */
#define SCHEDULE_COUNT_MAX    1000

struct lbd;
struct schedule;

/* A cron time: the set of minutes, hours, days of the month, months and days of the week it matches. */
struct schedule_cron {
        uint64_t minutes;  /* bit m: minute m (0-59) */
        uint32_t hours;    /* bit h: hour h (0-23) */
        uint32_t days;     /* bit d: day d of the month (1-31) */
        uint16_t months;   /* bit m: month m (1-12) */
        uint8_t weekdays;  /* bit d: day d of the week (0-6, Sunday 0; 7 is read as 0) */
        bool days_any;     /* the day-of-month field was "*" */
        bool weekdays_any; /* the day-of-week field was "*" */
};

/* One action: <name>, its time, and what it sets (-1: left as it is). */
struct schedule_action {
        char name[SCHEDULE_NAME_MAX];
        char when[SCHEDULE_TEXT_MAX]; /* the five cron fields as written */
        struct schedule_cron cron;
        int64_t min, max, desired;
};

/* Parses "NAME MIN HOUR DAY MONTH WEEKDAY key=value..." (keys min, max, desired, 0-1000; at least one;
 * min <= max when both are given). Fields take "*", numbers, ranges "a-b", steps ("a-b/n", or a star then
 * "/n"), and comma lists; months and weekdays also their English three-letter names. Returns 0, or -EINVAL with the
 * reason in <reason>. */
int schedule_parse_action(const char *text, struct schedule_action *ret, char *reason, size_t size);

/* Whether <c> matches the minute <tm> (UTC, broken down). As cron does, when both the day of the month and
 * the day of the week are restricted, either matching is enough. */
bool schedule_cron_matches(const struct schedule_cron *c, const struct tm *tm);

/* The last minute (seconds since the epoch, a multiple of 60) at or before <now> that <c> matches, within
 * <lookback> seconds; -1 when none. */
int64_t schedule_cron_prev(const struct schedule_cron *c, int64_t now, int64_t lookback);

/* The first minute after <now> that <c> matches, within <lookahead> seconds; -1 when none. */
int64_t schedule_cron_next(const struct schedule_cron *c, int64_t now, int64_t lookahead);

/* What the schedule has set, for /status and for the scaling bounds. */
struct schedule_state {
        bool applied;                   /* an action applied since start or reload */
        char name[SCHEDULE_NAME_MAX];   /* the last one applied */
        int64_t at;                     /* the minute it matched (seconds since the epoch) */
        int64_t min, max, desired;      /* what it set, -1: left as it was */
        char next_name[SCHEDULE_NAME_MAX]; /* the next one to match, "" when none within 8 days */
        int64_t next_at;
};

/* The daemon's part: a timer on <lbd>'s loop at every minute. NULL (no error) without actions. */
int schedule_new(struct lbd *lbd, struct schedule **ret);
struct schedule *schedule_free(struct schedule *s);
/* New actions (reload): the one that matched last applies again. */
void schedule_set_config(struct schedule *s);
const struct schedule_state *schedule_get_state(const struct schedule *s);
