/* The activity command: GET /activity, the caller's own requests as the server logged them (time, method,
 * path, status, latency, client address, request id), newest first, as a table or (--json) as the
 * server's JSON. */
#include "webctl/activity.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "common/macro.h"
#include "webctl/list.h"
#include "webctl/webctl.h"

#define ACTIVITY_LIMIT_MAX   100
#define ACTIVITY_PATH_COLUMN 40

enum {
        ACTIVITY_OPT_LIMIT = 0x100,
        ACTIVITY_OPT_OFFSET,
        ACTIVITY_OPT_BEFORE,
};

static const char *const activity_headers[] = {
        "TIME", "METHOD", "STATUS", "MS", "PATH", "CLIENT", "REQUEST ID",
};

/* To fit a narrow terminal the path gives up width first, then the client address; when even that is too
 * wide, the request id is left out (cut, it would show only the prefix all the ids share), then the
 * client. */
static void activity_layout(struct table *t)
{
        table_align_right(t, 2);
        table_align_right(t, 3);
        table_limit(t, 4, ACTIVITY_PATH_COLUMN, 1, 8);
        table_limit(t, 5, 0, 2, 7);
        table_limit(t, 6, 40, 0, 0);
        table_optional(t, 6, 1);
        table_optional(t, 5, 2);
}

static int activity_add_row(struct table *t, const cJSON *item)
{
        const cJSON *latency = cJSON_GetObjectItemCaseSensitive(item, "latency_ms");
        char at[64], status[32], ms[32] = "";
        const char *cells[ELEMENTSOF(activity_headers)];

        if (cJSON_IsNumber(latency) && latency->valuedouble >= 0 && latency->valuedouble < 1e9)
                (void)snprintf(ms, sizeof(ms), "%.1f", latency->valuedouble);
        cells[0] = webctl_time(webctl_string(item, "at"), at, sizeof(at));
        cells[1] = webctl_string(item, "method");
        cells[2] = webctl_integer(item, "status", status, sizeof(status));
        cells[3] = ms;
        cells[4] = webctl_string(item, "path");
        cells[5] = webctl_string(item, "client");
        cells[6] = webctl_string(item, "request_id");
        return table_add_row(t, cells);
}

struct activity_args {
        uint64_t limit, offset, before; /* limit 0: the server's default; before 0: none */
        const char *limit_arg;  /* --limit as given, or NULL */
};

static int activity_option(const struct webctl *w, int c, const char *arg, void *userdata)
{
        struct activity_args *a = userdata;

        if (c == ACTIVITY_OPT_LIMIT) {
                a->limit_arg = arg;
                return webctl_parse_number(w, "--limit", arg, 1, ACTIVITY_LIMIT_MAX, &a->limit);
        }
        if (c == ACTIVITY_OPT_BEFORE)
                return webctl_parse_number(w, "--before", arg, 1, INT64_MAX, &a->before);
        return webctl_parse_number(w, "--offset", arg, 0, INT64_MAX, &a->offset);
}

static int activity_main(struct webctl *w, int argc, char **argv)
{
        static const struct option options[] = {
                { "limit", required_argument, NULL, ACTIVITY_OPT_LIMIT },
                { "offset", required_argument, NULL, ACTIVITY_OPT_OFFSET },
                { "before", required_argument, NULL, ACTIVITY_OPT_BEFORE },
                WEBCTL_COMMON_OPTIONS,
                { NULL, 0, NULL, 0 },
        };
        struct activity_args a = { 0 };
        struct list list = {
                .name = "activity",
                .headers = activity_headers,
                .columns = ELEMENTSOF(activity_headers),
                .layout = activity_layout,
                .add_row = activity_add_row,
                .empty = "No activity.",
                .more = "More",
                .cursor = "before",
        };
        char path[128];
        int r, n;

        r = webctl_getopt(w, argc, argv, options, activity_option, &a);
        if (r >= 0)
                return r;
        if (optind != argc)
                return webctl_usage_error(w, "usage: webctl activity %s", w->command->args);

        list_add_arg(&list, "activity");
        if (a.limit_arg) {
                list_add_arg(&list, "--limit");
                list_add_arg(&list, a.limit_arg);
        }

        n = snprintf(path, sizeof(path), "/activity?offset=%" PRIu64, a.offset);
        if (a.limit > 0)
                n += snprintf(path + n, sizeof(path) - (size_t)n, "&limit=%" PRIu64, a.limit);
        if (a.before > 0)
                (void)snprintf(path + n, sizeof(path) - (size_t)n, "&before=%" PRIu64, a.before);
        return webctl_show(w, path, list_print, &list);
}

const struct webctl_command activity_command = {
        .name = "activity",
        .args = "[--limit N] [--before ID | --offset N]",
        .summary = "Your recent requests, newest first",
        .options = "      --limit N     at most N entries (1-100; default: the server's, 20)\n"
                   "      --before ID   only entries older than entry ID (the command for the next page is\n"
                   "                    on stderr, and uses it: pages stay put while new entries arrive)\n"
                   "      --offset N    skip the first N\n",
        .run = activity_main,
};
