/* The activity command: GET /activity, the caller's own requests as the server logged them (time, method,
 * path, status, latency, client address, request id), newest first, as a table or (--json) as the
 * server's JSON. */
#include "webctl/activity.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "common/macro.h"
#include "webctl/table.h"
#include "webctl/webctl.h"

#define ACTIVITY_LIMIT_MAX   100
#define ACTIVITY_PATH_COLUMN 40

DEFINE_TRIVIAL_CLEANUP_FUNC(struct table *, table_free)

enum {
        ACTIVITY_OPT_LIMIT = 0x100,
        ACTIVITY_OPT_OFFSET,
};

static int activity_print(const cJSON *answer)
{
        static const char *const headers[] = {
                "TIME", "METHOD", "STATUS", "MS", "PATH", "CLIENT", "REQUEST ID",
        };
        _cleanup_(table_freep) struct table *t = NULL;
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(answer, "items"), *item;
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(answer, "next_offset");
        char next_buf[32];

        if (!cJSON_IsArray(items)) {
                fprintf(stderr, "webctl: the server's answer has no activity list\n");
                return WEBCTL_EXIT_API;
        }
        if (table_new(headers, ELEMENTSOF(headers), &t) < 0)
                return WEBCTL_EXIT_API;
        table_align_right(t, 2);
        table_align_right(t, 3);
        table_limit(t, 4, ACTIVITY_PATH_COLUMN, true, 10);
        table_limit(t, 6, 40, true, 10);
        cJSON_ArrayForEach(item, items) {
                const cJSON *latency = cJSON_GetObjectItemCaseSensitive(item, "latency_ms");
                char at[64], status[32], ms[32] = "";
                const char *cells[ELEMENTSOF(headers)];

                if (cJSON_IsNumber(latency) && latency->valuedouble >= 0 && latency->valuedouble < 1e9)
                        (void)snprintf(ms, sizeof(ms), "%.1f", latency->valuedouble);
                cells[0] = webctl_time(webctl_string(item, "at"), at, sizeof(at));
                cells[1] = webctl_string(item, "method");
                cells[2] = webctl_integer(item, "status", status, sizeof(status));
                cells[3] = ms;
                cells[4] = webctl_string(item, "path");
                cells[5] = webctl_string(item, "client");
                cells[6] = webctl_string(item, "request_id");
                if (table_add_row(t, cells) < 0)
                        return WEBCTL_EXIT_API;
        }

        if (table_rows(t) == 0)
                printf("No activity.\n");
        else
                (void)table_print(t, stdout, table_terminal_width(stdout));
        if (cJSON_IsNumber(next))
                fprintf(stderr, "More: webctl activity --offset %s\n",
                        webctl_integer(answer, "next_offset", next_buf, sizeof(next_buf)));
        return WEBCTL_EXIT_OK;
}

int activity_main(struct webctl *w, int argc, char **argv)
{
        static const struct option options[] = {
                { "limit", required_argument, NULL, ACTIVITY_OPT_LIMIT },
                { "offset", required_argument, NULL, ACTIVITY_OPT_OFFSET },
                WEBCTL_COMMON_OPTIONS,
                { NULL, 0, NULL, 0 },
        };
        uint64_t limit = 0, offset = 0;
        struct api_response res;
        char path[96];
        int c, r, n, status;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                r = webctl_common_option(w, c, argv, &status);
                if (r < 0)
                        return status;
                if (r > 0)
                        continue;
                if (c == ACTIVITY_OPT_LIMIT)
                        r = webctl_parse_number("--limit", optarg, 1, ACTIVITY_LIMIT_MAX, &limit);
                else
                        r = webctl_parse_number("--offset", optarg, 0, INT64_MAX, &offset);
                if (r != 0)
                        return r;
        }
        if (optind != argc)
                return webctl_usage_error("usage: webctl activity [--limit N] [--offset N]");

        r = webctl_connect(w, true);
        if (r != 0)
                return r;
        n = snprintf(path, sizeof(path), "/activity?offset=%" PRIu64, offset);
        if (limit > 0)
                (void)snprintf(path + n, sizeof(path) - (size_t)n, "&limit=%" PRIu64, limit);

        r = webctl_call(w, "GET", path, NULL, 200, &res);
        if (r != 0)
                return r;
        r = w->json ? webctl_print_json(&res) : activity_print(res.json);
        api_response_done(&res);
        return r;
}
